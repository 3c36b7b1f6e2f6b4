"""Checks that catch the mutants of ``tools/mutants.py`` the rest of the suite let through.

Each test names the bug it catches (the mutant's id in ``tools/mutants.py``) and asserts real
behaviour of the library, fast (< 2 s each).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hybridhydro as hh
from hybridhydro.balance import BALANCE_TOLERANCE, balance_closure, closes, water_balance
from hybridhydro.periods import period_mask, select_gauges
from hybridhydro.structures import adjust_interception
from hybridhydro.synthetic import synthetic_basin

RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)


@pytest.fixture(scope="module")
def basin():
    return synthetic_basin(nrow=8, ncol=8, ntime=48, seed=5, ngauge=2)


@pytest.fixture(scope="module")
def daily():
    """A daily basin and a gr4 run on it (one compilation shared by the balance tests)."""
    basin = synthetic_basin(nrow=8, ncol=8, ntime=40, dt=86400, seed=2, ngauge=2)
    return basin, hh.simulate(basin, "gr4-lag0", **RUN)


def test_a_daily_run_closes_its_water_balance(daily):
    """Catches ``simulate-qt-hourly`` (runoff turned into m3/s with dt = 3600 s hard-coded): at
    daily steps the discharge would carry 24 times the runoff and the budget would not close."""
    basin, result = daily
    wb = water_balance(result, basin)
    assert np.all(wb["rain"] > 1.0) and np.all(wb["outflow"] > 0.01 * wb["rain"])
    assert closes(balance_closure(wb, result)), balance_closure(wb, result)


def test_a_hidden_loss_ten_times_the_tolerance_fails_the_closure_check(daily):
    """Catches ``balance-tolerance`` (the closure check 100x too lenient): an unexplained loss of
    1e-5 of the rain, ten times :data:`BALANCE_TOLERANCE` and far above float32 round-off, must
    fail, while the honest run passes."""
    basin, result = daily
    wb = water_balance(result, basin)
    assert closes(balance_closure(wb, result))
    leaky = wb.copy()
    leaky["residual"] = wb["residual"] - 10 * BALANCE_TOLERANCE * wb["rain"]
    closure = balance_closure(leaky, result)
    assert closure["worst"] > 5 * BALANCE_TOLERANCE
    assert not closes(closure)


def test_automatic_interception_groups_steps_by_the_day_of_their_end():
    """Catches ``interception-day-start`` (steps grouped by the day they start): the rain of the
    step ending at midnight belongs to the new day, the day whose PET can evaporate it, so the
    daily interception target is that rain and the fitted capacity is large."""
    times = np.datetime64("2020-01-01T01") + np.arange(48) * np.timedelta64(1, "h")  # step ends
    p = np.zeros((48, 1), np.float32)
    e = np.zeros((48, 1), np.float32)
    midnight = int(np.flatnonzero(times == np.datetime64("2020-01-02T00"))[0])
    p[midnight] = 2.0  # rain on the step ending at 2020-01-02 00:00 only
    day2 = (times > np.datetime64("2020-01-02T00")) & (times < np.datetime64("2020-01-03T00"))
    e[day2] = 0.2  # PET on the other steps of 2 January
    ci = float(np.asarray(adjust_interception(p, e, times, 3600.0))[0])
    assert ci == pytest.approx(2.0, abs=0.051), ci  # target min(P, E) of 2 January = 2 mm


def test_a_period_is_open_at_its_start_and_closed_at_its_end(basin):
    """Catches ``calib-period-start`` (the period read as [start, end]): a period ``(start, end]``
    of step labels holds the steps ending after ``start`` up to ``end`` included."""
    times = pd.DatetimeIndex(basin["time"].values)
    mask = period_mask(basin["time"].values, (str(times[2]), str(times[5])), "period")
    assert np.flatnonzero(mask).tolist() == [3, 4, 5]


def test_dws_calibrates_on_the_most_downstream_gauge(basin):
    """Catches ``calib-dws-gauge``: smash's default gauge ``"dws"`` is the one that drains the
    largest area (the outlet), not the smallest."""
    area = basin["area_dln"].values
    assert area[0] > area[1:].max()  # gauge 0 is the synthetic basin's outlet
    np.testing.assert_array_equal(select_gauges(basin, "dws"), [0])
    np.testing.assert_array_equal(select_gauges(basin, None), [0])


def test_synthetic_discharge_carries_a_plausible_share_of_the_rain(basin):
    """Catches ``synthetic-discharge-unit`` (mm -> m3/s without the 1e-3): the observed volume at
    each gauge is part of the rain that fell upstream, neither more than all of it nor nothing."""
    volume = basin["qobs"].values.sum(axis=1) * basin.attrs["dt"]  # m3
    rain = basin["mean_prcp"].values.sum(axis=1) * 1e-3 * basin["area_dln"].values  # m3
    ratio = volume / rain
    assert np.all((ratio > 0.1) & (ratio < 1.0)), ratio


def test_check_basin_refuses_an_active_cell_without_a_direction(basin):
    """Catches ``basin-d8-range`` (code 0 accepted on an active cell): the routing needs a D8
    code 1..8 on every active cell, and the schema check says so."""
    hh.check_basin(basin)
    broken = basin.copy(deep=True)
    rows, cols = np.nonzero(broken["active_cell"].values)
    broken["flwdir"].values[rows[0], cols[0]] = 0
    with pytest.raises(ValueError, match="D8 code in 1..8"):
        hh.check_basin(broken)


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_a_basin_with_no_gauge_left_keeps_the_width_of_its_gauge_codes(basin, tmp_path, suffix):
    """Catches ``io-netcdf-string-dtype`` (string widths no longer recorded): NetCDF stores an
    empty string variable as one character wide, so a basin whose gauges were all dropped would
    come back with ``<U1`` codes instead of its own ``<U6`` (the module promises fixed-width codes
    even with no gauge)."""
    empty = basin.isel(gauge=slice(0, 0))
    assert empty["gauge"].dtype == np.dtype("<U6")
    back = hh.read_basin(hh.write_basin(empty, tmp_path / f"basin{suffix}"))
    assert back.sizes["gauge"] == 0
    assert back["gauge"].dtype == empty["gauge"].dtype
    assert back.identical(empty)
