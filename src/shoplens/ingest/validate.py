"""Row validation compiled to one DuckDB query per table.

For each canonical column the query computes the raw value (trimmed, empty -> NULL), the
typed value (TRY_CAST / strptime / enum synonyms), and then, per row, the *first* rule
the row breaks as three columns: ``_err_field``, ``_err_expected``, ``_err_found``. Rows
with no error go on to key and foreign-key checks; the others are quarantined. The whole
batch is checked set-based in the engine instead of row by row in Python.

Identifiers marked ``pseudonymise`` pass through the ``sl_pseudo`` function (a keyed
HMAC registered by the pipeline) and free text through the PII masking expression (plus,
for columns marked ``redact_subject``, the row's own raw customer id replaced by
``[ID]``), so neither raw identifiers nor raw text leave this query except into the vault
columns (``__raw_<name>``), which the pipeline encrypts. Rows of erased customers
(``sl_subject`` of the pseudonym found in ``erased_subjects``) fail the first check of
all, so they are quarantined before any other rule, key or orphan check sees them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from shoplens.privacy import link_sql, mask_sql
from shoplens.schema import (
    EXPECTED_WORDS,
    SUBJECT_MIN_CHARS,
    SUBJECT_PLACEHOLDER,
    Column,
    Table,
)

EARLIEST = "1990-01-01"
DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y.%m.%d", "%Y年%m月%d日")
ERASED_FOUND = "(erased customer)"
ERASED_ORDER_PREFIX = "order:"  # suppression entries for an erased customer's orders
ERASED_EXPECTED = "a customer who has not been erased (rows of erased customers are never stored again)"
# a quarantined row is known by a keyed hash of its table key (or, when that cannot be
# read, of its whole record), so a later ingest that accepts the same row resolves it
ROW_KEY_TAG = "/row-key/"
ROW_RECORD_TAG = "/row-record/"


def q(name: str) -> str:
    """Quote an identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def lit(value: str) -> str:
    """Quote a string literal for DuckDB."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class SourceContext:
    """Per-source settings the validation query needs."""

    table: Table
    mapping: dict[str, str | None]  # canonical column -> source column (None: absent)
    label: str
    timestamp_formats: tuple[str, ...]
    source_tz: str
    store_tz: str
    currency: str  # assumed when a row names none
    base_currency: str = "CNY"
    fx_rates: tuple[tuple[str, float], ...] = ()
    # enum column -> {source spelling (lower-cased, trimmed) -> canonical value}, from [sources] values
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    check_erased: bool = False  # the suppression list is not empty: test each row's customer

    @property
    def erased_field(self) -> str | None:
        """The column that ties a row to a possibly erased customer: the customer id, or
        for order lines (which name no customer) the order id."""
        if self.table.subject is not None:
            return self.table.subject.name
        orders = [c.name for c in self.table.columns if c.references == "orders.order_id"]
        return orders[0] if orders else None

    @property
    def erased_sql(self) -> str | None:
        """Condition true for a row of an erased customer (None when nothing can match).

        Erasure lists ``subject_hash(pseudonym)`` for the customer and
        ``subject_hash(ERASED_ORDER_PREFIX + order_id)`` for each of their orders."""
        name = self.erased_field
        if name is None or not self.check_erased:
            return None
        value = q("t_" + name)
        if self.table.subject is None:
            value = f"{lit(ERASED_ORDER_PREFIX)} || {value}"
        return f"sl_subject({value}) IN (SELECT subject_hash FROM erased_subjects)"

    def rate_sql(self, currency: str) -> str:
        """Factor that converts an amount in ``currency`` (SQL expr) to the base currency."""
        whens = " ".join(f"WHEN {lit(c)} THEN {r!r}" for c, r in self.fx_rates)
        return f"CASE {currency} WHEN {lit(self.base_currency)} THEN 1.0 {whens} END"


def _scrubbed(col: Column, r: str, ctx: SourceContext) -> str:
    """Free text as stored: PII masked, and the row's own customer id replaced if declared."""
    masked = mask_sql(r)
    subject = ctx.table.subject
    if not col.redact_subject or subject is None or ctx.mapping.get(subject.name) is None:
        return masked
    own = q("r_" + subject.name)
    pattern = f"'(^|[^0-9A-Za-z])' || regexp_escape({own}) || '([^0-9A-Za-z]|$)'"
    out = masked
    for _ in range(2):  # adjacent matches share the boundary character the first pass consumed
        out = f"regexp_replace({out}, {pattern}, {lit(chr(92) + '1' + SUBJECT_PLACEHOLDER + chr(92) + '2')}, 'g')"
    return f"CASE WHEN length({own}) >= {SUBJECT_MIN_CHARS} THEN {out} ELSE {masked} END"


def _typed(col: Column, r: str, ctx: SourceContext) -> str:
    if col.type in ("id", "string"):
        return f"sl_pseudo({r})" if col.pseudonymise else r
    if col.type == "text":
        return _scrubbed(col, r, ctx)
    if col.type == "int":
        d = f"TRY_CAST({r} AS DOUBLE)"
        return f"CASE WHEN {d} = round({d}) AND abs({d}) < 9e15 THEN CAST({d} AS BIGINT) END"
    if col.type == "float":
        return f"TRY_CAST({r} AS DOUBLE)"
    if col.type == "money":
        cleaned = f"regexp_replace({r}, '[¥￥$€£,\\s]|RMB|CNY|USD|元', '', 'g')"
        return f"TRY_CAST({cleaned} AS DECIMAL(18,2))"
    if col.type == "enum":
        # the source's own spellings first: they may redefine a built-in synonym
        mapped = [(s.strip().lower(), canon) for s, canon in ctx.values.get(col.name, {}).items()]
        builtin = [(s, canon) for canon, spellings in col.values.items() for s in spellings]
        seen: set[str] = set()
        whens = []
        for spelling, canon in mapped + builtin:
            if spelling not in seen:
                seen.add(spelling)
                whens.append(f"WHEN {lit(spelling)} THEN {lit(canon)}")
        return f"CASE lower({r}) {' '.join(whens)} END"
    if col.type == "timestamp":
        return _timestamp(r, ctx)
    if col.type == "date":
        formats = [f for f in (*DATE_FORMATS, *ctx.timestamp_formats) if f != "epoch"]
        parsers = [f"try_strptime({r}, {lit(f)})" for f in formats] + [f"TRY_CAST({r} AS TIMESTAMP)"]
        return f"CAST(COALESCE({', '.join(parsers)}) AS DATE)"
    raise ValueError(col.type)  # pragma: no cover


def _timestamp(r: str, ctx: SourceContext) -> str:
    parsers = [
        f"try_strptime({r}, {lit(f)})" for f in ctx.timestamp_formats if f != "epoch"
    ]
    parsers.append(f"TRY_CAST({r} AS TIMESTAMP)")
    naive = f"COALESCE({', '.join(parsers)})"
    if ctx.source_tz != ctx.store_tz:
        naive = f"timezone({lit(ctx.store_tz)}, timezone({lit(ctx.source_tz)}, {naive}))"
    # explicit offsets ('Z', '+08:00') are honoured, then shown in the shop's time zone
    aware = f"timezone({lit(ctx.store_tz)}, TRY_CAST({r} AS TIMESTAMPTZ))"
    has_offset = f"regexp_matches({r}, '(Z|[+-][0-9]{{2}}:?[0-9]{{2}})$')"
    expr = f"CASE WHEN {has_offset} THEN {aware} ELSE {naive} END"
    if "epoch" in ctx.timestamp_formats:
        epoch = f"timezone({lit(ctx.store_tz)}, to_timestamp(TRY_CAST({r} AS DOUBLE)))"
        expr = f"COALESCE(CASE WHEN regexp_matches({r}, '^[0-9]+(\\.[0-9]+)?$') THEN {epoch} END, {expr})"
    return expr


def _raw(col: Column, ctx: SourceContext) -> str:
    src = ctx.mapping.get(col.name)
    if src is None:
        if col.name == "currency":
            return lit(ctx.currency)
        if col.name == "event_id":
            return f"'e_' || md5({lit(ctx.label)} || '#' || CAST(_row AS VARCHAR))"
        return "NULL"
    raw = f"NULLIF(trim(CAST({q(src)} AS VARCHAR)), '')"
    if col.name == "currency":
        raw = f"upper(COALESCE({raw}, {lit(ctx.currency)}))"
    return raw


def _checks(col: Column, r: str, t: str, ctx: SourceContext) -> list[tuple[str, str, str]]:
    """(condition, expected, found) for one column, in the order they are tried."""
    found = "'<redacted PII>'" if col.pii else (f"sl_pseudo({r})" if col.pseudonymise else r)
    if col.type == "text":
        found = _scrubbed(col, r, ctx)
    out: list[tuple[str, str, str]] = []
    if col.required:
        out.append((f"{r} IS NULL", lit(f"a value ({EXPECTED_WORDS[col.type]})"), "'empty'"))
    if col.type == "enum":
        out.append((f"{r} IS NOT NULL AND {t} IS NULL", enum_expected(col, found), found))
    elif col.type not in ("id", "string", "text"):
        out.append((f"{r} IS NOT NULL AND {t} IS NULL", lit(EXPECTED_WORDS[col.type]), found))
    if col.minimum is not None:
        out.append((f"{t} < {col.minimum}", lit(f"a value >= {col.minimum:g}"), found))
    if col.maximum is not None:
        out.append((f"{t} > {col.maximum}", lit(f"a value <= {col.maximum:g}"), found))
    if col.name == "currency" and ctx.table.name == "orders":
        known = [ctx.base_currency] + [c for c, _r in ctx.fx_rates]
        out.append(
            (
                f"{r} NOT IN ({', '.join(lit(k) for k in known)})",
                lit(f"{' or '.join(known)} (add a rate to [defaults] fx_rates for others)"),
                r,
            )
        )
    if col.type == "timestamp":
        out.append(
            (
                f"({t} < TIMESTAMP '{EARLIEST}' OR {t} > CAST(now() AS TIMESTAMP) + INTERVAL 1 DAY)",
                lit(f"a date between {EARLIEST} and tomorrow"),
                found,
            )
        )
    if col.type == "date":
        earliest = col.earliest or EARLIEST
        out.append(
            (
                f"({t} < DATE '{earliest}' OR {t} > current_date)",
                lit(f"a date between {earliest} and today"),
                found,
            )
        )
    return out


def enum_expected(col: Column, found: str) -> str:
    """SQL for the expected text of a refused enum value: the canonical values, and how to
    map the source's own spelling (``found``, an SQL expression) in the config."""
    allowed = ", ".join(col.values)
    head = f"one of {allowed} (map other spellings in this source's [[sources]] block: values = {{ {col.name} = {{ \""
    spelling = f"replace(left({found}, 40), '\"', '\\\"')"  # quoted the way TOML wants it
    tail = '" = "..." } })'
    return f"{lit(head)} || {spelling} || {lit(tail)}"


def validation_sql(ctx: SourceContext, salt: str) -> str:
    """The query that types and checks ``_batch`` (source columns + ``_row``, ``_line``).

    Output columns: the canonical columns, ``__raw_<c>`` for PII and text columns,
    ``__link_<c>`` (the keyed hash of the normalised value) for identifier columns,
    ``_row``, ``_line``, ``_row_hash``, ``_row_key`` (see ``row_key_sql``), ``_erased``,
    ``_err_field``, ``_err_expected``, ``_err_found`` and ``__rec`` (the source row as a
    struct, for quarantine).
    """
    cols = ctx.table.columns
    raw_sel = ", ".join(f"{_raw(c, ctx)} AS {q('r_' + c.name)}" for c in cols)
    typed_sel = ", ".join(f"{_typed(c, q('r_' + c.name), ctx)} AS {q('t_' + c.name)}" for c in cols)
    checks = [chk + (c.name,) for c in cols for chk in _checks(c, q("r_" + c.name), q("t_" + c.name), ctx)]
    erased = ctx.erased_sql
    if erased is not None:  # before every other rule: nothing of an erased customer is kept
        checks.insert(0, (erased, lit(ERASED_EXPECTED), lit(ERASED_FOUND), str(ctx.erased_field)))
    field_case = "CASE " + " ".join(f"WHEN {cond} THEN {lit(name)}" for cond, _e, _f, name in checks) + " END"
    exp_case = "CASE " + " ".join(f"WHEN {cond} THEN {e}" for cond, e, _f, _n in checks) + " END"
    found_case = "CASE " + " ".join(f"WHEN {cond} THEN left({f}, 200)" for cond, _e, f, _n in checks) + " END"
    out_cols = []
    for c in cols:
        t = q("t_" + c.name)
        if c.default is not None:
            t = f"COALESCE({t}, {c.default})"
        if c.type == "money" and ctx.table.name == "orders":
            t = f"CAST({t} * {ctx.rate_sql(q('r_currency'))} AS DECIMAL(18,2))"
        if c.derived_from and not ctx.mapping.get(c.name) and ctx.mapping.get(c.derived_from):
            t = _derived(c, ctx.table.column(c.derived_from))
        if c.name == "language":
            text = q("t_text")
            t = (
                f"COALESCE(lower({t}), CASE WHEN regexp_matches({text}, '[\\x{{4e00}}-\\x{{9fff}}]') THEN 'zh' "
                f"WHEN regexp_matches({text}, '[A-Za-z]') THEN 'en' ELSE 'und' END)"
            )
        out_cols.append(f"{t} AS {q(c.name)}")
        if c.pii or c.type == "text":
            out_cols.append(f"{q('r_' + c.name)} AS {q('__raw_' + c.name)}")
        if c.link:
            out_cols.append(f"sl_link({link_sql(c.link, q('r_' + c.name))}) AS {q('__link_' + c.name)}")
    mapped = [q("r_" + c.name) for c in cols if ctx.mapping.get(c.name)]
    hashed = ", ".join(mapped) or "''"
    row_hash = f"md5({lit(salt)} || concat_ws(chr(31), {hashed}))"
    keys = [q("r_" + k) for k in ctx.table.key]
    row_key = (
        f"CASE WHEN {' AND '.join(f'{k} IS NOT NULL' for k in keys)} "
        f"THEN md5({lit(salt + ROW_KEY_TAG)} || concat_ws(chr(31), {', '.join(keys)})) "
        f"ELSE md5({lit(salt + ROW_RECORD_TAG)} || concat_ws(chr(31), {hashed})) END"
    )
    return f"""
WITH r AS (SELECT _row, _line, b AS __rec, {raw_sel} FROM _batch b),
t AS (SELECT *, {typed_sel} FROM r)
SELECT {", ".join(out_cols)}, _row, _line, {row_hash} AS _row_hash, {row_key} AS _row_key,
       {f"COALESCE({erased}, false)" if erased else "false"} AS _erased,
       {field_case} AS _err_field, {exp_case} AS _err_expected, {found_case} AS _err_found, __rec
FROM t"""


def _derived(col: Column, source: Column) -> str:
    """``col`` computed from another column of the row (a year from a date)."""
    if col.type == "int" and source.type == "date":
        return f"CAST(year({q('t_' + source.name)}) AS BIGINT)"
    raise ValueError(f"cannot derive {col.type} {col.name} from {source.type} {source.name}")  # pragma: no cover


def row_key(salt: str, key_values: list[str] | None, record: str) -> str:
    """The quarantine's ``row_key`` computed in Python (for rows the parser rejected): the
    same keyed hash as ``validation_sql`` when the table key could be read, else a keyed
    hash of the raw record."""
    if key_values is not None and all(key_values):
        return hashlib.md5((salt + ROW_KEY_TAG + "\x1f".join(key_values)).encode("utf-8")).hexdigest()
    return hashlib.md5((salt + ROW_RECORD_TAG + record).encode("utf-8")).hexdigest()


def keys_sql(table: Table, stage: str) -> str:
    """Classify staged rows as new / unchanged / quarantined (duplicate key or orphan)."""
    key = ", ".join(q(k) for k in table.key)
    join = " AND ".join(f"s.{q(k)} = e.{q(k)}" for k in table.key)
    key_text = " || '/' || ".join(f"CAST(s.{q(k)} AS VARCHAR)" for k in table.key)
    key_name = "+".join(table.key)
    whens = [
        (
            "s._dup_rank > 1",
            lit(key_name),
            lit(f"a unique {key_name}"),
            f"{key_text} || ' (duplicate of line ' || CAST(s._first_line AS VARCHAR) || ')'",
        ),
        (
            "e._row_hash IS NOT NULL AND e._row_hash <> s._row_hash",
            lit(key_name),
            lit(f"a new {key_name} or the stored row unchanged"),
            f"{key_text} || ' (already stored with different values, ingest #' || CAST(e._ingest_id AS VARCHAR) || ')'",
        ),
    ]
    for c in table.columns:
        if c.references:
            ptable, pcol = c.references.split(".")
            cond = (
                f"s.{q(c.name)} IS NOT NULL AND NOT EXISTS "
                f"(SELECT 1 FROM {ptable} p WHERE p.{q(pcol)} = s.{q(c.name)})"
            )
            whens.append((cond, lit(c.name), lit(f"a known {pcol} (present in {ptable})"), f"s.{q(c.name)} || ' (orphan)'"))
    fcase = "CASE " + " ".join(f"WHEN {w} THEN {f}" for w, f, _e, _x in whens) + " END"
    ecase = "CASE " + " ".join(f"WHEN {w} THEN {e}" for w, _f, e, _x in whens) + " END"
    xcase = "CASE " + " ".join(f"WHEN {w} THEN {x}" for w, _f, _e, x in whens) + " END"
    return f"""
SELECT s.*, {fcase} AS _err_field, {ecase} AS _err_expected, {xcase} AS _err_found,
       (e._row_hash IS NOT NULL AND e._row_hash = s._row_hash AND s._dup_rank = 1) AS _unchanged
FROM (SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY _row) AS _dup_rank,
             first_value(_line) OVER (PARTITION BY {key} ORDER BY _row) AS _first_line
      FROM {stage}) s
LEFT JOIN {table.name} e ON {join}"""
