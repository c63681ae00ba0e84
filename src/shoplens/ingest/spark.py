"""Ingest validation on the Spark engine: a Parquet file or folder, or a table of the
Spark session's catalog, is checked in the executors with the same query as on one
machine, so a row ends stored or quarantined for the same reason whatever the engine.

Each executor's Python worker opens an in-memory DuckDB, registers the keyed
pseudonym, subject-hash and encryption functions, and runs ``validation_sql`` on every
Arrow batch of its partition (``mapInArrow``): parsing, typing, pseudonymising and
masking, the expensive per-row work, scale out with the cluster. What leaves an
executor holds no clear PII or raw record: raw PII and raw text (the vault's columns)
are encrypted there, a failing row's record is encrypted there, and the records of the
valid rows, needed only if a later key check quarantines one, travel as one encrypted
blob per batch (per-row encryption of every record would double the cost of ingest).
The executors write this to ``<warehouse>/staging/``; the driver's store then reads it
with DuckDB and runs the set-based steps it owns (key and orphan checks against the
stored tables, the quarantine, the vault), deleting the staging folder after.

Row numbers: one file's rows are numbered as in the file (as on one machine); a folder's
rows in the order Spark reads its files.
"""

from __future__ import annotations

import functools
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from shoplens.config import Config, SourceConfig
from shoplens.errors import SourceError
from shoplens.ingest.readers import parquet_files, strings
from shoplens.ingest.validate import lit, q
from shoplens.privacy import Keys
from shoplens.schema import Table

KIND_ROW, KIND_RECORDS = 0, 1  # a validated row, or one batch's encrypted records


def on_spark(cfg: Config, src: SourceConfig) -> bool:
    """Whether a source is validated on Spark: with the Spark engine, a Spark table or a
    Parquet file/folder (CSV and JSON Lines keep their line-aware readers)."""
    if cfg.engine.type != "spark":
        return False
    if src.spark_table:
        return True
    if src.path is None:
        return False
    path = cfg.resolve(src.path)
    return src.format == "parquet" or (src.format == "auto" and (path.is_dir() or path.suffix.lower() in (".parquet", ".pq")))


def read_frame(session: Any, cfg: Config, src: SourceConfig) -> Any:
    """The source as a Spark DataFrame (nothing read yet but the schema)."""
    if src.spark_table:
        try:
            frame = session.table(src.spark_table)
        except Exception as err:  # the catalog says why (AnalysisException), without paths
            raise SourceError(f"spark:{src.spark_table}: not a table of the Spark session's catalog") from err
        return frame
    path = cfg.resolve(src.path or "")
    if not path.exists():
        raise SourceError(f"{path}: file not found (source for table '{src.table}')")
    # one frame per file, in name order: Spark orders one read's files by size, and row
    # numbers must follow the files as the one-machine reader does
    try:
        frames = [session.read.parquet(str(p)) for p in parquet_files(path)]
    except Exception as err:  # AnalysisException: not Parquet, unreadable
        raise SourceError(f"{path.name}: Spark cannot read it as Parquet ({type(err).__name__})") from None
    return functools.reduce(lambda a, b: a.union(b), frames)


def numbered(frame: Any) -> Any:
    """``frame`` with ``_row``: 1-based row numbers in read order."""
    from pyspark.sql import functions as F

    # exact numbers without a global sort: per-partition counts, then offsets
    frame = frame.withColumn("_mid", F.monotonically_increasing_id())
    counts = dict(frame.groupBy(F.spark_partition_id().alias("p")).count().collect())
    offsets, total = [], 0
    for p in range(max(counts, default=-1) + 1):
        offsets.append(total)
        total += counts.get(p, 0)
    if not offsets:
        offsets = [0]
    start = F.element_at(F.array(*(F.lit(o) for o in offsets)), F.spark_partition_id() + 1)
    local = F.col("_mid") - F.shiftleft(F.spark_partition_id().cast("long"), 33)
    return frame.withColumn("_row", start + local + 1).drop("_mid")


@dataclass
class Validator:
    """The validation query over one partition's batches (runs in the executors)."""

    sql: str  # ``validation_sql`` of the source
    keys: Keys
    table: Table
    columns: list[str]  # the source's columns, in order
    erased: list[str] = field(default_factory=list)  # subject hashes of erased customers
    # the file's own time types: Spark hands every timestamp over in microseconds, and a
    # value's text (hence the row hash) must be what the one-machine reader makes of it
    times: dict[str, pa.DataType] = field(default_factory=dict)

    def select(self) -> str:
        """What leaves the executor: stored, key and reference columns, encrypted vault
        columns, the checks, and each failing row's encrypted record."""
        keep = {c.name for c in self.table.stored_columns} | set(self.table.key) | {
            c.name for c in self.table.columns if c.references}
        cols = [q(c.name) for c in self.table.columns if c.name in keep]
        vault = [f"sl_encrypt({q('__raw_' + c.name)}) AS {q('__raw_' + c.name)}"
                 for c in self.table.columns if c.pii or c.type == "text"]
        vault += [q("__link_" + c.name) for c in self.table.columns if c.link]
        return (f"SELECT {', '.join(cols + vault)}, _row, _line, _row_hash, _row_key, _erased, _err_field, "
                "_err_expected, _err_found, CASE WHEN _err_field IS NOT NULL AND NOT _erased "
                "THEN sl_encrypt(CAST(to_json(__rec) AS VARCHAR)) END AS __rec_enc, "
                f"CAST(to_json(__rec) AS VARCHAR) AS _rec_json FROM ({self.sql})")

    def _connect(self) -> duckdb.DuckDBPyConnection:
        from shoplens.ingest.pipeline import register_functions

        con = duckdb.connect()
        register_functions(con, self.keys)
        con.register("erased_subjects", pa.table({"subject_hash": pa.array(self.erased, pa.string())}))
        return con

    def shape(self) -> pa.Schema:
        """The output schema (the query run on an empty batch)."""
        empty = pa.RecordBatch.from_pydict({c: pa.array([], pa.string()) for c in self.columns}
                                           | {"_row": pa.array([], pa.int64())})
        shape = self._check(self._connect(), empty).schema
        shape = shape.remove(shape.get_field_index("_rec_json"))
        for name, kind in (("_kind", pa.int8()), ("_blob", pa.string()), ("_blob_index", pa.int64()),
                           ("__blob", pa.string())):
            shape = shape.append(pa.field(name, kind))
        return shape

    def _check(self, con: duckdb.DuckDBPyConnection, batch: pa.RecordBatch) -> pa.Table:
        data = pa.Table.from_batches([batch]).select(self.columns)
        for name, kind in self.times.items():
            data = data.set_column(data.schema.get_field_index(name), name, data[name].cast(kind, safe=False))
        data = strings(data)
        rows = batch.column("_row")
        con.register("_batch", data.append_column("_row", rows).append_column("_line", rows))
        try:
            return con.sql(self.select()).to_arrow_table()
        finally:
            con.unregister("_batch")

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        con = self._connect()
        for batch in batches:
            if batch.num_rows == 0:
                continue
            out = self._check(con, batch)
            valid = out.column("_err_field").is_null().to_pylist()
            records = [r for r, ok in zip(out.column("_rec_json").to_pylist(), valid, strict=True) if ok]
            blob = uuid.uuid4().hex
            index: list[int | None] = [None] * len(valid)
            k = 0
            for i, ok in enumerate(valid):
                if ok:
                    index[i], k = k, k + 1
            rows = out.drop_columns(["_rec_json"])
            rows = rows.append_column("_kind", pa.array([KIND_ROW] * len(valid), pa.int8()))
            rows = rows.append_column("_blob", pa.array([blob if ok else None for ok in valid], pa.string()))
            rows = rows.append_column("_blob_index", pa.array(index, pa.int64()))
            rows = rows.append_column("__blob", pa.nulls(len(valid), pa.string()))
            yield from rows.to_batches()
            if records:
                sealed = self.keys.fernet.encrypt(json.dumps(records, ensure_ascii=False).encode()).decode()
                one = {f.name: pa.nulls(1, f.type) for f in rows.schema}
                one |= {"_kind": pa.array([KIND_RECORDS], pa.int8()), "_blob": pa.array([blob]),
                        "__blob": pa.array([sealed])}
                yield from pa.table(one, schema=rows.schema).to_batches()


def time_types(schema: pa.Schema) -> dict[str, pa.DataType]:
    """The timestamp and date columns of a Parquet schema, with their types."""
    return {f.name: f.type for f in schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)}


def staging_folder(warehouse: Path, table: str, ingest_id: int) -> Path:
    return warehouse / "staging" / f"{table}-{ingest_id}"


def validate_on_spark(frame: Any, validator: Validator, folder: Path) -> Path:
    """Run ``validator`` in the executors over ``frame`` and write the result as Parquet
    under ``folder`` (replaced); returns the glob of its files."""
    from pyspark.sql.pandas.types import from_arrow_schema

    shape = validator.shape()
    shutil.rmtree(folder, ignore_errors=True)
    frame.select(*validator.columns, "_row").mapInArrow(validator, from_arrow_schema(shape, prefer_timestamp_ntz=True)) \
        .write.mode("overwrite").parquet(str(folder))
    return folder / "*.parquet"


class Records:
    """The valid rows' records, decrypted one batch at a time on demand (only for rows
    a key check quarantines), each re-encrypted alone for the quarantine."""

    def __init__(self, con: duckdb.DuckDBPyConnection, files: Path, keys: Keys) -> None:
        self.con, self.files, self.keys = con, files, keys
        self._open: dict[str, list[str]] = {}

    def encrypt(self, blobs: pa.Array, index: pa.Array) -> pa.Array:
        out: list[str | None] = []
        for blob, i in zip(blobs.to_pylist(), index.to_pylist(), strict=True):
            if blob is None or i is None:
                out.append(None)
                continue
            if blob not in self._open:
                sealed = self.con.cursor().execute(
                    f"SELECT __blob FROM read_parquet({lit(str(self.files))}) WHERE _kind = {KIND_RECORDS} AND _blob = ?",
                    [blob]).fetchone()
                assert sealed is not None
                self._open[blob] = json.loads(self.keys.fernet.decrypt(sealed[0].encode()))
            out.append(self.keys.fernet.encrypt(self._open[blob][i].encode()).decode())
        return pa.array(out, pa.string())
