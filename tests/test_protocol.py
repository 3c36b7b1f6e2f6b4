"""The comparison protocol: splits and scenarios, model names, smash's hybrid training workflow,
saved calibrations, scores and the comparison table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hybridhydro as hh
from hybridhydro import protocol
from hybridhydro.protocol import ModelName, Split, make_split

TRUTH = {"cp": 300.0, "ct": 90.0, "kexc": -0.3, "llr": 30.0}


@pytest.fixture(scope="module")
def basin():
    """3 gauges, 160 hourly steps, observations from gr4-lr with TRUTH."""
    b = hh.synthetic_basin(nrow=8, ncol=8, ntime=160, seed=1, ngauge=3)
    b["qobs"] = hh.simulate(b, "gr4-lr", TRUTH)["q"].copy()
    return b


@pytest.fixture(scope="module")
def split(basin):
    return make_split(basin)


def test_default_split_holds_out_the_smallest_gauge(basin, split):
    area = basin["area_dln"].values
    codes = [str(g) for g in basin["gauge"].values]
    assert split.validation_gauges == (codes[int(np.argmin(area))],)
    assert set(split.calibration_gauges) | set(split.validation_gauges) == set(codes)
    assert not set(split.calibration_gauges) & set(split.validation_gauges)
    times = pd.DatetimeIndex(basin["time"].values)
    cal = (times > pd.Timestamp(split.calibration_period[0])) & (times <= pd.Timestamp(split.calibration_period[1]))
    val = (times > pd.Timestamp(split.validation_period[0])) & (times <= pd.Timestamp(split.validation_period[1]))
    assert not (cal & val).any() and cal.sum() > 0 and val.sum() > 0
    assert int(np.argmax(cal)) == 16  # 10 % of the steps warm up
    assert split.scenario("spatio-temporal") == (split.validation_period, split.validation_gauges)
    assert split.scenario("temporal") == (split.validation_period, split.calibration_gauges)
    assert list(split.describe().index) == list(protocol.SCENARIOS)


def test_swapped_split_exchanges_the_periods(basin, split):
    swapped = make_split(basin, swap_periods=True)
    assert swapped.calibration_period == split.validation_period
    assert swapped.validation_period == split.calibration_period
    assert swapped.calibration_gauges == split.calibration_gauges
    explicit = make_split(basin, calibration_period=split.calibration_period, validation_period=split.validation_period,
                          swap_periods=True)
    assert explicit == swapped
    # leave-one-gauge-out: each gauge held out in turn, the others calibrate
    codes = [str(g) for g in basin["gauge"].values]
    folds = [make_split(basin, validation_gauges=[g]) for g in codes]
    assert [f.validation_gauges for f in folds] == [(g,) for g in codes]
    assert all(g not in f.calibration_gauges for f, g in zip(folds, codes))


def test_split_round_trips_and_says_what_is_wrong(basin, split, tmp_path):
    assert Split.load(split.save(tmp_path / "split.json")) == split
    with pytest.raises(FileNotFoundError, match="stage 03_calibrate writes the split"):
        Split.load(tmp_path / "none.json")
    with pytest.raises(ValueError, match="not in the basin"):
        make_split(basin, validation_gauges=["XXX"])
    with pytest.raises(ValueError, match="keep one at least"):
        make_split(basin, validation_gauges=[str(g) for g in basin["gauge"].values])
    with pytest.raises(ValueError, match="holds no step"):
        make_split(basin, calibration_period=("1990-01-01", "1990-02-01"))
    with pytest.raises(ValueError, match="unknown scenario"):
        split.scenario("future")
    assert make_split(basin, validation_gauges=None).validation_gauges == ()


def test_model_names_stages_and_parents():
    assert ModelName.parse("gr4_ude-ann") == ModelName("gr4_ude", "ann")
    assert ModelName.parse("gr4_ude-ann").structure("kw") == "gr4_ude-kw"
    assert [protocol.stage_of(m) for m in ("gr4-uniform", "gr4_ode-distributed", "gr4-cnn", "gr4_mlp-ann")] == [
        "03_calibrate", "03_calibrate", "04_regionalize", "05_hybrid"]
    assert protocol.parent_model("gr4_mlp-distributed") == "gr4-uniform"
    assert protocol.parent_model("gr4_ude-ann") == "gr4_ode-ann"
    assert protocol.parent_model("gr4-ann") is None
    for bad, match in (("gr4", "<hydrology>-<mapping>"), ("gr4-lr", "<hydrology>-<mapping>"), ("gr9-ann", "unknown hydrology")):
        with pytest.raises(ValueError, match=match):
            ModelName.parse(bad)
    assert all(str(ModelName.parse(m)) == m for m in protocol.PAPER_MODELS)
    assert len(protocol.PAPER_MODELS) == 13 and {"gr4_mlp-cnn", "gr4_ode-cnn", "gr4_ude-cnn"} <= set(protocol.PAPER_MODELS)
    assert protocol.parent_structure("gr4_ude-lr") == "gr4_ode-lr"
    assert protocol.parent_structure("gr4_mlp-kw") == "gr4-kw"
    assert protocol.parent_structure("ssn-gr6_mlp-lr") == "ssn-gr6-lr"
    with pytest.raises(ValueError, match="not a hybrid"):
        protocol.parent_structure("gr4-lr")


def test_train_model_takes_the_parameters_optimizer_section_as_it_is(basin, split):
    """``settings=cfg.calibration.optimizers`` (pydantic sections) trains as the plain dict does."""
    from hybridhydro.pipeline import load_params

    optimizers = load_params({"calibration": {"optimizers": {"uniform": {"maxiter": 1}}}}).calibration.optimizers
    sections = protocol.train_model(basin, "gr4-uniform", split, settings=optimizers, progress=False)
    plain = protocol.train_model(basin, "gr4-uniform", split, settings={"uniform": {"maxiter": 1}}, progress=False)
    assert sections.optimizer == "sbs" and len(sections.history) == len(plain.history)
    np.testing.assert_array_equal(sections.history["cost"].values, plain.history["cost"].values)


def test_train_hybrid_follows_smashs_three_steps(basin, split):
    """Pre-calibration of the parent, a small network (the hybrid starts at the parent's cost),
    then joint training that lowers the cost and moves both the parameters and the weights."""
    result = protocol.train_model(basin, "gr4_mlp-distributed", split, settings={"distributed": {"maxiter": 6}},
                                  hybrid={"hidden": (8,), "pre_maxiter": 2, "weight_scale": 0.01}, progress=False)
    pre = result.options["pre_calibration"]
    assert (pre["structure"], pre["mapping"], pre["optimizer"]) == ("gr4-lr", "uniform", "sbs")
    start, end = result.history["cost"].iloc[0], result.history["cost"].iloc[-1]
    assert abs(start - pre["final_cost"]) < 0.05 * max(pre["final_cost"], 1e-3)  # small network: near the parent
    assert end < start
    assert result.nn_parameters["weight_1"].shape == (8, 4)
    assert np.nanstd(result.parameters["cp"]) > 0  # distributed after the uniform pre-calibration


def test_warm_start_continues_a_saved_regionalisation(basin, split, tmp_path):
    settings = {"ann": {"maxiter": 3, "learning_rate": 0.01}}
    first = protocol.train_model(basin, "gr4-ann", split, settings=settings, progress=False)
    first.save(tmp_path / "gr4-ann")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        first.save(tmp_path / "gr4-ann")
    loaded = hh.load_calibration(tmp_path / "gr4-ann")
    again = hh.calibrate(basin, "gr4-lr", "ann", "adam", 0, period=split.calibration_period,
                         gauges=list(split.calibration_gauges), warm_start=loaded, progress=False)
    assert again.history["cost"].iloc[0] == pytest.approx(first.history["cost"].iloc[-1], rel=1e-6)
    np.testing.assert_allclose(loaded.simulate(basin)["q"].values, first.simulate(basin)["q"].values)
    with pytest.raises(ValueError, match="can only start a 'ann' calibration"):
        hh.calibrate(basin, "gr4-lr", "distributed", "lbfgsb", 0, warm_start=loaded, progress=False)
    assert loaded.parameter_maps()["cp"].attrs["units"] == "mm"


def test_scores_and_comparison_table(basin, split):
    truth = hh.simulate(basin, "gr4-lr", TRUTH, return_fluxes=True, return_discharge_field=True)
    default = hh.simulate(basin, "gr4-lr")
    scores = protocol.score({"truth": truth, "default": default}, basin, split)
    assert len(scores) == 2 * (2 * len(split.calibration_gauges) + 2 * len(split.validation_gauges))
    assert np.allclose(scores[scores["model"] == "truth"][["nse", "kge"]].values, 1.0, atol=1e-5)
    table = protocol.comparison_table(scores, "nse")
    assert list(table.index) == ["truth", "default"]
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == list(protocol.SCENARIOS)
    markdown = protocol.to_markdown(table)
    assert markdown.count("\n") == 3 and "| truth | 1.000 |" in markdown
    closure = protocol.balance_closure(truth, basin)
    assert closure["worst"] < 1e-4 and closure["unconverged"] == 0.0
    with pytest.raises(ValueError, match="unknown metric"):
        protocol.score({"truth": truth}, basin, split, metrics=("nse", "r2"))
    with pytest.raises(FileNotFoundError, match="stage 04_regionalize trains it"):
        protocol.load_models(".", ["gr4-cnn"])


def test_train_models_reuses_the_saved_parent(basin, split, tmp_path):
    """A stage trains its models and saves them; a hybrid starts from its saved parent."""
    settings = {"uniform": {"maxiter": 1}, "distributed": {"maxiter": 2}}
    first, _ = protocol.train_models(basin, ["gr4-uniform", "gr4_mlp-distributed"], split, directory=tmp_path,
                                     stage="03_calibrate", settings=settings, progress=False)
    assert list(first) == ["gr4-uniform"] and (tmp_path / "gr4-uniform" / "calibration.json").exists()
    hybrids, seconds = protocol.train_models(basin, ["gr4-uniform", "gr4_mlp-distributed"], split,
                                             directory=tmp_path, stage="05_hybrid", settings=settings,
                                             hybrid={"hidden": (4,)}, progress=False)
    pre = hybrids["gr4_mlp-distributed"].options["pre_calibration"]
    assert pre["reused"] == "gr4-uniform"
    assert pre["final_cost"] == pytest.approx(first["gr4-uniform"].history["cost"].iloc[-1], rel=1e-6)
    table = protocol.summary(hybrids, seconds)
    assert table.loc["gr4_mlp-distributed", "pre-calibration"] == "gr4-uniform"
    assert {"initial cost", "final cost", "wall time (s)", "stopped"} <= set(table.columns)


def test_the_paper_parameters_run_every_model_of_the_paper_with_kinematic_wave_routing():
    from hybridhydro.pipeline.params import REPOSITORY_ROOT

    paper = hh.load_params(REPOSITORY_ROOT / "params" / "paper.yaml")
    assert tuple(paper.calibration.models) == protocol.PAPER_MODELS
    assert paper.calibration.routing == "kw"


@pytest.mark.parametrize("model", ["gr4_mlp-cnn", "gr4_ude-cnn"])
def test_the_hybrids_train_with_a_cnn_regionalisation(model):
    basin = hh.synthetic_basin(nrow=8, ncol=8, ntime=48)
    result = protocol.train_model(basin, model, make_split(basin), routing="kw", settings={"cnn": {"maxiter": 1}},
                                  progress=False, hybrid={"hidden": [8]})
    assert (result.structure, result.mapping) == (model.split("-")[0] + "-kw", "cnn")
    assert result.network is not None and result.nn_parameters is not None
    assert np.isfinite(result.history["cost"]).all()


def test_training_options_are_the_cases_settings_for_every_stage():
    """One source for what stages 03-05 and the referees' study (08) train with."""
    from hybridhydro.pipeline.params import load_params

    root = Path(__file__).resolve().parents[1]
    cfg = load_params(root / "params" / "ci.yaml")
    cfg = cfg.model_copy(update={"calibration": cfg.calibration.model_copy(update={"bounds": {"cp": [10.0, 900.0]},
                                                                                  "health_restarts": 2})})
    options = protocol.training_options(cfg)
    c, h = cfg.calibration, cfg.hybrid
    assert options == dict(routing=c.routing, settings=c.optimizers, cost=c.cost, seed=cfg.seed, health_restarts=2,
                           bounds={"cp": [10.0, 900.0]},
                           hybrid=dict(hidden=h.hidden, initializer=h.initializer, weight_scale=h.weight_scale,
                                       seed=cfg.hybrid_seed, pre_maxiter=c.pre_maxiter,
                                       nn_input_scaling=h.input_scaling))
    for stage in ("03_calibrate", "04_regionalize", "05_hybrid", "08_referees"):
        text = (root / "notebooks" / f"{stage}.py").read_text()
        assert "protocol.training_options(cfg)" in text and "health_restarts=calibration" not in text, stage
