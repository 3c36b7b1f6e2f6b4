"""The comparison study: statistics that pool seeds, splits and folds; tiers; acceptance; the command."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from hybridhydro.pipeline import study

REPO = Path(__file__).resolve().parents[1]


def _stats(rows):
    return pd.DataFrame(rows, columns=["model", "scenario", "metric", "n", "median", "q25", "q75"])


def test_tiers_rank_only_where_the_intervals_do_not_overlap():
    stats = _stats([("a", "calibration", "nse", 5, 0.90, 0.85, 0.95),
                    ("b", "calibration", "nse", 5, 0.88, 0.80, 0.90),   # overlaps a: same tier
                    ("c", "calibration", "nse", 5, 0.60, 0.50, 0.70),   # below a's q25: next tier
                    ("d", "calibration", "nse", 5, 0.55, 0.45, 0.62)])  # overlaps c
    assert study.tiers(stats).tolist() == [1, 1, 2, 2]
    # the check can fail: widen c's interval up to a's and it joins tier 1
    stats.loc[2, "q75"] = 0.86
    assert study.tiers(stats).tolist() == [1, 1, 1, 2]


def test_statistics_pool_seeds_splits_folds_and_gauges():
    scores = pd.DataFrame({"model": ["m"] * 4 + ["default parameters"] * 4,
                           "scenario": ["spatial"] * 8, "gauge": ["A", "B", "A", "B"] * 2,
                           "seed": [0, 0, 1, 1] * 2, "nse": [0.1, 0.2, 0.3, 0.4, 0.0, 0.0, 0.0, 0.0]})
    stats = study.scenario_statistics(scores, ["nse"])
    row = stats[stats["model"] == "m"].iloc[0]
    assert (row["n"], row["median"]) == (4, pytest.approx(0.25))
    assert (row["q25"], row["q75"]) == (pytest.approx(0.175), pytest.approx(0.325))


def test_acceptance_asks_for_every_scenario_above_default_and_0_9_of_the_best():
    rows = []
    for model, cal, tem in (("default parameters", 0.1, 0.2), ("good", 0.9, 0.8), ("weak", 0.7, 0.6),
                            ("below", 0.85, 0.1)):
        rows += [(model, "calibration", "nse", 3, cal, cal, cal), (model, "temporal", "nse", 3, tem, tem, tem)]
    acc = study.acceptance(_stats(rows))
    assert acc.loc["good", "accepted"] and not acc.loc["weak", "accepted"] and not acc.loc["below", "accepted"]
    assert acc.loc["below", "scenarios not above default"] == "temporal"
    assert acc.loc["weak", "calibration / best"] == pytest.approx(0.7 / 0.9, abs=1e-3)
    # an accepted model needs no diagnosis; the others say which test they failed and by how much
    assert acc.loc["good", "diagnosis"] == "" and acc.loc["good", "tried"] == ""
    assert "calibration median 0.700, 0.778 of the best (good 0.900; 0.9 asked)" in acc.loc["weak", "diagnosis"]
    assert "at or below the default parameters' in temporal" in acc.loc["below", "diagnosis"]
    assert "out of sample: temporal T" in acc.loc["weak", "diagnosis"]


def test_acceptance_diagnosis_reads_the_training_health(tmp_path):
    import json

    import yaml

    rows = []
    for model, cal in (("default parameters", 0.1), ("good", 0.9), ("weak", 0.6)):
        rows += [(model, "calibration", "nse", 3, cal, cal, cal), (model, "temporal", "nse", 3, cal, cal, cal)]
    cases = []
    for k, restarts in enumerate(([], [{"seed": 0}, {"seed": 1}])):
        run = tmp_path / f"case{k}"
        (run / "models" / "weak").mkdir(parents=True)
        (run / "params.yaml").write_text(yaml.safe_dump({"calibration": {"health_restarts": 1}}))
        health = [{"check": "unconverged ODE steps", "ok": False, "remedy": "ode_solver='conservative'"},
                  {"check": "vanishing gradient", "ok": True, "remedy": ""}]
        (run / "models" / "weak" / "calibration.json").write_text(
            json.dumps({"options": {"health": health, **({"restarts": restarts} if restarts else {})}}))
        cases.append(study.batch.BatchCase(name=f"case{k}", params=None, source="x.yaml", base_case="x"))
    health = study.collect_health(tmp_path, cases)
    assert health.loc["weak", "restarted runs"] == 1 and health.loc["weak", "health_restarts"] == "1"
    acc = study.acceptance(_stats(rows), health=health, tried={"weak": "tighter bounds (remedies.md)"})
    assert "; tighter bounds (remedies.md); named by the failed checks, not used in these runs" in acc.loc["weak", "tried"]
    assert "health: unconverged ODE steps (2) in 2 of 2 runs" in acc.loc["weak", "diagnosis"]
    assert acc.loc["weak", "tried"].startswith("1 of 2 runs restarted from another seed (calibration.health_restarts: 1)")
    assert "ode_solver='conservative'" in acc.loc["weak", "tried"]


def test_tables_replace_only_their_section(tmp_path):
    doc = tmp_path / "comparison.md"
    doc.write_text(f"# Title\n\nwritten by hand\n\n{study.BEGIN}\nold tables\n{study.END}\n\n## Verdict\n\nkept\n")
    study.write_between_markers(doc, f"{study.BEGIN}\nnew tables\n{study.END}\n")
    text = doc.read_text()
    assert "old tables" not in text and "new tables" in text
    assert text.startswith("# Title\n\nwritten by hand\n\n") and text.endswith("## Verdict\n\nkept\n")
    fresh = tmp_path / "fresh.md"
    study.write_between_markers(fresh, f"{study.BEGIN}\nt\n{study.END}\n")
    assert fresh.read_text().count(study.BEGIN) == 1


def test_a_bad_study_file_says_what_and_where(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("name: s\nbasins: [{label: A, params: nowhere.yaml}]\n")
    with pytest.raises(study.StudyError, match="basin A: no parameter file"):
        study.load_study(bad)
    bad.write_text("name: s\nbasins: [{label: A, params: x.yaml, sett: {}}]\n")
    with pytest.raises(study.StudyError, match="sett"):
        study.load_study(bad)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the records folder should be")
    with pytest.raises(study.StudyError, match=r"records: .*blocked/Lez cannot hold the study's records \(Not a "
                                               r"directory\); nothing was run.*--records DIR"):
        study.run_study(REPO / "params" / "studies" / "comparison.yaml", output_root=tmp_path / "runs",
                        records=blocked / "Lez", basins=["Lez"], seeds="0")
    assert not (tmp_path / "runs").exists()
    with pytest.raises(study.StudyError, match="no such study file"):
        study.load_study(tmp_path / "none.yaml")
    with pytest.raises(study.StudyError, match=r"--basins Lezz: not in .* \(its basins: Lez, Cance, known-answer\)"):
        study.run_study(REPO / "params" / "studies" / "comparison.yaml", basins=["Lezz"], output_root=tmp_path)


def test_a_case_no_basin_can_serve_stops_the_study_before_its_first_run(tmp_path):
    spec = tmp_path / "studies" / "s.yaml"
    spec.parent.mkdir()
    shutil.copy(REPO / "params" / "studies" / "ci-study.yaml", spec.parent / "ci-study.yaml")
    shutil.copy(REPO / "params" / "ci.yaml", tmp_path / "ci.yaml")
    spec.write_text("name: s\nseeds: 0-1\nbasins:\n"
                    "  - {label: A, params: ci-study.yaml}\n"
                    "  - {label: B, params: ci-study.yaml, set: {calibration.validation_gauges: [[SYN000], [NOPE]]}}\n")
    with pytest.raises(study.StudyError, match=r"2 problem\(s\) in the 6 case\(s\); nothing was run or written"
                                               r"(.|\n)*B: ci-study_validation_gauges-NOPE_seed-0: calibration: validation "
                                               r"gauge\(s\) \['NOPE'\] are not in the basin"):
        study.run_study(spec, output_root=tmp_path / "runs", jobs=1)
    assert not (tmp_path / "runs").exists()


def test_the_shipped_studies_expand_to_seeds_x_splits_x_folds():
    spec, folder = study.load_study(REPO / "params" / "studies" / "comparison.yaml")
    assert [b.label for b in spec.basins] == ["Lez", "Cance", "known-answer"]
    for basin in spec.basins:
        cases = study.expand_basin(spec, basin, folder)
        assert {c.seed for c in cases} == set(range(5))
        assert {c.params.calibration.swap_periods for c in cases} == {False, True}
        held = {tuple(c.params.calibration.validation_gauges) for c in cases}
        if basin.label == "known-answer":  # two truths, a fixed pair of non-nested gauges held out
            assert len(cases) == 5 * 2 * 2 and len(held) == 1
            assert {c.params.basin.known_answer.truth for c in cases} == {"exchange", "gr4"}
        else:  # leave one gauge out: every gauge in turn
            assert len(cases) == 5 * 2 * 3 and len(held) == 3, basin.label


def _tiny_study(tmp_path):
    """The tiny comparison study's files in ``tmp_path``, and an empty document with its markers."""
    folder = tmp_path / "studies"
    shutil.copytree(REPO / "params" / "studies", folder)
    shutil.copy(REPO / "params" / "ci.yaml", tmp_path / "ci.yaml")
    shutil.copy(REPO / "params" / "base.yaml", tmp_path / "base.yaml")
    doc, records = tmp_path / "doc.md", tmp_path / "records"
    doc.write_text(f"hand text\n\n{study.BEGIN}\n{study.END}\n")
    return folder / "ci-comparison.yaml", doc, records


def _check_records(folder, n):
    """The ``n`` runs recorded in ``folder`` as each finished: scores, health of every trained
    model, parameters, stage times and the code that ran them. Returns their names."""
    from hybridhydro.pipeline import ledger

    kept = sorted(p.name for p in folder.iterdir())
    assert len(kept) == n and not any(k.startswith(".") for k in kept), kept
    for case in kept:
        record = json.loads((folder / case / ledger.RECORD_FILE).read_text())
        assert {"comparison_scores.csv", "params.yaml", "health.json"} <= set(record["files"])
        assert record["seconds"] > 0 and set(record["stages"]) >= {"01_basin", "06_validate"}
        assert record["code"] and all(c.startswith("0.") for c in record["code"].values())  # the runner recorded it
        assert json.loads((folder / case / "health.json").read_text())  # every trained model
    return kept


def test_one_seed_of_the_tiny_study_runs_records_and_is_skipped_on_a_fresh_clone(tmp_path):
    """The command end to end on seed 0 of the tiny study (both splits, one of them swapped):
    batches, scores, tables and records; a rerun skips every run; on a fresh clone (no run
    directory) the records alone skip the runs and rebuild the same tables. The four-run version on
    two workers is the slow test below."""
    from hybridhydro.pipeline import ledger

    spec_file, doc, records = _tiny_study(tmp_path)
    lines: list[str] = []
    done = study.run_study(spec_file, output_root=tmp_path / "runs", jobs=1, doc=doc, records=records,
                           echo=lines.append, seeds="0")
    assert done.failed == []
    text = doc.read_text()
    assert text.startswith("hand text") and "2 of 4 runs finished (seeds 0)" in text
    assert "| gr4-distributed |" in text and "T1" in text and "#### Acceptance" in text
    kept = _check_records(records / "synthetic", 2)
    assert {"swap_periods-true" in k for k in kept} == {True, False}, kept
    # a rerun of the same seed runs nothing
    lines.clear()
    again = study.run_study(spec_file, output_root=tmp_path / "runs", jobs=1, doc=doc, records=records,
                            echo=lines.append, seeds="0")
    assert not again.failed and any("2 run(s) recorded in" in line for line in lines)
    assert not any("batch" in line for line in lines), lines
    # without the line that says when (this command's own minutes are those of a call that ran nothing)
    tables = doc.read_text().split(study.BEGIN)[1].split("\n", 3)[3]
    # a fresh clone: no run directory at all; nothing runs, and the tables are the same
    shutil.rmtree(tmp_path / "runs")
    lines.clear()
    fresh = study.run_study(spec_file, output_root=tmp_path / "runs", jobs=1, doc=doc, records=records,
                            echo=lines.append, seeds="0")
    assert not fresh.failed and any("2 run(s) recorded in" in line for line in lines)
    assert not any("batch" in line for line in lines) and not (tmp_path / "runs").exists()
    assert doc.read_text().split(study.BEGIN)[1].split("\n", 3)[3] == tables
    # the check can fail: a record made with other parameters, or missing a file it lists, is not a record
    spec, studies = study.load_study(spec_file)
    cases = [c for c in study.expand_basin(spec, spec.basins[0], studies) if c.params.seed == 0]
    assert len(cases) == 2 and all(ledger.is_recorded(records / "synthetic", c) for c in cases)
    changed = cases[0].params.model_copy(update={"seed": 99})
    assert not ledger.is_recorded(records / "synthetic", dataclasses.replace(cases[0], params=changed))
    (records / "synthetic" / cases[1].name / "comparison_scores.csv").unlink()
    assert not ledger.is_recorded(records / "synthetic", cases[1])
    assert "1 of 4 runs finished" in study.run_study(spec_file, output_root=tmp_path / "runs", doc=doc,
                                                      records=records, tables_only=True,
                                                      echo=lines.append).markdown


@pytest.mark.slow
def test_the_tiny_study_runs_and_writes_its_tables(tmp_path):
    """The command end to end on the whole tiny study (2 seeds x 2 splits, two workers): batches,
    scores, tables; a later call for the second seed alone finds its runs recorded and the tables
    still cover both seeds; on a fresh clone the records alone skip the runs and rebuild the tables."""
    from hybridhydro.pipeline import ledger

    spec_file, doc, records = _tiny_study(tmp_path)
    lines: list[str] = []
    done = study.run_study(spec_file, output_root=tmp_path / "runs", jobs=2, doc=doc,
                           records=records, echo=lines.append)
    assert done.failed == []
    text = doc.read_text()
    assert text.startswith("hand text")
    assert "4 of 4 runs finished (seeds 0, 1)" in text
    assert "| gr4-distributed |" in text and "T1" in text and "#### Acceptance" in text
    # each run was recorded as it finished: scores, health, parameters and times
    _check_records(records / "synthetic", 4)
    again = study.run_study(spec_file, output_root=tmp_path / "runs", jobs=2, doc=doc,
                            records=records, echo=lines.append, seeds="1")
    assert not again.failed and any("2 run(s) recorded in" in line for line in lines)
    assert "4 of 4 runs finished (seeds 0, 1)" in doc.read_text()  # the tables cover every seed that finished
    tables = doc.read_text().split(study.BEGIN)[1].split("\n", 3)[3]  # without the line that says when
    # a fresh clone: no run directory at all; nothing runs, and the tables are the same
    shutil.rmtree(tmp_path / "runs")
    lines.clear()
    fresh = study.run_study(spec_file, output_root=tmp_path / "runs", jobs=2, doc=doc,
                            records=records, echo=lines.append)
    assert not fresh.failed and any("4 run(s) recorded in" in line for line in lines)
    assert not any("batch" in line for line in lines) and not (tmp_path / "runs").exists()
    assert doc.read_text().split(study.BEGIN)[1].split("\n", 3)[3] == tables
    # the check can fail: a record made with other parameters, or missing a file it lists, is not a record
    spec, studies = study.load_study(spec_file)
    cases = study.expand_basin(spec, spec.basins[0], studies)
    assert all(ledger.is_recorded(records / "synthetic", c) for c in cases)
    changed = cases[0].params.model_copy(update={"seed": 99})
    assert not ledger.is_recorded(records / "synthetic", dataclasses.replace(cases[0], params=changed))
    (records / "synthetic" / cases[1].name / "comparison_scores.csv").unlink()
    assert not ledger.is_recorded(records / "synthetic", cases[1])
    assert "3 of 4 runs finished" in study.run_study(spec_file, output_root=tmp_path / "runs",
                                                      doc=doc, records=records, tables_only=True,
                                                      echo=lines.append).markdown


def test_a_basin_without_records_keeps_the_tables_the_document_holds(tmp_path):
    """Tables written before the study kept records are not thrown away by a rerun on a clone
    that has no run of that basin: they are kept, marked; a basin never run says so."""
    old = (f"# Study\n\n{study.BEGIN}\n\n_Generated long ago_\n\n| basin | runs | finished | sum of finished run times (min) "
           "| this command (min) |\n|---|---:|---:|---:|---:|\n| synthetic | 4 | 4 | 12.5 |  |\n\n### synthetic\n\n"
           "4 of 4 runs finished (seeds 0, 1). Each cell: ...\n\n#### NSE\n\n| model | calibration |\n|---|---|\n"
           f"| gr4-distributed | 0.900 [0.800, 0.950] (4) T1 |\n\n{study.END}\n\n## Verdict\n")
    doc = tmp_path / "doc.md"
    doc.write_text(old)
    lines: list[str] = []
    result = study.run_study(REPO / "params" / "studies" / "ci-comparison.yaml", output_root=tmp_path / "runs",
                             doc=doc, records=tmp_path / "records", tables_only=True, echo=lines.append)
    text = doc.read_text()
    assert "| gr4-distributed | 0.900 [0.800, 0.950] (4) T1 |" in text and "## Verdict" in text
    assert study.KEPT_NOTE.format(label="synthetic") in text
    assert "| synthetic | 4 | 4 | 12.5 | kept from an earlier run |" in result.markdown
    assert any("kept as they were" in line for line in lines)
    # kept once: a second pass does not stack the note
    study.run_study(REPO / "params" / "studies" / "ci-comparison.yaml", output_root=tmp_path / "runs",
                    doc=doc, records=tmp_path / "records", tables_only=True, echo=lines.append)
    assert doc.read_text().count("These tables were written by an earlier run") == 1
    # the check can fail: a document without tables for the basin gets the plain "not yet" section
    doc.write_text(f"{study.BEGIN}\n{study.END}\n")
    study.run_study(REPO / "params" / "studies" / "ci-comparison.yaml", output_root=tmp_path / "runs",
                    doc=doc, records=tmp_path / "records", tables_only=True, echo=lines.append)
    assert "No run of this basin has finished yet." in doc.read_text()


def test_known_answer_tables_pool_the_stage_07_files(tmp_path):
    from types import SimpleNamespace

    cases, records = [], []
    for truth in ("exchange", "gr4"):
        for seed in (0, 1):
            name = f"ka_truth-{truth}_seed-{seed}"
            (tmp_path / name).mkdir()
            pd.DataFrame({"model": ["gr4, true parameters", "gr4_mlp-distributed"], "scenario": ["calibration"] * 2,
                          "gauge": ["KA01"] * 2, "nse": [0.8, 0.9 + 0.01 * seed], "kge": [0.7, 0.8]}).to_csv(
                tmp_path / name / "known_answer_scores.csv", index=False)
            pd.DataFrame({"model": ["gr4_mlp-distributed"], "correction": ["water"], "scenario": ["calibration"],
                          "gauge": ["KA01"], "r": [0.5 + 0.1 * seed]}).to_csv(
                tmp_path / name / "known_answer_correlations.csv", index=False)
            cases.append(SimpleNamespace(name=name, base_case="ka", grid=(("basin.known_answer.truth", truth),),
                                         seed=seed))
            records.append({"status": "done"})
    records[-1]["status"] = "unfinished"  # an unfinished run is left out
    text = study.known_answer_tables(tmp_path, cases, records, ["nse"])
    assert "*truth: exchange*" in text and "*truth: gr4*" in text
    assert "| gr4_mlp-distributed | 0.905 [0.903, 0.907] (2) |" in text  # exchange: seeds 0 and 1
    assert "| gr4_mlp-distributed | 0.900 [0.900, 0.900] (1) |" in text  # gr4: seed 1 unfinished
    assert "| exchange | gr4_mlp-distributed | water | 0.55 [0.53, 0.57] (2)" in text
    assert study.known_answer_tables(tmp_path / "none", [], [], ["nse"]) == ""


def test_a_study_copied_by_init_runs_the_copied_notebooks(tmp_path):
    from hybridhydro import templates
    from hybridhydro.pipeline import runner

    templates.init(tmp_path / "work")
    spec, folder = study.load_study(tmp_path / "work" / "params" / "studies" / "ci-comparison.yaml")
    for basin in spec.basins:
        assert study.basin_notebooks(basin, folder) == (tmp_path / "work" / "notebooks").resolve()
    # in the repository, its own notebooks
    spec, folder = study.load_study(Path(__file__).resolve().parents[1] / "params" / "studies" / "ci-comparison.yaml")
    assert study.basin_notebooks(spec.basins[0], folder) == runner.NOTEBOOKS_DIR
