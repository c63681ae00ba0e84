"""The docs name every canonical column, feature column, config key and CLI command."""

from __future__ import annotations

from pathlib import Path

from shoplens.cli import app
from shoplens.config import (
    Config,
    DefaultsConfig,
    FeaturesConfig,
    PrivacyConfig,
    SourceConfig,
    StoreConfig,
)
from shoplens.features import CATEGORY_COLUMNS, FEATURE_COLUMNS
from shoplens.schema import TABLES

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_data_model_documents_every_column() -> None:
    text = (DOCS / "data-model.md").read_text(encoding="utf-8")
    missing = [f"{t.name}.{c.name}" for t in TABLES.values() for c in t.columns if f"`{c.name}`" not in text]
    missing += [c for c in FEATURE_COLUMNS + CATEGORY_COLUMNS if f"`{c}`" not in text]
    assert missing == []


def test_configuration_documents_every_key() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    models = (StoreConfig, DefaultsConfig, PrivacyConfig, FeaturesConfig, SourceConfig)
    missing = [f"{m.__name__}.{k}" for m in models for k in m.model_fields if f"`{k}`" not in text]
    missing += [f"[{k}]" for k in Config.model_fields if k not in ("root", "sources") and f"`[{k}]`" not in text]
    assert missing == []


def test_cli_doc_names_every_command() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    names = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    assert names and [n for n in names if f"shoplens {n}" not in text] == []
