"""Shared GR operators: one function per operator, used by every structure that needs it.

Every function is pure JAX over arrays of cells (any shape, broadcast together). States
``hi, hp, ht, hl, ha, hc`` are normalised by their capacity (in [0, 1]); fluxes are depths in
mm per time step; capacities are in mm. The equations are those of smash 1.3 (spec section 4),
written here from that description.
"""

from __future__ import annotations

import jax.numpy as jnp

# Floor of the transfer stores' intermediate level: smash uses 1e-6 (its docs say 0).
_STORE_FLOOR = 1e-6


def percolation_constant(dt: float) -> float:
    """Percolation constant β of the production store for a time step ``dt`` in seconds.

    β = (9/4)·(86400/dt)^(1/4): 9/4 at daily steps (GR4J), about 4.97 at hourly steps.
    """
    return 2.25 * (86400.0 / dt) ** 0.25


def interception(p, e, ci, hi):
    """GR interception store (I).

    Parameters
    ----------
    p, e
        Precipitation and potential evapotranspiration (mm per step).
    ci
        Interception capacity (mm).
    hi
        Interception level, normalised by ``ci``.

    Returns
    -------
    ei, pn, en, hi_new
        Interception evaporation, neutralised rain and PET (mm per step), new level.
    """
    ei = jnp.minimum(e, p + hi * ci)
    pn = jnp.maximum(0.0, p - ci * (1.0 - hi) - ei)
    en = e - ei
    hi_new = hi + (p - ei - pn) / ci
    return ei, pn, en, hi_new


def interception_without_store(p, e):
    """No-store interception (I0) of grd and loieau: ``ei = min(E, P)``.

    Returns ``ei, pn, en`` in mm per step.
    """
    ei = jnp.minimum(e, p)
    return ei, jnp.maximum(0.0, p - ei), e - ei


def production(pn, en, cp, hp, beta, fp=0.0, fe=0.0, imperviousness=0.0):
    """GR production store with percolation (PR), with optional flux corrections.

    Parameters
    ----------
    pn, en
        Neutralised rain and PET (mm per step).
    cp
        Production capacity (mm).
    hp
        Production level, normalised by ``cp``.
    beta
        Percolation constant (see :func:`percolation_constant`; 1000 disables percolation).
    fp, fe
        Corrections in (-1, 1) of infiltration and evaporation (hybrid structures; 0 otherwise).
    imperviousness
        Impervious fraction of the cell in [0, 1].

    Returns
    -------
    pr, perc, ps, es, hp_new, pn_scaled
        Effective rain, percolation, infiltration, evaporation (mm per step), new level, and
        the rain after imperviousness scaling (what later operators use).
    """
    pn = (1.0 - imperviousness) * pn
    tp = jnp.tanh(pn / cp)
    ps = cp * (1.0 - hp**2) * tp / (1.0 + hp * tp)
    ps = jnp.minimum(pn, (1.0 + fp) * ps)
    te = jnp.tanh(en / cp)
    es = hp * cp * (2.0 - hp) * te / (1.0 + (1.0 - hp) * te)
    es = jnp.minimum(en, (1.0 + fe) * es) * (1.0 - imperviousness)
    hp_star = hp + (ps - es) / cp
    pr = jnp.where(pn > 0.0, pn - ps, 0.0)
    perc = hp_star * cp * (1.0 - (1.0 + (hp_star / beta) ** 4) ** -0.25)
    return pr, perc, ps, es, hp_star - perc / cp, pn


def exchange_power(kexc, ht, fl=0.0):
    """GR4 exchange (X4): ``l = (1 + fl)·kexc·ht^3.5`` (mm per step), ht at the start of the step."""
    return (1.0 + fl) * kexc * ht**3.5


def exchange_threshold(kexc, aexc, ht, fl=0.0):
    """Threshold exchange (X5) of gr5 and gr6: ``l = (1 + fl)·kexc·(ht − aexc)`` (mm per step)."""
    return (1.0 + fl) * kexc * (ht - aexc)


def power_store(inflow, capacity, h, exponent, missing):
    """Power-law transfer store (T_n): exponent 5 for GR routing stores, 4 for loieau.

    Parameters
    ----------
    inflow
        Inflow depth (mm per step).
    capacity
        Store capacity (mm).
    h
        Store level, normalised by ``capacity``.
    exponent
        ``n`` in the outflow law.
    missing
        Boolean mask of cells whose precipitation is missing this step: the store then
        releases its "steady" outflow, the outflow of a store fed so that its level comes
        back to ``h``, as smash does (requires h < 1). The level is recomputed, not copied,
        so it equals ``h`` to round-off, as in smash.

    Returns
    -------
    q, h_new
        Outflow (mm per step) and new normalised level.
    floor_source, steady_source
        The water the rules above create (mm per step): what the floor level adds where the
        inflow (a negative exchange) would take the level below it, and the steady outflow
        released with no inflow where precipitation is missing. Zero elsewhere.
    """
    # Float exponents (pow), not integer powers: they give smash's float32 values bit for bit
    # on almost every cell.
    m = exponent - 1.0
    # The steady inflow is evaluated only where missing (double-where): its formula is NaN
    # for h >= 1, which would poison the gradients of the other cells.
    hc = jnp.where(missing, h * capacity, 0.5 * capacity)
    steady = (jnp.maximum(hc, _STORE_FLOOR) ** -m - capacity**-m) ** (-1.0 / m) - hc
    inflow = jnp.where(missing, steady, inflow)
    h_raw = h + inflow / capacity
    h_star = jnp.maximum(_STORE_FLOOR, h_raw)
    h_new = ((h_star * capacity) ** -m + capacity**-m) ** (-1.0 / m) / capacity
    q = (h_star - h_new) * capacity
    floor_source = jnp.where(h_raw < _STORE_FLOOR, (_STORE_FLOOR - h_raw) * capacity, 0.0)
    steady_source = jnp.where(missing, inflow, 0.0)
    return q, h_new, floor_source, steady_source


def exponential_store(inflow, be, he):
    """gr6 exponential store (EXP): inflow and level ``he`` in mm (``he`` may be negative).

    Returns the outflow ``qe`` (mm per step) and the new level (mm).
    """
    h_star = he + inflow
    a = h_star / be
    a_mid = jnp.clip(a, -7.0, 7.0)  # keeps every branch finite so gradients stay finite too
    qe = jnp.where(
        a < -7.0,
        be * jnp.exp(jnp.minimum(a, -7.0)),
        jnp.where(a > 7.0, h_star + be / jnp.exp(jnp.maximum(a, 7.0)), be * jnp.log1p(jnp.exp(a_mid))),
    )
    return qe, h_star - qe
