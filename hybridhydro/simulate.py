"""Forward run: basin Dataset + structure + parameters -> discharge at the gauges (smash's
``forward_run``, spec section 3).

Two levels:

* :func:`simulate` is the xarray edge: it parses the structure name, turns parameter and
  initial-state maps (scalars or (y, x) grids) into validated per-cell arrays, runs the core
  and labels the result.
* :func:`simulate_arrays` is the jit-compiled pure core over plain arrays: the hydrology as a
  ``lax.scan`` over time, vectorised over the active cells, then the routing of the whole
  runoff series (:mod:`hybridhydro.routing`). It is what gradient code differentiates.

Long runs: with ``checkpoint_every=n`` the time scans run in chunks of ``n`` steps wrapped in
``jax.checkpoint``, so reverse-mode differentiation stores one carry per chunk and recomputes
inside a chunk (smash splits its adjoint loop into ``⌊√T⌋`` segments for the same reason);
``n ≈ √T`` balances memory and recomputation. The forward result does not change.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from . import structures
from .mesh import Mesh
from .routing import (
    ROUTING_FLUXES,
    ROUTING_PARAMETERS,
    ROUTING_STATES,
    RoutingPlan,
    checkpointed_scan,
    device_plan,
    initial_routing_state,
    route_series,
    routing_fluxes,
    routing_plan,
)

SNOW_MODULES = ("zero", "ssn")
ROUTING_MODULES = tuple(ROUTING_PARAMETERS)


@dataclass(frozen=True)
class Structure:
    """A parsed model structure: snow, hydrological and routing module names (smash's)."""

    snow: str
    hydrology: str
    routing: str

    @property
    def name(self) -> str:
        """The full smash structure string, ``"<snow>-<hydrology>-<routing>"``."""
        return f"{self.snow}-{self.hydrology}-{self.routing}"

    @property
    def parameters(self) -> tuple[str, ...]:
        """Parameter names: snow, then hydrology, then routing (smash's order)."""
        snow = _snow_module(self.snow).parameters if self.snow != "zero" else ()
        return snow + structures.get_module(self.hydrology).parameters + ROUTING_PARAMETERS[self.routing]

    @property
    def states(self) -> tuple[str, ...]:
        """Initial-state names: snow, then hydrology, then routing (smash's order)."""
        snow = _snow_module(self.snow).states if self.snow != "zero" else ()
        return snow + structures.get_module(self.hydrology).states + ROUTING_STATES[self.routing]

    @property
    def fluxes(self) -> tuple[str, ...]:
        """Internal flux names, as ``return_fluxes`` gives them: snow, hydrology, routing."""
        snow = _snow_module(self.snow).fluxes if self.snow != "zero" else ()
        return snow + structures.get_module(self.hydrology).fluxes + ROUTING_FLUXES[self.routing]


def _hydrological_modules() -> tuple[str, ...]:
    return tuple(structures.HYDROLOGICAL_MODULES) + tuple(structures.HYBRID_MODULES)


def _snow_module(name: str):
    return structures.SNOW_MODULES[name]


def parse_structure(structure: str) -> Structure:
    """Parse ``"<hydrology>-<routing>"`` or ``"<snow>-<hydrology>-<routing>"`` (e.g. ``"gr4-lr"``).

    Raises
    ------
    ValueError
        Wrong number of parts or an unknown module; the message lists the valid names.
    """
    hydro_names = _hydrological_modules()
    valid = (
        f"snow: {', '.join(SNOW_MODULES)}; hydrology: {', '.join(hydro_names)}; routing: {', '.join(ROUTING_MODULES)}"
    )
    parts = str(structure).strip().split("-")
    if len(parts) == 2:
        parts = ["zero", *parts]
    if len(parts) != 3:
        raise ValueError(
            f"structure {structure!r} must read '<hydrology>-<routing>' or '<snow>-<hydrology>-<routing>' "
            f"(e.g. 'gr4-lr', 'ssn-gr4-kw'); valid parts are {valid}"
        )
    snow, hydro, routing = parts
    checks = (("snow", snow, SNOW_MODULES), ("hydrology", hydro, hydro_names), ("routing", routing, ROUTING_MODULES))
    for what, value, names in checks:
        if value not in names:
            raise ValueError(
                f"structure {structure!r}: unknown {what} module {value!r}; valid parts are {valid}"
            )
    return Structure(snow, hydro, routing)


# ---------------------------------------------------------------------------------------------
# The pure core
# ---------------------------------------------------------------------------------------------


def _split(structure: Structure, values: Mapping, what: str) -> tuple[dict, dict, dict]:
    """Split a flat name -> array map into its snow, hydrology and routing parts.

    Raises a ``ValueError`` when the names are not exactly the structure's ``what``.
    """
    names = structure.parameters if what == "parameters" else structure.states
    if set(values) != set(names):
        raise ValueError(
            f"simulate_arrays: structure {structure.name!r} needs the {what} {', '.join(names) or '(none)'}; "
            f"missing: {sorted(set(names) - set(values))}, unknown: {sorted(set(values) - set(names))}"
        )
    snow_mod = _snow_module(structure.snow) if structure.snow != "zero" else None
    snow_names = snow_mod.parameters + snow_mod.states if snow_mod else ()
    routing_names = ROUTING_PARAMETERS[structure.routing] + ROUTING_STATES[structure.routing]
    snow = {k: v for k, v in values.items() if k in snow_names}
    routing = {k: v for k, v in values.items() if k in routing_names}
    hydro = {k: v for k, v in values.items() if k not in snow and k not in routing}
    return snow, hydro, routing


@partial(
    jax.jit,
    static_argnames=(
        "structure",
        "dt",
        "checkpoint_every",
        "return_states",
        "return_fluxes",
        "remat_steps",
        "ode_solver",
        "ode_substeps",
    ),
)
def simulate_arrays(
    params: Mapping[str, jax.Array],
    states: Mapping[str, jax.Array],
    forcing: Mapping[str, jax.Array],
    plan: RoutingPlan,
    *,
    structure: str,
    dt: float,
    imperviousness=0.0,
    checkpoint_every: int | None = None,
    return_states: bool = False,
    return_fluxes: bool = False,
    remat_steps: bool = True,
    nn_parameters: Mapping[str, jax.Array] | None = None,
    ode_solver: str = "newton",
    ode_substeps: int = 4,
) -> dict:
    """Run a structure over plain arrays (jit-compiled, differentiable).

    Parameters
    ----------
    params
        Every parameter of the structure (smash names, e.g. ``cp`` in mm, ``llr`` in min),
        each a float32 array ``(nac,)`` over the active cells in the plan's order.
    states
        Every initial state of the structure (normalised levels; ``hlr``, ``hs`` in mm), ``(nac,)``.
    forcing
        ``prcp`` and ``pet`` (mm per step), ``(time, nac)``, NaN where missing; with ``ssn``
        optionally ``snow`` (mm per step) and ``temp`` (°C).
    plan
        The mesh's :class:`~hybridhydro.routing.RoutingPlan`.
    structure
        Structure name as :func:`parse_structure` reads it (static).
    dt
        Time step (s, static).
    imperviousness
        Impervious fraction per cell ``(nac,)`` or a scalar, in [0, 1].
    checkpoint_every
        Chunk length (steps) of the checkpointed time scans; ``None``: no checkpointing.
    return_states, return_fluxes
        Also return the state and internal-flux series (memory grows with ``time * nac``).
    nn_parameters
        Hybrid structures: the weights of the flux-correction network, smash's layout
        (``weight_1`` (h1, n_in), ``bias_1`` (h1,), ...; :mod:`hybridhydro.structures._mlp`),
        one network shared by every cell. Differentiable like ``params``.
    ode_solver, ode_substeps
        gr4_ode/gr4_ude step scheme (static): ``"newton"`` (smash's), ``"implicit"`` (fully
        implicit, implicit-function-theorem gradients), ``"heun"``, ``"rk4"`` (explicit, with
        ``ode_substeps`` sub-steps); see :mod:`hybridhydro.structures._ode`.
    remat_steps
        Rematerialise each hydrology step under reverse-mode differentiation (static;
        ``jax.checkpoint`` on the step): the backward pass recomputes a step's intermediates
        from its carry instead of storing them all, which is faster on CPU (Cance gradient
        ~1.4x) and needs less memory. Forward results do not change; gradients agree to float32
        rounding (XLA fuses the recomputation differently).

    Returns
    -------
    dict
        ``q`` (time, ng) gauge discharge (m3/s); ``discharge`` (time, nac) routed discharge of
        every cell (m3/s); ``final_states`` name -> (nac,); with ``return_states`` ``states``
        name -> (time, nac) (value at the end of each step); with ``return_fluxes`` ``fluxes``
        name -> (time, nac) in mm per step, except ``qt`` in m3/s as smash reports it, and
        the routing module's fluxes (:data:`~hybridhydro.routing.ROUTING_FLUXES`), and the
        structure's solver diagnostics (gr4_ode: ``newton_iterations``, ``newton_residual``).
    """
    s = parse_structure(structure)
    hydro = structures.get_module(s.hydrology)
    snow_params, hydro_params, routing_params = _split(s, params, "parameters")
    snow_states, hydro_states, routing_states = _split(s, states, "initial states")
    if getattr(hydro, "hybrid", False) and nn_parameters is None:
        raise ValueError(
            f"{s.hydrology} is a hybrid structure: give nn_parameters (the weights of its network; "
            "hybridhydro.networks.FluxCorrectionNet.for_structure(...).weights() gives zero weights)"
        )
    ctx = structures.StepContext(
        dt=dt,
        imperviousness=imperviousness,
        nn_parameters=dict(nn_parameters) if nn_parameters is not None else None,
        ode_solver=ode_solver,
        ode_substeps=ode_substeps,
    )
    cell_area = jnp.asarray(plan.cell_area)
    snow_mod = _snow_module(s.snow) if s.snow != "zero" else None
    # Missing snow forcing means nothing melts: the module takes None for both.
    snow_forcing = (forcing.get("snow"), forcing.get("temp"))
    with_snow_forcing = snow_forcing[0] is not None and snow_forcing[1] is not None

    def step(carry, x):
        h_snow, h = carry
        p, e = x["prcp"], x["pet"]
        out_fluxes = {}
        if snow_mod is not None:
            sn, tp = (x["snow"], x["temp"]) if with_snow_forcing else (None, None)
            h_snow, p, snow_fluxes = snow_mod.step(snow_params, h_snow, p, sn, tp, ctx)
            out_fluxes.update(snow_fluxes)
        h, fluxes = hydro.step(hydro_params, h, p, e, ctx)
        # smash reports qt in m3/s (spec 1): the only flux converted inside the core.
        qt = fluxes["qt"] * 1e-3 * cell_area / dt
        out = {"qt": qt}
        if return_fluxes:
            # Solver diagnostics (gr4_ode's Newton iterations) travel with the fluxes.
            kept = hydro.fluxes + hydro.sources + hydro.diagnostics
            out["fluxes"] = {**out_fluxes, **{k: fluxes[k] for k in kept}, "qt": qt}
        if return_states:
            out["states"] = {**h_snow, **h}
        return (h_snow, h), out

    if remat_steps:
        # Reverse mode keeps only each step's carry and forcing and recomputes the step's
        # ~40 intermediates during the backward pass: on CPU, re-running one step costs less
        # than writing and reading back (time, nac) stacks of all of them. The forward pass is
        # unchanged.
        step = jax.checkpoint(step, prevent_cse=False)
    xs = {"prcp": forcing["prcp"], "pet": forcing["pet"]}
    if snow_mod is not None and with_snow_forcing:
        xs["snow"], xs["temp"] = snow_forcing
    (h_snow, h), out = checkpointed_scan(step, (dict(snow_states), dict(hydro_states)), xs, checkpoint_every)

    r_state = initial_routing_state(s.routing, plan.nac, hlr=routing_states.get("hlr"), dtype=out["qt"].dtype)
    routed = route_series(
        s.routing,
        plan,
        routing_params,
        out["qt"],
        r_state,
        dt,
        checkpoint_every=checkpoint_every,
        return_state_series=return_states,
    )
    discharge, r_state, r_series = routed if return_states else (*routed, {})
    result = {
        "q": discharge[:, jnp.asarray(plan.gauge_index)],
        "discharge": discharge,
        "final_states": {**h_snow, **h, **{k: v for k, v in r_state.items() if k in ROUTING_STATES[s.routing]}},
    }
    if return_states:
        result["states"] = {**out["states"], **r_series}
    if return_fluxes:
        result["fluxes"] = {**out["fluxes"], **routing_fluxes(s.routing, plan, discharge, dt)}
    return result


# ---------------------------------------------------------------------------------------------
# The xarray edge
# ---------------------------------------------------------------------------------------------


def _defaults(structure: Structure, dt: float) -> tuple[dict, dict]:
    params = {n: structures.parameter_default(n, dt) for n in structure.parameters}
    states = {n: structures.STATE_DEFAULTS[n] for n in structure.states}
    return params, states


def _as_grid(name: str, what: str, value, shape: tuple[int, int]) -> np.ndarray:
    """A scalar, (y, x) array or (y, x) DataArray as a float64 ``shape`` grid."""
    if isinstance(value, xr.DataArray):
        if set(value.dims) != {"y", "x"}:
            raise ValueError(f"{what} {name!r}: a DataArray must have dims ('y', 'x'), got {value.dims}")
        value = value.transpose("y", "x").values
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(shape, float(arr))
    if arr.shape != shape:
        raise ValueError(
            f"{what} {name!r} has shape {arr.shape}; give a scalar or an array over the basin's (y, x) grid, "
            f"shape {shape}"
        )
    return arr


def _cell_values(name: str, what: str, value, plan: RoutingPlan, shape) -> np.ndarray:
    """Validated ``(nac,)`` float32 values of one parameter or initial state."""
    grid = _as_grid(name, what, value, shape)
    cells = plan.to_cells(grid)
    lo, hi = structures.FEASIBLE[name]
    bad = np.flatnonzero(~((cells > lo) & (cells < hi)))  # NaN fails too
    if bad.size:
        k = bad[0]
        raise ValueError(
            f"{what} {name!r} = {float(cells[k])!r} at cell (row {plan.rows[k]}, col {plan.cols[k]}) "
            f"({bad.size} active cell(s) in all) is outside its feasible domain ({lo}, {hi}) (open interval)"
        )
    return cells.astype(np.float32)


def _user_values(
    what: str,
    given: Mapping | None,
    names: tuple[str, ...],
    defaults: dict,
    plan: RoutingPlan,
    shape,
    structure: Structure,
) -> tuple[dict, set]:
    given = dict(given or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(
            f"unknown {what}(s) {', '.join(map(repr, unknown))} for structure {structure.name!r}; "
            f"valid {what}s: {', '.join(names) or 'none'}"
        )
    values = {n: _cell_values(n, what, given.get(n, defaults[n]), plan, shape) for n in names}
    return values, set(given)


def _imperviousness(basin: xr.Dataset, plan: RoutingPlan, shape):
    """The basin's ``imperviousness`` (y, x) on the active cells, or 0 where the basin has none."""
    if "imperviousness" not in basin:
        return 0.0
    cells = plan.to_cells(_as_grid("imperviousness", "basin variable", basin["imperviousness"], shape))
    bad = np.flatnonzero(~((cells >= 0.0) & (cells <= 1.0)))
    if bad.size:
        k = bad[0]
        raise ValueError(
            f"basin variable 'imperviousness' = {float(cells[k])!r} at cell (row {plan.rows[k]}, col {plan.cols[k]}) "
            "is outside [0, 1]; it is the impervious fraction of the cell"
        )
    return cells.astype(np.float32)


def automatic_interception(prcp, pet, times, dt: float) -> np.ndarray:
    """Interception capacity ``ci`` (mm, ``(nac,)``) fitted to the forcing, as smash sets it.

    smash runs this at model build when the structure has ``ci`` and ``dt < 86400`` s (spec
    4.1.1); :func:`simulate` does the same when the user gives no ``ci``, and reuses the fit
    while the forcing stays the same (as smash reuses it across ``forward_run`` calls).
    """
    return np.asarray(structures.adjust_interception(prcp, pet, times, dt), dtype=np.float32)


#: ``ci`` fitted to the forcing seen last: digest of (prcp, pet, times, dt) -> ``(nac,)`` float32 (mm).
_CI_CACHE: "OrderedDict[bytes, np.ndarray]" = OrderedDict()
_CI_CACHE_SIZE = 2


def _fitted_interception(prcp: np.ndarray, pet: np.ndarray, times, dt: float) -> np.ndarray:
    """:func:`automatic_interception`, remembered for the last two forcings.

    smash fits ``ci`` once, when it builds the Model, and every ``forward_run`` reuses it;
    :func:`simulate` has no model object, so it remembers the fit keyed on a digest of the
    forcing it was fitted to (hashing France's 32-step forcing takes ~0.2 s, the fit ~1.5 s;
    the two forcings are hashed in two threads, as ``hashlib`` releases the GIL).
    """

    def digest(a) -> bytes:
        a = np.ascontiguousarray(a)
        h = hashlib.blake2b(f"{a.dtype.str}{a.shape}".encode(), digest_size=20)
        h.update(memoryview(a).cast("B"))
        return h.digest()

    stamps = np.asarray(times, dtype="datetime64[ns]").view(np.int64)
    with ThreadPoolExecutor(max_workers=2) as pool:
        parts = list(pool.map(digest, (prcp, pet)))
    key = b"".join(parts + [digest(stamps), digest(np.float64(dt))])
    ci = _CI_CACHE.get(key)
    if ci is None:
        ci = automatic_interception(prcp, pet, times, dt)
        ci.flags.writeable = False
        _CI_CACHE[key] = ci
        while len(_CI_CACHE) > _CI_CACHE_SIZE:
            _CI_CACHE.popitem(last=False)
    else:
        _CI_CACHE.move_to_end(key)
    return ci


def _grid_var(plan: RoutingPlan, values, shape, dims, attrs) -> xr.Variable:
    return xr.Variable(dims, plan.to_grid(np.asarray(values), *shape).astype(np.float32), attrs)


def simulate(
    basin: xr.Dataset,
    structure: str,
    parameters: Mapping | None = None,
    initial_states: Mapping | None = None,
    *,
    return_states: bool = False,
    return_fluxes: bool = False,
    return_discharge_field: bool = False,
    checkpoint_every: int | None = None,
    nn_parameters=None,
    ode_solver: str = "newton",
    ode_substeps: int = 4,
) -> xr.Dataset:
    """Run a structure on a basin and return the simulated discharge (smash's ``forward_run``).

    Parameters
    ----------
    basin
        A basin Dataset (:mod:`hybridhydro.basin`): ``prcp``, ``pet`` (time, y, x) in mm per
        step (NaN where missing), the mesh fields, attrs ``dt`` (s). Optional ``snow`` (mm per
        step) and ``temp`` (°C) feed ``ssn``; optional ``imperviousness`` (y, x) in [0, 1].
    structure
        smash's name: ``"<hydrology>-<routing>"`` or ``"<snow>-<hydrology>-<routing>"``,
        e.g. ``"gr4-lr"``, ``"gr4_ode-kw"``, ``"ssn-gr4-lr"``.
    parameters, initial_states
        smash names mapped to a scalar, a (y, x) array or a (y, x) DataArray. Missing names take
        smash's defaults; ``ci``, when not given at sub-daily ``dt``, is fitted to the forcing
        (:func:`automatic_interception`).
    return_states, return_fluxes, return_discharge_field
        Add the state series, the internal-flux series and the routed discharge of every cell,
        each (time, y, x).
    checkpoint_every
        Chunk length (steps) of the gradient checkpoints (see the module docstring).
    nn_parameters
        Hybrid structures (``gr4_mlp`` ... ``loieau_mlp``, ``gr4_ude``): the weights of the
        flux-correction network, as smash stores them: a dict ``{"weight_1": (h1, n_in),
        "bias_1": (h1,), "weight_2": ..., "bias_2": ..., ("weight_3", "bias_3")}``, a
        :class:`~hybridhydro.networks.FluxCorrectionNet`, or smash's pair of lists
        ``(model.get_nn_parameters_weight(), model.get_nn_parameters_bias())``. ``None``
        gives smash's default: zero weights with 16 hidden neurons (the hybrid equals its parent).
    ode_solver, ode_substeps
        gr4_ode/gr4_ude step scheme: ``"newton"`` (smash's, default), ``"implicit"``,
        ``"heun"``, ``"rk4"`` (see :mod:`hybridhydro.structures._ode`).

    Returns
    -------
    xarray.Dataset
        ``q`` (gauge, time) in m3/s; ``<state>_initial`` and ``<state>_final`` (y, x) initial
        and final states; ``<parameter>`` (y, x) the parameters used (defaults and the fitted
        ``ci`` included), all NaN off the active cells; optionally ``<state>`` and ``<flux>``
        (time, y, x) (fluxes with gr4_ode's Newton diagnostics and a hybrid's corrections)
        and ``discharge`` (time, y, x) in m3/s; for a hybrid structure, the network's weights
        as ``nn_weight_<k>`` (``nn_out_<k>``, ``nn_in_<k>``) and ``nn_bias_<k>`` (``nn_out_<k>``)
        (:func:`network_weights` reads them back). attrs: ``structure``, ``dt``,
        ``ode_solver`` (gr4_ode, gr4_ude).

    Raises
    ------
    ValueError
        Unknown structure, parameter or state; a grid of the wrong shape; a value outside its
        feasible domain (the message names the cell); network weights that do not fit the
        structure or are not finite; an unknown ODE solver.
    """
    s = parse_structure(structure)
    weights = _network_weights(s, nn_parameters)
    if ode_solver not in structures.ODE_SOLVERS:
        raise ValueError(f"unknown ode_solver {ode_solver!r}; choose one of {', '.join(structures.ODE_SOLVERS)}")
    if int(ode_substeps) < 1:
        raise ValueError(f"ode_substeps must be a positive number of sub-steps, got {ode_substeps}")
    dt = float(basin.attrs["dt"])
    mesh = Mesh.from_dataset(basin)
    plan = routing_plan(mesh)
    shape = (mesh.nrow, mesh.ncol)
    p_default, h_default = _defaults(s, dt)
    params, given = _user_values("parameter", parameters, s.parameters, p_default, plan, shape, s)
    states, _ = _user_values("initial state", initial_states, s.states, h_default, plan, shape, s)

    # The forcing gathers (~0.3 s each on France) release the GIL: one thread per variable.
    names = [name for name in ("prcp", "pet", "snow", "temp") if name in basin]
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        gathered = pool.map(lambda n: plan.to_cells(basin[n].transpose("time", "y", "x").values, dtype=np.float32), names)
        forcing = dict(zip(names, gathered))
    if "ci" in params and "ci" not in given and dt < 86400.0:
        params["ci"] = _fitted_interception(forcing["prcp"], forcing["pet"], basin["time"].values, dt)
    imperviousness = _imperviousness(basin, plan, shape)

    out = simulate_arrays(
        {k: jnp.asarray(v) for k, v in params.items()},
        {k: jnp.asarray(v) for k, v in states.items()},
        {k: jnp.asarray(v) for k, v in forcing.items()},
        device_plan(plan),
        nn_parameters=None if weights is None else {k: jnp.asarray(v) for k, v in weights.items()},
        ode_solver=ode_solver,
        ode_substeps=int(ode_substeps),
        structure=s.name,
        dt=dt,
        imperviousness=imperviousness,
        checkpoint_every=checkpoint_every,
        return_states=return_states,
        return_fluxes=return_fluxes,
    )
    result = _to_dataset(basin, s, plan, shape, out, return_discharge_field, params, states)
    if weights is not None:
        result = result.assign(_weight_variables(weights))
    if s.hydrology in ("gr4_ode", "gr4_ude"):
        result.attrs.update(ode_solver=ode_solver, ode_substeps=int(ode_substeps))
    return result


def _network_weights(s: Structure, nn_parameters) -> dict[str, np.ndarray] | None:
    """Validated float32 weights of a hybrid structure's network (None for a conceptual one)."""
    module = structures.get_module(s.hydrology)
    if not getattr(module, "hybrid", False):
        if nn_parameters is not None:
            raise ValueError(
                f"{s.hydrology} has no flux-correction network: nn_parameters are only for the hybrid "
                f"structures ({', '.join(structures.HYBRID_MODULES)})"
            )
        return None
    n_in, n_out = len(module.nn_inputs), len(module.nn_outputs)
    if nn_parameters is None:  # smash's default: zero weights, 16 hidden neurons
        return structures.initial_weights(n_in, n_out, 16, "zeros")
    if hasattr(nn_parameters, "weights") and callable(nn_parameters.weights):  # a FluxCorrectionNet
        nn_parameters = nn_parameters.weights()
    if isinstance(nn_parameters, (tuple, list)) and len(nn_parameters) == 2:  # smash's (weights, biases)
        w, b = nn_parameters
        nn_parameters = {}
        for k, (wk, bk) in enumerate(zip(w, b), start=1):
            nn_parameters[f"weight_{k}"], nn_parameters[f"bias_{k}"] = wk, bk
    if not isinstance(nn_parameters, Mapping):
        raise ValueError(
            "nn_parameters must be a dict of weight_k/bias_k arrays, a FluxCorrectionNet, or smash's "
            f"(weights, biases) lists; got {type(nn_parameters).__name__}"
        )
    return structures.check_weights(nn_parameters, n_in, n_out, s.hydrology)


def _weight_variables(weights: Mapping[str, np.ndarray]) -> dict[str, xr.Variable]:
    """The network's weights as result variables, in smash's layout."""
    out = {}
    k = 1
    while f"weight_{k}" in weights:
        w, b = np.asarray(weights[f"weight_{k}"]), np.asarray(weights[f"bias_{k}"])
        dims = (f"nn_out_{k}", f"nn_in_{k}")
        out[f"nn_weight_{k}"] = xr.Variable(dims, w, {"long_name": f"flux-correction network, weight of layer {k}"})
        out[f"nn_bias_{k}"] = xr.Variable(dims[:1], b, {"long_name": f"flux-correction network, bias of layer {k}"})
        k += 1
    return out


def network_weights(result: xr.Dataset) -> dict[str, np.ndarray]:
    """The network weights a hybrid run used, in smash's layout (``weight_k``, ``bias_k``).

    Feed them back to :func:`simulate` (``nn_parameters=``), to
    :meth:`hybridhydro.networks.FluxCorrectionNet.from_weights`, or, as lists, to smash's
    ``set_nn_parameters_weight`` / ``set_nn_parameters_bias``.
    """
    out = {}
    k = 1
    while f"nn_weight_{k}" in result:
        out[f"weight_{k}"] = result[f"nn_weight_{k}"].values
        out[f"bias_{k}"] = result[f"nn_bias_{k}"].values
        k += 1
    if not out:
        raise ValueError(f"the result of {result.attrs.get('structure')!r} holds no network weights (not a hybrid run)")
    return out


_STATE_UNITS = {"he": "mm", "hs": "mm", "hlr": "mm"}
# Units of the parameters the result carries; the others are dimensionless.
_PARAMETER_UNITS = {
    "ci": "mm", "cp": "mm", "ct": "mm", "cl": "mm", "be": "mm", "ca": "mm", "cc": "mm",
    "kexc": "mm", "llr": "min",
}


def _to_dataset(basin, s: Structure, plan, shape, out, return_discharge_field, params, states) -> xr.Dataset:
    tyx = ("time", "y", "x")
    data = {
        "q": xr.Variable(
            ("gauge", "time"),
            np.asarray(out["q"]).T.astype(np.float32),
            {"units": "m3 s-1", "long_name": "simulated discharge at the gauge cell"},
        )
    }
    # The parameters and initial states the run used (defaults and the fitted ci included):
    # small (y, x) maps that make a result self-describing, e.g. for hybridhydro.balance.
    for name, v in params.items():
        attrs = {"long_name": f"parameter {name} used by the run"}
        if name in _PARAMETER_UNITS:
            attrs["units"] = _PARAMETER_UNITS[name]
        data[name] = _grid_var(plan, v, shape, ("y", "x"), attrs)
    for name, v in states.items():
        data[f"{name}_initial"] = _grid_var(
            plan, v, shape, ("y", "x"), {"units": _STATE_UNITS.get(name, "1"), "long_name": f"initial state {name}"}
        )
    for name, v in out["final_states"].items():
        data[f"{name}_final"] = _grid_var(
            plan, v, shape, ("y", "x"), {"units": _STATE_UNITS.get(name, "1"), "long_name": f"final state {name}"}
        )
    for name, v in out.get("states", {}).items():
        attrs = {"units": _STATE_UNITS.get(name, "1"), "long_name": f"state {name} at the end of the step"}
        data[name] = _grid_var(plan, v, shape, tyx, attrs)
    for name, v in out.get("fluxes", {}).items():
        # qt and the upstream discharges in m3/s as smash reports them; lr's qup is a depth.
        in_m3s = name in ("qt", "qim1j") or (name == "qup" and s.routing == "lag0")
        if name in structures.get_module(s.hydrology).diagnostics:
            attrs = {"units": "1", "long_name": f"solver diagnostic {name} of the step"}
        elif name in structures.SOURCES:
            attrs = {"units": "mm", "long_name": structures.SOURCES[name] + " (mm over the step, + creates water)"}
        elif name.startswith("correction_"):
            attrs = {"units": "1", "long_name": f"flux-correction network output ({name[11:]}), in (-1, 1)"}
        else:
            attrs = {"units": "m3 s-1" if in_m3s else "mm", "long_name": f"internal flux {name} over the step"}
        data[name] = _grid_var(plan, v, shape, tyx, attrs)
    if return_discharge_field:
        data["discharge"] = _grid_var(
            plan, out["discharge"], shape, tyx, {"units": "m3 s-1", "long_name": "routed discharge of every cell"}
        )
    # A basin without gauges (bbox domain) has an empty gauge dimension and maybe no coordinate.
    coords = {name: basin[name] for name in ("time", "y", "x", "gauge", "spatial_ref") if name in basin.coords}
    return xr.Dataset(
        data,
        coords=coords,
        attrs={
            "structure": s.name,
            "dt": float(basin.attrs["dt"]),
            "units_note": (
                "discharge in m3 s-1; fluxes in mm per step except qt (m3 s-1); "
                "states normalised except he, hs, hlr (mm)"
            ),
        },
    )
