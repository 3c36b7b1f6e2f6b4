"""Whole-model equivalence with hydro-smash 1.3.0 ``forward_run`` on the full Cance period.

smash is only *called* here (public API), as an external oracle. For every structure (the seven
hydrological modules times the four routing modules, plus ``ssn`` snow variants) a smash model
is built on Cance (2014-09-15 to 2014-11-14, 1440 hourly steps, 383 active cells, 3 gauges)
and run with

* spatially distributed random parameters and initial states, drawn uniformly over the default
  bounds (``PARAMETER_BOUNDS``, ``STATE_BOUNDS``), the lr routing store ``hlr`` included;
* the default parameters and initial states, with smash's automatic interception capacity
  ``ci`` (our :func:`~hybridhydro.simulate.simulate` fits its own and must find the same).

Our :func:`~hybridhydro.simulate.simulate` runs the same structure on a basin read by
:func:`~hybridhydro.io.read_smash_dataset` whose forcing is replaced by smash's own
(``-99`` -> NaN), so that only the model is compared. Criteria: the discharge at every gauge
within ``1e-4`` of the peak flow, and every final state within ``1e-3`` mm (normalised level
times its capacity) or ``1e-5`` relative.

Speed: the smash models are built without reading rasters (the forcing of one reference model
is assigned to each), and our ``simulate_arrays`` compiles once per structure (the default
and random cases share the compiled function).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from hybridhydro.simulate import simulate
from hybridhydro.structure_name import parse_structure
from hybridhydro.structures import PARAMETER_BOUNDS, STATE_BOUNDS

smash = pytest.importorskip("smash")
pytestmark = pytest.mark.smash

F32 = np.float32
HYDROLOGY = ("gr4", "gr5", "gr6", "grc", "grd", "loieau", "gr4_ode")
ROUTING = ("zero", "lag0", "lr", "kw")
STRUCTURES = [f"{h}-{r}" for h in HYDROLOGY for r in ROUTING] + [
    "ssn-gr4-lr",
    "ssn-gr6-kw",
    "ssn-grd-lag0",
    "ssn-loieau-zero",
]
Q_TOL = 1e-4  # of the peak gauge discharge
STATE_ATOL_MM = 1e-3  # final storage: normalised level times its capacity, mm
STATE_RTOL = 1e-5
# Capacity (parameter) of each normalised state; the others (he, hs, hlr) are in mm already.
_CAPACITY = {"hi": "ci", "hp": "cp", "ht": "ct", "hl": "cl", "ha": "ca", "hc": "cc"}


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def cance():
    """smash's Cance setup and mesh, and one smash model read with its forcing (full period).

    The reference model gives the forcing (``atmos_data``) and smash's automatic ``ci`` to
    the per-structure models, which are built without reading any raster.
    """
    setup, mesh = smash.factory.load_dataset("Cance")
    setup = dict(setup, read_qobs=False, read_descriptor=False)
    reference = smash.Model(dict(setup, hydrological_module="gr4", routing_module="zero"), mesh)
    return setup, mesh, reference


@pytest.fixture(scope="module")
def basin(cance):
    """Our basin over the same period, with smash's prcp and pet (-99 -> NaN)."""
    from hybridhydro.io import read_smash_dataset

    setup, mesh, reference = cance
    basin = read_smash_dataset("Cance", setup["start_time"], setup["end_time"], progress=False)
    assert basin.sizes["time"] == reference.atmos_data.prcp.shape[2] == 1440
    for name in ("flwdir", "active_cell", "flwacc", "flwpar"):
        np.testing.assert_array_equal(basin[name].values, mesh[name], err_msg=name)
    for name in ("prcp", "pet"):
        basin[name] = (("time", "y", "x"), _from_smash(getattr(reference.atmos_data, name)), {"units": "mm"})
    return basin


def _from_smash(values, missing=True):
    """smash's (y, x, time) array as our (time, y, x) float32, -99 -> NaN."""
    values = np.asarray(values, F32)
    if missing:
        values = np.where(values < 0, np.nan, values)
    return values.transpose(2, 0, 1)


def _seed(*names: str) -> int:
    return zlib.crc32("/".join(names).encode())


def smash_model(cance, structure: str):
    """A smash model of ``structure`` on Cance with the reference model's forcing and ``ci``.

    With ``ssn``, random snow (mm per step) and temperature (degC) forcing as well.
    """
    setup, mesh, reference = cance
    s = parse_structure(structure)
    model = smash.Model(
        dict(
            setup,
            snow_module=s.snow,
            hydrological_module=s.hydrology,
            routing_module=s.routing,
            read_prcp=False,
            read_pet=False,
        ),
        mesh,
    )
    model.atmos_data.prcp = reference.atmos_data.prcp
    model.atmos_data.pet = reference.atmos_data.pet
    if "ci" in model.rr_parameters.keys:  # smash's automatic value, computed from the forcing
        model.set_rr_parameters("ci", reference.get_rr_parameters("ci"))
    if s.snow == "ssn":
        rng = np.random.default_rng(_seed(structure, "snow"))
        size = model.atmos_data.snow.shape
        model.atmos_data.snow = (rng.exponential(1.0, size) * (rng.random(size) < 0.3)).astype(F32)
        model.atmos_data.temp = rng.uniform(-5, 5, size).astype(F32)
    return model


def random_fields(structure: str, shape, seed: int, kexc_over_ct=None):
    """Uniform random parameter and initial-state grids over the default bounds (float32).

    ``kexc_over_ct``: cap ``kexc`` at this fraction of ``ct`` cell by cell (gr4_ode).
    """
    s = parse_structure(structure)
    rng = np.random.default_rng(seed)
    params = {n: rng.uniform(*PARAMETER_BOUNDS[n], shape).astype(F32) for n in s.parameters}
    states = {n: rng.uniform(*STATE_BOUNDS[n], shape).astype(F32) for n in s.states}
    if kexc_over_ct is not None:
        lo, hi = PARAMETER_BOUNDS["kexc"]
        params["kexc"] = rng.uniform(lo, np.minimum(hi, kexc_over_ct * params["ct"]), shape).astype(F32)
    return params, states


def run_both(cance, basin, structure, params=None, states=None):
    """smash's and our run of ``structure``; ``params``/``states`` None: the defaults.

    Returns the smash model after its forward run, smash's internal fluxes and our result.
    """
    model = smash_model(cance, structure)
    for name, grid in (params or {}).items():
        model.set_rr_parameters(name, grid)
    for name, grid in (states or {}).items():
        model.set_rr_initial_states(name, grid)
    run = model.forward_run(return_options={"internal_fluxes": True}, common_options={"verbose": False})

    ours = basin
    if parse_structure(structure).snow == "ssn":
        ours = basin.copy()
        ours["snow"] = (("time", "y", "x"), _from_smash(model.atmos_data.snow), {"units": "mm"})
        ours["temp"] = (("time", "y", "x"), _from_smash(model.atmos_data.temp, missing=False), {"units": "degC"})
    out = simulate(ours, structure, params, states, return_fluxes=True)
    return model, run.internal_fluxes, out


def discharge_error(model, out) -> tuple[float, float]:
    """Max |ours − smash| of the gauge discharge over every gauge and step, and the peak flow."""
    q_smash = np.asarray(model.response.q, np.float64)
    peak = float(q_smash.max())
    return float(np.abs(out["q"].values - q_smash).max()), peak


def state_errors(model, out) -> dict[str, tuple[float, float]]:
    """Per final state, on the active cells: |ours − smash| and |smash|, both in mm (normalised
    levels times their capacity)."""
    active = model.mesh.active_cell == 1
    errors = {}
    for name in model.rr_final_states.keys:
        theirs = model.get_rr_final_states(name).astype(np.float64)[active]
        ours = out[f"{name}_final"].values.astype(np.float64)[active]
        capacity = model.get_rr_parameters(_CAPACITY[name])[active] if name in _CAPACITY else 1.0
        diff = np.abs(ours - theirs) * capacity
        errors[name] = (diff, np.abs(theirs) * capacity)
    return errors


def runoff_error(model, fluxes, out) -> tuple[float, float]:
    """Max |ours − smash| of the elementary discharge qt (m3/s) over every active cell and
    step, and its peak: with routing ``zero`` the gauges see three cells only, this sees all."""
    active = model.mesh.active_cell == 1
    theirs = np.asarray(fluxes["qt"], np.float64).transpose(2, 0, 1)[:, active]
    ours = out["qt"].values.astype(np.float64)[:, active]
    with np.errstate(invalid="ignore"):  # inf − inf and NaN − NaN, masked: equal there
        same = (ours == theirs) | (np.isnan(ours) & np.isnan(theirs))
        diff = np.where(same, 0.0, np.abs(ours - theirs))  # NaN on one side only: fails
    return float(diff.max()), float(np.nanmax(np.abs(theirs)))


def check(model, fluxes, out, structure, state_atol_mm=STATE_ATOL_MM):
    """Assert the gauge discharge, the runoff of every cell and every final state agree with
    smash (module tolerances; ``state_atol_mm`` for the final stores)."""
    err, peak = discharge_error(model, out)
    assert peak > 0.0, (structure, peak)  # routing zero: a gauge sees its own cell only
    assert err <= Q_TOL * peak, f"{structure}: max |dq| = {err:.3g} m3/s = {err / peak:.3g} of the peak {peak:.4g}"
    err, peak = runoff_error(model, fluxes, out)
    assert err <= Q_TOL * peak, f"{structure}: max |dqt| = {err:.3g} m3/s = {err / peak:.3g} of the peak {peak:.4g}"
    names = set(model.rr_final_states.keys)
    assert names == set(parse_structure(structure).states), (names, structure)
    for name, (diff, scale) in state_errors(model, out).items():
        bad = ~(diff <= np.maximum(state_atol_mm, STATE_RTOL * scale))
        assert not bad.any(), (
            f"{structure}: final {name} differs on {bad.sum()} of {bad.size} cells, "
            f"max {diff.max():.3g} mm (relative {np.max(diff / np.maximum(scale, 1e-30)):.3g})"
        )


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("structure", STRUCTURES)
def test_random_distributed_parameters_match_smash(cance, basin, structure):
    """Random parameters and initial states over the full default bounds, one value per cell.

    Checks gauge discharge (1e-4 of the peak) and every final state on the active cells against
    smash's forward_run, over the full 1440-step Cance period.

    gr4_ode: kexc is drawn below 0.6 ct, where every implicit step is well posed (kexc < 9/14
    ct, see ``hybridhydro.structures._ode``); above, some steps have no solution and neither
    smash's Newton iterate nor ours means anything (tests/test_structures_smash.py shows it).
    """
    shape = cance[1]["flwdir"].shape
    cap = 0.6 if parse_structure(structure).hydrology == "gr4_ode" else None
    params, states = random_fields(structure, shape, _seed(structure), kexc_over_ct=cap)
    model, fluxes, out = run_both(cance, basin, structure, params, states)
    check(model, fluxes, out, structure)


# Defaults: every structure with lr and the ssn cases in the fast suite, the other routings in test-slow
# (their routing is checked with random parameters above).
DEFAULT_CASES = [
    s if s.endswith("-lr") or s.startswith("ssn-") else pytest.param(s, marks=pytest.mark.slow) for s in STRUCTURES
]


@pytest.mark.parametrize("structure", DEFAULT_CASES)
def test_default_parameters_match_smash(cance, basin, structure):
    """No parameters or initial states given: both sides take smash's defaults, and ``ci``
    (where the structure has it) is fitted to the forcing; ours must pick smash's value, which
    is checked here directly too."""
    model, fluxes, out = run_both(cance, basin, structure)
    if "ci" in parse_structure(structure).parameters:
        active = model.mesh.active_cell == 1
        np.testing.assert_array_equal(out["ci"].values[active], model.get_rr_parameters("ci")[active])
    check(model, fluxes, out, structure)


# ------------------------------------------------------------------------------ hybrid structures


@pytest.mark.parametrize("structure", ["gr4_mlp-lr", "gr4_ude-lr", "gr6_mlp-kw", "gr4_mlp-lag0"])
def test_hybrid_structures_match_smash_with_random_weights(cance, basin, structure):
    """Random parameters, initial states and network weights, loaded in smash with
    ``set_nn_parameters_weight``/``bias`` and given to ``simulate`` as smash's pair of lists:
    gauge discharge, every cell's runoff and the final states agree over the full period.

    gr4_ude keeps kexc below 0.6 ct (well-posed implicit steps, as for gr4_ode)."""
    s = parse_structure(structure)
    shape = cance[1]["flwdir"].shape
    cap = 0.6 if s.hydrology == "gr4_ude" else None
    params, states = random_fields(structure, shape, _seed(structure), kexc_over_ct=cap)
    model = smash_model(cance, structure)
    for name, grid in params.items():
        model.set_rr_parameters(name, grid)
    for name, grid in states.items():
        model.set_rr_initial_states(name, grid)
    rng = np.random.default_rng(_seed(structure, "weights"))
    scale = 0.3 if s.hydrology == "gr4_ude" else 1.0  # the UDE's corrections enter the Newton matrix
    weights = [
        (scale * rng.uniform(-1, 1, w.shape) * np.sqrt(6.0 / sum(w.shape))).astype(F32)
        for w in model.get_nn_parameters_weight()
    ]
    biases = [rng.uniform(-0.2, 0.2, b.shape).astype(F32) for b in model.get_nn_parameters_bias()]
    model.set_nn_parameters_weight(weights)
    model.set_nn_parameters_bias(biases)
    run = model.forward_run(return_options={"internal_fluxes": True}, common_options={"verbose": False})
    out = simulate(basin, structure, params, states, return_fluxes=True, nn_parameters=(weights, biases))
    # The network's tanh and SiLU differ from gfortran's by float32 ulps, every step: over 1440
    # steps a slowly draining store drifts by up to ~2e-3 mm (discharge stays within 1e-7).
    check(model, run.internal_fluxes, out, structure, state_atol_mm=1e-2)
    # the run carries the weights it used, in smash's layout
    from hybridhydro import network_weights

    for k, (w, b) in enumerate(zip(weights, biases), start=1):
        np.testing.assert_array_equal(network_weights(out)[f"weight_{k}"], w)
        np.testing.assert_array_equal(network_weights(out)[f"bias_{k}"], b)
