"""Our structures against hydro-smash 1.3.0 as an external oracle, on the bundled Cance case.

smash is only *called* here (public API), never read or imported by the library. Each test
builds a smash model with ``routing_module="zero"`` (so that the hydrology is isolated),
random spatially distributed parameters and initial states within the default bounds, runs
``smash.forward_run`` and our ``step`` scanned over time on the same forcing, and compares the
elementary discharge ``qt``, the internal fluxes and the final states.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridhydro.structures import (
    PARAMETER_BOUNDS,
    SNOW_MODULES,
    STATE_BOUNDS,
    StepContext,
    adjust_interception,
    get_module,
)

smash = pytest.importorskip("smash")
pytestmark = pytest.mark.smash

END_TIME = "2014-10-15 00:00"  # 720 hourly steps: enough for storms and recessions, and fast
F32 = np.float32
# Tolerances. We agree with smash to about 5e-7 of the peak flow: most values bit for bit, the
# rest differ by the last bits of tanh and pow, which XLA and gfortran compute differently.
QT_RTOL = 1e-5  # of the peak qt
STATE_ATOL_MM = 1e-3  # final storage (normalised level times capacity), mm
# Fluxes, in mm or relative to the largest value when above 1 mm. Percolation is
# hp·cp·(1 − (1 + (hp/β)⁴)^(−1/4)), which cancels: its round-off is about eps·cp ≈ 1e-4 mm.
FLUX_TOL = 2e-4
_CAPACITY = {"hi": "ci", "hp": "cp", "ht": "ct", "hl": "cl", "ha": "ca", "hc": "cc"}


@pytest.fixture(scope="module")
def cance():
    setup, mesh = smash.factory.load_dataset("Cance")
    return setup, mesh


def active_cells(active):
    """Rows and columns of the active cells in smash's order: column-major (spec 1)."""
    cols, rows = np.nonzero(np.asarray(active).T)
    return rows, cols


def smash_model(cance, module, seed, *, snow=False, missing=(), imperviousness=False):
    """A smash model with random parameters and initial states, and optionally missing forcing."""
    setup, mesh = cance
    setup = dict(setup, hydrological_module=module, routing_module="zero", end_time=END_TIME)
    if snow:
        setup["snow_module"] = "ssn"
    model = smash.Model(setup, mesh)
    rng = np.random.default_rng(seed)
    shape = (model.mesh.nrow, model.mesh.ncol)
    for name in model.rr_parameters.keys:
        if name != "ci":  # ci keeps smash's automatic value
            model.set_rr_parameters(name, rng.uniform(*PARAMETER_BOUNDS[name], shape).astype(F32))
    for name in model.rr_initial_states.keys:
        model.set_rr_initial_states(name, rng.uniform(*STATE_BOUNDS[name], shape).astype(F32))
    for var in missing:  # smash's marker for a missing value is -99
        values = getattr(model.atmos_data, var).copy()
        values[rng.random(values.shape) < 0.05] = -99.0
        setattr(model.atmos_data, var, values)
    if snow:
        size = model.atmos_data.snow.shape
        values = (rng.exponential(1.0, size) * (rng.random(size) < 0.3)).astype(F32)
        values[rng.random(size) < 0.02] = -99.0
        model.atmos_data.snow = values
        model.atmos_data.temp = rng.uniform(-5, 5, size).astype(F32)
    if imperviousness:
        model.physio_data.imperviousness = rng.uniform(0, 1, shape).astype(F32)
    return model


def smash_run(model):
    """smash's qt (m3/s), internal fluxes and final states, each gathered on the active cells."""
    rows, cols = active_cells(model.mesh.active_cell)
    out_model, run = smash.forward_run(model, return_options={"internal_fluxes": True, "rr_states": True})
    fluxes = {k: np.asarray(v)[rows, cols, :].T for k, v in run.internal_fluxes.items()}
    states = {k: out_model.get_rr_final_states(k)[rows, cols] for k in out_model.rr_final_states.keys}
    return fluxes, states


def our_run(model, module_name, snow=False):
    """Our structure scanned over the same period, with smash's forcing and parameters."""
    rows, cols = active_cells(model.mesh.active_cell)
    module = get_module(module_name)
    params = module.parameters + (("kmlt",) if snow else ())
    states = module.states + (("hs",) if snow else ())
    theta = {n: jnp.asarray(model.get_rr_parameters(n)[rows, cols]) for n in params}
    h0 = {n: jnp.asarray(model.get_rr_initial_states(n)[rows, cols]) for n in states}

    def forcing(name):
        values = np.asarray(getattr(model.atmos_data, name)[rows, cols, :].T, F32)
        return np.where(values < 0, np.nan, values) if name != "temp" else values

    p, e = forcing("prcp"), forcing("pet")
    s, t = (forcing("snow"), forcing("temp")) if snow else (p, p)
    imperviousness = jnp.asarray(model.physio_data.imperviousness[rows, cols])
    ctx = StepContext(dt=float(model.setup.dt), imperviousness=imperviousness)

    # theta goes in as an argument, not a closure constant: XLA may rewrite divisions by
    # constants, which moves the last bit away from smash's values.
    def run(theta, h0, ctx, p, e, s, t):
        def body(h, forcing):
            p, e, s, t = forcing
            fluxes = {}
            if snow:
                hs, p, fluxes = SNOW_MODULES["ssn"].step(theta, {"hs": h["hs"]}, p, s, t, ctx)
            h_new, f = module.step(theta, {k: h[k] for k in module.states}, p, e, ctx)
            # smash's fluxes only: our bookkeeping sources (tested in test_ode_trust.py) would be
            # extra outputs that change how XLA fuses the step, and so its last float32 bits
            f = {k: v for k, v in f.items() if k not in module.sources}
            return ({**h_new, **hs} if snow else h_new), {**fluxes, **f}

        return jax.lax.scan(body, h0, (p, e, s, t))

    h_end, fluxes = jax.jit(run)(theta, h0, ctx, p, e, s, t)
    dx = model.mesh.dx[rows, cols].astype(F32)
    dy = model.mesh.dy[rows, cols].astype(F32)
    fluxes = {k: np.asarray(v) for k, v in fluxes.items()}
    # mm per step -> m3/s, in float32 and in smash's order of operations
    fluxes["qt_m3s"] = fluxes["qt"] * F32(1e-3) * dx * dy / F32(model.setup.dt)
    given = ~(np.isnan(p) | np.isnan(e))
    return {k: np.asarray(v) for k, v in h_end.items()}, fluxes, given


def absdiff(ours, ref):
    """|ours − ref|, 0 where both are equal, infinities included (see the gr6 note below)."""
    with np.errstate(invalid="ignore"):  # inf − inf, masked by the equality
        return np.where(ours == ref, 0.0, np.abs(ours - ref))


def compare(model, module_name, snow=False, cells=None):
    """Max differences with smash: qt relative to its peak, final storages (mm), fluxes (mm).

    ``cells``: a function of our fluxes that selects the cells to compare (default all).
    """
    ref_fluxes, ref_states = smash_run(model)
    states, fluxes, given = our_run(model, module_name, snow)
    cells = np.ones(given.shape[1], bool) if cells is None else cells(fluxes)
    rows, cols = active_cells(model.mesh.active_cell)
    qt = ref_fluxes["qt"][:, cells]
    out = {"qt": absdiff(fluxes["qt_m3s"][:, cells], qt).max() / np.abs(qt[np.isfinite(qt)]).max()}
    for name, ref in ref_states.items():
        capacity = model.get_rr_parameters(_CAPACITY[name])[rows, cols] if name in _CAPACITY else 1.0
        out[name] = (absdiff(states[name], ref) * capacity)[cells].max()
    for name, ref in ref_fluxes.items():
        if name != "qt":  # smash leaves the fluxes of a cell with missing forcing unset
            ok = given[:, cells]
            ref = ref[:, cells][ok]
            scale = max(1.0, np.abs(ref[np.isfinite(ref)]).max())
            out[name] = absdiff(fluxes[name][:, cells][ok], ref).max() / scale
    return out


def check(diffs, module_name):
    assert diffs["qt"] < QT_RTOL, (module_name, diffs)
    for name in get_module(module_name).states:
        assert diffs[name] < STATE_ATOL_MM, (module_name, name, diffs)
    fluxes = [k for k in diffs if k in get_module(module_name).fluxes and k != "qt"]
    assert all(diffs[k] < FLUX_TOL for k in fluxes), (module_name, diffs)


@pytest.mark.slow  # the fast suite compares every cell's qt in tests/test_equivalence_smash.py
@pytest.mark.parametrize("module_name", ["gr4", "gr5", "gr6", "grc", "grd", "loieau"])
def test_structure_matches_smash(cance, module_name):
    model = smash_model(cance, module_name, seed=0)
    check(compare(model, module_name), module_name)


@pytest.mark.parametrize("module_name", ["gr4", "gr6", "grd", "loieau"])
def test_missing_forcing_and_imperviousness_match_smash(cance, module_name):
    """5 % of P and 5 % of E set to -99 (NaN for us), random imperviousness.

    Where P is missing and a transfer store is full to round-off, smash's steady outflow is
    infinite ((h·c)^-4 − c^-4 = 0); ours is too: same values, infinities included.
    """
    model = smash_model(cance, module_name, seed=1, missing=("prcp", "pet"), imperviousness=True)
    check(compare(model, module_name), module_name)


def _well_posed_kexc(model, ratio):
    """Cap kexc at ``ratio * ct`` on every cell (smash's parameters, in place)."""
    ct, kexc = model.get_rr_parameters("ct"), model.get_rr_parameters("kexc")
    model.set_rr_parameters("kexc", np.minimum(kexc, F32(ratio) * ct).astype(F32))


@pytest.mark.parametrize("seed,missing", [(0, ()), (1, ("prcp", "pet"))])
def test_gr4_ode_matches_smash_where_the_implicit_step_is_well_posed(cance, seed, missing):
    """Random parameters over the default bounds with kexc < 0.6 ct (below 9/14 ct, see
    ``hybridhydro.structures._ode``): every cell and step agrees with smash to round-off,
    the ~4 % of steps where Newton stops after 10 unconverged iterations included."""
    model = smash_model(cance, "gr4_ode", seed=seed, missing=missing, imperviousness=bool(missing))
    _well_posed_kexc(model, 0.6)
    _, fluxes, _ = our_run(model, "gr4_ode")
    assert (fluxes["newton_iterations"] == 10).mean() > 0.01  # the truncated steps are covered
    check(compare(model, "gr4_ode"), "gr4_ode")


def _solve_y_from_qt(qt_mm, x, pn, ct, kexc):
    """Transfer level y in [0, 1] with 0.25·ct·y⁵ + 0.1·pn·x² + kexc·y^3.5 = qt (float64
    bisection; the left side increases with y when kexc > 0)."""
    lo, hi = np.zeros_like(qt_mm), np.ones_like(qt_mm)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        above = 0.25 * ct * mid**5 + 0.1 * pn * x**2 + kexc * mid**3.5 > qt_mm
        lo, hi = np.where(above, lo, mid), np.where(above, mid, hi)
    return 0.5 * (lo + hi)


def test_gr4_ode_ill_posed_steps_are_unresolved_in_smash_too(cance):
    """Over the full default bounds, the cells with kexc ≥ 9/14 ct include steps whose implicit
    equation has no root in (0, 1) (the exchange gain kexc·y^3.5 outgrows the outflow): Newton
    wanders for its 10 iterations and the last iterate is decided by the last bits of powf.

    Everywhere we differ from smash, the step is of that kind: the cell has kexc ≥ 9/14 ct, our
    Newton residual is large, and the transfer level smash returned (recovered from its qt)
    leaves a residual as large: neither value solves the step, smash's is no reference there.
    """
    model = smash_model(cance, "gr4_ode", seed=0)
    ref_fluxes, _ = smash_run(model)
    states, fluxes, _ = our_run(model, "gr4_ode")
    rows, cols = active_cells(model.mesh.active_cell)
    ct = model.get_rr_parameters("ct")[rows, cols].astype(np.float64)
    kexc = model.get_rr_parameters("kexc")[rows, cols].astype(np.float64)
    qref = ref_fluxes["qt"]
    wrong = np.abs(fluxes["qt_m3s"] - qref) > QT_RTOL * np.abs(qref).max()
    cells = np.flatnonzero(wrong.any(axis=0))
    assert cells.size > 0, "the draw no longer reaches the ill-posed region; pick another seed"
    assert np.all(kexc[cells] >= 9.0 / 14.0 * ct[cells]), cells

    # The first differing step of each such cell starts from the same state on both sides.
    first = wrong[:, cells].argmax(axis=0)
    assert np.all(fluxes["newton_residual"][first, cells] > 1e-3)
    dx = model.mesh.dx[rows, cols].astype(np.float64)
    dy = model.mesh.dy[rows, cols].astype(np.float64)
    to_mm = float(model.setup.dt) / (1e-3 * dx[cells] * dy[cells])
    h0 = {n: model.get_rr_initial_states(n)[rows, cols] for n in ("hp", "ht")}
    _, series = _our_ode_states(model)
    y0 = np.where(first > 0, series["ht"][np.maximum(first - 1, 0), cells], h0["ht"][cells]).astype(np.float64)
    x = series["hp"][first, cells].astype(np.float64)
    pn = fluxes["pn"][first, cells].astype(np.float64)
    y_smash = _solve_y_from_qt(qref[first, cells] * to_mm, x, pn, ct[cells], kexc[cells])
    residual = y_smash - y0 - (0.9 * pn * x**2 - 0.25 * ct[cells] * y_smash**5 + kexc[cells] * y_smash**3.5) / ct[cells]
    assert np.all(np.abs(residual) > 1e-3), residual


def _our_ode_states(model):
    """Our gr4_ode state series on smash's forcing (for the ill-posed-step test)."""
    rows, cols = active_cells(model.mesh.active_cell)
    module = get_module("gr4_ode")
    theta = {n: jnp.asarray(model.get_rr_parameters(n)[rows, cols]) for n in module.parameters}
    h0 = {n: jnp.asarray(model.get_rr_initial_states(n)[rows, cols]) for n in module.states}
    p, e = (np.asarray(getattr(model.atmos_data, n)[rows, cols, :].T, F32) for n in ("prcp", "pet"))
    p, e = np.where(p < 0, np.nan, p), np.where(e < 0, np.nan, e)
    ctx = StepContext(dt=float(model.setup.dt), imperviousness=jnp.asarray(model.physio_data.imperviousness[rows, cols]))

    def run(theta, h0, ctx, p, e):
        def body(h, forcing):
            h_new, _ = module.step(theta, h, *forcing, ctx)
            return h_new, h_new

        return jax.lax.scan(body, h0, (p, e))

    h_end, series = jax.jit(run)(theta, h0, ctx, p, e)
    return h_end, {k: np.asarray(v) for k, v in series.items()}


def test_snow_module_matches_smash(cance):
    model = smash_model(cance, "gr4", seed=2, snow=True)
    diffs = compare(model, "gr4", snow=True)
    check(diffs, "gr4")
    assert diffs["hs"] < 1e-3 and diffs["mlt"] < 1e-5, diffs


def test_adjust_interception_matches_smash(cance):
    setup, mesh = cance
    model = smash.Model(dict(setup, routing_module="zero", end_time=END_TIME), mesh)
    rows, cols = active_cells(model.mesh.active_cell)
    p = model.atmos_data.prcp[rows, cols, :].T
    e = model.atmos_data.pet[rows, cols, :].T
    dt = float(model.setup.dt)
    start = np.datetime64(str(model.setup.start_time).replace(" ", "T"))
    times = start + np.arange(1, p.shape[0] + 1) * np.timedelta64(int(dt), "s")  # step ends
    ci = np.asarray(adjust_interception(np.where(p < 0, np.nan, p), np.where(e < 0, np.nan, e), times, dt))
    np.testing.assert_array_equal(ci, model.get_rr_parameters("ci")[rows, cols])
