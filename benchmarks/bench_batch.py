"""Batch reruns on Dask: six ci-sized cases on a local cluster of 2 workers against one after the other.

The cases are ``params/ci.yaml`` with seeds 0-5 (the seed of every network's initial weights),
reduced to the stages whose work a seed changes or that score it: 01_basin, 03_calibrate,
04_regionalize (gr4-ann) and 06_validate, with the models gr4-uniform and gr4-ann, so that the
benchmark takes minutes. Both sides run the same expanded cases
(:func:`hybridhydro.pipeline.batch.expand`), in fresh directories:

1. sequential: ``runner.run`` for each case in turn, in this process (what a shell loop over
   ``python -m hybridhydro run`` does, less its start-up);
2. batch: :func:`hybridhydro.pipeline.batch.run_batch` on an embedded ``LocalCluster`` of
   ``--jobs`` single-threaded worker processes; the time includes starting and stopping the
   cluster and writing the summary.

The goal: the batch takes at most 0.6x the sequential time. The machine's CPU use (from
``/proc/stat``) over each side is reported: a sequential run that already keeps every core busy
(JAX's threads, XLA's compiler) leaves a batch little to gain. The two sides' scores are
compared (the same seed gives the same scores). Each side starts with an empty JAX compilation
cache of its own (``JAX_COMPILATION_CACHE_DIR``), so that neither loads what the other compiled.
The "Batch reruns on Dask" section of ``benchmarks/results.md`` is replaced (other sections are
kept).

Usage: ``.venv/bin/python benchmarks/bench_batch.py [--cases 6] [--jobs 2] [--out DIR] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import load, process_notes, publish, run_header

SECTION = "## Batch reruns on Dask"
GOAL = 0.6
ROOT = Path(__file__).resolve().parents[1]
STAGES = ["01_basin", "03_calibrate", "04_regionalize", "06_validate"]
MODELS = ["gr4-uniform", "gr4-ann"]


def cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (all CPUs)."""
    import os

    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def with_cache(directory: Path) -> None:
    """Kernels started from now on (and the workers' kernels) use this JAX compilation cache.

    Each side starts with an empty one: the first case of each compiles, the later ones may load
    what it compiled (hybridhydro.cache), as on a fresh machine.
    """
    import os

    directory.mkdir(parents=True, exist_ok=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(directory)  # JAX's own setting wins over hybridhydro's


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, mean number of busy CPUs, result) of ``fn()``."""
    busy0, total0 = cpu_busy()
    tic = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - tic
    busy1, _ = cpu_busy()
    return wall, (busy1 - busy0) / wall, out


def stage_seconds(run_dir: Path) -> dict[str, float]:
    manifest = json.loads((run_dir / "run.json").read_text())
    return {stage: record.get("seconds", float("nan")) for stage, record in manifest["stages"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=6, help="seeds 0..N-1 (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="workers of the local cluster (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args()

    import pandas as pd
    import yaml

    from hybridhydro.pipeline import runner
    from hybridhydro.pipeline.batch import expand, run_batch

    work = Path(args.out or tempfile.mkdtemp(prefix="bench-batch-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    case_file = work / "bench.yaml"
    case_file.write_text(yaml.safe_dump({"extends": str(ROOT / "params" / "ci.yaml"), "case": "bench",
                                         "stages": STAGES, "calibration": {"models": MODELS}}))
    cases = expand([case_file], seeds=f"0-{args.cases - 1}")
    load_before = load()
    start = time.perf_counter()

    def sequential():
        for case in cases:
            runner.run(case.params, output_root=work / "sequential", progress=False)

    def batch():
        return run_batch(cases, name="batch", output_root=work, jobs=args.jobs, dashboard_address=":0",
                         echo=lambda line: print("  " + line, flush=True))

    print(f"sequential: {len(cases)} cases, stages {', '.join(STAGES)}", flush=True)
    with_cache(work / "jax-cache-sequential")
    try:
        t_seq, cpu_seq, _ = timed(sequential)
    except runner.PipelineError as error:
        print(f"error: a case fails on its own, so there is nothing to compare: {error}", file=sys.stderr)
        return 1
    print(f"  {t_seq:.1f} s", flush=True)
    print(f"batch on {args.jobs} workers", flush=True)
    with_cache(work / "jax-cache-batch")
    t_batch, cpu_batch, result = timed(batch)
    print(f"  {t_batch:.1f} s", flush=True)
    failed = [c["name"] for c in result.cases if c["status"] != "done"]

    per_case_seq = [sum(stage_seconds(work / "sequential" / c.name).values()) for c in cases]
    per_case_batch = [sum(stage_seconds(work / "batch" / c.name).values()) for c in cases if c.name not in failed]
    diffs = []
    for c in cases:
        a, b = work / "sequential" / c.name / "comparison_scores.csv", work / "batch" / c.name / "comparison_scores.csv"
        if a.is_file() and b.is_file():
            x, y = pd.read_csv(a), pd.read_csv(b)
            metrics = x.select_dtypes("number").columns
            diffs.append(float((x[metrics] - y[metrics]).abs().to_numpy().max()))
    ratio = t_batch / t_seq
    stages_seq = pd.DataFrame([stage_seconds(work / "sequential" / c.name) for c in cases]).median()
    stages_batch = pd.DataFrame([stage_seconds(work / "batch" / c.name) for c in cases if c.name not in failed]).median()

    rows = [
        "| how | wall s | per case s (median of the stage times) | busy CPUs (mean) | ratio to sequential |",
        "|---|---:|---:|---:|---:|",
        f"| sequential: `runner.run` per case, in one process | {t_seq:.1f} | {statistics.median(per_case_seq):.1f} "
        f"| {cpu_seq:.2f} | 1.00 |",
        f"| batch: `python -m hybridhydro batch --jobs {args.jobs}` (LocalCluster, includes its start) | {t_batch:.1f} "
        f"| {statistics.median(per_case_batch) if per_case_batch else float('nan'):.1f} | {cpu_batch:.2f} | {ratio:.2f} |",
    ]
    goals = [f"- {len(cases)} ci-sized cases on {args.jobs} workers in at most {GOAL}x the sequential time: "
             f"**{'met' if ratio <= GOAL and not failed else 'missed'}** ({ratio:.2f}x)."]
    header = run_header(load_before, start) + (
        f" {len(cases)} cases: `params/ci.yaml` with seeds 0-{len(cases) - 1}, "
        f"stages {', '.join(STAGES)}, models {', '.join(MODELS)}; each side once, sequential first, in fresh directories, "
        "each with its own JAX compilation cache, empty at its start."
    )
    notes = [
        "Median stage times (s), sequential / batch: "
        + ", ".join(f"{s} {stages_seq.get(s, float('nan')):.1f} / {stages_batch.get(s, float('nan')):.1f}" for s in STAGES)
        + ". A stage in the batch runs beside another case's, so each is slower; the batch wins by overlapping them.",
        f"Busy CPUs: the machine's non-idle CPU time over the wall time (from /proc/stat, other users included), "
        f"of {__import__('os').cpu_count()} CPUs.",
        f"Scores, batch against sequential (same seeds): largest |difference| {max(diffs):.3g} over {len(diffs)} cases."
        if diffs else "Scores: none to compare.",
    ]
    if failed:
        notes.append(f"Cases that did not finish in the batch: {', '.join(failed)} (logs in {work / 'batch'}).")
    notes += process_notes(load_before)
    publish(SECTION, header, rows, goals, notes)
    if not args.keep and args.out is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
