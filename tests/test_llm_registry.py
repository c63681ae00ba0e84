"""The provider registry: every ``[llm] type`` gives a provider, the default is the
template writer, and the template writer behaves as "no LLM" always did (template
personas; plain-language audience questions go to the offline parser)."""

from __future__ import annotations

import shutil
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_segments import STATS  # one persona statistics fixture for both files

from shoplens.config import Config, LLMConfig, load_config
from shoplens.errors import FilterError
from shoplens.jobs import Summary
from shoplens.llm import TemplateWriter, is_template, provider_from_config
from shoplens.llm.registry import PROVIDERS
from shoplens.models.personas import llm_persona, template_persona
from shoplens.serving.access import Access

TYPES = typing.get_args(LLMConfig.model_fields["type"].annotation)
# the answer to a plain-language question without an LLM before the offline parser (issue #14)
NEEDS_LLM = {"error": "plain-language questions need an LLM ([llm] in shoplens.toml); use 'text' instead", "code": "filter"}


def test_registry_covers_every_configured_type() -> None:
    assert set(PROVIDERS) == set(TYPES)


@pytest.mark.parametrize("kind", TYPES)
def test_every_configured_type_gives_a_provider(kind: str, tmp_path: Path) -> None:
    provider = provider_from_config(Config(root=tmp_path, llm=LLMConfig(type=kind)))
    assert provider is not None and isinstance(provider.name, str) and provider.name
    assert callable(provider.complete) and callable(provider.remember)
    assert is_template(provider) == (kind == "none")


def test_default_is_the_template_writer() -> None:
    provider = provider_from_config(Config())
    assert isinstance(provider, TemplateWriter) and provider.name == "template"


def test_template_writer_refuses_free_text_and_caches_nothing() -> None:
    writer = TemplateWriter()
    with pytest.raises(FilterError, match="need an LLM"):
        writer.complete([{"role": "user", "content": "high value customers"}], json_mode=True)
    assert writer.remember([{"role": "user", "content": "hi"}], "{}") is None


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_persona_from_the_default_is_the_template(lang: str) -> None:
    persona = llm_persona(provider_from_config(Config()), STATS, {"数码", "运动", "服装"}, lang)
    assert persona == template_persona(STATS, lang)
    assert persona.source == "template" and persona.problems == []


@pytest.fixture
def default_client(demo_shop: Summary, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    folder = tmp_path / "shop"
    shutil.copytree(demo_shop.folder, folder)
    cfg = load_config(folder / "shoplens.toml")
    assert cfg.llm.type == "none"
    access = Access(cfg.store_path)
    key = access.create_key("registry", "analyst")
    access.close()
    from shoplens.serving.api import create_app

    yield TestClient(create_app(cfg)), key


def test_plain_language_audience_with_the_default_uses_the_offline_parser(default_client: tuple[TestClient, str]) -> None:
    client, key = default_client
    r = client.post("/audiences", headers={"X-API-Key": key}, json={"question": "high value customers"})
    assert r.status_code == 200 and r.json()["filter"] == {"field": "m_score", "op": ">=", "value": 5}
    r = client.post("/audiences", headers={"X-API-Key": key}, json={"question": "customers with pets"})
    assert r.status_code == 400 and r.json() != NEEDS_LLM and "no profile field" in r.json()["error"]
    r = client.post("/audiences", headers={"X-API-Key": key}, json={"text": "n_orders >= 1"})
    assert r.status_code == 200 and r.json()["total"] > 0
