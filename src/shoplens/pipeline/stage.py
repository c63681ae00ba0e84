"""What a build stage declares, and what it is given to run.

A stage names the tables it reads (canonical tables or earlier stages' outputs) and
the tables it makes, each with a fixed Arrow schema the runner checks. Its settings
are the part of the config it depends on: the runner hashes them with its inputs'
fingerprints to decide whether an earlier snapshot's output can be reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from shoplens.config import Config
from shoplens.engine.base import Engine, Snapshot


@dataclass(frozen=True)
class TableSpec:
    """One output table: its name and schema (a function of the config where the
    columns depend on it, e.g. one column per configured aspect)."""

    name: str
    schema: pa.Schema | Callable[[Config], pa.Schema]
    key: tuple[str, ...] = ("customer_id",)
    index: bool = False  # engines with indexes index ``key`` (point look-ups by id)

    def schema_for(self, cfg: Config) -> pa.Schema:
        return self.schema if isinstance(self.schema, pa.Schema) else self.schema(cfg)


@dataclass
class StageReport:
    """What a stage tells the runner: a summary for the user, models it could not fit."""

    summary: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class BuildContext:
    cfg: Config
    engine: Engine
    snapshot: Snapshot
    rules: Any  # the RFM rules the build uses
    on_info: Callable[[str], None] = lambda _msg: None  # a passing status (progress)
    on_note: Callable[[str], None] = lambda _msg: None  # a line worth keeping on screen (an estimate)

    def write(self, spec: TableSpec, data: Any) -> int:
        return self.engine.materialise(self.snapshot, spec.name, data, spec.schema_for(self.cfg))


class Stage(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int:
        """Raised when the stage's code changes what it writes: forces a re-run."""

    @property
    def needs(self) -> tuple[str, ...]:
        """Canonical tables and earlier stages' tables it reads."""

    @property
    def makes(self) -> tuple[TableSpec, ...]: ...

    def skip_reason(self, cfg: Config) -> str | None:
        """Why the stage does not run with this config (its tables are then written empty)."""

    def settings(self, cfg: Config, snapshot: Snapshot) -> dict[str, Any]:
        """The settings this stage's output depends on (and nothing else)."""

    def run(self, ctx: BuildContext) -> StageReport: ...

    def on_reuse(self, ctx: BuildContext, source: Snapshot) -> None:
        """Carry over what the stage keeps outside its tables (files) from ``source``."""


class BaseStage:
    """Defaults for the optional parts of a stage: always runs, depends on no settings,
    keeps nothing outside its tables."""

    name = ""
    version = 1
    needs: tuple[str, ...] = ()
    makes: tuple[TableSpec, ...] = ()

    def skip_reason(self, cfg: Config) -> str | None:
        return None

    def settings(self, cfg: Config, snapshot: Snapshot) -> dict[str, Any]:
        return {}

    def on_reuse(self, ctx: BuildContext, source: Snapshot) -> None:
        return None


def settings_hash(settings: dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def empty(schema: pa.Schema) -> pa.Table:
    return pa.table({f.name: pa.array([], f.type) for f in schema}, schema=schema)
