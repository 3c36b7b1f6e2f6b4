"""Calibration on the synthetic basin: known parameters behind synthetic observations are found
again, by every mapping and optimiser; checkpoints resume to the same result; bad input."""

from __future__ import annotations

import numpy as np
import pytest

import hybridhydro as hh
from hybridhydro.calibration import OPTIMIZERS, calibrate

TRUTH = {"cp": 350.0, "ct": 80.0, "kexc": -0.5, "llr": 40.0}


@pytest.fixture(scope="module")
def basin():
    """A small basin whose "observations" are gr4-lr with TRUTH (2 gauges, 480 hourly steps: the
    transfer store needs about two weeks of this forcing to fill and release, so ct shows)."""
    b = hh.synthetic_basin(nrow=6, ncol=6, ntime=480, seed=0)
    b["qobs"] = hh.simulate(b, "gr4-lr", TRUTH)["q"].copy()
    return b


def _nse(result, basin):
    q = result.simulate(basin)["q"].values
    o = basin["qobs"].values
    return 1 - ((q - o) ** 2).sum(axis=1) / ((o - o.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)


def test_lbfgsb_recovers_the_parameters(basin):
    """cp and ct free (the others at their true values): both found within 2 %."""
    fixed = {k: v for k, v in TRUTH.items() if k not in ("cp", "ct")}
    result = calibrate(basin, "gr4-lr", "uniform", "lbfgsb", 60, gauges="all", parameters=("cp", "ct"),
                       initial_parameters=fixed, progress=False)
    for name in ("cp", "ct"):
        value = float(np.nanmean(result.parameters[name]))
        assert abs(value - TRUTH[name]) < 0.02 * TRUTH[name], (name, value, result.message)
    assert _nse(result, basin).min() > 0.999


def test_sbs_searches_down_to_its_smallest_step(basin):
    """smash's step-by-step search stops once its step is below 0.01 (in log space): it lands
    near the truth (NSE > 0.99), its cost never increases, and each sub-iteration is recorded."""
    fixed = {k: v for k, v in TRUTH.items() if k not in ("cp", "ct")}
    result = calibrate(basin, "gr4-lr", "uniform", "sbs", 60, gauges="all", parameters=("cp", "ct"),
                       initial_parameters=fixed, progress=False)
    assert result.message.startswith("converged")
    assert result.history["cost"].is_monotonic_decreasing
    assert result.history["cost"].iloc[-1] < 0.01 * result.history["cost"].iloc[0]
    assert _nse(result, basin).min() > 0.99
    for name in ("cp", "ct"):
        assert abs(float(np.nanmean(result.parameters[name])) - TRUTH[name]) < 0.25 * TRUTH[name]


@pytest.mark.parametrize(
    "optimizer",
    ["adam", pytest.param("sgd", marks=pytest.mark.slow), pytest.param("adagrad", marks=pytest.mark.slow), "rmsprop",
     "adam_smash", pytest.param("adagrad_smash", marks=pytest.mark.slow)],
)
def test_adaptive_optimizers_reduce_the_cost(basin, optimizer):
    result = calibrate(basin, "gr4-lr", "distributed", optimizer, 15, gauges="all", learning_rate=0.02,
                       progress=False)
    h = result.history
    assert h["cost"].iloc[-1] < 0.5 * h["cost"].iloc[0], (optimizer, h["cost"].values)
    assert np.isfinite(h["grad_norm"]).all()
    for name in TRUTH:  # bounded: the projection keeps every value inside smash's bounds
        lo, hi = hh.structures.PARAMETER_BOUNDS[name]
        v = result.parameters[name][np.isfinite(result.parameters[name])]
        assert (v >= np.float32(lo)).all() and (v <= np.float32(hi)).all(), name


@pytest.mark.parametrize("mapping", ["distributed", "multi-linear", "multi-power"])
def test_gradient_mappings_fit_the_observations(basin, mapping):
    result = calibrate(basin, "gr4-lr", mapping, "lbfgsb", 30, gauges="all", progress=False)
    assert result.history["cost"].iloc[-1] < 0.1 * result.history["cost"].iloc[0], result.history
    assert _nse(result, basin).min() > 0.8


@pytest.mark.parametrize("mapping", ["ann", pytest.param("cnn", marks=pytest.mark.slow)])
def test_networks_regionalise(basin, mapping):
    result = calibrate(basin, "gr4-lr", mapping, "adam", 12, gauges="all", learning_rate=0.01, progress=False)
    assert result.history["cost"].iloc[-1] < result.history["cost"].iloc[0]
    assert result.network is not None
    assert set(result.parameters) >= set(TRUTH)


def test_hybrid_training_updates_the_network_and_feeds_simulate(basin):
    net = hh.FluxCorrectionNet.for_structure("gr4_mlp", hidden=8, initializer="he_uniform", scale=0.1, seed=0)
    result = calibrate(basin, "gr4_mlp-lr", "uniform", "adam", 10, gauges="all", nn_parameters=net,
                       learning_rate=0.01, progress=False)
    assert result.history["cost"].iloc[-1] < result.history["cost"].iloc[0]
    moved = max(float(np.abs(result.nn_parameters[k] - np.asarray(v)).max()) for k, v in net.weights().items())
    assert moved > 0
    again = hh.simulate(basin, "gr4_mlp-lr", result.parameters, nn_parameters=result.nn_parameters)
    np.testing.assert_allclose(again["q"].values, result.simulate(basin)["q"].values)


@pytest.mark.parametrize("optimizer", ["adam", "sbs"])
def test_checkpoint_resume_gives_the_same_result(basin, tmp_path, monkeypatch, optimizer):
    """A calibration stopped (Ctrl-C during its 4th recorded iteration, checkpoints every
    iteration) and called again resumes to the uninterrupted result."""
    from hybridhydro.calibration import optimizers as module

    mapping = "uniform"
    kwargs = dict(gauges="all", progress=False, parameters=("cp", "ct", "kexc"))
    whole = calibrate(basin, "gr4-lr", mapping, optimizer, 6, **kwargs)
    ck = tmp_path / "run"
    record, calls = module.Runner.record, {"n": 0}

    def interrupted(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return record(self, *args, **kw)

    monkeypatch.setattr(module.Runner, "record", interrupted)
    with pytest.raises(KeyboardInterrupt, match="checkpoint saved to .*run.npz"):
        calibrate(basin, "gr4-lr", mapping, optimizer, 6, checkpoint=ck, checkpoint_every=1, **kwargs)
    monkeypatch.setattr(module.Runner, "record", record)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]  # one file, no temporary left
    resumed = calibrate(basin, "gr4-lr", mapping, optimizer, 6, checkpoint=ck, checkpoint_every=1, **kwargs)
    for name in ("cp", "ct", "kexc"):
        np.testing.assert_array_equal(resumed.parameters[name], whole.parameters[name])
    np.testing.assert_allclose(resumed.history["cost"].values, whole.history["cost"].values)


def test_a_checkpoint_of_another_calibration_is_refused(basin, tmp_path):
    ck = tmp_path / "run"
    calibrate(basin, "gr4-lr", "uniform", "adam", 2, gauges="all", checkpoint=ck, checkpoint_every=1, progress=False)
    with pytest.raises(ValueError, match="written by another calibration(?s:.*)mapping: distributed in this call, "
                                         "uniform in the checkpoint"):
        calibrate(basin, "gr4-lr", "distributed", "adam", 2, gauges="all", checkpoint=ck, progress=False)


def test_early_stopping_on_validation_returns_the_best(basin):
    result = calibrate(basin, "gr4-lr", "distributed", "adam", 30, gauges="all", learning_rate=0.3,
                       validation_gauges=[str(basin["gauge"].values[1])], early_stopping=3, progress=False)
    h = result.history
    assert "validation_cost" in h
    assert result.best_iteration == int(h["validation_cost"].idxmin())


def test_bad_input_is_explained(basin):
    with pytest.raises(ValueError, match="unknown mapping 'linear'"):
        calibrate(basin, "gr4-lr", "linear")
    with pytest.raises(ValueError, match="unknown optimizer 'bfgs'"):
        calibrate(basin, "gr4-lr", "uniform", "bfgs")
    with pytest.raises(ValueError, match="sbs is a global search for the uniform mapping"):
        calibrate(basin, "gr4-lr", "distributed", "sbs")
    with pytest.raises(ValueError, match="lies outside the basin's data"):
        calibrate(basin, "gr4-lr", period=("1990-01-01", "1990-02-01"))
    with pytest.raises(ValueError, match=r"bounds of 'cp' are \(1000.0, 1.0\)"):
        calibrate(basin, "gr4-lr", bounds={"cp": (1000.0, 1.0)})
    with pytest.raises(ValueError, match="unknown gauge"):
        calibrate(basin, "gr4-lr", gauges=["NOPE"])
    with pytest.raises(ValueError, match="unknown parameter"):
        calibrate(basin, "gr4-lr", parameters=("cp", "x4"))
    gap = basin.copy(deep=True)
    gap["qobs"][0, :] = np.nan
    with pytest.raises(ValueError, match="no observed discharge in the calibration period"):
        calibrate(gap, "gr4-lr", gauges="all", maxiter=1, progress=False)
    with pytest.raises(ValueError, match="unknown"):
        calibrate(basin, "gr4-lr", cost="nash", maxiter=1, progress=False)


def test_every_optimizer_is_listed():
    assert set(OPTIMIZERS) == {"lbfgsb", "adam", "sgd", "adagrad", "rmsprop", "adam_smash", "adagrad_smash", "sbs"}
    from hybridhydro.calibration import LEARNING_RATES, MAXITER

    adaptive = set(OPTIMIZERS) - {"lbfgsb", "sbs"}
    assert adaptive <= set(LEARNING_RATES) and set(OPTIMIZERS) <= set(MAXITER)


def test_ctrl_c_keeps_a_checkpoint_that_resumes_to_the_same_result(basin, tmp_path, monkeypatch):
    from hybridhydro.calibration import optimizers as module

    kwargs = dict(gauges="all", progress=False, parameters=("cp", "ct"))
    whole = calibrate(basin, "gr4-lr", "uniform", "adam", 5, **kwargs)
    record, calls = module.Adaptive.record, {"n": 0}

    def interrupted(self, *args, **kw):  # Ctrl-C arrives during the 4th iteration
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return record(self, *args, **kw)

    monkeypatch.setattr(module.Adaptive, "record", interrupted)
    with pytest.raises(KeyboardInterrupt, match="checkpoint saved to .*call calibrate\\(\\) again"):
        calibrate(basin, "gr4-lr", "uniform", "adam", 5, checkpoint=tmp_path / "ck", checkpoint_every=100, **kwargs)
    monkeypatch.setattr(module.Adaptive, "record", record)
    resumed = calibrate(basin, "gr4-lr", "uniform", "adam", 5, checkpoint=tmp_path / "ck", **kwargs)
    np.testing.assert_array_equal(resumed.parameters["cp"], whole.parameters["cp"])
    assert list(resumed.history.index) == list(whole.history.index)


@pytest.mark.parametrize("optimizer", ["lbfgsb", "adam"])
def test_maxiter_zero_evaluates_the_first_guess_only(basin, optimizer):
    result = calibrate(basin, "gr4-lr", "distributed", optimizer, 0, gauges="all", progress=False)
    assert list(result.history.index) == [0]
    cp = result.parameters["cp"][np.isfinite(result.parameters["cp"])]
    np.testing.assert_allclose(cp, 200.0, rtol=1e-6)  # smash's default, untouched


def test_smash_update_rules_are_spec_10_4():
    """adam_smash and adagrad_smash follow smash's rules step by step (constant bias correction;
    an accumulator from 0), written out here in NumPy."""
    import jax.numpy as jnp

    from hybridhydro.calibration import adagrad_smash, adam_smash

    rng = np.random.default_rng(0)
    grads = rng.normal(size=(6, 5)).astype(np.float64)
    lr, b1, b2, eps = 0.003, 0.9, 0.999, 1e-8
    for make, rule in ((adam_smash, "adam"), (adagrad_smash, "adagrad")):
        opt = make(lr)
        w = jnp.zeros(5)
        state = opt.init(w)
        m = v = acc = np.zeros(5)
        expected = np.zeros(5)
        for k, g in enumerate(grads):
            step, state = opt.update(jnp.asarray(g), state, w)
            w = w + step
            if rule == "adam":
                m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
                expected -= lr * (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + eps)
                if k == 0:
                    np.testing.assert_allclose(np.asarray(step), -lr * np.sign(g), rtol=1e-6)
            else:
                acc = acc + g * g
                expected -= lr * g / np.sqrt(acc + eps)
        np.testing.assert_allclose(np.asarray(w), expected, rtol=1e-5, atol=1e-8, err_msg=rule)


def test_early_stopping_watches_the_validation_cost_and_counts_its_patience():
    """The monitored cost is the validation cost when there is one; training stops when the
    iteration minus the best one exceeds ``early_stopping`` (smash's rule), not one sooner."""
    from hybridhydro.calibration.optimizers import Runner

    runner = object.__new__(Runner)
    runner.validating, runner.early_stopping, runner.rows = True, 3, []
    # training keeps improving; validation is best at iteration 2, then worsens
    validation = [1.0, 0.8, 0.5, 0.6, 0.7, 0.8, 0.9]
    stops = []
    for it, jv in enumerate(validation):
        runner.rows.append({"iteration": it, "cost": 1.0 - 0.1 * it, "validation_cost": jv})
        stops.append(runner.stop_early())
    assert runner.monitor() == (2, 0.5)
    assert stops == [False, False, False, False, False, False, True]  # 5 - 2 = 3: not yet; 6 - 2 > 3
    runner.validating = False  # without validation the training cost is watched: never stops here
    assert runner.monitor() == (6, pytest.approx(0.4)) and not runner.stop_early()
