"""Ingest orchestration: read -> validate -> key/orphan checks -> de-identify -> store.

Each source is ingested in one transaction: either all its rows are stored or
quarantined and its ``ingest_log`` row written, or nothing changes. Every input row is
counted exactly once as accepted (new), unchanged (an identical row is already stored:
this is what makes re-ingesting idempotent) or quarantined.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import duckdb
import pyarrow as pa

from shoplens.config import Config, SourceConfig
from shoplens.errors import ConfigError, SourceError
from shoplens.ingest.readers import Batch, open_reader
from shoplens.ingest.validate import SourceContext, keys_sql, q, validation_sql
from shoplens.privacy import Keys, load_keys, mask_text
from shoplens.schema import INGEST_ORDER, Table, table
from shoplens.store import Store

Progress = Callable[[str, int], None]  # (source label, rows done so far)


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


def register_functions(con: duckdb.DuckDBPyConnection, keys: Keys) -> None:
    """Make the keyed pseudonym and encryption available to SQL as vectorised UDFs."""
    for name, fn in (("sl_pseudo", keys.pseudonymise_array), ("sl_encrypt", keys.encrypt_array)):
        with contextlib.suppress(duckdb.InvalidInputException):
            con.remove_function(name)
        con.create_function(name, fn, ["VARCHAR"], "VARCHAR", type="arrow", side_effects=False)  # type: ignore[call-overload]


def keys_for(cfg: Config, create: bool = False) -> Keys:
    return load_keys(cfg.privacy.key_env, cfg.resolve(cfg.privacy.key_file), create=create)


def optional_keys(cfg: Config) -> Keys | None:
    """The keys if the secret is available; readers can work with pseudonyms without it."""
    try:
        return keys_for(cfg)
    except ConfigError:
        return None


def ingest(cfg: Config, store: Store, progress: Progress | None = None, create_key: bool = False) -> list[IngestResult]:
    """Ingest every configured source, parents before children.

    >>> # see tests/test_ingest.py for runnable examples
    """
    if not cfg.sources:
        raise ConfigError("no [[sources]] in the config: nothing to ingest")
    keys = keys_for(cfg, create=create_key)
    register_functions(store.con, keys)
    ordered = sorted(cfg.sources, key=lambda s: INGEST_ORDER.index(s.table))
    return [ingest_source(cfg, store, keys, s, progress) for s in ordered]


def ingest_source(
    cfg: Config, store: Store, keys: Keys, src: SourceConfig, progress: Progress | None = None
) -> IngestResult:
    tbl = table(src.table)
    reader = open_reader(src, cfg.root)
    mapping = resolve_mapping(tbl, src, reader.columns)
    result = IngestResult(source=src.label, table=tbl.name)
    digest = reader.content_hash()
    if digest is not None:
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
    )
    salt = keys.pseudonym("row-hash-salt")
    sql = validation_sql(ctx, salt)
    con = store.con
    with store.transaction():
        ingest_id = int(store.scalar("SELECT nextval('ingest_seq')"))
        result.ingest_id = ingest_id
        con.execute(
            "INSERT INTO ingest_log VALUES (?, ?, ?, ?, now(), NULL, 0, 0, 0, 0, false)",
            [ingest_id, src.label, tbl.name, digest],
        )
        stage = f"_stage_{tbl.name}"
        con.execute(f"DROP TABLE IF EXISTS {stage}")
        first = True
        for batch in reader.batches():
            result.rows_in += batch.data.num_rows + len(batch.rejects)
            _quarantine_rejects(con, keys, ingest_id, tbl.name, src.label, batch)
            if batch.data.num_rows:
                _validate_batch(con, batch, sql, stage, first, ingest_id, tbl.name, src.label)
                first = False
            if progress:
                progress(src.label, result.rows_in)
        if first:  # empty source: nothing staged
            result.quarantined = int(store.scalar("SELECT count(*) FROM quarantine WHERE ingest_id = ?", [ingest_id]))
        else:
            _store_staged(con, tbl, stage, ingest_id, src.label, cfg)
            con.execute(f"DROP TABLE {stage}")
            result.accepted = int(store.scalar(f"SELECT count(*) FROM {tbl.name} WHERE _ingest_id = ?", [ingest_id]))
            result.quarantined = int(store.scalar("SELECT count(*) FROM quarantine WHERE ingest_id = ?", [ingest_id]))
            result.unchanged = result.rows_in - result.accepted - result.quarantined
        con.execute(
            "UPDATE ingest_log SET finished_at = now(), rows_in = ?, accepted = ?, unchanged = ?, "
            "quarantined = ? WHERE ingest_id = ?",
            [result.rows_in, result.accepted, result.unchanged, result.quarantined, ingest_id],
        )
    return result


def _quarantine_rejects(
    con: duckdb.DuckDBPyConnection, keys: Keys, ingest_id: int, name: str, label: str, batch: Batch
) -> None:
    if not batch.rejects:
        return
    rows = [
        (ingest_id, name, label, r.line, r.row, "(row)", r.expected, mask_text(r.found),
         "unparseable row", keys.fernet.encrypt(r.found.encode()).decode())
        for r in batch.rejects
    ]
    con.executemany("INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


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
    con.execute(
        "INSERT INTO quarantine SELECT ?, ?, ?, _line, _row, _err_field, _err_expected, _err_found, "
        "'invalid value', sl_encrypt(CAST(to_json(__rec) AS VARCHAR)) FROM _checked WHERE _err_field IS NOT NULL",
        [ingest_id, name, label],
    )
    cols = "* EXCLUDE (_err_field, _err_expected, _err_found)"
    if first:
        con.execute(f"CREATE TEMP TABLE {stage} AS SELECT {cols} FROM _checked WHERE _err_field IS NULL")
    else:
        con.execute(f"INSERT INTO {stage} SELECT {cols} FROM _checked WHERE _err_field IS NULL")
    con.execute("DROP TABLE _checked")


def _store_staged(con: duckdb.DuckDBPyConnection, tbl: Table, stage: str, ingest_id: int, label: str, cfg: Config) -> None:
    con.execute(f"CREATE OR REPLACE TEMP TABLE _classified AS {keys_sql(tbl, stage)}")
    con.execute(
        "INSERT INTO quarantine SELECT ?, ?, ?, _line, _row, _err_field, _err_expected, _err_found, "
        "'key check', sl_encrypt(CAST(to_json(__rec) AS VARCHAR)) FROM _classified WHERE _err_field IS NOT NULL",
        [ingest_id, tbl.name, label],
    )
    keep = "_err_field IS NULL AND NOT _unchanged"
    stored = ", ".join(q(c.name) for c in tbl.stored_columns)
    con.execute(
        f"INSERT INTO {tbl.name} SELECT {stored}, ?, _line, _row_hash FROM _classified WHERE {keep}",
        [ingest_id],
    )
    if tbl.name == "customers":
        for col in tbl.columns:
            if col.pii and cfg.privacy.action(col.name) == "encrypt":
                con.execute(
                    f"INSERT INTO vault_customer_pii SELECT customer_id, ?, sl_encrypt({q('__raw_' + col.name)}), ? "
                    f"FROM _classified WHERE {keep} AND {q('__raw_' + col.name)} IS NOT NULL",
                    [col.name, ingest_id],
                )
    if tbl.name == "texts" and cfg.privacy.raw_text == "encrypt":
        con.execute(
            f"INSERT INTO vault_text_raw SELECT text_id, sl_encrypt(__raw_text), ? FROM _classified WHERE {keep}",
            [ingest_id],
        )
    con.execute("DROP TABLE _classified")


def quarantine_report(store: Store, limit: int = 20, table_name: str | None = None) -> list[dict[str, object]]:
    """The most recent quarantined rows, newest ingest first."""
    where = "WHERE table_name = ?" if table_name else ""
    params: list[object] = [table_name] if table_name else []
    rows = store.con.execute(
        f"SELECT ingest_id, table_name, source, line, field, expected, found, reason FROM quarantine {where} "
        "ORDER BY ingest_id DESC, line LIMIT ?",
        [*params, limit],
    ).fetchall()
    keys = ("ingest_id", "table", "source", "line", "field", "expected", "found", "reason")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def dumps(results: list[IngestResult]) -> str:
    return json.dumps([r.as_dict() for r in results], ensure_ascii=False, indent=2)



