"""The known-answer basin (:mod:`hybridhydro.known_answer`): a real grid, a known truth.

The grid is cut from hydro-smash's ``France_flwdir.tif`` (shipped with the hydro-smash package,
read by hybridhydro's own raster reader): these tests carry the ``smash`` marker and are
skipped where the package's data are not installed.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import hybridhydro as hh
from hybridhydro import known_answer as ka
from hybridhydro.mesh import upstream_masks
from hybridhydro.pipeline.params import ParamsError, load_params


def _flwdir_available() -> bool:
    if importlib.util.find_spec("smash") is None:
        return False
    from hybridhydro.io.smash_layout import smash_dataset_root

    return (smash_dataset_root() / "France_flwdir.tif").is_file()


pytestmark = [
    pytest.mark.smash,
    pytest.mark.skipif(not _flwdir_available(), reason="hydro-smash's France_flwdir.tif is not installed"),
]

SHORT = 0.3  # years: about 110 daily steps, enough for every check here


@pytest.fixture(scope="module")
def basin() -> xr.Dataset:
    return hh.known_answer_basin(years=SHORT)


@pytest.fixture(scope="module")
def gr4_basin() -> xr.Dataset:
    return hh.known_answer_basin(years=SHORT, truth="gr4", noise=0.0)


@pytest.fixture(scope="module")
def other_seed() -> xr.Dataset:
    return hh.known_answer_basin(years=SHORT, seed=1)


def _true_maps(ds: xr.Dataset) -> dict[str, np.ndarray]:
    return {name[5:]: ds[name].values for name in ds.data_vars if name.startswith("true_")}


# --- the grid -----------------------------------------------------------------------------------


def test_basin_follows_the_schema_and_carries_the_answer(basin):
    hh.check_basin(basin, where="known_answer")
    for name, dims, units in (("hidden_flux", ("time", "y", "x"), "mm"), ("q_true", ("gauge", "time"), "m3 s-1"),
                              ("q_gr4", ("gauge", "time"), "m3 s-1"), ("true_cp", ("y", "x"), "mm"),
                              ("true_kexc", ("y", "x"), "mm d-1"), ("true_llr", ("y", "x"), "min"),
                              ("hidden_loss_rate", ("y", "x"), "mm d-1")):
        assert basin[name].dims == dims and basin[name].attrs["units"] == units, (name, basin[name].attrs)
    attrs = basin.attrs
    assert attrs["known_answer_truth"] == "exchange" and attrs["noise"] == 0.05 and attrs["seed"] == 0
    assert "groundwater loss" in attrs["known_answer_process"] and attrs["dt"] == 86400.0
    assert list(basin["descriptor"].values) == ["slope", "soil_depth"]
    active = basin["active_cell"].values
    for name in ("true_cp", "true_ct", "true_kexc", "true_llr"):
        values = basin[name].values[active]
        lo, hi = hh.PARAMETER_BOUNDS[name[5:]]
        assert np.isfinite(values).all() and (values > lo).all() and (values < hi).all(), name
        assert np.isnan(basin[name].values[~active]).all()


def test_the_grid_holds_separate_and_nested_gauges(basin):
    active = basin["active_cell"].values
    assert 0.8 * 600 <= active.sum() <= 1.25 * 600
    codes = [str(c) for c in basin["gauge"].values]
    assert codes == [f"KA{i:02d}" for i in range(1, len(codes) + 1)] and len(codes) >= 8
    area = basin["area_dln"].values
    assert np.all(np.diff(area) <= 0) and np.allclose(basin["area"].values, area)  # m2, largest first
    rows, cols = basin["gauge_row"].values, basin["gauge_col"].values
    np.testing.assert_allclose(basin["flwacc"].values[rows, cols], area)
    masks = upstream_masks(basin["flwdir"].values, rows, cols) & active[None]
    np.testing.assert_allclose(masks.sum(axis=(1, 2)) * 1e6, area)  # 1 km cells
    holds = np.array([[i != j and masks[i, rows[j], cols[j]] for j in range(len(codes))] for i in range(len(codes))])
    roots = ~holds.any(axis=0)  # gauges no other gauge holds: the separate catchments' outlets
    assert roots.sum() >= 2, "the domain should hold two separate catchments or more"
    assert holds.any(), "some gauges should be nested"
    assert np.array_equal(active, masks.any(axis=0)), "the active cells are the outlets' catchments"


def test_the_grid_does_not_depend_on_the_seed_and_a_bad_bbox_is_an_error(basin, other_seed):
    for name in ("flwdir", "active_cell", "gauge_row", "gauge_col", "area_dln"):
        np.testing.assert_array_equal(other_seed[name].values, basin[name].values)
    with pytest.raises(ValueError, match="no two separate catchments"):
        hh.known_answer_basin(years=SHORT, bbox=(400_000, 420_000, 6_800_000, 6_820_000))  # inland, no outlet to the sea


def test_a_smaller_basin():
    mesh = ka._mesh(300, 8, ka.DEFAULT_BBOX)
    assert 0.8 * 300 <= mesh.nac <= 1.25 * 300 and mesh.ng == 8


# --- reproducibility, forcing, noise ---------------------------------------------------------------


def test_the_same_seed_gives_the_same_basin_another_seed_another(basin, other_seed):
    again = hh.known_answer_basin(years=SHORT)
    xr.testing.assert_identical(again, basin)
    assert not np.array_equal(other_seed["prcp"].values, basin["prcp"].values)
    assert not np.array_equal(other_seed["true_cp"].values, basin["true_cp"].values)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forcing_magnitudes_are_those_of_southern_france(seed):
    days = pd.date_range("2015-01-01", periods=3 * 365, freq="D")
    shape = (20, 30)
    ynorm = np.broadcast_to(np.linspace(0, 1, shape[0])[:, None], shape)
    rain, pet, wet = ka._daily_forcing(days, shape, ynorm, np.random.default_rng(seed))
    yearly_rain, yearly_pet = rain.mean(axis=(1, 2)).sum() / 3, pet.mean(axis=(1, 2)).sum() / 3
    assert 750 <= yearly_rain <= 1300 and 700 <= yearly_pet <= 900, (yearly_rain, yearly_pet)
    assert 0.15 < wet.mean() < 0.45 and (rain[~wet] == 0).all() and (rain >= 0).all() and (pet > 0).all()
    month = days.month.values
    assert pet[month == 7].mean() > 3 * pet[month == 1].mean(), "PET peaks in summer"
    assert rain[np.isin(month, [10, 11])].mean() > rain[np.isin(month, [4, 5])].mean(), "a wet autumn"
    field = rain[np.flatnonzero(wet)[0]]
    assert np.corrcoef(field[:, :-1].ravel(), field[:, 1:].ravel())[0, 1] > 0.8, "rain is spatially correlated"


def test_three_hourly_forcing_keeps_the_daily_totals():
    times = pd.date_range("2015-01-01 03:00", periods=8 * 10, freq="3h")
    days = pd.date_range("2015-01-01", periods=10, freq="D")
    daily = np.arange(1.0, 11.0)[:, None, None] * np.ones((1, 2, 3))
    for weights in (ka._pet_weights(times, 10800), ka._rain_weights(times, days, 10800, np.random.default_rng(0))):
        steps = ka._to_steps(daily, times, days, 10800, weights)
        np.testing.assert_allclose(steps.reshape(10, 8, 2, 3).sum(axis=1), daily, rtol=1e-6)
    pet_share = ka._pet_weights(times, 10800)[:8]
    assert pet_share[0] == 0 and pet_share[-1] == 0 and pet_share[4] > 0.25  # ending 03:00 and 00:00: night


@pytest.mark.slow
def test_a_three_hourly_basin():
    ds = hh.known_answer_basin(dt=10800, years=0.05, noise=0.0)
    hh.check_basin(ds, where="known_answer 3 h")
    assert ds.attrs["dt"] == 10800.0 and ds.sizes["time"] == round(0.05 * 365.25 * 8)
    pet = ds["pet"].mean(("y", "x")).to_series()
    night = pet[pet.index.hour.isin([0, 3])]
    assert (night == 0).all() and (pet[pet.index.hour == 15] > 0).all(), "PET follows smash's hourly profile"
    assert ds["true_kexc"].attrs["units"] == "mm / (3 h)"


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_observations_are_the_truth_with_lognormal_noise(noise, basin):
    ds = hh.known_answer_basin(years=SHORT, noise=noise)
    flowing = ds["q_true"].values > 0  # a dry river stays dry
    np.testing.assert_array_equal(ds["qobs"].values[~flowing], 0.0)
    spread = np.log(ds["qobs"].values[flowing].astype(np.float64) / ds["q_true"].values[flowing])
    if noise == 0.0:
        np.testing.assert_array_equal(ds["qobs"].values, ds["q_true"].values)
    else:
        assert abs(spread.std() - noise) < 0.1 * noise and abs(spread.mean()) < 0.1 * noise, (spread.mean(), spread.std())
        np.testing.assert_array_equal(ds["q_true"].values, basin["q_true"].values)  # the noise leaves the truth alone


# --- the truth ------------------------------------------------------------------------------------


def test_truth_gr4_is_simulate_with_the_true_maps(gr4_basin):
    ds = gr4_basin
    direct = hh.simulate(ds, "gr4-lr", _true_maps(ds))["q"].values
    np.testing.assert_array_equal(ds["q_true"].values, direct)
    np.testing.assert_array_equal(ds["qobs"].values, direct)
    np.testing.assert_array_equal(ds["q_gr4"].values, direct)
    assert (ds["hidden_flux"].values[:, ds["active_cell"].values] == 0).all()


def test_the_truth_model_without_its_process_is_gr4(gr4_basin):
    """The truth's own time loop (GR4 assembled from the library's operators, then the routing)
    gives simulate's discharge when the hidden process is off: the truths differ from GR4 by
    their process only."""
    maps = _true_maps(gr4_basin)
    active = gr4_basin["active_cell"].values
    maps = {k: np.where(active, v, -1.0 if k == "kexc" else 1.0) for k, v in maps.items()}
    q, hidden = ka._run_truth(gr4_basin, "gr4-lr", maps, "none", None)
    np.testing.assert_allclose(q, gr4_basin["q_true"].values, rtol=1e-4, atol=1e-4)  # float32, fused otherwise
    assert np.all(hidden[:, active] == 0)


@pytest.mark.parametrize("truth", ["exchange", "slow_store"])
def test_the_hidden_process_moves_water_and_changes_the_discharge(truth, basin):
    ds = basin if truth == "exchange" else hh.known_answer_basin(years=SHORT, truth=truth)
    active = ds["active_cell"].values
    hidden = ds["hidden_flux"].values[:, active]
    assert np.isfinite(hidden).all() and np.abs(hidden).mean() > 0.01
    if truth == "exchange":
        assert (hidden <= 1e-6).all(), "a loss only removes water"
        rate = ds["hidden_loss_rate"].values[active]
        # g = -a ht / (ht + 0.25) >= -0.8 a into the store, and at most as much again from the direct branch
        assert (-hidden.min(axis=0) <= 1.6 * rate + 1e-6).all()
    else:
        assert (hidden > 0).any() and (hidden < 0).any(), "the slow store both takes and gives back"
    score = ka.nse(ds["q_gr4"].values, ds["q_true"].values)
    assert np.all(score < 0.995) and np.isclose(ds.attrs["known_answer_nse_gr4"], score.mean())
    assert (ds["q_true"].values >= 0).all()


def test_the_answer_survives_write_and_read(basin, tmp_path):
    path = hh.write_basin(basin, tmp_path / "basin.nc")
    back = hh.read_basin(path)
    xr.testing.assert_identical(back, basin)


# --- arguments and parameter files -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"truth": "karst"}, "truth 'karst' is not one of"),
        ({"dt": 3600}, "dt must be 86400"),
        ({"cells": 10}, "cells must be a whole number"),
        ({"ngauge": 1}, "ngauge must be"),
        ({"noise": -0.1}, "noise"),
        ({"routing": "muskingum"}, "routing 'muskingum'"),
        ({"bbox": (1, 0, 0, 1)}, "bbox must be"),
        ({"years": 0}, "years must lie"),
    ],
)
def test_bad_arguments_are_named(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        hh.known_answer_basin(**kwargs)


def test_the_parameter_files_validate():
    cfg = load_params("params/known_answer.yaml")
    assert cfg.basin.source == "known_answer" and cfg.basin.known_answer.cells == 600
    assert "07_known_answer" in cfg.stages and cfg.basin.known_answer.routing == cfg.calibration.routing
    tiny = load_params("params/ci-known-answer.yaml")
    assert tiny.basin.source == "known_answer" and tiny.basin.known_answer.years == 0.5


@pytest.mark.parametrize(
    "basin_section, fragment",
    [
        ({"known_answer": {"truth": "karst"}}, "basin.known_answer.truth"),
        ({"known_answer": {"dt": 3600}}, "dt must be 86400 (daily) or 10800"),
        ({"known_answer": {"cells": 10}}, "basin.known_answer.cells"),
        ({"known_answer": {"noise": 2}}, "basin.known_answer.noise"),
        ({"known_answer": {"bbox": [1, 0, 0, 1]}}, "xmin < xmax"),
        ({"known_answer": {"sead": 1}}, "did you mean 'basin.known_answer.seed'"),
        ({"start": "2015-01-01"}, "basin.known_answer.start and basin.known_answer.years"),
    ],
)
def test_bad_parameters_give_a_clear_error(basin_section, fragment):
    with pytest.raises(ParamsError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_params({"basin": {"source": "known_answer", **basin_section}})


def test_source_is_read_case_insensitively():
    assert load_params({"basin": {"source": "Known_Answer"}}).basin.source == "known_answer"
