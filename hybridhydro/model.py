"""A model run: one preparation, one pure function (smash's ``Model`` and ``forward_run``).

Every run of hybridhydro takes this road; :func:`hybridhydro.simulate`, :func:`hybridhydro.calibrate`,
:func:`hybridhydro.water_balance` and the benchmarks included:

* :func:`prepare_run` reads a basin once, at the edge: the structure name, the mesh and its
  routing plan, the forcing gathered onto the active cells, the parameters and initial states
  (defaults filled in, ``ci`` fitted, every value checked against its feasible domain), the
  imperviousness and the network weights of a hybrid. It returns a :class:`RunInputs`, a JAX
  pytree of arrays with the run's options as static data.
* :func:`run` is pure: ``RunInputs`` (and optional replacements of the parameters, initial
  states or network weights) -> gauge discharge, the discharge of every cell, final states,
  optionally the state and flux series. It can be jitted, differentiated and vmapped::

      inputs = hh.prepare_run(basin, "gr4-lr", period=("2014-09-01", "2014-11-14"))
      loss = lambda p: jnp.mean((hh.run(inputs, p)["q"][:, 0] - qobs) ** 2)
      grad = jax.grad(loss)(inputs.parameters)

* :func:`simulate_arrays` is the jit-compiled core beneath :func:`run`: the hydrology as a
  ``lax.scan`` over time, vectorised over the active cells, then the routing of the whole
  runoff series (:mod:`hybridhydro.routing`).

Long runs: with ``checkpoint_every=n`` the time scans run in chunks of ``n`` steps wrapped in
``jax.checkpoint``, so reverse-mode differentiation stores one carry per chunk and recomputes
inside a chunk (smash splits its adjoint loop into ``⌊√T⌋`` segments for the same reason);
``n ≈ √T`` balances memory and recomputation. The forward result does not change.

Units: forcing in mm per step, discharge in m3/s, ``dt`` in s, parameters and states as in
:mod:`hybridhydro.structures` (capacities in mm, ``llr`` in min, levels normalised).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from . import structures
from .mesh import Mesh, RoutingPlan, routing_plan
from .periods import period_mask
from .states import basin_initial_states
from .routing import (
    ROUTING_PARAMETERS,
    ROUTING_STATES,
    checkpointed_scan,
    initial_routing_state,
    route_series,
    routing_fluxes,
)
from .structure_name import Structure, parse_structure

__all__ = [
    "RunInputs",
    "RunOptions",
    "automatic_interception",
    "cell_values",
    "network_parameters",
    "prepare_run",
    "run",
    "simulate_arrays",
]


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
    snow_mod = structures.SNOW_MODULES[structure.snow] if structure.snow != "zero" else None
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
    snow_mod = structures.SNOW_MODULES[s.snow] if s.snow != "zero" else None
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
# Preparation: the edge where a basin becomes arrays
# ---------------------------------------------------------------------------------------------


def _defaults(structure: Structure, dt: float) -> tuple[dict, dict]:
    params = {n: structures.parameter_default(n, dt) for n in structure.parameters}
    states = {n: structures.STATE_DEFAULTS[n] for n in structure.states}
    return params, states


def _on_grid(name: str, what: str, value: xr.DataArray, coords) -> xr.DataArray:
    """``value`` (dims y, x) in the order of the basin's ``coords``, read by its labels.

    A dimension without a coordinate is read by position. Labels that are the basin's in another
    order (a grid flipped north-south) are put in the basin's order; labels that are not the
    basin's (another grid, shifted or of another size) are an error naming the variable.
    """
    for dim in ("y", "x"):
        if dim not in value.coords or coords is None or dim not in coords:
            continue
        mine = np.asarray(value[dim].values, dtype=np.float64)
        theirs = np.asarray(coords[dim].values, dtype=np.float64)
        step = np.min(np.abs(np.diff(theirs))) if theirs.size > 1 else 1.0
        tol = 1e-3 * (step if step > 0 else 1.0)
        if mine.shape == theirs.shape and np.allclose(mine, theirs, rtol=0.0, atol=tol):
            continue
        if mine.shape == theirs.shape and np.allclose(np.sort(mine), np.sort(theirs), rtol=0.0, atol=tol):
            order = np.empty(theirs.size, dtype=int)
            order[np.argsort(theirs)] = np.argsort(mine)
            value = value.isel({dim: order})
            continue
        raise ValueError(
            f"{what} {name!r}: its {dim} coordinate ({mine.min() if mine.size else 'empty'} .. "
            f"{mine.max() if mine.size else ''}, {mine.size} values) is not the basin's ({theirs.min()} .. "
            f"{theirs.max()}, {theirs.size} values): a DataArray is read by its coordinates; put it on the "
            "basin's grid (e.g. value.interp_like(basin) or value.reindex_like(basin)) or pass a NumPy array"
        )
    return value


def _as_grid(name: str, what: str, value, shape: tuple[int, int], coords=None) -> np.ndarray:
    """A scalar, (y, x) array or (y, x) DataArray as a float64 ``shape`` grid.

    A DataArray with ``y``/``x`` coordinates is read by them when the basin's ``coords`` are
    given (:func:`_on_grid`); without coordinates, by position, as an array."""
    if isinstance(value, xr.DataArray):
        if set(value.dims) != {"y", "x"}:
            raise ValueError(f"{what} {name!r}: a DataArray must have dims ('y', 'x'), got {value.dims}")
        value = _on_grid(name, what, value.transpose("y", "x"), coords).values
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {name!r} must be a number or a (y, x) array of numbers, got "
                         f"{type(value).__name__} {value!r:.60}") from None
    if arr.ndim == 0:
        return np.full(shape, float(arr))
    if arr.shape != shape:
        raise ValueError(
            f"{what} {name!r} has shape {arr.shape}; give a scalar or an array over the basin's (y, x) grid, "
            f"shape {shape}"
        )
    return arr


def cell_values(name: str, what: str, value, plan: RoutingPlan, shape, coords=None) -> np.ndarray:
    """Validated ``(nac,)`` float32 values of one parameter or initial state.

    ``value`` is a scalar, a ``(y, x)`` array or DataArray (read by its coordinates against the
    basin's ``coords`` when both have them); every active cell must lie inside the name's
    feasible domain (:data:`hybridhydro.structures.FEASIBLE`, open interval).
    """
    grid = _as_grid(name, what, value, shape, coords)
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
    coords=None,
) -> tuple[dict, set]:
    if given is not None and not isinstance(given, Mapping):
        raise ValueError(
            f"{what}s must be a dict {{name: value}} (a scalar, a (y, x) array or DataArray per name), got "
            f"{type(given).__name__} {given!r:.80}; e.g. {{{names[-1] if names else 'name'!r}: value}}"
        )
    given = dict(given or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(
            f"unknown {what}(s) {', '.join(map(repr, unknown))} for structure {structure.name!r}; "
            f"valid {what}s: {', '.join(names) or 'none'}"
        )
    values = {n: cell_values(n, what, given.get(n, defaults[n]), plan, shape, coords) for n in names}
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
    4.1.1); :func:`prepare_run` does the same when the user gives no ``ci``, once per prepared
    run (as smash fits it once per model).
    """
    return np.asarray(structures.adjust_interception(prcp, pet, times, dt), dtype=np.float32)


def network_parameters(s: Structure, nn_parameters) -> dict[str, np.ndarray] | None:
    """Validated float32 weights of a hybrid structure's network (None for a conceptual one).

    ``nn_parameters`` is a dict ``weight_k``/``bias_k`` (smash's layout), a
    :class:`~hybridhydro.networks.FluxCorrectionNet`, smash's ``(weights, biases)`` lists, or
    None: smash's default, zero weights with 16 hidden neurons (the hybrid equals its parent).
    """
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


@dataclass(frozen=True)
class RunOptions:
    """How a run is computed (static: a change recompiles).

    Attributes
    ----------
    ode_solver, ode_substeps
        gr4_ode/gr4_ude step scheme (:data:`hybridhydro.structures.ODE_SOLVERS`) and the
        explicit schemes' sub-steps per time step.
    checkpoint_every
        Chunk length (steps) of the gradient checkpoints; None: none.
    return_states, return_fluxes
        Also return the state and internal-flux series (memory grows with ``time * nac``).
    remat_steps
        Rematerialise each hydrology step in the backward pass (see :func:`simulate_arrays`).
    """

    ode_solver: str = "newton"
    ode_substeps: int = 4
    checkpoint_every: int | None = None
    return_states: bool = False
    return_fluxes: bool = False
    remat_steps: bool = True


class RunLabels:
    """What puts a run's arrays back on the basin's grid and calendar: the grid shape, the
    coordinates (``time`` of the run window, ``y``, ``x``, ``gauge``), the names of the
    parameters the user gave, the mesh and its routing plan in host (NumPy) memory. Not part of
    the computation: every instance compares equal, so a new preparation of the same shapes
    reuses the compiled run."""

    def __init__(self, shape: tuple[int, int], coords: Mapping[str, Any], given: frozenset, plan: RoutingPlan,
                 mesh: Mesh):
        self.shape, self.coords, self.given, self.plan, self.mesh = shape, dict(coords), given, plan, mesh
        self.rows, self.cols = np.asarray(plan.rows), np.asarray(plan.cols)

    def to_grid(self, values, fill=np.nan) -> np.ndarray:
        """Scatter ``(..., nac)`` cell values onto ``(..., y, x)`` float32 maps (``fill`` elsewhere)."""
        values = np.asarray(values)
        grid = np.full(values.shape[:-1] + self.shape, fill, dtype=np.float32)
        grid[..., self.rows, self.cols] = values
        return grid

    def __eq__(self, other):
        return isinstance(other, RunLabels)

    def __hash__(self):
        return 0

    def __repr__(self):
        return f"RunLabels(shape={self.shape}, ntime={len(self.coords.get('time', ()))})"


@partial(jax.tree_util.register_dataclass,
         data_fields=["parameters", "initial_states", "forcing", "plan", "imperviousness", "nn_parameters"],
         meta_fields=["structure", "dt", "options", "labels"])
@dataclass(frozen=True)
class RunInputs:
    """Everything a run needs, prepared once by :func:`prepare_run` (a JAX pytree).

    Attributes
    ----------
    parameters
        Every parameter of the structure, name -> ``(nac,)`` float32 (smash names and units:
        capacities in mm, ``llr`` in min), defaults and the fitted ``ci`` included.
    initial_states
        Every initial state, name -> ``(nac,)`` (levels normalised; ``hlr``, ``hs`` in mm).
    forcing
        ``prcp``, ``pet`` (and ``snow``, ``temp`` with ``ssn`` when the basin has them),
        ``(time, nac)`` float32 in mm per step (temp in °C), NaN where missing.
    plan
        The mesh's :class:`~hybridhydro.mesh.RoutingPlan` on the JAX device.
    imperviousness
        Impervious fraction per cell ``(nac,)`` in [0, 1] (0 where the basin has none).
    nn_parameters
        A hybrid structure's network weights (smash's layout), else None.
    structure, dt, options, labels
        Static: the full structure name, the time step (s), the :class:`RunOptions`, and the
        :class:`RunLabels` that put results back on the grid.
    """

    parameters: dict
    initial_states: dict
    forcing: dict
    plan: RoutingPlan
    imperviousness: jax.Array
    nn_parameters: dict | None
    structure: str
    dt: float
    options: RunOptions = field(default_factory=RunOptions)
    labels: RunLabels | None = None

    @property
    def nac(self) -> int:
        """Number of active cells."""
        return int(self.plan.rows.shape[0])

    @property
    def ntime(self) -> int:
        """Number of time steps of the run."""
        return int(self.forcing["prcp"].shape[0])

    def with_options(self, **options) -> "RunInputs":
        """The same inputs with other :class:`RunOptions` (e.g. ``return_fluxes=True``)."""
        return replace(self, options=_options(**{**self.options.__dict__, **options}))

    def astype(self, dtype) -> "RunInputs":
        """The inputs with every floating array cast to ``dtype`` (e.g. float64 for finite
        differences, with ``jax.config.update("jax_enable_x64", True)``)."""

        def cast(x):
            x = jnp.asarray(x)
            return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

        return replace(
            self,
            parameters=jax.tree_util.tree_map(cast, self.parameters),
            initial_states=jax.tree_util.tree_map(cast, self.initial_states),
            forcing=jax.tree_util.tree_map(cast, self.forcing),
            imperviousness=cast(self.imperviousness),
            nn_parameters=None if self.nn_parameters is None else jax.tree_util.tree_map(cast, self.nn_parameters),
            plan=replace(self.plan, upstream_area=cast(self.plan.upstream_area), dx=cast(self.plan.dx),
                         cell_area=cast(self.plan.cell_area)),
        )


def _options(*, ode_solver="newton", ode_substeps=4, checkpoint_every=None, return_states=False,
             return_fluxes=False, remat_steps=True) -> RunOptions:
    """Validated :class:`RunOptions`."""
    if ode_solver not in structures.ODE_SOLVERS:
        raise ValueError(f"unknown ode_solver {ode_solver!r}; choose one of {', '.join(structures.ODE_SOLVERS)}")
    if isinstance(ode_substeps, bool) or int(ode_substeps) != ode_substeps or int(ode_substeps) < 1:
        raise ValueError(f"ode_substeps must be a positive whole number of sub-steps, got {ode_substeps!r}")
    if checkpoint_every is not None and (int(checkpoint_every) != checkpoint_every or int(checkpoint_every) < 1):
        raise ValueError(f"checkpoint_every must be a positive whole number of steps or None, got {checkpoint_every!r}")
    return RunOptions(
        ode_solver=str(ode_solver), ode_substeps=int(ode_substeps),
        checkpoint_every=None if checkpoint_every is None else int(checkpoint_every),
        return_states=bool(return_states), return_fluxes=bool(return_fluxes), remat_steps=bool(remat_steps),
    )


def _check_basin_structure(basin: xr.Dataset) -> float:
    """The basin's variables, units, ``dt`` and time axis, checked before any array is read
    (:func:`hybridhydro.basin.check_run_basin`); returns ``dt`` (s)."""
    from .basin import check_run_basin

    return check_run_basin(basin, where="the basin")


def _check_forcing(basin: xr.Dataset, forcing: Mapping, times, dt: float, plan: RoutingPlan) -> None:
    """The gathered forcing's values on the active cells (:func:`hybridhydro.basin.check_forcing_values`):
    infinities, all missing, negative (read as missing), physically implausible depths."""
    from .basin import check_forcing_values, plausibility_mode

    mode = plausibility_mode(basin, "the basin")
    check_forcing_values(forcing, times, dt, np.asarray(plan.rows), np.asarray(plan.cols), mode=mode,
                         where="the basin")


def prepare_run(
    basin: xr.Dataset,
    structure: str,
    parameters: Mapping | None = None,
    initial_states: Mapping | None = None,
    *,
    period=None,
    nn_parameters=None,
    **options,
) -> RunInputs:
    """Read a basin once into the :class:`RunInputs` of a run (smash builds its ``Model`` here).

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
        smash's defaults (a missing initial state: the basin's ``initial_<state>`` map when it
        carries one, :mod:`hybridhydro.states`, else smash's default); ``ci``, when not given at sub-daily ``dt``, is fitted to the basin's
        whole forcing (:func:`automatic_interception`), whatever the ``period``.
    period
        ``(start, end]`` of the run (:mod:`hybridhydro.periods`); the initial states hold at
        its start. None: the basin's whole period.
    nn_parameters
        Hybrid structures: the network's weights (any form :func:`network_parameters` reads);
        None: zero weights (the hybrid equals its parent).
    **options
        :class:`RunOptions`: ``ode_solver``, ``ode_substeps``, ``checkpoint_every``,
        ``return_states``, ``return_fluxes``, ``remat_steps``.

    Raises
    ------
    ValueError
        Unknown structure, parameter, state or option; a grid of the wrong shape; a value
        outside its feasible domain (the message names the cell); network weights that do not
        fit the structure; a period outside the basin's data; a basin that cannot be run
        (:func:`hybridhydro.basin.check_run_basin`: a missing variable or ``dt``, a time axis
        out of order, duplicated, with gaps or not spaced by ``dt``, forcing not in mm) or
        forcing values that are infinite, all missing or physically implausible
        (:func:`hybridhydro.basin.check_forcing_values`; the message names the step and cell).
    """
    s = parse_structure(structure)
    unknown = sorted(set(options) - set(RunOptions.__dataclass_fields__))
    if unknown:
        raise ValueError(f"prepare_run: unknown option(s) {unknown}; the run options are "
                         f"{', '.join(RunOptions.__dataclass_fields__)}")
    opts = _options(**options)
    weights = network_parameters(s, nn_parameters)
    dt = _check_basin_structure(basin)
    mesh = Mesh.from_dataset(basin)
    plan = routing_plan(mesh)
    shape = (mesh.nrow, mesh.ncol)
    p_default, h_default = _defaults(s, dt)
    h_default.update(basin_initial_states(basin, s.states))  # a basin's initial_<state> maps (basin.initial_states)
    params, given = _user_values("parameter", parameters, s.parameters, p_default, plan, shape, s, basin.coords)
    states, _ = _user_values("initial state", initial_states, s.states, h_default, plan, shape, s, basin.coords)

    # The forcing gathers (~0.3 s each on France) release the GIL: one thread per variable.
    names = [name for name in ("prcp", "pet", "snow", "temp") if name in basin]
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        gathered = pool.map(lambda n: plan.to_cells(basin[n].transpose("time", "y", "x").values, dtype=np.float32), names)
        forcing = dict(zip(names, gathered))
    times = basin["time"].values
    _check_forcing(basin, forcing, times, dt, plan)
    if "ci" in params and "ci" not in given and dt < 86400.0:
        params["ci"] = automatic_interception(forcing["prcp"], forcing["pet"], times, dt)
    steps = period_mask(times, period, "prepare_run: period")
    if not steps.any():
        raise ValueError(f"prepare_run: the period {period} holds no time step of the basin; widen it")
    if not steps.all():
        k0, k1 = np.flatnonzero(steps)[[0, -1]]
        forcing = {k: v[k0 : k1 + 1] for k, v in forcing.items()}
    imperviousness = _imperviousness(basin, plan, shape)

    coords = {name: basin[name] for name in ("time", "y", "x", "gauge", "spatial_ref") if name in basin.coords}
    if "time" in coords:
        coords["time"] = coords["time"].isel(time=steps)
    labels = RunLabels(shape, coords, frozenset(given), plan, mesh)
    as_j = lambda d: {k: jnp.asarray(v) for k, v in d.items()}  # noqa: E731
    return RunInputs(
        parameters=as_j(params),
        initial_states=as_j(states),
        forcing=as_j(forcing),
        plan=jax.device_put(plan),
        imperviousness=jnp.asarray(imperviousness, jnp.float32),
        nn_parameters=None if weights is None else as_j(weights),
        structure=s.name,
        dt=dt,
        options=opts,
        labels=labels,
    )


def _replace_values(current: Mapping, new: Mapping | None, what: str, structure: str) -> dict:
    """``current`` with the entries of ``new`` (scalars or ``(nac,)`` arrays) broadcast in."""
    if new is None:
        return dict(current)
    unknown = sorted(set(new) - set(current))
    if unknown:
        raise ValueError(f"run: unknown {what}(s) {unknown} for {structure!r}; its {what}s are {', '.join(current)}")
    out = dict(current)
    for name, value in new.items():
        out[name] = jnp.broadcast_to(jnp.asarray(value), jnp.shape(current[name]))
    return out


def run(inputs: RunInputs, parameters: Mapping | None = None, nn_parameters: Mapping | None = None,
        initial_states: Mapping | None = None) -> dict:
    """Run prepared inputs: pure, jittable and differentiable (smash's ``forward_run``).

    Parameters
    ----------
    inputs
        From :func:`prepare_run`.
    parameters, initial_states
        Replacements for some or all of ``inputs.parameters`` / ``inputs.initial_states``:
        name -> scalar or ``(nac,)`` array over the active cells (plan order). What to
        differentiate with respect to.
    nn_parameters
        Replacement network weights of a hybrid (smash's layout, as ``inputs.nn_parameters``).

    Returns
    -------
    dict
        ``q`` (time, ng) gauge discharge (m3/s); ``discharge`` (time, nac) routed discharge
        of every cell (m3/s); ``final_states`` name -> (nac,); with the ``return_states``
        option ``states`` name -> (time, nac); with ``return_fluxes`` ``fluxes`` name ->
        (time, nac) (see :func:`simulate_arrays`).
    """
    params = _replace_values(inputs.parameters, parameters, "parameter", inputs.structure)
    states = _replace_values(inputs.initial_states, initial_states, "initial state", inputs.structure)
    nn = inputs.nn_parameters if nn_parameters is None else nn_parameters
    o = inputs.options
    return simulate_arrays(
        params, states, inputs.forcing, inputs.plan,
        structure=inputs.structure, dt=inputs.dt, imperviousness=inputs.imperviousness, nn_parameters=nn,
        ode_solver=o.ode_solver, ode_substeps=o.ode_substeps, checkpoint_every=o.checkpoint_every,
        return_states=o.return_states, return_fluxes=o.return_fluxes, remat_steps=o.remat_steps,
    )
