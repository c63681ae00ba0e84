"""The text step: masking before any analyser, edge-case inputs, the embedding cache,
aspect sentiment, topics, per-customer features in profiles, and held-out accuracy."""

from __future__ import annotations

import json
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from shoplens.cli import app
from shoplens.config import TextConfig, load_config
from shoplens.jobs import Summary
from shoplens.profiles import get_profile
from shoplens.store import Store
from shoplens.text.analysers import Analysers
from shoplens.text.aspects import AspectAnalyser, evaluate_aspects, load_aspects
from shoplens.text.cascade import GRID, Cascade, choose_band, load_heads
from shoplens.text.embed import EMBEDDERS, CachedEmbedder, Embedder, HashEmbedder, USEEmbedder
from shoplens.text.keywords import interests
from shoplens.text.labelled import is_test, load_eval_set
from shoplens.text.preprocess import TextInputError, detect_language, prepare
from shoplens.text.sentiment import _load_head, label, load_sentiment, load_splits
from shoplens.text.topics import TopicModel, c_tf_idf

PHONE = "13812345678"


@pytest.fixture(scope="module")
def analysers(tmp_path_factory: pytest.TempPathFactory) -> Analysers:
    cache = tmp_path_factory.mktemp("text") / "emb.sqlite"
    return Analysers.from_config(TextConfig(), cache)


def test_phone_never_reaches_an_analyser(analysers: Analysers) -> None:
    seen: list[str] = []
    embed, proba, analyse, extract = (analysers.embedder.inner.embed, analysers.sentiment.predict_proba,
                                      analysers.aspects.analyse, analysers.keywords.extract)
    try:
        analysers.embedder.inner.embed = lambda t: (seen.extend(t), embed(t))[1]  # type: ignore[method-assign]
        analysers.sentiment.predict_proba = lambda t, e=None: (seen.extend(t), proba(t, e))[1]  # type: ignore[method-assign]
        analysers.aspects.analyse = lambda p: (seen.extend(x.text for x in p), analyse(p))[1]  # type: ignore[method-assign]
        analysers.keywords.extract = lambda p: (seen.extend(x.text for x in p), extract(p))[1]  # type: ignore[method-assign]
        results, _ = analysers.analyse([f"快递太慢了，打我电话 {PHONE} 或 +86 138-1234-5679", "mail me: A.B@shop.cn, great box"])
    finally:
        analysers.embedder.inner.embed = embed  # type: ignore[method-assign]
        analysers.sentiment.predict_proba = proba  # type: ignore[method-assign]
        analysers.aspects.analyse = analyse  # type: ignore[method-assign]
        analysers.keywords.extract = extract  # type: ignore[method-assign]
    assert seen, "the analysers were not called"
    joined = "\n".join(seen) + json.dumps([r.as_dict() for r in results], ensure_ascii=False)
    assert PHONE not in joined and "138-1234-5679" not in joined and "A.B@shop.cn" not in joined
    assert "[PHONE]" in joined and "[EMAIL]" in joined


def test_the_issue_example(analysers: Analysers) -> None:
    (result,), _ = analysers.analyse(["物流太慢了，但是质量很好"])
    found = {h.aspect: h for h in result.aspects}
    assert found["logistics"].polarity == "negative" and found["logistics"].evidence == "物流太慢了"
    assert found["quality"].polarity == "positive" and "质量很好" in found["quality"].evidence
    text = result.prepared.text
    assert text[found["logistics"].start : found["logistics"].end] == "物流太慢了"


@pytest.mark.parametrize(
    ("text", "language", "empty"),
    [("", "und", True), ("   \n ", "und", True), ("👍👍👍🔥", "und", True), ("!!!???", "und", True),
     ("质量不错, the price is fair too", "mixed", False), ("Ｇｒｅａｔ　ｐｈｏｎｅ！！！", "en", False)],
)
def test_edge_case_inputs_have_defined_results(analysers: Analysers, text: str, language: str, empty: bool) -> None:
    (result,), vectors = analysers.analyse([text])
    assert result.prepared.language == language
    assert result.prepared.empty is empty
    assert vectors is not None and vectors.shape == (1, analysers.embedder.dim)
    if empty:
        assert result.sentiment is None and result.aspects == [] and result.keywords == []
        assert not vectors.any()
    else:
        assert 0 <= (result.sentiment or 0) <= 1


def test_long_text_is_truncated_and_flagged(analysers: Analysers) -> None:
    (result,), _ = analysers.analyse(["质量很好。" * 2000])
    assert result.prepared.truncated and len(result.prepared.text) == 2000
    assert result.as_dict()["truncated"] is True


def test_non_text_is_a_clear_error() -> None:
    for bad in (None, 42, b"bytes", ["list"]):
        with pytest.raises(TextInputError, match="expected text"):
            prepare(bad)


def test_cache_hits_skip_the_embedder(tmp_path: Path) -> None:
    calls: list[int] = []
    inner = HashEmbedder()
    real = inner.embed
    inner.embed = lambda texts: (calls.append(len(texts)), real(texts))[1]  # type: ignore[method-assign]
    first = CachedEmbedder(inner, tmp_path / "c.sqlite")
    a = first.embed(["物流很快", "fast shipping", "物流很快"])  # duplicate embedded once
    assert calls == [2] and first.misses == 2 and first.hits == 1
    first.close()
    again = CachedEmbedder(inner, tmp_path / "c.sqlite")  # a new process would see the same file
    b = again.embed(["fast shipping", "物流很快", "new text"])
    assert calls == [2, 1] and again.hits == 2 and again.misses == 1
    np.testing.assert_array_equal(a[0], b[1])
    np.testing.assert_array_equal(a[1], b[0])


@pytest.mark.parametrize(("name", "dim"), [("use", 512), ("e5", 384)])
def test_embeddings_are_multilingual(name: str, dim: int) -> None:
    from shoplens.text.embed import EMBEDDERS

    v = EMBEDDERS[name]().embed(["物流很快", "the delivery was fast", "这本书的内容很无聊"])
    assert v.shape == (3, dim)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-3)
    assert v[0] @ v[1] > v[0] @ v[2]  # same meaning across languages beats same language, other meaning


def test_sentiment_held_out_accuracy_and_stale_head() -> None:
    model = load_sentiment()
    splits = load_splits()
    for lang, floor in (("zh", 0.83), ("en", 0.72)):  # n-gram model alone; docs/benchmarks.md has the full run
        texts, labels = splits.test[lang]
        assert ((model.predict_proba(texts) >= 0.5) == labels).mean() >= floor
    assert label(0.9) == "positive" and label(0.5) == "neutral" and label(0.1) == "negative"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _load_head("0000000000000000") is None
    assert any("trained for n-gram artifact" in str(w.message) for w in caught)


def test_verified_chinese_labels_are_held_out_and_scored() -> None:
    from shoplens.text.evaluate import evaluate_verified, load_verified

    rows = load_verified()
    texts, labels = load_splits().test["zh"]
    corpus = dict(zip(texts, labels.tolist(), strict=True))
    train = set(load_splits().train_texts)
    assert len(rows) == 500 and {r["verified"] for r in rows} == {"positive", "negative", "mixed"}
    assert all(r["text"] in corpus and r["text"] not in train and int(r["corpus_label"]) == corpus[r["text"]]
               for r in rows)  # every row is a held-out test review with its corpus label as stored
    v = evaluate_verified(load_sentiment())  # n-gram only: the stack needs e5 (docs/benchmarks.md)
    assert v["n_clear"] + v["mixed"] == 500 and "cascade" not in v
    assert v["ngram"]["ci95"][0] < v["ngram"]["accuracy"] < v["ngram"]["ci95"][1]
    assert v["ngram"]["accuracy"] >= 0.87 and v["ngram"]["accuracy"] > v["baseline"]["accuracy"]


def test_aspect_detection_on_the_labelled_clauses() -> None:
    from shoplens.text.aspect_model import load_aspect_model, training_rows

    rows = load_eval_set()
    test_rows = [r for r in rows if is_test(r)]
    assert len(rows) == 2700 and len(test_rows) == 550
    assert not {r["clause"] for r in test_rows} & {r["clause"] for r in training_rows()}  # never trained on
    lexicon = AspectAnalyser(load_sentiment())
    dev = evaluate_aspects(lexicon, [r for r in rows if r["sample"] in ("random", "enriched", "fresh")])
    test = evaluate_aspects(lexicon, test_rows)
    # floors that catch a broken lexicon; the figures themselves are in docs/benchmarks.md
    assert dev["macro_f1"] >= 0.75 and dev["aspects"]["price"]["f1"] >= 0.8
    assert test["micro_f1"] >= 0.62 and test["aspects"]["function"]["f1"] >= 0.7
    # the default learned detector (lexicon + n-grams) beats the lexicon it starts from
    aspects = load_aspects()
    learned = AspectAnalyser(load_sentiment(), aspects, detector=load_aspect_model(aspects, None))
    held_out = evaluate_aspects(learned, test_rows)
    assert held_out["micro_f1"] > test["micro_f1"] and held_out["macro_f1"] > test["macro_f1"]


def test_topics_and_c_tf_idf() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(3, 16)
    x = np.concatenate([c + rng.normal(0, 0.05, (40, 16)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    toks = [["battery", "screen"]] * 40 + [["hotel", "room"]] * 40 + [["book", "story"]] * 40
    model = TopicModel(min_topic_size=10)
    labels = model.fit_predict(x, toks)
    assert len(model.topics_) == 3 and model.outlier_share_ < 0.2
    assert {tuple(sorted(t.terms[:2])) for t in model.topics_} == {("battery", "screen"), ("hotel", "room"), ("book", "story")}
    assert c_tf_idf(toks, labels)[labels[0]][:2] in (["battery", "screen"], ["screen", "battery"])


def test_interests_map_to_the_category_tree() -> None:
    words, cats = interests([["笔记本", "屏幕"], ["笔记本"]], ["数码/笔记本电脑", "图书/小说"])
    assert words[0] == "笔记本" and cats == ["数码/笔记本电脑"]


def test_build_fills_text_features_with_nulls_for_the_silent(demo_shop: Summary) -> None:
    with Store.open(load_config(demo_shop.folder / "shoplens.toml").store_path, read_only=True) as store:
        snap = store.require_snapshot()
        profiled = f"customer_id IN (SELECT customer_id FROM snap_{snap}.customer_consent WHERE profiling)"
        n_authors = store.scalar(f"SELECT count(DISTINCT customer_id) FROM texts WHERE {profiled}")
        assert store.scalar(f"SELECT count(*) FROM snap_{snap}.customer_text_features") == n_authors
        assert store.scalar(f"SELECT count(*) FROM snap_{snap}.text_analysis") == store.scalar(
            f"SELECT count(*) FROM texts WHERE {profiled}")
        outliers = store.scalar(f"SELECT avg((topic_id = -1)::INT) FROM snap_{snap}.text_analysis")
        # USE vectors (the default since issue #13): 22.5% on this small shop, 8.8% on the
        # 2,000-customer demo, 0.9% on 100,000 short reviews (e5 gave < 20% here)
        assert outliers < 0.25
        bad = store.scalar(f"SELECT count(*) FROM snap_{snap}.text_aspects a JOIN snap_{snap}.text_analysis t "
                           "USING (text_id) WHERE a.span_end <= a.span_start")
        assert bad == 0
        writer = store.scalar(f"SELECT customer_id FROM snap_{snap}.customer_text_features ORDER BY customer_id LIMIT 1")
        silent = store.scalar(f"SELECT customer_id FROM snap_{snap}.customer_features WHERE customer_id NOT IN "
                              f"(SELECT customer_id FROM texts) ORDER BY 1 LIMIT 1")
        wrote, quiet = get_profile(store, writer), get_profile(store, silent)
    assert 0 <= wrote["text"]["sentiment"]["mean"] <= 1 and wrote["text"]["interests"]["keywords"]
    topics = wrote["text"]["topics"]  # by label, not a bare id
    assert topics and all(t["label"] and isinstance(t["id"], int) for t in topics)
    assert abs(sum(t["share"] for t in topics) - 1) < 0.01
    assert quiet["text"]["n_texts"] == 0
    assert quiet["text"]["sentiment"] is None and quiet["text"]["aspects"] is None and quiet["text"]["topics"] is None


def test_analyze_command() -> None:
    result = CliRunner().invoke(app, ["analyze", f"物流太慢了，但是质量很好 {PHONE}", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert PHONE not in result.stdout and doc["language"] == "zh"
    assert {(a["aspect"], a["polarity"]) for a in doc["aspects"]} >= {("logistics", "negative"), ("quality", "positive")}
    empty = CliRunner().invoke(app, ["analyze", "", "--json"])
    assert empty.exit_code == 0 and json.loads(empty.stdout)["sentiment"] is None


@pytest.mark.parametrize("name", sorted(EMBEDDERS))
def test_every_embedder_keeps_the_contract(name: str) -> None:
    emb = EMBEDDERS[name]()
    assert isinstance(emb, Embedder) and emb.id and emb.dim > 0
    texts = ["物流很快", "fast shipping", "物流很快", "x"]
    a, b = emb.embed(texts), emb.embed(list(reversed(texts)))
    assert a.shape == (4, emb.dim) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-3)
    np.testing.assert_allclose(a, b[::-1], atol=1e-5)  # deterministic, independent of batch order
    assert emb.embed([]).shape == (0, emb.dim)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_prepare_never_fails_on_a_string_and_spans_point_into_the_text(text: str) -> None:
    p = prepare(text)
    assert p.language in ("zh", "en", "mixed", "und")
    for c in p.clauses:
        assert c.text and p.text[c.start : c.end] == c.text
    assert PHONE not in prepare(f"{text} {PHONE}").text


def test_text_step_disabled_gives_empty_tables_and_null_signals(tmp_path: Path, demo_shop: Summary) -> None:
    import shutil

    from shoplens.build import build

    folder = tmp_path / "shop"
    shutil.copytree(demo_shop.folder, folder)
    with open(folder / "shoplens.toml", "a", encoding="utf-8") as fh:
        fh.write("\n[text]\nenabled = false\n")
    cfg = load_config(folder / "shoplens.toml")
    with Store.for_config(cfg) as store:
        result = build(cfg, store)
        s = f"snap_{result.snapshot_id}"
        assert result.skipped["text"] == "disabled in [text]"
        assert {r.stage: r.action for r in result.stages}["text"] == "skipped"
        for table in ("text_analysis", "text_aspects", "text_topics", "customer_text_features"):
            assert store.scalar(f"SELECT count(*) FROM {s}.{table}") == 0
        cid = store.scalar("SELECT customer_id FROM texts LIMIT 1")
        doc = get_profile(store, cid)
    assert doc["text"]["n_texts"] > 0 and doc["text"]["sentiment"] is None and doc["text"]["aspects"] is None


def test_custom_aspects_file_and_bad_ones(tmp_path: Path) -> None:
    from shoplens.errors import ConfigError
    from shoplens.text.aspects import load_aspects

    good = tmp_path / "aspects.toml"
    good.write_text('[aspect.battery]\nzh = ["电池", "续航"]\nen = ["battery"]\n', encoding="utf-8")
    hits = AspectAnalyser(load_sentiment(), load_aspects(str(good))).analyse([prepare("续航太差了, but the screen is fine")])
    assert [(h.aspect, h.polarity) for h in hits[0]] == [("battery", "negative")]
    for body, message in (('[aspect."Bad-Name"]\nzh = ["x"]\n', "aspect name"), ("[aspect.empty]\n", "no 'zh' or 'en'"),
                          ("x = 1\n", "defines no"), ("[aspect", "cannot read")):
        bad = tmp_path / "bad.toml"
        bad.write_text(body, encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load_aspects(str(bad))


def test_topics_above_the_collect_limit_are_fitted_on_a_sample_and_assigned(tmp_path: Path, demo_shop: Summary,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The path a big shop takes (fit on every k-th text on the driver, every text
    assigned to its nearest topic) agrees with the exact path on most texts."""
    import shutil

    from shoplens.build import build
    from shoplens.text import stage as text_stage
    from shoplens.text.topics import TopicModel

    folder = tmp_path / "shop"
    shutil.copytree(demo_shop.folder, folder)
    cfg = load_config(folder / "shoplens.toml")
    query = "SELECT text_id, topic_id FROM snap_{}.text_analysis WHERE topic_id IS NOT NULL ORDER BY 1"
    with Store.for_config(cfg) as store:
        exact = dict(store.con.execute(query.format(store.require_snapshot())).fetchall())
        monkeypatch.setattr(text_stage, "TOPIC_COLLECT", 50)
        monkeypatch.setattr(TopicModel, "__init__", lambda self, min_topic_size=10, max_fit=100, seed=0: (
            setattr(self, "min_topic_size", min_topic_size), setattr(self, "max_fit", 100), setattr(self, "seed", seed))[0])
        result = build(cfg, store, force=True)
        sampled = dict(store.con.execute(query.format(result.snapshot_id)).fetchall())
    assert set(sampled) == set(exact) and len(exact) > 200  # every live text still gets a topic id (or -1)
    assert result.text["topics"] >= 2
    # topic ids are arbitrary: compare the two partitions of the texts
    from sklearn.metrics import adjusted_rand_score

    # measured 0.38 with fits on ~100 texts per language (chance is 0): related, not equal
    assert adjusted_rand_score([exact[t] for t in exact], [sampled[t] for t in exact]) > 0.2


def test_the_shipped_models_load_without_training_and_equal_a_fresh_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first run trains nothing: the shipped arrays are the model training would make."""
    import numpy as np

    from shoplens.text import aspect_model, sentiment
    from shoplens.text.aspects import load_aspects
    from shoplens.text.labelled import load_eval_set
    from shoplens.text.preprocess import prepare

    def no_training(*_a: object, **_k: object) -> None:
        raise AssertionError("trained although a shipped model applies")

    monkeypatch.setattr(sentiment, "_LOADED", {})
    monkeypatch.setattr(aspect_model, "_LOADED", {})
    monkeypatch.setattr(sentiment, "train_sentiment", no_training)
    monkeypatch.setattr(aspect_model, "train_model", no_training)
    monkeypatch.setattr(sentiment, "model_dir", lambda: Path("/nonexistent-model-dir"))  # no cached pickle either
    splits = sentiment.load_splits()
    shipped = sentiment.load_sentiment()
    aspects = load_aspects(None)
    shipped_aspects = aspect_model.load_aspect_model(aspects, None)
    monkeypatch.undo()
    fresh = sentiment.SentimentModel().fit(splits.train_texts, splits.train_labels)
    texts = splits.train_texts[:2000]
    assert np.abs(shipped.predict_proba(texts) - fresh.predict_proba(texts)).max() < 1e-6
    clauses = [prepare(r["clause"]).text for r in load_eval_set()]
    hits = np.array([[a.search(c) for a in aspects] for c in clauses], float)
    trained = aspect_model.train_model(aspects, None)
    assert (shipped_aspects.predict(clauses, hits, None) == trained.predict(clauses, hits, None)).all()


def test_a_shipped_model_for_other_data_or_versions_is_refused(tmp_path: Path) -> None:
    from importlib import resources

    from shoplens.text import aspect_model, sentiment

    ngram = resources.files("shoplens").joinpath(sentiment.SHIPPED)
    assert sentiment.load_ngram(ngram, "0" * 16) is None  # another config, data or scikit-learn: retrain
    assets = resources.files("shoplens").joinpath(aspect_model.SHIPPED)
    assert aspect_model.load_shipped(assets, "0" * 16) is None


# ---- the cascade (issue #13) ----------------------------------------------------------

REVIEWS = ["物流很快，质量很好", "质量一般吧", "还行", "The battery died after two days, very disappointed.",
           "Not bad for the price, I guess", "works as described", "好评！", "这个价格也就这样了"]


def test_the_cascade_routes_each_text_the_same_way_in_any_batch(analysers: Analysers) -> None:
    """A text's score and route depend on the text only, not on its batch mates."""
    cascade = analysers.sentiment
    assert isinstance(cascade, Cascade) and cascade.refine is not None
    texts = [prepare(t).text for t in REVIEWS]
    vectors = analysers.embedder.embed(texts)
    together, via = cascade.score(texts, vectors)
    assert set(via) <= {"ngram", analysers.embedder.id, cascade.refine.id}
    for i in (5, 0, 3, 7, 1):
        alone, route = cascade.score([texts[i]], vectors[i:i + 1])
        assert route == [via[i]] and alone[0] == pytest.approx(together[i], abs=1e-9)
    again, via_again = cascade.score(list(reversed(texts)), vectors[::-1])
    assert via_again == via[::-1]
    np.testing.assert_allclose(again, together[::-1], atol=1e-9)


def test_the_cascade_sends_only_the_unsure_to_e5(analysers: Analysers) -> None:
    cascade = analysers.sentiment
    assert isinstance(cascade, Cascade) and cascade.refine is not None
    splits = load_splits()  # held-out texts: about 7% of them are unsure enough for e5
    texts = [prepare(t).text for t in (splits.test["en"][0][:80] + splits.test["zh"][0][:40]) * 2]
    sent: list[str] = []
    inner = cascade.refine.inner
    real = inner.embed
    inner.embed = lambda t: (sent.extend(t), real(t))[1]  # type: ignore[method-assign]
    try:
        fresh = Cascade(cascade.model, analysers.embedder.id, CachedEmbedder(inner, None), heads=cascade.heads)
        p, via = fresh.score(texts, analysers.embedder.embed(texts))
    finally:
        inner.embed = real  # type: ignore[method-assign]
    refined = [t for t, v in zip(texts, via, strict=True) if v == cascade.refine.id]
    assert sorted(sent) == sorted(set(refined))  # e5 saw exactly the refined texts, each once
    assert fresh.routes[cascade.refine.id] == len(refined) and 0 < len(refined) < len(texts)
    for t, score, v in zip(texts, p.tolist(), via, strict=True):
        if v != cascade.refine.id:  # a text the cheap stage kept was outside its language's band
            lang = "en" if detect_language(t) == "en" else "zh"
            assert abs(score - 0.5) >= fresh.routes_by_language[lang]["band"]


def test_bands_are_the_smallest_that_reach_the_target() -> None:
    base = np.array([0.55, 0.45, 0.9, 0.2, 0.52, 0.7])
    refined = np.array([0.1, 0.9, 0.9, 0.2, 0.1, 0.7])
    y = np.array([0, 1, 1, 0, 0, 1])
    assert choose_band(base, refined, y, 3 / 6)[0] == 0.0  # the cheap scores alone get 3 of 6 right
    assert choose_band(base, refined, y, 4 / 6)[0] == 0.025  # 0.52 goes to e5
    band, acc, share = choose_band(base, refined, y, 1.0)
    assert band == 0.075 and acc == 1.0 and share == pytest.approx(3 / 6)  # 0.55, 0.45 and 0.52 go to e5


def test_shipped_heads_for_another_ngram_model_are_refused() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_heads("0000000000000000") is None
    assert any("trained for n-gram artifact" in str(w.message) for w in caught)
    found = load_heads(load_sentiment().training_hash_ or "")
    assert found is not None and set(found["bands"]) >= {"ngram", USEEmbedder.id}
    for routes in found["bands"].values():  # every band chosen on validation, inside the grid
        assert all(r["band"] in GRID for r in routes.values())


def test_a_result_cache_hit_skips_all_model_work(tmp_path: Path) -> None:
    """Texts analysed once are never analysed or embedded again, repeats in a batch are
    analysed once, and texts that differ only in width or punctuation share a result."""
    import pyarrow as pa

    from shoplens.config import Config
    from shoplens.text.rows import SOURCE, TextRows

    cfg = Config.model_validate({"text": {"cache": str(tmp_path / "cache.sqlite")}})
    batch = pa.table({"text_id": [f"t{i}" for i in range(6)], "customer_id": ["c1"] * 6,
                      "text": ["好评！！！", "好评!", "物流很快，质量很好", "Ｇｒｅａｔ　ｐｈｏｎｅ", "Great phone", "物流很快，质量很好"],
                      "created_at": [datetime(2025, 1, 1)] * 6, "category": [None] * 6}, schema=SOURCE)
    step = TextRows(cfg, "settings-a", tmp_path / "cache.sqlite")
    first = step(batch)
    assert step.analysed == 3 and step.deduplicated == 3  # three distinct prepared texts
    assert first.column("sentiment").to_pylist()[0] == first.column("sentiment").to_pylist()[1]
    analysers = step._analysers()

    def forbidden(*_a: object, **_k: object) -> None:
        raise AssertionError("model work on a cached text")

    again = TextRows(cfg, "settings-a", tmp_path / "cache.sqlite")
    real = (analysers.analyse_prepared, analysers.embedder.inner.embed, analysers.sentiment.refine.inner.embed)
    analysers.analyse_prepared = forbidden
    analysers.embedder.inner.embed = forbidden
    analysers.sentiment.refine.inner.embed = forbidden
    try:
        second = again(batch)
    finally:
        analysers.analyse_prepared, analysers.embedder.inner.embed, analysers.sentiment.refine.inner.embed = real
    assert again.analysed == 0 and all(second.column("cached").to_pylist())
    for col in ("sentiment", "language", "keywords", "aspects", "vector"):
        assert second.column(col).to_pylist() == first.column(col).to_pylist()
    assert again.cached_share(["好评!", "new text never seen"]) == 0.5


def test_two_shops_in_one_process_keep_their_own_caches(tmp_path: Path) -> None:
    """Regression: the analysers were shared per settings alone, so a second shop built
    in the same process (an evaluation, a test run) wrote its texts' embeddings into the
    first shop's cache, where the second shop's erasure could not reach them."""
    import sqlite3

    import pyarrow as pa

    from shoplens.config import Config
    from shoplens.text.embed import text_key
    from shoplens.text.rows import SOURCE, TextRows

    def batch(texts: list[str]) -> pa.Table:
        return pa.table({"text_id": [f"t{i}" for i in range(len(texts))], "customer_id": ["c1"] * len(texts),
                         "text": texts, "created_at": [datetime(2025, 1, 1)] * len(texts),
                         "category": [None] * len(texts)}, schema=SOURCE)

    caches = {}
    for shop, texts in (("a", ["shop a only: the blender is loud"]), ("b", ["shop b only: 物流太慢了，包装破损"])):
        caches[shop] = tmp_path / shop / "cache.sqlite"
        cfg = Config.model_validate({"text": {"cache": str(caches[shop]), "embedder": "hash"}})
        step = TextRows(cfg, "same-settings", caches[shop])
        step(batch(texts))
        embedder_id = step._analysers().embedder.id
    with sqlite3.connect(caches["a"]) as db:
        keys = {k for (k,) in db.execute("SELECT key FROM embeddings")}
    assert keys and text_key(embedder_id, "shop b only: 物流太慢了，包装破损") not in keys
    with sqlite3.connect(caches["b"]) as db:
        assert db.execute("SELECT count(*) FROM embeddings").fetchone()[0] >= 1
