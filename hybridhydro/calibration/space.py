"""The optimiser's coordinates of the gradient optimisers (``lbfgsb``, ``adam``, ...).

Bounded controls (uniform and distributed parameter values) go through a transform
(:data:`TRANSFORMS`), unbounded ones (network weights, multi-* coefficients) stay as they are:

* ``"normalize"`` (smash's default for its gradient optimisers): ``(x − low) / (high − low)``,
  in [0, 1]; a step moves every parameter by the same share of its range.
* ``"sbs"`` (smash's transform of its step-by-step search, spec 8.3, offered here to the
  gradient optimisers too): per bound pair ``asinh(x)`` when ``low < 0`` (the exchange
  coefficient), ``logit(x)`` when ``[low, high]`` lies in [0, 1], ``log(x)`` otherwise
  (capacities and time constants); a step moves a capacity by a share of its value, which
  is how hydrologists perceive them (50 -> 100 mm is as large a change as 500 -> 1000 mm).
  The values are clipped to their bounds on the way back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: The transforms of the bounded controls (module docstring).
TRANSFORMS = ("normalize", "sbs")

_TINY = 1e-30  # below every positive lower bound of the structures (cp >= 1e-6)
_EPS = 1e-6    # logit's margin inside [0, 1]
_ZMAX = 80.0   # |z| beyond which exp and sinh overflow float32


def _sbs_kind(lo, hi):
    """0: asinh (low < 0), 1: logit ([low, high] in [0, 1]), 2: log (low >= 0)."""
    return jnp.where(lo < 0, 0, jnp.where(hi <= 1, 1, 2))


def _sbs_forward(x, lo, hi):
    kind = _sbs_kind(lo, hi)
    xl = jnp.clip(x, _EPS, 1 - _EPS)
    return jnp.where(kind == 0, jnp.arcsinh(x), jnp.where(kind == 1, jnp.log(xl / (1 - xl)),
                                                        jnp.log(jnp.maximum(x, _TINY))))


def _sbs_inverse(z, lo, hi):
    kind = _sbs_kind(lo, hi)
    zc = jnp.clip(z, -_ZMAX, _ZMAX)
    x = jnp.where(kind == 0, jnp.sinh(zc), jnp.where(kind == 1, jax.nn.sigmoid(zc), jnp.exp(zc)))
    return jnp.clip(x, lo, hi)


class SearchSpace:
    """Optimiser coordinates: bounded leaves through ``transform`` (:data:`TRANSFORMS`), others as they are."""

    def __init__(self, initial, low, high, transform: str = "normalize"):
        if transform not in TRANSFORMS:
            raise ValueError(f"transform={transform!r} is not one of {', '.join(TRANSFORMS)}")
        self.transform = transform
        self.low, self.high = low, high
        if low is None:
            self.mask = jax.tree_util.tree_map(lambda x: False, initial)
        else:
            full_low = {**jax.tree_util.tree_map(lambda x: jnp.full_like(x, -jnp.inf), initial), **low}
            full_high = {**jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.inf), initial), **high}
            self.low, self.high = full_low, full_high

    def _safe(self):
        """Bounds with 0 and 1 where a leaf is unbounded (double-where: no inf in any gradient)."""
        bounded = jax.tree_util.tree_map(lambda lo, hi: jnp.isfinite(lo) & jnp.isfinite(hi), self.low, self.high)
        lo = jax.tree_util.tree_map(lambda b, x: jnp.where(b, x, 0.0), bounded, self.low)
        hi = jax.tree_util.tree_map(lambda b, x: jnp.where(b, x, 1.0), bounded, self.high)
        return bounded, lo, hi

    def to_opt(self, controls):
        if self.low is None:
            return controls
        bounded, lo, hi = self._safe()
        if self.transform == "sbs":
            return jax.tree_util.tree_map(lambda b, x, l, h: jnp.where(b, _sbs_forward(x, l, h), x), bounded, controls, lo, hi)
        return jax.tree_util.tree_map(lambda b, x, l, h: jnp.where(b, (x - l) / (h - l), x), bounded, controls, lo, hi)

    def from_opt(self, z):
        if self.low is None:
            return z
        bounded, lo, hi = self._safe()
        if self.transform == "sbs":
            return jax.tree_util.tree_map(lambda b, x, l, h: jnp.where(b, _sbs_inverse(x, l, h), x), bounded, z, lo, hi)
        return jax.tree_util.tree_map(lambda b, x, l, h: jnp.where(b, l + (h - l) * x, x), bounded, z, lo, hi)

    def opt_bounds(self, z):
        """(low, high) pytrees in optimiser coordinates: [0, 1] where bounded, else the raw bounds."""
        if self.low is None:
            inf = jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.inf), z)
            return jax.tree_util.tree_map(lambda x: -x, inf), inf
        both = lambda lo, hi: jnp.isfinite(lo) & jnp.isfinite(hi)  # noqa: E731
        if self.transform == "sbs":
            bounded, slo, shi = self._safe()
            lo = jax.tree_util.tree_map(lambda b, l, h, raw: jnp.where(b, _sbs_forward(l, l, h), raw), bounded, slo, shi, self.low)
            hi = jax.tree_util.tree_map(lambda b, l, h, raw: jnp.where(b, _sbs_forward(h, l, h), raw), bounded, slo, shi, self.high)
            return lo, hi
        lo = jax.tree_util.tree_map(lambda lo, hi: jnp.where(both(lo, hi), 0.0, lo), self.low, self.high)
        hi = jax.tree_util.tree_map(lambda lo, hi: jnp.where(both(lo, hi), 1.0, hi), self.low, self.high)
        return lo, hi


