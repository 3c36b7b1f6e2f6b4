"""Batch reruns: many cases at once, each case's notebook chain one task on Dask distributed.

A batch is a list of parameter files, a grid of values (``--set KEY=V1,V2``, several of them
make the cartesian product) and a list of seeds (``--seeds 0-4``, the top-level ``seed`` key).
:func:`expand` turns them into :class:`BatchCase` s, each validated and named before anything
runs; :func:`run_batch` runs every case that has not finished yet through
:func:`hybridhydro.pipeline.runner.run` (``resume=True``), one Dask task per case, on an embedded
``LocalCluster`` or on the scheduler the user names; :func:`write_summary` gathers every run's
``comparison_scores.csv`` into ``summary.csv`` and the median and interquartile range across
seeds into ``summary.md``.

Layout of ``<output-root>/<batch>/``::

    batch.json          the expanded cases, their status, durations, attempts
    summary.csv         every score of every run, with the grid values and the seed as columns
    summary_stats.csv   median, q25, q75, IQR across seeds (long format)
    summary.md          the same as tables, one per metric and grid point
    <case>/             the run directory, as ``python -m hybridhydro run`` makes it, plus
      run.log           what the runner printed for that case, and its error (every attempt)

A case that fails does not stop the others. A worker that dies (killed, out of memory) has its
case sent to another worker by the scheduler (``distributed.scheduler.allowed-failures``); the
dead process's lock on the run directory goes with it, and the resumed run continues from its
first unfinished stage. Rerunning the same batch skips the cases that finished.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import itertools
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from . import runner
from .params import MAPPING_SOURCE, Params, ParamsError, load_params
from .record import RUN_LOG, write_json

__all__ = [
    "BatchCase",
    "BatchError",
    "BatchInterrupted",
    "BatchResult",
    "Setting",
    "default_name",
    "expand",
    "parse_seeds",
    "parse_set",
    "run_batch",
    "run_case",
    "summarize",
    "write_summary",
]

BATCH_MANIFEST = "batch.json"
SCORES_FILE = "comparison_scores.csv"  # written by stage 06 (hybridhydro.report.write_comparison)
#: Columns of a run's scores that identify a score (the rest are metrics).
SCORE_KEYS = ("model", "scenario", "gauge")
#: Keys a ``--set`` may not change: the batch names every case, and ``--seeds`` sets the seed.
RESERVED_KEYS = {"case": "the batch names every case itself (use --name for the batch)", "seed": "use --seeds",
                 "extends": "give another parameter file as a CASE instead"}
#: How many times a case is started again after the worker running it died (Dask's default is 3).
ALLOWED_FAILURES = 3
_CASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class BatchError(runner.PipelineError):
    """A batch request the user can fix; nothing ran (the message says what, where and how)."""


def refusal_message(problems: Sequence[str], ncases: int, shown: int = 10) -> str:
    """The message of a batch refused by :func:`preflight`: the first problems, and how many more."""
    more = f"\n  ... and {len(problems) - shown} more" if len(problems) > shown else ""
    return (f"{len(problems)} problem(s) in the {ncases} case(s); nothing was run or written (fix them, or drop "
            "those cases, and run the command again):\n  - " + "\n  - ".join(problems[:shown]) + more)


class BatchInterrupted(runner.PipelineError):
    """The batch was interrupted (Ctrl-C); rerunning the same command continues it."""


# --- the request: --set and --seeds -------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One ``--set KEY=V1,V2``: a dotted key into the parameters and the values it takes."""

    key: str
    values: tuple[Any, ...]
    text: str  # as the user typed it, for error messages

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))


def parse_set(text: str) -> Setting:
    """``"calibration.optimizers.distributed.maxiter=3,5"`` -> the key and ``(3, 5)``.

    Values are YAML scalars (``3`` an int, ``0.01`` a float, ``null``, ``true``, ``gr4-lr`` a
    string), or YAML flow lists (``[8,8]``); commas inside brackets or quotes do not split.
    """
    key, sep, rest = text.partition("=")
    key = key.strip()
    where = f"--set {text!r}"
    if not sep or not key:
        raise BatchError(f"{where}: expected KEY=VALUE[,VALUE...], e.g. --set calibration.optimizers.distributed.maxiter=3,5")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
        raise BatchError(f"{where}: {key!r} is not a dotted key (write section.key, e.g. hybrid.weight_scale)")
    if key.split(".")[0] in RESERVED_KEYS:
        raise BatchError(f"{where}: {key!r} cannot be set per case: {RESERVED_KEYS[key.split('.')[0]]}")
    pieces = _split_values(rest)
    if not pieces or any(not p.strip() for p in pieces):
        raise BatchError(f"{where}: a value is empty; give VALUE[,VALUE...] after '=' (write null for None)")
    values = []
    for piece in pieces:
        try:
            values.append(yaml.safe_load(piece))
        except yaml.YAMLError as error:
            problem = str(error).splitlines()[0]
            raise BatchError(f"{where}: {piece!r} is not a YAML value ({problem}); quote it if it is a string") from None
    if isinstance(values[0], Mapping) or any(isinstance(v, Mapping) for v in values):
        raise BatchError(f"{where}: set one key at a time (a mapping value is not supported); use the dotted key")
    texts = [_value_text(v) for v in values]
    repeated = sorted({t for t in texts if texts.count(t) > 1})
    if repeated:
        raise BatchError(f"{where}: the value(s) {', '.join(repeated)} appear twice; give each value once")
    return Setting(key, tuple(values), text)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0-4"`` -> (0, 1, 2, 3, 4); ``"0,3,7"``; ``"0-2,10"``. Seeds are whole numbers >= 0."""
    seeds: list[int] = []
    for piece in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", piece)
        if not match:
            raise BatchError(f"--seeds {text!r}: {piece!r} is not a seed or a range; write e.g. 0-4 or 0,3,7")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise BatchError(f"--seeds {text!r}: the range {piece!r} is empty; write the smaller seed first ({last}-{first})")
        seeds.extend(range(first, last + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise BatchError(f"--seeds {text!r}: seed(s) {', '.join(map(str, repeated))} appear twice; give each seed once")
    return tuple(seeds)


def _split_values(text: str) -> list[str]:
    """Split on the commas that are outside brackets and quotes."""
    pieces, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return pieces


# --- expansion: cases, names, validation --------------------------------------------------------


@dataclass(frozen=True)
class BatchCase:
    """One run of a batch: validated parameters, and where they came from."""

    name: str  # the run's case name, unique in the batch; the run directory is <batch>/<name>
    params: Params
    source: str  # the parameter file (or the base case's name when built in code)
    base_case: str  # the ``case`` of that file
    grid: tuple[tuple[str, Any], ...] = ()  # (dotted key, value) of each --set
    seed: int | None = None  # the ``seed`` the case runs with


def expand(
    cases: Sequence[str | Path | Params],
    sets: Sequence[str | Setting] = (),
    seeds: str | Sequence[int] | None = None,
    *,
    stages: Sequence[str] | None = None,
    notebooks_dir: str | Path = runner.NOTEBOOKS_DIR,
) -> list[BatchCase]:
    """Every case of a batch: each parameter file x the grid of ``sets`` x ``seeds``, validated.

    Parameters
    ----------
    cases
        Parameter files (``params/ci.yaml``) or :class:`Params`.
    sets
        ``KEY=V1,V2`` texts (or :class:`Setting`); several make a grid (cartesian product).
    seeds
        ``"0-4"``, ``"0,3,7"`` or a sequence of ints: the top-level ``seed`` key; None keeps
        each file's own seed.
    stages, notebooks_dir
        As for :func:`runner.run`: checked here, so that a wrong stage fails before anything runs.

    Returns
    -------
    list of BatchCase
        In order: file, then grid (the first ``--set`` varies slowest), then seed. Names are
        ``<case>[_<key>-<value>...][_seed-<n>]``, where ``<key>`` is the shortest tail of the
        dotted key that tells the ``--set`` apart.

    Raises
    ------
    BatchError
        A ``--set`` or a seed is malformed, or makes invalid parameters (the message names the
        ``--set`` and the file), or two cases would get the same name.
    ParamsError
        A parameter file is invalid (the message names the file and the key).
    """
    if not cases:
        raise BatchError("no case given; name one or more parameter files, e.g. params/ci.yaml")
    settings = [s if isinstance(s, Setting) else parse_set(s) for s in sets]
    keys = [s.key for s in settings]
    for key in keys:
        if keys.count(key) > 1:
            raise BatchError(f"--set {key}=... is given twice; give all its values in one --set ({key}=V1,V2)")
    seed_list = parse_seeds(seeds) if isinstance(seeds, str) else None if seeds is None else tuple(int(s) for s in seeds)
    if seed_list is not None and not seed_list:
        raise BatchError("--seeds names no seed; write e.g. 0-4 or 0,3,7")
    labels = _key_labels(keys)
    out: list[BatchCase] = []
    for case in cases:
        base = load_params(case)
        source = str(base.params_file) if base.params_file else base.case
        data = base.model_dump(mode="json")
        _check_each_setting(data, settings, source)
        for values in itertools.product(*(s.values for s in settings)):
            grid = tuple(zip(keys, values))
            for seed in seed_list if seed_list is not None else (None,):
                name = _case_name(base.case, [(labels[k], v) for k, v in grid], seed)
                point = _override(data, settings, values, source)
                if seed is not None:
                    point["seed"] = seed
                point["case"] = name
                if stages is not None:  # the batch's stages are each case's plan: a case is finished when they are
                    point["stages"] = runner.select_stages(runner.discover_stages(notebooks_dir), stages,
                                                           where="--stages")
                where = ", ".join([*(f"--set {k}={_value_text(v)}" for k, v in grid),
                                   *([f"seed {seed}"] if seed is not None else [])])
                params = _validate(point, where or "the case", source)
                runner.stages_to_run(params, stages, notebooks_dir)
                out.append(BatchCase(name, params, source, base.case, grid, params.seed))
    _check_unique(out)
    return out


def default_name(cases: Sequence[BatchCase]) -> str:
    """``batch-<case>`` (``batch-ci``; ``batch-cance_lez`` for several files): apart from the
    single runs, which go to ``<output-root>/<case>``."""
    return "batch-" + "_".join(dict.fromkeys(c.base_case for c in cases))


def _check_each_setting(data: dict[str, Any], settings: list[Setting], source: str) -> None:
    """Validate each ``--set`` value alone over the case, so that an error names the one that caused it."""
    for setting in settings:
        for value in setting.values:
            where = f"--set {setting.key}={_value_text(value)}"
            point = copy.deepcopy(data)
            _assign(point, setting, value, source)
            _validate(point, where, source)


def _override(data: dict[str, Any], settings: list[Setting], values: Sequence[Any], source: str) -> dict[str, Any]:
    point = copy.deepcopy(data)
    for setting, value in zip(settings, values):
        _assign(point, setting, value, source)
    return point


def _assign(data: dict[str, Any], setting: Setting, value: Any, source: str) -> None:
    """Set ``setting.key`` (dotted) to ``value`` in the nested mapping ``data``."""
    node = data
    for depth, part in enumerate(setting.parts[:-1]):
        child = node.setdefault(part, {})  # a missing key: a new entry of a mapping (optimizers) or a typo
        if not isinstance(child, dict):
            here = ".".join(setting.parts[: depth + 1])
            raise BatchError(
                f"--set {setting.text!r} ({source}): {here} is a value ({_value_text(child)}), not a section with keys; "
                f"set it whole: --set {here}=..."
            )
        node = child
    node[setting.parts[-1]] = copy.deepcopy(value)


def _validate(point: dict[str, Any], where: str, source: str) -> Params:
    try:
        return load_params(point)
    except ParamsError as error:
        lines = str(error).splitlines()
        if lines and lines[0].startswith("invalid parameters ("):  # it names the mapping, not the file
            lines = lines[1:]
        message = "\n".join(line.replace(f"{MAPPING_SOURCE}: ", "") for line in lines)
        raise BatchError(f"{where} does not apply to {source}:\n{message}") from None


def _key_labels(keys: Sequence[str]) -> dict[str, str]:
    """The shortest tail of each dotted key that differs from the others' (``maxiter``, or
    ``distributed.maxiter`` beside ``ann.maxiter``)."""
    labels = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if all(other == key or not (other == tail or other.endswith("." + tail)) for other in keys):
                break
        labels[key] = tail
    return labels


def _value_text(value: Any) -> str:
    """A value as YAML flow text (``3``, ``0.01``, ``null``, ``[8, 8]``, ``gr4-lr``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def _case_name(base: str, labelled: Sequence[tuple[str, Any]], seed: int | None) -> str:
    parts = [base]
    for label, value in labelled:
        text = re.sub(r"[^A-Za-z0-9_.\-]+", "-", _value_text(value)).strip("-") or "empty"
        parts.append(f"{label}-{text}")
    if seed is not None:
        parts.append(f"seed-{seed}")
    name = "_".join(parts)
    assert _CASE_NAME.match(name), name  # the base is a valid case name and the rest is sanitised
    return name


def _check_unique(cases: list[BatchCase]) -> None:
    seen: dict[str, BatchCase] = {}
    for case in cases:
        if case.name in seen:
            other = seen[case.name]
            same_file = other.source == case.source
            raise BatchError(
                f"two cases of the batch would both be named {case.name!r} "
                f"({other.source} {dict(other.grid) or ''} and {case.source} {dict(case.grid) or ''}); "
                + ("give each value once, with values that differ in letters or digits"
                   if same_file else "give the parameter files different `case:` names, or list each file once")
            )
        seen[case.name] = case


# --- running on Dask ----------------------------------------------------------------------------


@dataclass
class BatchResult:
    """A batch that ran (to the end or not): its directory and one record per case."""

    directory: Path
    cases: list[dict[str, Any]]
    summary_md: str = ""

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.cases if c["status"] not in ("done", "skipped")]

    def message(self) -> str:
        """One paragraph: how many cases failed, and where their logs are (empty when none did)."""
        if not self.failed:
            return ""
        lines = [f"{len(self.failed)} of {len(self.cases)} cases did not finish (batch {self.directory}):"]
        lines += [f"  {c['name']}: {c['status']}: {_first_line(c.get('error'))} (log: {c['log']})" for c in self.failed]
        lines.append("Fix the cause, then rerun the same command: finished cases are skipped, the others resume.")
        return "\n".join(lines)


def preflight(cases: Sequence[BatchCase], stages: Sequence[str] | None = None,
              notebooks_dir: str | Path = runner.NOTEBOOKS_DIR) -> list[str]:
    """What every case's basin cannot serve, before any case runs: the checks ``run`` makes
    before its first stage (hydro-smash's data installed where asked for; the basin's metadata
    against the models and the split, :func:`hybridhydro.pipeline.checks.case_problems`), for
    all the cases at once, so that a case that would fail an hour into a batch is refused
    before the first starts. One line per problem, naming the case; empty: every case can run.
    A basin's metadata is read once for all the cases that share it.
    """
    import json

    from .checks import basin_metadata, case_problems, touches_models

    problems: list[str] = []
    metadata: dict[str, Any] = {}
    for case in cases:
        try:
            runner.check_basin_available(case.params)
            selected = runner.stages_to_run(case.params, stages, Path(notebooks_dir))
            found = []
            if touches_models(selected):
                key = json.dumps(case.params.basin.model_dump(mode="json"), sort_keys=True, default=str)
                if key not in metadata:
                    metadata[key] = basin_metadata(case.params)
                found = case_problems(case.params, metadata[key], stages=selected)
        except (runner.PipelineError, ParamsError, ValueError, OSError) as err:
            found = [str(err)]
        problems += [f"{case.name}: {p.removeprefix(f'case {case.params.case!r}: ')}" for p in found]
    return problems


def run_batch(
    cases: Sequence[BatchCase],
    *,
    name: str,
    output_root: str | Path = "runs",
    jobs: int | None = None,
    scheduler: str | None = None,
    stages: Sequence[str] | None = None,
    notebooks_dir: str | Path = runner.NOTEBOOKS_DIR,
    dashboard_address: str = ":8787",
    allowed_failures: int = ALLOWED_FAILURES,
    command: str = "",
    echo: Callable[[str], None] = print,
    on_done: Callable[[BatchCase], None] | None = None,
) -> BatchResult:
    """Run every unfinished case of ``cases``, one Dask task each; write ``batch.json`` and the summary.

    Parameters
    ----------
    cases
        From :func:`expand`.
    name
        The batch: its directory is ``<output_root>/<name>``.
    jobs
        Workers of the embedded ``LocalCluster`` (one thread each: a case runs its own kernel);
        default: as many as cases, at most the CPU count. Not with ``scheduler``.
    scheduler
        Address of a running Dask scheduler (``tcp://host:8786``); its workers must import
        hybridhydro and see ``output_root`` and ``notebooks_dir`` at the same paths.
    dashboard_address
        Where the embedded cluster serves its dashboard (``":0"``: any free port).
    allowed_failures
        How many times the embedded scheduler starts a case again after its worker died.
    command
        The command line, recorded in ``batch.json``.
    echo
        Where progress lines go.
    on_done
        Called with each case as soon as it finishes (the study keeps its records so); an
        error it raises is reported and does not stop the batch.

    Raises
    ------
    BatchError
        The batch directory holds something else, or another process runs this batch, or the
        scheduler cannot be reached.
    BatchInterrupted
        Ctrl-C: the unfinished cases are recorded as interrupted; rerunning continues them.
    """
    if not _CASE_NAME.match(name):
        raise BatchError(f"--name {name!r}: a batch name is letters, digits, '_', '.', '-' "
                         "(not starting with one of the last three)")
    if jobs is not None and scheduler is not None:
        raise BatchError("--jobs sizes the local cluster; with --scheduler the cluster's own workers run the cases: drop --jobs")
    if jobs is not None and jobs < 1:
        raise BatchError(f"--jobs {jobs}: give at least 1 worker")
    notebooks_dir = Path(notebooks_dir).resolve()
    directory = Path(output_root).resolve() / name
    _check_directory(directory)
    refused = preflight(cases, stages, notebooks_dir)
    if refused:
        raise BatchError(refusal_message(refused, len(cases)))
    directory.mkdir(parents=True, exist_ok=True)
    with _batch_lock(directory):
        records = [_record(case, directory) for case in cases]
        manifest = {"name": name, "directory": str(directory), "command": command, "started": _now(), "finished": None,
                    "scheduler": scheduler or "local", "dashboard": None, "cases": records}
        for case, record in zip(cases, records):
            if runner.run_status(case.params, output_root=directory, stages=stages, notebooks_dir=notebooks_dir) == "finished":
                record.update(status="skipped", note="finished earlier with these parameters")
        write_json(directory / BATCH_MANIFEST, manifest)
        todo = [(c, r) for c, r in zip(cases, records) if r["status"] != "skipped"]
        echo(f"batch {name}: {len(cases)} case(s), {len(cases) - len(todo)} finished earlier (skipped), "
             f"{len(todo)} to run -> {directory}")
        for record in records:
            if record["status"] == "skipped":
                echo(f"  {record['name']}: finished earlier, skipped")
        try:
            if todo:
                jobs = jobs or max(1, min(len(todo), os.cpu_count() or 1))
                _run_on_dask(todo, manifest, directory, jobs=jobs, scheduler=scheduler, stages=stages,
                             notebooks_dir=notebooks_dir, dashboard_address=dashboard_address,
                             allowed_failures=allowed_failures, echo=echo, on_done=on_done)
        except KeyboardInterrupt:
            for record in records:
                if record["status"] in ("pending", "submitted"):
                    record["status"] = "interrupted"
            manifest["finished"] = _now()
            write_json(directory / BATCH_MANIFEST, manifest)
            raise BatchInterrupted(
                f"batch {name} interrupted; rerun the same command to continue it (finished cases are skipped, "
                f"the others resume from their first unfinished stage)"
            ) from None
        manifest["finished"] = _now()
        summary = write_summary(directory, cases, records)
        manifest["summary"] = {"csv": str(directory / "summary.csv"), "md": str(directory / "summary.md")}
        write_json(directory / BATCH_MANIFEST, manifest)
    return BatchResult(directory, records, summary)


def _run_on_dask(todo, manifest, directory: Path, *, jobs, scheduler, stages, notebooks_dir, dashboard_address,
                 allowed_failures, echo, on_done=None) -> None:
    from distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    token = f"{os.getpid()}-{time.time_ns()}"  # tells this invocation's attempts apart in the logs
    with _client(jobs, scheduler, dashboard_address, allowed_failures, (notebooks_dir, directory)) as (client, where):
        manifest["dashboard"] = client.dashboard_link
        echo(f"running on {where}; dashboard: {client.dashboard_link}{_dashboard_note(scheduler)}")
        futures, case_of = {}, {}
        for case, record in todo:
            spec = {"name": case.name, "params": case.params.model_dump(mode="json"), "output_root": str(directory),
                    "stages": None if stages is None else list(stages), "notebooks_dir": str(notebooks_dir),
                    "log": record["log"], "token": token}
            future = client.submit(run_case, spec, key=f"hybridhydro-case-{case.name}-{token}", pure=False)
            futures[future] = record
            case_of[record["name"]] = case
            record.update(status="submitted", started=_now())
        write_json(directory / BATCH_MANIFEST, manifest)
        for done, future in enumerate(as_completed(list(futures)), start=1):
            record = futures[future]
            try:
                record.update(future.result())
            except FutureCancelledError:
                record.update(status="failed", error="the task was cancelled by the scheduler")
            except Exception as error:  # noqa: BLE001  (KilledWorker, a worker that cannot import hybridhydro, ...)
                reason = f"{type(error).__name__}: {error}"
                if isinstance(error, KilledWorker):
                    times = f"{allowed_failures + 1} times" if scheduler is None else \
                        "more often than the scheduler allows (distributed.scheduler.allowed-failures)"
                    reason = (f"the worker running this case died {times} (killed, or out of memory); "
                              f"the last stage it was in is recorded in {Path(record['run_dir']) / runner.RUN_MANIFEST}")
                record.update(status="failed", error=reason)
                _append_log(Path(record["log"]), f"error: {reason}\n")
            record["attempts"] = _attempts(Path(record["log"]), token)
            record["finished"] = _now()
            write_json(directory / BATCH_MANIFEST, manifest)
            retried = f", {record['attempts']} attempts" if record["attempts"] > 1 else ""
            if record["status"] == "done":
                echo(f"[{done}/{len(futures)}] {record['name']}: done in {record.get('seconds', 0):.1f} s{retried}")
                if on_done is not None:
                    try:
                        on_done(case_of[record["name"]])
                    except Exception as error:  # noqa: BLE001  (the batch goes on; the study records it again later)
                        echo(f"  {record['name']}: could not keep its record ({type(error).__name__}: {error}); "
                             "`--tables-only` keeps it later")
            else:
                echo(f"[{done}/{len(futures)}] {record['name']}: {record['status']}{retried}: "
                     f"{_first_line(record.get('error'))} (log: {record['log']})")


@contextlib.contextmanager
def _client(jobs: int, scheduler: str | None, dashboard_address: str, allowed_failures: int,
            paths: Sequence[Path] = ()) -> Iterator[tuple[Any, str]]:
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as error:
            raise BatchError(
                f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({error}); start one with "
                f"`dask scheduler` and workers with `dask worker {scheduler} --nthreads 1`, or drop --scheduler"
            ) from None
        with client:
            nworkers = _check_workers(client, scheduler, paths)
            where = f"the scheduler at {scheduler} ({nworkers} worker(s))"
            if not nworkers:
                where += f"; it has no worker yet: the cases wait until one joins (`dask worker {scheduler} --nthreads 1`)"
            yield client, where
        return
    # One thread per worker: a case drives its own kernel, and JAX in that kernel uses the cores.
    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=dashboard_address)
    with cluster, Client(cluster) as client:
        yield client, f"a local cluster of {jobs} worker process(es)"


def _check_workers(client, scheduler: str, paths: Sequence[Path]) -> int:
    """The number of workers, once each has shown that it imports hybridhydro and sees ``paths``."""
    try:
        seen = client.run(_missing_paths, [str(p) for p in paths])
    except Exception as error:  # noqa: BLE001  (a worker that cannot import hybridhydro, or died meanwhile)
        raise BatchError(f"--scheduler {scheduler}: a worker could not check its set-up ({type(error).__name__}: {error}); "
                         "the workers need hybridhydro installed, as here") from None
    blind = {worker: missing for worker, missing in seen.items() if missing}
    if blind:
        worker, missing = next(iter(blind.items()))
        raise BatchError(f"--scheduler {scheduler}: {len(blind)} worker(s) do not see {', '.join(missing)} (e.g. {worker}); "
                         "the workers must share the file system at the same paths (or run the batch from a shared "
                         "folder with --output-root and --notebooks there)")
    return len(seen)


def _missing_paths(paths: Sequence[str]) -> list[str]:
    """On a worker: which of ``paths`` it does not see as directories."""
    return [p for p in paths if not os.path.isdir(p)]


def _dashboard_note(scheduler: str | None) -> str:
    import importlib.util

    if scheduler is None and importlib.util.find_spec("bokeh") is None:
        return " (its pages need bokeh: pip install 'bokeh>=3.1')"
    return ""


# --- on the worker ------------------------------------------------------------------------------


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one case on a worker (``runner.run(resume=True, progress=False)``); its output goes to its log.

    Returns the outcome (``status`` done or failed, ``seconds``, ``error``, ``worker``); every
    error is caught and recorded, so that a failed case does not stop the others.
    """
    log = Path(spec["log"])
    log.parent.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    worker = _worker_address()
    outcome: dict[str, Any] = {"worker": worker, "error": None}
    with open(log, "a", buffering=1) as stream, _capture(stream):
        print(f"== {_now()} attempt {spec['token']} of case {spec['name']} on worker {worker} (pid {os.getpid()})")
        try:
            params = load_params(spec["params"])
            result = runner.run(params, output_root=spec["output_root"], stages=spec["stages"], resume=True,
                                notebooks_dir=spec["notebooks_dir"], progress=False)
            print(result.summary())
            outcome["status"] = "done"
        except (runner.PipelineError, ParamsError) as error:  # a stage failed, the run is locked, ...
            print(f"error: {error}")
            outcome.update(status="failed", error=str(error))
        except BaseException as error:  # noqa: BLE001  (anything else: record it with its traceback)
            traceback.print_exc()
            outcome.update(status="failed", error=f"{type(error).__name__}: {error}")
            if not isinstance(error, Exception):
                raise
        outcome["seconds"] = round(time.perf_counter() - tic, 2)
        print(f"== {_now()} {outcome['status']} after {outcome['seconds']} s")
    return outcome


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "no worker (called directly)"


class _ThreadStream:
    """``sys.stdout``/``sys.stderr`` for a worker: each thread's writes go where that thread asked
    (its case's log), the others' to the original stream. A worker may run several cases at once
    in threads, and ``contextlib.redirect_stdout`` would mix their logs."""

    def __init__(self, original):
        self.original = original
        self._local = threading.local()

    def _target(self):
        return getattr(self._local, "stream", None) or self.original

    def write(self, text):
        return self._target().write(text)

    def flush(self):
        self._target().flush()

    def isatty(self):
        return self._target().isatty()

    def __getattr__(self, name):  # encoding, fileno, ...: the original stream's
        return getattr(self.original, name)


_INSTALL = threading.Lock()


@contextlib.contextmanager
def _capture(stream) -> Iterator[None]:
    """This thread's stdout, stderr and log records (warnings and above) go to ``stream``."""
    with _INSTALL:
        for attr in ("stdout", "stderr"):
            if not isinstance(getattr(sys, attr), _ThreadStream):
                setattr(sys, attr, _ThreadStream(getattr(sys, attr)))
    routers = [sys.stdout, sys.stderr]
    for router in routers:
        router._local.stream = stream
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    thread = threading.get_ident()
    handler.addFilter(lambda record: record.thread == thread)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        for router in routers:
            router._local.stream = None


# --- summary ------------------------------------------------------------------------------------


def collect_scores(directory: Path, cases: Sequence[BatchCase], records: Sequence[Mapping[str, Any]],
                   filename: str = SCORES_FILE):
    """Every run's scores (``filename``: stage 06's ``comparison_scores.csv`` by default, or
    another table a stage writes per run) with the case, the base case, the grid values and the
    seed as columns; and the cases without that file, each with why."""
    import pandas as pd

    frames, missing = [], []
    for case, record in zip(cases, records):
        path = directory / case.name / filename
        if record["status"] not in ("done", "skipped"):
            missing.append((case.name, f"{record['status']}; log: {record.get('log', '')}"))
        elif not path.is_file():
            missing.append((case.name, f"{record['status']}, but no {filename} (was the stage that writes it selected?)"))
        else:
            scores = pd.read_csv(path, dtype={"gauge": str})
            front = {"case": case.name, "base_case": case.base_case,
                     **{key: _value_text(value) if isinstance(value, list | dict) else value for key, value in case.grid},
                     "seed": case.seed}
            frames.append(pd.concat([pd.DataFrame({k: [v] * len(scores) for k, v in front.items()}), scores], axis=1))
    columns = ["case", "base_case", *(k for k, _ in cases[0].grid), "seed",
               *(SCORE_KEYS if filename == SCORES_FILE else ())] if cases else []
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return table, missing


def summarize(scores, by: Sequence[str]):
    """Median, quartiles and IQR (q75 - q25) across seeds, of every metric.

    Parameters
    ----------
    scores : pandas.DataFrame
        One row per score: the ``by`` columns, ``seed``, ``model``, ``scenario``, ``gauge`` and
        one column per metric (what :func:`collect_scores` returns).
    by
        The columns of a grid point (the base case and the ``--set`` keys).

    Returns
    -------
    pandas.DataFrame
        One row per grid point x model x scenario x gauge x metric, in the order they first
        appear: ``n`` (seeds with a value), ``median``, ``q25``, ``q75``, ``iqr``. Quantiles
        interpolate linearly (numpy's default); NaN scores are left out of ``n``.
    """
    import pandas as pd

    ident = {"case", "seed", *by, *SCORE_KEYS}
    metrics = [c for c in scores.columns if c not in ident]
    keys = [*by, *SCORE_KEYS]
    long = scores.melt(id_vars=keys, value_vars=metrics, var_name="metric", value_name="value")
    groups = long.groupby([*keys, "metric"], sort=False, dropna=False)["value"]
    stats = pd.DataFrame({"n": groups.count(), "median": groups.median(), "q25": groups.quantile(0.25),
                          "q75": groups.quantile(0.75)})
    stats["iqr"] = stats["q75"] - stats["q25"]
    return stats.reset_index()


def write_summary(directory: Path, cases: Sequence[BatchCase], records: Sequence[Mapping[str, Any]]) -> str:
    """Write ``summary.csv``, ``summary_stats.csv`` and ``summary.md`` into the batch directory; return the markdown."""
    scores, missing = collect_scores(directory, cases, records)
    scores.to_csv(directory / "summary.csv", index=False)
    by = ["base_case", *(k for k, _ in cases[0].grid)] if cases else ["base_case"]
    stats = summarize(scores, by) if len(scores) else None
    if stats is not None:
        stats.to_csv(directory / "summary_stats.csv", index=False)
    text = _summary_markdown(directory.name, stats, by, missing, len(cases))
    (directory / "summary.md").write_text(text)
    return text


def _summary_markdown(name: str, stats, by: Sequence[str], missing, ncases: int) -> str:
    lines = [f"# Batch {name}", ""]
    if stats is None:
        lines += ["No case has scores yet.", ""]
    else:
        seeds = int(stats["n"].max())
        lines += [f"Median [IQR = q75 - q25] across seeds ({seeds} seed(s) where no count is shown; "
                  "`n=` marks a cell with fewer), quantiles interpolated linearly.", ""]
        for metric in dict.fromkeys(stats["metric"]):
            lines += [f"## {metric}", ""]
            part = stats[stats["metric"] == metric]
            for point, table in part.groupby(list(by), sort=False, dropna=False):
                point = point if isinstance(point, tuple) else (point,)
                title = ", ".join([str(point[0]), *(f"{k}={v}" for k, v in zip(by[1:], point[1:]))])
                lines += [f"### {title}", ""]
                lines += _wide_table(table, seeds)
                lines.append("")
    if missing:
        lines += [f"## Cases without scores ({len(missing)} of {ncases})", ""]
        lines += [f"- {case}: {why}" for case, why in missing]
        lines.append("")
    return "\n".join(lines)


def _wide_table(table, seeds: int) -> list[str]:
    """Rows: models; columns: ``scenario gauge``; cells: ``median [IQR]``."""
    columns = list(dict.fromkeys(zip(table["scenario"], table["gauge"])))
    cells: dict[str, dict[tuple, str]] = {}
    for row in table.itertuples(index=False):
        text = "" if row.n == 0 else f"{row.median:.3f} [{row.iqr:.3f}]" + ("" if row.n == seeds else f" n={row.n}")
        cells.setdefault(row.model, {})[(row.scenario, row.gauge)] = text
    out = ["| model | " + " | ".join(f"{s} {g}" for s, g in columns) + " |", "|---|" + "---:|" * len(columns)]
    out += [f"| {model} | " + " | ".join(row.get(c, "") for c in columns) + " |" for model, row in cells.items()]
    return out


# --- helpers ------------------------------------------------------------------------------------


def _record(case: BatchCase, directory: Path) -> dict[str, Any]:
    return {"name": case.name, "params_file": case.source, "base_case": case.base_case,
            "grid": {k: v for k, v in case.grid}, "seed": case.seed, "run_dir": str(directory / case.name),
            "log": str(directory / case.name / RUN_LOG), "status": "pending", "seconds": None,
            "attempts": 0, "error": None}


def _check_directory(directory: Path) -> None:
    """A batch writes into an empty directory or into one of its own earlier runs, nothing else."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise BatchError(f"{directory} exists and is not a directory; choose another --name or --output-root")
    if any(directory.iterdir()) and not (directory / BATCH_MANIFEST).is_file():
        what = "a single run (run.json)" if (directory / runner.RUN_MANIFEST).is_file() else "files that are not a batch's"
        raise BatchError(f"{directory} holds {what}, not a batch ({BATCH_MANIFEST} is missing); "
                         "choose another --name or --output-root")


@contextlib.contextmanager
def _batch_lock(directory: Path) -> Iterator[None]:
    """One process at a time runs a batch (the runs themselves are locked by the runner too)."""
    with open(directory / ".batch.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise BatchError(f"batch {directory} is being run by another process ({handle.read().strip() or 'pid unknown'}); "
                             "wait for it to end, or choose another --name") from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} since {_now()}\n")
        handle.flush()
        yield


def _attempts(log: Path, token: str) -> int:
    try:
        return sum(f"attempt {token} " in line for line in log.read_text().splitlines())
    except OSError:
        return 0


def _append_log(log: Path, text: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as stream:
        stream.write(text)


def _first_line(text: str | None) -> str:
    """The first line of an error, with the next when it is indented (a failed stage's ``ename: evalue``)."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if len(lines) > 1 and lines[1].startswith(" "):
        return f"{lines[0].strip()}: {lines[1].strip()}"
    return lines[0].strip() if lines else ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
