"""Benchmark: the whole build (every stage) on DuckDB and on Spark local[2], same shop.

    .venv/bin/python bench/build.py                               # the issue's size, hours
    .venv/bin/python bench/build.py --text-embedder hash          # the same without text models
    .venv/bin/python bench/build.py --customers 5000 --orders 30000 --events 20000 --texts 2000 \\
        --text-embedder hash                                      # a smoke run, ~4 min (~1 min duckdb only)

The shop (default 1,000,000 customers, 10,000,000 orders, 5,000,000 events, 1,000,000
texts from the real review corpora) is made once by bench/scale_shop.py (read its
docstring for what is generated and how it enters the store) and cached under
bench/.cache/build/. Each engine then builds its own copy of that store in a fresh
folder (so no cache or snapshot of one run helps another) with ``shoplens.build.build(
force=True)`` in a subprocess of its own, so each process' peak RSS is that engine's.
Per stage it reports: seconds; ``StageRecord.peak_rss_mb`` (ru_maxrss: the process'
peak *so far*, so it only grows); the Python process' RSS peak sampled every 100 ms
while the stage ran; and for Spark also the JVM's (in local mode driver and executor
in one) and that of the Python workers the JVM starts for Python code (psutil children
of the Python process, by name), and the peak of all of them together. "setup" is
importing, opening the store, planning and, on Spark, starting the session; "publish"
writes and verifies the serving file.

``--orders-series`` (default: a tenth of ``--orders``, then ``--orders``; at the
issue's size 1M and 10M) also builds on Spark at each size, the whole shop scaled with
the orders (customers, events and texts in the same proportion, so 10 orders per
customer throughout, as in a 100M-order / 10M-customer shop), and prints the cost per
order and the growth exponent (1.0 = linear) overall and per stage. The run at
``--orders`` itself is the main Spark run, not repeated.

``--text-embedder use`` (the product's default since issue #13) embeds every text with
USE and asks e5 about the ~10% the cheaper sentiment models are unsure of: about 6.5
minutes per 100,000 short reviews on two cores (docs/benchmarks.md, "Text at scale").
``e5`` embeds every text with multilingual-e5-small (60-80 short texts/s). ``hash`` runs
the same analysers with the hashing embedder and no e5 at all (``refine = "none"``).

Results also go to bench/results/build-<time>.json. The ratio printed last is Spark's
build time over DuckDB's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_shop import ShopSize, add_size_args, cached  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "build"
RESULTS = HERE / "results"
MIB = 2**20


# ---- the child: one build in this process --------------------------------------------


class Sampler:
    """RSS of this process and of its children (Spark's JVM, and the Python workers the
    JVM starts), sampled every 100 ms and kept per build phase; ``step`` is the build's
    ``on_step`` and names the phase."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.phase = "setup"
        self.started: dict[str, float] = {"setup": time.perf_counter()}
        self.peak: dict[str, list[int]] = {}
        self._index = -1
        self.tree_peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        now = [self.proc.memory_info().rss, 0, 0]  # this process, java children, other children
        for child in self.proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a child may exit between the calls
                # the name each time: spark-submit's shell exec()s into the JVM under the same pid
                now[1 if child.name() == "java" else 2] += child.memory_info().rss
        got = self.peak.setdefault(self.phase, [0, 0, 0])
        got[:] = [max(a, b) for a, b in zip(got, now, strict=True)]
        self.tree_peak = max(self.tree_peak, sum(now))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.1)

    def step(self, message: str, index: int, total: int) -> None:
        if index == self._index:
            return  # progress inside the current stage
        self._index = index
        phase = "publish" if index == total - 1 else "done" if index >= total else message.split(" (")[0]
        self._sample()
        self.phase = phase
        self.started[phase] = time.perf_counter()

    def __enter__(self) -> Sampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self._sample()


def child(config: Path, out: Path) -> None:
    """Run one forced build of the shop ``config`` names; write what it cost to ``out``."""
    with Sampler() as sampler:
        from shoplens.build import build
        from shoplens.config import load_config
        from shoplens.store import Store

        cfg = load_config(config)
        with Store.for_config(cfg) as store:
            t0 = time.perf_counter()
            result = build(cfg, store, force=True, on_step=sampler.step)
            seconds = time.perf_counter() - t0
    phases = list(sampler.started.items())
    took = {name: (phases[i + 1][1] if i + 1 < len(phases) else time.perf_counter()) - start
            for i, (name, start) in enumerate(phases)}
    rows: list[dict[str, Any]] = [{"stage": "setup", "action": "ran", "seconds": round(took.get("setup", 0.0), 3), "rows": {}}]
    rows += [{"stage": r.stage, "action": r.action, "seconds": r.seconds, "rows": r.rows, "peak_rss_so_far_mb": r.peak_rss_mb}
             for r in result.stages]
    rows.append({"stage": "publish", "action": "ran", "seconds": round(took.get("publish", 0.0), 3), "rows": {}})
    for row in rows:
        own, jvm, workers = (round(v / MIB, 1) for v in sampler.peak.get(row["stage"], [0, 0, 0]))
        row["rss_in_stage_mb"], row["jvm_rss_in_stage_mb"], row["workers_rss_in_stage_mb"] = own, jvm, workers
    report = {"engine": cfg.engine.type, "build_seconds": round(seconds, 3), "n_customers": result.n_customers,
              "snapshot_id": result.snapshot_id, "as_of": result.as_of.isoformat(), "stages": rows,
              "text": result.text, "skipped": result.skipped,
              "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "jvm_peak_rss_mb": round(max((p[1] for p in sampler.peak.values()), default=0) / MIB, 1),
              "workers_peak_rss_mb": round(max((p[2] for p in sampler.peak.values()), default=0) / MIB, 1),
              "tree_peak_rss_mb": round(sampler.tree_peak / MIB, 1)}
    out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")


# ---- the parent: shops, runs, tables -------------------------------------------------


def spark_problem() -> str | None:
    """Why the Spark engine cannot run here, or None."""
    try:
        import pyspark  # noqa: F401

        import shoplens.engine.spark  # noqa: F401
    except Exception as exc:  # any failure to import is the message to show
        return f"the Spark engine is not importable ({type(exc).__name__}: {exc})"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime (java on PATH or $JAVA_HOME): Spark needs one"
    return None


def run_config(shop: Path, folder: Path, engine: str, args: argparse.Namespace) -> Path:
    """A fresh folder with a copy of the shop's store and a config for ``engine``."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name in ("shoplens.duckdb", "secret.key"):  # no key file when $SHOPLENS_SECRET_KEY is set
        if (shop / name).exists():
            shutil.copy2(shop / name, folder / name)
    text = (shop / "shoplens.toml").read_text(encoding="utf-8")
    text += f'\n[text]\nembedder = "{args.text_embedder}"\n'
    if args.text_embedder == "hash":  # no model at all, as the runs before issue #13 measured
        text += 'refine = "none"\n'
    if engine == "spark":
        conf = ", ".join(f'"{k}" = "{v}"' for k, v in args.spark_conf.items())
        text += f'\n[engine]\ntype = "spark"\nmaster = "{args.spark_master}"\nwarehouse = "warehouse"\nconf = {{ {conf} }}\n'
    (folder / "shoplens.toml").write_text(text, encoding="utf-8")
    return folder / "shoplens.toml"


def run_engine(engine: str, size: ShopSize, args: argparse.Namespace) -> dict[str, Any]:
    """Make (or reuse) the shop, build it on ``engine`` in a subprocess; the child's report."""
    shop = CACHE / f"shop-{size.label}"
    made = cached(shop, size, log=print)
    print("shop rows: " + ", ".join(f"{k} {v:,}" for k, v in made["tables"].items() if k != "quarantine"))
    folder = CACHE / f"run-{engine}-{size.label}"
    config = run_config(shop, folder, engine, args)
    out, log = folder / "report.json", folder / "build.log"
    # Spark's Python workers run $PYSPARK_PYTHON, else the first python3 on PATH, which may
    # lack shoplens: give them this interpreter unless told otherwise
    env = dict(os.environ, SPARK_LOCAL_IP=os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
               PYSPARK_PYTHON=os.environ.get("PYSPARK_PYTHON", sys.executable))
    print(f"{engine}: building {size.label} in {folder} (log: {log}) ...", flush=True)
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        try:
            code = subprocess.run([sys.executable, __file__, "--child", str(config), "--child-out", str(out)],
                                  stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            code = -1
    wall = time.perf_counter() - t0
    if code != 0 or not out.exists():
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        why = "timed out" if code == -1 else f"exit status {code}"
        print(f"{engine}: the build FAILED ({why}); last lines of {log}:\n    " + "\n    ".join(tail))
        return {"engine": engine, "failed": why, "log_tail": tail, "process_seconds": round(wall, 2)}
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    report["process_seconds"] = round(wall, 2)
    if not args.keep_runs:  # the store copy and warehouse are GBs at full size; keep the log and report
        for path in folder.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            elif path not in (out, log):
                path.unlink()
    report["shop"] = {"size": asdict(size), "rows": made["tables"], "generated_seconds": made["seconds"]}
    return report


def print_report(r: dict[str, Any]) -> None:
    if "failed" in r:
        return
    jvm = r["engine"] == "spark"
    print(f"\n{r['engine']}: build {r['build_seconds']:.1f} s ({r['process_seconds']:.1f} s for the whole process), "
          f"{r['n_customers']:,} customers; peak RSS: Python process {r['process_peak_rss_mb']:,.0f} MiB"
          + (f", JVM {r['jvm_peak_rss_mb']:,.0f} MiB, Spark's Python workers {r['workers_peak_rss_mb']:,.0f} MiB, "
             f"all together {r['tree_peak_rss_mb']:,.0f} MiB" if jvm else ""))
    head = "| stage | action | seconds | rows written | peak RSS so far (MiB) | RSS in stage (MiB) |"
    print(head + (" JVM RSS in stage (MiB) | workers' RSS in stage (MiB) |" if jvm else ""))
    print("|---" * (8 if jvm else 6) + "|")
    for s in r["stages"]:
        so_far = s.get("peak_rss_so_far_mb")
        line = (f"| {s['stage']} | {s['action']} | {s['seconds']:.2f} | {sum(s['rows'].values()):,} | "
                f"{'-' if so_far is None else f'{so_far:,.0f}'} | {s['rss_in_stage_mb']:,.0f} |")
        print(line + (f" {s['jvm_rss_in_stage_mb']:,.0f} | {s['workers_rss_in_stage_mb']:,.0f} |" if jvm else ""))


def growth(runs: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Cost per order at each size and the growth exponent between the smallest and largest."""
    ok = [(n, r) for n, r in runs if "failed" not in r]
    out: dict[str, Any] = {"sizes": [{"orders": n, "build_seconds": r["build_seconds"],
                                      "us_per_order": round(1e6 * r["build_seconds"] / n, 3),
                                      "process_peak_rss_mb": r["process_peak_rss_mb"],
                                      "tree_peak_rss_mb": r["tree_peak_rss_mb"]} for n, r in ok]}
    if len(ok) >= 2 and ok[-1][0] > ok[0][0]:
        (n0, r0), (n1, r1) = ok[0], ok[-1]
        span = math.log(n1 / n0)
        out["exponent"] = round(math.log(r1["build_seconds"] / r0["build_seconds"]) / span, 3)
        first = {s["stage"]: s["seconds"] for s in r0["stages"]}
        out["stage_exponents"] = {s["stage"]: round(math.log(s["seconds"] / first[s["stage"]]) / span, 3)
                                  for s in r1["stages"] if first.get(s["stage"], 0) > 0 and s["seconds"] > 0}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_args(ap)
    ap.add_argument("--engines", default="duckdb,spark", help="comma-separated: duckdb, spark")
    ap.add_argument("--text-embedder", choices=("use", "e5", "hash"), default="use",
                    help="use (the product default: USE for every text, e5 for the unsure), e5 (every text: "
                         "hours per engine at 1M texts) or hash (no model) (default: use)")
    ap.add_argument("--orders-series", default="",
                    help="Spark growth run: order counts, comma-separated (default: --orders/10,--orders; "
                         "'none' to skip); the whole shop is scaled with the orders")
    ap.add_argument("--spark-master", default="local[2]")
    ap.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                    help="extra [engine] conf for Spark (default spark.driver.memory=4g)")
    ap.add_argument("--keep-runs", action="store_true", help="keep each run's store and warehouse (default: delete)")
    ap.add_argument("--timeout", type=float, default=None, help="give up on one build after this many seconds")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.child_out)
        return
    args.spark_conf = {"spark.driver.memory": "4g"} | dict(kv.split("=", 1) for kv in args.spark_conf)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if unknown := set(engines) - {"duckdb", "spark"}:
        ap.error(f"--engines: unknown {sorted(unknown)}; expected duckdb and/or spark")
    size = ShopSize(args.customers, args.orders, args.events, args.texts, args.products, args.seed)
    print(f"whole build: {size.customers:,} customers, {size.orders:,} orders, {size.events:,} events, "
          f"{size.texts:,} texts; engines {', '.join(engines)}; text embedder {args.text_embedder}; "
          f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    if args.text_embedder == "e5":
        print(f"note: e5 embeds ~60 short texts/s here (texts and evidence clauses): roughly "
              f"{2 * size.texts / 60 / 3600:.1f} h per engine for {size.texts:,} texts; the default (use) is fast")
    t_all = time.perf_counter()
    reports: dict[str, dict[str, Any]] = {}
    problem = spark_problem() if "spark" in engines else None
    for engine in engines:
        if engine == "spark" and problem:
            print(f"spark: NOT RUN: {problem}")
            reports[engine] = {"engine": engine, "failed": problem}
            continue
        reports[engine] = run_engine(engine, size, args)
        print_report(reports[engine])

    series: dict[str, Any] = {}
    if "spark" in engines and not problem and args.orders_series != "none":
        wanted = [int(x) for x in args.orders_series.split(",")] if args.orders_series else [args.orders // 10, args.orders]
        runs = []
        for n in sorted(set(wanted)):
            scaled = size if n == size.orders else replace(
                size, customers=max(1, round(size.customers * n / size.orders)), orders=n,
                events=round(size.events * n / size.orders), texts=round(size.texts * n / size.orders))
            print(f"\nspark growth run at {n:,} orders" + (": the main run" if scaled == size else " ..."))
            rep = reports["spark"] if scaled == size else run_engine("spark", scaled, args)
            if scaled != size:
                print_report(rep)
            runs.append((n, rep))
        series = growth(runs)
        print("\nSpark, whole shop scaled with the orders:")
        print("| orders | build seconds | us per order | Python process peak RSS (MiB) | all processes peak RSS (MiB) |\n"
              "|---|---|---|---|---|")
        for s in series["sizes"]:
            print(f"| {s['orders']:,} | {s['build_seconds']:.1f} | {s['us_per_order']:.2f} | "
                  f"{s['process_peak_rss_mb']:,.0f} | {s['tree_peak_rss_mb']:,.0f} |")
        if "exponent" in series:
            print(f"growth exponent (time ~ orders^b, 1.0 = linear): b = {series['exponent']:.2f} overall; per stage: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in series["stage_exponents"].items()))

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"build-{datetime.now():%Y%m%d-%H%M%S}.json"
    ok = {e: r for e, r in reports.items() if "failed" not in r}
    ratio = ok["spark"]["build_seconds"] / ok["duckdb"]["build_seconds"] if {"spark", "duckdb"} <= ok.keys() else None
    path.write_text(json.dumps({
        "when": datetime.now().isoformat(timespec="seconds"), "argv": sys.argv[1:],
        "machine": {"cores": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": platform.python_version()},
        "size": asdict(size), "text_embedder": args.text_embedder, "spark_conf": args.spark_conf,
        "engines": reports, "spark_series": series, "ratio_spark_over_duckdb": ratio,
        "bench_seconds": round(time.perf_counter() - t_all, 1),
    }, indent=2, default=str), encoding="utf-8")
    print(f"\nresults: {path} (whole benchmark {time.perf_counter() - t_all:.0f} s)")
    if ratio is not None:
        print(f"ratio (Spark build time / DuckDB build time): {ratio:.2f}x")
    else:
        missing = [f"{e}: {r['failed']}" for e, r in reports.items() if "failed" in r] or ["needs both engines"]
        print(f"ratio (Spark build time / DuckDB build time): not available ({'; '.join(missing)})")
    if any("failed" in r for r in reports.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
