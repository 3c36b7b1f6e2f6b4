"""Structure names: ``"<snow>-<hydrology>-<routing>"`` parsed and described, in one place.

A structure is smash's triple of module names (spec 2): a snow module (``zero``, ``ssn``), a
hydrological module (:data:`hybridhydro.structures.HYDROLOGICAL_MODULES` and the hybrids of
:data:`hybridhydro.structures.HYBRID_MODULES`) and a routing module (``lag0``, ``lr``, ``kw``).
:func:`parse_structure` is the only parser of such names; a :class:`Structure` lists the
parameters, states and fluxes of the whole chain in smash's order, and
:func:`calibrated_parameters` the parameters a calibration adjusts by default.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import structures
from .routing import ROUTING_FLUXES, ROUTING_PARAMETERS, ROUTING_STATES

__all__ = ["ROUTING_MODULES", "SNOW_MODULES", "Structure", "calibrated_parameters", "hydrological_modules",
           "parse_structure", "structure_label"]

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
    def label(self) -> str:
        """The name as parameter files write it: ``"gr4-lr"`` without snow (smash's full name is
        ``"zero-gr4-lr"``), the full name with a snow module (``"ssn-gr4-kw"``)."""
        return self.name.removeprefix("zero-")

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


def hydrological_modules() -> tuple[str, ...]:
    """Every hydrological module name: the conceptual ones, then the hybrids."""
    return tuple(structures.HYDROLOGICAL_MODULES) + tuple(structures.HYBRID_MODULES)


def _snow_module(name: str):
    """The snow module object of a name other than ``zero``."""
    return structures.SNOW_MODULES[name]


def parse_structure(structure: str) -> Structure:
    """Parse ``"<hydrology>-<routing>"`` or ``"<snow>-<hydrology>-<routing>"`` (e.g. ``"gr4-lr"``).

    Raises
    ------
    ValueError
        Wrong number of parts or an unknown module; the message lists the valid names.
    """
    hydro_names = hydrological_modules()
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


def structure_label(structure: str) -> str:
    """:attr:`Structure.label` of a structure name, e.g. from a result's attributes
    (``"zero-gr4-lr"`` -> ``"gr4-lr"``); a text that is no structure name comes back as it is."""
    try:
        return parse_structure(structure).label
    except ValueError:
        return str(structure)


def calibrated_parameters(structure: str | Structure) -> tuple[str, ...]:
    """The parameters a calibration adjusts by default: all of the structure's but ``ci``.

    ``ci`` (the interception capacity) is fitted to the forcing at sub-daily steps, as smash
    does when it builds a model, and kept fixed (smash's default ``calibrate`` list).
    """
    s = parse_structure(structure) if isinstance(structure, str) else structure
    return tuple(n for n in s.parameters if n != "ci")

