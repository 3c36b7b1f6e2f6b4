"""The record of a run directory: its lock, ``run.json`` and the content hashes of its stages.

A run directory ``<output-root>/<case>/`` belongs to one process at a time: the runner takes an
exclusive lock on ``<run>/.lock`` (``fcntl.flock``; the system releases it when the process
ends, however it ends, so a killed run never leaves a stale lock behind).

``run.json`` keeps, for every stage that ever started in the directory:

- ``status``: ``running`` (set when it starts; found again only when the process died, since
  the lock is free), ``done``, ``failed`` or ``interrupted``, with the ``cause`` of the last two;
- ``params_sha256``: the hash of the parameters it ran with (:func:`params_hash`: every key but
  ``stages``, which only chooses what runs);
- ``outputs``: each file the stage wrote or changed (path relative to the run, sha256);
- ``inputs_sha256``: the fingerprint of the earlier stages' records when it started.

A stage is **current** when it is ``done`` with the run's current parameters, its earlier
stages are current and unchanged since it ran (the same fingerprint), and its files are on disk
with the hashes recorded (or were rewritten by a later stage, which records them in turn). A
stage that is not current is rerun by ``--resume``; a stage whose inputs are not current is
refused (:class:`StaleInputs`), so that no stage ever reads files made from other parameters.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..io.netcdf import file_sha256

RUN_MANIFEST = "run.json"
RUN_PARAMS = "params.yaml"
RUN_LOG = "run.log"
LOCK_FILE = ".lock"

#: Files of the run directory that belong to the runner, not to a stage.
BOOKKEEPING = frozenset({RUN_MANIFEST, RUN_PARAMS, RUN_LOG, LOCK_FILE, RUN_MANIFEST + ".tmp"})


class PipelineError(RuntimeError):
    """A problem the user can fix before anything runs (the message says how)."""


class RunLocked(PipelineError):
    """Another process is writing into the run directory."""


class StaleInputs(PipelineError):
    """A stage would read files that were not made from the run's current parameters."""


class RunInterrupted(PipelineError):
    """The run was interrupted (Ctrl-C); the message says how to resume it."""


# --- errors of the file system ------------------------------------------------------------------


def os_problem(error: OSError, path: str | Path | None = None, doing: str = "write") -> PipelineError:
    """One clear message for an OS error: what, which path, and what to do about it."""
    where = path if path is not None else (error.filename or "the run directory")
    reason = error.strerror or str(error)
    advice = {
        errno.ENOSPC: "the disk is full: free some space, or choose another --output-root",
        errno.EDQUOT: "the disk quota is exceeded: free some space, or choose another --output-root",
        errno.EROFS: "the file system is read-only: choose another --output-root",
        errno.EACCES: "permission denied: choose a folder you can write to with --output-root",
        errno.EPERM: "permission denied: choose a folder you can write to with --output-root",
    }.get(error.errno, "check the path and the disk, or choose another --output-root")
    return PipelineError(f"cannot {doing} {where}: {reason}; {advice}")


def find_os_error(error: BaseException) -> OSError | None:
    """The OSError behind ``error`` (itself, or somewhere in its cause/context chain)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno is not None:
            return error
        error = error.__cause__ or error.__context__
    return None


# --- the lock -----------------------------------------------------------------------------------


class RunLock:
    """An exclusive, non-blocking lock on a run directory (``<run>/.lock``)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise os_problem(error, self.directory, "create the run directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLocked(
                f"another hybridhydro run{holder} is writing into {self.directory}; nothing was run. "
                f"Wait for it to end (or stop it), or choose another case name or --output-root"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "since": now()}).encode())
        except OSError:
            pass  # the lock holds even when its note cannot be written
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f" (pid {info['pid']} on {info['host']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


# --- hashes -------------------------------------------------------------------------------------


#: Sections of ``basin`` that build a basin (``synthetic``, ``known_answer``): each shapes the
#: results only when ``basin.source`` names it.
BASIN_GENERATORS = ("synthetic", "known_answer")

#: Keys of ``basin`` left out of the hash while null (their default, today's behaviour): a run
#: made before they existed stays current.
HASH_NEUTRAL_WHEN_NULL = ("spinup_start", "initial_states")


def params_hash(params) -> str:
    """sha256 of the parameters that shape the results: all but ``stages``, and but the
    settings of a basin generator the source does not use (a run of Lez does not go stale
    when the synthetic basin's settings change, or when a new generator is added)."""
    data = params.model_dump(mode="json")
    data.pop("stages", None)
    basin = data.get("basin") or {}
    for generator in BASIN_GENERATORS:
        if str(basin.get("source", "")).lower() != generator:
            basin.pop(generator, None)
    # stage 00's section, at its defaults, hashes as before it existed (a run made earlier stays current)
    from ..newbasin import NewBasinParams

    if data.get("new_basin") == NewBasinParams().model_dump(mode="json"):
        data.pop("new_basin", None)
    for key in HASH_NEUTRAL_WHEN_NULL:  # keys added later: null (their default) hashes as before they existed
        if basin.get(key) is None:
            basin.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file of the run (relative path -> (mtime_ns, size)), the runner's own files apart."""
    files = {}
    for path in directory.rglob("*"):
        rel = path.relative_to(directory).as_posix()
        if rel in BOOKKEEPING or not path.is_file():
            continue
        stat = path.stat()
        files[rel] = (stat.st_mtime_ns, stat.st_size)
    return files


def written_since(directory: Path, before: Mapping[str, tuple[int, int]]) -> dict[str, str]:
    """The files created or changed since ``before`` (:func:`snapshot`), with their sha256."""
    after = snapshot(directory)
    return {rel: file_sha256(directory / rel) for rel, stamp in sorted(after.items()) if before.get(rel) != stamp}


def fingerprint(records: Iterable[Mapping[str, Any]]) -> str:
    """sha256 of stage records (their parameters and files): what a later stage was made from."""
    parts = [{"params_sha256": r.get("params_sha256"), "outputs": r.get("outputs", {})} for r in records]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


# --- run.json -----------------------------------------------------------------------------------


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The run's ``run.json`` (None when there is none; an unreadable one counts as none)."""
    path = Path(directory) / RUN_MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    """Write ``run.json`` atomically (:func:`write_json`)."""
    write_json(Path(directory) / RUN_MANIFEST, manifest)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically: ``<name>.tmp`` beside it, then a rename, so a
    reader never meets half a file. An OS error is one message naming the path (:func:`os_problem`)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    except OSError as error:
        raise os_problem(error, path) from None


def code_version() -> str:
    """hybridhydro's version and, in a git checkout, its commit (``+dirty`` when the library or
    the notebooks have uncommitted changes): what a stage record and a study's record name."""
    import subprocess

    from .. import __version__

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return __version__
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                "hybridhydro", "notebooks"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__} ({commit}{'+dirty' if dirty else ''})" if commit else __version__


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stage_problems(directory: Path, manifest: Mapping[str, Any] | None, plan: Sequence[str], current: str) -> dict[str, str]:
    """For each stage of ``plan`` (pipeline order): why it is not current ("" when it is).

    A stage is current when its record says ``done`` with the ``current`` parameters hash, the
    stages before it in ``plan`` are current and have not changed since it ran, and its files
    are on disk with their recorded hashes (or were rewritten by a later stage).
    """
    stages = dict((manifest or {}).get("stages") or {})
    latest_writer: dict[str, str] = {}
    for stage in plan:  # a file belongs to the last stage that wrote it
        record = stages.get(stage) or {}
        if record.get("status") == "done":
            latest_writer.update(dict.fromkeys(record.get("outputs", {}), stage))
    problems: dict[str, str] = {}
    for i, stage in enumerate(plan):
        record = stages.get(stage)
        earlier = plan[:i]
        broken = [s for s in earlier if problems.get(s)]
        if record is None:
            problems[stage] = "it has not run in this directory"
        elif record.get("status") != "done":
            status = record.get("status")
            if status == "running":
                status = "interrupted (its process ended while it ran)"
            cause = f": {record['cause']}" if record.get("cause") else ""
            problems[stage] = f"it {status}{cause}"
        elif record.get("params_sha256") != current:
            problems[stage] = "it ran with other parameters"
        elif broken:
            problems[stage] = f"an earlier stage ({broken[0]}) is not current"
        elif record.get("inputs_sha256") != fingerprint(stages[s] for s in earlier):
            problems[stage] = "an earlier stage ran again after it"
        else:
            problems[stage] = ""
            for rel, digest in sorted(record.get("outputs", {}).items()):
                if latest_writer.get(rel) != stage:
                    continue
                path = Path(directory) / rel
                if not path.is_file():
                    problems[stage] = f"its file {rel} is missing"
                    break
                if file_sha256(path) != digest:
                    problems[stage] = f"its file {rel} was changed after it ran"
                    break
    return problems
