"""Snow: smash's degree-day module ``ssn`` and its precipitation partitioning (spec 4.8)."""

from __future__ import annotations

import jax.numpy as jnp

from ._module import StepContext


def _snow_ok(snow, temp):
    """Cells where both snow (mm, ≥ 0) and temperature (degC, finite, above smash's -99) are given."""
    return (snow >= 0.0) & jnp.isfinite(temp) & (temp > -99.0)


def ssn_step(theta, h, p, snow, temp, ctx: StepContext):
    """Degree-day snow store ``ssn``: accumulate snowfall, melt ``kmlt·T``, add the melt to P.

    Parameters
    ----------
    theta
        ``{"kmlt": (nac,)}``, melt coefficient (mm degC-1 per step).
    h
        ``{"hs": (nac,)}``, snow pack (mm water equivalent).
    p
        Precipitation (mm per step; NaN where missing).
    snow, temp
        Snowfall (mm per step) and air temperature (degC), or ``None`` when the basin has no
        snow forcing: then nothing accumulates or melts.
    ctx
        Step context (unused: the melt law does not depend on dt).

    Returns
    -------
    h_new, p_new, fluxes
        New snow pack, precipitation plus melt (what the hydrological module receives), and
        ``{"mlt": melt}`` (mm per step).

    Notes
    -----
    Where snow or temperature is missing the pack is kept and nothing melts. Where P is missing
    it stays missing (NaN): smash would add the melt to its -99 marker instead.
    """
    hs = h["hs"]
    if snow is None or temp is None:
        return dict(h), p, {"mlt": jnp.zeros_like(hs)}
    ok = _snow_ok(snow, temp)
    snow = jnp.where(ok, snow, 0.0)  # double-where: NaN forcing must not reach any gradient
    temp = jnp.where(ok, temp, 0.0)
    pack = hs + snow
    mlt = jnp.where(ok, jnp.minimum(pack, jnp.maximum(0.0, theta["kmlt"] * temp)), 0.0)
    return {"hs": jnp.where(ok, pack - mlt, hs)}, p + mlt, {"mlt": mlt}


def partition_precipitation(prcp, snow, temp):
    """Split total precipitation into rain and snow by temperature (smash's ``prcp_partitioning``).

    Parameters
    ----------
    prcp, snow
        Rain and snow depths (mm per step); snow is added to the total where it is ≥ 0.
    temp
        Air temperature (degC); where missing (NaN or ≤ -99) everything is rain.

    Returns
    -------
    rain, snow
        ``lr·P_T`` and ``(1 − lr)·P_T`` with the liquid ratio ``lr = 1 − 1/(1 + exp(2.5·T − 1))``.
    """
    total = prcp + jnp.where(snow >= 0.0, snow, 0.0)
    has_temp = jnp.isfinite(temp) & (temp > -99.0)
    t = jnp.where(has_temp, temp, 0.0)
    liquid = jnp.where(has_temp, 1.0 - 1.0 / (1.0 + jnp.exp(2.5 * t - 1.0)), 1.0)
    return liquid * total, (1.0 - liquid) * total
