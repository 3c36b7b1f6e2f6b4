"""Routing: runoff of every active cell -> discharge of every active cell (smash ``zero``,
``lag0``, ``lr``, ``kw``; spec section 5).

Two halves, as everywhere in the core:

* the mesh's :class:`~hybridhydro.mesh.RoutingPlan` (:func:`hybridhydro.mesh.routing_plan`,
  built once per mesh in plain NumPy) orders the active cells in routing levels, with the
  padded indices of each cell's upstream neighbours;
* Pure-JAX operators over plain arrays of shape ``(nac,)`` for one step
  (:func:`route_step`) or ``(time, nac)`` for a whole series (:func:`route_series`): a
  ``lax.scan`` over the levels of each segment, a vectorised update inside each level.

Routing never feeds back into the hydrology, so a run computes the runoff of all steps first
and routes the whole series afterwards. ``zero`` and ``lag0`` have no state and are linear, so
the series is swept level by level with all steps at once (``npar - 1`` sequential updates
instead of ``T * (npar - 1)``), with the same floating-point operations as step by step.
``lr`` and ``kw`` carry a state in time and scan over the steps with a level sweep inside each
step, exactly smash's order of operations. (``lr`` is linear too, but its reservoirs make each
level a recurrence in time: a parallel prefix scan would change the float32 rounding, so it
stays sequential in the forward.) Reverse mode through ``lr`` uses a hand-written adjoint (a
``jax.custom_vjp``, :func:`_lr_series`) with the levels outermost and each cell's reverse-time
recurrence solved by a parallel prefix scan for all steps at once (gradients change only by
float rounding; ~3x less backward work than JAX's transpose of the time scan).

Units: runoff ``qt`` and discharge ``Q`` in m3/s; ``hlr`` in mm over the cell's upstream area
(the cell excluded); ``llr`` in minutes; ``akw``, ``bkw`` dimensionless as smash uses them.
"""

from __future__ import annotations

from functools import partial
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .mesh import RoutingPlan

#: Routing modules and their parameters (smash names, in smash's order).
ROUTING_PARAMETERS: dict[str, tuple[str, ...]] = {"zero": (), "lag0": (), "lr": ("llr",), "kw": ("akw", "bkw")}
#: Internal fluxes each routing module reports (smash names): ``qup`` in m3/s for lag0 but in mm
#: over the upstream area for lr (the reservoir's inflow depth), ``qim1j`` in m3/s for kw.
ROUTING_FLUXES: dict[str, tuple[str, ...]] = {"zero": (), "lag0": ("qup",), "lr": ("qup",), "kw": ("qim1j",)}
#: Routing modules and their states that the user can set (``kw``'s Q(t-1) always starts at 0).
ROUTING_STATES: dict[str, tuple[str, ...]] = {"zero": (), "lag0": (), "lr": ("hlr",), "kw": ()}

# D8 offsets (drow, dcol) to the downstream neighbour, smash coding 1..8 (N, NE, E, ..., NW).
# kw floors every discharge it reads at this value (m3/s), as smash does.
_KW_FLOOR = 1e-6


# ---------------------------------------------------------------------------------------------
# Pure-JAX operators
# ---------------------------------------------------------------------------------------------


def _gather(values, index, fill):
    """``values[..., index]`` over the last axis, ``fill`` where ``index`` is the padding ``nac``."""
    return jnp.take(values, index, axis=-1, mode="fill", fill_value=fill)


def _scatter(values, index, new):
    """``values[..., index] = new`` over the last axis, dropping the padding entries."""
    return values.at[..., index].set(new, mode="drop")


def _segment_inputs(plan: RoutingPlan, params: Mapping[str, jax.Array], names=(), dt: float = 0.0) -> list[dict]:
    """Per segment, the ``scan`` inputs of its levels: cells, upstream neighbours, and the
    routing parameters and static cell arrays gathered at the level cells ``(nlevel_s, width_s)``.

    Gathered once per run, not once per step. Padding reads 1, a harmless value (no 0/0)
    whose results are dropped by the scatter anyway.
    """
    out = []
    for cells, ups in plan.segments:
        c = jnp.asarray(cells)
        seg = {"cells": c, "ups": jnp.asarray(ups)}
        for n in names:
            seg[n] = _gather(jnp.asarray(params[n]), c, 1.0)
        if names:
            seg["upstream_area"] = _gather(jnp.asarray(plan.upstream_area), c, 1.0)
            seg["dx"] = _gather(jnp.asarray(plan.dx), c, 1.0)
        if "llr" in names:
            # lr's reservoir decay over one step, exp(-dt / llr) (llr in min), needs only the
            # parameter: computed once per run, not per step, nor stored per step for the gradient.
            seg["decay"] = jnp.exp(-dt / (60.0 * seg["llr"]))
        out.append(seg)
    return out


#: Segments of at most this many levels are unrolled in the ``lr`` forward level sweep: on a
#: small mesh (Cance: 3 + 27 levels) the loop overhead of a ``scan`` over tiny levels, paid at
#: every time step, is most of the routing time (unrolled: ~1.7x faster
#: forward, the same operations in the same order, bit for bit). Longer segments (the
#: hundreds of single-cell levels of a large mesh) stay rolled, to bound the compiled size.
_UNROLL_LEVELS = 32


def _sweep(level, carry, segments: list[dict], unroll_upto: int = 0):
    """Apply ``level(carry, inputs) -> carry`` to every level in routing order; segments of
    at most ``unroll_upto`` levels are unrolled (same operations, no loop)."""

    def body(c, x):
        return level(c, x), None

    for seg in segments:
        n = int(seg["cells"].shape[0])
        carry, _ = jax.lax.scan(body, carry, seg, unroll=n if 0 < n <= unroll_upto else 1)
    return carry


def initial_routing_state(module: str, nac: int, hlr=None, dtype=jnp.float32) -> dict:
    """Routing state at t = 0: ``hlr`` (mm) for ``lr``, Q(t-1) = qt(t-1) = 0 for ``kw``."""
    _check_module(module)
    if module == "lr":
        h = jnp.full((nac,), 1e-6, dtype) if hlr is None else jnp.broadcast_to(jnp.asarray(hlr, dtype), (nac,))
        return {"hlr": h}
    if module == "kw":
        return {"q_prev": jnp.zeros((nac,), dtype), "qt_prev": jnp.zeros((nac,), dtype)}
    return {}


def _check_module(module: str) -> None:
    if module not in ROUTING_PARAMETERS:
        raise ValueError(f"unknown routing module {module!r}; valid: {', '.join(ROUTING_PARAMETERS)}")


def _sweep_lag0(plan: RoutingPlan, qt):
    """lag0 over any leading shape: ``Q <- qt + sum of upstream Q`` level by level."""

    def level(q, x):
        c = x["cells"]
        return _scatter(q, c, _gather(qt, c, 0.0) + _gather(q, x["ups"], 0.0).sum(-1))

    return _sweep(level, qt, _segment_inputs(plan, {}))


def _step_lr(segments: list[dict], dt: float, qt, state):
    def level(carry, x):
        q, hlr = carry
        c, area = x["cells"], x["upstream_area"]
        qup = _gather(q, x["ups"], 0.0).sum(-1)
        v = qup * dt / (1e-3 * area)  # upstream inflow as a depth over the upstream area (mm)
        h_star = _gather(hlr, c, 0.0) + v
        h_new = h_star * x["decay"]
        qc = _gather(qt, c, 0.0) + (h_star - h_new) * 1e-3 * area / dt
        return _scatter(q, c, qc), _scatter(hlr, c, h_new)

    q, hlr = _sweep(level, (qt, state["hlr"]), segments, _UNROLL_LEVELS)
    return q, {"hlr": hlr}


def _step_kw(segments: list[dict], dt: float, qt, state):
    q_prev, qt_prev = state["q_prev"], state["qt_prev"]

    def level(q, x):
        c, akw, bkw = x["cells"], x["akw"], x["bkw"]
        qup = jnp.maximum(_gather(q, x["ups"], 0.0).sum(-1), _KW_FLOOR)
        qm = jnp.maximum(_gather(q_prev, c, 0.0), _KW_FLOOR)
        ql = jnp.maximum(_gather(qt, c, 0.0), _KW_FLOOR)
        qlm = jnp.maximum(_gather(qt_prev, c, 0.0), _KW_FLOOR)
        d1 = dt / x["dx"]
        # Linearised implicit Chow scheme for A = akw Q^bkw (celerity term lagged).
        d2 = akw * bkw * ((qm + qup) * 0.5) ** (bkw - 1.0)
        qc = (d1 * qup + d2 * qm + d1 * (qlm + ql) * 0.5) / (d1 + d2)
        return _scatter(q, c, qc)

    q = _sweep(level, qt, segments)
    return q, {"q_prev": q, "qt_prev": qt}


def route_step(module: str, plan: RoutingPlan, params: Mapping[str, jax.Array], qt, state: Mapping, dt: float):
    """Route one time step.

    Parameters
    ----------
    module
        ``"zero"``, ``"lag0"``, ``"lr"`` or ``"kw"``.
    plan
        The mesh's :class:`RoutingPlan`.
    params
        Routing parameters, each ``(nac,)``: ``llr`` (min) for lr, ``akw`` and ``bkw`` for kw.
    qt
        ``(nac,)`` runoff of this step (m3/s).
    state
        From :func:`initial_routing_state` or the previous call: ``hlr`` (mm) for lr,
        ``q_prev``/``qt_prev`` (m3/s) for kw, empty otherwise.
    dt
        Time step (s).

    Returns
    -------
    q, state
        ``(nac,)`` discharge at every active cell (m3/s) and the new state.
    """
    _check_module(module)
    if module == "zero":
        return qt, dict(state)
    if module == "lag0":
        return _sweep_lag0(plan, qt), dict(state)
    segments = _segment_inputs(plan, params, ROUTING_PARAMETERS[module], dt)
    return (_step_lr if module == "lr" else _step_kw)(segments, dt, qt, state)


def upstream_discharge(plan: RoutingPlan, q):
    """Sum of the discharge of each cell's upstream neighbours, over any leading shape (m3/s).

    0 at cells with no upstream cell. Vectorised over every level at once: it reads the
    routed discharge, it does not route.
    """
    out = jnp.zeros_like(q)
    for cells, ups in plan.segments:
        qup = _gather(q, jnp.asarray(ups), 0.0).sum(-1)  # (..., nlevel_s, width_s)
        out = _scatter(out, jnp.asarray(cells).ravel(), qup.reshape(q.shape[:-1] + (-1,)))
    return out


def routing_fluxes(module: str, plan: RoutingPlan, q, dt: float) -> dict:
    """The internal fluxes smash reports for a routing module (see :data:`ROUTING_FLUXES`).

    Parameters
    ----------
    q
        Routed discharge ``(..., nac)`` (m3/s), e.g. from :func:`route_series`.
    dt
        Time step (s).
    """
    _check_module(module)
    if module == "zero":
        return {}
    qup = upstream_discharge(plan, q)
    if module == "kw":
        return {"qim1j": qup}
    if module == "lr":
        area = jnp.asarray(plan.upstream_area)
        # Source cells have no upstream area: their inflow depth is 0 (and 0/0 must not reach a gradient).
        safe = jnp.where(area > 0, area, 1.0)
        qup = jnp.where(area > 0, qup * dt / (1e-3 * safe), 0.0)
    return {"qup": qup}


def checkpointed_scan(f, init, xs, every: int | None = None):
    """``jax.lax.scan(f, init, xs)``, optionally in ``jax.checkpoint``-ed chunks of ``every`` steps.

    Reverse-mode differentiation then keeps one carry per chunk and recomputes the steps inside
    a chunk, so memory grows with ``T / every + every`` instead of ``T``. Same results. A last
    partial chunk (``T`` not a multiple of ``every``) runs as a plain scan.
    """
    if every is None:
        return jax.lax.scan(f, init, xs)
    every = int(every)
    if every < 1:
        raise ValueError(f"checkpoint_every must be a positive number of steps, got {every}")
    ntime = jax.tree_util.tree_leaves(xs)[0].shape[0]
    nchunk = ntime // every
    head = jax.tree_util.tree_map(lambda x: x[: nchunk * every].reshape((nchunk, every) + x.shape[1:]), xs)
    tail = jax.tree_util.tree_map(lambda x: x[nchunk * every :], xs)

    @partial(jax.checkpoint, prevent_cse=False)  # prevent_cse is not needed under scan
    def chunk(carry, x):
        return jax.lax.scan(f, carry, x)

    carry, ys = jax.lax.scan(chunk, init, head)
    ys = jax.tree_util.tree_map(lambda y: y.reshape((nchunk * every,) + y.shape[2:]), ys)
    if ntime > nchunk * every:
        carry, ys_tail = jax.lax.scan(f, carry, tail)
        ys = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), ys, ys_tail)
    return carry, ys


def _lr_geometry(plan: RoutingPlan, segments: list[dict]) -> dict:
    """The plan's arrays :func:`_lr_series` needs, as a pytree of JAX arrays (no gradient).

    ``segs``: per segment, the level cells, their upstream neighbours, their upstream area
    (m2, gathered as :func:`_segment_inputs` does) and their downstream cell (``nac`` at the
    outlets and the padding); ``down`` (nac,) the downstream cell of every cell (``nac`` at
    the outlets), ``area`` (nac,) the upstream area (m2) and ``in_level`` (nac,) whether a
    cell is routed (has an upstream neighbour, hence a reservoir).
    """
    nac = plan.nac
    down = jnp.asarray(plan.downstream)
    down = jnp.where(down < 0, nac, down).astype(jnp.int32)
    in_level = jnp.zeros((nac,), bool)
    segs = []
    for seg in segments:
        c = seg["cells"]
        segs.append(
            {"cells": c, "ups": seg["ups"], "upstream_area": seg["upstream_area"], "down": _gather(down, c, nac)}
        )
        in_level = _scatter(in_level, c.ravel(), True)
    return {"segs": tuple(segs), "down": down, "area": jnp.asarray(plan.upstream_area), "in_level": in_level}


def _lr_scan(dt: float, geometry: dict, decays, qt, hlr0, every: int | None, keep: bool):
    """The forward ``lr`` time scan (:func:`_step_lr` at every step, in smash's order), over
    ``checkpointed_scan``: ``(q (time, nac), hlr after the last step, hlr (time, nac) or None)``."""
    segments = [{**g, "decay": d} for g, d in zip(geometry["segs"], decays)]

    def body(h, qt_t):
        q, s = _step_lr(segments, dt, qt_t, {"hlr": h})
        return s["hlr"], (q, s["hlr"] if keep else None)

    hlr, (q, series) = checkpointed_scan(body, hlr0, qt, every)
    return q, hlr, series


def _upstream_sum(geometry: dict, q):
    """:func:`upstream_discharge` from the geometry's segments, over any leading shape (m3/s)."""
    out = jnp.zeros_like(q)
    for g in geometry["segs"]:
        qup = _gather(q, g["ups"], 0.0).sum(-1)
        out = _scatter(out, g["cells"].ravel(), qup.reshape(q.shape[:-1] + (-1,)))
    return out


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _lr_series(dt: float, every: int | None, keep: bool, geometry: dict, qt, hlr0, decays):
    """``lr`` routing of a ``(time, nac)`` runoff series with a hand-written reverse-mode adjoint.

    Parameters
    ----------
    dt, every, keep
        Time step (s), ``checkpoint_every`` (steps or None) and whether to return the ``hlr``
        series (static).
    geometry
        From :func:`_lr_geometry` (its cotangent is zero: the plan is not differentiated).
    qt
        ``(time, nac)`` runoff (m3/s).
    hlr0
        ``(nac,)`` reservoir level at t = 0 (mm over the upstream area).
    decays
        Per segment of the plan, ``exp(-dt / (60 llr))`` at its level cells ``(nlevel_s, width_s)``
        (dimensionless; JAX differentiates the map from ``llr`` to it).

    Returns
    -------
    q, hlr, series
        ``(time, nac)`` discharge (m3/s), ``(nac,)`` final ``hlr`` (mm), and with ``keep`` the
        ``(time, nac)`` ``hlr`` at the end of each step, else None.

    The primal is :func:`_lr_scan`, the same operations as the autodiff path, so values are
    bit-identical (under ``jax.grad`` too). The backward pass (``_lr_series_bwd``) is the
    adjoint of the whole series. Per cell ``c`` of a level, with ``k1 = dt / (1e-3 A)`` and
    ``k2 = 1e-3 A / dt`` (``A`` its upstream area, m2), ``d`` its decay, each step's forward

        h* = hlr[c] + k1 * sum(q[u], u upstream of c);   hlr[c] <- d h*;   q[c] = qt[c] + k2 (1 - d) h*

    has the adjoint (bars are cotangents; ``qbar[c] = gq[c] + k1(down c) h*bar(down c)``
    is complete once the downstream cell is done, as every cell has one downstream cell)

        h*bar(t) = k2 (1 - d) qbar(t) + d (h*bar(t+1) + gs(t));   qtbar[c] = qbar[c];
        dbar += (h*bar(t+1) + gs(t) - k2 qbar(t)) h*(t);   hlr0bar[c] = h*bar(0)

    (``gs`` the cotangent of the returned ``hlr`` series, ``h*bar(T)`` that of the final
    ``hlr``). :func:`_lr_adjoint_steps` visits the levels downstream first and solves each
    level's recurrence for all steps at once, so the backward has ``nlevel`` sequential
    iterations instead of ``T * nlevel``, and no stored per-level intermediates. ``h*`` is
    rebuilt for all cells and steps at once from the saved ``hlr`` series and discharge
    (:func:`_upstream_sum`). With ``every`` the forward saves only the ``hlr`` at the start of
    each chunk of ``every`` steps and the backward re-runs each chunk's forward before its
    adjoint (memory ~ ``T / every + every`` cell vectors on top of the runoff and its
    cotangent).

    Limits: reverse mode only (``jax.jvp``/``jax.jacfwd``/``jax.linearize`` through it raise a
    TypeError: use ``route_series(..., adjoint=False)`` for forward mode); no cotangent for
    ``geometry``; ``dt`` must be a Python number (``route_series`` falls back to the autodiff
    path when it is traced). The gradient's float rounding differs from JAX's transpose of
    the scan (parallel-prefix order): ~1e-6 relative in float32, ~1e-15 in float64.
    """
    return _lr_scan(dt, geometry, decays, qt, hlr0, every, keep)


def _lr_series_fwd(dt, every, keep, geometry, qt, hlr0, decays):
    if every is None:
        q, hlr, series = _lr_scan(dt, geometry, decays, qt, hlr0, None, True)
        res = (geometry, decays, hlr0, q, series)
        return (q, hlr, series if keep else None), res
    ntime = qt.shape[0]
    nchunk = ntime // every

    def chunk(h, qt_c):
        q_c, h_end, s_c = _lr_scan(dt, geometry, decays, qt_c, h, None, keep)
        return h_end, (h, q_c, s_c)

    head = qt[: nchunk * every].reshape((nchunk, every) + qt.shape[1:])
    hlr, (starts, q, series) = jax.lax.scan(chunk, hlr0, head)
    q = q.reshape((nchunk * every,) + q.shape[2:])
    series = None if series is None else series.reshape(q.shape)
    h_tail = hlr
    if ntime > nchunk * every:
        q_t, hlr, s_t = _lr_scan(dt, geometry, decays, qt[nchunk * every :], hlr, None, keep)
        q = jnp.concatenate([q, q_t])
        series = None if series is None else jnp.concatenate([series, s_t])
    return (q, hlr, series), (geometry, decays, qt, starts, h_tail)


def _linear_recurrence_backward(d, b, x_end):
    """``H(t) = d * H(t + 1) + b(t)`` for ``t = T-1 .. 0`` with ``H(T) = x_end``: ``(T, w)``.

    ``d`` and ``x_end`` ``(w,)``, ``b`` ``(T, w)``. An associative (parallel-prefix) scan over
    time: ``log2 T`` vectorised passes instead of ``T`` sequential steps. Only the backward
    pass uses it, where float rounding need not follow smash's order (the forward stays
    sequential); with ``0 < d <= 1`` it is stable.
    """
    b = b.at[-1].add(d * x_end)
    a = jnp.broadcast_to(d[None], b.shape)

    def combine(x, y):  # x: the later steps (already folded), y: the earlier ones
        return x[0] * y[0], y[1] + y[0] * x[1]

    return jax.lax.associative_scan(combine, (a, b), reverse=True, axis=0)[1]


def _lr_adjoint_steps(dt, geometry, decays, gq, hstar, gseries, hbar, dacc):
    """Adjoint of the ``lr`` steps of one block of ``T`` steps, levels outermost.

    ``gq`` ``(T, nac)`` cotangent of the discharge, ``gseries`` of the ``hlr`` series (or
    None), ``hstar`` ``(T, nac)`` the h* of every cell and step (mm), ``hbar`` ``(nac,)`` the
    cotangent of ``hlr`` after the block's last step, ``dacc`` ``(nac,)`` the decay cotangent
    summed so far. Returns ``(hbar at the block's start, dacc, qtbar (T, nac))``.

    The levels are visited downstream first. Within a level the cells are independent and,
    once the discharge cotangent of the downstream cells is known at all steps, each cell's
    reservoir cotangent is a first-order linear recurrence in reverse time,
    ``H(t) = d H(t+1) + (1 - d) k2 qbar(t) + d gs(t)``, solved for all steps at once
    (:func:`_linear_recurrence_backward`); ``H(t) k1`` is then the upstream cells' share of
    the discharge cotangent. ``nlevel`` level iterations, none per step.
    """
    dtype = gq.dtype
    h0bar = hbar if gseries is None else hbar + gseries.sum(0)  # cells without a reservoir
    p = jnp.zeros_like(gq)  # k1 * h*bar at the routed cells: what their upstream cells receive

    def level(carry, x):
        p, h0bar, dacc = carry
        c, d = x["cells"], x["d"]
        a = (_gather(gq, c, 0.0) + _gather(p, x["down"], 0.0)) * x["k2"][None]  # k2 qbar, (T, w)
        x_end = _gather(hbar, c, 0.0)
        b = (1.0 - d)[None] * a
        if gseries is not None:
            gs = _gather(gseries, c, 0.0)
            b = b + d[None] * gs
        h = _linear_recurrence_backward(d, b, x_end)  # h*bar at every step
        h_in = jnp.concatenate([h[1:], x_end[None]])  # hlr's cotangent entering each step
        if gseries is not None:
            h_in = h_in + gs
        dbar = ((h_in - a) * _gather(hstar, c, 0.0)).sum(0)
        p = _scatter(p, c, h * x["k1"][None])
        return (p, _scatter(h0bar, c, h[0]), dacc.at[c].add(dbar, mode="drop")), None

    for g, d in reversed(list(zip(geometry["segs"], decays))):
        # The forward's constants as it rounds them: k1 divides by 1e-3 A rounded in A's
        # dtype (float32), k2 multiplies by 1e-3 then by A in the series' dtype.
        xs = {
            "cells": g["cells"],
            "down": g["down"],
            "d": d,
            "k1": dt / (1e-3 * g["upstream_area"]).astype(dtype),
            "k2": 1e-3 * g["upstream_area"].astype(dtype) / dt,
        }
        # One iteration per level for the whole series: rolled (unrolling buys nothing here
        # and multiplies the compile time).
        (p, h0bar, dacc), _ = jax.lax.scan(level, (p, h0bar, dacc), xs, reverse=True)
    return h0bar, dacc, gq + _gather(p, geometry["down"], 0.0)


def _lr_hstar(dt, geometry, q, hlr_prev):
    """h* = hlr at the start of the step + the upstream inflow depth (mm), every cell and step."""
    area = jnp.where(geometry["in_level"], geometry["area"], 1.0)
    return hlr_prev + _upstream_sum(geometry, q) * dt / (1e-3 * area)[None]


def _lr_series_bwd(dt, every, keep, res, cts):
    gq, ghlr, gseries = cts
    if not keep:
        gseries = None
    if every is None:
        geometry, decays, hlr0, q, series = res
        hlr_prev = jnp.concatenate([hlr0[None], series[:-1]])
        hstar = _lr_hstar(dt, geometry, q, hlr_prev)
        hbar, dacc, qtbar = _lr_adjoint_steps(
            dt, geometry, decays, gq, hstar, gseries, ghlr, jnp.zeros_like(ghlr)
        )
    else:
        geometry, decays, qt, starts, h_tail = res
        ntime, nchunk = qt.shape[0], starts.shape[0]
        n_head = nchunk * every

        def block(hbar, dacc, qt_b, gq_b, gs_b, h_start):
            q_b, _, s_b = _lr_scan(dt, geometry, decays, qt_b, h_start, None, True)
            hstar = _lr_hstar(dt, geometry, q_b, jnp.concatenate([h_start[None], s_b[:-1]]))
            return _lr_adjoint_steps(dt, geometry, decays, gq_b, hstar, gs_b, hbar, dacc)

        hbar, dacc = ghlr, jnp.zeros_like(ghlr)
        tail = None
        if ntime > n_head:
            gs_t = None if gseries is None else gseries[n_head:]
            hbar, dacc, tail = block(hbar, dacc, qt[n_head:], gq[n_head:], gs_t, h_tail)

        def chunk(carry, x):
            hb, da = carry
            hb, da, qtb = block(hb, da, x["qt"], x["gq"], x.get("gs"), x["h"])
            return (hb, da), qtb

        split = lambda a: a[:n_head].reshape((nchunk, every) + a.shape[1:])  # noqa: E731
        xs = {"qt": split(qt), "gq": split(gq), "h": starts}
        if gseries is not None:
            xs["gs"] = split(gseries)
        (hbar, dacc), qtbar = jax.lax.scan(chunk, (hbar, dacc), xs, reverse=True)
        qtbar = qtbar.reshape((n_head,) + qtbar.shape[2:])
        if tail is not None:
            qtbar = jnp.concatenate([qtbar, tail])
    gdecays = tuple(_gather(dacc, g["cells"], 0.0).astype(d.dtype) for g, d in zip(geometry["segs"], decays))
    geometry_ct = jax.tree_util.tree_map(lambda _: None, geometry)
    return geometry_ct, qtbar.astype(gq.dtype), hbar.astype(ghlr.dtype), gdecays


_lr_series.defvjp(_lr_series_fwd, _lr_series_bwd)


def route_series(
    module: str,
    plan: RoutingPlan,
    params: Mapping[str, jax.Array],
    qt,
    state: Mapping,
    dt: float,
    checkpoint_every: int | None = None,
    return_state_series: bool = False,
    adjoint: bool = True,
):
    """Route a whole ``(time, nac)`` runoff series (m3/s).

    ``zero`` and ``lag0`` sweep the levels once with every step at once (exact: the same
    operations as step by step, only batched). ``lr`` and ``kw`` scan over time, with the
    level sweep of :func:`route_step` inside each step.

    ``checkpoint_every`` chunks the time scan of ``lr`` and ``kw`` (see :func:`checkpointed_scan`).

    ``lr`` (with ``adjoint=True``, the default) is differentiated in reverse mode by a
    hand-written adjoint sweep (:func:`_lr_series`, a ``jax.custom_vjp``) instead of JAX's
    transpose of the scan: same forward values bit for bit, gradients equal to float rounding,
    ~3x less backward work. Its limits: no forward mode (``jax.jvp``, ``jax.jacfwd``,
    ``jax.linearize`` through ``lr`` routing raise an error; pass ``adjoint=False`` for them),
    and no gradient with respect to the plan's arrays (the upstream areas), which nothing
    differentiates. With ``checkpoint_every`` the adjoint keeps one ``hlr`` per chunk and
    re-runs each chunk's forward steps during the backward pass, as :func:`checkpointed_scan`.

    Returns
    -------
    q, state
        ``(time, nac)`` discharge (m3/s) and the state after the last step.
    series
        Only with ``return_state_series``: ``{"hlr": (time, nac)}`` (mm, end of each step)
        for ``lr``, empty otherwise.
    """
    _check_module(module)
    if module in ("zero", "lag0"):
        q = qt if module == "zero" else _sweep_lag0(plan, qt)
        return (q, dict(state), {}) if return_state_series else (q, dict(state))
    if module == "lr" and adjoint and not isinstance(dt, jax.core.Tracer):  # dt is static in the adjoint
        if checkpoint_every is not None and int(checkpoint_every) < 1:
            raise ValueError(f"checkpoint_every must be a positive number of steps, got {checkpoint_every}")
        segments = _segment_inputs(plan, params, ROUTING_PARAMETERS[module], dt)
        geometry = _lr_geometry(plan, segments)
        decays = tuple(seg["decay"] for seg in segments)
        every = None if checkpoint_every is None else int(checkpoint_every)
        q, hlr, series = _lr_series(dt, every, return_state_series, geometry, qt, state["hlr"], decays)
        if return_state_series:
            return q, {"hlr": hlr}, {"hlr": series}
        return q, {"hlr": hlr}
    return _route_series_scan(module, plan, params, qt, state, dt, checkpoint_every, return_state_series)


def _route_series_scan(module, plan, params, qt, state, dt, checkpoint_every=None, return_state_series=False):
    """``lr`` or ``kw`` as a ``lax.scan`` over time differentiated by JAX itself (the reference
    for :func:`_lr_series`'s hand-written adjoint, and ``kw``'s only path)."""
    segments = _segment_inputs(plan, params, ROUTING_PARAMETERS[module], dt)
    step = _step_lr if module == "lr" else _step_kw
    keep = ROUTING_STATES[module] if return_state_series else ()

    def body(s, qt_t):
        q, s = step(segments, dt, qt_t, s)
        return s, (q, {k: s[k] for k in keep})

    state, (q, series) = checkpointed_scan(body, dict(state), qt, checkpoint_every)
    return (q, state, series) if return_state_series else (q, state)
