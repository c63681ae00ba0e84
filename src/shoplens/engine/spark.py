"""The Spark engine: set-based stages run as Spark SQL (the same Ibis expressions as on
DuckDB), and every snapshot table is Parquet under ``[engine] warehouse``:
``<warehouse>/snap_<id>/<table>/``.

The DuckDB store stays the catalog: it holds what ingest validated (canonical tables,
quarantine, vault), the snapshot list and, per snapshot, one view per table over its
Parquet folder. So ``profile``, ``segments``, audiences, the report and the serving
publish read a Spark-built snapshot exactly as a DuckDB-built one, and erasure finds
every file (``erase_rows``). Canonical tables are exported to
``<warehouse>/canonical/<table>/<content hash>.parquet`` once per content change,
for Spark to read.

Timestamps: Spark's TIMESTAMP is zone-aware; the session runs in UTC and the catalog
views turn such columns back into the naive UTC times the rest of ShopLens uses
(``timezone('UTC', ...)``), whatever the store's own time zone.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shoplens.config import Config
from shoplens.engine.base import Snapshot, grouped_chunks
from shoplens.engine.duckdb import DuckDBEngine
from shoplens.errors import ConfigError, require
from shoplens.ingest.validate import lit  # paths inside SQL are quoted literals
from shoplens.store import Store

WAREHOUSE_KEY = "warehouse"  # store_meta: where this store's Spark tables live (erasure reads it)


def spark_session(master: str = "local[2]", conf: dict[str, str] | None = None) -> Any:
    """The process's Spark session (UTC, quiet): the running one, or a new one."""
    require("pyspark", "spark")
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.conf.set("spark.sql.session.timeZone", "UTC")  # the views assume UTC, whoever made the session
        return active
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers run this interpreter, which has ShopLens and its models (a cluster
    # sets spark.pyspark.python to an environment with ShopLens installed)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName("shoplens")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false"))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


class SparkEngine:
    name = "spark"

    def __init__(self, store: Store, cfg: Config, session: Any = None) -> None:
        import ibis

        self.store = store
        self.local_workers = cfg.engine.master.startswith("local")
        self.warehouse = cfg.resolve(cfg.engine.warehouse)
        self.session = session or spark_session(cfg.engine.master, cfg.engine.conf)
        self.backend = ibis.pyspark.connect(self.session)
        self.catalog = DuckDBEngine(store)
        claim_warehouse(store, self.warehouse)

    @property
    def con(self) -> Any:
        return self.store.con

    def ibis(self) -> Any:
        return self.backend

    def fingerprint(self, name: str) -> str:
        return self.catalog.fingerprint(name)

    def _canonical(self, name: str) -> Path:
        """The canonical table as Parquet for Spark (written when its content changed)."""
        folder = self.warehouse / "canonical" / name
        path = folder / (self.fingerprint(name).replace(":", "-") + ".parquet")
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("*.parquet"):
                old.unlink()
            tmp = path.with_suffix(".tmp")
            self.con.execute(f"COPY (SELECT COLUMNS(lambda c: c NOT IN ('_ingest_id', '_line', '_row_hash')) FROM {name}) "
                             f"TO {lit(str(tmp))} (FORMAT parquet)")
            tmp.rename(path)
        return path

    def folder(self, snapshot: Snapshot, name: str) -> Path:
        return self.warehouse / snapshot.schema / name

    def table(self, name: str, snapshot: Snapshot | None = None) -> Any:
        if snapshot is None:
            return self.backend.read_parquet(str(self._canonical(name)), table_name=f"canonical_{name}")
        return self.backend.read_parquet(str(self.folder(snapshot, name)), table_name=f"{snapshot.schema}_{name}")

    def materialise(self, snapshot: Snapshot, name: str, data: Any, schema: pa.Schema) -> int:
        """Ibis expressions are written by Spark; Arrow tables (from Python stages) and
        catalog SQL by the driver; then the catalog view is (re)made."""
        folder = self.folder(snapshot, name)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        if isinstance(data, pa.Table):
            pq.write_table(data.select(schema.names).cast(schema), folder / "part-0.parquet")
        elif isinstance(data, str):
            cols = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in self.catalog.duck_types(schema))
            self.con.execute(f"COPY (SELECT {cols} FROM ({data})) TO {lit(str(folder / 'part-0.parquet'))} (FORMAT parquet)")
        else:
            import ibis

            self._write_frame(folder, self._frame(data.select(*schema.names).cast(ibis.Schema.from_pyarrow(schema))),
                              schema)
        self._view(snapshot, name, schema)
        return self.rows(snapshot, name)

    def _frame(self, expr: Any) -> Any:
        """A Spark DataFrame for an Ibis expression."""
        self.backend._run_pre_execute_hooks(expr)  # registers in-memory tables the expression uses
        return self.session.sql(self.backend.compile(expr))

    @staticmethod
    def _write_frame(folder: Path, frame: Any, schema: pa.Schema) -> None:
        frame.write.mode("overwrite").parquet(str(folder))
        if not any(folder.glob("*.parquet")):  # Spark writes no file for an empty result
            pq.write_table(pa.table({f.name: pa.array([], f.type) for f in schema}, schema=schema),
                           folder / "part-0.parquet")

    def collect(self, expr: Any) -> pa.Table:
        return self.backend.to_pyarrow(expr)

    def _map(self, snapshot: Snapshot, name: str, frame: Any, run: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]],
             schema: pa.Schema) -> int:
        from pyspark.sql.pandas.types import from_arrow_schema

        folder = self.folder(snapshot, name)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self._write_frame(folder, frame.mapInArrow(run, from_arrow_schema(schema, prefer_timestamp_ntz=True)), schema)
        self._view(snapshot, name, schema)
        return self.rows(snapshot, name)

    def map_batches(self, snapshot: Snapshot, name: str, source: Any, fn: Callable[[pa.RecordBatch], pa.Table],
                    schema: pa.Schema, batch_rows: int = 2000) -> int:
        def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:  # in the executors
            for batch in batches:
                yield from fn(batch).select(schema.names).cast(schema).to_batches()

        self.session.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
        frame = self._frame(source)
        # Python work costs far more than a shuffle: spread it over every core, even when the
        # source is one Parquet file (one split, one task)
        cores = self.session.sparkContext.defaultParallelism
        if frame.rdd.getNumPartitions() < cores:
            frame = frame.repartition(cores)
        return self._map(snapshot, name, frame, run, schema)

    def map_groups(self, snapshot: Snapshot, name: str, source: Any, key: str, fn: Callable[[pa.Table], pa.Table],
                   schema: pa.Schema, within: tuple[str, ...] = ()) -> int:
        def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:  # in the executors
            for chunk in grouped_chunks(batches, key):
                yield from fn(chunk).select(schema.names).cast(schema).to_batches()

        frame = self._frame(source)
        frame = frame.repartition(key).sortWithinPartitions(key, *within)  # a group never spans two partitions
        return self._map(snapshot, name, frame, run, schema)

    def drop(self, snapshot: Snapshot, name: str) -> None:
        self.con.execute(f"DROP VIEW IF EXISTS {snapshot.schema}.{name}")
        shutil.rmtree(self.folder(snapshot, name), ignore_errors=True)

    def _view(self, snapshot: Snapshot, name: str, schema: pa.Schema) -> None:
        files = f"{self.folder(snapshot, name)}/*.parquet"
        found = dict(self.con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet({lit(files)}))")
                     .fetchall())
        cols = []
        for c, t in self.catalog.duck_types(schema):
            expr = f"timezone('UTC', \"{c}\")" if found.get(c) == "TIMESTAMP WITH TIME ZONE" else f'"{c}"'
            cols.append(f'CAST({expr} AS {t}) AS "{c}"')
        self.con.execute(f"CREATE OR REPLACE VIEW {snapshot.schema}.{name} AS SELECT {', '.join(cols)} "
                         f"FROM read_parquet({lit(files)})")

    def schema_of(self, snapshot: Snapshot, name: str) -> pa.Schema:
        return self.catalog.schema_of(snapshot, name)

    def rows(self, snapshot: Snapshot, name: str) -> int:
        return self.catalog.rows(snapshot, name)

    def exists(self, snapshot: Snapshot, name: str) -> bool:
        return self.catalog.exists(snapshot, name)

    def index(self, snapshot: Snapshot, name: str, key: tuple[str, ...]) -> None:
        return None  # Parquet has no index; point look-ups are served from the serving file

    def copy(self, source: Snapshot, target: Snapshot, name: str) -> int:
        return self.materialise(target, name, f"SELECT * FROM {source.schema}.{name}", self.schema_of(source, name))

    def prune(self, live: set[int]) -> None:
        """Delete the Parquet folders of snapshots no longer kept (pruned or failed)."""
        for path in self.warehouse.glob("snap_*"):
            m = re.fullmatch(r"snap_(\d+)", path.name)
            if path.is_dir() and m and int(m.group(1)) not in live:
                shutil.rmtree(path, ignore_errors=True)


def claim_warehouse(store: Store, warehouse: Path) -> None:
    """One warehouse per store, one store per warehouse: erasure must find every file of
    this store's Spark snapshots and ingest staging, and another store must never prune
    them. Records the warehouse in the store."""
    known = warehouse_of(store)
    if known is not None and known != warehouse and store.live_snapshots() and any(known.glob("snap_*")):
        raise ConfigError(f"[engine] warehouse: this store's Spark snapshots are in {known.name}/; "
                          "keep that warehouse (or build once with [engine] type = \"duckdb\" first)")
    marker = warehouse / ".shoplens-store"
    owner = str(Path(store.path).resolve())
    warehouse.mkdir(parents=True, exist_ok=True)
    if marker.exists() and marker.read_text("utf-8").strip() != owner:
        raise ConfigError("[engine] warehouse: the folder belongs to another ShopLens store; give each store its own")
    marker.write_text(owner + "\n", "utf-8")
    store.con.execute("INSERT OR REPLACE INTO store_meta VALUES (?, ?)", [WAREHOUSE_KEY, str(warehouse)])


def warehouse_of(store: Store) -> Path | None:
    """The warehouse a Spark build of this store wrote to, if any."""
    value = store.scalar("SELECT value FROM store_meta WHERE key = ?", [WAREHOUSE_KEY])
    return Path(value) if value else None


def is_parquet_view(store: Store, schema: str, table: str) -> bool:
    return bool(store.scalar("SELECT count(*) FROM duckdb_views() WHERE schema_name = ? AND view_name = ?",
                             [schema, table]))


def _finish_swap(folder: Path) -> None:
    """Complete a rewrite a kill interrupted: the new file, written beside the folder,
    replaces every old file (repeatable)."""
    new = folder.with_name(folder.name + ".rewrite.parquet")
    if new.exists():
        for old in folder.glob("*.parquet"):
            old.unlink()
        shutil.rmtree(folder / "_temporary", ignore_errors=True)
        new.rename(folder / "part-0.parquet")


def rewrite(store: Store, schema: str, table: str, sql: str, params: list[Any] | None = None) -> None:
    """Replace a Parquet-backed snapshot table's files with the result of ``sql`` (which
    may read the table's files, ``{files}``): written beside, then swapped in, so no
    byte of a removed row stays in the warehouse and a kill at any point is finished by
    the next call."""
    warehouse = warehouse_of(store)
    if warehouse is None:
        return
    folder = warehouse / schema / table
    _finish_swap(folder)
    tmp = folder.with_name(table + ".rewrite.parquet.tmp")
    store.con.execute(f"COPY ({sql.format(files=lit(str(folder / '*.parquet')))}) TO {lit(str(tmp))} (FORMAT parquet)",
                      params or [])
    tmp.rename(folder.with_name(table + ".rewrite.parquet"))
    _finish_swap(folder)


def erase_rows(store: Store, schema: str, table: str, keep: str, params: list[Any]) -> int:
    """Keep only the rows of a Parquet-backed table where ``keep`` holds; returns how
    many were removed. Reads the files themselves (their own column types), not the
    view, so a rewrite changes nothing but the rows."""
    warehouse = warehouse_of(store)
    if warehouse is None:
        return 0
    _finish_swap(warehouse / schema / table)
    before = int(store.scalar(f"SELECT count(*) FROM {schema}.{table}"))
    rewrite(store, schema, table, f"SELECT * FROM read_parquet({{files}}) WHERE {keep}", params)
    return before - int(store.scalar(f"SELECT count(*) FROM {schema}.{table}"))


def drop_orphan_folders(store: Store) -> list[str]:
    """Delete warehouse folders of snapshots the store no longer has (a build killed and
    dropped before its own clean-up ran): nothing reads them, and they may hold rows of
    a customer being erased. Returns the folder names removed."""
    warehouse = warehouse_of(store)
    if warehouse is None or not warehouse.exists():
        return []
    schemas = {r[0] for r in store.con.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()}
    removed = []
    for path in warehouse.glob("snap_*"):
        if path.is_dir() and path.name not in schemas:
            shutil.rmtree(path)
            removed.append(path.name)
    return removed


def drop_canonical_exports(store: Store) -> list[str]:
    """Delete the canonical tables' Parquet exports (the next Spark build writes them
    again from the store) and what a killed Spark ingest left in staging (the lock the
    caller holds means no ingest is running); returns the folders removed."""
    warehouse = warehouse_of(store)
    removed = []
    for name in ("canonical", "staging"):
        folder = warehouse / name if warehouse else None
        if folder is not None and folder.exists():
            shutil.rmtree(folder)
            removed.append(name)
    return removed
