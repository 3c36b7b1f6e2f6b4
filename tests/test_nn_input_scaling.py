"""Flux-correction networks trained on scaled inputs (``nn_input_scaling="hourly"``): pn and en
in mm per hour, so that a network means the same on a daily and an hourly basin; the run and the
saved weights stay in smash's raw layout (mm per step)."""

from __future__ import annotations

import numpy as np
import pytest

import hybridhydro as hh
from hybridhydro import protocol, structures
from hybridhydro.structures import input_scale, mlp, weights_for_raw_inputs, weights_for_scaled_inputs

INPUTS = structures.get_module("gr4_mlp").nn_inputs  # hp, ht, pn, en


def _net(seed=0):
    net = hh.FluxCorrectionNet.for_structure("gr4_mlp", hidden=(8,), initializer="he_uniform", scale=0.1, seed=seed)
    return {k: np.asarray(v) for k, v in net.weights().items()}


def test_the_scale_converts_the_forcing_inputs_to_mm_per_hour_and_leaves_the_states():
    np.testing.assert_allclose(input_scale(INPUTS, 86400.0, "hourly"), [1.0, 1.0, 1 / 24, 1 / 24], rtol=1e-7)
    assert input_scale(INPUTS, 900.0, "hourly").tolist() == [1.0, 1.0, 4.0, 4.0]
    assert input_scale(INPUTS, 86400.0, "raw").tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="nn_input_scaling 'daily' is not one of raw, hourly"):
        input_scale(INPUTS, 3600.0, "daily")


def test_raw_weights_on_raw_inputs_are_the_network_on_scaled_inputs():
    w, rng = _net(), np.random.default_rng(0)
    z = np.column_stack([rng.uniform(0, 1, 50), rng.uniform(0, 1, 50), rng.uniform(0, 40, 50), rng.uniform(0, 5, 50)])
    scale = input_scale(INPUTS, 86400.0, "hourly")
    np.testing.assert_allclose(mlp(weights_for_raw_inputs(w, scale), z), mlp(w, z * scale), rtol=1e-5, atol=1e-7)
    back = weights_for_scaled_inputs(weights_for_raw_inputs(w, scale), scale)
    np.testing.assert_allclose(back["weight_1"], w["weight_1"], rtol=1e-6)
    assert all(np.array_equal(back[k], w[k]) for k in w if k != "weight_1")


def test_the_same_rain_rate_gets_the_same_correction_at_any_time_step():
    """The issue's case: with raw inputs a network's starting correction grows with dt (daily
    Lez against hourly Cance); scaled, 1 mm/h of net rain is the same input hourly or daily."""
    w = _net()
    hourly = np.array([[0.4, 0.6, 1.0, 0.1]])  # pn 1 mm over 1 h, en 0.1 mm
    daily = np.array([[0.4, 0.6, 24.0, 2.4]])  # the same rates over 24 h
    same = [mlp(weights_for_raw_inputs(w, input_scale(INPUTS, dt, "hourly")), z) for dt, z in ((3600.0, hourly),
                                                                                                 (86400.0, daily))]
    np.testing.assert_allclose(same[0], same[1], rtol=1e-5)
    raw = [mlp(w, hourly), mlp(w, daily)]
    assert np.max(np.abs(raw[1])) > 2 * np.max(np.abs(raw[0]))  # raw: the daily correction is far larger


@pytest.fixture(scope="module")
def basin():
    b = hh.synthetic_basin(nrow=8, ncol=8, ntime=48, dt=10800)  # 3-hourly: the scale is 1/3
    return b


def test_training_on_scaled_inputs_starts_from_the_same_function_and_saves_raw_weights(basin, tmp_path):
    w = weights_for_raw_inputs(_net(), input_scale(INPUTS, 10800.0, "hourly"))
    w = {k: np.asarray(v) for k, v in w.items()}
    common = dict(nn_parameters=w, train_nn=True, learning_rate=0.01, progress=False, gauges="all")
    raw = hh.calibrate(basin, "gr4_mlp-lr", "distributed", "adam", 3, nn_input_scaling="raw", **common)
    hourly = hh.calibrate(basin, "gr4_mlp-lr", "distributed", "adam", 3, nn_input_scaling="hourly", **common)
    assert raw.history["cost"].iloc[0] == hourly.history["cost"].iloc[0]  # the same network at the start
    assert not np.allclose(raw.history["cost"].iloc[-1], hourly.history["cost"].iloc[-1])  # trained differently
    assert hourly.options["nn_input_scaling"] == "hourly"
    # the saved raw weights are the trained network: a plain simulation gives the best iterate's cost
    best = hourly.history["cost"].loc[hourly.best_iteration]
    assert np.isfinite(hourly.simulate(basin)["q"].values).all()
    np.testing.assert_allclose(
        hh.calibrate(basin, "gr4_mlp-lr", "distributed", "adam", 0, initial_parameters=hourly.parameters,
                     nn_parameters=hourly.nn_parameters, progress=False, gauges="all").history["cost"].iloc[0],
        best, rtol=1e-5)
    hourly.save(tmp_path / "m")
    np.testing.assert_array_equal(hh.load_calibration(tmp_path / "m").nn_parameters["weight_1"],
                                  hourly.nn_parameters["weight_1"])
    with pytest.raises(ValueError, match="nn_input_scaling='per_day' is not one of raw, hourly"):
        hh.calibrate(basin, "gr4_mlp-lr", "distributed", "adam", 1, nn_input_scaling="per_day", **common)


def test_the_protocol_draws_the_initial_weights_for_the_scaled_inputs(basin):
    """train_hybrid with hourly inputs starts from the He-uniform network acting on mm per hour:
    in the raw layout, weight_1's pn and en columns are the drawn ones divided by 3 (dt = 3 h)."""
    split = protocol.make_split(basin)
    result = protocol.train_hybrid(basin, "gr4_mlp-lr", "distributed", "adam", 0, hidden=(8,), seed=0,
                                   nn_input_scaling="hourly", learning_rate=0.01, progress=False,
                                   period=split.calibration_period, gauges=list(split.calibration_gauges))
    drawn = _net(seed=0)
    np.testing.assert_allclose(result.nn_parameters["weight_1"][:, 2:], drawn["weight_1"][:, 2:] / 3, rtol=1e-6)
    np.testing.assert_array_equal(result.nn_parameters["weight_1"][:, :2], drawn["weight_1"][:, :2])
    assert result.options["nn_input_scaling"] == "hourly"
    assert hh.load_params({"hybrid": {"input_scaling": "hourly"}}).hybrid.input_scaling == "hourly"
