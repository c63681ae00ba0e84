"""Ingest orchestration: read -> validate -> key/orphan checks -> de-identify -> store.

Each source is ingested in one transaction: either all its rows are stored or
quarantined and its ``ingest_log`` row written, or nothing changes. Every input row is
counted exactly once as accepted (new), unchanged (an identical row is already stored:
this is what makes re-ingesting idempotent) or quarantined.

A file is skipped when the same bytes were ingested before *under the same settings*:
``ingest_log.content_sha256`` hashes the file together with everything that shapes its
rows (the source's mapping, value mappings, formats, time zone and currency, the
``[defaults]``, the table's rules and ``INGEST_VERSION``), so fixing ``shoplens.toml``
re-reads the file; ``force`` re-reads every source regardless.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from shoplens.config import Config, SourceConfig
from shoplens.errors import ConfigError, SourceError
from shoplens.ingest.quarantine import INSERT, quarantine_report, resolve
from shoplens.ingest.readers import Batch, CsvReader, ParquetReader, SourceReader, open_reader
from shoplens.ingest.rejects import RejectContext, quarantine_rejects
from shoplens.ingest.spark import (
    KIND_ROW,
    Records,
    Validator,
    numbered,
    on_spark,
    read_frame,
    staging_folder,
    time_types,
    validate_on_spark,
)
from shoplens.ingest.validate import (
    ERASED_ORDER_PREFIX,
    SourceContext,
    keys_sql,
    lit,
    q,
    validation_sql,
)
from shoplens.privacy import PSEUDONYM_HEX, Keys, check_key, keys_for
from shoplens.schema import INGEST_ORDER, TABLES, Table, table
from shoplens.store import Store

__all__ = ["IngestResult", "ingest", "ingest_source", "quarantine_report", "resolve_mapping", "unmapped_columns"]

Progress = Callable[[str, int], None]  # (source label, rows done so far)
# bump when validation changes what the same input row becomes: every file is read again
INGEST_VERSION = 2


@dataclass
class IngestResult:
    """Counts for one source; ``rows_in == accepted + unchanged + quarantined``."""

    source: str
    table: str
    rows_in: int = 0
    accepted: int = 0
    unchanged: int = 0
    quarantined: int = 0
    skipped: bool = False
    ingest_id: int = 0
    unmapped_columns: list[str] = field(default_factory=list)  # source columns no canonical column uses

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def resolve_mapping(tbl: Table, src: SourceConfig, found: list[str]) -> dict[str, str | None]:
    """Map canonical columns to source columns; name what is missing and what was found."""
    unknown = sorted(set(src.columns) - {c.name for c in tbl.columns})
    if unknown:
        raise ConfigError(
            f"source {src.label}: 'columns' maps unknown {tbl.name} column(s) {unknown}; "
            f"expected some of {[c.name for c in tbl.columns]}"
        )
    lower = {c.lower(): c for c in found}
    mapping: dict[str, str | None] = {}
    for col in tbl.columns:
        wanted = src.columns.get(col.name)
        if wanted is not None:
            if wanted not in found:
                raise SourceError(
                    f"{src.label}: column '{wanted}' (mapped to {tbl.name}.{col.name}) is missing; "
                    f"columns found: {', '.join(found)}"
                )
            mapping[col.name] = wanted
        else:
            mapping[col.name] = lower.get(col.name.lower())
        generated = col.name == "event_id"
        if col.required and mapping[col.name] is None and col.default is None and not generated:
            raise SourceError(
                f"{src.label}: missing required column '{col.name}' for table {tbl.name}; "
                f"columns found: {', '.join(found)} (map one with [sources.columns] {col.name} = \"...\")"
            )
    return mapping


def unmapped_columns(mapping: dict[str, str | None], found: list[str]) -> list[str]:
    """Source columns that no canonical column takes: ingest drops them.

    >>> unmapped_columns({"order_id": "订单号", "amount": None}, ["订单号", "备注"])
    ['备注']
    """
    used = {v for v in mapping.values() if v is not None}
    return [c for c in found if c not in used]


def shaping_hash(cfg: Config, src: SourceConfig, tbl: Table) -> str:
    """Hash of everything that decides what a source's rows become (not the bytes)."""
    rules = [{k: v for k, v in dataclasses.asdict(c).items() if k != "doc"} for c in tbl.columns]
    payload = {
        "version": INGEST_VERSION,
        "source": src.shaping(),
        "defaults": cfg.defaults.model_dump(mode="json"),
        "table": {"key": tbl.key, "columns": rules},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def register_functions(con: duckdb.DuckDBPyConnection, keys: Keys) -> None:
    """Make the keyed pseudonym, the erased-customer hash and encryption available to SQL
    as vectorised UDFs."""
    udfs = (("sl_pseudo", keys.pseudonymise_array), ("sl_subject", keys.subject_hash_array),
            ("sl_encrypt", keys.encrypt_array), ("sl_link", keys.link_hash_array))
    for name, fn in udfs:
        with contextlib.suppress(duckdb.InvalidInputException):
            con.remove_function(name)
        con.create_function(name, fn, ["VARCHAR"], "VARCHAR", type="arrow", side_effects=False)  # type: ignore[call-overload]


def ingest(
    cfg: Config, store: Store, progress: Progress | None = None, create_key: bool = False, force: bool = False
) -> list[IngestResult]:
    """Ingest every configured source, parents before children; ``force`` re-reads files
    already ingested with the same content and settings.

    >>> # see tests/test_ingest.py for runnable examples
    """
    if not cfg.sources:
        raise ConfigError("no [[sources]] in the config: nothing to ingest")
    recorded = store.scalar("SELECT value FROM store_meta WHERE key = 'key_fingerprint'")
    empty = recorded is None and not store.scalar("SELECT count(*) FROM customers")
    keys = keys_for(cfg, create=create_key and empty)  # a new key only for a new store
    check_key(cfg, store, keys)
    register_functions(store.con, keys)
    pseudonymise_stored(store, keys)
    ordered = sorted(cfg.sources, key=lambda s: INGEST_ORDER.index(s.table))
    return [ingest_source(cfg, store, keys, s, progress, force) for s in ordered]


def pseudonymise_stored(store: Store, keys: Keys) -> int:
    """Bring rows stored before a column was declared ``pseudonymise`` (e.g.
    ``events.session_id``, which kept the shop's raw customer id) in line, then compact the
    store so the raw values leave no freed block behind. Runs once per ``INGEST_VERSION``
    (recorded in ``store_meta``), not on every ingest. Returns the rows changed."""
    done = store.scalar("SELECT value FROM store_meta WHERE key = 'identifiers_pseudonymised'")
    if done == str(INGEST_VERSION):
        return 0
    changed = 0
    for tbl in TABLES.values():
        for col in tbl.columns:
            if col.pseudonymise and col.name in {c.name for c in tbl.stored_columns}:
                cond = f"{q(col.name)} IS NOT NULL AND NOT regexp_full_match({q(col.name)}, 'c_[0-9a-f]{{{PSEUDONYM_HEX}}}')"
                n = int(store.scalar(f"SELECT count(*) FROM {tbl.name} WHERE {cond}"))
                if n:
                    store.con.execute(f"UPDATE {tbl.name} SET {q(col.name)} = sl_pseudo({q(col.name)}) WHERE {cond}")
                    changed += n
    store.con.execute("INSERT OR REPLACE INTO store_meta VALUES ('identifiers_pseudonymised', ?)", [str(INGEST_VERSION)])
    if changed:
        from shoplens.erasure import compact

        compact(store)
        register_functions(store.con, keys)  # the compacted store has a new connection
    return changed


def _digest(reader: SourceReader, cfg: Config, src: SourceConfig, tbl: Table) -> str | None:
    content = reader.content_hash()
    if content is None:
        return None
    return hashlib.sha256(f"{content}/{shaping_hash(cfg, src, tbl)}".encode()).hexdigest()


def ingest_source(
    cfg: Config, store: Store, keys: Keys, src: SourceConfig, progress: Progress | None = None, force: bool = False
) -> IngestResult:
    tbl = table(src.table)
    spark = on_spark(cfg, src)
    reader: SourceReader | None = None
    hasher: SourceReader | None
    if spark:
        from shoplens.engine.spark import spark_session

        frame = read_frame(spark_session(cfg.engine.master, cfg.engine.conf), cfg, src)
        columns = list(frame.columns)
        hasher = ParquetReader(src, cfg.resolve(src.path)) if src.path else None  # Spark tables: no digest
    else:
        hasher = reader = open_reader(src, cfg.root)
        columns = reader.columns
    mapping = resolve_mapping(tbl, src, columns)
    result = IngestResult(source=src.label, table=tbl.name, unmapped_columns=unmapped_columns(mapping, columns))
    digest = _digest(hasher, cfg, src, tbl) if hasher is not None else None
    if digest is not None and not force:
        prior = store.one(
            "SELECT ingest_id, rows_in FROM ingest_log WHERE table_name = ? AND content_sha256 = ? "
            "AND NOT skipped ORDER BY ingest_id LIMIT 1",
            [tbl.name, digest],
        )
        if prior is not None:
            result.skipped = True
            result.rows_in = result.unchanged = int(prior[1])
            result.ingest_id = int(prior[0])
            return result
    ctx = SourceContext(
        table=tbl,
        mapping=mapping,
        label=src.label,
        timestamp_formats=tuple(src.timestamp_formats),
        source_tz=src.timezone or cfg.defaults.timezone,
        store_tz=cfg.defaults.timezone,
        currency=(src.currency or cfg.defaults.currency).upper(),
        base_currency=cfg.defaults.currency.upper(),
        fx_rates=tuple(sorted(cfg.defaults.fx_rates.items())),
        values={name: {k.strip().lower(): v for k, v in spellings.items()} for name, spellings in src.values.items()},
        check_erased=bool(store.scalar("SELECT count(*) FROM erased_subjects")),
    )
    salt = keys.pseudonym("row-hash-salt")
    sql = validation_sql(ctx, salt)
    con = store.con
    stage = f"_stage_{tbl.name}"
    with store.transaction():
        ingest_id = int(store.scalar("SELECT nextval('ingest_seq')"))
        result.ingest_id = ingest_id
        con.execute(
            "INSERT INTO ingest_log VALUES (?, ?, ?, ?, now(), NULL, 0, 0, 0, 0, false)",
            [ingest_id, src.label, tbl.name, digest],
        )
        con.execute(f"DROP TABLE IF EXISTS {stage}")
        if reader is not None:
            staged = _validate_locally(store, keys, src, tbl, reader, mapping, sql, salt, stage, ingest_id, result,
                                       progress)
            records = "sl_encrypt(CAST(to_json(__rec) AS VARCHAR))"
            files = None
        else:
            validator = Validator(sql, keys, tbl, columns, _erased_hashes(store) if ctx.check_erased else [],
                                  time_types(hasher.schema) if isinstance(hasher, ParquetReader) else {})
            from shoplens.engine.spark import claim_warehouse

            claim_warehouse(store, cfg.resolve(cfg.engine.warehouse))  # erasure finds what a kill leaves in staging
            folder = staging_folder(cfg.resolve(cfg.engine.warehouse), tbl.name, ingest_id)
            # what a killed ingest left (encrypted, but no longer needed): this store's lock means none is running
            shutil.rmtree(folder.parent, ignore_errors=True)
            try:
                files = validate_on_spark(numbered(frame), validator, folder)
            except Exception as err:  # a Spark job failure: its message holds paths and the JVM's trace
                shutil.rmtree(folder, ignore_errors=True)
                raise SourceError(f"{src.label}: Spark could not read or validate this source "
                                  f"({type(err).__name__}; the Spark log says more)") from None
            con.create_function("sl_record", Records(con, files, keys).encrypt, ["VARCHAR", "BIGINT"], "VARCHAR",  # type: ignore[call-overload]
                                type="arrow", side_effects=False)
            records = "sl_record(_blob, _blob_index)"
        try:
            if files is not None:
                staged = _load_staged(store, files, tbl.name, src.label, stage, ingest_id, result)
                if progress:
                    progress(src.label, result.rows_in)
            if not staged:  # empty source: nothing staged
                result.quarantined = int(store.scalar("SELECT count(*) FROM quarantine WHERE ingest_id = ?", [ingest_id]))
                resolve(con, ingest_id, tbl.name, src.label, None)
            else:
                _store_staged(con, tbl, stage, ingest_id, src.label, cfg, records, sealed=files is not None)
                con.execute(f"DROP TABLE {stage}")
                result.accepted = int(store.scalar(f"SELECT count(*) FROM {tbl.name} WHERE _ingest_id = ?", [ingest_id]))
                result.quarantined = int(store.scalar("SELECT count(*) FROM quarantine WHERE ingest_id = ?", [ingest_id]))
                result.unchanged = result.rows_in - result.accepted - result.quarantined
        finally:
            if files is not None:
                con.remove_function("sl_record")
                shutil.rmtree(Path(files).parent, ignore_errors=True)
        con.execute(
            "UPDATE ingest_log SET finished_at = now(), rows_in = ?, accepted = ?, unchanged = ?, "
            "quarantined = ? WHERE ingest_id = ?",
            [result.rows_in, result.accepted, result.unchanged, result.quarantined, ingest_id],
        )
    return result


def _validate_locally(store: Store, keys: Keys, src: SourceConfig, tbl: Table, reader: SourceReader,
                      mapping: dict[str, str | None], sql: str, salt: str, stage: str, ingest_id: int,
                      result: IngestResult, progress: Progress | None) -> bool:
    """Validate the reader's batches on this machine into ``stage``; whether any row was staged."""
    rejects = RejectContext(tbl, src.label, mapping, reader.columns,
                            src.delimiter if isinstance(reader, CsvReader) else None, salt)
    first = True
    for batch in reader.batches():
        result.rows_in += batch.data.num_rows + len(batch.rejects)
        quarantine_rejects(store.con, keys, ingest_id, rejects, batch.rejects)
        if batch.data.num_rows:
            _validate_batch(store.con, batch, sql, stage, first, ingest_id, tbl.name, src.label)
            first = False
        if progress:
            progress(src.label, result.rows_in)
    return not first


def _erased_hashes(store: Store) -> list[str]:
    return [r[0] for r in store.con.execute("SELECT subject_hash FROM erased_subjects").fetchall()]


def _load_staged(store: Store, files: Path, name: str, label: str, stage: str, ingest_id: int,
                 result: IngestResult) -> bool:
    """Take what the executors validated: failing rows into the quarantine (records
    already encrypted), valid rows into ``stage``; whether any row was staged."""
    con, src = store.con, f"read_parquet({lit(str(files))})"
    result.rows_in = int(store.scalar(f"SELECT count(*) FROM {src} WHERE _kind = {KIND_ROW}"))
    checked = f"(SELECT * FROM {src} WHERE _kind = {KIND_ROW})"
    con.execute(
        INSERT + "SELECT ?, ?, ?, _line, _row, _err_field, _err_expected, _err_found, "
        "CASE WHEN _erased THEN 'erased' ELSE 'invalid value' END, __rec_enc, "
        f"CASE WHEN NOT _erased THEN _row_key END FROM {checked} WHERE _err_field IS NOT NULL",
        [ingest_id, name, label],
    )
    if name == "orders":
        con.execute(f"INSERT OR IGNORE INTO erased_subjects SELECT DISTINCT sl_subject({lit(ERASED_ORDER_PREFIX)} || "
                    f"order_id), now() FROM {checked} WHERE _erased AND order_id IS NOT NULL")
    con.execute(f"CREATE TEMP TABLE {stage} AS SELECT * EXCLUDE (_err_field, _err_expected, _err_found, __rec_enc, "
                f"_kind, __blob) FROM {checked} WHERE _err_field IS NULL")
    return bool(store.scalar(f"SELECT count(*) FROM {stage}"))


def _validate_batch(
    con: duckdb.DuckDBPyConnection, batch: Batch, sql: str, stage: str, first: bool,
    ingest_id: int, name: str, label: str,
) -> None:
    data = batch.data.append_column("_row", pa.array(batch.rows, pa.int64()))
    data = data.append_column("_line", pa.array(batch.lines, pa.int64()))
    con.register("_batch", data)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _checked AS {sql}")
    finally:
        con.unregister("_batch")
    # rows of erased customers keep no value: no encrypted record, no key, a fixed `found`
    con.execute(
        INSERT + "SELECT ?, ?, ?, _line, _row, _err_field, _err_expected, _err_found, "
        "CASE WHEN _erased THEN 'erased' ELSE 'invalid value' END, "
        "CASE WHEN NOT _erased THEN sl_encrypt(CAST(to_json(__rec) AS VARCHAR)) END, "
        "CASE WHEN NOT _erased THEN _row_key END FROM _checked WHERE _err_field IS NOT NULL",
        [ingest_id, name, label],
    )
    if name == "orders":  # new orders of an erased customer: their order lines must stay out too
        con.execute(f"INSERT OR IGNORE INTO erased_subjects SELECT DISTINCT sl_subject({lit(ERASED_ORDER_PREFIX)} || "
                    "order_id), now() FROM _checked WHERE _erased AND order_id IS NOT NULL")
    cols = "* EXCLUDE (_err_field, _err_expected, _err_found)"
    if first:
        con.execute(f"CREATE TEMP TABLE {stage} AS SELECT {cols} FROM _checked WHERE _err_field IS NULL")
    else:
        con.execute(f"INSERT INTO {stage} SELECT {cols} FROM _checked WHERE _err_field IS NULL")
    con.execute("DROP TABLE _checked")


def _store_staged(con: duckdb.DuckDBPyConnection, tbl: Table, stage: str, ingest_id: int, label: str, cfg: Config,
                  records: str = "sl_encrypt(CAST(to_json(__rec) AS VARCHAR))", sealed: bool = False) -> None:
    """Key and orphan checks, then store. ``records``: the SQL giving a quarantined row's
    encrypted record; ``sealed``: the vault columns arrive encrypted (from the executors)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _classified AS {keys_sql(tbl, stage)}")
    con.execute(
        INSERT + "SELECT ?, ?, ?, _line, _row, _err_field, _err_expected, _err_found, "
        f"'key check', {records}, _row_key FROM _classified WHERE _err_field IS NOT NULL",
        [ingest_id, tbl.name, label],
    )
    keep = "_err_field IS NULL AND NOT _unchanged"
    stored = ", ".join(q(c.name) for c in tbl.stored_columns)
    con.execute(
        f"INSERT INTO {tbl.name} SELECT {stored}, ?, _line, _row_hash FROM _classified WHERE {keep}",
        [ingest_id],
    )

    def vault(name: str) -> str:
        return q(name) if sealed else f"sl_encrypt({q(name)})"

    if tbl.name == "customers":
        for col in tbl.columns:
            if col.pii and cfg.privacy.action(col.name) == "encrypt":
                con.execute(
                    f"INSERT INTO vault_customer_pii SELECT customer_id, ?, {vault('__raw_' + col.name)}, ? "
                    f"FROM _classified WHERE {keep} AND {q('__raw_' + col.name)} IS NOT NULL",
                    [col.name, ingest_id],
                )
    links = [c for c in tbl.columns if c.link] if cfg.privacy.link_identifiers else []
    for col in links:  # kept rows and unchanged ones (a store from before links gains them)
        con.execute(
            f"INSERT INTO customer_links SELECT DISTINCT customer_id, ?, {q('__link_' + col.name)}, ? "
            f"FROM _classified s WHERE _err_field IS NULL AND {q('__link_' + col.name)} IS NOT NULL AND NOT EXISTS "
            f"(SELECT 1 FROM customer_links l WHERE l.customer_id = s.customer_id AND l.link_hash = "
            f"s.{q('__link_' + col.name)})", [col.link, ingest_id])
    if tbl.name == "texts" and cfg.privacy.raw_text == "encrypt":
        con.execute(
            f"INSERT INTO vault_text_raw SELECT text_id, {vault('__raw_text')}, ? FROM _classified WHERE {keep}",
            [ingest_id],
        )
    # entries of earlier ingests for the rows stored or found unchanged now are resolved
    resolve(con, ingest_id, tbl.name, label, "(SELECT _row_key FROM _classified WHERE _err_field IS NULL)")
    con.execute("DROP TABLE _classified")


def dumps(results: list[IngestResult]) -> str:
    return json.dumps([r.as_dict() for r in results], ensure_ascii=False, indent=2)



