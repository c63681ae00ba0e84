"""Compare two snapshots table by table: the check behind "the port changed nothing"
and "Spark equals DuckDB", for any two builds of the same shop.

    .venv/bin/python bench/compare_snapshots.py STORE_A SNAP_A STORE_B SNAP_B

For each table of snapshot A: its row count in both, whether the columns match, and
the columns whose values differ (floats compared to 1e-9 relative, the rest as text),
rows matched on the table's key. Exit status 1 when any table differs.
"""

from __future__ import annotations

import sys

import duckdb
import numpy as np
import pandas as pd

KEYS = {"customer_category_shares": ["customer_id", "category"], "text_aspects": ["text_id", "aspect", "span_start"],
        "model_artifacts": ["name"], "segments": ["segment_id"], "text_topics": ["topic_id"], "text_analysis": ["text_id"]}


def _tables(con: duckdb.DuckDBPyConnection, snap: int) -> list[str]:
    return sorted(r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [f"snap_{snap}"]).fetchall())


def _same(u: pd.Series, v: pd.Series) -> bool:
    if pd.api.types.is_float_dtype(u) and pd.api.types.is_float_dtype(v):
        return bool(np.allclose(u.to_numpy(float), v.to_numpy(float), rtol=1e-9, equal_nan=True))
    return u.astype(str).tolist() == v.astype(str).tolist()


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    a, b = duckdb.connect(sys.argv[1], read_only=True), duckdb.connect(sys.argv[3], read_only=True)
    sa, sb = int(sys.argv[2]), int(sys.argv[4])
    ta, tb = _tables(a, sa), _tables(b, sb)
    differs = ta != tb
    print(f"tables: {len(ta)} vs {len(tb)}" + ("" if ta == tb else f", only in one: {sorted(set(ta) ^ set(tb))}"))
    for t in ta:
        if t not in tb:
            continue
        x, y = a.sql(f"SELECT * FROM snap_{sa}.{t}").df(), b.sql(f"SELECT * FROM snap_{sb}.{t}").df()
        key = KEYS.get(t, ["customer_id"])
        x, y = x.sort_values(key).reset_index(drop=True), y.sort_values(key).reset_index(drop=True)
        bad = [c for c in x.columns if list(x.columns) == list(y.columns) and len(x) == len(y) and not _same(x[c], y[c])]
        same_shape = list(x.columns) == list(y.columns) and len(x) == len(y)
        differs |= bool(bad) or not same_shape
        print(f"{t}: {len(x):,} vs {len(y):,} rows, {'same columns' if list(x.columns) == list(y.columns) else 'other columns'}"
              f"{', values differ in: ' + ', '.join(bad) if bad else ''}")
    sys.exit(1 if differs else 0)


if __name__ == "__main__":
    main()
