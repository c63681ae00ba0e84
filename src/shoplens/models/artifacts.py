"""Fitted models saved with the snapshot, tagged with a fingerprint of what made them:
the config hash, the data (last ingest id), the ShopLens and LightGBM versions. Loading
under a different fingerprint is refused with the fields that differ."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from shoplens.models.btyd import ModelError
from shoplens.store import Store


def fingerprint(config_hash: str, last_ingest_id: int | None, version: str) -> dict[str, str]:
    try:
        import lightgbm

        lgb_version = lightgbm.__version__
    except ImportError:  # pragma: no cover - lightgbm is a core dependency
        lgb_version = "missing"
    return {"config_hash": config_hash, "last_ingest_id": str(last_ingest_id), "shoplens": version, "lightgbm": lgb_version}


ARTIFACTS = pa.schema([("name", pa.string()), ("fingerprint", pa.string()), ("payload", pa.string())])


def artifacts_table(models: dict[str, Any], skipped: dict[str, str], meta: dict[str, str]) -> pa.Table:
    """The ``model_artifacts`` rows: each fitted model's payload, and why each skipped one was."""
    tag = json.dumps(meta, sort_keys=True)
    rows = [(name, tag, json.dumps(payload, default=float)) for name, payload in models.items()]
    rows += [(f"skipped:{name}", tag, json.dumps({"reason": why})) for name, why in skipped.items()]
    return pa.table([pa.array([r[i] for r in rows], pa.string()) for i in range(3)], schema=ARTIFACTS)


def load_model(store: Store, schema: str, name: str, expected: dict[str, str]) -> dict[str, Any]:
    """The saved payload of model ``name``, if it was made under ``expected``."""
    row = store.one(f"SELECT fingerprint, payload FROM {schema}.model_artifacts WHERE name = ?", [name])
    if row is None:
        raise ModelError(f"no saved model '{name}' in {schema}")
    saved = json.loads(row[0])
    diff = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
    if diff:
        detail = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ModelError(f"refusing to load model '{name}' from {schema}: it was made under different conditions ({detail}); rebuild")
    return dict(json.loads(row[1]))
