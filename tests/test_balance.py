"""Water balance of forward runs (hybridhydro.balance): every structure closes its books."""

from __future__ import annotations

import numpy as np
import pytest

from hybridhydro.balance import BALANCE_TOLERANCE, balance_closure, closes, water_balance
from hybridhydro.simulate import simulate
from hybridhydro.synthetic import synthetic_basin

# Float32 core, float64 sums: the residual is round-off, ~1e-7 of the rain, every non-physical
# source named (hybridhydro.balance.BALANCE_TOLERANCE is 1e-6).
TOLERANCE = BALANCE_TOLERANCE

# Parameters that make each structure's exchange move water (kexc = 0 by default); gr4 and grc
# take kexc < 0 so the direct branch's floor max(0, prd + lexc) is exercised.
EXCHANGE = {
    "gr4": {"kexc": -20.0, "ht": 0.6},
    "gr5": {"kexc": 0.5},
    "gr6": {"kexc": -0.5},
    "grc": {"kexc": -20.0, "ht": 0.6},
    "grd": {},
    "loieau": {"kb": 1.5},
    "gr4_ode": {"kexc": 2.0, "ht": 0.6},
}


@pytest.fixture(scope="module")
def basin():
    return synthetic_basin(nrow=10, ncol=10, ntime=96, seed=3, ngauge=2)


def _run(basin, structure, values=None):
    values = dict(values or {})
    states = {k: values.pop(k) for k in ("ht",) if k in values}
    return simulate(
        basin, structure, values, states, return_states=True, return_fluxes=True, return_discharge_field=True
    )


@pytest.mark.parametrize("routing", ["lag0", "lr"])
@pytest.mark.parametrize("hydrology", list(EXCHANGE))
def test_balance_closes(basin, hydrology, routing):
    out = _run(basin, f"{hydrology}-{routing}", EXCHANGE[hydrology])
    wb = water_balance(out, basin)
    assert closes(balance_closure(wb, out)), balance_closure(wb, out)
    assert list(wb["unit"].values) == [*map(str, basin["gauge"].values), "domain"]
    assert np.all(wb["rain"] > 1.0)
    assert np.all(np.abs(wb["relative_residual"]) < TOLERANCE), wb["relative_residual"].values
    if hydrology != "grd":  # the exchange is a real term of the balance, not round-off
        assert np.all(np.abs(wb["exchange"]) > 0.01 * TOLERANCE * wb["rain"])
    else:
        np.testing.assert_array_equal(wb["exchange"], 0.0)
    if routing == "lr":
        assert "storage_change_hlr" in wb


def test_terms_add_up_and_carry_units(basin):
    wb = water_balance(_run(basin, "gr4-lr", EXCHANGE["gr4"]), basin)
    stores = [v for v in wb.data_vars if v.startswith("storage_change_")]
    assert stores == ["storage_change_hi", "storage_change_hp", "storage_change_ht", "storage_change_hlr"]
    np.testing.assert_allclose(wb["storage_change"], sum(wb[v] for v in stores))
    np.testing.assert_allclose(wb["evaporation"], wb["interception_evaporation"] + wb["soil_evaporation"])
    np.testing.assert_allclose(wb["residual_volume"], wb["residual"] * wb["area"] * 1e-3)
    assert wb["rain"].attrs["units"] == "mm" and wb["area"].attrs["units"] == "m2"
    # a gauge catchment's area is its active upstream cells: flwacc at the gauge cell
    rows, cols = basin["gauge_row"].values, basin["gauge_col"].values
    flwacc = basin["flwacc"].values[rows, cols]
    np.testing.assert_allclose(wb["area"].values[:-1], flwacc, rtol=1e-5)


@pytest.mark.parametrize("routing", ["zero", "kw"])
def test_zero_and_kw_routing_are_accounted_for(basin, routing):
    out = _run(basin, f"gr4-{routing}", EXCHANGE["gr4"])
    wb = water_balance(out, basin)
    assert np.all(np.abs(wb["relative_residual"]) < TOLERANCE)
    if routing == "zero":  # the gauge discharge is only the gauge cell's runoff: named so
        assert "zero routing" in wb["outflow"].attrs["long_name"]
    else:
        assert "storage_change_kw" in wb


def test_a_leak_shows_in_the_residual(basin):
    out = _run(basin, "gr4-lag0", EXCHANGE["gr4"])
    out["q"] = out["q"] * 1.5
    wb = water_balance(out, basin)
    gauges = wb["relative_residual"].values[:-1]
    expected = -0.5 * wb["outflow"].values[:-1] / 1.5 / wb["rain"].values[:-1]
    np.testing.assert_allclose(gauges, expected, rtol=1e-3)
    assert not closes(balance_closure(wb, out))


def test_missing_fields_say_how_to_get_them(basin):
    out = simulate(basin, "gr4-lr", return_fluxes=True)
    with pytest.raises(ValueError, match="return_discharge_field=True"):
        water_balance(out, basin)
    with pytest.raises(ValueError, match="'flwdir'"):
        water_balance(_run(basin, "gr4-lr"))


def test_result_carries_parameters_and_initial_states(basin):
    out = simulate(basin, "gr4-lr", {"cp": 250.0}, {"hp": 0.3})
    active = basin["active_cell"].values
    assert out["cp"].attrs["units"] == "mm" and np.all(out["cp"].values[active] == 250.0)
    assert np.all(np.isfinite(out["ci"].values[active]))  # fitted ci, sub-daily dt
    np.testing.assert_allclose(out["hp_initial"].values[active], 0.3)
    assert np.all(np.isnan(out["hp_initial"].values[~active]))


@pytest.mark.smash
def test_cance_gr4_lr_closes():
    from hybridhydro.io import read_smash_dataset

    cance = read_smash_dataset("Cance", "2014-09-15 00:00", "2014-09-22 00:00", progress=False)
    wb = water_balance(_run(cance, "gr4-lr", {"kexc": -1.0}), cance)
    assert wb.sizes["unit"] == cance.sizes["gauge"] + 1
    assert np.all(np.abs(wb["relative_residual"]) < TOLERANCE), wb["relative_residual"].values


def test_snow_pack_is_a_store(basin):
    snowy = basin.copy()
    snowy["snow"] = 0.5 * basin["prcp"]
    snowy["temp"] = 0.0 * basin["prcp"] + np.linspace(-3.0, 5.0, basin.sizes["time"])[:, None, None]
    wb = water_balance(_run(snowy, "ssn-gr4-lr"), snowy)
    assert np.all(wb["storage_change_hs"] > 0.0)  # cold start: some snow is still on the ground
    assert np.all(wb["rain"] > water_balance(_run(basin, "ssn-gr4-lr"), basin)["rain"])  # snowfall counted
    assert np.all(np.abs(wb["relative_residual"]) < TOLERANCE)


def test_missing_pet_takes_in_no_rain(basin):
    """A cell-step whose PET is missing receives nothing (smash's rule): the balance must not count
    its rain, or the run would not close."""
    gappy = basin.copy()
    pet = gappy["pet"].values.copy()
    rainy = gappy["prcp"].values > 0.0
    rainy[:, :, 5:] = False
    pet[rainy] = np.nan  # rain falls on these cell-steps, PET is missing
    gappy["pet"] = (gappy["pet"].dims, pet)
    assert float(np.nansum(gappy["prcp"].values[rainy])) > 1.0
    out = _run(gappy, "gr4-lr", EXCHANGE["gr4"])
    wb = water_balance(out, gappy)
    assert closes(balance_closure(wb, out)), balance_closure(wb, out)
    full = water_balance(_run(basin, "gr4-lr", EXCHANGE["gr4"]), basin)
    assert float(wb["rain"].sel(unit="domain")) < float(full["rain"].sel(unit="domain")) - 1.0
