"""A study's records (hybridhydro.pipeline.ledger): what is kept of a finished run, when a record
counts, and that the tables read from records what they read from run directories."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import yaml

from hybridhydro.pipeline import batch, ledger, study
from hybridhydro.pipeline.params import load_params
from hybridhydro.pipeline.record import RUN_MANIFEST

REPO = Path(__file__).resolve().parents[1]


def _case(name="ci_seed-0", seed=0):
    params = load_params(REPO / "params" / "ci.yaml").model_copy(update={"seed": seed})
    return batch.BatchCase(name=name, params=params, source="ci.yaml", base_case="ci", seed=seed)


def _finished_run(root: Path, case, nse=0.8) -> Path:
    """A run directory as a finished run leaves it (the files the records take from it)."""
    run = root / case.name
    (run / "models" / "gr4_mlp-distributed").mkdir(parents=True)
    (run / "params.yaml").write_text(yaml.safe_dump({"case": "ci", "calibration": {"health_restarts": 1}}))
    (run / RUN_MANIFEST).write_text(json.dumps({"stages": {
        "01_basin": {"status": "done", "seconds": 2.5, "finished": "2026-12-01T10:00:00+00:00"},
        "06_validate": {"status": "done", "seconds": 7.5, "finished": "2026-12-01T10:05:00+00:00"}}}))
    pd.DataFrame({"model": ["gr4-distributed", "default parameters"], "scenario": ["calibration"] * 2,
                  "gauge": ["SYN000"] * 2, "nse": [nse, 0.1], "kge": [0.7, 0.2]}).to_csv(
        run / "comparison_scores.csv", index=False)
    health = [{"check": "saturated outputs", "ok": False, "remedy": "tighter bounds"},
              {"check": "vanishing gradient", "ok": True, "remedy": ""}]
    (run / "models" / "gr4_mlp-distributed" / "calibration.json").write_text(
        json.dumps({"options": {"health": health, "restarts": [{"seed": 0}, {"seed": 1}]}}))
    (run / "models" / "gr4_mlp-distributed" / "weights.bin").write_bytes(b"\0" * 4096)  # not kept
    return run


def test_a_finished_run_is_kept_with_what_its_tables_need(tmp_path):
    case = _case()
    run = _finished_run(tmp_path / "runs", case)
    kept = tmp_path / "records"
    assert not ledger.is_recorded(kept, case)
    assert ledger.record_run(run, kept, case)
    folder = kept / case.name
    record = json.loads((folder / ledger.RECORD_FILE).read_text())
    assert record["seconds"] == 10.0 and record["stages"] == {"01_basin": 2.5, "06_validate": 7.5}
    assert record["finished"] == "2026-12-01T10:05:00+00:00" and record["recorded with"].startswith("0.")
    assert set(record["code"]) == {"01_basin", "06_validate"} and "not recorded" in record["code"]["01_basin"]
    assert sorted(record["files"]) == ["comparison_scores.csv", "health.json", "params.yaml"]
    assert all(len(digest) == 64 for digest in record["files"].values())
    assert not (folder / "models").exists()  # models, checkpoints and notebooks stay in the run directory
    assert ledger.is_recorded(kept, case)
    # the same finished run again: nothing written; a record of an older layout: written again
    assert not ledger.record_run(run, kept, case)
    older = {k: v for k, v in record.items() if k != "format"}
    (folder / ledger.RECORD_FILE).write_text(json.dumps(older))
    assert ledger.record_run(run, kept, case) and ledger.read_record(folder)["format"] == ledger.RECORD_FORMAT
    # the tables read the same from the record as from the run directory
    status = ledger.recorded_statuses(kept, [case])
    assert status[0]["status"] == "done" and status[0]["seconds"] == 10.0
    from_records, _ = batch.collect_scores(kept, [case], status)
    from_run, _ = batch.collect_scores(tmp_path / "runs", [case], [{"status": "done"}])
    pd.testing.assert_frame_equal(from_records, from_run)
    health_records = study.collect_health(kept, [case], status)
    health_run = study.collect_health(tmp_path / "runs", [case], [{"status": "done"}])
    pd.testing.assert_frame_equal(health_records, health_run)
    assert health_records.loc["gr4_mlp-distributed", "failed checks"] == "saturated outputs (1)"
    assert health_records.loc["gr4_mlp-distributed", "restarted runs"] == 1
    assert health_records.loc["gr4_mlp-distributed", "health_restarts"] == "1"


def test_a_record_of_other_parameters_or_missing_a_file_does_not_count(tmp_path):
    case = _case()
    kept = tmp_path / "records"
    ledger.record_run(_finished_run(tmp_path / "runs", case), kept, case)
    other = dataclasses.replace(case, params=case.params.model_copy(update={"seed": 7}))
    assert not ledger.is_recorded(kept, other)  # the parameter file changed: the case runs again
    assert ledger.recorded_statuses(kept, [other])[0]["status"] == "absent"
    # a table edited by hand (or a merge conflict in it) breaks the record's hash
    scores = kept / case.name / "comparison_scores.csv"
    original = scores.read_text()
    scores.write_text(original.replace("0.8", "0.9"))
    assert not ledger.is_recorded(kept, case)
    scores.write_text(original)
    assert ledger.is_recorded(kept, case)
    (kept / case.name / "health.json").unlink()
    assert not ledger.is_recorded(kept, case)
    (kept / case.name / ledger.RECORD_FILE).write_text("{not json")
    assert not ledger.is_recorded(kept, case) and ledger.read_record(kept / case.name) is None


def test_a_newer_run_replaces_its_record_as_a_whole(tmp_path):
    case = _case()
    kept = tmp_path / "records"
    run = _finished_run(tmp_path / "runs", case, nse=0.8)
    ledger.record_run(run, kept, case)
    (run / "known_answer_scores.csv").write_text("model,scenario,gauge,nse\n")  # an extra table this time
    manifest = json.loads((run / RUN_MANIFEST).read_text())
    manifest["stages"]["06_validate"]["finished"] = "2026-12-02T08:00:00+00:00"
    (run / RUN_MANIFEST).write_text(json.dumps(manifest))
    pd.read_csv(run / "comparison_scores.csv").assign(nse=[0.9, 0.1]).to_csv(run / "comparison_scores.csv", index=False)
    assert ledger.record_run(run, kept, case)
    assert pd.read_csv(kept / case.name / "comparison_scores.csv")["nse"].tolist() == [0.9, 0.1]
    assert "known_answer_scores.csv" in ledger.read_record(kept / case.name)["files"]
    assert [p.name for p in kept.iterdir()] == [case.name]  # no temporary folder left behind


def test_a_records_folder_that_cannot_be_written_is_named(tmp_path):
    import os

    import pytest

    from hybridhydro.pipeline.record import PipelineError

    case = _case()
    run = _finished_run(tmp_path / "runs", case)
    blocked = tmp_path / "records"
    blocked.write_text("a file where the folder should be")
    with pytest.raises(PipelineError, match=r"cannot keep the record of ci_seed-0 in .*records/basin: Not a directory; .*--records DIR"):
        ledger.record_run(run, blocked / "basin", case)
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o500)
        with pytest.raises(PipelineError, match="cannot keep the record"):
            ledger.record_run(run, tmp_path / "ro", case)


def test_the_comparison_study_keeps_its_records_beside_its_document():
    spec, folder = study.load_study(REPO / "params" / "studies" / "comparison.yaml")
    assert (folder / spec.records).resolve() == (REPO / "docs" / "studies" / "comparison").resolve()
    assert (folder / spec.doc).resolve().parent == (REPO / "docs").resolve()
