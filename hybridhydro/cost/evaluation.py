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
from .metrics import METRIC_INFO, METRICS, apply_compiled, lookup, observed_mask

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
        observation in the period gets NaN and a warning.
    """
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for name in names:
        lookup(METRICS, name, "metric")
    qs = result["q"] if isinstance(result, xr.Dataset) else result
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
    data = {}
    for name in names:
        vals = np.asarray(apply_compiled(METRICS[name], qo_t, qs_t, valid, {}), dtype=np.float32)
        info, units = METRIC_INFO.get(name, ("", ""))
        data[name] = xr.DataArray(vals, dims=("gauge",), attrs={"long_name": info, "units": units})
    out = xr.Dataset(data, coords={"gauge": qs["gauge"].values, "n_obs": ("gauge", n_obs.astype(np.int64))})
    out.attrs = {
        "metric": "; ".join(f"{n}: {METRIC_INFO.get(n, ('',))[0]}" for n in names),
        "start": str(qs["time"].values[0]),
        "end": str(qs["time"].values[-1]),
    }
    return out
