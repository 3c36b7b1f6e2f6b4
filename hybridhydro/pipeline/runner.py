"""Run the notebooks of a case, in order, with papermill; or prepare them for nbval.

Each stage is a jupytext percent-format script ``notebooks/NN_name.py`` with one cell tagged
``parameters``. The runner converts it to a notebook, injects the case's parameters after that
cell (only the names the cell declares, see :meth:`Params.notebook_parameters`: ``params``, every
section whole, which the notebook reads with ``hybridhydro.load_params(params)``, and
``output_dir``) and executes it with the ``python3`` kernel of the current environment, writing
``<output-root>/<case>/NN_name.ipynb``.
Every path handed to a notebook is absolute, and the kernel's working directory is the run's
output directory, so a notebook never depends on where the runner was started.

A run directory also holds ``params.yaml`` (the merged parameters, complete: rerunning it
reproduces the run) and ``run.json`` (which stages ran, when, for how long, and how they ended).
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import templates
from .params import SMASH_DATASETS, Params
from .checks import check_case
from .record import (
    BOOKKEEPING,
    LOCK_FILE,
    RUN_MANIFEST,
    RUN_PARAMS,
    PipelineError,
    RunInterrupted,
    RunLock,
    StaleInputs,
    code_version,
    find_os_error,
    fingerprint,
    now,
    os_problem,
    params_hash,
    read_manifest,
    snapshot,
    stage_problems,
    write_manifest,
    written_since,
)

#: The notebooks of this installation: a repository checkout's ``notebooks/`` (an editable
#: install), else the copy a wheel carries (:mod:`hybridhydro.templates`). A run uses the
#: notebooks beside its parameter files first (:func:`find_notebooks`).
NOTEBOOKS_DIR = templates.default_root() / "notebooks"

#: A stage is a notebook whose name starts with its number: ``01_basin.py``.
STAGE_NAME = re.compile(r"^\d+_\w+$")

#: A line of a notebook that makes it a *study* stage: a study (the known-answer experiment, the
#: referees' solver study) runs only when a parameter file's ``stages`` or ``--stages`` names
#: it, never in the default pipeline (``stages: null``), which stays the six stages of the
#: comparison.
STUDY_MARK = "# hybridhydro: study stage"

KERNEL_NAME = "python3"

#: The failing cell's own frame in an IPython traceback: ``Cell In[12], line 20``.
_CELL_FRAME = re.compile(r"Cell In\[\d+\], line (\d+)")


class OutputExistsError(PipelineError):
    """The output directory already holds results and ``overwrite`` was not asked for."""


@dataclass(eq=False)
class StageFailed(PipelineError):
    """A stage raised: which notebook, which cell, which exception, and where the executed notebook is.

    ``cell_index`` is the 0-based position of the failing cell among the ``ncells`` cells of
    the source notebook (markdown included; the message counts from 1), ``line`` the line of
    the ``.py`` file where its code starts; both are None when the failure was outside the
    notebook's own cells (the injected parameters, the kernel).
    """

    stage: str
    notebook: Path
    output: Path
    ename: str
    evalue: str
    cell_index: int | None = None
    line: int | None = None
    source: str = ""
    traceback: list[str] = field(default_factory=list)
    ncells: int | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    @property
    def first_line(self) -> str:
        """The failing cell's first non-blank source line."""
        return next((ln.strip() for ln in self.source.splitlines() if ln.strip()), "")

    @property
    def raising_line(self) -> tuple[int, str] | None:
        """The line of the ``.py`` file whose statement raised, and its text: the cell's own frame
        in IPython's traceback (``Cell In[k], line N``, the outermost, even when the error comes
        from a function the cell called), counted from :attr:`line`. None where unknown."""
        if self.line is None or not self.traceback:
            return None
        found = _CELL_FRAME.search(_strip_ansi("\n".join(self.traceback)))
        if found is None:
            return None
        offset = int(found.group(1)) - 1
        lines = self.source.splitlines()
        if not 0 <= offset < len(lines):
            return None
        return self.line + offset, lines[offset].strip()

    def __str__(self) -> str:
        if self.cell_index is not None:
            where = f"cell {self.cell_index + 1}" + (f" of {self.ncells}" if self.ncells else "")
            where += f" (line {self.line})" if self.line else ""
            where += f": {self.first_line}"
        elif self.source:
            where = f"the injected parameters cell: {self.first_line}"
        else:
            where = "outside the notebook's cells"
        text = f"stage {self.stage} failed in {self.notebook}, {where}"
        raising = self.raising_line
        if raising is not None and raising[0] != self.line:
            text += f"\n  at line {raising[0]}: {raising[1]}"
        text += f"\n  {self.ename}: {self.evalue}"
        if self.traceback:
            text += "\n" + "\n".join("    " + ln for ln in _strip_ansi("\n".join(self.traceback)).splitlines()[-12:])
        return text + f"\nThe executed notebook, with the full traceback, is {self.output}"


@dataclass(frozen=True)
class StageResult:
    """One stage that ran to the end."""

    stage: str
    notebook: Path
    output: Path
    seconds: float


@dataclass(frozen=True)
class RunResult:
    """A finished run: its directory and its stages, in the order they ran."""

    output_dir: Path
    stages: tuple[StageResult, ...]

    def summary(self) -> str:
        """A small table: stage, wall time, executed notebook (or why nothing ran)."""
        if not self.stages:
            return f"nothing to run: every stage of {self.output_dir} is current (run.json says which ran when)"
        width = max([len("stage"), *(len(s.stage) for s in self.stages)])
        lines = [f"{'stage':<{width}}  {'time (s)':>8}  notebook"]
        lines += [f"{s.stage:<{width}}  {s.seconds:8.1f}  {s.output}" for s in self.stages]
        return "\n".join(lines)


# --- stages ------------------------------------------------------------------------------------


def discover_stages(notebooks_dir: str | Path = NOTEBOOKS_DIR) -> list[str]:
    """The stems of the stage notebooks in ``notebooks_dir`` (``NN_name.py``), in name order."""
    directory = Path(notebooks_dir)
    if not directory.is_dir():
        raise PipelineError(f"no notebooks directory at {directory}; pass the right one with --notebooks")
    return sorted(p.stem for p in directory.glob("*.py") if STAGE_NAME.match(p.stem))


def study_stages(notebooks_dir: str | Path = NOTEBOOKS_DIR) -> list[str]:
    """The stages of ``notebooks_dir`` marked as studies (a line :data:`STUDY_MARK`), in name order."""
    directory = Path(notebooks_dir)
    out = []
    for stem in discover_stages(directory):
        lines = (directory / f"{stem}.py").read_text(encoding="utf-8").splitlines()
        if any(line.strip() == STUDY_MARK for line in lines):
            out.append(stem)
    return out


def find_notebooks(params: Params | None = None, files: Sequence[str | Path] = ()) -> tuple[Path, str]:
    """The notebooks a run of ``params`` uses, and a few words on why that folder.

    The first of the parameter files (the case file, then the files it extends) whose folder's
    parent holds a ``notebooks/`` folder with stage notebooks (``NN_name.py``) gives it: after
    ``python -m hybridhydro init DIR``, ``DIR/params/ci.yaml`` runs ``DIR/notebooks`` (and
    ``DIR/params/studies/x.yaml``, which extends ``../ci.yaml``, too). Otherwise the notebooks
    of this installation, :data:`NOTEBOOKS_DIR`. ``files`` adds parameter files to look beside
    (a batch's case files), when ``params`` is None or has none.
    """
    chain = [Path(f) for f in reversed(params.files)] if params is not None else []
    for file in [*chain, *(Path(f) for f in files)]:
        candidate = file.resolve().parent.parent / "notebooks"
        if candidate.is_dir() and any(STAGE_NAME.match(p.stem) for p in candidate.glob("*.py")):
            return candidate, f"beside the parameter file {file}"
    try:
        origin = templates.templates().origin
    except templates.TemplatesNotFound:
        origin = "missing"
    why = {"repository": "the repository's", "package": "the installed package's (none beside the parameter file)",
           "missing": "none found: this installation is incomplete, pass --notebooks"}[origin]
    return NOTEBOOKS_DIR, why


def check_basin_available(params: Params) -> None:
    """Raise :class:`PipelineError` when the case's basin needs hydro-smash's data and it is not installed.

    Called before anything runs, so that a missing optional extra is one clear message rather
    than a failed stage 01: which dataset was asked for, in which file, and how to install it.
    """
    from ..io.smash_layout import smash_dataset_root

    source = str(params.basin.source)
    names = {name.lower(): name for name in SMASH_DATASETS}
    if source.lower() in names:
        asked = f"basin.source {names[source.lower()]!r}"
    elif source.lower() == "known_answer":
        asked = "basin.source 'known_answer' (its flow directions are cut from hydro-smash's France dataset)"
    else:
        return
    where = f" in {params.params_file}" if params.params_file else ""
    try:
        smash_dataset_root(asked + where)
    except ModuleNotFoundError as error:
        raise PipelineError(f"{error}. Nothing was run.") from None


def select_stages(
    available: Sequence[str], requested: Sequence[str] | None, *, where: str = "stages"
) -> list[str]:
    """The requested stages, in pipeline (name) order; all of them when ``requested`` is None.

    A stage may be named by its stem (``01_basin``) or by a prefix that names one stage
    (``01``). An unknown name is an error that lists the stages and suggests the closest one.
    """
    if requested is None:
        return list(available)
    chosen: set[str] = set()
    for name in requested:
        matches = [s for s in available if s == name] or [s for s in available if s.startswith(name)]
        if len(matches) != 1:
            close = difflib.get_close_matches(name, available, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problem = "names several stages" if matches else "is not a stage"
            raise PipelineError(f"{where}: {name!r} {problem}; {hint}(stages: {', '.join(available) or 'none found'})")
        chosen.add(matches[0])
    return [s for s in available if s in chosen]


def stages_to_run(params: Params, stages: Sequence[str] | None = None, notebooks_dir: str | Path | None = None) -> list[str]:
    """The stages a run of ``params`` executes: ``stages`` if given (the command line), else ``params.stages``.

    ``notebooks_dir`` None: :func:`find_notebooks`.
    """
    notebooks_dir = find_notebooks(params)[0] if notebooks_dir is None else notebooks_dir
    available = discover_stages(notebooks_dir)
    if stages is not None:
        selected = select_stages(available, stages, where="--stages")
    elif params.stages is None:  # the pipeline: every stage but the studies
        studies = set(study_stages(notebooks_dir))
        selected = [s for s in available if s not in studies]
    else:
        where = f"{params.params_file}: stages" if params.params_file else "stages"
        selected = select_stages(available, params.stages, where=where)
    if not selected:
        found = f"(found: {', '.join(available)})" if available else f"(no NN_name.py notebook in {notebooks_dir})"
        raise PipelineError(f"no stage to run {found}")
    return selected


def load_stage(path: str | Path):
    """Read a percent-format script as a notebook for the ``python3`` kernel; check its ``parameters`` cell."""
    import jupytext

    path = Path(path)
    nb = jupytext.read(path, fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])  # papermill looks for tags on every cell
    if _parameters_cell_index(nb) is None:
        raise PipelineError(f'{path} has no cell tagged "parameters"; start one with: # %% tags=["parameters"]')
    return nb


def declared_parameters(nb) -> list[str]:
    """The names the notebook's ``parameters`` cell assigns, in order."""
    index = _parameters_cell_index(nb)
    if index is None:
        return []
    tree = ast.parse(nb.cells[index].source)
    names: list[str] = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id not in names:
                names.append(target.id)
    return names


def parameterize(nb, parameters: dict[str, Any]):
    """The notebook with the parameters it declares injected after its ``parameters`` cell."""
    from papermill.parameterize import parameterize_notebook

    declared = set(declared_parameters(nb))
    chosen = {k: v for k, v in parameters.items() if k in declared}
    nb.metadata.setdefault("papermill", {})
    return parameterize_notebook(nb, chosen, kernel_name=KERNEL_NAME, language="python")


# --- run and prepare ---------------------------------------------------------------------------


def run_plan(params: Params, stages: Sequence[str] | None = None, notebooks_dir: str | Path | None = None) -> list[str]:
    """The stages that make up the case's run: ``params.stages`` (all when null), plus ``stages``.

    A stage is current only when every stage of the plan before it is (:mod:`.record`).
    """
    notebooks_dir = find_notebooks(params)[0] if notebooks_dir is None else notebooks_dir
    available = discover_stages(notebooks_dir)
    planned = set(stages_to_run(params, None, notebooks_dir))
    if stages is not None:
        planned |= set(select_stages(available, stages, where="--stages"))
    return [s for s in available if s in planned]


def run_status(
    params: Params,
    output_root: str | Path = "runs",
    stages: Sequence[str] | None = None,
    notebooks_dir: str | Path | None = None,
) -> str:
    """``"finished"`` (every stage of the plan is current with these parameters), ``"unfinished"``
    (the run directory holds a record, not complete or made from other parameters) or
    ``"absent"`` (no run directory, or no record in it)."""
    output_dir = Path(output_root).resolve() / params.case
    manifest = read_manifest(output_dir)
    if manifest is None:
        return "absent"
    plan = run_plan(params, stages, notebooks_dir)
    problems = stage_problems(output_dir, manifest, plan, params_hash(params))
    return "finished" if not any(problems.values()) else "unfinished"


def run(
    params: Params,
    *,
    output_root: str | Path = "runs",
    stages: Sequence[str] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    notebooks_dir: str | Path | None = None,
    progress: bool = True,
) -> RunResult:
    """Execute the case's stages in order, each into ``<output_root>/<case>/<stage>.ipynb``.

    Parameters
    ----------
    params
        The case (:func:`hybridhydro.pipeline.load_params`).
    output_root
        Parent of the run directory (relative to the current directory).
    stages
        Stages to run (stems or unique prefixes), overriding ``params.stages``.
    overwrite
        Allow writing into a run directory that already holds results: the selected stages run
        again, and the files they wrote before are removed first; the other stages' files stay.
        A stage is refused when the stages before it are not current (:mod:`.record`): made
        from other parameters, interrupted, failed or changed since.
    resume
        Continue the run in its directory from the first stage of ``stages`` that is not
        current; the stages that are current are skipped. A directory made with other
        parameters is refused. A missing directory starts a fresh run.
    notebooks_dir
        Where the stage notebooks are; None: beside the parameter files, else this
        installation's (:func:`find_notebooks`).
    progress
        Show a progress bar over the stages, and papermill's over the cells of each (in the
        terminal). The kernels never draw bars: they run with ``HYBRIDHYDRO_PROGRESS=0``
        (:mod:`hybridhydro.progress`), so the executed notebooks hold no progress lines, with
        or without ``progress``.

    Raises
    ------
    OutputExistsError
        The run directory already holds results and neither ``overwrite`` nor ``resume``.
    RunLocked
        Another process is writing into the run directory.
    StaleInputs
        A selected stage would read files that are not current.
    StageFailed
        A stage raised; later stages did not run.
    RunInterrupted
        Ctrl-C: the stage is recorded as interrupted, and the message says how to resume.
    """
    if overwrite and resume:
        raise PipelineError("--overwrite and --resume exclude each other: --resume continues the run where it "
                            "stopped, --overwrite reruns the chosen stages; give one of them")
    notebooks_dir = Path(find_notebooks(params)[0] if notebooks_dir is None else notebooks_dir)
    selected = stages_to_run(params, stages, notebooks_dir)
    check_basin_available(params)  # hydro-smash's data asked for and not installed: one message, nothing run
    check_case(params, stages=selected)  # a basin that cannot serve the models or the split: refused before any stage
    plan = run_plan(params, stages, notebooks_dir)
    output_dir = Path(output_root).resolve() / params.case
    # Every notebook is read and parameterised before anything is written: a stage that cannot
    # start leaves no half-made run directory behind.
    built_nbs = {
        stage: parameterize(load_stage(notebooks_dir / f"{stage}.py"), params.notebook_parameters(stage, output_dir))
        for stage in selected
    }
    existed = output_dir.exists()
    if existed and not output_dir.is_dir():
        raise OutputExistsError(f"{output_dir} exists and is not a directory; choose another case name or --output-root")
    had_lock = (output_dir / LOCK_FILE).exists()
    lock = RunLock(output_dir).acquire()
    try:
        try:
            to_run = _stages_to_run_now(params, output_dir, selected, plan, overwrite, resume)
        except PipelineError:
            if not existed:
                shutil.rmtree(output_dir, ignore_errors=True)
            elif not had_lock:
                (output_dir / LOCK_FILE).unlink(missing_ok=True)
            raise
        return _execute(params, output_dir, to_run, plan, built_nbs, notebooks_dir, progress, resume)
    finally:
        lock.release()


def _stages_to_run_now(params: Params, output_dir: Path, selected: list[str], plan: list[str], overwrite: bool,
                       resume: bool) -> list[str]:
    """The stages this call runs, after the checks that protect the run directory."""
    manifest = read_manifest(output_dir)
    current = params_hash(params)
    held = sorted(p.name for p in output_dir.iterdir() if p.name not in BOOKKEEPING) if output_dir.is_dir() else []
    has_record = manifest is not None and manifest.get("stages")
    if resume and has_record and manifest.get("params_sha256") not in (None, current):
        raise StaleInputs(
            f"{output_dir} was made with other parameters than {params.params_file or 'these'} "
            f"({_params_difference(output_dir, params)}); --resume only continues a run with the same parameters. "
            f"Rerun it with --overwrite (every stage from the first), or give the case another name (`case:`)"
        )
    if held and not (overwrite or resume):
        _claim(output_dir, False, f"the results of case {params.case!r}")
    problems = stage_problems(output_dir, manifest, plan, current)
    if resume:
        pending = [s for s in selected if problems.get(s)]
        to_run = selected[selected.index(pending[0]):] if pending else []
    else:
        to_run = list(selected)
    if not to_run:
        return []
    first, last = plan.index(to_run[0]), plan.index(to_run[-1])
    skipped = [s for s in plan[first:last + 1] if s not in to_run]
    if skipped:
        raise StaleInputs(
            f"stage {skipped[0]} lies between {to_run[0]} and {to_run[-1]} but is not selected: after {to_run[0]} "
            f"runs again, {skipped[0]}'s files would no longer match. Add it: --stages {','.join(plan[first:last + 1])}"
        )
    stale = [s for s in plan[:first] if problems.get(s)]
    if stale:
        raise StaleInputs(
            f"stage {to_run[0]} reads what the stages before it made, but {stale[0]} is not current: "
            f"{problems[stale[0]]}. Nothing was run. Run from it: --stages {','.join(plan[plan.index(stale[0]):last + 1])} "
            f"with --overwrite, or --resume to continue from the first stage that is not current"
        )
    return to_run


def _params_difference(output_dir: Path, params: Params) -> str:
    """The keys whose values differ between the run's ``params.yaml`` and ``params``."""
    try:
        import yaml

        before = yaml.safe_load((output_dir / RUN_PARAMS).read_text()) or {}
    except (OSError, ValueError):
        return "its params.yaml is unreadable"
    before, after = _flatten(before), _flatten(params.model_dump(mode="json"))
    keys = [k for k in after if k.split(".")[0] != "stages" and before.get(k) != after[k]]
    return "changed: " + ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else "") if keys else "their hashes differ"


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def _execute(params: Params, output_dir: Path, to_run: list[str], plan: list[str], built_nbs: dict, notebooks_dir: Path,
             progress: bool, resume: bool) -> RunResult:
    import papermill

    from ..progress import bar as progress_bar

    current = params_hash(params)
    manifest = read_manifest(output_dir) or {}
    try:
        (output_dir / RUN_PARAMS).write_text(params.to_yaml())
    except OSError as error:
        raise os_problem(error, output_dir / RUN_PARAMS) from None
    manifest = _start_manifest(manifest, params, plan, to_run, current)
    write_manifest(output_dir, manifest)
    resume_hint = _resume_command(params, output_dir)

    results: list[StageResult] = []
    if not to_run:
        _finish(manifest, output_dir, plan, current)
        return RunResult(output_dir, ())
    bar = progress_bar(to_run, progress=progress, desc=params.case, unit="stage")
    code = code_version()  # recorded with each stage: which commit made its files
    with tempfile.TemporaryDirectory(prefix="hybridhydro-") as build, _inline_figures(), _quiet_kernels():
        for stage in bar:
            bar.set_postfix_str(stage)
            source = notebooks_dir / f"{stage}.py"
            nb = built_nbs[stage]
            built = Path(build) / f"{stage}.ipynb"
            _write_notebook(nb, built)
            output = output_dir / f"{stage}.ipynb"
            _remove_outputs(manifest, output_dir, stage, plan, resume)
            earlier = plan[:plan.index(stage)]
            manifest["stages"][stage] = {
                "status": "running", "started": now(), "pid": os.getpid(), "params_sha256": current,
                "inputs_sha256": fingerprint(manifest["stages"].get(s, {}) for s in earlier), "code": code,
            }
            write_manifest(output_dir, manifest)
            before = snapshot(output_dir)
            tic = time.perf_counter()
            try:
                papermill.execute_notebook(
                    built,
                    output,
                    kernel_name=KERNEL_NAME,
                    language="python",
                    cwd=output_dir,
                    progress_bar=progress,
                    # The kernel's own log is noise on the terminal: its start-up advice to encrypt
                    # a local transport, and, after a Ctrl-C, the replies it can no longer send.
                    # A cell's error is in the executed notebook and in StageFailed; a kernel that
                    # dies is a papermill error. Both still reach the user.
                    extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
                )
            except KeyboardInterrupt:
                bar.close()
                raise _interrupted(manifest, output_dir, stage, before, tic, resume_hint, plan) from None
            except Exception as error:  # noqa: BLE001  (any failure ends the run, with what we know of it)
                bar.close()
                if getattr(error, "ename", None) == "KeyboardInterrupt":  # the kernel got the Ctrl-C first
                    raise _interrupted(manifest, output_dir, stage, before, tic, resume_hint, plan) from None
                os_error = find_os_error(error)
                if os_error is not None and not getattr(error, "ename", None):
                    failure: Exception = os_problem(os_error)
                else:
                    failure = _failure(error, stage, source, output, nb)
                _safe_set_input_path(output, source)
                _end_stage(manifest, output_dir, stage, "failed", before, tic, cause=str(failure).splitlines()[0])
                raise failure from error
            seconds = time.perf_counter() - tic
            _safe_set_input_path(output, source)
            _end_stage(manifest, output_dir, stage, "done", before, tic)
            results.append(StageResult(stage, source, output, seconds))
            bar.write(f"{stage}: done in {seconds:.1f} s -> {output}")
    _finish(manifest, output_dir, plan, current)
    return RunResult(output_dir, tuple(results))


def _start_manifest(previous: dict[str, Any], params: Params, plan: list[str], to_run: list[str], current: str) -> dict[str, Any]:
    from .. import __version__

    return {
        "case": params.case,
        "params_files": [str(f) for f in params.files],
        "params_sha256": current,
        "plan": plan,
        "selected": to_run,
        "status": "running",
        "started": now(),
        "finished": None,
        "hybridhydro": __version__,
        "python": platform.python_version(),
        # stages of earlier runs that this one does not repeat keep their record
        "stages": dict(previous.get("stages") or {}),
    }


def _remove_outputs(manifest: dict[str, Any], output_dir: Path, stage: str, plan: list[str], resume: bool) -> None:
    """Remove the files a stage wrote the last time it ran (only those: never a file of the user's).

    A stage resumed after an interruption or a failure keeps them: its calibrations continue
    from the checkpoints it wrote (each checks that it was written with the same settings).
    """
    record = manifest["stages"].get(stage) or {}
    if resume and record.get("status") in ("interrupted", "failed", "running"):
        return
    later = {rel for s in plan[plan.index(stage) + 1:] for rel in (manifest["stages"].get(s) or {}).get("outputs", {})}
    for rel in record.get("outputs", {}):
        path = output_dir / rel
        if rel in later or not path.is_file():
            continue
        try:
            path.unlink()
        except OSError as error:
            raise os_problem(error, path, "remove") from None
    for rel in sorted({Path(r).parent for r in record.get("outputs", {})}, key=lambda p: -len(p.parts)):
        folder = output_dir / rel
        if rel != Path(".") and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _end_stage(manifest: dict[str, Any], output_dir: Path, stage: str, status: str, before, tic: float, **extra) -> None:
    record = manifest["stages"][stage]
    try:
        outputs = written_since(output_dir, before)
    except OSError:
        outputs = {}
    record.update(status=status, seconds=round(time.perf_counter() - tic, 2), finished=now(), outputs=outputs, **extra)
    write_manifest(output_dir, manifest)


def _interrupted(manifest, output_dir: Path, stage: str, before, tic: float, hint: str, plan: list[str]) -> RunInterrupted:
    _end_stage(manifest, output_dir, stage, "interrupted", before, tic, cause="KeyboardInterrupt (Ctrl-C)")
    manifest.update(status="interrupted", finished=now())
    write_manifest(output_dir, manifest)
    return RunInterrupted(f"interrupted in stage {stage} after {time.perf_counter() - tic:.0f} s; "
                          f"continue where it stopped with: {hint}")


def _finish(manifest: dict[str, Any], output_dir: Path, plan: list[str], current: str) -> None:
    problems = stage_problems(output_dir, manifest, plan, current)
    pending = [s for s in plan if problems.get(s)]
    manifest["finished"] = now()
    manifest["status"] = "finished" if not pending else "partial"
    manifest["not_current"] = {s: problems[s] for s in pending}
    write_manifest(output_dir, manifest)


def _resume_command(params: Params, output_dir: Path) -> str:
    source = params.params_file or (output_dir / RUN_PARAMS)
    root = output_dir.parent
    default_root = (Path("runs").resolve() == root)
    return f"python -m hybridhydro run {source} --resume" + ("" if default_root else f" --output-root {root}")


def _safe_set_input_path(output: Path, source: Path) -> None:
    try:
        _set_input_path(output, source)
    except Exception:  # noqa: BLE001  (a half-written notebook: the failure itself is what to report)
        pass


def prepare(
    params: Params,
    out: str | Path,
    *,
    stages: Sequence[str] | None = None,
    overwrite: bool = False,
    notebooks_dir: str | Path | None = None,
) -> list[Path]:
    """Write the case's stages as parameterised, unexecuted notebooks into ``out``, for nbval.

    ``pytest --nbval-lax --nbval-current-env <out>`` then runs them in name order, which is the
    pipeline's order; each writes its results into ``out`` (its ``output_dir``).

    With ``overwrite``, notebooks prepared earlier in ``out`` are removed first, so that a
    stage no longer selected is not run by nbval; other files are left.
    """
    notebooks_dir = Path(find_notebooks(params)[0] if notebooks_dir is None else notebooks_dir)
    selected = stages_to_run(params, stages, notebooks_dir)
    check_basin_available(params)
    out = Path(out).resolve()
    nbs = {}
    for stage in selected:
        source = notebooks_dir / f"{stage}.py"
        nbs[stage] = parameterize(load_stage(source), params.notebook_parameters(stage, out))
        nbs[stage].metadata["papermill"]["input_path"] = str(source.resolve())
    _claim(out, overwrite, "prepared notebooks")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.ipynb"):
        stale.unlink()
    (out / RUN_PARAMS).write_text(params.to_yaml())
    written = []
    for stage, nb in nbs.items():
        target = out / f"{stage}.ipynb"
        _write_notebook(nb, target)
        written.append(target)
    return written


# --- helpers -----------------------------------------------------------------------------------


def _claim(directory: Path, overwrite: bool, what: str) -> None:
    """Refuse to write into a directory that already holds files, unless asked to."""
    if overwrite or not directory.exists():
        return
    if not directory.is_dir():
        raise OutputExistsError(f"{directory} exists and is not a directory")
    entries = sorted(p.name for p in directory.iterdir() if p.name not in BOOKKEEPING or p.name == RUN_MANIFEST)
    if not entries:
        return
    shown = ", ".join(entries[:6]) + (f", ... ({len(entries)} entries)" if len(entries) > 6 else "")
    when = ""
    manifest = read_manifest(directory)
    if manifest is not None:
        status = {s: (v or {}).get("status") for s, v in (manifest.get("stages") or {}).items()}
        when = f" (run started {manifest.get('started')}; stages: {status})"
    raise OutputExistsError(
        f"{directory} already holds {what}{when}: {shown}.\n"
        f"Nothing was run. To continue that run from its first unfinished stage, add --resume. To run the "
        f"chosen stages again in it, add --overwrite: the files those stages wrote before are replaced, the "
        f"other stages' files are kept, and a stage whose earlier stages were made from other parameters is "
        f"refused. To keep it as it is, choose another case name (`case:` in the parameter file) or --output-root."
    )


def _failure(error: Exception, stage: str, source: Path, output: Path, nb) -> StageFailed:
    """What failed, in the source notebook's terms."""
    from papermill.exceptions import PapermillExecutionError

    if not isinstance(error, PapermillExecutionError):
        return StageFailed(stage, source, output, type(error).__name__, str(error).strip())
    # The executed notebook is the source notebook plus one injected cell after the parameters cell.
    params_index = _parameters_cell_index(nb)
    index: int | None = error.cell_index
    if index == params_index + 1:
        index = None
    elif index > params_index + 1:
        index -= 1
    line = None
    if index is not None:
        position = source.read_text().find(error.source)
        line = source.read_text().count("\n", 0, position) + 1 if position >= 0 and error.source else None
    return StageFailed(
        stage, source, output, error.ename, error.evalue, index, line, error.source, list(error.traceback or []),
        ncells=len(nb.cells) - 1,
    )


def _parameters_cell_index(nb) -> int | None:
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return i
    return None


@contextlib.contextmanager
def _inline_figures():
    """Kernels started here draw figures into the notebook, whatever ``MPLBACKEND`` the shell sets.

    A headless shell (CI, ``make``) often exports ``MPLBACKEND=Agg``; the kernel inherits it,
    and the executed notebooks, which are the run's report, would lose every figure.
    """
    saved = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = saved


@contextlib.contextmanager
def _quiet_kernels():
    """Kernels started here draw no progress bars (``HYBRIDHYDRO_PROGRESS=0``, which they inherit).

    A bar in a kernel lands in the executed notebook, the run's report, as a stderr output of
    carriage-return lines (hundreds of them for a long calibration); the terminal shows
    papermill's bar over the cells instead. The caller's own setting is restored afterwards.
    """
    from ..progress import ENVIRONMENT_VARIABLE

    saved = os.environ.get(ENVIRONMENT_VARIABLE)
    os.environ[ENVIRONMENT_VARIABLE] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(ENVIRONMENT_VARIABLE, None)
        else:
            os.environ[ENVIRONMENT_VARIABLE] = saved


def _write_notebook(nb, path: Path) -> None:
    import nbformat

    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def _set_input_path(output: Path, source: Path) -> None:
    """Record the ``.py`` source (not the temporary notebook) as the executed notebook's input."""
    import nbformat

    if not output.is_file():
        return
    nb = nbformat.read(str(output), as_version=4)
    nb.metadata.setdefault("papermill", {})["input_path"] = str(source.resolve())
    nbformat.write(nb, str(output))


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
