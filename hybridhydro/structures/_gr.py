"""The algebraic GR structures of smash: gr4, gr5, gr6, grc, grd, loieau (spec 4.2, 4.3).

Each ``*_step`` has the signature of :attr:`HydrologicalModule.step`: per active cell, one time
step, fluxes in mm per step. They differ only in how they assemble the shared operators of
:mod:`._operators`.

Missing forcing (a cell whose P or E is NaN or negative): the interception and production
stores keep their level and every flux into the routing part is zero (no effective rain,
no percolation, no exchange). Then, as in smash (checked against it):

* where P is missing, each power-law transfer store takes its "steady outflow" branch: its
  level is kept (to round-off) and it releases the outflow that a steady inflow would feed;
  a store full to round-off (h = 1 in float32) then releases an infinite outflow, in smash
  as here;
* where P is given but E is missing, the transfer stores drain normally with no inflow;
* gr6's exponential store drains in both cases.

Every flux reported for such a cell is zero except the stores' outflows and ``qt`` (smash
leaves the other fluxes of such a cell unset).
"""

from __future__ import annotations

import jax.numpy as jnp

from ._module import StepContext, clean_forcing
from ._operators import (
    exchange_power,
    exchange_threshold,
    exponential_store,
    interception,
    interception_without_store,
    percolation_constant,
    power_store,
    production,
)

# grc and grd call the production store with this percolation constant: percolation vanishes.
_BETA_NO_PERCOLATION = 1000.0


def _soil(pn, en, cp, hp, beta, ctx: StepContext, missing):
    """Production store (PR) with the missing-forcing rule: level kept, nothing leaves."""
    pr, perc, ps, es, hp_new, pn = production(pn, en, cp, hp, beta, imperviousness=ctx.imperviousness)
    zero = jnp.zeros_like(pr)
    return (
        jnp.where(missing, zero, pr),
        jnp.where(missing, zero, perc),
        jnp.where(missing, zero, ps),
        jnp.where(missing, zero, es),
        jnp.where(missing, hp, hp_new),
        jnp.where(missing, zero, pn),
    )


def _rain_missing(p):
    """Where P itself is missing: the transfer stores' steady-outflow branch is keyed on P alone."""
    return ~(jnp.asarray(p) >= 0.0)


def _gr_front(theta, h, p, e, ctx: StepContext, beta):
    """Interception store (I) then production (PR): the part gr4, gr5, gr6 and grc share."""
    missing, p, e = clean_forcing(p, e)
    ei, pn, en, hi = interception(p, e, theta["ci"], h["hi"])
    pr, perc, ps, es, hp, pn = _soil(pn, en, theta["cp"], h["hp"], beta, ctx, missing)
    # ei, pn and en are zero where missing already: the forcing fed to the store is zero there.
    return missing, dict(pn=pn, en=en, pr=pr, perc=perc, ps=ps, es=es), dict(hi=hi, hp=hp)


def _gr4_like(theta, h, p, e, ctx: StepContext, exchange):
    """gr4 and gr5: they differ only in the exchange law."""
    missing, fx, h_new = _gr_front(theta, h, p, e, ctx, percolation_constant(ctx.dt))
    lexc = jnp.where(missing, 0.0, exchange(theta, h["ht"]))
    runoff = fx["pr"] + fx["perc"]
    prr = 0.9 * runoff + lexc
    prd = 0.1 * runoff
    qr, ht = power_store(prr, theta["ct"], h["ht"], 5.0, _rain_missing(p))
    qd = jnp.maximum(0.0, prd + lexc)
    return {**h_new, "ht": ht}, dict(**fx, lexc=lexc, prr=prr, prd=prd, qr=qr, qd=qd, qt=qr + qd)


def gr4_step(theta, h, p, e, ctx: StepContext):
    """gr4 (spec 4.2): interception, production, GR4 exchange (X4), transfer store (T5)."""
    return _gr4_like(theta, h, p, e, ctx, lambda th, ht: exchange_power(th["kexc"], ht))


def gr5_step(theta, h, p, e, ctx: StepContext):
    """gr5 (spec 4.3): gr4 with the threshold exchange (X5)."""
    return _gr4_like(theta, h, p, e, ctx, lambda th, ht: exchange_threshold(th["kexc"], th["aexc"], ht))


def gr6_step(theta, h, p, e, ctx: StepContext):
    """gr6 (spec 4.3): gr5 with 40 % of the routed water through an exponential store.

    The exchange is added to each of the three branches (transfer, exponential, direct).
    """
    missing, fx, h_new = _gr_front(theta, h, p, e, ctx, percolation_constant(ctx.dt))
    lexc = jnp.where(missing, 0.0, exchange_threshold(theta["kexc"], theta["aexc"], h["ht"]))
    runoff = fx["pr"] + fx["perc"]
    prr = 0.6 * 0.9 * runoff + lexc
    pre = 0.4 * 0.9 * runoff + lexc
    prd = 0.1 * runoff
    qr, ht = power_store(prr, theta["ct"], h["ht"], 5.0, _rain_missing(p))
    # Missing forcing: pre is 0 there, and the exponential store drains (smash does so too).
    qe, he = exponential_store(pre, theta["be"], h["he"])
    qd = jnp.maximum(0.0, prd + lexc)
    fluxes = dict(**fx, lexc=lexc, prr=prr, prd=prd, pre=pre, qr=qr, qd=qd, qe=qe, qt=qr + qe + qd)
    return {**h_new, "ht": ht, "he": he}, fluxes


def grc_step(theta, h, p, e, ctx: StepContext):
    """grc (spec 4.3): production without percolation, GR4 exchange, fast and slow transfer stores.

    The exchange goes to the fast store and the direct branch, not to the slow store.
    """
    missing, fx, h_new = _gr_front(theta, h, p, e, ctx, _BETA_NO_PERCOLATION)
    lexc = jnp.where(missing, 0.0, exchange_power(theta["kexc"], h["ht"]))
    runoff = fx["pr"] + fx["perc"]
    prr = 0.54 * runoff + lexc
    prl = 0.36 * runoff
    prd = 0.1 * runoff
    qr, ht = power_store(prr, theta["ct"], h["ht"], 5.0, _rain_missing(p))
    ql, hl = power_store(prl, theta["cl"], h["hl"], 5.0, _rain_missing(p))
    qd = jnp.maximum(0.0, prd + lexc)
    fluxes = dict(**fx, lexc=lexc, prr=prr, prd=prd, prl=prl, qr=qr, qd=qd, ql=ql, qt=qr + ql + qd)
    return {**h_new, "ht": ht, "hl": hl}, fluxes


def grd_step(theta, h, p, e, ctx: StepContext):
    """grd (spec 4.3): no interception store, production without percolation, one transfer store."""
    rain_missing = _rain_missing(p)
    missing, p, e = clean_forcing(p, e)
    ei, pn, en = interception_without_store(p, e)
    pr, perc, ps, es, hp, pn = _soil(pn, en, theta["cp"], h["hp"], _BETA_NO_PERCOLATION, ctx, missing)
    prr = pr + perc
    qr, ht = power_store(prr, theta["ct"], h["ht"], 5.0, rain_missing)
    fluxes = dict(ei=ei, pn=pn, en=en, pr=pr, perc=perc, ps=ps, es=es, prr=prr, qr=qr, qt=qr)
    return {"hp": hp, "ht": ht}, fluxes


def loieau_step(theta, h, p, e, ctx: StepContext):
    """loieau (spec 4.3): no interception store, production (ca, ha), quartic transfer store (cc, hc).

    The discharge is multiplied by ``kb``: kb ≠ 1 creates or removes water on purpose.
    """
    rain_missing = _rain_missing(p)
    missing, p, e = clean_forcing(p, e)
    ei, pn, en = interception_without_store(p, e)
    pr, perc, ps, es, ha, pn = _soil(pn, en, theta["ca"], h["ha"], percolation_constant(ctx.dt), ctx, missing)
    runoff = pr + perc
    prr = 0.9 * runoff
    prd = 0.1 * runoff
    qr, hc = power_store(prr, theta["cc"], h["hc"], 4.0, rain_missing)
    qd = jnp.maximum(0.0, prd)
    fluxes = dict(ei=ei, pn=pn, en=en, pr=pr, perc=perc, ps=ps, es=es, prr=prr, prd=prd, qr=qr, qd=qd)
    fluxes["qt"] = theta["kb"] * (qr + qd)
    return {"ha": ha, "hc": hc}, fluxes
