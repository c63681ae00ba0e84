"""The same Ibis feature expressions on a real local PySpark session give the same
results as on DuckDB (one ``local[2]`` session per test run)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from test_features import assert_same_features

from shoplens.features.rfm import load_rules
from shoplens.features.spark import TABLE_NAMES as TABLES
from shoplens.features.spark import spark_backend, spark_features
from shoplens.jobs import Summary
from shoplens.store import Store


def _pyspark():
    try:
        import pyspark  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("pyspark is not installed but CI must run the parity test: pip install -e '.[spark]'")
        pytest.skip("pyspark not installed (pip install -e '.[spark]')")


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    _pyspark()
    from shoplens.engine.spark import spark_session

    # the session the engine would make (its Python workers run this interpreter), small shuffles
    session = spark_session("local[2]", {"spark.sql.shuffle.partitions": "4", "spark.app.name": "shoplens-tests"})
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.mark.spark
def test_features_on_spark_equal_duckdb(demo_shop: Summary, spark: object, tmp_path: Path) -> None:
    backend = spark_backend(spark)
    parquet = {}
    with Store.open(demo_shop.folder / "shoplens.duckdb", read_only=True) as st:
        duck = st.con.execute(f"SELECT * FROM snap_{demo_shop.build.snapshot_id}.customer_features").df()
        # the canonical tables as the build reads them (customers who consent to profiling),
        # exported as Parquet for Spark to read
        profiled = (f"customer_id IN (SELECT customer_id FROM snap_{demo_shop.build.snapshot_id}.customer_consent "
                    "WHERE profiling)")
        where = {"customers": profiled, "orders": profiled, "events": profiled,
                 "order_items": f"order_id IN (SELECT order_id FROM orders WHERE {profiled})"}
        for name in TABLES:
            parquet[name] = str(tmp_path / f"{name}.parquet")
            st.con.execute(f"COPY (SELECT * EXCLUDE (_ingest_id, _line, _row_hash) FROM {name} "
                           f"WHERE {where.get(name, 'true')}) TO '{parquet[name]}' (FORMAT parquet)")
    as_of = pd.Timestamp(demo_shop.build.as_of).to_pydatetime()
    features, categories = spark_features(backend, parquet, as_of, load_rules())
    on_spark = backend.execute(features)
    assert len(on_spark) == demo_shop.build.n_customers
    assert_same_features(duck, on_spark)
    assert backend.execute(categories.count()) > 0


# ---- ingest validation in the executors ------------------------------------------------

def _as_parquet(demo_shop: Summary, folder: Path) -> list:
    """The demo's sources as the one-machine readers see them, written as Parquet: orders
    as a folder of three files, the rest one file each."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shoplens.config import load_config
    from shoplens.ingest.readers import open_reader

    cfg = load_config(demo_shop.folder / "shoplens.toml")
    folder.mkdir()
    sources = []
    for src in cfg.sources:
        data = pa.concat_tables([b.data for b in open_reader(src, cfg.root).batches() if b.data.num_rows])
        if src.table == "events":  # keep the file's own time type (ms): Spark's (us) must read the same
            data = pq.read_table(cfg.resolve(src.path or ""))
        path = folder / ("orders" if src.table == "orders" else f"{src.table}.parquet")
        if src.table == "orders":
            path.mkdir()
            third = data.num_rows // 3 + 1
            for i in range(3):
                pq.write_table(data.slice(i * third, third), path / f"part-{i}.parquet")
        else:
            pq.write_table(data, path)
        sources.append(src.model_copy(update={"path": str(path), "format": "auto"}))
    return sources


@pytest.mark.spark
def test_ingest_on_spark_equals_one_machine(demo_shop: Summary, spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Parquet files, a Parquet folder and a Spark table validated in the executors give
    what the one-machine ingest of the same files gives: the same stored rows, the same
    quarantine (reasons, row numbers, keys, decrypted records, key-check rejects
    included), the same vault; no staging file is left behind."""
    from shoplens.config import load_config
    from shoplens.ingest import ingest
    from shoplens.privacy import keys_for

    sources = _as_parquet(demo_shop, tmp_path / "sources")
    base = load_config(demo_shop.folder / "shoplens.toml")
    (tmp_path / "one").mkdir(), (tmp_path / "spark").mkdir()
    one = base.model_copy(update={"sources": sources, "root": tmp_path / "one"})
    products = next(s for s in sources if s.table == "products")
    spark.read.parquet(products.path).createOrReplaceTempView("demo_products")  # type: ignore[attr-defined]
    on_spark = base.model_copy(update={
        "root": tmp_path / "spark", "engine": base.engine.model_copy(update={"type": "spark"}),
        "sources": [s if s.table != "products" else s.model_copy(update={"path": None, "spark_table": "demo_products"})
                    for s in sources]})
    counts = {}
    for cfg in (one, on_spark):
        with Store.for_config(cfg) as st:
            counts[cfg.engine.type] = [(r.table, r.rows_in, r.accepted, r.quarantined) for r in ingest(cfg, st)]
    assert counts["spark"] == counts["duckdb"]
    assert sum(q for *_, q in counts["spark"]) > 0  # the demo has bad rows: the quarantine is compared
    keys = keys_for(one)

    def opened(value: str | None) -> str | None:
        return None if value is None else keys.fernet.decrypt(value.encode()).decode()

    with Store.open(one.store_path, read_only=True) as a, Store.open(on_spark.store_path, read_only=True) as b:
        for name in ("customers", "products", "orders", "order_items", "events", "texts"):
            x = a.con.execute(f"SELECT * EXCLUDE (_ingest_id) FROM {name} ORDER BY ALL").df()
            y = b.con.execute(f"SELECT * EXCLUDE (_ingest_id) FROM {name} ORDER BY ALL").df()
            assert len(x) > 0 and x.equals(y), name
        q = ("SELECT table_name, source, line, row_number, field, expected, found, reason, row_key, record_enc "
             "FROM quarantine ORDER BY table_name, row_number, field")
        x, y = a.con.execute(q).fetchall(), b.con.execute(q).fetchall()
        assert [r[2:9] for r in x] == [r[2:9] for r in y]
        assert [opened(r[9]) for r in x] == [opened(r[9]) for r in y]
        assert "key check" in {r[7] for r in y}  # records of valid rows travel sealed, and are opened for these
        for vault, key in (("vault_customer_pii", "customer_id, field"), ("vault_text_raw", "text_id")):
            u = [(r[:-1], opened(r[-1])) for r in a.con.execute(f"SELECT {key}, ciphertext FROM {vault} ORDER BY {key}").fetchall()]
            v = [(r[:-1], opened(r[-1])) for r in b.con.execute(f"SELECT {key}, ciphertext FROM {vault} ORDER BY {key}").fetchall()]
            assert len(u) > 0 and u == v, vault
    assert not list((tmp_path / "spark" / "warehouse").glob("staging/*/*"))
    with Store.for_config(on_spark) as st:  # again: files unchanged are skipped; the Spark table is read, all unchanged
        again = {r.table: r for r in ingest(on_spark, st)}
    assert again["orders"].skipped and not again["products"].skipped
    assert again["products"].accepted == 0 and again["products"].unchanged == again["products"].rows_in


# ---- the whole build on the Spark engine ------------------------------------------------

def _spark_shop(demo_shop: Summary, folder: Path, sample: bool = False) -> Path:
    shutil.copytree(demo_shop.folder, folder)
    with open(folder / "shoplens.toml", "a", encoding="utf-8") as fh:
        fh.write('\n[engine]\ntype = "spark"\nmaster = "local[2]"\n')
        if sample:  # fit on samples, score and assign every customer in the executors, as a big shop does
            fh.write("[predictions]\nfit_sample = 150\n[segments]\nfit_sample = 150\n")
    return folder


def _frame(st: Store, snap: int, table: str, key: list[str]) -> pd.DataFrame:
    return st.con.execute(f"SELECT * FROM snap_{snap}.{table}").df().sort_values(key).reset_index(drop=True)


@pytest.mark.spark
def test_whole_build_on_spark_equals_duckdb(demo_shop: Summary, spark: object, tmp_path: Path) -> None:
    """The same shop built on DuckDB and on Spark: the same customers, features, text
    results, predictions (1e-6 relative), segments (same count, ARI >= 0.95), and served
    profile documents equal apart from provenance. The models are fitted on samples of
    150 (the test shop has 300 customers), so the path a big shop takes runs: both
    engines draw the same sample (the first by pseudonym), so the results still agree."""
    import json
    import sqlite3

    from sklearn.metrics import adjusted_rand_score

    from shoplens.build import build
    from shoplens.config import load_config
    from shoplens.serving.reader import ProfileReader, profiles_dir

    folder = _spark_shop(demo_shop, tmp_path / "shop", sample=True)
    spark_cfg = load_config(folder / "shoplens.toml")
    duck_cfg = spark_cfg.model_copy(update={"engine": spark_cfg.engine.model_copy(update={"type": "duckdb"})})
    with Store.for_config(duck_cfg) as st:
        duck = build(duck_cfg, st, force=True)
    with Store.for_config(spark_cfg) as st:
        on_spark = build(spark_cfg, st, force=True)
        assert {r.action for r in on_spark.stages} == {"ran"}
        a, b = duck.snapshot_id, on_spark.snapshot_id
        views = {r[0] for r in st.con.execute("SELECT view_name FROM duckdb_views() WHERE schema_name = ?",
                                              [f"snap_{b}"]).fetchall()}
        assert "customer_features" in views  # the Spark build's tables are Parquet under the warehouse
        assert list((folder / "warehouse" / f"snap_{b}" / "customer_features").glob("*.parquet"))
        for table, key in (("customers", ["customer_id"]), ("customer_features", ["customer_id"]),
                           ("customer_category_shares", ["customer_id", "category"]),
                           ("text_analysis", ["text_id"]), ("text_aspects", ["text_id", "aspect", "span_start"]),
                           ("customer_text_features", ["customer_id"]), ("risk_flags", ["customer_id", "type"]),
                           ("aspect_insight", ["level", "key", "aspect"]),
                           ("demand_forecast", ["segment_id", "category", "week"])):
            x, y = _frame(st, a, table, key), _frame(st, b, table, key)
            assert len(x) == len(y) > 0, table
            if table == "customer_features":
                assert_same_features(x, y)
                continue
            assert list(x.columns) == list(y.columns), table
            for col in x.columns:  # sums in another order: equal to rounding
                if pd.api.types.is_float_dtype(x[col]):
                    pd.testing.assert_series_equal(x[col], y[col], rtol=1e-9, obj=f"{table}.{col}")
                else:
                    assert x[col].astype(str).tolist() == y[col].astype(str).tolist(), f"{table}.{col}"
        p, q = _frame(st, a, "customer_predictions", ["customer_id"]), _frame(st, b, "customer_predictions", ["customer_id"])
        assert p.customer_id.tolist() == q.customer_id.tolist()
        for col in ("p_alive", "expected_purchases", "expected_spend", "clv", "purchase_propensity", "churn_risk"):
            pd.testing.assert_series_equal(p[col], q[col], rtol=1e-6, check_names=False, obj=col)
        s, t = _frame(st, a, "customer_segments", ["customer_id"]), _frame(st, b, "customer_segments", ["customer_id"])
        assert s.segment_id.nunique() == t.segment_id.nunique()
        assert adjusted_rand_score(s.segment_id, t.segment_id) >= 0.95
        cids = s.customer_id.tolist()
        for snap in (a, b):  # the samples are recorded, and every customer was assigned and counted
            metrics = json.loads(st.scalar(f"SELECT any_value(metrics) FROM snap_{snap}.segments"))
            assert metrics["fitted_on"] == 150 < metrics["customers"] == len(cids)
            assert st.scalar(f"SELECT sum(size) FROM snap_{snap}.segments") == len(cids)
            fit = json.loads(st.scalar(f"SELECT payload FROM snap_{snap}.model_artifacts WHERE name = 'propensity'"))
            assert fit["reference_rows"] == 150 < fit["buyers"]
    reader = ProfileReader(spark_cfg.store_path)  # serves the Spark build, the current one
    served = {c: reader.get(c) for c in cids[:50]}
    with sqlite3.connect(profiles_dir(spark_cfg.store_path) / f"snap_{a}.sqlite") as db:  # the DuckDB build's
        for cid, doc in served.items():
            other = json.loads(db.execute("SELECT doc FROM profiles WHERE customer_id = ?", [cid]).fetchone()[0])
            assert doc is not None
            doc.pop("provenance"), other.pop("provenance")
            assert doc == other


@pytest.mark.spark
def test_a_killed_spark_build_leaves_the_previous_snapshot_current(demo_shop: Summary, tmp_path: Path) -> None:
    folder = _spark_shop(demo_shop, tmp_path / "shop")
    with Store.open(folder / "shoplens.duckdb", read_only=True) as st:
        before = st.require_snapshot()
        expected = st.con.execute(f"SELECT count(*), sum(total_spend) FROM snap_{before}.customer_features").fetchall()
    env = dict(os.environ, SHOPLENS_FAULT_PAUSE="features:120")
    proc = subprocess.Popen([sys.executable, "-m", "shoplens.cli", "build", "--force", "--config", str(folder / "shoplens.toml")],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 240
        assert proc.stderr is not None
        for line in proc.stderr:
            if "fault-injection: paused after features" in line or time.monotonic() > deadline:
                break
        assert proc.poll() is None, "the build should still be running"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert list((folder / "warehouse").glob("snap_*/customer_features/*.parquet"))  # Spark had written them
    with Store.open(folder / "shoplens.duckdb", read_only=True) as st:
        assert st.current_snapshot() == before
        assert st.con.execute(f"SELECT count(*), sum(total_spend) FROM snap_{before}.customer_features").fetchall() == expected


def _parquet_rows_of(warehouse: Path, cid: str) -> int:
    """Rows naming ``cid`` in every Parquet file under ``warehouse`` (pages are compressed,
    so a byte search alone could miss them)."""
    import duckdb

    con = duckdb.connect()
    total = 0
    for path in warehouse.rglob("*.parquet"):
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()]
        if "customer_id" in cols:
            total += con.execute(f"SELECT count(*) FROM read_parquet('{path}') WHERE customer_id = ?", [cid]).fetchall()[0][0]
    return total


@pytest.mark.spark
def test_erasure_reaches_a_spark_builds_parquet_files(demo_shop: Summary, spark: object, tmp_path: Path) -> None:
    from test_erasure import _needles, _search, _victim
    from typer.testing import CliRunner

    from shoplens.build import build
    from shoplens.cli import app
    from shoplens.config import load_config

    folder = _spark_shop(demo_shop, tmp_path / "shop")
    cfg = load_config(folder / "shoplens.toml")
    with Store.for_config(cfg) as st:
        build(cfg, st, force=True)
    raw, row = _victim(folder)
    needles = _needles(folder, raw, row)
    cid = needles["pseudonym"].decode()
    # what a build killed and dropped before its clean-up leaves: a folder no view reads
    built = sorted((folder / "warehouse").glob("snap_*"))[-1]
    shutil.copytree(built / "customer_features", folder / "warehouse" / "snap_999" / "customer_features")
    assert _parquet_rows_of(folder / "warehouse", cid) > 0
    times = "SELECT customer_id, first_order_at, last_order_at FROM snap_{}.customer_features WHERE customer_id <> ? ORDER BY 1"
    with Store.for_config(cfg) as st:
        snap = st.require_snapshot()
        before = st.con.execute(times.format(snap), [cid]).fetchall()
    res = CliRunner().invoke(app, ["forget", raw, "-c", str(folder / "shoplens.toml")])
    assert res.exit_code == 0, res.output
    with Store.for_config(cfg, read_only=True) as st:  # the rewrite changed rows, not values (a non-UTC store)
        assert st.con.execute(times.format(snap), [cid]).fetchall() == before
    assert _search(folder, needles) == []  # no literal byte anywhere in the shop folder
    assert _parquet_rows_of(folder / "warehouse", cid) == 0  # nor inside compressed Parquet pages
    assert not (folder / "warehouse" / "snap_999").exists()
    with Store.for_config(cfg) as st:  # the next Spark build still works (canonical exports written again)
        assert build(cfg, st).n_customers == demo_shop.build.n_customers - 1
