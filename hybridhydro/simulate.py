"""Forward run with labelled results: basin Dataset + structure + parameters -> xarray
discharge (smash's ``forward_run``, spec section 3).

:func:`simulate` is the xarray edge of the one road every run takes (:mod:`hybridhydro.model`):
it prepares the run (:func:`~hybridhydro.model.prepare_run`), or takes a run already prepared,
runs it (:func:`~hybridhydro.model.run`) and puts the result back on the basin's grid and
calendar, with the parameters, initial and final states it used, so that a result describes
itself (:func:`hybridhydro.water_balance` reads them). :func:`network_weights` reads a hybrid's
weights back from a result.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import xarray as xr

from . import structures
from .basin import BASIN_VARIABLES
from .io.cf import step_units
from .model import RunInputs, prepare_run, run
from .structure_name import Structure, parse_structure

# ---------------------------------------------------------------------------------------------
# The pure core
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# The xarray edge
# ---------------------------------------------------------------------------------------------


def _grid_var(labels, values, dims, attrs) -> xr.Variable:
    return xr.Variable(dims, labels.to_grid(np.asarray(values)), attrs)


def simulate(
    basin: xr.Dataset | RunInputs,
    structure: str | None = None,
    parameters: Mapping | None = None,
    initial_states: Mapping | None = None,
    *,
    period=None,
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
        Or a run already prepared by :func:`hybridhydro.prepare_run` (then leave ``structure``,
        ``parameters``, ``initial_states``, ``period``, ``nn_parameters`` and the ODE options
        out: they are the prepared ones), to run it many times without reading the basin again.
    structure
        smash's name: ``"<hydrology>-<routing>"`` or ``"<snow>-<hydrology>-<routing>"``,
        e.g. ``"gr4-lr"``, ``"gr4_ode-kw"``, ``"ssn-gr4-lr"``.
    parameters, initial_states
        smash names mapped to a scalar, a (y, x) array or a (y, x) DataArray. Missing names take
        smash's defaults; ``ci``, when not given at sub-daily ``dt``, is fitted to the forcing
        (:func:`hybridhydro.model.automatic_interception`).
    period
        ``(start, end]`` of the run (:mod:`hybridhydro.periods`); None: the whole basin.
    return_states, return_fluxes, return_discharge_field
        Add the state series, the internal-flux series and the routed discharge of every cell,
        each (time, y, x).
    checkpoint_every
        Chunk length (steps) of the gradient checkpoints (see :mod:`hybridhydro.model`).
    nn_parameters
        Hybrid structures (``gr4_mlp`` ... ``loieau_mlp``, ``gr4_ude``): the weights of the
        flux-correction network, as smash stores them: a dict ``{"weight_1": (h1, n_in),
        "bias_1": (h1,), "weight_2": ..., "bias_2": ..., ("weight_3", "bias_3")}``, a
        :class:`~hybridhydro.networks.FluxCorrectionNet`, or smash's pair of lists
        ``(model.get_nn_parameters_weight(), model.get_nn_parameters_bias())``. ``None``
        gives smash's default: zero weights with 16 hidden neurons (the hybrid equals its parent).
    ode_solver, ode_substeps
        gr4_ode/gr4_ude step scheme (:data:`hybridhydro.structures.ODE_SOLVERS`; ``"newton"``
        is smash's) and the explicit schemes' sub-steps (see :mod:`hybridhydro.structures._ode`).

    Returns
    -------
    xarray.Dataset
        ``q`` (gauge, time) in m3/s; ``<state>_initial`` and ``<state>_final`` (y, x) initial
        and final states; ``<parameter>`` (y, x) the parameters used (defaults and the fitted
        ``ci`` included; a parameter per step, e.g. ``kexc``, in the step's unit: ``mm h-1`` at
        ``dt = 3600``), all NaN off the active cells; optionally ``<state>`` and ``<flux>``
        (time, y, x) (fluxes with gr4_ode's Newton diagnostics and a hybrid's corrections)
        and ``discharge`` (time, y, x) in m3/s; for a hybrid structure, the network's weights
        as ``nn_weight_<k>`` (``nn_out_<k>``, ``nn_in_<k>``) and ``nn_bias_<k>`` (``nn_out_<k>``)
        (:func:`network_weights` reads them back). Every variable has ``units`` and
        ``long_name``; discharge its CF ``standard_name``; series their ``cell_methods``
        (``time: mean`` discharge, ``time: sum`` depths over the step, ``time: point`` states).
        attrs: ``structure``, ``dt``, ``ode_solver``, ``ode_substeps`` (gr4_ode, gr4_ude).
        :func:`hybridhydro.write_simulation` writes it as CF NetCDF.

    Raises
    ------
    ValueError
        Unknown structure, parameter or state; a grid of the wrong shape; a value outside its
        feasible domain (the message names the cell); network weights that do not fit the
        structure or are not finite; an unknown ODE solver.
    """
    flags = dict(return_states=return_states, return_fluxes=return_fluxes, checkpoint_every=checkpoint_every)
    if isinstance(basin, RunInputs):
        given = {"structure": structure, "parameters": parameters, "initial_states": initial_states,
                 "period": period, "nn_parameters": nn_parameters}
        extra = [k for k, v in given.items() if v is not None]
        extra += [k for k, v, d in (("ode_solver", ode_solver, "newton"), ("ode_substeps", ode_substeps, 4)) if v != d]
        if extra:
            raise ValueError(
                f"simulate: {', '.join(extra)} cannot change a prepared run; pass them to prepare_run, or "
                "pass parameters to hybridhydro.run(inputs, parameters) for a pure run"
            )
        inputs = basin.with_options(**flags)
    else:
        if structure is None:
            raise ValueError("simulate: give the structure, e.g. simulate(basin, 'gr4-lr')")
        inputs = prepare_run(basin, structure, parameters, initial_states, period=period, nn_parameters=nn_parameters,
                             ode_solver=ode_solver, ode_substeps=ode_substeps, **flags)
    return to_dataset(inputs, run(inputs), return_discharge_field=return_discharge_field)


def to_dataset(inputs: RunInputs, out: Mapping, *, return_discharge_field: bool = False) -> xr.Dataset:
    """The output of :func:`hybridhydro.run` on ``inputs`` as a labelled Dataset (see :func:`simulate`)."""
    s = parse_structure(inputs.structure)
    params = {k: np.asarray(v) for k, v in inputs.parameters.items()}
    states = {k: np.asarray(v) for k, v in inputs.initial_states.items()}
    result = _to_dataset(inputs, s, out, return_discharge_field, params, states)
    if inputs.nn_parameters is not None:
        result = result.assign(_weight_variables({k: np.asarray(v) for k, v in inputs.nn_parameters.items()}))
    if s.hydrology in ("gr4_ode", "gr4_ude"):
        result.attrs.update(ode_solver=inputs.options.ode_solver, ode_substeps=inputs.options.ode_substeps)
    return result


def _weight_variables(weights: Mapping[str, np.ndarray]) -> dict[str, xr.Variable]:
    """The network's weights as result variables, in smash's layout."""
    out = {}
    k = 1
    while f"weight_{k}" in weights:
        w, b = np.asarray(weights[f"weight_{k}"]), np.asarray(weights[f"bias_{k}"])
        dims = (f"nn_out_{k}", f"nn_in_{k}")
        layer = f"flux-correction network, {{}} of layer {k}"
        out[f"nn_weight_{k}"] = xr.Variable(dims, w, {"units": "1", "long_name": layer.format("weight")})
        out[f"nn_bias_{k}"] = xr.Variable(dims[:1], b, {"units": "1", "long_name": layer.format("bias")})
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
# What a simulated discharge is in CF's terms: the observed one's standard name and cell method.
_DISCHARGE = {"standard_name": BASIN_VARIABLES["qobs"].standard_name, "cell_methods": "time: mean"}


def _to_dataset(inputs: RunInputs, s: Structure, out, return_discharge_field, params, states) -> xr.Dataset:
    tyx = ("time", "y", "x")
    labels = inputs.labels
    dt = float(inputs.dt)
    data = {
        "q": xr.Variable(
            ("gauge", "time"),
            np.asarray(out["q"]).T.astype(np.float32),
            {"units": "m3 s-1", "long_name": "simulated discharge at the gauge cell, mean over the step", **_DISCHARGE},
        )
    }
    # The parameters and initial states the run used (defaults and the fitted ci included):
    # small (y, x) maps that make a result self-describing, e.g. for hybridhydro.balance.
    # A parameter per time step (kexc, ks, ...) states the step in its unit: "mm h-1" at dt = 3600 s.
    for name, v in params.items():
        attrs = {"long_name": f"parameter {name} used by the run",
                 "units": step_units(structures.PARAMETER_UNITS.get(name, "1"), dt)}
        data[name] = _grid_var(labels, v, ("y", "x"), attrs)
    for name, v in states.items():
        data[f"{name}_initial"] = _grid_var(
            labels, v, ("y", "x"), {"units": _STATE_UNITS.get(name, "1"), "long_name": f"initial state {name}"}
        )
    for name, v in out["final_states"].items():
        data[f"{name}_final"] = _grid_var(
            labels, v, ("y", "x"), {"units": _STATE_UNITS.get(name, "1"), "long_name": f"final state {name}"}
        )
    for name, v in out.get("states", {}).items():
        attrs = {"units": _STATE_UNITS.get(name, "1"), "long_name": f"state {name} at the end of the step",
                 "cell_methods": "time: point"}
        data[name] = _grid_var(labels, v, tyx, attrs)
    for name, v in out.get("fluxes", {}).items():
        # qt and the upstream discharges in m3/s as smash reports them; lr's qup is a depth.
        in_m3s = name in ("qt", "qim1j") or (name == "qup" and s.routing == "lag0")
        if name in structures.get_module(s.hydrology).diagnostics:
            attrs = {"units": "1", "long_name": f"solver diagnostic {name} of the step"}
        elif name in structures.SOURCES:
            attrs = {"units": "mm", "long_name": structures.SOURCES[name] + " (mm over the step, + creates water)",
                     "cell_methods": "time: sum"}
        elif name.startswith("correction_"):
            attrs = {"units": "1", "long_name": f"flux-correction network output ({name[11:]}), in (-1, 1)"}
        elif in_m3s:
            attrs = {"units": "m3 s-1", "long_name": f"internal flux {name}, mean over the step",
                     "cell_methods": "time: mean"}
        else:
            attrs = {"units": "mm", "long_name": f"internal flux {name}: depth over the step",
                     "cell_methods": "time: sum"}
        data[name] = _grid_var(labels, v, tyx, attrs)
    if return_discharge_field:
        data["discharge"] = _grid_var(
            labels, out["discharge"], tyx,
            {"units": "m3 s-1", "long_name": "routed discharge of every cell, mean over the step", **_DISCHARGE},
        )
    # A basin without gauges (bbox domain) has an empty gauge dimension and maybe no coordinate.
    return xr.Dataset(
        data,
        coords=inputs.labels.coords,
        attrs={
            "structure": s.name,
            "dt": dt,
            "units_note": (
                "discharge in m3 s-1; fluxes are depths in mm over the step (cell_methods 'time: sum') "
                "except qt (m3 s-1); states normalised except he, hs, hlr (mm); parameters per step "
                "(kexc, ...) in mm per the step's unit"
            ),
        },
    )
