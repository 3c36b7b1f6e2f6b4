"""Automatic interception capacity ``ci`` (spec 4.1.1), as smash sets it at model build."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ._module import clean_forcing
from ._operators import interception

#: Candidate capacities (mm): 0.1, 0.2, ..., 2.9, each computed as float32(0.1)·i like smash,
#: so that the chosen value is bit-identical (0.90000004, not 0.9).
CI_CANDIDATES = np.float32(0.1) * np.arange(1, 30, dtype=np.float32)


def day_index(times) -> tuple[np.ndarray, int]:
    """Index of the calendar day of each step-END timestamp, and the number of days."""
    days = np.asarray(times, dtype="datetime64[ns]").astype("datetime64[D]")
    _, index = np.unique(days, return_inverse=True)
    return index.astype(np.int32), int(index.max()) + 1 if index.size else 0


@partial(jax.jit, static_argnames="ndays")
def _adjust(p, e, day, ndays):
    p_ok, e_ok = p >= 0.0, e >= 0.0
    p_day = jax.ops.segment_sum(jnp.where(p_ok, p, 0.0), day, ndays)
    e_day = jax.ops.segment_sum(jnp.where(e_ok, e, 0.0), day, ndays)
    target = jnp.sum(jnp.minimum(p_day, e_day), axis=0)

    def total_interception(ci):
        def body(carry, pe):
            hi, total = carry
            # a step with missing forcing is fed zeros: ei = 0 and hi is kept, no mask needed
            _, p_t, e_t = clean_forcing(*pe)
            ei, _, _, hi_new = interception(p_t, e_t, ci, hi)
            return (hi_new, total + ei), None

        zero = jnp.zeros(p.shape[1:], p.dtype)
        (_, total), _ = jax.lax.scan(body, (zero, zero), (p, e))
        return total

    totals = jax.vmap(total_interception)(jnp.asarray(CI_CANDIDATES, p.dtype))  # (29, nac)
    best = jnp.argmin(jnp.abs(totals - target[None, :]), axis=0)  # first minimum: smallest ci
    return jnp.asarray(CI_CANDIDATES, p.dtype)[best]


def adjust_interception(p, e, times, dt: float):
    """Interception capacity of each cell that matches daily interception (spec 4.1.1).

    For each cell, picks the ``ci`` in {0.1, ..., 2.9} mm whose interception store, run over
    the whole period from an empty store, evaporates in total the amount closest to
    Σ_days min(P_day, E_day), the daily totals of the non-missing forcing.

    Parameters
    ----------
    p, e
        Precipitation and potential evapotranspiration, shape ``(time, nac)`` (mm per step;
        NaN or negative where missing).
    times
        End timestamp of each step, shape ``(time,)`` (anything ``numpy.datetime64`` accepts);
        a step belongs to the calendar day of its end.
    dt
        Time step (s). At daily or longer steps smash keeps ``ci = 1e-6`` and so does this.

    Returns
    -------
    ci
        Interception capacity (mm), shape ``(nac,)``, float32.
    """
    p = jnp.asarray(p, jnp.float32)
    e = jnp.asarray(e, jnp.float32)
    if p.ndim != 2 or p.shape != e.shape:
        raise ValueError(f"adjust_interception: p and e must both be (time, nac); got {p.shape} and {e.shape}")
    if len(times) != p.shape[0]:
        raise ValueError(f"adjust_interception: {len(times)} timestamps for {p.shape[0]} time steps")
    if dt >= 86400.0:
        return jnp.full(p.shape[1:], 1e-6, jnp.float32)
    day, ndays = day_index(times)
    return _adjust(p, e, jnp.asarray(day), ndays)
