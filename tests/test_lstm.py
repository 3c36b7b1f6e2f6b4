"""The regional LSTM baseline (hybridhydro.lstm): configuration, lumped inputs, training without
leakage, determinism, pseudo-ungauged simulation through descriptors, saving, and scoring with
the comparison protocol. Every training uses one small config (one compilation, ~1 s each)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import hybridhydro as hh
from hybridhydro import lstm
from hybridhydro.lstm import LSTMConfig, load_lstm, lumped_inputs, train_lstm
from hybridhydro.protocol import SCENARIOS, make_split, score

#: Small settings: 16 cells, windows of two days, 200 Adam steps at 0.01 (about a second per training).
SMALL = LSTMConfig(hidden=16, seq_length=48, spinup=24, iterations=200, batch_size=16, learning_rate=1e-2)


@pytest.fixture(scope="module")
def basin():
    """3 nested gauges, 480 hourly steps; qobs is a linear reservoir of the catchment rain."""
    return hh.synthetic_basin(nrow=8, ncol=8, ntime=480, seed=1, ngauge=3)


@pytest.fixture(scope="module")
def split(basin):
    return make_split(basin)  # 48 warm-up steps, then two halves; the smallest gauge held out


@pytest.fixture(scope="module")
def trained(basin, split):
    return train_lstm(basin, split, SMALL, seed=0)


# ------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize("setting, value", [
    ("hidden", 0), ("hidden", 8.0), ("hidden", True), ("seq_length", 0), ("spinup", -1), ("spinup", 336),
    ("dropout", 1.0), ("dropout", -0.1), ("learning_rate", 0.0), ("learning_rate", float("nan")),
    ("iterations", 0), ("batch_size", 0), ("clip_norm", 0.0), ("nse_eps", 0.0),
    ("initial_forget_bias", float("inf")), ("use_descriptors", "yes"),
])
def test_a_bad_setting_is_named(setting, value):
    with pytest.raises(ValueError, match=f"LSTMConfig: {setting}="):
        LSTMConfig(**{setting: value})


def test_config_defaults_and_round_trip():
    config = LSTMConfig()
    assert (config.hidden, config.seq_length, config.spinup, config.dropout) == (32, 336, 168, 0.4)
    assert LSTMConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert LSTMConfig(clip_norm=None).clip_norm is None
    with pytest.raises(ValueError, match="unknown setting.*'hiden'"):
        LSTMConfig.from_dict({"hiden": 3})


# ------------------------------------------------------------------------------ inputs


def test_lumped_inputs_are_catchment_means_in_mm_per_hour(basin):
    x, names = lumped_inputs(basin)
    assert names == ("prcp", "pet", "slope", "dd")
    assert x.shape == (3, basin.sizes["time"], 4) and x.dtype == np.float32
    # the synthetic basin carries its catchment means (mm per step); dt = 1 h: the same numbers
    np.testing.assert_allclose(x[..., 0], basin["mean_prcp"].values, rtol=1e-6)
    np.testing.assert_allclose(x[..., 1], basin["mean_pet"].values, rtol=1e-6)
    assert np.all(x[:, :, 2:] == x[:, :1, 2:])  # descriptors are static
    assert x[0, 0, 2] != x[1, 0, 2]  # ... and differ between catchments

    half_hourly = hh.synthetic_basin(nrow=8, ncol=8, ntime=48, dt=1800, seed=1, ngauge=2)
    y, names = lumped_inputs(half_hourly, ["SYN001"], descriptors=False)
    assert names == ("prcp", "pet") and y.shape == (1, 48, 2)
    np.testing.assert_allclose(y[0, :, 0], half_hourly["mean_prcp"].values[1] * 2, rtol=1e-6)  # mm per hour

    with pytest.raises(ValueError, match=r"\['NOPE'\] are not gauges of the basin"):
        lumped_inputs(basin, ["NOPE"])
    assert lumped_inputs(basin.drop_vars("descriptors"))[1] == ("prcp", "pet")


# ------------------------------------------------------------------------------ training


def test_training_lowers_the_loss_and_fits_the_calibration_gauges(trained, basin, split):
    h = trained.history["loss"]
    assert h.index[0] == 1 and len(h) == SMALL.iterations
    assert h.iloc[-20:].mean() < 0.3 * h.iloc[:20].mean()
    scores = score({"lstm": trained.simulate(basin)}, basin, split).set_index(["scenario", "gauge"])["nse"]
    # seen: calibration 0.983 .. 0.991, temporal 0.77 .. 0.82 over seeds 0, 1, 2
    assert scores["calibration"].min() > 0.9
    assert scores["temporal"].min() > 0.6
    assert trained.n_parameters == 4 * 16 * (4 + 16 + 1) + 16 + 1
    assert trained.training["gauges"] == list(split.calibration_gauges)


def test_training_is_deterministic_for_a_seed(trained, basin, split):
    again = train_lstm(basin, split, SMALL, seed=0)
    for name, value in trained.weights.items():
        np.testing.assert_array_equal(again.weights[name], value)
    pd.testing.assert_frame_equal(again.history, trained.history)
    other = train_lstm(basin, split, SMALL, seed=1)
    assert not np.array_equal(other.weights["w_input"], trained.weights["w_input"])


def test_held_out_observations_never_reach_the_training(trained, basin, split):
    """Discharge at the held-out gauge, discharge outside the calibration period and forcing after
    it are changed: the trained weights are the same to the bit."""
    changed = basin.copy(deep=True)
    times = pd.DatetimeIndex(basin["time"].values)
    inside = (times > pd.Timestamp(split.calibration_period[0])) & (times <= pd.Timestamp(split.calibration_period[1]))
    q = changed["qobs"].values
    held = [list(basin["gauge"].values).index(g) for g in split.validation_gauges]
    q[held] = q[held] * 7.0 + 3.0
    q[:, ~inside] = np.where(np.arange((~inside).sum()) % 5 == 0, np.nan, q[:, ~inside] * 0.1 + 50.0)
    after = times > pd.Timestamp(split.calibration_period[1])
    changed["prcp"].values[after] = changed["prcp"].values[after] * 4.0 + 1.0
    leaked = train_lstm(changed, split, SMALL, seed=0)
    for name, value in trained.weights.items():
        np.testing.assert_array_equal(leaked.weights[name], value)
    np.testing.assert_array_equal(leaked.input_mean, trained.input_mean)
    assert (leaked.target_mean, leaked.target_std) == (trained.target_mean, trained.target_std)


def test_training_says_what_is_wrong(basin, split):
    with pytest.raises(ValueError, match="no training window fits.*lower seq_length"):
        train_lstm(basin, split, LSTMConfig(seq_length=400, spinup=10))
    bad = split.__class__(split.calibration_period, split.validation_period, ("NOPE",))
    with pytest.raises(ValueError, match="split.calibration_gauges"):
        train_lstm(basin, bad, SMALL)
    with pytest.raises(TypeError, match="LSTMConfig"):
        train_lstm(basin, split, {"hidden": 4})


# ------------------------------------------------------------------------------ simulation


def test_simulation_is_discharge_at_any_gauge(trained, basin, split):
    sim = trained.simulate(basin)
    q = sim["q"]
    assert q.dims == ("gauge", "time") and q.dtype == np.float32 and q.attrs["units"] == "m3 s-1"
    assert np.array_equal(q["time"].values, basin["time"].values)
    assert np.isfinite(q.values).all() and (q.values >= 0).all()
    # a pseudo-ungauged gauge alone: the same series (each gauge runs on its own)
    held = list(split.validation_gauges)
    alone = trained.simulate(basin, gauges=held)["q"]
    np.testing.assert_allclose(alone.values[0], q.sel(gauge=held[0]).values, rtol=1e-5, atol=1e-7)
    # ... told apart from the others by its descriptors
    other = basin.copy(deep=True)
    other["descriptors"].values[0] = other["descriptors"].values[0] * 3.0
    assert not np.allclose(trained.simulate(other, gauges=held)["q"].values, alone.values)


def test_simulation_needs_the_descriptors_and_dt_it_was_trained_with(trained, basin):
    with pytest.raises(ValueError, match=r"lacks descriptor\(s\) \['slope', 'dd'\]"):
        trained.simulate(basin.drop_vars("descriptors"))
    renamed = basin.assign_coords(descriptor=["slope", "other"])
    with pytest.raises(ValueError, match=r"\['dd'\]"):
        trained.simulate(renamed)
    reordered = basin.isel(descriptor=[1, 0])
    np.testing.assert_array_equal(trained.simulate(reordered)["q"].values, trained.simulate(basin)["q"].values)
    daily = basin.assign_attrs(dt=86400.0)
    with pytest.raises(ValueError, match="trained at dt = 3600 s"):
        trained.simulate(daily)


def test_the_simulation_scores_with_the_protocol(trained, basin, split):
    table = score({"lstm": trained.simulate(basin)}, basin, split)
    assert list(dict.fromkeys(table["scenario"])) == list(SCENARIOS)
    assert table["model"].eq("lstm").all() and np.isfinite(table[["nse", "kge"]].values).all()


# ------------------------------------------------------------------------------ files


def test_save_and_load_give_the_same_simulation(trained, basin, tmp_path):
    where = trained.save(tmp_path / "lstm")
    assert sorted(p.name for p in where.iterdir()) == ["lstm.json", "weights.npz"]
    back = load_lstm(where)
    assert back.config == trained.config and back.seed == trained.seed and back.input_names == trained.input_names
    pd.testing.assert_frame_equal(back.history, trained.history)
    np.testing.assert_array_equal(back.simulate(basin)["q"].values, trained.simulate(basin)["q"].values)

    with pytest.raises(FileExistsError, match="overwrite=True"):
        trained.save(where)
    assert trained.save(where, overwrite=True) == where
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="never deleted|refused even with overwrite"):
        trained.save(foreign, overwrite=True)
    assert (foreign / "keep.txt").read_text() == "mine"

    np.savez(where / "weights.npz", **{k: v * 2 for k, v in trained.weights.items()})
    with pytest.raises(ValueError, match="sha256"):
        load_lstm(where)
    with pytest.raises(FileNotFoundError, match="no saved LSTM"):
        load_lstm(tmp_path / "empty")


def test_the_network_is_a_flax_module(trained):
    net = trained.network
    assert isinstance(net, lstm.RegionalLSTM)
    x = np.zeros((2, 5, len(trained.input_names)), np.float32)
    np.testing.assert_allclose(np.asarray(net(x)), np.asarray(lstm.lstm_forward(trained.weights, x)))


def test_an_input_constant_over_the_training_data_is_centred_and_warned_about():
    x = np.stack([np.random.default_rng(0).random((1, 50)), np.full((1, 50), 7.0)], axis=-1)  # one gauge
    with pytest.warns(UserWarning, match=r"\['slope'\] are constant over the training gauges"):
        mean, std = lstm._normaliser(x, ("prcp", "slope"))
    assert mean[1] == 7.0 and std[1] == 1.0 and 0 < std[0] < 1


def test_the_window_fits_the_calibration_period_unless_given():
    """336 steps does not fit a daily year (the Lez's 164-day calibration): for_split halves the period."""
    import hybridhydro as hh
    from hybridhydro import protocol
    from hybridhydro.lstm import LSTMConfig

    basin = hh.synthetic_basin(nrow=8, ncol=8, ntime=120, seed=1)
    split = protocol.make_split(basin)
    fitted = LSTMConfig.for_split(basin, split)
    assert (fitted.seq_length, fitted.spinup) == (27, 13)  # (120 - 12) / 2 = 54 calibration steps
    given = LSTMConfig.for_split(basin, split, {"seq_length": 40})
    assert (given.seq_length, given.spinup) == (40, 20)
    assert LSTMConfig.for_split(basin, split, {"seq_length": 40, "spinup": 5}).spinup == 5
    with pytest.raises(ValueError, match="unknown setting"):
        LSTMConfig.for_split(basin, split, {"hiden": 3})
