"""The neural ODE you can trust: exact water accounting under storms, solvable steps, a
conservative solver, and gradients that are true where the implicit step is not solvable.

Each accounting check is also run on a case where it must fail (a leaking run, a named term
taken away), so that a check which cannot fail would show here.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import hybridhydro as hh
from hybridhydro import structures
from hybridhydro.structures import (
    HYDROLOGICAL_MODULES,
    ODE_SOLVERS,
    StepContext,
    get_module,
    initial_weights,
    transfer_solvability,
)

RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)
IMPLICIT = ("newton", "conservative", "implicit")


@pytest.fixture(scope="module")
def basin():
    return hh.synthetic_basin(nrow=8, ncol=8, ntime=48, seed=5, ngauge=2)


def _storm(basin, mm_per_step):
    """The basin under sustained rain of ``mm_per_step`` on every cell and step."""
    storm = basin.copy()
    storm["prcp"] = basin["prcp"] * 0.0 + mm_per_step
    return storm


def _ude_net(scale=0.1, seed=0):
    return hh.FluxCorrectionNet.for_structure("gr4_ude", initializer="he_uniform", scale=scale, seed=seed)


# ------------------------------------------------------------------------ exact accounting


@pytest.mark.parametrize("intensity", [150.0, 1000.0])
@pytest.mark.parametrize("solver", ODE_SOLVERS)
def test_storms_close_with_every_loss_named(basin, solver, intensity):
    """gr4_ode under sustained rain: whatever a solver loses is named (``source_solver``), and
    the unexplained residual stays within 1e-6 of the rain."""
    storm = _storm(basin, intensity)
    result = hh.simulate(storm, "gr4_ode-lr", ode_solver=solver, **RUN)
    balance = hh.water_balance(result, storm)
    closure = hh.balance_closure(balance, result)
    assert hh.closes(closure), closure
    assert closure["no_root"] > 0.1  # the storm overflows the transfer stores
    lost = -float(balance["source_solver"].sel(unit="domain") / balance["rain"].sel(unit="domain"))
    if solver == "conservative":  # no numerical source: the surplus leaves as overflow
        assert abs(lost) < 1e-6
        assert float(balance["overflow"].sel(unit="domain")) > 0.01 * float(balance["rain"].sel(unit="domain"))
    else:  # smash's scheme and the others lose water, and say how much
        assert lost > 0.01
        assert float(balance["overflow"].sel(unit="domain")) == 0.0


@pytest.mark.parametrize("intensity", [150.0, 1000.0])
@pytest.mark.parametrize("solver", IMPLICIT)
def test_untrained_ude_closes_beside_its_correction(basin, solver, intensity):
    storm = _storm(basin, intensity)
    result = hh.simulate(storm, "gr4_ude-lr", nn_parameters=_ude_net(), ode_solver=solver, **RUN)
    balance = hh.water_balance(result, storm)
    closure = hh.balance_closure(balance, result)
    assert hh.closes(closure), closure
    assert float(np.abs(balance["correction"]).max()) > 0.0
    if solver == "conservative":
        assert closure["source_solver"] < 1e-6


@pytest.mark.parametrize("structure", ["gr4-lr", "gr6-lr", "grc-kw", "grd-lag0", "loieau-lr", "gr4_mlp-lr"])
def test_smash_rules_that_create_water_are_named(basin, structure):
    """Imperviousness, the transfer-store floor and the steady outflow of a store where rain is
    missing: each is its own term, and the balance closes to 1e-6 with them."""
    run_basin = basin.copy()
    rng = np.random.default_rng(0)
    run_basin["imperviousness"] = (("y", "x"), rng.uniform(0.0, 0.5, (basin.sizes["y"], basin.sizes["x"])))
    prcp = run_basin["prcp"].values.copy()
    prcp[20:23] = np.nan  # a gap in the rain, after the stores have filled
    run_basin["prcp"] = (run_basin["prcp"].dims, prcp)
    values = {"kexc": -50.0, "ct": 2.0} if structure.split("-")[0] in ("gr4", "grc", "gr4_mlp") else {}
    nn = hh.FluxCorrectionNet.for_structure("gr4_mlp", initializer="he_uniform", scale=0.3) if "mlp" in structure else None
    level = "hc" if structure.startswith("loieau") else "ht"
    result = hh.simulate(run_basin, structure, values, {level: 0.5 if values else 0.9}, nn_parameters=nn, **RUN)
    balance = hh.water_balance(result, run_basin)
    closure = hh.balance_closure(balance, result)
    assert hh.closes(closure), closure
    domain = balance.sel(unit="domain")
    assert float(domain["source_impervious"]) < -0.01 * float(domain["rain"])
    if values:  # a tiny store that a large negative exchange keeps at its floor
        assert float(domain["source_floor"]) > 0.0
    else:  # a full store where the rain is missing releases water from nothing
        assert float(domain["source_steady"]) > 0.01 * float(domain["rain"])
    # Take a named term away: the same run no longer closes.
    for name in ("source_impervious", "source_floor") if values else ("source_impervious",):
        leaky = balance.copy()
        leaky["residual"] = balance["residual"] - balance[name]
        assert not hh.closes(hh.balance_closure(leaky)), name


def test_a_run_that_loses_water_fails_the_check(basin, monkeypatch):
    """A structure that drops 2 % of its runoff without reporting it: the check must fail."""
    module = HYDROLOGICAL_MODULES["gr4"]

    def leaky_step(theta, h, p, e, ctx, hybrid=()):
        h_new, fluxes = module.step(theta, h, p, e, ctx, hybrid)
        return h_new, {**fluxes, "qt": 0.98 * fluxes["qt"]}

    leaky = dataclasses.replace(module, step=leaky_step)
    odd = basin.isel(x=slice(0, 7))  # a grid no other test compiles, so the leaky step is traced
    honest = hh.simulate(odd, "gr4-lr", **RUN)
    assert hh.closes(hh.balance_closure(hh.water_balance(honest, odd), honest))
    monkeypatch.setitem(HYDROLOGICAL_MODULES, "gr4", leaky)
    jax.clear_caches()
    result = hh.simulate(odd, "gr4-lr", **RUN)
    monkeypatch.undo()
    jax.clear_caches()
    closure = hh.balance_closure(hh.water_balance(result, odd), result)
    assert not hh.closes(closure) and closure["worst"] > 1e-5, closure


def test_named_solver_losses_never_excuse_a_residual(basin):
    """The old check passed any run with an unconverged step. Hide the solver's named loss of
    a storm run: it leaves an unexplained residual, and the run fails even though its
    Newton steps did not converge."""
    storm = _storm(basin, 300.0)
    result = hh.simulate(storm, "gr4_ode-lr", ode_solver="newton", **RUN)
    hidden = result.copy()
    hidden["source_solver"] = result["source_solver"] * 0.0
    closure = hh.balance_closure(hh.water_balance(hidden, storm), hidden)
    assert closure["unconverged"] > 0 and closure["no_root"] > 0
    assert not hh.closes(closure)
    assert not hh.closes({"worst": float("nan")})  # an undefined share never passes


def test_corrections_that_overfill_a_store_are_shown(basin):
    """gr4_mlp's (1 + f)·ps can push hp above 1 (as in smash): the water held above capacity is
    reported, and the balance still closes."""
    net = hh.FluxCorrectionNet.for_structure("gr4_mlp", initializer="he_uniform", scale=3.0, seed=2)
    storm = _storm(basin, 40.0)
    result = hh.simulate(storm, "gr4_mlp-lr", {"cp": 20.0}, {"hp": 0.95}, nn_parameters=net, **RUN)
    balance = hh.water_balance(result, storm)
    closure = hh.balance_closure(balance, result)
    assert hh.closes(closure), closure
    assert closure["above_capacity"] > 0.0
    assert "storage_above_capacity" in balance


# ------------------------------------------------------------------------------ solvability


def _brute_force(c, a3k, a4):
    y = np.linspace(0.0, 1.0, 100_001)[:, None]
    g = y + 0.25 * a4 * y**5 - a3k * y**3.5
    slope = 1.0 + 1.25 * a4 * y**4 - 3.5 * a3k * y**2.5
    return c <= g.max(axis=0), slope.min(axis=0) > 0.0, g.max(axis=0)


def test_solvability_matches_a_brute_force_search(x64):
    rng = np.random.default_rng(0)
    n = 120
    a4 = rng.uniform(0.05, 1.95, n)
    a3k = np.concatenate([rng.uniform(-2.0, 2.0, n // 2), rng.uniform(0.4, 1.2, n - n // 2)])
    _, _, gmax = _brute_force(np.zeros(n), a3k, a4)
    c = gmax * rng.uniform(0.9, 1.1, n)  # around the edge of existence
    exists, unique, y_top, g_top = transfer_solvability(jnp.asarray(c), jnp.asarray(a3k), jnp.asarray(a4))
    want_exists, want_unique, _ = _brute_force(c, a3k, a4)
    edge = np.abs(c - gmax) < 1e-8 * np.maximum(gmax, 1.0)  # the grid cannot decide these
    np.testing.assert_array_equal(np.asarray(exists)[~edge], want_exists[~edge])
    np.testing.assert_array_equal(np.asarray(unique), want_unique)
    np.testing.assert_allclose(np.asarray(g_top), gmax, rtol=1e-9, atol=1e-9)
    assert np.all((np.asarray(y_top) > 0) & (np.asarray(y_top) <= 1))
    # uniqueness alone says nothing of existence: kexc = 0 is "well posed", yet heavy rain on
    # a full store has no root once y0 + 0.9·pn·x²/ct > 1.25 - kexc/ct
    assert not bool(np.asarray(structures.ill_posed_cells(100.0, 0.0)))
    ok, uniq, _, _ = transfer_solvability(jnp.asarray([1.249, 1.251]), jnp.zeros(2), jnp.ones(2))
    np.testing.assert_array_equal(np.asarray(ok), [True, False])
    np.testing.assert_array_equal(np.asarray(uniq), [True, True])


def test_step_diagnostics_take_the_corrections_into_account():
    """The same step, with and without a network that cuts the outflow (f4 < 0): the
    corrections decide whether it has a root."""
    theta = {"ci": jnp.full(2, 1e-6), "cp": jnp.full(2, 200.0), "ct": jnp.full(2, 100.0), "kexc": jnp.zeros(2)}
    h = {"hi": jnp.zeros(2), "hp": jnp.full(2, 0.5), "ht": jnp.full(2, 0.98)}
    p, e = jnp.asarray([20.0, 0.0]), jnp.zeros(2)
    _, fx = get_module("gr4_ode").step(theta, h, p, e, StepContext())
    np.testing.assert_array_equal(np.asarray(fx["ode_root_exists"]), [1, 1])
    w = {k: jnp.zeros_like(jnp.asarray(v)) for k, v in initial_weights(4, 4, 8).items()}
    w["bias_2"] = jnp.asarray([0.0, 0.0, 0.0, -3.0])  # tanh → f4 = -0.995: almost no outflow
    _, fx = get_module("gr4_ude").step(theta, h, p, e, StepContext(nn_parameters=w))
    np.testing.assert_array_equal(np.asarray(fx["ode_root_exists"]), [0, 1])


# --------------------------------------------------------------------------- true gradients

# Two cells: a converged step, and the overflowing step of the issue (pn = 120 mm, ct = 100,
# kexc = 0: y0 + 0.9·pn·x²/ct > 1.25, no root in (0, 1)).
_CELLS = dict(cp=[300.0, 200.0], ct=[80.0, 100.0], kexc=[1.5, 0.0], hp=[0.4, 0.9], ht=[0.5, 0.6], p=[3.0, 120.5])


def _one_step(solver, hybrid, weights=(1.0, 0.7)):
    module = get_module("gr4_ude" if hybrid else "gr4_ode")

    def loss(theta, h0, w):
        ctx = StepContext(dt=3600.0, nn_parameters=w, ode_solver=solver)
        h, fx = module.step(theta, {"hi": jnp.zeros(2), **h0}, jnp.asarray(_CELLS["p"]), jnp.asarray([0.05, 0.0]), ctx)
        return jnp.sum(jnp.asarray(weights) * (h["hp"] * 2.0 + h["ht"] * 3.0 + fx["qt"] / 50.0)), fx

    return loss


@pytest.mark.parametrize("hybrid", [False, True])
@pytest.mark.parametrize("solver", IMPLICIT)
def test_gradients_match_finite_differences_at_converged_and_overflowing_steps(x64, solver, hybrid):
    theta = {k: jnp.asarray(_CELLS[k], jnp.float64) for k in ("cp", "ct", "kexc")}
    theta["ci"] = jnp.full(2, 2.0)
    h0 = {k: jnp.asarray(_CELLS[k], jnp.float64) for k in ("hp", "ht")}
    w = None
    if hybrid:
        w = {k: jnp.asarray(v, jnp.float64) * 0.1 for k, v in initial_weights(4, 4, 6, "he_uniform", seed=4).items()}
    # Where the returned point is a root of its equations (every cell of the conservative
    # solver; gr4_ode's production store, and its transfer store held at the clip), the
    # gradient is the finite-difference one. gr4_ude's Newton at the overflowing step returns
    # no root of either equation (the inexact Jacobian couples them): its gradient there is the
    # safeguarded solve's (the fully implicit solver's is masked; checked below), and the finite
    # differences are taken on the converged cell.
    masked = hybrid and solver != "conservative"
    loss = jax.jit(_one_step(solver, hybrid, (1.0, 0.0) if masked else (1.0, 0.7)))
    _, fx = loss(theta, h0, w)
    assert int(fx["ode_root_exists"][0]) == 1 and int(fx["ode_root_exists"][1]) == 0
    if solver == "conservative":
        assert float(fx["overflow"][1]) > 1.0 and float(fx["overflow"][0]) == 0.0
    else:  # Newton clips and loses water: named
        assert float(fx["source_solver"][1]) < -1.0
    grads = jax.grad(lambda *a: loss(*a)[0], argnums=(0, 1, 2) if hybrid else (0, 1))(theta, h0, w)

    def check(tree, index, eps, directions=None):
        """Central differences along each entry (``directions=None``) or along that many random
        directions (the network's weights: every entry at once)."""
        flat, unravel = ravel_pytree(tree)
        g = np.asarray(ravel_pytree(grads[index])[0])
        scale = np.maximum(1.0, np.abs(np.asarray(flat)))
        rng = np.random.default_rng(index)
        if directions is None:
            vs = [np.eye(flat.size)[i] * scale for i in range(flat.size)]
        else:
            vs = [rng.normal(size=flat.size) * scale for _ in range(directions)]
        for i, v in enumerate(vs):
            args = [theta, h0, w]
            up, down = list(args), list(args)
            up[index], down[index] = unravel(flat + eps * v), unravel(flat - eps * v)
            fd = (float(loss(*up)[0]) - float(loss(*down)[0])) / (2 * eps)
            np.testing.assert_allclose(float(g @ v), fd, rtol=1e-5, atol=1e-7, err_msg=f"input {index}, direction {i}")

    check({k: theta[k] for k in ("cp", "ct", "kexc")} | {"ci": theta["ci"]}, 0, 1e-6)
    check(h0, 1, 1e-7)
    if hybrid:
        check(w, 2, 1e-6, directions=4)
    if masked:  # the overflowing cell returns no root: no implicit-function gradient there
        def levels(theta, h0, w, which=solver):
            ctx = StepContext(dt=3600.0, nn_parameters=w, ode_solver=which)
            module = get_module("gr4_ude")
            h, _ = module.step(theta, {"hi": jnp.zeros(2), **h0}, jnp.asarray(_CELLS["p"]), jnp.asarray([0.05, 0.0]), ctx)
            return h["hp"][1] + h["ht"][1]

        g_theta, g_w = jax.jit(jax.grad(levels, argnums=(0, 2)))(theta, h0, w)
        if solver == "newton":  # smash's Newton takes it through the safeguarded solve of its equations
            want = jax.jit(jax.grad(partial(levels, which="conservative"), argnums=(0, 2)))(theta, h0, w)
            for got, ref in zip(jax.tree_util.tree_leaves((g_theta, g_w)), jax.tree_util.tree_leaves(want)):
                np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-9, atol=1e-12)
            assert float(jnp.abs(g_theta["cp"][1])) > 0.0
        else:  # the fully implicit solver masks it
            assert float(g_theta["cp"][1]) == 0.0 and float(g_theta["ct"][1]) == 0.0
            assert all(float(jnp.abs(v).max()) == 0.0 for v in jax.tree_util.tree_leaves(g_w))


def test_ift_gradient_is_not_applied_where_newton_did_not_converge(x64):
    """The issue's case: dy/dct at the overflowing step is 0 (y sits at its clip) by finite
    differences; the implicit-function theorem applied there gave -3.8e-3."""
    for solver in ("newton", "implicit"):
        def y_of(ct):
            theta = {"ci": jnp.full(1, 1e-6), "cp": jnp.full(1, 200.0), "ct": ct, "kexc": jnp.zeros(1)}
            h = {"hi": jnp.zeros(1), "hp": jnp.full(1, 0.9), "ht": jnp.full(1, 0.6)}
            h_new, _ = get_module("gr4_ode").step(theta, h, jnp.full(1, 120.0), jnp.zeros(1), StepContext(ode_solver=solver))
            return h_new["ht"][0]

        ct = jnp.full(1, 100.0)
        assert float(jax.grad(y_of)(ct)[0]) == 0.0
        assert float(y_of(ct + 1e-3) - y_of(ct - 1e-3)) == 0.0


@pytest.mark.parametrize("hidden", [(16,), (8, 6)])
def test_network_derivatives_in_one_pass_equal_forward_mode(x64, hidden):
    """gr4_ude's state derivatives of its network, carried through the layers in one pass, are
    jax.jvp's along hp and along ht."""
    from hybridhydro.structures._mlp import mlp, mlp_with_input_derivatives

    w = {k: jnp.asarray(v) for k, v in initial_weights(4, 4, hidden, "he_uniform", seed=3).items()}
    z = jnp.asarray(np.random.default_rng(0).uniform(0.0, 2.0, (50, 4)))
    f, (g1, g2) = mlp_with_input_derivatives(w, z, (0, 1))
    np.testing.assert_allclose(f, mlp(w, z), rtol=1e-14)
    for j, g in ((0, g1), (1, g2)):
        _, want = jax.jvp(lambda v: mlp(w, v), (z,), (jnp.zeros_like(z).at[:, j].set(1.0),))
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-14)
