"""The compute engine a build runs on, behind one small protocol.

A stage never names an engine's connection: it reads tables and writes tables through
these methods, so the runner (ordering, reuse, schema checks, publishing) is the same
on every engine. ``DuckDBEngine`` runs on the embedded store; ``SparkEngine`` runs on
a Spark session and keeps each snapshot's tables as Parquet under a warehouse path.
"""

from __future__ import annotations

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
