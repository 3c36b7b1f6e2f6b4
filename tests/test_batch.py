"""Batch reruns (hybridhydro.pipeline.batch): the expansion of --set/--seeds, the summary's
statistics, and real batches on a local Dask cluster of throw-away notebooks: skipping what
finished, resuming what failed, and a worker killed in the middle of a case."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hybridhydro.__main__ import main
from hybridhydro.pipeline import batch as batch_module
from hybridhydro.pipeline import load_params, runner
from hybridhydro.pipeline.batch import BatchError, expand, parse_seeds, parse_set, summarize

# Stage 01 counts its executions; stage 02 writes a comparison_scores.csv made from the case's
# seed and figures.dpi (the grid key of these tests). It fails for dpi 300 / seed 1 while the
# file fail.flag sits beside the batch's output root, and, for seed 0 when sleep.flag is there,
# sleeps on its first attempt after writing the pid of the worker that runs it (the kernel's
# parent) so that a test can kill that worker.
FIRST = '''\
# %% tags=["parameters"]
params = {}
output_dir = "."

# %%
from pathlib import Path
with open(Path(output_dir) / "executions.txt", "a") as f:
    f.write("ran\\n")
'''

SCORES = '''\
# %% tags=["parameters"]
params = {}
output_dir = "."

# %%
import os
import time
from pathlib import Path

out = Path(output_dir)
tmp = out.parents[2]
seed, dpi = params["seed"], params["figures"]["dpi"]
if dpi == 300 and seed == 1 and (tmp / "fail.flag").exists():
    raise RuntimeError("failing on purpose")
marker = out / "worker_pid.txt"
if seed == 0 and (tmp / "sleep.flag").exists() and not marker.exists():
    marker.write_text(str(os.getppid()))
    time.sleep(90)  # killed before it wakes up

# %%
rows = ["model,scenario,gauge,nse,kge"]
for model, shift in (("m1", 0.0), ("m2", 1.0)):
    rows.append(f"{model},calibration,G1,{seed / 10 + shift},{dpi / 1000}")
    rows.append(f"{model},temporal,G1,{seed / 100 + shift},{dpi / 1000 + seed}")
(out / "comparison_scores.csv").write_text("\\n".join(rows) + "\\n")
'''


@pytest.fixture
def case(tmp_path: Path) -> Path:
    path = tmp_path / "params" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"extends": None, "case": "tiny", "figures": {"dpi": 60}}))
    return path


@pytest.fixture
def nb(tmp_path: Path) -> Path:
    folder = tmp_path / "nb"
    folder.mkdir()
    (folder / "01_first.py").write_text(FIRST)
    (folder / "02_scores.py").write_text(SCORES)
    return folder


# --- the request ---------------------------------------------------------------------------------


def test_set_values_are_yaml_and_commas_inside_brackets_or_quotes_do_not_split():
    setting = parse_set("hybrid.hidden=3,0.5,null,true,gr4-lr,[8, 8],'a,b'")
    assert setting.key == "hybrid.hidden"
    assert setting.values == (3, 0.5, None, True, "gr4-lr", [8, 8], "a,b")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("figures.dpi", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("figures.dpi=60,", "a value is empty"),
        ("figures..dpi=60", "is not a dotted key"),
        ("case=a,b", "the batch names every case"),
        ("seed=1,2", "use --seeds"),
        ("figures.dpi=60,60", "appear twice"),
        ("figures.format=[png", "is not a YAML value"),
    ],
)
def test_malformed_set_is_refused_with_what_to_write(text, message):
    with pytest.raises(BatchError, match=message) as error:
        parse_set(text)
    assert repr(text) in str(error.value)  # names the --set as typed


def test_seeds_accept_ranges_and_lists():
    assert parse_seeds("0-4") == (0, 1, 2, 3, 4)
    assert parse_seeds("0,3,7") == (0, 3, 7)
    assert parse_seeds("0-2, 10") == (0, 1, 2, 10)
    for bad, message in [("4-0", "write the smaller seed first"), ("a", "not a seed or a range"), ("-1", "not a seed"),
                         ("1,0-2", "appear twice"), ("", "not a seed")]:
        with pytest.raises(BatchError, match=message):
            parse_seeds(bad)


def test_expand_makes_the_grid_times_the_seeds_with_readable_unique_names(case, nb):
    cases = expand([case], ["figures.dpi=60,120", "figures.format=png,svg"], "3-4", notebooks_dir=nb)
    assert [c.name for c in cases] == [
        f"tiny_dpi-{dpi}_format-{fmt}_seed-{seed}" for dpi in (60, 120) for fmt in ("png", "svg") for seed in (3, 4)
    ]
    last = cases[-1]
    assert (last.params.case, last.params.figures.dpi, last.params.figures.format, last.seed) == (last.name, 120, "svg", 4)
    assert last.params.model_dump()["seed"] == 4
    assert last.params.hybrid_seed == 4 and last.params.hybrid.seed is None  # the hybrids follow the seed, as when the file sets no hybrid.seed
    assert last.grid == (("figures.dpi", 120), ("figures.format", "svg")) and last.base_case == "tiny"
    assert last.source == str(case.resolve())
    # every other key is the file's: the case is the file's parameters plus the --set
    assert load_params(last.params.model_dump(mode="json")).calibration == load_params(case).calibration
    # no --set, no --seeds: the file's own case and seed
    (only,) = expand([case], notebooks_dir=nb)
    assert (only.name, only.seed, only.grid) == ("tiny", 0, ())


def test_names_keep_enough_of_the_key_to_tell_two_sets_apart(case, nb):
    cases = expand(
        [case],
        ["calibration.optimizers.distributed.maxiter=3", "calibration.optimizers.ann.maxiter=5", "hybrid.hidden=[8,8]"],
        notebooks_dir=nb,
    )
    assert [c.name for c in cases] == ["tiny_distributed.maxiter-3_ann.maxiter-5_hidden-8-8"]
    assert cases[0].params.calibration.optimizers["ann"].maxiter == 5
    assert cases[0].params.hybrid.hidden == [8, 8]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["figures.dpii=60"], r"(?s)--set figures.dpii=60 does not apply to .*tiny.yaml.*unknown key 'figures.dpii'; did you mean 'figures.dpi'"),
        (["figures.dpi=60,10"], r"(?s)--set figures.dpi=10 does not apply .*figures.dpi: Input should be greater than or equal to 30"),
        (["figures.dpi.x=1"], r"figures.dpi is a value \(60\), not a section"),
        (["figures.dpi=60", "figures.dpi=120"], "given twice"),
    ],
)
def test_a_set_that_makes_invalid_parameters_is_named_before_anything_runs(case, nb, sets, message, tmp_path):
    with pytest.raises(BatchError, match=message):
        expand([case], sets, notebooks_dir=nb)
    assert not (tmp_path / "runs").exists()


def test_expand_checks_stages_and_unique_names_up_front(case, nb, tmp_path):
    with pytest.raises(Exception, match="'03' is not a stage"):
        expand([case], stages=["03"], notebooks_dir=nb)
    twin = tmp_path / "other" / "tiny.yaml"
    twin.parent.mkdir()
    twin.write_text(case.read_text())
    with pytest.raises(BatchError, match="both be named 'tiny_seed-0'.*different `case:` names"):
        expand([case, twin], seeds="0", notebooks_dir=nb)


def test_a_case_its_basin_cannot_serve_refuses_the_whole_batch_before_any_runs(tmp_path):
    """The check `run` makes before its first stage, made for every case before the first starts:
    the third case here would fail only when its turn came."""
    from hybridhydro.pipeline.batch import preflight, run_batch

    path = tmp_path / "params" / "syn.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"case": "syn", "stages": ["01_basin", "03_calibrate"],
                                    "basin": {"source": "synthetic", "synthetic": {"nrow": 8, "ncol": 8, "ntime": 48}},
                                    "calibration": {"models": ["gr4-uniform"]}}))
    cases = expand([path], ["calibration.validation_gauges=[SYN000],[SYN001],[NOPE]"], seeds="0")
    problems = preflight(cases)
    assert problems == ["syn_validation_gauges-NOPE_seed-0: calibration: validation gauge(s) ['NOPE'] are not in the "
                        "basin; its gauges are ['SYN000', 'SYN001']"]
    assert preflight(cases[:2]) == []  # the check can pass
    with pytest.raises(BatchError, match=r"1 problem\(s\) in the 3 case\(s\); nothing was run or written"):
        run_batch(cases, name="b", output_root=tmp_path / "runs", jobs=1)
    assert not (tmp_path / "runs").exists()


# --- the summary -----------------------------------------------------------------------------------


def test_summary_median_and_iqr_across_seeds_match_hand_computation():
    nse_a = [0.1, 0.5, 0.2, 0.9, 0.4]  # sorted 0.1 0.2 0.4 0.5 0.9: median 0.4, q25 0.2, q75 0.5
    nse_b = [1.0, 2.0, 3.0, math.nan, 10.0]  # 1 2 3 10: median 2.5, q25 1 + 0.75 = 1.75, q75 3 + 0.25 * 7 = 4.75
    rows = [{"case": f"c{p}{s}", "base_case": "c", "figures.dpi": p, "seed": s, "model": "m", "scenario": "temporal",
             "gauge": "G1", "nse": value, "kge": 2 * value}
            for p, values in ((60, nse_a), (120, nse_b)) for s, value in enumerate(values)]
    stats = summarize(pd.DataFrame(rows), ["base_case", "figures.dpi"]).set_index(["figures.dpi", "metric"])
    assert stats.loc[(60, "nse"), ["n", "median", "q25", "q75"]].tolist() == pytest.approx([5, 0.4, 0.2, 0.5])
    assert stats.loc[(60, "nse"), "iqr"] == pytest.approx(0.3)
    assert stats.loc[(120, "nse"), ["n", "median", "q25", "q75", "iqr"]].tolist() == pytest.approx([4, 2.5, 1.75, 4.75, 3.0])
    assert stats.loc[(60, "kge"), ["median", "iqr"]].tolist() == pytest.approx([0.8, 0.6])
    assert len(stats) == 4  # 2 grid points x 1 model x 1 scenario x 1 gauge x 2 metrics


# --- the command line, without a cluster ----------------------------------------------------------


def test_a_bad_batch_request_exits_2_naming_the_cause_and_runs_nothing(tmp_path, case, nb, capsys):
    common = [str(case), "--notebooks", str(nb), "--output-root", str(tmp_path / "runs")]
    assert main(["batch", *common, "--set", "figures.dpi=60,10"]) == 2
    assert "error: --set figures.dpi=10 does not apply to" in capsys.readouterr().err
    assert main(["batch", *common, "--jobs", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "drop --jobs" in capsys.readouterr().err
    single = tmp_path / "runs" / "single"
    single.mkdir(parents=True)
    (single / "run.json").write_text("{}")
    assert main(["batch", *common, "--name", "single"]) == 2
    assert "holds a single run (run.json), not a batch" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["single"]


def test_run_resume_reaches_the_runner_and_an_interrupt_exits_130_with_one_line(tmp_path, case, monkeypatch, capsys):
    seen = {}
    line = "interrupted in stage 01_first; continue with: python -m hybridhydro run tiny.yaml --resume"

    def interrupted(params, **options):
        seen.update(options)
        raise runner.RunInterrupted(line)

    monkeypatch.setattr(runner, "run", interrupted)
    assert main(["run", str(case), "--resume", "--no-progress"]) == 130
    assert seen["resume"] is True and seen["overwrite"] is False
    assert capsys.readouterr().err == f"error: {line}\n"


def test_an_interrupted_batch_records_its_cases_and_exits_130(tmp_path, case, nb, monkeypatch, capsys):
    def ctrl_c(*args, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_module, "_run_on_dask", ctrl_c)
    assert main(["batch", str(case), "--seeds", "0,1", "--notebooks", str(nb), "--output-root", str(tmp_path / "runs")]) == 130
    err = capsys.readouterr().err
    assert err.startswith("error: batch batch-tiny interrupted; rerun the same command") and err.count("\n") == 1
    manifest = json.loads((tmp_path / "runs" / "batch-tiny" / "batch.json").read_text())
    assert [c["status"] for c in manifest["cases"]] == ["interrupted", "interrupted"]


# --- real batches on a local cluster -------------------------------------------------------------


def _cli(args: list[str], cwd: Path, timeout: float, during=None) -> subprocess.CompletedProcess:
    """``python -m hybridhydro ARGS`` in its own process group, killed whole on timeout (never a hang).

    ``during(process)`` runs while the batch runs (the kill test acts there)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "hybridhydro", *args], cwd=cwd, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        if during is not None:
            during(process)
        out, err = process.communicate(timeout=timeout)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        print(out, err)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _executions(run_dir: Path) -> int:
    return (run_dir / "executions.txt").read_text().count("ran")


def test_batch_runs_every_case_on_two_workers_and_a_rerun_skips_what_finished(tmp_path, case, nb):
    (tmp_path / "fail.flag").touch()
    args = [str(case), "--set", "figures.dpi=60,300", "--seeds", "0,1", "--jobs", "2", "--notebooks", str(nb),
            "--output-root", str(tmp_path / "runs")]
    first = _cli(["batch", *args], tmp_path, timeout=180)
    batch = tmp_path / "runs" / "batch-tiny"
    failing = batch / "tiny_dpi-300_seed-1"
    # one case failed; the three others ran to the end; the exit status and message say which and where
    assert first.returncode == 1, _what_happened(first, batch)
    assert "1 of 4 cases did not finish" in first.stderr and str(failing / "run.log") in first.stderr
    assert "failing on purpose" in (failing / "run.log").read_text()
    assert "dashboard: http" in first.stdout
    manifest = json.loads((batch / "batch.json").read_text())
    status = {c["name"]: c["status"] for c in manifest["cases"]}
    assert status == {f"tiny_dpi-{d}_seed-{s}": "failed" if (d, s) == (300, 1) else "done" for d in (60, 300) for s in range(2)}
    assert all(c["seconds"] > 0 and c["attempts"] == 1 for c in manifest["cases"])
    assert "02_scores: done" in (batch / "tiny_dpi-60_seed-0" / "run.log").read_text()
    summary = (batch / "summary.md").read_text()
    assert "- tiny_dpi-300_seed-1: failed" in summary  # listed among the cases without scores
    assert "n=1" in summary  # its grid point has one seed only

    # the rerun skips the three finished cases and resumes the failed one from its failed stage
    (tmp_path / "fail.flag").unlink()
    second = _cli(["batch", *args], tmp_path, timeout=120)
    assert second.returncode == 0, _what_happened(second, batch)
    assert second.stdout.count("finished earlier, skipped") == 3
    assert all(_executions(batch / f"tiny_dpi-{d}_seed-{s}") == 1 for d in (60, 300) for s in range(2))

    scores = pd.read_csv(batch / "summary.csv")
    assert list(scores.columns[:4]) == ["case", "base_case", "figures.dpi", "seed"]
    assert len(scores) == 4 * 4 and set(scores["seed"]) == {0, 1}
    # kge of m1 in the temporal scenario at dpi 60 is 0.06 + seed: 0.06 and 1.06, median 0.56,
    # q25 0.06 + 0.25 = 0.31, q75 0.06 + 0.75 = 0.81, IQR 0.5
    stats = pd.read_csv(batch / "summary_stats.csv")
    row = stats[(stats["figures.dpi"] == 60) & (stats["model"] == "m1") & (stats["scenario"] == "temporal")
                & (stats["metric"] == "kge")].iloc[0]
    assert (row["n"], row["median"], row["iqr"]) == (2, pytest.approx(0.56), pytest.approx(0.5))
    # nse of m1 at dpi 60: calibration seed / 10 (0, 0.1), temporal seed / 100 (0, 0.01)
    assert "| m1 | 0.050 [0.050] | 0.005 [0.005] |" in (batch / "summary.md").read_text()
    assert "| m1 | 0.050 [0.050] | 0.005 [0.005] |" in second.stdout  # printed too


def test_a_worker_killed_in_the_middle_of_a_case_loses_nothing(tmp_path, case, nb):
    # The cluster is the user's here (--scheduler): its nanny restarts the killed worker, and its
    # scheduler (allowed-failures, 3 by default) gives the case to a worker again.
    from distributed import Client, LocalCluster

    (tmp_path / "sleep.flag").touch()
    batch = tmp_path / "runs" / "killed"
    marker = batch / "tiny_seed-0" / "worker_pid.txt"
    killed = {}

    def kill_the_worker(process):
        deadline = time.monotonic() + 90
        while not (marker.is_file() and marker.read_text().strip()):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the sleeping stage never started"
            time.sleep(0.2)
        pid = int(marker.read_text())
        assert pid in workers.values()  # the kernel's parent is the worker running the case
        os.kill(pid, signal.SIGKILL)
        killed["pid"] = pid

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        workers = client.run(os.getpid)
        result = _cli(["batch", str(case), "--seeds", "0,1", "--scheduler", cluster.scheduler_address, "--name", "killed",
                       "--notebooks", str(nb), "--output-root", str(tmp_path / "runs")], tmp_path, timeout=180,
                      during=kill_the_worker)
    seen = _what_happened(result, batch)
    assert killed and result.returncode == 0, seen
    assert f"running on the scheduler at {cluster.scheduler_address} (2 worker(s))" in result.stdout, seen
    manifest = {c["name"]: c for c in json.loads((batch / "batch.json").read_text())["cases"]}
    assert manifest["tiny_seed-0"]["status"] == "done" and manifest["tiny_seed-0"]["attempts"] == 2, seen
    assert manifest["tiny_seed-1"]["status"] == "done" and manifest["tiny_seed-1"]["attempts"] == 1, seen
    assert _executions(batch / "tiny_seed-0") == 1  # resumed at the killed stage: stage 01 did not run again
    run = json.loads((batch / "tiny_seed-0" / "run.json").read_text())
    assert {s: v["status"] for s, v in run["stages"].items()} == {"01_first": "done", "02_scores": "done"}
    scores = pd.read_csv(batch / "summary.csv")
    assert sorted(set(scores["case"])) == ["tiny_seed-0", "tiny_seed-1"] and len(scores) == 8


def _what_happened(result: subprocess.CompletedProcess, batch: Path) -> str:
    """The batch's output and logs, for the message of a failed assertion."""
    logs = "".join(f"\n--- {log}\n{log.read_text()}" for log in sorted(batch.glob("*/run.log")))
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}{logs}"
