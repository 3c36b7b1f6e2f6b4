"""The synthetic basin: schema, determinism, and a mesh consistent with its known flow directions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hybridhydro
from hybridhydro.mesh import validate_flwdir
from hybridhydro.synthetic import synthetic_basin


@pytest.fixture(scope="module")
def basin():
    return synthetic_basin(nrow=16, ncol=16, ntime=96, seed=3, ngauge=3)


def test_follows_the_basin_schema(basin):
    hybridhydro.check_basin(basin)
    assert basin.sizes["gauge"] == 3
    assert basin.sizes["time"] == 96
    assert basin["prcp"].dtype == np.float32 and basin["qobs"].dtype == np.float32


def test_same_seed_same_basin_other_seed_other_basin():
    a = synthetic_basin(nrow=12, ncol=12, ntime=24, seed=7)
    b = synthetic_basin(nrow=12, ncol=12, ntime=24, seed=7)
    c = synthetic_basin(nrow=12, ncol=12, ntime=24, seed=8)
    assert a.identical(b)
    assert not np.array_equal(a["flwdir"].values, c["flwdir"].values) or not np.array_equal(
        a["prcp"].values, c["prcp"].values
    )


def test_gauges_sit_on_active_cells_and_areas_match_accumulation(basin):
    rows, cols = basin["gauge_row"].values, basin["gauge_col"].values
    assert basin["active_cell"].values[rows, cols].all()
    flwacc = basin["flwacc"].values[rows, cols]
    np.testing.assert_allclose(flwacc, basin["area_dln"].values, rtol=1e-6)
    np.testing.assert_allclose(basin["area_dln"].values, basin["area"].values, rtol=1e-6)
    # gauge 0 is the outlet: every active cell drains to it
    assert flwacc[0] == pytest.approx(basin["active_cell"].values.sum() * 1e6, rel=1e-6)
    assert (flwacc[1:] < flwacc[0]).all()


def test_the_domain_is_irregular_and_cropped(basin):
    active = basin["active_cell"].values
    assert active.any(axis=1).all() and active.any(axis=0).all(), "the crop keeps no empty row or column"
    assert not active.all(), "the neighbouring catchment leaves inactive cells in the bounding box"
    validate_flwdir(basin["flwdir"].values, active)


def test_forcing_and_discharge_are_physical(basin):
    assert float(basin["prcp"].min()) >= 0 and float(basin["prcp"].max()) > 1.0
    assert float(basin["pet"].min()) >= 0
    q = basin["qobs"].values
    assert np.isfinite(q).all() and (q > 0).all()
    # the outlet drains more than any nested gauge, on average
    assert q[0].mean() > q[1:].mean(axis=1).max()
    # hourly PET is zero at night, positive by day (the daily profile)
    hours = basin["time"].dt.hour.values
    pet = basin["pet"].mean(("y", "x")).values
    assert (pet[(hours >= 1) & (hours <= 6)] == 0).all() and (pet[(hours >= 10) & (hours <= 16)] > 0).all()


def test_daily_steps_and_missing_observations():
    ds = synthetic_basin(nrow=10, ncol=10, ntime=60, dt=86400, seed=1, ngauge=1, missing_fraction=0.2)
    assert ds.attrs["dt"] == 86400
    frac = float(np.isnan(ds["qobs"].values).mean())
    assert 0.05 < frac < 0.4
    assert (ds["pet"].values > 0).all()


def test_no_observations_when_asked():
    ds = synthetic_basin(nrow=10, ncol=10, ntime=12, seed=1, ngauge=1, qobs=False)
    assert np.isnan(ds["qobs"].values).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nrow": 2}, "at least 4"),
        ({"ntime": 0}, "ntime"),
        ({"dt": 7000}, "divisor of 86400"),
        ({"missing_fraction": 0.9}, "missing_fraction"),
        ({"ngauge": 0}, "ngauge"),
        ({"nrow": 5, "ncol": 5, "ngauge": 20}, "fewer gauges"),
    ],
)
def test_bad_arguments_say_what_to_change(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_basin(**kwargs)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), nrow=st.integers(6, 20), ncol=st.integers(6, 20))
def test_any_seed_gives_a_valid_mesh(seed, nrow, ncol):
    ds = synthetic_basin(nrow=nrow, ncol=ncol, ntime=4, seed=seed, ngauge=1)
    hybridhydro.check_basin(ds)
    active = ds["active_cell"].values
    validate_flwdir(ds["flwdir"].values, active)
    assert ds["flwpar"].values[active].min() == 1
