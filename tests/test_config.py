from pathlib import Path

import pytest

from shoplens.config import config_from_dict, load_config
from shoplens.errors import ConfigError


def test_unknown_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "shoplens.toml").write_text('[store]\npaht = "x.duckdb"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'store\.paht'"):
        load_config(tmp_path / "shoplens.toml")


def test_unknown_key_in_source_is_named(tmp_path: Path) -> None:
    cfg = {"sources": [{"table": "orders", "path": "o.csv", "colums": {}}]}
    with pytest.raises(ConfigError, match=r"unknown key 'sources\.0\.colums'"):
        config_from_dict(cfg, tmp_path)


def test_unknown_table_lists_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected one of customers, products, orders"):
        config_from_dict({"sources": [{"table": "ordres", "path": "o.csv"}]}, tmp_path)


def test_source_needs_exactly_one_location(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of 'path'"):
        config_from_dict({"sources": [{"table": "orders"}]}, tmp_path)


def test_missing_config_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="shoplens init"):
        load_config(tmp_path / "nope.toml")


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    (tmp_path / "shoplens.toml").write_text("[store\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "shoplens.toml")


def test_fx_rates_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rates must be > 0"):
        config_from_dict({"defaults": {"fx_rates": {"USD": 0}}}, tmp_path)


def test_missing_optional_dependency_says_what_to_install() -> None:
    from shoplens.errors import MissingDependencyError, require

    with pytest.raises(MissingDependencyError, match=r"pip install 'shoplens\[spark\]'"):
        require("no_such_module_for_shoplens", "spark")
