"""The interface every structure implements: a module description and a per-step function.

A hydrological module turns one time step of forcing into new states and fluxes, on every
active cell at once. The caller (``hybridhydro.simulate``) scans it over time; it never needs
to know which structure it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class HydrologicalModule:
    """A rainfall-runoff structure (gr4, gr5, ...), described the way smash names it.

    Attributes
    ----------
    name
        smash's name of the structure, e.g. ``"gr4"``.
    parameters
        Parameter names in smash order, e.g. ``("ci", "cp", "ct", "kexc")``.
    states
        State names in smash order, e.g. ``("hi", "hp", "ht")``.
    fluxes
        Internal fluxes in smash order (spec 2.3). Every one is in mm per step, ``qt``
        included (smash reports ``qt`` in m3/s; the caller converts with ``dx·dy/dt``).
    step
        ``step(theta, h, p, e, ctx) -> (h_new, fluxes)``: ``theta`` and ``h`` map names to
        float32 arrays over active cells ``(nac,)``; ``p`` and ``e`` are this step's
        precipitation and potential evapotranspiration (mm per step, NaN or negative where
        missing); ``ctx`` is a :class:`StepContext`. Returns the new states and a dict holding
        every name of ``fluxes`` and of ``diagnostics``.
    diagnostics
        Extra keys of the fluxes dict that smash does not have (solver diagnostics); they are
        not fluxes and carry no gradient.
    nn_inputs, nn_outputs
        Hybrid structures only: the inputs of the flux-correction network, in smash's order
        (states at the start of the step, then ``pn``, ``en`` in mm per step), and what each
        of its outputs corrects. The weights come in ``StepContext.nn_parameters``.
    parent
        Hybrid structures only: the conceptual structure the network corrects (``gr4`` for
        ``gr4_mlp``); with zero weights the hybrid equals it exactly.
    sources
        The non-physical sources and sinks the step reports (keys of :data:`SOURCES`), each in
        mm per step, positive where water is created. With them the water balance of every
        step closes: the change of the stores equals rain − evaporation − outflow + exchange
        + correction + the sum of these terms, to float32 round-off.
    """

    name: str
    parameters: tuple[str, ...]
    states: tuple[str, ...]
    fluxes: tuple[str, ...]
    step: Callable = field(repr=False)
    diagnostics: tuple[str, ...] = ()
    nn_inputs: tuple[str, ...] = ()
    nn_outputs: tuple[str, ...] = ()
    parent: str | None = None
    sources: tuple[str, ...] = ()

    @property
    def hybrid(self) -> bool:
        """True for a structure with a flux-correction network (gr4_mlp, gr4_ude, ...)."""
        return bool(self.nn_outputs)


#: The non-physical sources and sinks a step can report (mm per step, positive creates water),
#: with what each one is. :func:`hybridhydro.water_balance` names every one of them beside the
#: residual; none of them is ever used to excuse the residual.
SOURCES: dict[str, str] = {
    "source_impervious": (
        "neutralised rain removed by the cell's impervious fraction (smash scales pn by 1 - imperviousness "
        "and the rest goes nowhere): a sink"
    ),
    "source_floor": (
        "water added by a transfer store's floor level (1e-6 of its capacity, smash's rule) where a negative "
        "exchange would empty the store"
    ),
    "source_steady": (
        "outflow a transfer store releases with no inflow where precipitation is missing (smash's steady-outflow "
        "branch keeps the level)"
    ),
    "source_solver": (
        "water created (+) or lost (-) by an implicit ODE step whose equation is not solved: Newton clipped "
        "to the store's bounds, stopped unconverged, or the step has no root in the feasible set"
    ),
    "source_clip": (
        "water created (+) or lost (-) by clipping an explicit ODE step's levels to [0, 1] (an unstable step: "
        "take more sub-steps)"
    ),
}


@dataclass(frozen=True)
class SnowModule:
    """A snow module (smash's ``ssn``): it runs before the hydrological module.

    ``step(theta, h, p, snow, temp, ctx) -> (h_new, p_new, fluxes)``: ``snow`` (mm per step)
    and ``temp`` (degC) may be ``None`` (no snow forcing: nothing melts); ``p_new`` is the
    precipitation with the melt added, to be passed to the hydrological module.
    """

    name: str
    parameters: tuple[str, ...]
    states: tuple[str, ...]
    fluxes: tuple[str, ...]
    step: Callable = field(repr=False)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StepContext:
    """What a step needs besides parameters, states and forcing.

    Attributes
    ----------
    dt
        Time step (s). Static: changing it recompiles.
    imperviousness
        Impervious fraction of each active cell in [0, 1], shape ``(nac,)`` or a scalar.
    nn_parameters
        Weights of the flux-correction network of a hybrid structure (smash's layout, see
        :mod:`hybridhydro.structures._mlp`); ``None`` for the conceptual structures.
    ode_solver
        How gr4_ode and gr4_ude take a step (static): ``"newton"`` (smash's implicit Euler and
        Newton, the default), ``"implicit"`` (fully implicit: the network inside the residual,
        gradients by the implicit function theorem), ``"heun"`` or ``"rk4"`` (explicit, with
        ``ode_substeps`` sub-steps). See :mod:`hybridhydro.structures._ode`.
    ode_substeps
        Sub-steps per time step of the explicit solvers (static).
    """

    dt: float = field(default=3600.0, metadata=dict(static=True))
    imperviousness: jax.Array | float = 0.0
    nn_parameters: dict | None = None
    ode_solver: str = field(default="newton", metadata=dict(static=True))
    ode_substeps: int = field(default=4, metadata=dict(static=True))


def missing_forcing(*forcings):
    """True on cells where any forcing is missing: NaN (our convention) or negative (smash's -99)."""
    ok = jnp.ones(jnp.shape(forcings[0]), dtype=bool)
    for f in forcings:
        ok = ok & (f >= 0.0)  # NaN >= 0 is False
    return ~ok


def zero_where(mask, x):
    """``x`` with 0 where ``mask``: the first half of the double-where trick.

    The branch that the mask discards still gets differentiated; feeding it NaN forcing would
    make every gradient NaN (0 · NaN), so it is fed zeros instead.
    """
    return jnp.where(mask, jnp.zeros_like(x), x)


def clean_forcing(p, e):
    """Missing mask of a step's forcing, and the forcing with zeros where missing.

    Returns ``missing, p, e``. Every structure computes on the cleaned forcing and then
    applies its own missing-forcing rule with ``jnp.where``.
    """
    missing = missing_forcing(p, e)
    return missing, zero_where(missing, jnp.asarray(p)), zero_where(missing, jnp.asarray(e))
