"""Default values, optimisation bounds and feasible domains of parameters and states (spec 2.1, 2.2).

Names are smash's. Defaults and bounds are the smash 1.3 ones. The lr routing lag ``llr``
depends on the time step, so it is not in :data:`PARAMETER_DEFAULTS`: use
:func:`parameter_default` or :func:`parameter_defaults`, which take ``dt``.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import jax.numpy as jnp

_INF = math.inf

#: Default parameter values that do not depend on dt (units in the spec, table 2.1).
PARAMETER_DEFAULTS = MappingProxyType(
    {
        "kmlt": 1.0,  # mm degC-1 per step
        "ci": 1e-6,  # mm; replaced by adjust_interception at sub-daily steps
        "cp": 200.0,  # mm
        "ct": 500.0,  # mm
        "alpha1": 3e-4,
        "alpha2": 1e-3,
        "cl": 500.0,  # mm
        "be": 10.0,  # mm
        "kexc": 0.0,  # mm per step
        "aexc": 0.1,
        "ca": 200.0,  # mm
        "cc": 500.0,  # mm
        "kb": 1.0,
        "b": 0.1,
        "cusl": 100.0,
        "cmsl": 500.0,
        "cbsl": 2000.0,
        "ks": 20.0,
        "pbc": 10.0,
        "ds": 1e-2,
        "dsm": 10.0,
        "ws": 0.8,
        "akw": 5.0,
        "bkw": 0.6,
    }
)

#: Units of every parameter (spec table 2.1), UDUNITS spellings; the token "dt" is one time step
#: (``hybridhydro.io.cf.step_units(units, dt)`` writes it as the step: "mm dt-1" is "mm h-1" at
#: hourly steps). "K-1" is per degree of temperature difference (°C or K alike).
PARAMETER_UNITS = MappingProxyType(
    {
        "kmlt": "mm K-1 dt-1", "ci": "mm", "cp": "mm", "ct": "mm", "alpha1": "dt mm-1", "alpha2": "1",
        "cl": "mm", "be": "mm", "kexc": "mm dt-1", "aexc": "1", "ca": "mm", "cc": "mm", "kb": "1", "b": "1",
        "cusl": "mm", "cmsl": "mm", "cbsl": "mm", "ks": "mm dt-1", "pbc": "1", "ds": "1", "dsm": "mm dt-1",
        "ws": "1", "llr": "min", "akw": "1", "bkw": "1",
    }
)

#: Default optimisation bounds (low, high) of every parameter.
PARAMETER_BOUNDS = MappingProxyType(
    {
        "kmlt": (1e-6, 10.0),
        "ci": (1e-6, 100.0),
        "cp": (1e-6, 1000.0),
        "ct": (1e-6, 1000.0),
        "alpha1": (1e-6, 5e-4),
        "alpha2": (1e-5, 1e-3),
        "cl": (1e-6, 1000.0),
        "be": (1e-3, 20.0),
        "kexc": (-50.0, 50.0),
        "aexc": (1e-6, 0.999999),
        "ca": (1e-6, 1000.0),
        "cc": (1e-6, 1000.0),
        "kb": (1e-6, 4.0),
        "b": (1e-3, 0.8),
        "cusl": (10.0, 500.0),
        "cmsl": (100.0, 2000.0),
        "cbsl": (100.0, 2000.0),
        "ks": (1.0, 1e5),
        "pbc": (1.0, 30.0),
        "ds": (1e-6, 0.999999),
        "dsm": (1e-3, 1e5),
        "ws": (1e-6, 0.999999),
        "llr": (1e-6, 1000.0),
        "akw": (1e-3, 50.0),
        "bkw": (1e-3, 1.0),
    }
)

#: Default initial states (normalised levels, except ``he``, ``hs`` and ``hlr`` in mm).
STATE_DEFAULTS = MappingProxyType(
    {
        "hs": 1e-6,
        "hi": 1e-2,
        "hp": 1e-2,
        "ht": 1e-2,
        "hl": 1e-2,
        "he": -100.0,
        "ha": 1e-2,
        "hc": 1e-2,
        "hcl": 1e-2,
        "husl": 1e-2,
        "hmsl": 1e-2,
        "hbsl": 1e-6,
        "hlr": 1e-6,
    }
)

#: Default optimisation bounds (low, high) of every initial state.
STATE_BOUNDS = MappingProxyType(
    {
        "hs": (1e-6, 1e3),
        "hi": (1e-6, 0.999999),
        "hp": (1e-6, 0.999999),
        "ht": (1e-6, 0.999999),
        "hl": (1e-6, 0.999999),
        "he": (-1000.0, 0.0),
        "ha": (1e-6, 0.999999),
        "hc": (1e-6, 0.999999),
        "hcl": (1e-6, 0.999999),
        "husl": (1e-6, 0.999999),
        "hmsl": (1e-6, 0.999999),
        "hbsl": (1e-6, 0.999999),
        "hlr": (1e-6, 1000.0),
    }
)

_POSITIVE = (0.0, _INF)
_UNIT = (0.0, 1.0)
#: Feasible domain (open interval) of every parameter and state: values outside are rejected.
FEASIBLE = MappingProxyType(
    {
        **{name: _POSITIVE for name in PARAMETER_BOUNDS if name not in ("kexc", "aexc")},
        "kexc": (-_INF, _INF),
        "aexc": _UNIT,
        **{name: _UNIT for name in ("hi", "hp", "ht", "hl", "ha", "hc", "hcl", "husl", "hmsl", "hbsl")},
        "he": (-_INF, _INF),
        "hs": _POSITIVE,
        "hlr": _POSITIVE,
    }
)


def parameter_default(name: str, dt: float = 3600.0) -> float:
    """Default value of parameter ``name`` at time step ``dt`` (s).

    Only ``llr`` (lr routing lag, minutes) depends on dt: 5·dt/3600, so 5 at hourly steps.
    """
    if name == "llr":
        return 5.0 * dt / 3600.0
    try:
        return PARAMETER_DEFAULTS[name]
    except KeyError:
        raise ValueError(f"unknown parameter {name!r}; known: {', '.join([*PARAMETER_DEFAULTS, 'llr'])}") from None


def parameter_defaults(dt: float = 3600.0) -> dict[str, float]:
    """Every parameter's default at time step ``dt`` (s), ``llr`` included."""
    return {**PARAMETER_DEFAULTS, "llr": parameter_default("llr", dt)}


def default_parameters(module, nac: int, dt: float = 3600.0) -> dict:
    """Uniform default parameters of ``module`` (a Hydrological or Snow module) on ``nac`` cells, float32."""
    return {name: jnp.full((nac,), parameter_default(name, dt), dtype=jnp.float32) for name in module.parameters}


def default_states(module, nac: int) -> dict:
    """Uniform default initial states of ``module`` on ``nac`` cells, float32."""
    return {name: jnp.full((nac,), STATE_DEFAULTS[name], dtype=jnp.float32) for name in module.states}
