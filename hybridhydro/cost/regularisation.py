"""Regularisation ``J_reg`` and the total cost ``J = J_obs + wjreg·J_reg`` (spec 9, 9.2).

Owns :data:`REGULARISATIONS`, :func:`prior_term`, :func:`smoothing_term` (``smoothing``, and
``hard-smoothing`` without the background), :func:`regularisation_cost` and
:func:`total_cost`. Pure JAX, float32 and differentiable; units are those of the controls and
maps regularised.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from .components import resolve_weights
from .metrics import lookup

__all__ = ["REGULARISATIONS", "prior_term", "regularisation_cost", "smoothing_term", "total_cost"]

REGULARISATIONS = ("prior", "smoothing", "hard-smoothing")


# ------------------------------------------------------------------------------ regularisation


def prior_term(controls, background):
    """``prior`` regularisation: ``Σ_i (x_i - x_i^bkg)²`` over every leaf of a pytree.

    ``controls`` and ``background`` have the same tree structure (e.g. the raw control
    parameters and their first guess); units are those of the controls.
    """
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, b: jnp.sum((x - b) ** 2), controls, background))
    return sum(leaves, jnp.zeros((), jnp.float32))


def smoothing_term(field, background=None, active=None):
    """``smoothing`` (``hard-smoothing`` when ``background`` is None) regularisation of one map.

    With ``m = field - background`` on the 2-D grid (physical units, no normalisation)::

        Σ_active (m[r+1,c] - 2m[r,c] + m[r-1,c])² + (m[r,c+1] - 2m[r,c] + m[r,c-1])²

    A neighbour outside the grid or inactive is replaced by the centre cell. Inactive cells may
    hold NaN: they are masked before any arithmetic.

    Parameters
    ----------
    field, background
        ``(y, x)`` maps, or ``(..., y, x)`` stacks (summed over the leading axes).
    active
        ``(y, x)`` boolean active-cell mask; ``None``: every cell.
    """
    field = jnp.asarray(field)
    if field.ndim < 2:
        raise ValueError(f"smoothing_term needs a (y, x) map, got shape {field.shape}")
    active = jnp.ones(field.shape[-2:], bool) if active is None else jnp.asarray(active, bool)
    if active.shape != field.shape[-2:]:
        raise ValueError(f"active {active.shape} does not match the map {field.shape[-2:]}")
    return _smoothing(field, None if background is None else jnp.asarray(background), active)


@jax.jit
def _smoothing(field, background, active):
    m = field if background is None else field - background
    m = jnp.where(active, m, 0.0)
    lead = [(0, 0)] * (m.ndim - 2)
    mp = jnp.pad(m, lead + [(1, 1), (1, 1)])
    ap = jnp.pad(active, [(1, 1), (1, 1)])
    ny, nx = active.shape

    def neighbour(dr, dc):
        val = mp[..., 1 + dr : 1 + dr + ny, 1 + dc : 1 + dc + nx]
        act = ap[1 + dr : 1 + dr + ny, 1 + dc : 1 + dc + nx]
        return jnp.where(act, val, m)

    d_row = neighbour(1, 0) - 2.0 * m + neighbour(-1, 0)
    d_col = neighbour(0, 1) - 2.0 * m + neighbour(0, -1)
    return jnp.sum(jnp.where(active, d_row**2 + d_col**2, 0.0))


def regularisation_cost(
    components: str | Sequence[str] = ("prior",),
    component_weights=None,
    *,
    controls=None,
    background=None,
    fields: Mapping[str, Any] | None = None,
    background_fields: Mapping[str, Any] | None = None,
    active=None,
):
    """``J_reg = Σ_c w_c·j_c`` over ``prior``, ``smoothing``, ``hard-smoothing`` (spec 9.2).

    Parameters
    ----------
    components
        Names in :data:`REGULARISATIONS`.
    component_weights
        One non-negative weight per component; ``None``: 1 each.
    controls, background
        Pytrees for ``prior`` (:func:`prior_term`).
    fields, background_fields
        ``name -> (y, x)`` maps of the optimised parameters/states and their first guess, for
        ``smoothing`` (both) and ``hard-smoothing`` (``fields`` only); summed over the names.
    active
        ``(y, x)`` active-cell mask.
    """
    names = (components,) if isinstance(components, str) else tuple(components)
    for name in names:
        lookup({r: r for r in REGULARISATIONS}, name, "regularisation")
    if component_weights is None:
        w = jnp.ones((len(names),), jnp.float32)
    else:
        w, _ = resolve_weights(component_weights, len(names), "regularisation_weights", allow_quantile=False)
    total = jnp.zeros((), jnp.float32)
    for c, name in enumerate(names):
        if name == "prior":
            if controls is None or background is None:
                raise ValueError("regularisation 'prior' needs controls= and background=")
            j = prior_term(controls, background)
        else:
            if not fields:
                raise ValueError(f"regularisation {name!r} needs fields= (name -> (y, x) map)")
            if name == "smoothing":
                missing = sorted(set(fields) - set(background_fields or {}))
                if missing:
                    raise ValueError(f"regularisation 'smoothing' needs background_fields for {missing}")
                j = sum(smoothing_term(fields[k], background_fields[k], active) for k in fields)
            else:
                j = sum(smoothing_term(fields[k], None, active) for k in fields)
        total = total + w[c] * j
    return total


def total_cost(j_obs, j_reg=0.0, wjreg: float = 0.0):
    """``J = J_obs + wjreg·J_reg`` (spec 9)."""
    return j_obs + wjreg * j_reg
