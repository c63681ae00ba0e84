"""The DuckDB engine: the build runs inside the embedded store, each snapshot a schema
``snap_<id>`` of the same file (see ``shoplens.store``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa

from shoplens.engine.base import Snapshot, grouped_chunks
from shoplens.store import Store


class DuckDBEngine:
    name = "duckdb"
    local_workers = True

    def __init__(self, store: Store) -> None:
        self.store = store
        self._backend: Any = None

    @property
    def con(self) -> Any:
        return self.store.con

    def ibis(self) -> Any:
        if self._backend is None:
            self._backend = self.store.ibis()
        return self._backend

    def table(self, name: str, snapshot: Snapshot | None = None) -> Any:
        if snapshot is None:
            return self.ibis().table(name)
        return self.ibis().table(name, database=snapshot.schema)

    def fingerprint(self, name: str) -> str:
        n, total = self.store.one(f"SELECT count(*), sum(hash(t)) FROM {name} t") or (0, 0)
        return f"{n}:{total or 0}"

    def duck_types(self, schema: pa.Schema) -> list[tuple[str, str]]:
        """DuckDB's own name for each Arrow type (asked of DuckDB, not mapped by hand)."""
        self.con.register("_shape", pa.table({f.name: pa.array([], f.type) for f in schema}, schema=schema))
        try:
            return [(r[0], r[1]) for r in self.con.execute("DESCRIBE SELECT * FROM _shape").fetchall()]
        finally:
            self.con.unregister("_shape")

    def materialise(self, snapshot: Snapshot, name: str, data: Any, schema: pa.Schema) -> int:
        """``data``: an Ibis expression, an Arrow table or DuckDB SQL text. Columns are
        selected and cast to ``schema`` in the same statement (no second copy)."""
        target = f"{snapshot.schema}.{name}"
        cols = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in self.duck_types(schema))
        if isinstance(data, pa.Table):
            self.con.register("_data", data)
            try:
                self.con.execute(f"CREATE TABLE {target} AS SELECT {cols} FROM _data")
            finally:
                self.con.unregister("_data")
        elif isinstance(data, str):
            self.con.execute(f"CREATE TABLE {target} AS SELECT {cols} FROM ({data})")
        else:  # Ibis registers the expression's in-memory tables itself
            import ibis

            typed = data.select(*schema.names).cast(ibis.Schema.from_pyarrow(schema))
            self.ibis().create_table(name, obj=typed, database=snapshot.schema)
        return self.rows(snapshot, name)

    def schema_of(self, snapshot: Snapshot, name: str) -> pa.Schema:
        return self.con.sql(f"SELECT * FROM {snapshot.schema}.{name} LIMIT 0").arrow().schema

    def rows(self, snapshot: Snapshot, name: str) -> int:
        return int(self.store.scalar(f"SELECT count(*) FROM {snapshot.schema}.{name}"))

    def exists(self, snapshot: Snapshot, name: str) -> bool:
        return bool(self.store.scalar(  # a table, or a view over Parquet (the Spark engine's)
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [snapshot.schema, name]))

    def index(self, snapshot: Snapshot, name: str, key: tuple[str, ...]) -> None:
        cols = ", ".join(f'"{c}"' for c in key)
        self.con.execute(f"CREATE INDEX idx_{snapshot.schema}_{name} ON {snapshot.schema}.{name} ({cols})")

    def prune(self, live: set[int]) -> None:
        return None  # a snapshot's tables go with its schema (``Store.prune_snapshots``)

    def copy(self, source: Snapshot, target: Snapshot, name: str) -> int:
        self.con.execute(f"CREATE TABLE {target.schema}.{name} AS SELECT * FROM {source.schema}.{name}")
        return self.rows(target, name)

    def collect(self, expr: Any) -> pa.Table:
        return self.ibis().to_pyarrow(expr)

    def _write_all(self, snapshot: Snapshot, name: str, parts: Iterable[pa.Table], schema: pa.Schema) -> int:
        """Create the table from the first part and append the rest (never all in memory)."""
        from shoplens.pipeline.stage import empty

        self.materialise(snapshot, name, empty(schema), schema)
        for part in parts:
            self.con.register("_part", part.select(schema.names).cast(schema))
            try:
                self.con.execute(f"INSERT INTO {snapshot.schema}.{name} SELECT * FROM _part")
            finally:
                self.con.unregister("_part")
        return self.rows(snapshot, name)

    def _stream(self, expr: Any, rows: int) -> Any:
        """Arrow batches of ``expr`` read on a cursor of their own, so the connection
        is free to write the results while they stream in."""
        cur = self.con.cursor()
        cur.execute(f"SET TimeZone = '{self.store.timezone}'")
        return cur.sql(self.ibis().compile(expr)).to_arrow_reader(rows)

    def map_batches(self, snapshot: Snapshot, name: str, source: Any, fn: Callable[[pa.RecordBatch], pa.Table],
                    schema: pa.Schema, batch_rows: int = 2000) -> int:
        return self._write_all(snapshot, name, (fn(b) for b in self._stream(source, batch_rows)), schema)

    def map_groups(self, snapshot: Snapshot, name: str, source: Any, key: str, fn: Callable[[pa.Table], pa.Table],
                   schema: pa.Schema, within: tuple[str, ...] = ()) -> int:
        chunks = grouped_chunks(self._stream(source.order_by(key, *within), 20_000), key)
        return self._write_all(snapshot, name, (fn(t) for t in chunks), schema)

    def drop(self, snapshot: Snapshot, name: str) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {snapshot.schema}.{name}")
