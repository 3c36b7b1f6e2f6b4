"""One road to a model run: prepare_run -> RunInputs -> run, used by simulate, calibrate and
water_balance alike; user losses differentiated with jax.grad."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hybridhydro as hh


@pytest.fixture(scope="module")
def basin():
    return hh.synthetic_basin(nrow=6, ncol=6, ntime=96, seed=1)


def test_simulate_is_prepare_then_run(basin):
    inputs = hh.prepare_run(basin, "gr4-lr", {"cp": 250.0})
    assert isinstance(inputs, hh.RunInputs) and inputs.structure == "zero-gr4-lr"
    out = hh.run(inputs)
    sim = hh.simulate(basin, "gr4-lr", {"cp": 250.0})
    np.testing.assert_array_equal(np.asarray(out["q"]).T, sim["q"].values)
    # the same prepared inputs through simulate, and run under jax.jit (a pytree argument)
    np.testing.assert_array_equal(hh.simulate(inputs)["q"].values, sim["q"].values)
    jitted = jax.jit(hh.run)(inputs)
    np.testing.assert_allclose(np.asarray(jitted["q"]), np.asarray(out["q"]), rtol=1e-6)
    # replacing a parameter in run is replacing it in prepare_run
    again = hh.run(inputs, {"cp": 400.0})
    np.testing.assert_array_equal(np.asarray(again["q"]).T, hh.simulate(basin, "gr4-lr", {"cp": 400.0})["q"].values)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['cq'\]"):
        hh.run(inputs, {"cq": 1.0})
    with pytest.raises(ValueError, match="cannot change a prepared run"):
        hh.simulate(inputs, parameters={"cp": 1.0})


def test_a_period_runs_a_window_with_its_own_initial_states(basin):
    t = basin["time"].values
    window = hh.simulate(basin, "gr4-lr", period=(t[47], None))
    assert window.sizes["time"] == 48 and window["time"].values[0] == t[48]
    with pytest.raises(ValueError, match="outside the basin's data"):
        hh.prepare_run(basin, "gr4-lr", period=("1990-01-01", "1990-02-01"))
    with pytest.raises(ValueError, match="unknown option"):
        hh.prepare_run(basin, "gr4-lr", ode_sovler="rk4")
    with pytest.raises(ValueError, match="ode_substeps must be a positive whole number"):
        hh.prepare_run(basin, "gr4_ode-lr", ode_substeps=2.5)


def test_user_loss_gradient_matches_finite_differences(basin, x64):
    """The README's example: a loss of one's own, differentiated with jax.grad (float64)."""
    inputs = hh.prepare_run(basin, "gr4-lr").astype(jnp.float64)
    qobs = jnp.asarray(np.nan_to_num(basin["qobs"].values[0]), jnp.float64)

    def loss(p):
        q = hh.run(inputs, p)["q"][:, 0]
        return jnp.mean((q - qobs) ** 2)

    theta = {"cp": inputs.parameters["cp"], "llr": inputs.parameters["llr"]}
    grad = jax.grad(loss)(theta)
    rng = np.random.default_rng(0)
    for name in theta:
        direction = jnp.asarray(rng.normal(size=inputs.nac))
        eps = 1e-4 * float(jnp.max(jnp.abs(theta[name])))
        plus = loss({**theta, name: theta[name] + eps * direction})
        minus = loss({**theta, name: theta[name] - eps * direction})
        fd = (plus - minus) / (2 * eps)
        ad = jnp.sum(grad[name] * direction)
        assert abs(float(fd)) > 0
        np.testing.assert_allclose(float(ad), float(fd), rtol=1e-5, err_msg=name)


def test_calibration_uses_the_basins_imperviousness(basin):
    """Calibration runs the model simulate runs: with the basin's imperviousness."""
    paved = basin.assign(imperviousness=(("y", "x"), np.full((basin.sizes["y"], basin.sizes["x"]), 0.6)))
    kw = dict(parameters=("cp",), progress=False, gauges="all")
    bare = hh.calibrate(basin, "gr4-lr", "uniform", "adam", 0, **kw)
    sealed = hh.calibrate(paved, "gr4-lr", "uniform", "adam", 0, **kw)
    # the cost at the first guess is that of simulate on the same basin
    for b, res in ((basin, bare), (paved, sealed)):
        sim = hh.simulate(b, "gr4-lr", res.parameters)
        nse = hh.evaluate(sim, b, "nse")["nse"].values
        np.testing.assert_allclose(res.history["cost"].iloc[0], np.mean(1 - nse), rtol=1e-5)
    assert abs(sealed.history["cost"].iloc[0] - bare.history["cost"].iloc[0]) > 1e-3


def test_bounds_outside_the_feasible_domain_are_refused_with_the_parameter_named(basin):
    with pytest.raises(ValueError, match=r"bounds of 'cp' are \(-5.0, 100.0\), but cp must stay inside \(0"):
        hh.calibrate(basin, "gr4-lr", "distributed", maxiter=1, bounds={"cp": (-5, 100)}, progress=False)
    with pytest.raises(ValueError, match=r"bounds given for \['cq'\], which is not a parameter"):
        hh.calibrate(basin, "gr4-lr", "distributed", maxiter=1, bounds={"cq": (1, 100)}, progress=False)
    with pytest.raises(ValueError, match=r"bounds given for \['ci'\], which is not calibrated"):
        hh.calibrate(basin, "gr4-lr", "distributed", maxiter=1, bounds={"ci": (1, 10)}, progress=False)
    # first guesses outside the feasible domain are refused as simulate refuses them
    with pytest.raises(ValueError, match=r"parameter 'ct' = -1.0 at cell"):
        hh.calibrate(basin, "gr4-lr", "distributed", maxiter=1, initial_parameters={"ct": -1.0}, progress=False)


def test_solver_options_are_recorded_saved_and_restored(basin, tmp_path):
    res = hh.calibrate(basin, "gr4_ode-lr", "uniform", "adam", 1, parameters=("cp",), progress=False,
                       ode_solver="rk4", ode_substeps=3)
    assert res.options["ode_solver"] == "rk4" and res.options["ode_substeps"] == 3
    back = hh.load_calibration(res.save(tmp_path / "ode"))
    assert back.options["ode_solver"] == "rk4" and back.options["ode_substeps"] == 3
    sim = back.simulate(basin)
    assert sim.attrs["ode_solver"] == "rk4" and sim.attrs["ode_substeps"] == 3
    ref = hh.simulate(basin, "gr4_ode-lr", res.parameters, ode_solver="rk4", ode_substeps=3)
    np.testing.assert_array_equal(sim["q"].values, ref["q"].values)
    # the cost of the calibrated model is that of the rk4 run, not of smash's Newton scheme
    newton = hh.simulate(basin, "gr4_ode-lr", res.parameters)
    assert not np.array_equal(newton["q"].values, ref["q"].values)


def test_regularisation_is_wired_into_calibrate(basin):
    kw = dict(parameters=("cp", "ct"), progress=False, gauges="all")
    free = hh.calibrate(basin, "gr4-lr", "distributed", "lbfgsb", 5, **kw)
    held = hh.calibrate(basin, "gr4-lr", "distributed", "lbfgsb", 5, **kw,
                        regularisation={"components": ["prior"], "wjreg": 1e-2})
    start = hh.simulate(basin, "gr4-lr")  # the first guesses: smash's defaults

    def moved(res):
        return sum(float(np.nanmean(np.abs(res.parameters[n] - start[n].values))) for n in ("cp", "ct"))

    assert moved(held) < 0.5 * moved(free)
    assert held.options["regularisation"]["wjreg"] == 1e-2
    with pytest.raises(ValueError, match="unknown component"):
        hh.calibrate(basin, "gr4-lr", "distributed", maxiter=1, progress=False,
                     regularisation={"components": ["ridge"], "wjreg": 1.0})
    with pytest.raises(ValueError, match="wjreg must be a finite number >= 0"):
        hh.calibrate(basin, "gr4-lr", "distributed", maxiter=1, progress=False,
                     regularisation={"wjreg": -1.0})


def test_water_balance_reads_the_runs_own_window(basin):
    t = basin["time"].values
    sim = hh.simulate(basin, "gr4-lr", period=(t[23], None), return_fluxes=True, return_states=True,
                      return_discharge_field=True)
    closure = hh.balance_closure(hh.water_balance(sim, basin), sim)
    assert hh.closes(closure), closure
    # the check can fail: the same fluxes labelled 24 steps early meet another window's rain
    shifted = sim.assign_coords(time=t[:-24])
    assert not hh.closes(hh.balance_closure(hh.water_balance(shifted, basin), shifted))
