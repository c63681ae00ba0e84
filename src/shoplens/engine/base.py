"""The compute engine a build runs on, behind one small protocol.

A stage never names an engine's connection: it reads tables and writes tables through
these methods, so the runner (ordering, reuse, schema checks, publishing) is the same
on every engine. ``DuckDBEngine`` runs on the embedded store; ``SparkEngine`` runs on
a Spark session and keeps each snapshot's tables as Parquet under a warehouse path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

import pyarrow as pa


@dataclass(frozen=True)
class Snapshot:
    """One build's output: its id, the schema (or warehouse folder) holding its tables,
    and the reference day the build computes features at."""

    snapshot_id: int
    as_of: date

    @property
    def schema(self) -> str:
        return f"snap_{self.snapshot_id}"

    @property
    def cutoff(self) -> datetime:
        return datetime(self.as_of.year, self.as_of.month, self.as_of.day)


class Engine(Protocol):
    """What the runner and the stages need from a compute engine."""

    name: str
    store: Any  # the DuckDB store: canonical tables, snapshot list, the catalog of snapshot tables
    # whether the Python work runs on this machine: only then may it write the shop's caches
    # (erasure scrubs the files on this machine; an executor's own disk it cannot reach)
    local_workers: bool

    def ibis(self) -> Any:
        """An Ibis backend whose tables are the canonical tables."""

    def table(self, name: str, snapshot: Snapshot | None = None) -> Any:
        """An Ibis table: a canonical table, or ``snapshot``'s output table ``name``."""

    def fingerprint(self, name: str) -> str:
        """A content hash of canonical table ``name`` (changes when any row changes)."""

    def materialise(self, snapshot: Snapshot, name: str, data: Any, schema: pa.Schema) -> int:
        """Write ``data`` (an Ibis expression or an Arrow table) as ``snapshot``'s table
        ``name``, cast to ``schema``; returns its row count."""

    def schema_of(self, snapshot: Snapshot, name: str) -> pa.Schema:
        """The Arrow schema of a written table."""

    def rows(self, snapshot: Snapshot, name: str) -> int: ...

    def exists(self, snapshot: Snapshot, name: str) -> bool: ...

    def index(self, snapshot: Snapshot, name: str, key: tuple[str, ...]) -> None:
        """Make point look-ups by ``key`` fast where the engine has indexes (else nothing)."""

    def prune(self, live: set[int]) -> None:
        """Delete what the engine keeps outside the store for snapshots not in ``live``."""

    def copy(self, source: Snapshot, target: Snapshot, name: str) -> int:
        """Reuse: ``source``'s table ``name`` becomes ``target``'s (same rows)."""

    def collect(self, expr: Any) -> pa.Table:
        """A small result (a sample, an aggregate) as Arrow on the driver."""

    def map_batches(self, snapshot: Snapshot, name: str, source: Any, fn: Callable[[pa.RecordBatch], pa.Table],
                    schema: pa.Schema, batch_rows: int = 2000) -> int:
        """Write ``fn`` applied to each Arrow batch of ``source`` as table ``name``
        (Spark: in the executors)."""

    def map_groups(self, snapshot: Snapshot, name: str, source: Any, key: str, fn: Callable[[pa.Table], pa.Table],
                   schema: pa.Schema, within: tuple[str, ...] = ()) -> int:
        """Like ``map_batches``, but every batch ``fn`` sees holds whole groups of ``key``,
        each group's rows ordered by ``within`` (so order-sensitive results agree)."""

    def drop(self, snapshot: Snapshot, name: str) -> None: ...


def number(engine: Engine, scalar: Any) -> int:
    """An integer aggregate (an Ibis scalar expression) computed by ``engine``; NULL,
    e.g. the sum of nothing, is 0."""
    return int(engine.collect(scalar.name("n").as_table()).column(0)[0].as_py() or 0)


def grouped_chunks(batches: Iterable[pa.RecordBatch], key: str, rows: int = 20_000) -> Iterator[pa.Table]:
    """Re-cut a stream of batches sorted by ``key`` into tables of about ``rows`` rows
    that never split a group (the last group of a chunk waits for the next batch)."""
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        size += batch.num_rows
        if size < rows:
            continue
        table = pa.Table.from_batches(pending)
        keys = table.column(key)
        last = keys[len(keys) - 1]
        cut = len(keys)
        while cut > 0 and keys[cut - 1] == last:
            cut -= 1
        if cut == 0:  # one group so far: keep reading
            continue
        yield table.slice(0, cut)
        rest = table.slice(cut)
        pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield pa.Table.from_batches(pending)
