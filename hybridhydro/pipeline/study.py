"""A comparison study: several basins x seeds x splits, run by the batch runner, summarised as tables.

A study file (YAML, e.g. ``params/studies/comparison.yaml``) names the basins, each with its
parameter file and its grid (the ``--set`` of :mod:`.batch`), and the seeds::

    name: comparison
    seeds: 0-4
    doc: ../../docs/comparison.md            # where the tables go (relative to this file)
    basins:
      - label: Cance
        params: ../cance-study.yaml          # relative to this file
        set:
          calibration.swap_periods: [false, true]                  # two splits, one swapped
          calibration.validation_gauges: [[V3524010], [V3515010], [V3517010]]   # leave one gauge out

``python -m hybridhydro study params/studies/comparison.yaml`` runs each basin as one batch
(``<output-root>/<name>-<label>``; finished runs are skipped, so a study longer than a working
session continues where it stopped) and writes the tables into the ``doc`` between the lines
``<!-- study tables: begin -->`` and ``<!-- study tables: end -->``; whatever the file holds
outside them (the reading of the tables, the verdict) is kept as it was.

The statistics (:func:`scenario_statistics`) pool every score of a model in a scenario: every
seed, split, fold and gauge of the scenario. A model is ranked above another only where their
interquartile ranges do not overlap (:func:`tiers`). The acceptance of the protocol
(:func:`acceptance`) asks each model to beat the default parameters in every scenario and to
reach 0.9 of the best calibration score.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import batch
from .record import PipelineError

BEGIN = "<!-- study tables: begin -->"
END = "<!-- study tables: end -->"

#: The comparison's reference row: gr4 with smash's default parameters (stage 06 scores it).
DEFAULT_ROW = "default parameters"

#: Scenarios in the order of the tables.
SCENARIO_ORDER = ("calibration", "temporal", "spatial", "spatio-temporal")


class StudyError(PipelineError):
    """A study file that cannot run: the message says what and where."""


class StudyBasin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", description="the basin's name in the tables and batch")
    params: str = Field(description="its parameter file, relative to the study file")
    set: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values, as batch --set")
    note: str = Field("", description="one sentence printed above the basin's tables")
    tried: dict[str, str] = Field(default_factory=dict, description="model -> what was tried for it besides this "
                                  "study's runs (another study, a page of docs/), shown in the acceptance table")


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    seeds: str = Field("0-4", description="the seeds, as batch --seeds")
    doc: str | None = Field(None, description="markdown file that receives the tables, relative to the study file")
    records: str | None = Field(None, description="folder that keeps what the tables need of each finished run "
                                "(hybridhydro.pipeline.ledger), relative to the study file; commit it with the doc "
                                "and the study continues, and its tables rebuild, on a fresh clone")
    metrics: list[str] = Field(["nse", "kge"], min_length=1)
    basins: list[StudyBasin] = Field(min_length=1)

    @field_validator("seeds", mode="before")
    @classmethod
    def _text(cls, value):
        return str(value)


def load_study(path: str | Path) -> tuple[StudySpec, Path]:
    """The study file, validated, and its folder (paths in it are relative to that folder)."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no such study file (see params/studies/comparison.yaml for one)")
    try:
        spec = StudySpec.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise StudyError(f"{path}: {problems}") from None
    labels = [b.label for b in spec.basins]
    if len(set(labels)) != len(labels):
        raise StudyError(f"{path}: two basins share a label ({labels}); give each its own")
    for b in spec.basins:
        if not (path.parent / b.params).is_file():
            raise StudyError(f"{path}: basin {b.label}: no parameter file {path.parent / b.params}")
    return spec, path.parent


def expand_basin(spec: StudySpec, basin: StudyBasin, folder: Path, stages=None, seeds: str | None = None,
                 notebooks_dir: str | Path | None = None) -> list[batch.BatchCase]:
    """The batch cases of one basin of the study (its grid x the study's seeds, or ``seeds``),
    with the stages of ``notebooks_dir`` (default: :func:`basin_notebooks`)."""
    sets = [f"{key}=" + ",".join(json.dumps(v) if not isinstance(v, str) else v for v in values)
            for key, values in basin.set.items()]
    notebooks_dir = basin_notebooks(basin, folder) if notebooks_dir is None else notebooks_dir
    return batch.expand([folder / basin.params], sets, seeds or spec.seeds, stages=stages, notebooks_dir=notebooks_dir)


def basin_notebooks(basin: StudyBasin, folder: Path) -> Path:
    """The notebooks a basin's runs use: those beside its parameter files (a study copied by
    ``python -m hybridhydro init DIR`` runs ``DIR/notebooks``), else this installation's."""
    from . import runner
    from .params import load_params

    return runner.find_notebooks(load_params(folder / basin.params))[0]


def run_study(
    path: str | Path,
    *,
    output_root: str | Path = "runs",
    jobs: int | None = None,
    scheduler: str | None = None,
    tables_only: bool = False,
    doc: str | Path | None = None,
    records: str | Path | None = None,
    basins: Sequence[str] | None = None,
    seeds: str | None = None,
    echo: Callable[[str], None] = print,
) -> StudyResult:
    """Run (or, with ``tables_only``, only summarise) every basin of the study; write the tables.

    Returns the markdown of the tables and the runs that did not finish; writes the tables
    into the study's ``doc`` (or ``doc``). ``basins`` (labels) runs only those basins; the
    tables still cover every basin, from the runs that finished. ``seeds`` runs only those
    seeds now (e.g. ``"0"`` first, the others later: the runs keep their names, so a later
    run of every seed skips them). A failed run does not stop the others: the tables
    show what finished, and rerunning the command retries what did not.

    With a records folder (the study file's ``records:``, or ``records``), each run is kept
    there as it finishes (:mod:`.ledger`), a case recorded with its current parameters is
    skipped even where its run directory is gone (a fresh clone), and the tables are built
    from the records. A basin with neither records nor finished runs keeps the tables the
    document already holds for it, marked as such (they are not thrown away for want of a run
    directory).
    """
    from . import ledger

    spec, folder = load_study(path)
    labels = [b.label for b in spec.basins]
    unknown = [b for b in basins or () if b not in labels]
    if unknown:
        raise StudyError(f"--basins {', '.join(unknown)}: not in {path} (its basins: {', '.join(labels)})")
    records_root = Path(records) if records is not None else (folder / spec.records if spec.records else None)
    records_root = None if records_root is None else _tidy(records_root)
    if not tables_only:  # every basin's cases checked before the first runs: none fails hours into the study
        refused, checked = [], 0
        for basin in spec.basins:
            if basins is None or basin.label in basins:
                notebooks = basin_notebooks(basin, folder)
                todo = expand_basin(spec, basin, folder, seeds=seeds, notebooks_dir=notebooks)
                checked += len(todo)
                refused += [f"{basin.label}: {p}" for p in batch.preflight(todo, notebooks_dir=notebooks)]
        if refused:
            raise StudyError(f"{path}: " + batch.refusal_message(refused, checked))
        if records_root is not None:  # a folder the records cannot go to is said now, not after the first run
            problem = _unwritable(records_root)
            if problem:
                raise StudyError(f"{path}: records: {records_root} cannot hold the study's records ({problem}); "
                                 "nothing was run. Give a folder you can write (the study file's `records:`, or "
                                 "--records DIR)")
    target = Path(doc) if doc is not None else (folder / spec.doc if spec.doc else None)
    target = None if target is None else _tidy(target)
    old_text = target.read_text() if target is not None and target.is_file() else ""
    sections, timings, failed = [], [], []
    for basin in spec.basins:
        notebooks = basin_notebooks(basin, folder)
        cases = expand_basin(spec, basin, folder, notebooks_dir=notebooks)
        name = f"{spec.name}-{basin.label}"
        directory = Path(output_root).resolve() / name
        kept = None if records_root is None else records_root / basin.label
        tic = time.perf_counter()
        runs_now = not tables_only and (basins is None or basin.label in basins)
        if runs_now:
            todo = cases if seeds is None else expand_basin(spec, basin, folder, seeds=seeds, notebooks_dir=notebooks)
            if kept is not None:
                held = [ledger.is_recorded(kept, c) for c in todo]  # hashes each record's files once
                recorded = [c for c, h in zip(todo, held) if h]
                todo = [c for c, h in zip(todo, held) if not h]
                if recorded:
                    echo(f"{basin.label}: {len(recorded)} run(s) recorded in {kept} with these parameters (skipped)")
            if todo:
                result = batch.run_batch(
                    todo, name=name, output_root=output_root, jobs=jobs, scheduler=scheduler, notebooks_dir=notebooks,
                    command=f"python -m hybridhydro study {path}", echo=echo,
                    on_done=None if kept is None else (lambda c, d=directory, k=kept: ledger.record_run(d / c.name, k, c)))
                if result.failed:
                    echo(result.message())
                    failed += [c["name"] for c in result.failed]
        if kept is not None:  # finished runs not yet recorded (an older command, an interrupted study)
            added = sum(ledger.record_run(directory / c.name, kept, c) for c, r in
                        zip(cases, run_records(directory, cases, notebooks)) if r["status"] == "done")
            if added:
                echo(f"{basin.label}: {added} finished run(s) recorded in {kept}")
            source, status = kept, ledger.recorded_statuses(kept, cases)
        else:
            source, status = directory, run_records(directory, cases, notebooks)
        scores, _ = batch.collect_scores(source, cases, status)
        old = _kept_section(old_text, basin.label, labels) if not len(scores) else None
        if old is not None:
            echo(f"{basin.label}: no finished run here or in the records; its tables in {target} are kept as they were")
            timings.append(old[1])
            sections.append(old[0])
            continue
        timings.append(_timing(basin.label, status, len(cases), time.perf_counter() - tic, not runs_now))
        sections.append(basin_tables(basin.label, scores, spec.metrics, note=basin.note, ncases=len(cases),
                                     health=collect_health(source, cases, status), tried=basin.tried))
        sections.append(known_answer_tables(source, cases, status, spec.metrics))
    text = study_markdown(spec, timings, sections, records=records_root, doc=target)
    if target is not None:
        write_between_markers(target, text)
        echo(f"tables written to {target}")
    return StudyResult(text, failed, target)


def _unwritable(folder: Path) -> str:
    """Why ``folder`` cannot be made or written ("" when it can)."""
    import tempfile

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return ""


def _tidy(path: Path) -> Path:
    """``path`` without ``..`` (relative to the current folder where it lies under it): as messages show it."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


#: The line that marks a basin's tables kept from an earlier run of the study.
KEPT_NOTE = ("_These tables were written by an earlier run of the study whose per-run records are not in the "
             "records folder (they were made before the study kept records); no run of this basin is here now, "
             "so they are kept as they were. Rerunning the basin (`--basins {label}`) rebuilds them with records._")


def _kept_section(text: str, label: str, labels: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
    """A basin's tables and its row of the timing table, as the document holds them (None when
    it holds none with a finished run)."""
    if BEGIN not in text or END not in text:
        return None
    body = text.split(BEGIN, 1)[1].split(END, 1)[0]
    lines = body.split("\n")
    heads = [k for k, line in enumerate(lines) if line.startswith("### ") and line[4:].strip() in labels]
    starts = [k for k in heads if lines[k][4:].strip() == label]
    if not starts:
        return None
    start = starts[0]
    stop = next((k for k in heads if k > start), len(lines))
    section = "\n".join(lines[start:stop]).rstrip("\n") + "\n"
    if "No run of this basin has finished yet." in section or " runs finished (seeds " not in section:
        return None
    note = KEPT_NOTE.format(label=label)
    if note not in section:
        head, rest = section.split("\n", 1)
        section = f"{head}\n\n{note}\n{rest}"
    row = next((line for line in lines if line.startswith(f"| {label} |")), None)
    cells = [c.strip() for c in row.strip().strip("|").split("|")] if row else []
    timing = {"basin": label, "runs": cells[1] if len(cells) > 1 else "", "finished": cells[2] if len(cells) > 2 else "",
              "sum of finished run times (min)": cells[3] if len(cells) > 3 else "", "this command (min)": None,
              "kept": True}
    return section, timing


@dataclass
class StudyResult:
    """What :func:`run_study` did: the tables' markdown, the runs that did not finish, where the tables went."""

    markdown: str
    failed: list[str]
    doc: Path | None


def run_records(directory: Path, cases: Sequence[batch.BatchCase], notebooks_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Each case's status read from its run directory (``done`` when every stage of its plan is
    current with its parameters), whichever batch command ran it, with the seconds its stages took."""
    from . import runner
    from .record import read_manifest

    out = []
    for case in cases:
        status = runner.run_status(case.params, output_root=directory,
                                   notebooks_dir=runner.NOTEBOOKS_DIR if notebooks_dir is None else notebooks_dir)
        manifest = read_manifest(directory / case.name) or {}
        seconds = sum(float(st.get("seconds") or 0.0) for st in (manifest.get("stages") or {}).values())
        out.append({"name": case.name, "status": "done" if status == "finished" else status,
                    "log": str(directory / case.name / batch.RUN_LOG), "seconds": seconds or None})
    return out


def _timing(label: str, records: Sequence[Mapping], ncases: int, seconds: float, tables_only: bool) -> dict[str, Any]:
    done = [r for r in records if r.get("status") in ("done", "skipped")]
    case_seconds = sum(float(r["seconds"]) for r in records if r.get("seconds") and r.get("status") == "done")
    return {"basin": label, "runs": ncases, "finished": len(done),
            "sum of finished run times (min)": round(case_seconds / 60, 1),
            "this command (min)": None if tables_only else round(seconds / 60, 1)}


# ------------------------------------------------------------------------------------ statistics


def scenario_statistics(scores: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Median, quartiles and count of every (model, scenario, metric), pooling seeds, splits, folds and gauges."""
    long = scores.melt(id_vars=["model", "scenario"], value_vars=list(metrics), var_name="metric", value_name="value")
    groups = long.groupby(["model", "scenario", "metric"], sort=False)["value"]
    stats = pd.DataFrame({"n": groups.count(), "median": groups.median(), "q25": groups.quantile(0.25),
                          "q75": groups.quantile(0.75)}).reset_index()
    return stats


def tiers(stats: pd.DataFrame) -> pd.Series:
    """Rank groups of the models of one (scenario, metric): 1 the best.

    Models are sorted by median (higher is better, as for NSE and KGE); the best model opens
    tier 1 and every model whose interquartile range overlaps the tier leader's joins it; the
    best model left opens the next tier. Two models are ranked against each other only when
    they fall in different tiers, that is when their intervals do not overlap.
    """
    ordered = stats.dropna(subset=["median"]).sort_values("median", ascending=False)
    out, tier, leader = {}, 0, None
    for _, row in ordered.iterrows():
        if leader is None or row["q75"] < leader["q25"]:
            tier, leader = tier + 1, row
        out[row["model"]] = tier
    return pd.Series(out, name="tier", dtype="Int64").reindex(stats["model"].values)


def acceptance(stats: pd.DataFrame, metric: str = "nse", share: float = 0.9,
               health: pd.DataFrame | None = None, tried: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per model: does it beat the default parameters in every scenario (medians), and reach
    ``share`` of the best calibration median? One row per model (the default row left out).

    A model that is not accepted gets a ``diagnosis`` (which test it failed and by how much,
    its tiers out of sample, the health checks its trainings failed, from ``health``, the
    table of :func:`collect_health`) and what was ``tried`` (the runs restarted from another
    seed by ``calibration.health_restarts``, what ``tried`` says of it (model -> text: another
    study), and the remedies the failed checks name).
    """
    part = stats[stats["metric"] == metric]
    wide = part.pivot_table(index="model", columns="scenario", values="median", sort=False)
    scenarios = [s for s in SCENARIO_ORDER if s in wide.columns]
    models = [m for m in wide.index if m != DEFAULT_ROW]
    best = wide.loc[models, "calibration"].max() if "calibration" in wide else float("nan")
    leader = wide.loc[models, "calibration"].idxmax() if "calibration" in wide and len(models) else None
    out_of_sample = [s for s in scenarios if s != "calibration"]
    tier_of = {s: tiers(part[(part["scenario"] == s) & (part["model"] != DEFAULT_ROW)]) for s in out_of_sample}
    tried_by_hand = dict(tried or {})
    rows = []
    for m in models:
        below = ([s for s in scenarios if not wide.loc[m, s] > wide.loc[DEFAULT_ROW, s]]
                 if DEFAULT_ROW in wide.index else [])
        ratio = wide.loc[m, "calibration"] / best if "calibration" in wide and best > 0 else float("nan")
        accepted = (not below) and bool(ratio >= share)
        diagnosis, tried = [], []
        if not accepted:
            if below:
                diagnosis.append(f"median at or below the default parameters' in {', '.join(below)}")
            if not ratio >= share:
                diagnosis.append(f"calibration median {wide.loc[m, 'calibration']:.3f}, {ratio:.3f} of the best "
                                 f"({leader} {best:.3f}; {share:g} asked)")
            ranks = [f"{s} T{int(tier_of[s][m])}" for s in out_of_sample if pd.notna(tier_of[s].get(m))]
            if ranks:
                diagnosis.append("out of sample: " + ", ".join(ranks))
            if health is not None and m in health.index:
                h = health.loc[m]
                if int(h["unhealthy runs"]):
                    diagnosis.append(f"health: {h['failed checks']} in {int(h['unhealthy runs'])} of {int(h['runs'])} runs")
                restarted = int(h.get("restarted runs", 0) or 0)
                setting = h.get("health_restarts", "")
                tried.append(f"{restarted} of {int(h['runs'])} runs restarted from another seed "
                             f"(calibration.health_restarts: {setting})" if setting != "" else
                             f"{restarted} of {int(h['runs'])} runs restarted from another seed")
            if tried_by_hand.get(m):
                tried.append(tried_by_hand[m])
            if health is not None and m in health.index and health.loc[m].get("remedies"):
                tried.append(f"named by the failed checks, not used in these runs: {health.loc[m]['remedies']}")
        rows.append({"model": m, "scenarios not above default": ", ".join(below) or "none",
                     "calibration / best": round(float(ratio), 3), "accepted": accepted,
                     "diagnosis": "; ".join(diagnosis), "tried": "; ".join(tried)})
    return pd.DataFrame(rows).set_index("model")


def collect_health(directory: Path, cases: Sequence[batch.BatchCase], records: Sequence[Mapping] | None = None) -> pd.DataFrame:
    """How often each model's training failed a health check, across the finished runs of a
    batch (every run directory when ``records`` is None), the runs the score tables pool.

    Reads each run's record (``health.json``, :mod:`.ledger`) or, in a run directory,
    ``models/<model>/calibration.json`` (the trained result's ``options["health"]``); one row per model: runs read, runs with a failed check, and the
    checks that failed (with how many runs each).
    """
    from .ledger import load_health

    counts: dict[str, dict[str, Any]] = {}
    for k, case in enumerate(cases):
        if records is not None and records[k]["status"] not in ("done", "skipped"):
            continue
        models, params_file = load_health(directory / case.name)
        for model, options in sorted(models.items()):
            row = counts.setdefault(model, {"runs": 0, "unhealthy runs": 0, "failed checks": {},
                                            "restarted runs": 0, "settings": set(), "remedies": {}})
            row["runs"] += 1
            failed = [h for h in options.get("health") or [] if not h.get("ok", True)]
            if failed:
                row["unhealthy runs"] += 1
            for h in failed:
                row["failed checks"][h["check"]] = row["failed checks"].get(h["check"], 0) + 1
                if h.get("remedy"):
                    row["remedies"].setdefault(str(h["remedy"]), None)
            row["restarted runs"] += int(len(options.get("restarts") or []) > 1)
            row["settings"].add(_health_restarts(params_file))
    rows = {m: {"runs": r["runs"], "unhealthy runs": r["unhealthy runs"],
                "failed checks": ", ".join(f"{c} ({n})" for c, n in r["failed checks"].items()) or "none",
                "restarted runs": r["restarted runs"],
                "health_restarts": ", ".join(sorted(str(v) for v in r["settings"] if v is not None)),
                "remedies": "; ".join(r["remedies"])}
            for m, r in counts.items()}
    return pd.DataFrame(rows).T


def _health_restarts(params_file: Path) -> int | None:
    """``calibration.health_restarts`` of a run, from the parameters it recorded (None: unreadable)."""
    try:
        recorded = yaml.safe_load(Path(params_file).read_text()) or {}
        return int(recorded.get("calibration", {}).get("health_restarts", 0))
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return None


def known_answer_tables(directory: Path, cases, records, metrics: Sequence[str]) -> str:
    """For runs of a known-answer basin (stage 07 wrote ``known_answer_scores.csv`` and
    ``known_answer_correlations.csv``): the models scored against the clean truth, and the
    correlation of each hybrid's correction with the hidden flux, median [q25, q75] per truth
    and scenario over seeds, splits and gauges. Empty for other basins."""
    scores, _ = batch.collect_scores(directory, cases, records, "known_answer_scores.csv")
    if not len(scores):
        return ""
    # the study's grid names the truth by its dotted key (basin.known_answer.truth): the column to group by
    by = [c for c in scores.columns if str(c).split(".")[-1] == "truth"][:1]
    lines = ["#### Against the clean truth (stage 07)", "",
             "The models scored against the discharge without noise; `gr4, true parameters` is GR4 with "
             "the true maps, which lacks only the hidden process (NSE, median [q25, q75] (n)).", ""]
    for key, part in (scores.groupby(by, sort=False) if by else [((None,), scores)]):
        title = f"truth: {key[0] if isinstance(key, tuple) else key}" if by else "every run"
        stats = scenario_statistics(part, ["nse"])
        scenarios = [x for x in SCENARIO_ORDER if x in set(stats["scenario"])]
        lines += [f"*{title}*", "", "| model | " + " | ".join(scenarios) + " |", "|---|" + "---|" * len(scenarios)]
        for m in dict.fromkeys(part["model"]):
            cells = []
            for x in scenarios:
                row = stats[(stats["model"] == m) & (stats["scenario"] == x)]
                cells.append(f"{_cell(row.iloc[0])} ({int(row.iloc[0]['n'])})" if len(row) else "")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    corr, _ = batch.collect_scores(directory, cases, records, "known_answer_correlations.csv")
    if len(corr):
        lines += ["#### The hybrids' corrections against the hidden flux (stage 07)", "",
                  "Pearson r between each correction (catchment mean per step) and the hidden flux, per "
                  "gauge and scenario, median [q25, q75] (n) over seeds, splits and gauges.", ""]
        keys = by + ["model", "correction"]
        lines += ["| " + " | ".join(k.split(".")[-1] for k in keys) + " | all scenarios | calibration | spatial |",
                  "|" + "---|" * (len(keys) + 3)]
        for key, part in corr.groupby(keys, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            cells = []
            for subset in (part, part[part["scenario"] == "calibration"], part[part["scenario"] == "spatial"]):
                r = subset["r"].dropna()
                cells.append(f"{r.median():.2f} [{r.quantile(0.25):.2f}, {r.quantile(0.75):.2f}] ({r.size})"
                             if r.size else "")
            lines.append("| " + " | ".join(map(str, key)) + " | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ markdown


def _cell(row) -> str:
    if pd.isna(row["median"]):
        return ""
    return f"{row['median']:.3f} [{row['q25']:.3f}, {row['q75']:.3f}]"


def basin_tables(label: str, scores: pd.DataFrame, metrics: Sequence[str], *, note: str = "", ncases: int = 0,
                 health: pd.DataFrame | None = None, tried: Mapping[str, str] | None = None) -> str:
    """The markdown of one basin: per metric, median [q25, q75] and tier per model and scenario;
    then the acceptance table (``tried``: model -> what was tried besides these runs) and the
    training health."""
    lines = [f"### {label}", ""]
    if note:
        lines += [note, ""]
    if scores is None or not len(scores):
        return "\n".join(lines + ["No run of this basin has finished yet.", ""])
    seeds = sorted(scores["seed"].dropna().unique().tolist()) if "seed" in scores else []
    nruns = scores["case"].nunique() if "case" in scores else 0
    lines += [f"{nruns} of {ncases} runs finished (seeds {', '.join(map(str, map(int, seeds)))}). "
              "Each cell: median [q25, q75] over every seed, split, fold and gauge of the scenario; "
              "(n) the number of scores; T the tier (1 best): models of one tier have overlapping "
              "interquartile ranges with the tier's leader and are not ranked against each other.", ""]
    stats = scenario_statistics(scores, metrics)
    models = list(dict.fromkeys(scores["model"]))
    for metric in metrics:
        part = stats[stats["metric"] == metric]
        scenarios = [s for s in SCENARIO_ORDER if s in set(part["scenario"])]
        tier_of = {s: tiers(part[part["scenario"] == s]) for s in scenarios}
        lines += [f"#### {metric.upper()}", "", "| model | " + " | ".join(scenarios) + " |",
                  "|---|" + "---|" * len(scenarios)]
        for m in models:
            cells = []
            for s in scenarios:
                row = part[(part["model"] == m) & (part["scenario"] == s)]
                if not len(row):
                    cells.append("")
                    continue
                r = row.iloc[0]
                t = tier_of[s].get(m)
                cells.append(f"{_cell(r)} ({int(r['n'])}) T{int(t)}" if pd.notna(t) else _cell(r))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    if "nse" in metrics:
        acc = acceptance(stats, "nse", health=health, tried=tried)
        lines += ["#### Acceptance (NSE medians)", "",
                  "Accepted: above the default parameters in every scenario and at least 0.9 of the best "
                  "calibration median. A model that is not gets its diagnosis (the test it failed, its tiers "
                  "out of sample, the health checks its trainings failed) and what was tried.", "",
                  _frame_markdown(acc), ""]
    if health is not None and len(health):
        shown = health[[c for c in ("runs", "unhealthy runs", "failed checks", "restarted runs") if c in health]]
        lines += ["#### Training health", "", "Runs whose trained model failed a check of "
                  "`hybridhydro.calibration.training_health` (saturated outputs, vanishing gradient, a plateau "
                  "above the parent's cost, unconverged ODE steps), and runs restarted from another seed "
                  "(`calibration.health_restarts`).", "", _frame_markdown(shown), ""]
    return "\n".join(lines)


def _frame_markdown(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join([frame.index.name or "model", *cols]) + " |", "|---|" + "---|" * len(cols)]
    for idx, row in frame.iterrows():
        lines.append(f"| {idx} | " + " | ".join(str(v) for v in row.values) + " |")
    return "\n".join(lines)


def study_markdown(spec: StudySpec, timings: Sequence[Mapping], sections: Sequence[str], *,
                   records: Path | None = None, doc: Path | None = None) -> str:
    """The generated part of the study's document: how it was run, then each basin's tables."""
    import os

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    where = ""
    if records is not None:
        shown = os.path.relpath(records, Path(doc).parent) if doc is not None else str(records)
        where = (f" Each finished run's scores, health, parameters and times are kept in `{shown}/` "
                 "(committed): the tables rebuild from it on any clone, and the study skips what it holds.")
    lines = [BEGIN, "", f"_Generated {when} by `python -m hybridhydro study` (study `{spec.name}`, seeds "
             f"{spec.seeds}) on {platform.machine()} with {os.cpu_count()} CPU core(s); rerunning the command "
             f"skips finished runs and rewrites only this section.{where}_", "",
             "| basin | runs | finished | sum of finished run times (min) | this command (min) |", "|---|---:|---:|---:|---:|"]
    for t in timings:
        now = "kept from an earlier run" if t.get("kept") else ("" if t["this command (min)"] is None else t["this command (min)"])
        lines.append(f"| {t['basin']} | {t['runs']} | {t['finished']} | {t['sum of finished run times (min)']} | {now} |")
    lines += ["", *sections, END, ""]
    return "\n".join(lines)


def write_between_markers(path: Path, text: str) -> None:
    """Put ``text`` (which starts with :data:`BEGIN` and ends with :data:`END`) in place of the
    file's marked section, keeping everything else; append it to a file without markers."""
    from ..io.netcdf import replace_atomically

    path = Path(path)
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + text.strip("\n") + rest.split(END, 1)[1]
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + text
    replace_atomically(path, lambda tmp: Path(tmp).write_text(new))
