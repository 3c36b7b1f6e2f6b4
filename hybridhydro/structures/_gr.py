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

Hybrid structures (``gr4_mlp`` ... ``loieau_mlp``, spec 4.4) run the same steps with
``hybrid`` set to the names of the network's outputs: after interception, the flux-correction network of ``ctx.nn_parameters`` maps
each cell's states at the start of the step and its ``pn``, ``en`` to corrections
f ∈ (−1, 1), which scale infiltration and evaporation ((1 + f)·ps, (1 + f)·es), move water
between the routed and direct branches (and between gr6's and grc's two stores) and scale the
exchange ((1 + f)·l). The splits still sum to the runoff, so production and splits conserve
water; only the exchange creates or removes it, as in the parent. With zero weights f = 0 and
every hybrid gives its parent's values exactly. Where forcing is missing, f = 0. The
corrections are returned with the fluxes, as ``correction_<output name>``.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._mlp import mlp
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


def _soil(pn, en, cp, hp, beta, ctx: StepContext, missing, fp=0.0, fe=0.0):
    """Production store (PR) with the missing-forcing rule: level kept, nothing leaves.

    Returns ``pr, perc, ps, es, hp_new, pn`` (pn after imperviousness) and the impervious
    sink ``source_impervious`` (mm per step, ≤ 0)."""
    pr, perc, ps, es, hp_new, pn_scaled = production(pn, en, cp, hp, beta, fp, fe, imperviousness=ctx.imperviousness)
    zero = jnp.zeros_like(pr)
    impervious = jnp.where(missing, zero, -ctx.imperviousness * pn)  # the impervious share of pn: removed
    return (
        jnp.where(missing, zero, pr),
        jnp.where(missing, zero, perc),
        jnp.where(missing, zero, ps),
        jnp.where(missing, zero, es),
        jnp.where(missing, hp, hp_new),
        jnp.where(missing, zero, pn_scaled),
        impervious,
    )


def _rain_missing(p):
    """Where P itself is missing: the transfer stores' steady-outflow branch is keyed on P alone."""
    return ~(jnp.asarray(p) >= 0.0)


def corrections(ctx: StepContext, inputs, missing, structure: str):
    """The flux corrections of a hybrid step: ``(f_1, ..., f_n)``, each ``(nac,)`` in (−1, 1), 0 where missing.

    ``inputs``: the network's inputs in smash's order (states at the start of the step, then
    pn and en before imperviousness), each ``(nac,)``.
    """
    if ctx.nn_parameters is None:
        raise ValueError(f"{structure} is a hybrid structure: give the weights of its network (nn_parameters)")
    f = mlp(ctx.nn_parameters, jnp.stack(jnp.broadcast_arrays(*inputs), axis=-1))
    f = jnp.where(missing[..., None], 0.0, f)
    return tuple(f[..., k] for k in range(f.shape[-1]))


def _no_corrections(n):
    return (None,) * n


def with_corrections(fluxes: dict, f, names) -> dict:
    """The fluxes plus ``correction_<name>`` for each network output (hybrids only)."""
    if names:
        fluxes.update({f"correction_{n}": fk for n, fk in zip(names, f)})
    return fluxes


def _split(runoff, lexc, f_split):
    """Routed and direct shares of the runoff (90 % / 10 %), with the hybrid split correction.

    With f: ``prr = 0.9·(1 − f²)·R + l``, ``prd = (0.1 + 0.9·f²)·R``: the shares still sum to R.
    """
    if f_split is None:
        return 0.9 * runoff + lexc, 0.1 * runoff
    return 0.9 * (1.0 - f_split**2) * runoff + lexc, (0.1 + 0.9 * f_split**2) * runoff


def _two_store_split(runoff, f_split, f_share):
    """gr6's and grc's routed water: 60 % to the transfer store, 40 % to the second store.

    Returns the two shares before the exchange is added. With the hybrid corrections:
    ``(0.6 − 0.4·f₄)·0.9·(1 − f₃²)·R`` and ``0.4·(1 + f₄)·0.9·(1 − f₃²)·R``.
    """
    if f_split is None:
        return 0.6 * 0.9 * runoff, 0.4 * 0.9 * runoff
    # The same shares written so that f = 0 repeats the parent's float operations exactly:
    # (0.6 − 0.4·f₄)·0.9 = 0.54·(1 − (2/3)·f₄) and 0.4·(1 + f₄)·0.9 = 0.36·(1 + f₄).
    keep = 1.0 - f_split**2
    return 0.6 * 0.9 * (1.0 - (2.0 / 3.0) * f_share) * keep * runoff, 0.4 * 0.9 * (1.0 + f_share) * keep * runoff


def _gr_front(theta, h, p, e, ctx: StepContext, beta, hybrid_inputs=None, structure=""):
    """Interception store (I), the hybrid corrections, then production (PR): what gr4, gr5,
    gr6 and grc share. ``hybrid_inputs``: the state names fed to the network (None: no network)."""
    missing, p, e = clean_forcing(p, e)
    ei, pn, en, hi = interception(p, e, theta["ci"], h["hi"])
    if hybrid_inputs is None:
        f = _no_corrections(5)
        fp, fe = 0.0, 0.0
    else:
        f = corrections(ctx, [h[n] for n in hybrid_inputs] + [pn, en], missing, structure)
        fp, fe = f[0], f[1]
    pr, perc, ps, es, hp, pn, impervious = _soil(pn, en, theta["cp"], h["hp"], beta, ctx, missing, fp, fe)
    # ei, pn and en are zero where missing already: the forcing fed to the store is zero there.
    fx = dict(pn=pn, en=en, pr=pr, perc=perc, ps=ps, es=es, source_impervious=impervious)
    return missing, fx, dict(hi=hi, hp=hp), f


def _gr4_like(theta, h, p, e, ctx: StepContext, exchange, hybrid, structure: str):
    """gr4 and gr5 (and their hybrids): they differ only in the exchange law."""
    inputs = ("hp", "ht") if hybrid else None
    missing, fx, h_new, f = _gr_front(theta, h, p, e, ctx, percolation_constant(ctx.dt), inputs, structure)
    fl = 0.0 if f[3] is None else f[3]
    lexc = jnp.where(missing, 0.0, exchange(theta, h["ht"], fl))
    runoff = fx["pr"] + fx["perc"]
    prr, prd = _split(runoff, lexc, f[2])
    qr, ht, floor, steady = power_store(prr, theta["ct"], h["ht"], 5.0, _rain_missing(p))
    qd = jnp.maximum(0.0, prd + lexc)
    fluxes = dict(**fx, lexc=lexc, prr=prr, prd=prd, qr=qr, qd=qd, qt=qr + qd, source_floor=floor, source_steady=steady)
    return {**h_new, "ht": ht}, with_corrections(fluxes, f, hybrid)


def gr4_step(theta, h, p, e, ctx: StepContext, hybrid: tuple[str, ...] = ()):
    """gr4 (spec 4.2): interception, production, GR4 exchange (X4), transfer store (T5).

    With ``hybrid`` (the network's output names) this is gr4_mlp: network inputs (hp, ht, pn, en), corrections (ps, es, split,
    exchange).
    """
    return _gr4_like(
        theta, h, p, e, ctx, lambda th, ht, fl: exchange_power(th["kexc"], ht, fl), hybrid, "gr4_mlp"
    )


def gr5_step(theta, h, p, e, ctx: StepContext, hybrid: tuple[str, ...] = ()):
    """gr5 (spec 4.3): gr4 with the threshold exchange (X5); With ``hybrid`` (the network's output names) this is gr5_mlp."""
    return _gr4_like(
        theta, h, p, e, ctx, lambda th, ht, fl: exchange_threshold(th["kexc"], th["aexc"], ht, fl), hybrid, "gr5_mlp"
    )


def gr6_step(theta, h, p, e, ctx: StepContext, hybrid: tuple[str, ...] = ()):
    """gr6 (spec 4.3): gr5 with 40 % of the routed water through an exponential store.

    The exchange is added to each of the three branches (transfer, exponential, direct).
    With ``hybrid`` (the network's output names) this is gr6_mlp: inputs (hp, ht, he in mm, pn, en), corrections (ps, es,
    direct/routed split, transfer/exponential split, exchange).
    """
    inputs = ("hp", "ht", "he") if hybrid else None
    missing, fx, h_new, f = _gr_front(theta, h, p, e, ctx, percolation_constant(ctx.dt), inputs, "gr6_mlp")
    fl = 0.0 if f[4] is None else f[4]
    lexc = jnp.where(missing, 0.0, exchange_threshold(theta["kexc"], theta["aexc"], h["ht"], fl))
    runoff = fx["pr"] + fx["perc"]
    to_transfer, to_exponential = _two_store_split(runoff, f[2], f[3])
    prr = to_transfer + lexc
    pre = to_exponential + lexc
    prd = 0.1 * runoff if f[2] is None else (0.1 + 0.9 * f[2] ** 2) * runoff
    qr, ht, floor, steady = power_store(prr, theta["ct"], h["ht"], 5.0, _rain_missing(p))
    # Missing forcing: pre is 0 there, and the exponential store drains (smash does so too).
    qe, he = exponential_store(pre, theta["be"], h["he"])
    qd = jnp.maximum(0.0, prd + lexc)
    fluxes = dict(**fx, lexc=lexc, prr=prr, prd=prd, pre=pre, qr=qr, qd=qd, qe=qe, qt=qr + qe + qd)
    fluxes.update(source_floor=floor, source_steady=steady)
    return {**h_new, "ht": ht, "he": he}, with_corrections(fluxes, f, hybrid)


def grc_step(theta, h, p, e, ctx: StepContext, hybrid: tuple[str, ...] = ()):
    """grc (spec 4.3): production without percolation, GR4 exchange, fast and slow transfer stores.

    The exchange goes to the fast store and the direct branch, not to the slow store.
    With ``hybrid`` (the network's output names) this is grc_mlp: inputs (hp, ht, hl, pn, en), corrections (ps, es, the two
    splits, exchange).
    """
    inputs = ("hp", "ht", "hl") if hybrid else None
    missing, fx, h_new, f = _gr_front(theta, h, p, e, ctx, _BETA_NO_PERCOLATION, inputs, "grc_mlp")
    fl = 0.0 if f[4] is None else f[4]
    lexc = jnp.where(missing, 0.0, exchange_power(theta["kexc"], h["ht"], fl))
    runoff = fx["pr"] + fx["perc"]
    if f[2] is None:
        prr, prl, prd = 0.54 * runoff + lexc, 0.36 * runoff, 0.1 * runoff
    else:
        to_fast, prl = _two_store_split(runoff, f[2], f[3])
        prr, prd = to_fast + lexc, (0.1 + 0.9 * f[2] ** 2) * runoff
    qr, ht, floor_r, steady_r = power_store(prr, theta["ct"], h["ht"], 5.0, _rain_missing(p))
    ql, hl, floor_l, steady_l = power_store(prl, theta["cl"], h["hl"], 5.0, _rain_missing(p))
    qd = jnp.maximum(0.0, prd + lexc)
    fluxes = dict(**fx, lexc=lexc, prr=prr, prd=prd, prl=prl, qr=qr, qd=qd, ql=ql, qt=qr + ql + qd)
    fluxes.update(source_floor=floor_r + floor_l, source_steady=steady_r + steady_l)
    return {**h_new, "ht": ht, "hl": hl}, with_corrections(fluxes, f, hybrid)


def _front_without_store(theta, h, p, e, ctx: StepContext, capacity, level, beta, hybrid_inputs, structure):
    """No-store interception (I0), the hybrid corrections, then production: grd and loieau."""
    missing, p, e = clean_forcing(p, e)
    ei, pn, en = interception_without_store(p, e)
    if hybrid_inputs is None:
        f, fp, fe = _no_corrections(3), 0.0, 0.0
    else:
        f = corrections(ctx, [h[n] for n in hybrid_inputs] + [pn, en], missing, structure)
        fp, fe = f[0], f[1]
    pr, perc, ps, es, h_prod, pn, impervious = _soil(pn, en, theta[capacity], h[level], beta, ctx, missing, fp, fe)
    return dict(ei=ei, pn=pn, en=en, pr=pr, perc=perc, ps=ps, es=es, source_impervious=impervious), h_prod, f


def grd_step(theta, h, p, e, ctx: StepContext, hybrid: tuple[str, ...] = ()):
    """grd (spec 4.3): no interception store, production without percolation, one transfer store.

    With ``hybrid`` (the network's output names) this is grd_mlp: inputs (hp, ht, pn, en), corrections (ps, es).
    """
    inputs = ("hp", "ht") if hybrid else None
    fx, hp, f = _front_without_store(theta, h, p, e, ctx, "cp", "hp", _BETA_NO_PERCOLATION, inputs, "grd_mlp")
    prr = fx["pr"] + fx["perc"]
    qr, ht, floor, steady = power_store(prr, theta["ct"], h["ht"], 5.0, _rain_missing(p))
    fluxes = dict(**fx, prr=prr, qr=qr, qt=qr, source_floor=floor, source_steady=steady)
    return {"hp": hp, "ht": ht}, with_corrections(fluxes, f, hybrid)


def loieau_step(theta, h, p, e, ctx: StepContext, hybrid: tuple[str, ...] = ()):
    """loieau (spec 4.3): no interception store, production (ca, ha), quartic transfer store (cc, hc).

    The discharge is multiplied by ``kb``: kb ≠ 1 creates or removes water on purpose.
    With ``hybrid`` (the network's output names) this is loieau_mlp: inputs (ha, hc, pn, en), corrections (ps, es, split).
    """
    inputs = ("ha", "hc") if hybrid else None
    beta = percolation_constant(ctx.dt)
    fx, ha, f = _front_without_store(theta, h, p, e, ctx, "ca", "ha", beta, inputs, "loieau_mlp")
    runoff = fx["pr"] + fx["perc"]
    prr, prd = _split(runoff, 0.0, f[2])
    qr, hc, floor, steady = power_store(prr, theta["cc"], h["hc"], 4.0, _rain_missing(p))
    qd = jnp.maximum(0.0, prd)
    fluxes = dict(**fx, prr=prr, prd=prd, qr=qr, qd=qd, source_floor=floor, source_steady=steady)
    fluxes["qt"] = theta["kb"] * (qr + qd)
    return {"ha": ha, "hc": hc}, with_corrections(fluxes, f, hybrid)
