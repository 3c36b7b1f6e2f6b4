"""A run directory cannot be corrupted: one process at a time, a record of every stage, stale
inputs refused, Ctrl-C recorded with one line on how to resume, OS errors named.

The stages are throw-away notebooks (a kernel start costs a few seconds each).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from hybridhydro.__main__ import main
from hybridhydro.pipeline import (
    OutputExistsError,
    PipelineError,
    RunLocked,
    StaleInputs,
    load_params,
    run,
    run_status,
)
from hybridhydro.pipeline.record import RunLock, os_problem, stage_problems

WRITER = '''\
# %% tags=["parameters"]
params = {"case": "default", "figures": {"dpi": 1}}
output_dir = "out"

# %%
from pathlib import Path
(Path(output_dir) / "first.txt").write_text(f"dpi {params['figures']['dpi']}")
'''

READER = '''\
# %% tags=["parameters"]
output_dir = "out"

# %%
import os, time
from pathlib import Path
pause = float(os.environ.get("HH_TEST_PAUSE", "0"))
if pause:
    (Path(output_dir) / "started.txt").write_text("started")
    time.sleep(pause)
text = (Path(output_dir) / "first.txt").read_text()
(Path(output_dir) / "second.txt").write_text(text + " seen")
'''


def _case(tmp_path: Path, dpi: int = 42) -> Path:
    path = tmp_path / "params" / "tiny.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"extends": None, "case": "tiny", "figures": {"dpi": dpi}}))
    return path


@pytest.fixture
def nb(tmp_path: Path) -> Path:
    folder = tmp_path / "nb"
    folder.mkdir()
    (folder / "01_writer.py").write_text(textwrap.dedent(WRITER))
    (folder / "02_reader.py").write_text(textwrap.dedent(READER))
    return folder


def _manifest(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def test_the_record_names_each_stage_its_files_and_the_parameters(tmp_path, nb):
    params = load_params(_case(tmp_path))
    run(params, notebooks_dir=nb, output_root=tmp_path / "runs", progress=False)
    out = tmp_path / "runs" / "tiny"
    manifest = _manifest(out)
    assert manifest["status"] == "finished" and manifest["not_current"] == {}
    writer = manifest["stages"]["01_writer"]
    assert writer["status"] == "done" and set(writer["outputs"]) == {"first.txt", "01_writer.ipynb"}
    assert manifest["stages"]["02_reader"]["params_sha256"] == manifest["params_sha256"]
    assert run_status(params, tmp_path / "runs", notebooks_dir=nb) == "finished"
    # a file changed by hand makes its stage, and every stage after it, not current
    (out / "first.txt").write_text("edited")
    problems = stage_problems(out, manifest, ["01_writer", "02_reader"], manifest["params_sha256"])
    assert problems == {"01_writer": "its file first.txt was changed after it ran",
                        "02_reader": "an earlier stage (01_writer) is not current"}
    assert run_status(params, tmp_path / "runs", notebooks_dir=nb) == "unfinished"
    with pytest.raises(StaleInputs, match="01_writer is not current: its file first.txt was changed"):
        run(params, notebooks_dir=nb, output_root=tmp_path / "runs", progress=False, overwrite=True, stages=["02"])
    result = run(params, notebooks_dir=nb, output_root=tmp_path / "runs", progress=False, resume=True)
    assert [s.stage for s in result.stages] == ["01_writer", "02_reader"]
    assert (out / "second.txt").read_text() == "dpi 42 seen"
    # nothing left to do: resume runs nothing
    again = run(params, notebooks_dir=nb, output_root=tmp_path / "runs", progress=False, resume=True)
    assert again.stages == () and again.summary().startswith("nothing to run: every stage of")


def test_a_later_stage_is_refused_on_files_made_from_other_parameters(tmp_path, nb):
    run(load_params(_case(tmp_path)), notebooks_dir=nb, output_root=tmp_path / "runs", progress=False)
    out = tmp_path / "runs" / "tiny"
    before = {p: (out / p).read_bytes() for p in ("params.yaml", "second.txt", "run.json")}
    changed = load_params(_case(tmp_path, dpi=70))
    with pytest.raises(StaleInputs) as error:
        run(changed, notebooks_dir=nb, output_root=tmp_path / "runs", progress=False, overwrite=True, stages=["02"])
    assert "01_writer is not current: it ran with other parameters" in str(error.value)
    assert "--stages 01_writer,02_reader" in str(error.value)
    assert {p: (out / p).read_bytes() for p in before} == before  # nothing written, params.yaml kept
    with pytest.raises(StaleInputs, match=r"made with other parameters .*changed: figures.dpi"):
        run(changed, notebooks_dir=nb, output_root=tmp_path / "runs", progress=False, resume=True)
    # the whole run again is what the message advises, and it works
    run(changed, notebooks_dir=nb, output_root=tmp_path / "runs", progress=False, overwrite=True)
    assert (out / "second.txt").read_text() == "dpi 70 seen"


def test_overwrite_removes_what_the_stage_wrote_before_and_only_that(tmp_path, nb):
    params = load_params(_case(tmp_path))
    run(params, notebooks_dir=nb, output_root=tmp_path / "runs", progress=False)
    out = tmp_path / "runs" / "tiny"
    (out / "mine.txt").write_text("the user's note")
    (nb / "01_writer.py").write_text(textwrap.dedent(WRITER).replace("first.txt", "renamed.txt")
                                     + '\n(Path(output_dir) / "first.txt").write_text("x")\n')
    run(params, notebooks_dir=nb, output_root=tmp_path / "runs", progress=False, overwrite=True, stages=["01"])
    assert (out / "mine.txt").read_text() == "the user's note"
    assert (out / "renamed.txt").exists()
    # 02 ran on 01's earlier files: it is no longer current, and the run is not finished
    manifest = _manifest(out)
    assert manifest["status"] == "partial" and "02_reader" in manifest["not_current"]


def test_a_stage_between_two_selected_ones_must_be_selected_too(tmp_path):
    folder = tmp_path / "nb"
    folder.mkdir()
    for stem in ("01_a", "02_b", "03_c"):
        (folder / f"{stem}.py").write_text('# %% tags=["parameters"]\noutput_dir = "o"\n\n# %%\nx = 1\n')
    params = load_params(_case(tmp_path))
    run(params, notebooks_dir=folder, output_root=tmp_path / "runs", progress=False)
    with pytest.raises(StaleInputs, match="02_b lies between 01_a and 03_c .* --stages 01_a,02_b,03_c"):
        run(params, notebooks_dir=folder, output_root=tmp_path / "runs", progress=False, overwrite=True,
            stages=["01", "03"])


def test_a_second_process_cannot_write_into_a_locked_run(tmp_path, nb):
    out = tmp_path / "runs" / "tiny"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hybridhydro.pipeline.record import RunLock; "
         "lock = RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=rf"another hybridhydro run \(pid {holder.pid} on .*\) is writing into"):
            run(load_params(_case(tmp_path)), notebooks_dir=nb, output_root=tmp_path / "runs", progress=False)
        assert not (out / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its process: no stale lock to clean by hand
    run(load_params(_case(tmp_path)), notebooks_dir=nb, output_root=tmp_path / "runs", progress=False)
    with RunLock(out):
        with pytest.raises(RunLocked):
            RunLock(out).acquire()


def test_existing_results_advice_explains_resume_and_overwrite(tmp_path, nb):
    params = load_params(_case(tmp_path))
    run(params, notebooks_dir=nb, output_root=tmp_path / "runs", progress=False)
    with pytest.raises(OutputExistsError) as error:
        run(params, notebooks_dir=nb, output_root=tmp_path / "runs", progress=False)
    text = str(error.value)
    assert "--resume" in text and "--overwrite" in text and "files those stages wrote before are replaced" in text
    with pytest.raises(PipelineError, match="exclude each other"):
        run(params, notebooks_dir=nb, output_root=tmp_path / "runs", progress=False, resume=True, overwrite=True)


def test_ctrl_c_records_the_stage_prints_one_line_and_resume_continues(tmp_path, nb):
    case = _case(tmp_path)
    out = tmp_path / "runs" / "tiny"
    command = [sys.executable, "-m", "hybridhydro", "run", str(case), "--notebooks", str(nb),
               "--output-root", str(tmp_path / "runs"), "--no-progress"]
    env = {**os.environ, "HH_TEST_PAUSE": "60"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not (out / "started.txt").exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        # a guard against a hang, not a speed test: the kernel's shutdown after Ctrl-C can take a
        # minute on 2 loaded cores (make test runs the docs site's Chromium beside it)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr  # 128 + SIGINT, as shells report it
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "interrupted in stage 02_reader" in lines[0] and f"{case} --resume" in lines[0]
    manifest = _manifest(out)
    record = manifest["stages"]["02_reader"]
    assert (record["status"], record["cause"]) == ("interrupted", "KeyboardInterrupt (Ctrl-C)")
    assert manifest["stages"]["01_writer"]["status"] == "done" and manifest["status"] == "interrupted"
    first = (out / "01_writer.ipynb").stat().st_mtime_ns
    # --resume reruns the interrupted stage only
    assert main(command[3:] + ["--resume"]) == 0
    assert (out / "01_writer.ipynb").stat().st_mtime_ns == first
    assert (out / "second.txt").read_text() == "dpi 42 seen"
    assert _manifest(out)["status"] == "finished"


def test_a_run_killed_outright_is_resumed(tmp_path, nb):
    """SIGKILL leaves the stage 'running' with a free lock: resume sees it as interrupted."""
    case = _case(tmp_path)
    out = tmp_path / "runs" / "tiny"
    command = [sys.executable, "-m", "hybridhydro", "run", str(case), "--notebooks", str(nb),
               "--output-root", str(tmp_path / "runs"), "--no-progress"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HH_TEST_PAUSE": "60"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not (out / "started.txt").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    params = load_params(case)
    problems = stage_problems(out, _manifest(out), ["01_writer", "02_reader"], _manifest(out)["params_sha256"])
    assert problems["02_reader"].startswith("it interrupted (its process ended while it ran)")
    result = run(params, notebooks_dir=nb, output_root=tmp_path / "runs", progress=False, resume=True)
    assert [s.stage for s in result.stages] == ["02_reader"]


def test_os_errors_name_the_path_and_what_to_do(tmp_path, nb, monkeypatch, capsys):
    full = os_problem(OSError(errno.ENOSPC, "No space left on device", "/x/run.json"))
    assert str(full) == ("cannot write /x/run.json: No space left on device; the disk is full: free some space, "
                         "or choose another --output-root")
    assert "read-only" in str(os_problem(OSError(errno.EROFS, "Read-only file system", "/ro")))
    # a real write refused by the system, as a read-only or full disk refuses it
    original = Path.write_text

    def refuse(self, *args, **kwargs):
        if self.name == "params.yaml":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", refuse)
    case = _case(tmp_path)
    assert main(["run", str(case), "--notebooks", str(nb), "--output-root", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"cannot write {tmp_path / 'runs' / 'tiny' / 'params.yaml'}: No space left on device; the disk is full" in err
    # an output root under a file is named too
    monkeypatch.setattr(Path, "write_text", original)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PipelineError, match=r"cannot create the run directory .*afile"):
        run(load_params(case), notebooks_dir=nb, output_root=tmp_path / "afile", progress=False)


def test_the_params_hash_ignores_only_the_basin_generators_a_source_does_not_use():
    from hybridhydro.pipeline import load_params
    from hybridhydro.pipeline.record import params_hash

    lez = load_params({"basin": {"source": "Lez"}})
    other = load_params({"basin": {"source": "Lez", "synthetic": {"nrow": 9}}})
    assert params_hash(lez) == params_hash(other)  # the synthetic basin's settings do not shape a Lez run
    synthetic = load_params({"basin": {"source": "synthetic"}})
    changed = load_params({"basin": {"source": "synthetic", "synthetic": {"nrow": 9}}})
    assert params_hash(synthetic) != params_hash(changed)  # ... but they do shape a synthetic run
    assert params_hash(lez) != params_hash(load_params({"basin": {"source": "Lez"}, "seed": 3}))
