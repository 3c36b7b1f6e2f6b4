"""Hydrological signatures and hydrograph segmentation (spec §13.1–13.2), and the signature
components of the cost (spec §9.1).

Two implementations live side by side:

* NumPy reference functions (``*_np`` and :func:`segment_events`): run on observations and
  for evaluation; the segmentation is not differentiable and never needs to be (the events
  of the cost come from the *observed* series, so they are fixed masks).
* JAX functions (``*_jax`` and :data:`SIGNATURE_COMPONENTS`): differentiable in the simulated
  discharge. Missing observations (qo < 0 or NaN) are masked: a masked step is skipped, as if
  the series were compressed to its valid steps (this is what smash does by dropping them).

Conventions (all discharges and rains in m³/s; rain = basin-mean rain · area · 1e-3 / dt):

* Baseflow filter (spec §13.1): a = 0.925, three passes (forward, backward, forward). Where
  the spec is silent we chose, and checked against smash on Cance (Crclf agrees to 3e-8):
  each pass filters the *previous pass's baseflow* (the classic Nathan–McMahon chaining), the
  backward pass starts from ``min(Q_end/1.2, mean(bt))`` and the last forward pass from
  ``min(Q_1/1.2, mean(bt))``.
* Quantiles: linear interpolation (NumPy's default), over the valid steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy.signal import find_peaks

__all__ = [
    "CONTINUOUS",
    "EVENT",
    "SIGNATURE_COMPONENTS",
    "baseflow_np",
    "baseflow_jax",
    "continuous_signatures_np",
    "continuous_signatures_jax",
    "event_masks",
    "event_signatures_np",
    "event_signatures_jax",
    "segment_events",
    "signature_cost",
    "signatures",
]

CONTINUOUS = ("Crc", "Crchf", "Crclf", "Crch2r", "Cfp2", "Cfp10", "Cfp50", "Cfp90")
EVENT = ("Eff", "Ebf", "Erc", "Erchf", "Erclf", "Erch2r", "Elt", "Epf")
_FP = {"Cfp2": 0.02, "Cfp10": 0.1, "Cfp50": 0.5, "Cfp90": 0.9}
ALPHA = 0.925


# ----------------------------------------------------------------------------- NumPy reference


def baseflow_np(q, a: float = ALPHA):
    """Three-pass Lyne–Hollick baseflow of a gap-free series ``q`` (m³/s).

    Returns ``(base, quick)`` with ``quick = q - base``.
    """
    q = np.asarray(q, dtype=np.float64)
    n = q.size
    if n == 0:
        return q.copy(), q.copy()
    b1 = np.empty(n)
    b1[0] = q[0] if q[0] < np.quantile(q, 0.25) else q.mean() / 1.5
    for i in range(1, n):
        b1[i] = min(q[i], a * b1[i - 1] + (1 - a) / 2 * (q[i] + q[i - 1]))
    b2 = np.empty(n)
    b2[-1] = min(q[-1] / 1.2, b1.mean())
    for i in range(n - 2, -1, -1):
        b2[i] = min(b1[i], a * b2[i + 1] + (1 - a) / 2 * (b1[i] + b1[i + 1]))
    b3 = np.empty(n)
    b3[0] = min(q[0] / 1.2, b2.mean())
    for i in range(1, n):
        b3[i] = min(b2[i], a * b3[i - 1] + (1 - a) / 2 * (b2[i] + b2[i - 1]))
    return b3, q - b3


def _valid(q):
    q = np.asarray(q, dtype=np.float64)
    return np.isfinite(q) & (q >= 0)


def _flow_parts(q, p):
    """The valid steps of one gauge's ``q`` and ``p`` (float64), their baseflow and quickflow,
    and the sums of ``p`` and ``q``; None when no step is valid."""
    q = np.asarray(q, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    m = _valid(q)
    qv, pv = q[m], p[m]
    if qv.size == 0:
        return None
    base, quick = baseflow_np(qv)
    return qv, pv, base, quick, pv.sum(), qv.sum()


def continuous_signatures_np(q, p) -> dict[str, float]:
    """Continuous signatures of one gauge: ``q``, ``p`` (time,) in m³/s; missing q < 0/NaN."""
    parts = _flow_parts(q, p)
    if parts is None:
        return dict.fromkeys(CONTINUOUS, np.nan)
    qv, pv, base, quick, sp, sq = parts
    out = {
        "Crc": sq / sp,
        "Crchf": quick.sum() / sp,
        "Crclf": base.sum() / sp,
        "Crch2r": quick.sum() / sq,
    }
    for k, f in _FP.items():
        out[k] = float(np.quantile(qv, f))
    return out


def event_signatures_np(q, p, start: int, end: int) -> dict[str, float]:
    """Event signatures over steps ``start..end`` (inclusive) of one gauge."""
    parts = _flow_parts(np.asarray(q)[start : end + 1], np.asarray(p)[start : end + 1])
    if parts is None:
        return dict.fromkeys(EVENT, np.nan)
    qv, pv, base, quick, sp, sq = parts
    return {
        "Eff": quick.mean(),
        "Ebf": base.mean(),
        "Erc": sq / sp,
        "Erchf": quick.sum() / sp,
        "Erclf": base.sum() / sp,
        "Erch2r": quick.sum() / sq,
        "Elt": float(np.argmax(qv) - np.argmax(pv)),
        "Epf": qv.max(),
    }


# ----------------------------------------------------------------------------- segmentation


def _segment_one(q, p, dt, peak_quant, peak_value, max_duration):
    """Events of one gauge as a list of (start, end, multipeak) step indices (inclusive)."""
    h = 3600.0 / dt  # steps per hour
    q = np.asarray(q, dtype=np.float64)
    p = np.where(np.asarray(p, dtype=np.float64) >= 0, p, 0.0)
    m = _valid(q)
    if not m.any():
        return []
    qn = np.where(m, q, np.nan)
    thr = max(np.quantile(q[m], peak_quant), peak_value)
    peaks, _ = find_peaks(np.where(m, q, -np.inf), height=thr)
    n_before, n_rain, n_after = int(72 * h), int(24 * h), int(48 * h)
    events = []
    for pk in peaks:
        lo = max(0, pk - n_before)
        grad = np.gradient(p[lo : pk + 1]) if pk > lo else np.zeros(1)
        gp, _ = find_peaks(grad, height=np.quantile(grad, 0.8))
        if len(gp) > 1:
            # rain "energy" over 24 h from one step before each candidate
            energy = np.array(
                [np.linalg.norm(p[max(lo + i - 1, 0) : lo + i - 1 + n_rain]) for i in gp]
            )
            start = lo + gp[energy > 0.2 * energy.max()][0]
        elif len(gp) == 1:
            start = lo + gp[0]
        else:
            start = lo + int(np.argmax(grad))
        hi = min(start + int(max_duration * h) + n_after, q.size)
        w = qn[pk - 1 : hi] if pk >= 1 else qn[:hi]
        off = pk - 1 if pk >= 1 else 0
        wm = np.isfinite(w)
        if not wm.any():
            continue
        _, quick = baseflow_np(w[wm])
        qf = np.zeros(w.size)
        qf[wm] = quick
        if qf.size >= n_after:
            msum = np.convolve(qf, np.ones(n_after), mode="valid")
        else:
            msum = np.array([qf.sum()])
        end = min(off + 1 + int(np.argmin(msum)), q.size - 1)
        events.append([int(start), int(end), False])
    merged: list[list] = []
    for ev in events:
        if merged and ev[0] <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], ev[1])
            merged[-1][2] = True
        else:
            merged.append(ev)
    return merged


def _season(ts: pd.Timestamp) -> str:
    md = (ts.month, ts.day)
    if (3, 20) <= md < (6, 21):
        return "spring"
    if (6, 21) <= md < (9, 22):
        return "summer"
    if (9, 22) <= md < (12, 21):
        return "autumn"
    return "winter"


def segment_events(
    q,
    prcp,
    dt: float,
    peak_quant: float = 0.995,
    peak_value: float = 0.0,
    max_duration: float = 240.0,
    *,
    times=None,
    codes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Hydrograph segmentation (spec §13.2) of observed (or any) discharge.

    Parameters
    ----------
    q
        Discharge (gauge, time) or (time,), m³/s; missing values < 0 or NaN.
    prcp
        Basin-mean rain, same shape (any unit: only its shape in time matters).
    dt
        Time step, s.
    peak_quant, peak_value
        A peak counts if it exceeds ``max(quantile(q, peak_quant), peak_value)`` (m³/s).
    max_duration
        Expected maximum duration of an event, h.
    times
        Time labels of the steps (optional; smash labels step k with ``start + k·dt``).
    codes
        Gauge codes (default ``"0", "1", ...``).

    Returns
    -------
    pandas.DataFrame
        One row per event: ``code, start, end, multipeak, maxrainfall, flood, season`` (times
        when ``times`` is given) and the step indices ``gauge, i_start, i_end, i_flood,
        i_maxrainfall`` (``i_end`` inclusive).
    """
    q = np.atleast_2d(np.asarray(q, dtype=np.float64))
    prcp = np.atleast_2d(np.asarray(prcp, dtype=np.float64))
    if codes is None:
        codes = [str(g) for g in range(q.shape[0])]
    rows = []
    for g in range(q.shape[0]):
        for s, e, multi in _segment_one(q[g], prcp[g], dt, peak_quant, peak_value, max_duration):
            qe = np.where(_valid(q[g, s : e + 1]), q[g, s : e + 1], -np.inf)
            i_flood = s + int(np.argmax(qe))
            i_rain = s + int(np.argmax(prcp[g, s : e + 1]))
            row = {"code": codes[g], "gauge": g, "i_start": s, "i_end": e,
                   "i_flood": i_flood, "i_maxrainfall": i_rain, "multipeak": multi}
            if times is not None:
                t = pd.DatetimeIndex(times)
                row.update(start=t[s], end=t[e], maxrainfall=t[i_rain], flood=t[i_flood],
                           season=_season(t[i_flood]))
            rows.append(row)
    cols = ["code", "start", "end", "multipeak", "maxrainfall", "flood", "season",
            "gauge", "i_start", "i_end", "i_flood", "i_maxrainfall"]
    df = pd.DataFrame(rows, columns=cols if times is not None else
                      ["code", "multipeak", "gauge", "i_start", "i_end", "i_flood",
                       "i_maxrainfall"])
    return df


def event_masks(events: pd.DataFrame, n_gauge: int, n_time: int) -> np.ndarray:
    """Boolean masks (gauge, event, time) from :func:`segment_events` (padded with empty
    events to the largest event count)."""
    counts = events.groupby("gauge").size() if len(events) else pd.Series(dtype=int)
    n_ev = max(int(counts.max()) if len(counts) else 0, 1)
    mask = np.zeros((n_gauge, n_ev, n_time), dtype=bool)
    k = np.zeros(n_gauge, dtype=int)
    for _, r in events.iterrows():
        g = int(r["gauge"])
        mask[g, k[g], int(r["i_start"]) : int(r["i_end"]) + 1] = True
        k[g] += 1
    return mask


# ----------------------------------------------------------------------------- JAX versions


def _masked_quantile(x, m, f):
    """Linear-interpolation quantile of x over the True entries of m (differentiable in x)."""
    n = m.sum()
    xs = jnp.sort(jnp.where(m, x, jnp.inf))
    pos = f * (n - 1)
    i0 = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, x.shape[-1] - 1)
    i1 = jnp.clip(i0 + 1, 0, jnp.maximum(n - 1, 0))
    w = pos - jnp.floor(pos)
    x0 = xs[i0]
    x1 = jnp.where(w > 0, xs[i1], x0)
    return x0 + w * (x1 - x0)


def _pass(x, m, b0, a, reverse):
    """One filter pass over the valid steps of x; invalid steps are skipped (carry kept)."""

    def step(carry, inp):
        b_prev, x_prev, started = carry
        xi, mi = inp
        bi = jnp.where(started, jnp.minimum(xi, a * b_prev + (1 - a) / 2 * (xi + x_prev)), b0)
        bi = jnp.where(mi, bi, b_prev)
        return (bi, jnp.where(mi, xi, x_prev), started | mi), bi

    init = (b0, x[0] * 0.0, jnp.array(False))
    _, b = jax.lax.scan(step, init, (x, m), reverse=reverse)
    return b


def baseflow_jax(q, mask, a: float = ALPHA):
    """Differentiable three-pass baseflow of q (time,) over the steps where ``mask`` holds.

    Equal to :func:`baseflow_np` on ``q[mask]`` (values at masked-out steps are meaningless).
    """
    m = mask
    n = jnp.maximum(m.sum(), 1)
    first = jnp.argmax(m)
    last = q.shape[-1] - 1 - jnp.argmax(m[::-1])
    mean = jnp.sum(jnp.where(m, q, 0.0)) / n
    q25 = _masked_quantile(q, m, 0.25)
    b0 = jnp.where(q[first] < q25, q[first], mean / 1.5)
    b1 = _pass(q, m, b0, a, reverse=False)
    mean1 = jnp.sum(jnp.where(m, b1, 0.0)) / n
    b2 = _pass(b1, m, jnp.minimum(q[last] / 1.2, mean1), a, reverse=True)
    mean2 = jnp.sum(jnp.where(m, b2, 0.0)) / n
    b3 = _pass(b2, m, jnp.minimum(q[first] / 1.2, mean2), a, reverse=False)
    return b3, q - b3


def _ratio(a, b):
    """a / b for b >= 0; inf where b = 0, with a finite gradient there (double where)."""
    pos = b > 0
    return jnp.where(pos, a / jnp.where(pos, b, 1.0), jnp.inf)


def continuous_signatures_jax(q, p, mask) -> dict:
    """Continuous signatures of one gauge (q, p (time,), m³/s) over the steps of ``mask``."""
    qm = jnp.where(mask, q, 0.0)
    pm = jnp.where(mask, p, 0.0)
    base, quick = baseflow_jax(q, mask)
    sp, sq = pm.sum(), qm.sum()
    sb = jnp.where(mask, base, 0.0).sum()
    sf = jnp.where(mask, quick, 0.0).sum()
    out = {"Crc": _ratio(sq, sp), "Crchf": _ratio(sf, sp), "Crclf": _ratio(sb, sp), "Crch2r": _ratio(sf, sq)}
    for k, f in _FP.items():
        out[k] = _masked_quantile(q, mask, f)
    return out


def event_signatures_jax(q, p, mask) -> dict:
    """Event signatures of one event (mask = event steps ∧ valid observation), one gauge."""
    n = jnp.maximum(mask.sum(), 1)
    base, quick = baseflow_jax(q, mask)
    sp = jnp.where(mask, p, 0.0).sum()
    sq = jnp.where(mask, q, 0.0).sum()
    sb = jnp.where(mask, base, 0.0).sum()
    sf = jnp.where(mask, quick, 0.0).sum()
    qmax = jnp.where(mask, q, -jnp.inf)
    # Elt counts steps over the (compressed) valid steps, like the NumPy reference
    idx = jnp.cumsum(mask) - 1
    elt = idx[jnp.argmax(qmax)] - idx[jnp.argmax(jnp.where(mask, p, -jnp.inf))]
    return {
        "Eff": sf / n, "Ebf": sb / n, "Erc": _ratio(sq, sp), "Erchf": _ratio(sf, sp), "Erclf": _ratio(sb, sp),
        "Erch2r": _ratio(sf, sq), "Elt": elt.astype(q.dtype), "Epf": qmax.max(),
    }


# ----------------------------------------------------------------------------- cost components


def _obs_mask(qo):
    return jnp.isfinite(qo) & (qo >= 0)


def _continuous_cost(name: str) -> Callable:
    def j(qo, qs, rain, events=None):
        """(S_sim/S_obs − 1)² per gauge, 0 where S_obs ≤ 0 (spec §9.1) or undefined (no rain)."""

        def one(qo_g, qs_g, p_g):
            m = _obs_mask(qo_g)
            qo_c = jnp.where(m, qo_g, 0.0)
            so = jax.lax.stop_gradient(continuous_signatures_jax(qo_c, p_g, m)[name])
            ss = continuous_signatures_jax(qs_g, p_g, m)[name]
            ok = (so > 0) & jnp.isfinite(so)
            return jnp.where(ok, (jnp.where(ok, ss, 1.0) / jnp.where(ok, so, 1.0) - 1.0) ** 2, 0.0)

        return jax.vmap(one)(qo, qs, rain)

    j.__name__ = name
    return j


def _event_cost(name: str) -> Callable:
    def j(qo, qs, rain, events):
        """Mean over observed events with S_obs,e > 0 of (S_sim,e/S_obs,e − 1)² (spec §9.1).

        ``events``: boolean masks (gauge, event, time) from :func:`event_masks`. An event
        counts when it holds observations and S_obs,e is finite (not a ratio over no rain, e.g.
        an event clipped by the warm-up) and > 0. Where no event counts, smash divides by zero
        (NaN, spec §16.2); we return 0, as for a continuous signature with S_obs ≤ 0, so that a
        calibration or validation cost stays finite.
        """
        events = jnp.asarray(events)

        def one(qo_g, qs_g, p_g, ev_g):
            m = _obs_mask(qo_g)
            qo_c = jnp.where(m, qo_g, 0.0)

            def per_event(em):
                mm = em & m
                so = jax.lax.stop_gradient(event_signatures_jax(qo_c, p_g, mm)[name])
                ss = event_signatures_jax(qs_g, p_g, mm)[name]
                ok = (so > 0) & jnp.isfinite(so) & mm.any()
                return jnp.where(ok, (jnp.where(ok, ss, 1.0) / jnp.where(ok, so, 1.0) - 1.0) ** 2, 0.0), ok

            val, ok = jax.vmap(per_event)(ev_g)
            return val.sum() / jnp.maximum(ok.sum(), 1)

        return jax.vmap(one)(qo, qs, rain, events)

    j.__name__ = name
    return j


#: name -> j(qo, qs, rain, events) -> (gauge,) cost; qo, qs, rain (gauge, time) in m³/s,
#: events (gauge, event, time) boolean masks from the observed series (ignored by C*).
SIGNATURE_COMPONENTS: dict[str, Callable] = {
    **{k: _continuous_cost(k) for k in CONTINUOUS},
    **{k: _event_cost(k) for k in EVENT},
}


def signature_cost(name: str, qs, qo, prcp_m3s, events=None):
    """Per-gauge cost component ``name`` (one of :data:`SIGNATURE_COMPONENTS`)."""
    return SIGNATURE_COMPONENTS[name](qo, qs, prcp_m3s, events)


# ----------------------------------------------------------------------------- evaluation


def gauge_rain_m3s(basin, g_area=None) -> np.ndarray:
    """The rain signatures use: each gauge's basin-mean precipitation as a flow, ``P·area·1e-3/dt``.

    ``(gauge, time)`` float64 in m³/s from ``mean_prcp`` (mm per step) and ``area_dln`` (m², or
    ``g_area``); missing rain (negative, NaN) stays as it is.
    """
    area = np.asarray(basin["area_dln"] if g_area is None else g_area, dtype=np.float64)
    dt = float(basin.attrs["dt"])
    p = np.asarray(basin["mean_prcp"].transpose("gauge", "time"), dtype=np.float64)
    return np.where(p >= 0, p * area[:, None] * 1e-3 / dt, p)


def signatures(
    result_q,
    basin,
    kinds: Sequence[str] = ("continuous", "event"),
    *,
    events: pd.DataFrame | None = None,
    area=None,
    **seg_kwargs,
) -> dict[str, pd.DataFrame]:
    """Signatures per gauge (and per event) of a discharge, for evaluation.

    Parameters
    ----------
    result_q
        Discharge (gauge, time), m³/s: simulated, or ``basin["qobs"]`` for the observed ones.
        A DataArray or an array.
    basin
        Basin Dataset with ``qobs`` (gauge, time), ``mean_prcp`` (gauge, time) mm per step and
        ``attrs["dt"]`` in s; the gauge drained areas (m²) from ``area`` or ``basin["area_dln"]``.
    kinds
        ``"continuous"`` and/or ``"event"``.
    events
        Events (from :func:`segment_events`); by default the segmentation of ``qobs`` with
        ``seg_kwargs`` (like smash's default ``by="obs"``).

    Returns
    -------
    dict
        ``{"cont": DataFrame (code, Crc, ...), "event": DataFrame (code, start, end, ...)}``.
    """
    q = np.asarray(result_q, dtype=np.float64)
    p = gauge_rain_m3s(basin, area)
    codes = [str(c) for c in np.asarray(basin["gauge"].values)]
    out = {}
    if "continuous" in kinds:
        rows = [{"code": c, **continuous_signatures_np(q[g], p[g])} for g, c in enumerate(codes)]
        out["cont"] = pd.DataFrame(rows, columns=["code", *CONTINUOUS])
    if "event" in kinds:
        if events is None:
            times = basin["time"].values - np.timedelta64(int(basin.attrs["dt"]), "s")
            events = segment_events(basin["qobs"].values, basin["mean_prcp"].values,
                                    float(basin.attrs["dt"]), times=times, codes=codes,
                                    **seg_kwargs)
        rows = []
        for _, r in events.iterrows():
            g = int(r["gauge"])
            s = event_signatures_np(q[g], p[g], int(r["i_start"]), int(r["i_end"]))
            rows.append({**{k: r[k] for k in ("code", "season", "start", "end", "multipeak")
                            if k in r}, **s})
        out["event"] = pd.DataFrame(rows)
    return out
