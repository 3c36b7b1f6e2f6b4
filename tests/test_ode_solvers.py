"""Beyond smash: the fully implicit UDE (implicit-function-theorem gradients) and the explicit
Runge–Kutta schemes for gr4_ode / gr4_ude, against smash's Newton and finite differences."""

from __future__ import annotations

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pytest

from hybridhydro.structures import ODE_SOLVERS, StepContext, get_module, initial_weights
from hybridhydro.structures._mlp import mlp
from hybridhydro.structures._ode import explicit_step, fully_implicit_euler, newton_implicit_euler

N = 64



def _cells(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x0, y0 = rng.uniform(0.1, 0.9, (2, N))
    pn = rng.exponential(3.0, N) * (rng.random(N) < 0.7)
    en = rng.uniform(0.0, 0.4, N)
    cp, ct = rng.uniform(50, 800, N), rng.uniform(20, 300, N)
    kexc = rng.uniform(-3, 3, N)
    return tuple(np.asarray(a, dtype) for a in (x0, y0, pn, en, cp, ct, kexc))


def _net(weights, pn, en):
    def corrections_at(x, y):
        f = mlp(weights, jnp.stack(jnp.broadcast_arrays(x, y, pn, en), axis=-1))
        return tuple(f[..., k] for k in range(4))

    return corrections_at


def test_fully_implicit_equals_smash_newton_without_network(x64):
    """Without a network both solve the same equation with the same (exact) Jacobian."""
    args = _cells()
    a = newton_implicit_euler(*args)
    b = fully_implicit_euler(*args)
    np.testing.assert_allclose(b[0], a[0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(b[1], a[1], rtol=0, atol=1e-13)
    assert np.all(np.asarray(b[2]) >= 1) and np.all(np.asarray(b[2]) < 10)
    assert float(jnp.max(b[3])) < 1e-10


def _directional(loss, x, v, eps):
    return (loss(x + eps * v) - loss(x - eps * v)) / (2 * eps)


def test_implicit_function_theorem_gradients_match_finite_differences(x64):
    x0, y0, pn, en, cp, ct, kexc = _cells(1)
    w = {k: jnp.asarray(v) for k, v in initial_weights(4, 4, 8, "he_uniform", seed=3).items()}
    rng = np.random.default_rng(2)

    def loss_params(theta):
        cp, ct, kexc = theta
        x, y, _, _ = fully_implicit_euler(x0, y0, pn, en, cp, ct, kexc, w)
        return jnp.sum(x**2 + y**3)

    theta = jnp.stack([cp, ct, kexc])
    v = rng.normal(size=theta.shape)
    g = jax.grad(loss_params)(theta)
    np.testing.assert_allclose(float(jnp.sum(g * v)), float(_directional(loss_params, theta, v, 1e-4)), rtol=1e-6)

    def loss_weights(flat):
        ws = ravel_pytree(w)[1](flat)
        x, y, _, _ = fully_implicit_euler(x0, y0, pn, en, cp, ct, kexc, ws)
        return jnp.sum(x**2 + y**3)

    flat = ravel_pytree(w)[0]
    v = rng.normal(size=flat.shape)
    g = jax.grad(loss_weights)(flat)
    np.testing.assert_allclose(float(g @ v), float(_directional(loss_weights, flat, v, 1e-5)), rtol=1e-6)

    def loss_initial(z0):
        x, y, _, _ = fully_implicit_euler(z0[0], z0[1], pn, en, cp, ct, kexc, w)
        return jnp.sum(x**2 + y**3)

    z0 = jnp.stack([x0, y0])
    v = rng.normal(size=z0.shape)
    g = jax.grad(loss_initial)(z0)
    np.testing.assert_allclose(float(jnp.sum(g * v)), float(_directional(loss_initial, z0, v, 1e-6)), rtol=1e-6)


@pytest.mark.parametrize("scheme", ["heun", "rk4"])
def test_explicit_schemes_close_the_balance_and_converge(x64, scheme):
    args = _cells(4)
    x0, y0, pn, en, cp, ct, kexc = args
    reference = explicit_step(*args, None, "rk4", 256)
    errors = []
    for n in (2, 4, 8):
        x, y, t = explicit_step(*args, None, scheme, n)
        # every store changes by exactly its integrated fluxes
        np.testing.assert_allclose(cp * (x - x0), t["infiltration"] - t["evaporation"], atol=1e-10)
        np.testing.assert_allclose(ct * (y - y0), 0.9 * t["runoff"] - t["outflow"] + t["exchange"], atol=1e-10)
        np.testing.assert_allclose(t["qt"], t["outflow"] + 0.1 * t["runoff"] + t["exchange"], atol=1e-12)
        errors.append(float(jnp.max(jnp.abs(y - reference[1]))))
    order = np.log2(errors[0] / errors[1]), np.log2(errors[1] / errors[2])
    expected = 2 if scheme == "heun" else 4
    assert min(order) > expected - 0.6, (errors, order)


def test_implicit_euler_is_first_order_against_the_fine_solution(x64):
    """What the implicit-vs-explicit comparison measures: implicit Euler with one step per
    time step differs from the converged ODE solution by an O(Δt) error (here ~1e-2), while
    RK4 with 4 sub-steps is within 1e-4."""
    args = _cells(5)
    fine = explicit_step(*args, None, "rk4", 256)
    implicit = newton_implicit_euler(*args)
    rk4 = explicit_step(*args, None, "rk4", 4)
    err_implicit = float(jnp.max(jnp.abs(implicit[1] - fine[1])))
    err_rk4 = float(jnp.max(jnp.abs(rk4[1] - fine[1])))
    assert err_rk4 < 1e-4 < err_implicit


@pytest.mark.parametrize("solver", ODE_SOLVERS)
def test_every_solver_runs_gr4_ude_with_finite_gradients(solver):
    module = get_module("gr4_ude")
    x0, y0, pn, en, cp, ct, kexc = _cells(6, np.float32)
    theta = {"ci": jnp.full(N, 1.0), "cp": jnp.asarray(cp), "ct": jnp.asarray(ct), "kexc": jnp.asarray(kexc)}
    h0 = {"hi": jnp.full(N, 0.2), "hp": jnp.asarray(x0), "ht": jnp.asarray(y0)}
    rng = np.random.default_rng(0)
    p = (rng.exponential(2.0, (12, N)) * (rng.random((12, N)) < 0.5)).astype(np.float32)
    e = rng.uniform(0, 0.3, (12, N)).astype(np.float32)
    p[3, :5] = np.nan  # missing forcing on a few cells
    w = {k: jnp.asarray(v) * 0.3 for k, v in initial_weights(4, 4, 8, "he_uniform", seed=1).items()}

    def loss(w, theta):
        ctx = StepContext(dt=3600.0, nn_parameters=w, ode_solver=solver, ode_substeps=4)
        h, fx = jax.lax.scan(lambda h, x: module.step(theta, h, x[0], x[1], ctx), h0, (p, e))
        return jnp.sum(fx["qt"]) + jnp.sum(h["ht"]), fx

    (value, fx), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(w, theta)
    assert np.isfinite(float(value))
    for leaf in jax.tree_util.tree_leaves(grads):
        assert np.all(np.isfinite(np.asarray(leaf)))
    iterations = np.asarray(fx["newton_iterations"])
    assert np.all(iterations[3, :5] == 0)  # missing forcing: no step solved
    if solver in ("newton", "implicit"):
        assert iterations.max() <= 10 and iterations[iterations > 0].min() >= 1
        converged = (iterations > 0) & (iterations < 10)
        assert np.asarray(fx["newton_residual"])[converged].max() < 1e-4
    elif solver == "conservative":  # a root on every cell-step, by construction
        assert np.asarray(fx["newton_residual"]).max() < 1e-5
        np.testing.assert_allclose(np.asarray(fx["source_solver"]), 0.0, atol=1e-4)
    else:
        assert iterations.max() == 0


def test_semi_implicit_and_fully_implicit_agree_when_the_network_is_zero():
    module = get_module("gr4_ude")
    x0, y0, pn, en, cp, ct, kexc = _cells(7, np.float32)
    theta = {"ci": jnp.full(N, 1.0), "cp": jnp.asarray(cp), "ct": jnp.asarray(ct), "kexc": jnp.asarray(kexc)}
    h0 = {"hi": jnp.full(N, 0.2), "hp": jnp.asarray(x0), "ht": jnp.asarray(y0)}
    zero = {k: jnp.asarray(v) for k, v in initial_weights(4, 4, 8).items()}
    p, e = jnp.asarray(pn + 1.0), jnp.asarray(en)
    out = {}
    for solver in ("newton", "implicit"):
        out[solver] = module.step(theta, h0, p, e, StepContext(nn_parameters=zero, ode_solver=solver))
    np.testing.assert_allclose(out["implicit"][0]["ht"], out["newton"][0]["ht"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(out["implicit"][1]["qt"], out["newton"][1]["qt"], rtol=1e-5, atol=1e-6)


def test_unknown_solver_and_missing_weights_are_errors():
    module = get_module("gr4_ude")
    theta = {"ci": jnp.ones(2), "cp": jnp.full(2, 200.0), "ct": jnp.full(2, 100.0), "kexc": jnp.zeros(2)}
    h = {"hi": jnp.full(2, 0.1), "hp": jnp.full(2, 0.3), "ht": jnp.full(2, 0.3)}
    w = {k: jnp.asarray(v) for k, v in initial_weights(4, 4, 8).items()}
    with pytest.raises(ValueError, match="unknown ode_solver 'euler'"):
        module.step(theta, h, jnp.ones(2), jnp.ones(2), StepContext(nn_parameters=w, ode_solver="euler"))
    with pytest.raises(ValueError, match="give the weights of its network"):
        module.step(theta, h, jnp.ones(2), jnp.ones(2), StepContext())
