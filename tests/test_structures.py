"""Fast tests of the hydrological structures: mass balance, missing forcing, Newton, gradients.

No smash here (see test_structures_smash.py for the oracle comparison).
"""

from __future__ import annotations

import contextlib

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridhydro.structures import (
    CI_CANDIDATES,
    FEASIBLE,
    HYDROLOGICAL_MODULES,
    PARAMETER_BOUNDS,
    PARAMETER_DEFAULTS,
    SNOW_MODULES,
    STATE_BOUNDS,
    STATE_DEFAULTS,
    WELL_POSED_KEXC_OVER_CT,
    HydrologicalModule,
    StepContext,
    adjust_interception,
    default_parameters,
    default_states,
    get_module,
    ill_posed_cells,
    newton_implicit_euler,
    parameter_default,
    parameter_defaults,
    partition_precipitation,
)
from hybridhydro.structures._operators import (
    exponential_store,
    interception,
    interception_without_store,
    percolation_constant,
    power_store,
    production,
)

N = 32  # cells per hypothesis example: fixed, so every jitted function compiles once
EPS32 = float(np.finfo(np.float32).eps)
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
CTX = StepContext(dt=3600.0)


def cells(lo, hi):
    """N float32 values in [lo, hi]."""
    lo, hi = float(np.float32(lo)), float(np.float32(hi))
    return hnp.arrays(np.float32, N, elements=st.floats(lo, hi, width=32).filter(lambda v: lo <= v <= hi))


@pytest.fixture(autouse=True)
def _no_silent_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


@contextlib.contextmanager
def float64():
    """Turn on float64 for one test and restore the previous setting after it."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


# --- registry and tables ---------------------------------------------------------------------


def test_registry_names_and_interface():
    assert set(HYDROLOGICAL_MODULES) == {"gr4", "gr5", "gr6", "grc", "grd", "loieau", "gr4_ode"}
    assert get_module("gr4").parameters == ("ci", "cp", "ct", "kexc")
    assert get_module("gr6").states == ("hi", "hp", "ht", "he")
    assert get_module("ssn") is SNOW_MODULES["ssn"]
    for name, module in HYDROLOGICAL_MODULES.items():
        assert isinstance(module, HydrologicalModule) and module.name == name
        assert module.fluxes[-1] == "qt"
        theta, h = default_parameters(module, N), default_states(module, N)
        h_new, fluxes = module.step(theta, h, jnp.ones(N), jnp.full(N, 0.1), CTX)
        assert set(h_new) == set(module.states)
        assert set(fluxes) == set(module.fluxes) | set(module.diagnostics) | set(module.sources)
        assert all(v.shape == (N,) for v in [*h_new.values(), *fluxes.values()])
        assert all(h_new[k].dtype == jnp.float32 for k in module.states)


def test_unknown_module_lists_valid_names():
    with pytest.raises(ValueError, match="gr4.*loieau"):
        get_module("gr7")


def test_defaults_lie_in_bounds_and_feasible_domain():
    for name, value in PARAMETER_DEFAULTS.items():
        lo, hi = FEASIBLE[name]
        assert lo < value < hi, name
        if name in PARAMETER_BOUNDS and name != "ci":  # ci's default 1e-6 is its lower bound
            assert PARAMETER_BOUNDS[name][0] <= value <= PARAMETER_BOUNDS[name][1], name
    for name, value in STATE_DEFAULTS.items():
        assert STATE_BOUNDS[name][0] <= value <= STATE_BOUNDS[name][1], name
    for module in HYDROLOGICAL_MODULES.values():
        assert all(n in PARAMETER_DEFAULTS and n in PARAMETER_BOUNDS for n in module.parameters)
        assert all(n in STATE_DEFAULTS and n in STATE_BOUNDS for n in module.states)


def test_llr_default_depends_on_dt():
    assert parameter_default("llr", 3600.0) == 5.0
    assert parameter_default("llr", 86400.0) == 120.0
    assert parameter_defaults(900.0)["llr"] == 1.25
    with pytest.raises(ValueError, match="unknown parameter"):
        parameter_default("nope")


# --- operators: each conserves mass -----------------------------------------------------------


def close(lhs, rhs, scale, factor=16.0):
    """Equal to float32 round-off of quantities of size ``scale`` (mm)."""
    np.testing.assert_array_less(np.abs(np.asarray(lhs) - np.asarray(rhs)), factor * EPS32 * np.asarray(scale) + 1e-30)


@SETTINGS
@given(p=cells(0, 50), e=cells(0, 1), ci=cells(0.1, 3), hi=cells(0, 1))
def test_interception_conserves_mass(p, e, ci, hi):
    ei, pn, en, hi_new = jax.jit(interception)(p, e, ci, hi)
    assert np.all(np.asarray(ei) >= 0) and np.all(np.asarray(pn) >= 0) and np.all(np.asarray(en) >= 0)
    slack = 16 * EPS32 * (p + ci) / ci  # (P − ei − pn)/ci cancels: round-off grows with P/ci
    assert np.all(np.asarray(hi_new) >= -slack) and np.all(np.asarray(hi_new) <= 1 + slack)
    close(p - ei - pn, ci * (hi_new - hi), p + ci)
    close(e - ei, en, e)
    ei0, pn0, en0 = interception_without_store(p, e)
    close(p - ei0 - pn0, 0.0, p)


@SETTINGS
@given(pn=cells(0, 50), en=cells(0, 1), cp=cells(1, 1000), hp=cells(1e-6, 1), ip=cells(0, 1))
def test_production_conserves_mass(pn, en, cp, hp, ip):
    beta = percolation_constant(3600.0)
    pr, perc, ps, es, hp_new, pn_scaled = jax.jit(production)(pn, en, cp, hp, beta, 0.0, 0.0, ip)
    assert np.all(np.asarray(perc) >= 0) and np.all(np.asarray(hp_new) >= 0) and np.all(np.asarray(hp_new) <= 1)
    close(pn_scaled - pr - es - perc, cp * (hp_new - hp), pn + cp)
    close(pn_scaled, (1 - ip) * pn, pn)


@SETTINGS
@given(inflow=cells(0, 50), c=cells(1, 1000), h=cells(1e-6, 1), exponent=st.sampled_from([4.0, 5.0]))
def test_power_store_conserves_mass(inflow, c, h, exponent):
    q, h_new, _, _ = jax.jit(power_store)(inflow, c, h, exponent, jnp.zeros(N, bool))
    # float32: the outflow is a difference of two nearly equal levels, so it may round to -1e-7 of c
    slack = 1e-6 * (np.asarray(inflow) + np.asarray(c))
    assert np.all(np.asarray(q) >= -slack) and np.all(np.asarray(h_new) <= 1)
    close(inflow - q, c * (h_new - h), inflow + c)


@SETTINGS
@given(inflow=cells(-20, 20), be=cells(1e-3, 20), he=cells(-1000, 100))
def test_exponential_store_conserves_mass(inflow, be, he):
    qe, he_new = jax.jit(exponential_store)(inflow, be, he)
    assert np.all(np.isfinite(np.asarray(qe))) and np.all(np.asarray(qe) >= 0)
    close(inflow - qe, he_new - he, np.abs(he) + np.abs(inflow) + be)


# --- structures: each conserves mass where it should ------------------------------------------

# Storage of each state in mm: normalised level times its capacity (he is in mm already).
_CAPACITY = {"hi": "ci", "hp": "cp", "ht": "ct", "hl": "cl", "ha": "ca", "hc": "cc"}
# How many branches the exchange l feeds (gr4: transfer + direct; gr6: + exponential).
_EXCHANGE_BRANCHES = {"gr4": 2, "gr5": 2, "gr6": 3, "grc": 2, "gr4_ode": 2}


def storage(module, theta, h):
    return sum(h[s] if s == "he" else theta[_CAPACITY[s]] * h[s] for s in module.states)


def storage_scale(module, theta, h):
    """Size (mm) of the stores: what float32 round-off of a storage is relative to."""
    return sum(theta[_CAPACITY[s]] if s != "he" else np.abs(h[s]) + theta["be"] for s in module.states)


def random_inputs(module, seed, *, kexc_sign=0.0):
    """Parameters, states and forcing over N cells, drawn within the default bounds."""
    rng = np.random.default_rng(seed)
    theta = {n: rng.uniform(*PARAMETER_BOUNDS[n], N).astype(np.float32) for n in module.parameters}
    for n in ("cp", "ct", "cl", "ca", "cc"):  # capacities of at least 1 mm
        if n in theta:
            theta[n] = rng.uniform(1.0, 1000.0, N).astype(np.float32)
    if "ci" in theta:
        theta["ci"] = rng.uniform(0.1, 3.0, N).astype(np.float32)
    if "kexc" in theta:
        theta["kexc"] = (kexc_sign * rng.uniform(0, 10, N)).astype(np.float32)
    if "kb" in theta:
        theta["kb"] = np.ones(N, np.float32)  # kb ≠ 1 scales discharge on purpose
    h = {n: rng.uniform(*STATE_BOUNDS[n], N).astype(np.float32) for n in module.states}
    p = (rng.exponential(3.0, N) * (rng.random(N) < 0.7)).astype(np.float32)
    e = rng.uniform(0, 0.6, N).astype(np.float32)
    return theta, h, p, e


def actual_evaporation(module, theta, h, p, e, fluxes):
    """Interception plus soil evaporation (mm per step)."""
    if "hi" in module.states:
        ei = interception(p, e, theta["ci"], h["hi"])[0]
    else:
        ei = fluxes["ei"]
    if module.name == "gr4_ode":
        return ei, None
    return ei, fluxes["es"]


@pytest.mark.parametrize("name", ["gr4", "gr5", "gr6", "grc", "grd", "loieau"])
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), ip=st.sampled_from([0.0, 0.3]))
def test_structure_conserves_mass_without_exchange(name, seed, ip):
    module = get_module(name)
    theta, h, p, e = random_inputs(module, seed)
    ctx = StepContext(dt=3600.0, imperviousness=jnp.full(N, ip, jnp.float32))
    h_new, fx = jax.jit(module.step)(theta, h, p, e, ctx)
    ei, es = actual_evaporation(module, theta, h, p, e, fx)
    # Impervious rain runs off the surface without reaching any store: it leaves through no
    # reported flux, so it is counted out here (ip·pn before scaling).
    pn_before = fx["pn"] / (1.0 - ip)
    lost_impervious = ip * pn_before
    change = storage(module, theta, h_new) - storage(module, theta, h)
    scale = p + e + storage_scale(module, theta, h)
    close(p - ei - es - fx["qt"] - lost_impervious, change, scale, factor=32)


@pytest.mark.parametrize("name", ["gr4", "gr5", "gr6", "grc"])
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_structure_exchange_is_the_only_source(name, seed):
    """With a gaining exchange (l ≥ 0) nothing is clipped: the balance closes with n·l."""
    module = get_module(name)
    theta, h, p, e = random_inputs(module, seed, kexc_sign=1.0)
    if "aexc" in theta:
        theta["aexc"] = np.minimum(theta["aexc"], h["ht"])  # l = kexc·(ht − aexc) ≥ 0
    h_new, fx = jax.jit(module.step)(theta, h, p, e, CTX)
    assert np.all(np.asarray(fx["lexc"]) >= 0)
    ei, es = actual_evaporation(module, theta, h, p, e, fx)
    gain = _EXCHANGE_BRANCHES[name] * fx["lexc"]
    change = storage(module, theta, h_new) - storage(module, theta, h)
    scale = p + e + gain + storage_scale(module, theta, h)
    close(p - ei - es - fx["qt"] + gain, change, scale, factor=32)


@pytest.mark.parametrize("name", ["gr4", "gr5", "gr6", "grc"])
def test_losing_exchange_removes_at_most_its_potential(name):
    module = get_module(name)
    theta, h, p, e = random_inputs(module, 7, kexc_sign=-1.0)
    if "aexc" in theta:
        theta["aexc"] = np.minimum(theta["aexc"], h["ht"])  # l = kexc·(ht − aexc) ≤ 0
    h_new, fx = jax.jit(module.step)(theta, h, p, e, CTX)
    ei, es = actual_evaporation(module, theta, h, p, e, fx)
    realised = storage(module, theta, h_new) - storage(module, theta, h) - (p - ei - es - fx["qt"])
    potential = _EXCHANGE_BRANCHES[name] * fx["lexc"]
    assert np.all(np.asarray(realised) <= 1e-3) and np.all(np.asarray(realised) >= np.asarray(potential) - 1e-3)


def test_gr4_ode_conserves_mass_at_convergence():
    module = get_module("gr4_ode")
    theta, h, p, e = random_inputs(module, 3, kexc_sign=1.0)
    theta["kexc"] = np.minimum(theta["kexc"], theta["ct"] / 8)  # a well-posed implicit step
    h_new, fx = jax.jit(module.step)(theta, h, p, e, CTX)
    assert np.all(np.asarray(fx["newton_iterations"]) < 10)
    assert np.all(np.asarray(fx["newton_residual"]) < 1e-5)
    ei = interception(p, e, theta["ci"], h["hi"])[0]
    x = h_new["hp"]
    es = x * (2 - x) * fx["en"]  # the ODE's evaporation at the new level (implicit Euler)
    change = storage(module, theta, h_new) - storage(module, theta, h)
    # Newton stops at a relative increment of 1e-6: the balance closes to that, times capacity.
    tol = 1e-5 * (theta["cp"] + theta["ct"]) + 1e-4
    np.testing.assert_array_less(np.abs(p - ei - es - fx["qt"] + 2 * fx["lexc"] - change), tol)


# --- missing forcing ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HYDROLOGICAL_MODULES))
@pytest.mark.parametrize("which", ["p", "e", "both", "negative"])
def test_missing_forcing_rules(name, which):
    module = get_module(name)
    theta, h, p, e = random_inputs(module, 11, kexc_sign=1.0)
    if which in ("p", "both"):
        p = np.full(N, np.nan, np.float32)
    if which in ("e", "both"):
        e = np.full(N, np.nan, np.float32)
    if which == "negative":
        p = np.full(N, -99.0, np.float32)  # smash's marker means missing too
    h_new, fx = jax.jit(module.step)(theta, h, p, e, CTX)
    for k in ("hi", "hp", "ha"):
        if k in module.states:
            np.testing.assert_array_equal(h_new[k], h[k])
    assert all(np.all(np.isfinite(np.asarray(v))) for v in [*h_new.values(), *fx.values()])
    rain_missing = which != "e"
    if name == "gr4_ode":
        np.testing.assert_array_equal(fx["qt"], 0.0)
        np.testing.assert_array_equal(h_new["ht"], h["ht"])
        np.testing.assert_array_equal(fx["newton_iterations"], 0)
        return
    store = "hc" if name == "loieau" else "ht"
    if rain_missing:  # steady-outflow branch: level kept (to round-off), water released
        np.testing.assert_allclose(h_new[store], h[store], rtol=1e-5, atol=1e-6)
        assert np.all(np.asarray(fx["qr"]) >= 0) and np.sum(fx["qr"]) > 0
    else:  # rain given, PET missing: the store drains with no inflow
        assert np.all(np.asarray(h_new[store]) <= h[store])
    for k in ("pr", "perc", "lexc", "prd"):
        if k in fx:
            np.testing.assert_array_equal(fx[k], 0.0)


@pytest.mark.parametrize("name", sorted(HYDROLOGICAL_MODULES))
def test_missing_forcing_leaks_no_nan_into_gradients(name):
    module = get_module(name)
    theta, h, p, e = random_inputs(module, 5)
    p[::3] = np.nan
    e[1::4] = np.nan

    def loss(theta, h):
        h_new, fx = module.step(theta, h, p, e, CTX)
        return jnp.sum(fx["qt"]) + sum(jnp.sum(v) for v in h_new.values())

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(theta, h)
    for leaf in jax.tree_util.tree_leaves(grads):
        assert np.all(np.isfinite(np.asarray(leaf)))


# --- no rain: the stores drain -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HYDROLOGICAL_MODULES))
def test_zero_rain_drains(name):
    module = get_module(name)
    theta, h, _, _ = random_inputs(module, 2)
    zero = jnp.zeros(N, jnp.float32)

    def run(theta, h):
        return jax.lax.scan(lambda h, _: module.step(theta, h, zero, zero, CTX), h, None, length=200)

    h_end, fx = jax.jit(run)(theta, h)
    assert np.all(np.asarray(fx["qt"]) >= 0)
    # Percolation may still fill the transfer store, but the total storage only goes down,
    # by exactly what flows out.
    before, after = storage(module, theta, h), storage(module, theta, h_end)
    assert np.all(np.asarray(after) <= np.asarray(before) + 1e-3)
    close(before - after, np.sum(fx["qt"], axis=0), storage_scale(module, theta, h), factor=1e3)
    for k in ("hi", "hp", "ha"):  # nothing feeds these without rain
        if k in module.states:
            assert np.all(np.asarray(h_end[k]) <= h[k] + 1e-6), k


# --- gr4_ode: Newton and gradients ------------------------------------------------------------


def test_newton_converges_and_counts_iterations():
    rng = np.random.default_rng(0)
    x0, y0 = rng.uniform(0.05, 0.95, (2, N)).astype(np.float32)
    pn = rng.exponential(3.0, N).astype(np.float32)
    en = rng.uniform(0, 0.5, N).astype(np.float32)
    cp, ct = rng.uniform(50, 1000, (2, N)).astype(np.float32)
    kexc = rng.uniform(-5, 5, N).astype(np.float32)
    x, y, iterations, residual = jax.jit(newton_implicit_euler)(x0, y0, pn, en, cp, ct, kexc)
    assert np.all((np.asarray(iterations) >= 1) & (np.asarray(iterations) < 10))
    assert np.all(np.asarray(residual) < 1e-5)
    assert np.all((np.asarray(x) > 0) & (np.asarray(x) < 1) & (np.asarray(y) > 0) & (np.asarray(y) < 1))
    # no rain, no evaporation, no exchange: the level stays put in one iteration
    x, y, iterations, _ = newton_implicit_euler(x0, y0, 0.0 * pn, 0.0 * en, cp, ct, 0.0 * kexc)
    np.testing.assert_array_equal(x, x0)


def test_newton_ill_posed_step_stops_after_ten_iterations():
    # kexc = 2.8 ct: the exchange feeds the store faster than it can drain, no root below 1
    x, y, iterations, residual = newton_implicit_euler(
        jnp.float32(0.3), jnp.float32(0.55), 0.0, 0.0, 171.0, 17.6, 49.2
    )
    assert int(iterations) == 10 and float(residual) > 1e-3
    assert bool(ill_posed_cells(17.6, 49.2))


def test_below_nine_fourteenths_every_step_has_one_root():
    """The well-posedness bound of the module docstring: for kexc < 9/14 ct the transfer
    equation G(y) = y + y⁵/4 − (kexc/ct)·y^3.5 increases on [0, 1]; just above it, it does not."""
    y = np.linspace(0.0, 1.0, 100_001)

    def slope(ratio):
        return 1.0 + 1.25 * y**4 - 3.5 * ratio * y**2.5

    assert slope(WELL_POSED_KEXC_OVER_CT * (1 - 1e-6)).min() > 0.0
    assert slope(WELL_POSED_KEXC_OVER_CT * 1.01).min() < 0.0
    ct = np.array([100.0, 100.0, 100.0])
    np.testing.assert_array_equal(ill_posed_cells(ct, np.array([-50.0, 64.0, 65.0])), [False, False, True])


def _ode_loss(cp, ct, kexc, hp0, ht0, p, e, ci):
    module = get_module("gr4_ode")
    theta = {"ci": ci, "cp": cp, "ct": ct, "kexc": kexc}
    h0 = {"hi": jnp.zeros_like(cp) + 0.1, "hp": hp0, "ht": ht0}
    h, fx = jax.lax.scan(lambda h, pe: module.step(theta, h, pe[0], pe[1], CTX), h0, (p, e))
    return jnp.sum(fx["qt"]) + jnp.sum(h["hp"] * cp) + jnp.sum(h["ht"] * ct)


def test_gr4_ode_gradients_match_finite_differences():
    x64_before = jax.config.jax_enable_x64
    with float64():
        rng = np.random.default_rng(4)
        n, steps = 6, 24
        cp = rng.uniform(100, 800, n)
        ct = rng.uniform(50, 500, n)
        kexc = rng.uniform(-3, 3, n)
        hp0 = rng.uniform(0.1, 0.9, n)
        ht0 = rng.uniform(0.1, 0.9, n)
        p = rng.exponential(2.0, (steps, n)) * (rng.random((steps, n)) < 0.5)
        p[5, 0] = np.nan  # a missing step: its masked branch must not poison the gradient
        e = rng.uniform(0, 0.3, (steps, n))
        ci = np.full(n, 1.0)
        args = [jnp.asarray(a, jnp.float64) for a in (cp, ct, kexc, hp0, ht0)]
        forcing = [jnp.asarray(a, jnp.float64) for a in (p, e, ci)]
        loss = jax.jit(lambda *a: _ode_loss(*a, *forcing))
        assert loss(*args).dtype == jnp.float64
        grads = jax.jit(jax.grad(loss, argnums=range(5)))(*args)
        for i, (arg, grad) in enumerate(zip(args, grads)):
            assert np.all(np.isfinite(np.asarray(grad)))
            for k in range(n):
                step = 1e-6 * max(1.0, abs(float(arg[k])))
                up = [a.at[k].add(step) if j == i else a for j, a in enumerate(args)]
                down = [a.at[k].add(-step) if j == i else a for j, a in enumerate(args)]
                fd = (float(loss(*up)) - float(loss(*down))) / (2 * step)
                np.testing.assert_allclose(float(grad[k]), fd, rtol=1e-4, atol=1e-6)
    assert jax.config.jax_enable_x64 == x64_before


# --- snow --------------------------------------------------------------------------------------


@SETTINGS
@given(hs=cells(0, 100), snow=cells(0, 20), temp=cells(-10, 10), kmlt=cells(1e-6, 10))
def test_snow_conserves_mass(hs, snow, temp, kmlt):
    ssn = SNOW_MODULES["ssn"]
    p = np.ones(N, np.float32)
    h_new, p_new, fx = ssn.step({"kmlt": kmlt}, {"hs": hs}, p, snow, temp, CTX)
    assert np.all(np.asarray(fx["mlt"]) >= 0) and np.all(np.asarray(h_new["hs"]) >= 0)
    close(hs + snow - fx["mlt"], h_new["hs"], hs + snow)
    close(p_new, p + fx["mlt"], p + fx["mlt"])


def test_snow_without_forcing_does_nothing():
    ssn = SNOW_MODULES["ssn"]
    hs = jnp.full(N, 5.0)
    h_new, p_new, fx = ssn.step({"kmlt": jnp.ones(N)}, {"hs": hs}, jnp.ones(N), None, None, CTX)
    np.testing.assert_array_equal(h_new["hs"], hs)
    np.testing.assert_array_equal(fx["mlt"], 0.0)
    snow = jnp.full(N, jnp.nan)  # missing snow forcing: no melt, pack kept
    h_new, _, fx = ssn.step({"kmlt": jnp.ones(N)}, {"hs": hs}, jnp.ones(N), snow, jnp.full(N, 5.0), CTX)
    np.testing.assert_array_equal(h_new["hs"], hs)
    np.testing.assert_array_equal(fx["mlt"], 0.0)


def test_partition_precipitation_conserves_total():
    prcp = jnp.array([1.0, 2.0, 3.0, 4.0])
    snow = jnp.array([0.0, 1.0, -99.0, 0.5])
    temp = jnp.array([-5.0, 0.4, 10.0, jnp.nan])
    rain, snow_out = partition_precipitation(prcp, snow, temp)
    np.testing.assert_allclose(rain + snow_out, [1.0, 3.0, 3.0, 4.5], rtol=1e-6)
    assert float(rain[0]) < 0.01 and float(snow_out[3]) == 0.0  # cold: snow; no temperature: rain


# --- automatic interception capacity -----------------------------------------------------------


def _adjust_reference(p, e, times):
    """A plain loop version of spec 4.1.1, to check the vectorised one."""
    days = np.asarray(times, dtype="datetime64[ns]").astype("datetime64[D]")
    out = []
    for k in range(p.shape[1]):
        target = 0.0
        for d in np.unique(days):
            sel = days == d
            target += min(p[sel, k].sum(), e[sel, k].sum())
        errors = []
        for ci in CI_CANDIDATES:
            hi, total = np.float32(0), np.float32(0)
            for t in range(p.shape[0]):
                ei, _, _, hi = (np.asarray(a) for a in interception(p[t, k], e[t, k], ci, hi))
                total = total + ei
            errors.append(abs(total - target))
        out.append(CI_CANDIDATES[int(np.argmin(errors))])
    return np.array(out, np.float32)


def test_adjust_interception_matches_loop_and_groups_by_step_end():
    rng = np.random.default_rng(1)
    steps, n = 72, 3
    p = (rng.exponential(1.0, (steps, n)) * (rng.random((steps, n)) < 0.3)).astype(np.float32)
    e = np.tile(np.clip(np.sin(np.arange(steps) / 24 * 2 * np.pi), 0, None)[:, None] * 0.3, (1, n)).astype(np.float32)
    times = np.datetime64("2020-01-01T00") + np.arange(1, steps + 1) * np.timedelta64(1, "h")
    ci = np.asarray(adjust_interception(p, e, times, 3600.0))
    assert ci.shape == (n,) and ci.dtype == np.float32 and set(ci) <= set(CI_CANDIDATES)
    np.testing.assert_allclose(ci, _adjust_reference(p, e, times), rtol=0, atol=1e-6)
    # daily steps keep smash's 1e-6
    np.testing.assert_array_equal(adjust_interception(p, e, times, 86400.0), np.float32(1e-6))
    with pytest.raises(ValueError, match="timestamps"):
        adjust_interception(p, e, times[:-1], 3600.0)
