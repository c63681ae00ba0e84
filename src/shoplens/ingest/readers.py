"""Streaming readers: every source becomes a sequence of Arrow batches of *strings*, each
row tagged with its row number and physical line, plus the rows the parser could not
split (wrong number of fields) as ready-made rejects.

Files are never loaded whole: CSV is parsed block by block by pyarrow (which also
transcodes GBK/GB18030), Parquet is read by row group, JSON Lines line by line, and
databases through a server-side cursor. Reading everything as strings lets one
validation step (``shoplens.ingest.validate``) report the value exactly as the source
wrote it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shoplens.config import SourceConfig
from shoplens.errors import SourceError

BATCH_ROWS = 100_000
_CSV_BLOCK = 8 << 20


@dataclass
class Reject:
    """A row the parser could not split into fields."""

    row: int
    line: int
    expected: str
    found: str
    text: str = ""  # the whole raw row as the source wrote it (quarantined encrypted, never in clear)


@dataclass
class Batch:
    data: pa.Table  # string columns named as in the source
    rows: np.ndarray  # 1-based data row numbers
    lines: np.ndarray  # 1-based physical line (CSV/JSONL) or row number (Parquet/SQL)
    rejects: list[Reject] = field(default_factory=list)


class SourceReader:
    """Base: knows the source's columns and yields batches."""

    def __init__(self, src: SourceConfig, path: Path | None) -> None:
        self.src = src
        self.path = path
        self.columns: list[str] = []

    def batches(self) -> Iterator[Batch]:  # pragma: no cover - abstract
        raise NotImplementedError

    def content_hash(self) -> str | None:
        """SHA-256 of the file's bytes (None for databases)."""
        if self.path is None:
            return None
        h = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()


def detect_encoding(path: Path, declared: str) -> str:
    """``auto``: UTF-8 (with or without BOM) if the head decodes as UTF-8, else GB18030."""
    if declared.lower() not in ("auto", ""):
        try:
            "".encode(declared)
        except LookupError:
            raise SourceError(f"{path}: unknown encoding '{declared}' (try utf-8, gbk or gb18030)") from None
        return declared
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as err:
        if err.start >= len(head) - 4:  # a character cut by the 1 MB window
            return "utf-8"
    try:
        head.decode("gb18030")
        return "gb18030"
    except UnicodeDecodeError as err:
        raise SourceError(
            f"{path}: unreadable encoding: neither UTF-8 nor GB18030 "
            f"(invalid byte 0x{head[err.start]:02x} at offset {err.start}); set 'encoding' for this source"
        ) from None


class CsvReader(SourceReader):
    def __init__(self, src: SourceConfig, path: Path) -> None:
        super().__init__(src, path)
        self.encoding = detect_encoding(path, src.encoding)
        try:
            with open(path, encoding=self.encoding, newline="") as fh:
                header = next(csv.reader(io.StringIO(fh.readline()), delimiter=src.delimiter), [])
        except UnicodeDecodeError as err:
            raise SourceError(
                f"{path}: unreadable with encoding '{self.encoding}': {err.reason} at byte {err.start}"
            ) from None
        if not header:
            raise SourceError(f"{path}: empty file (expected a header line with column names)")
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes:
            raise SourceError(f"{path}: duplicate column names in the header: {dupes}")
        self.columns = header

    def batches(self) -> Iterator[Batch]:
        import pyarrow.csv as pcsv

        invalid: list[tuple[int, str, int]] = []  # (record number incl. header, text, columns)

        def on_invalid(row: pcsv.InvalidRow) -> str:
            invalid.append((int(row.number or 0), row.text, int(row.actual_columns)))
            return "skip"

        reader = pcsv.open_csv(
            self.path,
            read_options=pcsv.ReadOptions(
                use_threads=False, block_size=_CSV_BLOCK, encoding=self.encoding
            ),
            parse_options=pcsv.ParseOptions(
                delimiter=self.src.delimiter,
                newlines_in_values=True,
                ignore_empty_lines=False,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pcsv.ConvertOptions(
                column_types={c: pa.string() for c in self.columns},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        next_record = 2  # record 1 is the header
        nl_before = 0  # embedded newlines in all records before next_record
        used_invalid = 0
        n_cols = len(self.columns)
        try:
            for rb in reader:
                tbl = pa.Table.from_batches([rb])
                n = tbl.num_rows
                inv_rec = np.array([r for r, _t, _c in invalid], dtype=np.int64)
                # record numbers of the valid rows: skip over records the parser rejected
                records = np.arange(next_record, next_record + n, dtype=np.int64)
                while True:
                    shift = np.searchsorted(inv_rec, records, side="right") - np.searchsorted(
                        inv_rec, next_record, side="left"
                    )
                    adjusted = np.arange(next_record, next_record + n) + shift
                    if np.array_equal(adjusted, records):
                        break
                    records = adjusted
                nl = np.zeros(n, dtype=np.int64)
                for col in tbl.columns:
                    nl += pc.fill_null(pc.count_substring(col, "\n"), 0).to_numpy(zero_copy_only=False)
                last = int(records[-1]) if n else next_record - 1
                # rejected records that fall inside this batch
                batch_inv = [x for x in invalid[used_invalid:] if x[0] <= last]
                used_invalid += len(batch_inv)
                inv_nl = {r: t.count("\n") for r, t, _c in batch_inv}
                inv_recs = np.array(sorted(inv_nl), dtype=np.int64)
                inv_cum = np.cumsum([inv_nl[r] for r in inv_recs]) if len(inv_recs) else np.array([])
                before_valid = np.concatenate([[0], np.cumsum(nl)[:-1]]) if n else nl
                k = np.searchsorted(inv_recs, records, side="left")
                inv_before = np.where(k > 0, inv_cum[np.maximum(k - 1, 0)] if len(inv_cum) else 0, 0)
                lines = records + nl_before + before_valid + inv_before
                rejects = []
                for r, text, ncols in batch_inv:
                    j = int(np.searchsorted(records, r))
                    vn = int(before_valid[j] if j < n else nl.sum())
                    i_before = int(sum(inv_nl[x] for x in inv_recs if x < r))
                    rejects.append(
                        Reject(r - 1, r + nl_before + vn + i_before, f"{n_cols} fields", f"{ncols} fields: {text[:200]}", text)
                    )
                nl_before += int(nl.sum()) + sum(inv_nl.values())
                next_record = last + 1
                yield Batch(tbl, records - 1, lines, rejects)
        except pa.ArrowInvalid as err:
            raise SourceError(f"{self.path}: cannot parse as CSV ({self.encoding}): {err}") from None
        except UnicodeDecodeError as err:
            raise SourceError(
                f"{self.path}: unreadable with encoding '{self.encoding}': {err.reason}; "
                "set 'encoding' for this source (utf-8, gbk, gb18030)"
            ) from None
        tail = invalid[used_invalid:]
        if tail:
            rejects = [
                Reject(r - 1, r + nl_before, f"{n_cols} fields", f"{c} fields: {t[:200]}", t) for r, t, c in tail
            ]
            empty = pa.table({c: pa.array([], pa.string()) for c in self.columns})
            yield Batch(empty, np.array([], np.int64), np.array([], np.int64), rejects)


class ParquetReader(SourceReader):
    """A Parquet file, or a folder of them (read in file-name order, row numbers
    running on across the files)."""

    def __init__(self, src: SourceConfig, path: Path) -> None:
        super().__init__(src, path)
        import pyarrow.parquet as pq

        self.files = parquet_files(path)
        try:
            self._files = [pq.ParquetFile(f) for f in self.files]
        except (pa.ArrowInvalid, OSError) as err:
            raise SourceError(f"{path}: not a readable Parquet file: {err}") from None
        self.schema = self._files[0].schema_arrow
        self.columns = list(self.schema.names)
        for f, pf in zip(self.files[1:], self._files[1:], strict=True):
            if list(pf.schema_arrow.names) != self.columns:
                raise SourceError(f"{path}: {f.name} has other columns than {self.files[0].name}; "
                                  "every file of a Parquet folder needs the same columns")

    def batches(self) -> Iterator[Batch]:
        start = 1
        for pf in self._files:
            for rb in pf.iter_batches(batch_size=BATCH_ROWS):
                tbl = strings(pa.Table.from_batches([rb]))
                rows = np.arange(start, start + tbl.num_rows, dtype=np.int64)
                start += tbl.num_rows
                yield Batch(tbl, rows, rows)

    def content_hash(self) -> str | None:
        """SHA-256 over the files' names and bytes."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(f.name.encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of a source: the file itself, or a folder's ``*.parquet`` files
    (nested folders included, in name order; Spark's ``_SUCCESS`` and hidden files skipped)."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.parquet")
                   if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
    if not files:
        raise SourceError(f"{path}: the folder holds no .parquet files")
    return files


def strings(tbl: pa.Table) -> pa.Table:
    """Every column as text, the way validation reads a source."""
    return pa.table({name: _to_string(tbl[name]) for name in tbl.column_names})


def _to_string(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.cast(pa.string())
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        return pc.strftime(col, format="%Y-%m-%d %H:%M:%S")
    return col.cast(pa.string())


class JsonLinesReader(SourceReader):
    def __init__(self, src: SourceConfig, path: Path) -> None:
        super().__init__(src, path)
        self.encoding = detect_encoding(path, src.encoding)
        keys: list[str] = []
        with open(path, encoding=self.encoding) as fh:
            for i, line in enumerate(fh):
                if i >= 1000:
                    break
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    keys += [k for k in obj if k not in keys]
        self.columns = keys

    def batches(self) -> Iterator[Batch]:
        cols: dict[str, list[str | None]] = {c: [] for c in self.columns}
        rows: list[int] = []
        lines: list[int] = []
        rejects: list[Reject] = []
        row = 0
        with open(self.path, encoding=self.encoding) as fh:  # type: ignore[arg-type]
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                row += 1
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    rejects.append(Reject(row, lineno, "a JSON object", f"invalid JSON ({err.msg}): {line[:200]}", line))
                    continue
                if not isinstance(obj, dict):
                    rejects.append(Reject(row, lineno, "a JSON object", line[:200], line))
                    continue
                for c in self.columns:
                    v = obj.get(c)
                    cols[c].append(None if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
                rows.append(row)
                lines.append(lineno)
                if len(rows) >= BATCH_ROWS:
                    yield self._flush(cols, rows, lines, rejects)
                    cols, rows, lines, rejects = {c: [] for c in self.columns}, [], [], []
        yield self._flush(cols, rows, lines, rejects)

    @staticmethod
    def _flush(
        cols: dict[str, list[str | None]], rows: list[int], lines: list[int], rejects: list[Reject]
    ) -> Batch:
        tbl = pa.table({c: pa.array(v, pa.string()) for c, v in cols.items()})
        return Batch(tbl, np.array(rows, dtype=np.int64), np.array(lines, dtype=np.int64), rejects)


class SqlReader(SourceReader):
    """Any SQLAlchemy URL; rows are streamed with a server-side cursor where supported."""

    def __init__(self, src: SourceConfig) -> None:
        super().__init__(src, None)
        import sqlalchemy as sa

        self.query = src.query or f'SELECT * FROM "{src.table}"'
        try:
            self._engine = sa.create_engine(src.url or "")
            with self._engine.connect() as conn:
                self.columns = list(conn.execute(sa.text(f"SELECT * FROM ({self.query}) AS q WHERE 1 = 0")).keys())
        except Exception as err:  # noqa: BLE001 - any driver error becomes one clear message
            raise SourceError(f"{src.label}: cannot query the database: {err}") from None

    def batches(self) -> Iterator[Batch]:
        import sqlalchemy as sa

        start = 1
        with self._engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(sa.text(self.query))
            while chunk := result.fetchmany(BATCH_ROWS):
                data = {
                    c: pa.array([None if r[i] is None else str(r[i]) for r in chunk], pa.string())
                    for i, c in enumerate(self.columns)
                }
                rows = np.arange(start, start + len(chunk), dtype=np.int64)
                start += len(chunk)
                yield Batch(pa.table(data), rows, rows)


def open_reader(src: SourceConfig, root: Path) -> SourceReader:
    """Open the reader for one configured source; a missing file is a clear error."""
    if src.url:
        return SqlReader(src)
    assert src.path is not None
    path = Path(src.path) if Path(src.path).is_absolute() else root / src.path
    if not path.exists():
        raise SourceError(f"{path}: file not found (source for table '{src.table}')")
    fmt = src.format
    if fmt == "auto":
        suffix = "".join(path.suffixes[-2:]).lower()
        if suffix.endswith((".parquet", ".pq")) or path.is_dir():
            fmt = "parquet"
        elif suffix.endswith((".jsonl", ".ndjson", ".json")):
            fmt = "jsonl"
        elif suffix.endswith((".csv", ".tsv", ".txt")):
            fmt = "csv"
        else:
            raise SourceError(f"{path}: cannot tell the format from the name; set format = csv|parquet|jsonl")
    if fmt == "csv":
        return CsvReader(src, path)
    if fmt == "parquet":
        return ParquetReader(src, path)
    return JsonLinesReader(src, path)
