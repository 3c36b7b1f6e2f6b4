"""Hybrid structures against hydro-smash 1.3.0: the same random network weights in both.

smash is only *called* (public API: ``set_nn_parameters_weight``/``bias``, ``forward_run``).
Each test builds a smash model of a hybrid structure with ``routing_module="zero"``, random
distributed parameters and initial states, random network weights, and compares the elementary
discharge ``qt`` of every cell and step, the internal fluxes and the final states with our
step scanned over the same forcing, the weights loaded in smash's layout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_structures_smash import (
    END_TIME,
    F32,
    QT_RTOL,
    STATE_ATOL_MM,
    _CAPACITY,
    absdiff,
    active_cells,
    smash_run,
)

from hybridhydro.structures import HYBRID_MODULES, PARAMETER_BOUNDS, STATE_BOUNDS, StepContext, get_module

smash = pytest.importorskip("smash")
pytestmark = pytest.mark.smash


@pytest.fixture(scope="module")
def cance():
    return smash.factory.load_dataset("Cance")


def hybrid_model(cance, module, seed, hidden=16, *, scale=1.0, missing=False, max_kexc_over_ct=None):
    """A smash hybrid model with random parameters, initial states, weights and biases."""
    setup, mesh = cance
    setup = dict(setup, hydrological_module=module, routing_module="zero", end_time=END_TIME, hidden_neuron=hidden)
    model = smash.Model(setup, mesh)
    rng = np.random.default_rng(seed)
    shape = (model.mesh.nrow, model.mesh.ncol)
    for name in model.rr_parameters.keys:
        if name != "ci":
            model.set_rr_parameters(name, rng.uniform(*PARAMETER_BOUNDS[name], shape).astype(F32))
    if max_kexc_over_ct is not None and "kexc" in model.rr_parameters.keys:
        ct, kexc = model.get_rr_parameters("ct"), model.get_rr_parameters("kexc")
        model.set_rr_parameters("kexc", np.minimum(kexc, F32(max_kexc_over_ct) * ct).astype(F32))
    for name in model.rr_initial_states.keys:
        model.set_rr_initial_states(name, rng.uniform(*STATE_BOUNDS[name], shape).astype(F32))
    weights = [scale * w for w in _glorot(model, rng)]
    model.set_nn_parameters_weight(weights)
    model.set_nn_parameters_bias([rng.uniform(-0.2, 0.2, b.shape).astype(F32) for b in model.get_nn_parameters_bias()])
    if missing:
        for var in ("prcp", "pet"):
            values = getattr(model.atmos_data, var).copy()
            values[rng.random(values.shape) < 0.05] = -99.0
            setattr(model.atmos_data, var, values)
    return model


def _glorot(model, rng):
    out = []
    for w in model.get_nn_parameters_weight():
        fan_out, fan_in = w.shape
        out.append((rng.uniform(-1, 1, w.shape) * np.sqrt(6.0 / (fan_in + fan_out))).astype(F32))
    return out


def smash_weights(model) -> dict:
    """smash's network as our weight dict (same layout: weight_k (n_out_k, n_in_k), bias_k)."""
    out = {}
    for k, (w, b) in enumerate(zip(model.get_nn_parameters_weight(), model.get_nn_parameters_bias()), start=1):
        out[f"weight_{k}"], out[f"bias_{k}"] = np.asarray(w, F32), np.asarray(b, F32)
    return out


def our_hybrid_run(model, name, weights):
    rows, cols = active_cells(model.mesh.active_cell)
    module = get_module(name)
    theta = {n: jnp.asarray(model.get_rr_parameters(n)[rows, cols]) for n in module.parameters}
    h0 = {n: jnp.asarray(model.get_rr_initial_states(n)[rows, cols]) for n in module.states}

    def forcing(var):
        values = np.asarray(getattr(model.atmos_data, var)[rows, cols, :].T, F32)
        return np.where(values < 0, np.nan, values)

    p, e = forcing("prcp"), forcing("pet")
    imperviousness = jnp.asarray(model.physio_data.imperviousness[rows, cols])
    dt = float(model.setup.dt)

    def run(theta, h0, weights, imperviousness, p, e):
        ctx = StepContext(dt=dt, imperviousness=imperviousness, nn_parameters=weights)
        return jax.lax.scan(lambda h, x: module.step(theta, h, x[0], x[1], ctx), h0, (p, e))

    weights = {k: jnp.asarray(v) for k, v in weights.items()}
    h_end, fluxes = jax.jit(run)(theta, h0, weights, imperviousness, p, e)
    dx = model.mesh.dx[rows, cols].astype(F32)
    dy = model.mesh.dy[rows, cols].astype(F32)
    fluxes = {k: np.asarray(v) for k, v in fluxes.items()}
    fluxes["qt_m3s"] = fluxes["qt"] * F32(1e-3) * dx * dy / F32(dt)
    given = ~(np.isnan(p) | np.isnan(e))
    return {k: np.asarray(v) for k, v in h_end.items()}, fluxes, given


def differences(model, name, weights):
    ref_fluxes, ref_states = smash_run(model)
    states, fluxes, given = our_hybrid_run(model, name, weights)
    rows, cols = active_cells(model.mesh.active_cell)
    qt = ref_fluxes["qt"]
    out = {"qt": absdiff(fluxes["qt_m3s"], qt).max() / np.abs(qt).max()}
    for state, ref in ref_states.items():
        capacity = model.get_rr_parameters(_CAPACITY[state])[rows, cols] if state in _CAPACITY else 1.0
        # he (mm) is not bounded by a capacity: it can reach 1e4 mm, where float32 steps are 1e-3 mm
        ulps = 8 * np.spacing(np.abs(ref).max().astype(F32)) if state not in _CAPACITY else 0.0
        out[state] = max(0.0, (absdiff(states[state], ref) * capacity).max() - ulps)
    for flux, ref in ref_fluxes.items():
        if flux != "qt" and flux in fluxes:
            scale = max(1.0, np.abs(ref[given]).max())
            out[flux] = absdiff(fluxes[flux][given], ref[given]).max() / scale
    return out


def check(diffs, name):
    assert diffs["qt"] < QT_RTOL, (name, diffs)
    for state in get_module(name).states:
        assert diffs[state] < STATE_ATOL_MM, (name, state, diffs)
    assert all(v < 1e-3 for k, v in diffs.items() if k not in ("qt", *get_module(name).states)), (name, diffs)


@pytest.mark.parametrize("name", [n for n in HYBRID_MODULES if n != "gr4_ude"])
def test_flux_correction_matches_smash(cance, name):
    model = hybrid_model(cance, name, seed=3)
    weights = smash_weights(model)
    assert np.abs(weights["weight_1"]).max() > 0.1
    check(differences(model, name, weights), name)


def test_two_hidden_layers_and_missing_forcing_match_smash(cance):
    model = hybrid_model(cance, "gr4_mlp", seed=4, hidden=(8, 6), missing=True)
    weights = smash_weights(model)
    assert weights["weight_3"].shape == (4, 6)
    check(differences(model, "gr4_mlp", weights), "gr4_mlp")


@pytest.mark.parametrize("missing", [False, True])
def test_gr4_ude_matches_smash(cance, missing):
    """The UDE with frozen corrections and smash's inexact Newton matrix, on well-posed steps
    (kexc < 0.6 ct; see ``hybridhydro.structures._ode``)."""
    model = hybrid_model(cance, "gr4_ude", seed=5, missing=missing, scale=0.3, max_kexc_over_ct=0.6)
    weights = smash_weights(model)
    _, fluxes, _ = our_hybrid_run(model, "gr4_ude", weights)
    assert np.abs(fluxes["newton_iterations"]).max() >= 3
    check(differences(model, "gr4_ude", weights), "gr4_ude")


@pytest.mark.slow  # the fast suite checks the same on the synthetic basin (tests/test_hybrid.py)
@pytest.mark.parametrize("name", list(HYBRID_MODULES))
def test_zero_weights_give_the_parent_exactly(cance, name):
    """smash's default zero weights: f = 0, and every value equals the parent's bit for bit."""
    model = hybrid_model(cance, name, seed=6, scale=0.0, max_kexc_over_ct=0.6)
    model.set_nn_parameters_bias(initializer="zeros")
    weights = smash_weights(model)
    parent = HYBRID_MODULES[name].parent
    ours_h, ours_f, _ = our_hybrid_run(model, name, weights)
    rows, cols = active_cells(model.mesh.active_cell)
    module = get_module(parent)
    theta = {n: jnp.asarray(model.get_rr_parameters(n)[rows, cols]) for n in module.parameters}
    h0 = {n: jnp.asarray(model.get_rr_initial_states(n)[rows, cols]) for n in module.states}
    p = np.asarray(model.atmos_data.prcp[rows, cols, :].T, F32)
    e = np.asarray(model.atmos_data.pet[rows, cols, :].T, F32)

    def run(theta, h0, p, e):
        ctx = StepContext(dt=float(model.setup.dt))
        return jax.lax.scan(lambda h, x: module.step(theta, h, x[0], x[1], ctx), h0, (p, e))

    h_end, fluxes = jax.jit(run)(theta, h0, p, e)
    for k in module.states:
        np.testing.assert_array_equal(ours_h[k], np.asarray(h_end[k]), err_msg=k)
    for k in module.fluxes:
        np.testing.assert_array_equal(ours_f[k], np.asarray(fluxes[k]), err_msg=k)
