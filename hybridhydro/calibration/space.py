"""The optimiser's coordinates: bounded controls normalised to [0, 1] by their bounds
(smash's ``normalize`` transform), unbounded ones (network weights, multi-* coefficients) as
they are."""

from __future__ import annotations

import jax
import jax.numpy as jnp

class SearchSpace:
    """Optimiser coordinates: bounded leaves normalised to [0, 1] (``normalize``), others as they are."""

    def __init__(self, initial, low, high):
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
        return jax.tree_util.tree_map(lambda b, x, l, h: jnp.where(b, (x - l) / (h - l), x), bounded, controls, lo, hi)

    def from_opt(self, z):
        if self.low is None:
            return z
        bounded, lo, hi = self._safe()
        return jax.tree_util.tree_map(lambda b, x, l, h: jnp.where(b, l + (h - l) * x, x), bounded, z, lo, hi)

    def opt_bounds(self, z):
        """(low, high) pytrees in optimiser coordinates: [0, 1] where bounded, else the raw bounds."""
        if self.low is None:
            inf = jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.inf), z)
            return jax.tree_util.tree_map(lambda x: -x, inf), inf
        both = lambda lo, hi: jnp.isfinite(lo) & jnp.isfinite(hi)  # noqa: E731
        lo = jax.tree_util.tree_map(lambda lo, hi: jnp.where(both(lo, hi), 0.0, lo), self.low, self.high)
        hi = jax.tree_util.tree_map(lambda lo, hi: jnp.where(both(lo, hi), 1.0, hi), self.low, self.high)
        return lo, hi


