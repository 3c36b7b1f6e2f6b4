"""Evaluation table of a simulation (smash's ``evaluation``, spec 13.4).

Owns :func:`evaluate`, which applies the scores of :data:`~hybridhydro.cost.metrics.METRICS`
to a :func:`~hybridhydro.simulate.simulate` result and the basin's ``qobs`` (m3/s) over a
period ``(start, end]`` of step labels (:mod:`hybridhydro.periods`) and returns an
``xarray.Dataset`` along ``gauge``.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import jax.numpy as jnp
import numpy as np
import xarray as xr

from ..periods import period_mask
from .metrics import METRIC_INFO, METRICS, UNDEFINED_WHEN, apply_compiled, lookup, observed_mask, undefined_reason

__all__ = ["evaluate"]


# ------------------------------------------------------------------------------ evaluation


def evaluate(result, basin: xr.Dataset, metrics: str | Sequence[str] = ("nse", "kge"), period=None):
    """Evaluation table of a simulation per gauge (smash's ``evaluation``, spec 13.4).

    Parameters
    ----------
    result
        A :func:`~hybridhydro.simulate.simulate` result (its ``q`` (gauge, time) in m3/s) or
        that DataArray itself.
    basin
        The basin Dataset whose ``qobs`` (gauge, time) m3/s (NaN = missing) is the reference;
        matched to the simulation by ``gauge`` and ``time`` labels.
    metrics
        Names in :data:`~hybridhydro.cost.metrics.METRICS` (the scores, not turned into losses).
    period
        ``(start, end)``: the steps labelled ``start < t <= end`` are evaluated (a label is the
        end of its step; :mod:`hybridhydro.periods`), either side may be None; None: every step.

    Returns
    -------
    xarray.Dataset
        One variable per metric along ``gauge`` (attrs ``long_name``, ``units``); coordinate
        ``n_obs`` (the observations used); attrs ``metric`` (each metric's definition),
        ``start``, ``end`` (the first and last step labels evaluated). A gauge without
        observation in the period gets NaN and a warning; so does a metric undefined on a
        gauge's observations (:data:`~hybridhydro.cost.metrics.UNDEFINED_WHEN`: NSE, NNSE, KGE
        on constant, single or all-zero observations; MAPE, LGRM without an observation above
        zero), the warning naming the metric, the gauges and why. KGE on a constant simulation
        is defined (its correlation r is taken as 0) and warned about.

    Raises
    ------
    ValueError
        No metric or an unknown one, a result without ``q``, a basin without ``qobs``, a period
        that is not a pair of dates or that holds no step of the simulation.
    """
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not names:
        raise ValueError(f"evaluate: metrics is empty; name at least one of {', '.join(METRICS)}")
    for name in names:
        lookup(METRICS, name, "metric")
    if isinstance(result, xr.Dataset):
        if "q" not in result:
            raise ValueError("evaluate: the result has no 'q' (gauge, time) discharge; pass a hybridhydro.simulate "
                             "result (or its q DataArray)")
        qs = result["q"]
    elif isinstance(result, xr.DataArray):
        qs = result
    else:
        raise ValueError(f"evaluate: result must be a hybridhydro.simulate result or its q DataArray, got "
                         f"{type(result).__name__}")
    if set(qs.dims) != {"gauge", "time"}:
        raise ValueError(f"evaluate: the simulated discharge must have dims (gauge, time), got {qs.dims}")
    if "qobs" not in basin:
        raise ValueError("evaluate: the basin has no 'qobs' (gauge, time) observed discharge")
    qs = qs.transpose("gauge", "time")
    try:
        qo = basin["qobs"].transpose("gauge", "time").sel(gauge=qs["gauge"], time=qs["time"])
    except KeyError as err:
        raise ValueError(
            f"evaluate: the basin's qobs does not cover the simulation's gauges/times ({err}); "
            "evaluate a result with the basin it was simulated on"
        ) from None
    full = f"{qs['time'].values[0]} to {qs['time'].values[-1]}"
    inside = period_mask(qs["time"].values, period, "evaluate: period")
    if not inside.any():
        raise ValueError(f"evaluate: the period {period} holds no time step; the simulation covers {full}")
    qs = qs.isel(time=inside)
    qo = qo.isel(time=inside)
    qo_t = jnp.asarray(np.asarray(qo.values, np.float32).T)
    qs_t = jnp.asarray(np.asarray(qs.values, np.float32).T)
    valid = observed_mask(qo_t)
    n_obs = np.asarray(jnp.sum(valid, axis=0))
    period = f"{qs['time'].values[0]} to {qs['time'].values[-1]}"
    if np.any(n_obs == 0):
        codes = [str(c) for c in np.asarray(qs["gauge"].values)[n_obs == 0]]
        warnings.warn(
            f"evaluate: gauge(s) {codes} have no observation in {period}; their metrics are NaN", stacklevel=2
        )
    codes = [str(c) for c in np.asarray(qs["gauge"].values)]
    observed = np.asarray(qo_t, np.float64)
    mask = np.asarray(valid)
    data = {}
    for name in names:
        vals = np.asarray(apply_compiled(METRICS[name], qo_t, qs_t, valid, {}), dtype=np.float32)
        _warn_undefined(name, vals, observed, mask, codes, period)
        if name in ("mape", "lgrm"):  # defined, but blind to some observed steps: say so
            # mape skips zero observations (it would divide by 0); lgrm skips steps simulated at 0 or
            # less where water was observed (its logarithm is undefined: no penalty there). lgrm's
            # zero observations are not counted: qo ln(qs/qo)^2 tends to 0 with qo anyway.
            simulated = np.asarray(qs_t, np.float64)
            blind = mask & (observed == 0) if name == "mape" else mask & (observed > 0) & ~(simulated > 0)
            skipped = {code: int(blind[:, g].sum()) for g, code in enumerate(codes)
                       if blind[:, g].any() and np.isfinite(vals[g])}
            if skipped:
                what = ("zero observations (it would divide by 0)" if name == "mape" else
                        "steps simulated at 0 m3/s or less where water was observed (its logarithm is undefined "
                        "there: they add no penalty)")
                warnings.warn(f"evaluate: {name} skips {what}: {skipped} step(s) per gauge in {period}", UserWarning,
                              stacklevel=2)
        if name == "kge":
            simulated = np.asarray(qs_t, np.float64)
            flat = [c for g, c in enumerate(codes) if mask[:, g].sum() > 1 and np.isfinite(vals[g])
                    and np.ptp(simulated[mask[:, g], g]) == 0]
            if flat:
                warnings.warn(f"evaluate: the simulation is constant at gauge(s) {flat} in {period}: KGE takes its "
                              "correlation r as 0 there (r is undefined for a constant series)", UserWarning,
                              stacklevel=2)
        info, units = METRIC_INFO.get(name, ("", ""))
        data[name] = xr.DataArray(vals, dims=("gauge",), attrs={"long_name": info, "units": units})
    out = xr.Dataset(data, coords={"gauge": qs["gauge"].values, "n_obs": ("gauge", n_obs.astype(np.int64))})
    out.attrs = {
        "metric": "; ".join(f"{n}: {METRIC_INFO.get(n, ('',))[0]}" for n in names),
        "start": str(qs["time"].values[0]),
        "end": str(qs["time"].values[-1]),
    }
    return out


def _warn_undefined(name, values, observed, valid, codes, period) -> None:
    """One warning per metric for the gauges (with observations) where it is undefined, saying why."""
    kind = UNDEFINED_WHEN.get(name)
    reasons = {}
    for g, code in enumerate(codes):
        if not valid[:, g].any() or not np.isnan(values[g]):
            continue
        reason = undefined_reason(kind, observed[valid[:, g], g]) or "undefined on these observations"
        reasons.setdefault(reason, []).append(code)
    if reasons:
        why = "; ".join(f"{codes_} have {reason}" if len(codes_) > 1 else f"{codes_[0]} has {reason}"
                        for reason, codes_ in reasons.items())
        warnings.warn(f"evaluate: {name} is undefined at gauge(s) {sum(reasons.values(), [])} in {period}, so it "
                      f"is NaN there: {why}", UserWarning, stacklevel=3)
