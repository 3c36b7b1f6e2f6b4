"""A study's records: what its tables need of each finished run, kept in the repository.

A run directory (``runs/<study>-<basin>/<case>/``) holds gigabytes of models, checkpoints and
executed notebooks, and lives on the machine that ran it. A study that takes longer than one
working session (the comparison takes about 10 hours on 2 cores) has to survive a fresh clone
of the repository: a new machine, a CI runner, a colleague. So, as each run finishes, the study
copies the little its tables are made from into a folder that is committed with the document
(``records:`` of the study file, e.g. ``docs/studies/comparison/``)::

    <records>/<basin label>/<case name>/
        record.json                      the parameters' hash, the files' sha256, seconds per stage,
                                         when, where, which code
        params.yaml                      the parameters the run recorded (every key, resolved)
        health.json                      each trained model's health checks and restarts
        comparison_scores.csv            stage 06's scores (and, for a known-answer basin,
        known_answer_scores.csv          stage 07's scores against the clean truth and the
        known_answer_correlations.csv    correlations of the corrections with the hidden flux)

A case is **recorded** when its ``record.json`` carries the hash of the case's current
parameters (:func:`hybridhydro.pipeline.record.params_hash`): the study then skips it, even where
no run directory exists, and builds its tables from the records alone. A changed parameter
file makes the old record stale: the case runs again and its record is replaced.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io.netcdf import file_sha256
from .record import RUN_PARAMS, PipelineError, code_version, now, params_hash, read_manifest

RECORD_FILE = "record.json"
#: The layout of ``record.json``; a record of another layout is written again from its run
#: directory where that is still there (and read as it is where it is not).
RECORD_FORMAT = 1
HEALTH_FILE = "health.json"
#: The per-run tables stages 06 and 07 write, copied when the run has them.
RECORDED_TABLES = ("comparison_scores.csv", "known_answer_scores.csv", "known_answer_correlations.csv")


def read_record(folder: Path) -> dict[str, Any] | None:
    """A case's ``record.json`` (None: absent or unreadable, which counts as not recorded)."""
    try:
        data = json.loads((Path(folder) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_recorded(records_dir: Path, case) -> bool:
    """Whether ``case`` has a record made with its current parameters, every file it lists on
    disk with the content it had (a file edited by hand or damaged, a merge conflict in it:
    the record does not count, and the case runs again)."""
    folder = Path(records_dir) / case.name
    record = read_record(folder)
    files = (record or {}).get("files")
    return (record is not None and record.get("params_sha256") == params_hash(case.params)
            and isinstance(files, dict) and all(_same(folder / name, digest) for name, digest in files.items()))


def _same(path: Path, digest) -> bool:
    try:
        return path.is_file() and file_sha256(path) == digest
    except OSError:
        return False


def record_run(run_dir: Path, records_dir: Path, case) -> bool:
    """Copy what the tables need of the finished run ``run_dir`` into ``records_dir/<case>/``.

    Returns False (and writes nothing) when the record is already there for the same finished
    run. The record replaces an older one as a whole: it is written into a temporary folder and
    moved into place, so a record is never half old, half new. A folder that cannot be written
    is a :class:`~hybridhydro.pipeline.record.PipelineError` naming it.
    """
    try:
        return _record_run(Path(run_dir), Path(records_dir), case)
    except OSError as error:
        raise PipelineError(f"cannot keep the record of {case.name} in {records_dir}: "
                            f"{error.strerror or error}; give the study a folder it can write "
                            "(the study file's `records:`, or --records DIR)") from None


def _record_run(run_dir: Path, records_dir: Path, case) -> bool:
    manifest = read_manifest(run_dir) or {}
    stages = manifest.get("stages") or {}
    finished = max((str(s.get("finished") or "") for s in stages.values()), default="")
    target = records_dir / case.name
    old = read_record(target)
    digest = params_hash(case.params)
    if (old is not None and old.get("format") == RECORD_FORMAT and old.get("params_sha256") == digest
            and old.get("finished") == finished and is_recorded(records_dir, case)):
        return False
    records_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=records_dir, prefix=f".{case.name}.", suffix=".tmp"))  # two writers never share it
    try:
        return _fill(tmp, target, run_dir, case, digest, stages, finished)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fill(tmp: Path, target: Path, run_dir: Path, case, digest: str, stages: Mapping, finished: str) -> bool:
    for name in (RUN_PARAMS, *RECORDED_TABLES):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, tmp / name)
    health = run_health(run_dir)
    (tmp / HEALTH_FILE).write_text(json.dumps(health, indent=1, sort_keys=True) + "\n")
    files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}
    record = {
        "format": RECORD_FORMAT,
        "case": case.name,
        "params_sha256": digest,
        "finished": finished,
        "recorded": now(),
        "stages": {name: s.get("seconds") for name, s in stages.items()},
        "seconds": round(sum(float(s.get("seconds") or 0.0) for s in stages.values()), 1),
        "files": files,  # name -> sha256
        # the code each stage ran with (recorded by the runner as the stage started)
        "code": {name: s.get("code") or "not recorded (the stage ran before stages recorded their code)"
                 for name, s in stages.items()},
        "recorded with": code_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU core(s), {platform.system()}",
    }
    (tmp / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n")
    os.chmod(tmp, 0o755)  # mkdtemp's folder is private; a record is read by everyone
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return True


def run_health(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each trained model of a run: its health checks and restarts (``models/<model>/calibration.json``)."""
    out = {}
    models = Path(run_dir) / "models"
    for manifest in sorted(models.glob("*/calibration.json")) if models.is_dir() else []:
        try:
            options = json.loads(manifest.read_text()).get("options", {})
        except (OSError, ValueError, AttributeError):
            continue
        out[manifest.parent.name] = {"health": options.get("health") or [], "restarts": options.get("restarts") or []}
    return out


def recorded_statuses(records_dir: Path, cases: Sequence) -> list[dict[str, Any]]:
    """Per case, as :func:`hybridhydro.pipeline.study.run_records` gives them: ``done`` with the
    seconds of its stages when recorded with its current parameters, else ``absent``."""
    out = []
    for case in cases:
        folder = Path(records_dir) / case.name
        record = read_record(folder) if is_recorded(records_dir, case) else None
        out.append({"name": case.name, "status": "done" if record else "absent",
                    "log": str(folder / RECORD_FILE), "seconds": (record or {}).get("seconds")})
    return out


def load_health(case_dir: Path) -> tuple[dict[str, Mapping[str, Any]], Path]:
    """A case's models' health (from its record's ``health.json``, else from the run's models)
    and the file that holds its parameters."""
    case_dir = Path(case_dir)
    if (case_dir / HEALTH_FILE).is_file():
        try:
            return json.loads((case_dir / HEALTH_FILE).read_text()), case_dir / RUN_PARAMS
        except ValueError:
            return {}, case_dir / RUN_PARAMS
    return run_health(case_dir), case_dir / RUN_PARAMS
