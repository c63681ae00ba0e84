"""Risk flags with reasons: return and coupon abuse, linked accounts, review
manipulation and unusual behaviour, for a person to review (docs/risk.md)."""
