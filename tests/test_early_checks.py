"""Early checks (hybridhydro.pipeline.checks): a basin that cannot serve the models or the split
is refused by `check` (exit 2) and before stage 01, with a message naming what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import hybridhydro as hh
from hybridhydro.__main__ import main
from hybridhydro.pipeline import load_params
from hybridhydro.pipeline.checks import CaseError, basin_metadata, case_problems, check_case
from hybridhydro.pipeline.study import expand_basin, load_study

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(nrow=6, ncol=6, ntime=48, dt=3600, ngauge=2, seed=1)
MODELS = ["gr4-uniform", "gr4-distributed"]


@pytest.fixture(scope="module")
def synthetic():
    return hh.synthetic_basin(**SMALL)


def case(folder: Path, basin: dict, **calibration) -> Path:
    path = folder / "case.yaml"
    path.write_text(yaml.safe_dump({"extends": None, "basin": basin,
                                    "calibration": {"models": MODELS, "baselines": [], **calibration}}))
    return path


def written(folder: Path, ds, name="basin.nc") -> str:
    hh.write_basin(ds, folder / name, overwrite=True)
    return name


def test_a_served_case_passes(tmp_path, synthetic):
    check_case(case(tmp_path, {"source": written(tmp_path, synthetic)}))


@pytest.mark.parametrize("model", ["gr4-ann", "gr4-cnn", "gr4-multi-linear", "gr4_mlp-ann", "gr4_ude-cnn"])
def test_models_that_need_descriptors_are_refused_on_a_basin_without(tmp_path, synthetic, model):
    bare = synthetic.drop_vars("descriptors").drop_dims("descriptor")
    path = case(tmp_path, {"source": written(tmp_path, bare)}, models=[*MODELS, model])
    with pytest.raises(CaseError, match=rf"calibration.models \['{model}'\].*descriptors.*has none.*remove these models"):
        check_case(path)
    check_case(case(tmp_path, {"source": "basin.nc"}))  # the same basin serves the uniform and distributed models


def test_a_calibration_gauge_without_observations_in_the_period_is_refused(tmp_path, synthetic):
    blind = synthetic.copy(deep=True)
    blind["qobs"][1, :30] = np.nan  # SYN001 (the outlet) unobserved over the calibration half
    path = case(tmp_path, {"source": written(tmp_path, blind)}, validation_gauges=None)
    with pytest.raises(CaseError, match=r"calibration scenario has no observed discharge at gauge\(s\) \['SYN001'\]"):
        check_case(path)


def test_a_validation_period_without_observations_is_refused(tmp_path, synthetic):
    blind = synthetic.copy(deep=True)
    blind["qobs"][:, 26:] = np.nan  # the validation half (after the calibration one, which ends at step 25)
    path = case(tmp_path, {"source": written(tmp_path, blind)})
    with pytest.raises(CaseError, match=r"temporal scenario .*\(calibration.validation_period\)"):
        check_case(path)


def test_an_unknown_validation_gauge_is_refused(tmp_path, synthetic):
    path = case(tmp_path, {"source": written(tmp_path, synthetic)}, validation_gauges=["NOPE"])
    with pytest.raises(CaseError, match=r"validation gauge\(s\) \['NOPE'\] are not in the basin; its gauges are"):
        check_case(path)


def test_a_period_inside_the_spinup_is_refused(tmp_path, synthetic):
    path = case(tmp_path, {"source": written(tmp_path, synthetic), "spinup_start": "2020-01-01",
                           "start": "2020-01-01 12:00"},
                calibration_period=["2020-01-01 06:00", "2020-01-02"])
    with pytest.raises(CaseError, match="starts inside the spin-up"):
        check_case(path)


def test_check_command_exits_2_with_the_message(tmp_path, synthetic, capsys):
    bare = synthetic.drop_vars("descriptors").drop_dims("descriptor")
    path = case(tmp_path, {"source": written(tmp_path, bare)}, models=["gr4-uniform", "gr4-ann"])
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "gr4-ann" in err and "descriptors" in err and str(path) in err
    assert main(["check", str(path), "--stages", "01_basin"]) == 0  # stage 01 alone needs no model


def test_run_refuses_before_stage_01(tmp_path, synthetic):
    bare = synthetic.drop_vars("descriptors").drop_dims("descriptor")
    path = case(tmp_path, {"source": written(tmp_path, bare)}, models=["gr4-uniform", "gr4-ann"])
    assert main(["run", str(path), "--output-root", str(tmp_path / "runs"), "--no-progress"]) == 2
    assert not (tmp_path / "runs" / "case").exists()  # nothing ran, nothing written


def test_the_mapping_says_what_is_missing_when_reached_through_the_api(synthetic):
    bare = synthetic.drop_vars("descriptors").drop_dims("descriptor")
    with pytest.raises(ValueError, match="the basin has no descriptors"):
        hh.make_mapping("ann", ("cp",), bare)
    with pytest.raises(ValueError, match="has no descriptors"):
        hh.report.descriptor_table(bare)


def test_metadata_of_a_file_matches_the_basin(tmp_path, synthetic):
    meta = basin_metadata(load_params(case(tmp_path, {"source": written(tmp_path, synthetic, "b.zarr")})))
    assert meta.gauges == tuple(map(str, synthetic["gauge"].values))
    assert meta.descriptors == tuple(map(str, synthetic["descriptor"].values))
    np.testing.assert_array_equal(meta.times, synthetic["time"].values)
    np.testing.assert_array_equal(meta.observed, np.isfinite(synthetic["qobs"].values))


def test_metadata_of_a_smash_layout_reads_no_forcing():
    """Cance's metadata from its setup, gauges and qobs only (the forcing rasters are not opened)."""
    pytest.importorskip("smash")
    cfg = load_params(ROOT / "params" / "cance.yaml")
    meta = basin_metadata(cfg)
    assert len(meta.gauges) == 3 and meta.descriptors and meta.observed.any(axis=1).all()
    assert meta.times[0] > np.datetime64(cfg.basin.start) and meta.times[-1] == np.datetime64(cfg.basin.end)


def _cases():
    files = sorted((ROOT / "params").glob("*.yaml"))
    out = [(f.name, load_params(f)) for f in files]
    for file in sorted((ROOT / "params" / "studies").glob("*.yaml")):
        if "basins" not in (yaml.safe_load(file.read_text()) or {}):  # a case file of the studies
            out.append((f"studies/{file.name}", load_params(file)))
            continue
        spec, folder = load_study(file)
        for b in spec.basins:
            out += [(f"{file.stem}:{c.name}", c.params) for c in expand_basin(spec, b, folder)]
    return out


def test_the_shipped_parameters_pass():
    """Every params/*.yaml and every case of params/studies/*.yaml (metadata read once per basin)."""
    pytest.importorskip("smash")
    cache, failed = {}, []
    for name, params in _cases():
        key = json.dumps(params.basin.model_dump(mode="json"), sort_keys=True)
        if key not in cache:
            cache[key] = basin_metadata(params)
        problems = case_problems(params, cache[key])
        if problems:
            failed.append(f"{name}: {problems}")
    assert not failed, "\n".join(failed)
