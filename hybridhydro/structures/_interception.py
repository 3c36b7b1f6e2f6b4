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


#: Cells per block of the candidate runs: 29 candidates x 1024 cells of float32 carry stay in
#: a CPU core's cache across the time loop, instead of streaming (29, nac) arrays every step.
_CELL_BLOCK = 1024


@partial(jax.jit, static_argnames=("ndays", "block"))
def _adjust(p, e, day, ndays, block=_CELL_BLOCK):
    p_ok, e_ok = p >= 0.0, e >= 0.0
    p_day = jax.ops.segment_sum(jnp.where(p_ok, p, 0.0), day, ndays)
    e_day = jax.ops.segment_sum(jnp.where(e_ok, e, 0.0), day, ndays)
    target = jnp.sum(jnp.minimum(p_day, e_day), axis=0)
    candidates = jnp.asarray(CI_CANDIDATES, p.dtype)

    def total_interception(ci, p, e):
        def body(carry, pe):
            hi, total = carry
            # a step with missing forcing is fed zeros: ei = 0 and hi is kept, no mask needed
            _, p_t, e_t = clean_forcing(*pe)
            ei, _, _, hi_new = interception(p_t, e_t, ci, hi)
            return (hi_new, total + ei), None

        zero = jnp.zeros(p.shape[1:], p.dtype)
        (_, total), _ = jax.lax.scan(body, (zero, zero), (p, e))
        return total

    # The cells are independent: run the candidates block of cells by block of cells (the
    # same float32 operations per cell, so the same totals). Padding cells get zero forcing.
    ntime, nac = p.shape
    block = max(1, min(block, nac))  # a small basin is one block, unpadded
    nblock = -(-nac // block)
    pad = nblock * block - nac

    def blocks(x):
        x = jnp.pad(x, ((0, 0), (0, pad)))
        return x.reshape(ntime, nblock, block).transpose(1, 0, 2)

    def run_block(pe):
        return jax.vmap(total_interception, in_axes=(0, None, None))(candidates, *pe)  # (29, block)

    totals = jax.lax.map(run_block, (blocks(p), blocks(e)))  # (nblock, 29, block)
    totals = totals.transpose(1, 0, 2).reshape(len(CI_CANDIDATES), nblock * block)[:, :nac]
    best = jnp.argmin(jnp.abs(totals - target[None, :]), axis=0)  # first minimum: smallest ci
    return candidates[best]


def adjust_interception(p, e, times, dt: float):
    """Interception capacity of each cell that matches daily interception (spec 4.1.1).

    For each cell, picks the ``ci`` in {0.1, ..., 2.9} mm whose interception store, run over
    the whole period from an empty store, evaporates in total the amount closest to
    Σ_days min(P_day, E_day), the daily totals of the non-missing forcing.

    The 29 candidate runs go block of cells by block of cells (1024 cells, so that their
    state stays in the CPU caches; ~1.3x faster on France than all cells at once): each
    cell sees the same float32 operations either way, so the choice is unchanged.

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
