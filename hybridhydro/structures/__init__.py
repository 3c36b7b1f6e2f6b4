"""Hydrological structures of smash, written in pure JAX, one time step on every active cell.

Each structure is a :class:`HydrologicalModule`: its parameter, state and flux names in
smash order, and a ``step(theta, h, p, e, ctx) -> (h_new, fluxes)`` function. All of them
assemble the same operators (:mod:`hybridhydro.structures._operators`); the snow module
``ssn`` is a :class:`SnowModule` that runs first and adds its melt to the precipitation.
One step on ``nac`` cells, with ``p_t`` and ``e_t`` the forcing of that step (mm)::

    module = get_module("gr4")
    theta = default_parameters(module, nac, dt=3600.0)
    h = default_states(module, nac)
    h, fluxes = module.step(theta, h, p_t, e_t, StepContext(dt=3600.0))

Pass ``theta`` to a jitted function as an argument rather than closing over it: XLA rewrites
divisions by constants, which moves the last bits away from smash's float32 values.

Units: capacities in mm, states normalised by their capacity (except ``he``, ``hs`` in mm),
fluxes in mm per step, ``qt`` included (multiply by ``1e-3·dx·dy/dt`` for m3/s).
"""

from __future__ import annotations

from functools import partial

from ._gr import gr4_step, gr5_step, gr6_step, grc_step, grd_step, loieau_step
from ._interception import CI_CANDIDATES, adjust_interception
from ._mlp import (
    FORCING_INPUTS,
    INITIALIZERS,
    NN_INPUT_SCALINGS,
    check_weights,
    initial_weights,
    input_scale,
    mlp,
    weights_for_raw_inputs,
    weights_for_scaled_inputs,
)
from ._module import SOURCES, HydrologicalModule, SnowModule, StepContext, clean_forcing, missing_forcing
from ._operators import exchange_power, interception, percolation_constant, power_store, production
from ._ode import (
    ODE_SOLVERS,
    NEWTON_MAX_ITERATIONS,
    SAFEGUARDED_MAX_ITERATIONS,
    conservative_implicit_euler,
    production_root,
    transfer_solvability,
    NEWTON_TOLERANCE,
    WELL_POSED_KEXC_OVER_CT,
    gr4_ode_step,
    ill_posed_cells,
    newton_implicit_euler,
)
from ._snow import partition_precipitation, ssn_step
from ._tables import (
    FEASIBLE,
    PARAMETER_BOUNDS,
    PARAMETER_DEFAULTS,
    PARAMETER_UNITS,
    STATE_BOUNDS,
    STATE_DEFAULTS,
    default_parameters,
    default_states,
    parameter_default,
    parameter_defaults,
)

_GR_FLUXES = ("pn", "en", "pr", "perc", "ps", "es", "lexc", "prr", "prd", "qr", "qd", "qt")
#: The algebraic structures' non-physical sources (:data:`SOURCES`): smash's imperviousness
#: sink, transfer-store floor and steady outflow where precipitation is missing.
_GR_SOURCES = ("source_impervious", "source_floor", "source_steady")

HYDROLOGICAL_MODULES: dict[str, HydrologicalModule] = {
    module.name: module
    for module in (
        HydrologicalModule("gr4", ("ci", "cp", "ct", "kexc"), ("hi", "hp", "ht"), _GR_FLUXES, gr4_step, sources=_GR_SOURCES),
        HydrologicalModule("gr5", ("ci", "cp", "ct", "kexc", "aexc"), ("hi", "hp", "ht"), _GR_FLUXES, gr5_step, sources=_GR_SOURCES),
        HydrologicalModule(
            "gr6",
            ("ci", "cp", "ct", "be", "kexc", "aexc"),
            ("hi", "hp", "ht", "he"),
            ("pn", "en", "pr", "perc", "ps", "es", "lexc", "prr", "prd", "pre", "qr", "qd", "qe", "qt"),
            gr6_step,
            sources=_GR_SOURCES,
        ),
        HydrologicalModule(
            "grc",
            ("ci", "cp", "ct", "cl", "kexc"),
            ("hi", "hp", "ht", "hl"),
            ("pn", "en", "pr", "perc", "ps", "es", "lexc", "prr", "prd", "prl", "qr", "qd", "ql", "qt"),
            grc_step,
            sources=_GR_SOURCES,
        ),
        HydrologicalModule(
            "grd", ("cp", "ct"), ("hp", "ht"), ("ei", "pn", "en", "pr", "perc", "ps", "es", "prr", "qr", "qt"), grd_step, sources=_GR_SOURCES
        ),
        HydrologicalModule(
            "loieau",
            ("ca", "cc", "kb"),
            ("ha", "hc"),
            ("ei", "pn", "en", "pr", "perc", "ps", "es", "prr", "prd", "qr", "qd", "qt"),
            loieau_step,
            sources=_GR_SOURCES,
        ),
        HydrologicalModule(
            "gr4_ode",
            ("ci", "cp", "ct", "kexc"),
            ("hi", "hp", "ht"),
            ("pn", "en", "es", "lexc", "overflow", "qt"),
            gr4_ode_step,
            diagnostics=("newton_iterations", "newton_residual", "ode_root_exists", "ode_root_unique"),
            sources=("source_impervious", "source_solver"),
        ),
    )
}



def _hybrid(parent: HydrologicalModule, name: str, nn_inputs, nn_outputs) -> HydrologicalModule:
    """The hybrid of ``parent``: same parameters and states, plus a correction network. Its
    fluxes add ``correction_<output>`` (dimensionless, in (−1, 1)) and, for gr4_ude,
    ``rain_correction`` (mm per step: its rain correction does not conserve water)."""
    extra = ("rain_correction",) if name == "gr4_ude" else ()
    return HydrologicalModule(
        name,
        parent.parameters,
        parent.states,
        parent.fluxes + extra + tuple(f"correction_{o}" for o in nn_outputs),
        partial(parent.step, hybrid=tuple(nn_outputs)),
        diagnostics=parent.diagnostics,
        sources=parent.sources,
        nn_inputs=nn_inputs,
        nn_outputs=nn_outputs,
        parent=parent.name,
    )


_SPLIT = ("ps", "es", "split")
#: Hybrid structures (spec 4.4, 4.6): network inputs and what each output corrects.
_HYBRIDS = {
    "gr4_mlp": ("gr4", ("hp", "ht", "pn", "en"), (*_SPLIT, "exchange")),
    "gr5_mlp": ("gr5", ("hp", "ht", "pn", "en"), (*_SPLIT, "exchange")),
    "gr6_mlp": ("gr6", ("hp", "ht", "he", "pn", "en"), (*_SPLIT, "store_share", "exchange")),
    "grc_mlp": ("grc", ("hp", "ht", "hl", "pn", "en"), (*_SPLIT, "store_share", "exchange")),
    "grd_mlp": ("grd", ("hp", "ht", "pn", "en"), ("ps", "es")),
    "loieau_mlp": ("loieau", ("ha", "hc", "pn", "en"), _SPLIT),
    "gr4_ude": ("gr4_ode", ("hp", "ht", "pn", "en"), ("rain", "evaporation", "exchange", "outflow")),
}
#: The hybrid structures, by name; :data:`HYDROLOGICAL_MODULES` holds their conceptual parents.
HYBRID_MODULES: dict[str, HydrologicalModule] = {
    name: _hybrid(HYDROLOGICAL_MODULES[parent], name, i, o) for name, (parent, i, o) in _HYBRIDS.items()
}

SNOW_MODULES: dict[str, SnowModule] = {"ssn": SnowModule("ssn", ("kmlt",), ("hs",), ("mlt",), ssn_step)}


def get_module(name: str) -> HydrologicalModule | SnowModule:
    """The hydrological (or snow) module called ``name`` in smash.

    Raises
    ------
    ValueError
        If no module has that name; the message lists the valid ones.
    """
    if name in HYDROLOGICAL_MODULES:
        return HYDROLOGICAL_MODULES[name]
    if name in HYBRID_MODULES:
        return HYBRID_MODULES[name]
    if name in SNOW_MODULES:
        return SNOW_MODULES[name]
    raise ValueError(
        f"unknown hydrological module {name!r}; choose one of: {', '.join(HYDROLOGICAL_MODULES)}"
        f" (hybrid: {', '.join(HYBRID_MODULES)})"
        f" (snow: {', '.join(SNOW_MODULES)})"
    )


__all__ = [
    "CI_CANDIDATES",
    "FEASIBLE",
    "HYBRID_MODULES",
    "HYDROLOGICAL_MODULES",
    "FORCING_INPUTS",
    "INITIALIZERS",
    "NN_INPUT_SCALINGS",
    "input_scale",
    "weights_for_raw_inputs",
    "weights_for_scaled_inputs",
    "NEWTON_MAX_ITERATIONS",
    "NEWTON_TOLERANCE",
    "ODE_SOLVERS",
    "PARAMETER_BOUNDS",
    "PARAMETER_DEFAULTS",
    "PARAMETER_UNITS",
    "SNOW_MODULES",
    "SOURCES",
    "SAFEGUARDED_MAX_ITERATIONS",
    "conservative_implicit_euler",
    "production_root",
    "transfer_solvability",
    "STATE_BOUNDS",
    "STATE_DEFAULTS",
    "WELL_POSED_KEXC_OVER_CT",
    "HydrologicalModule",
    "SnowModule",
    "StepContext",
    "adjust_interception",
    "check_weights",
    "initial_weights",
    "mlp",
    "clean_forcing",
    "default_parameters",
    "default_states",
    "get_module",
    "ill_posed_cells",
    "missing_forcing",
    "newton_implicit_euler",
    "parameter_default",
    "parameter_defaults",
    "partition_precipitation",
    # the GR operators, for models assembled outside the structures (hybridhydro.known_answer)
    "exchange_power",
    "interception",
    "percolation_constant",
    "power_store",
    "production",
]
