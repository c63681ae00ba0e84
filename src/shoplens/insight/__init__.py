"""Product and service insight from what customers write and buy: aspect figures per
product, category and brand with the fix-first rank, complaint spike alerts, segments
x aspects (docs/insight.md)."""
