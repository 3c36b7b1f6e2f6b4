"""Time periods and gauge choice: one convention for every function that takes them.

**The period convention.** A time label is the *end* of its step: the step labelled ``t``
covers ``(t - dt, t]``, as in smash and in every hybridhydro result. A period
``(start, end)`` therefore holds the steps labelled ``start < t <= end``, the steps whose
whole interval lies inside it: ``("2014-10-01", "2014-11-01")`` on hourly data starts with
the step labelled 2014-10-01 01:00 and ends with the one labelled 2014-11-01 00:00.
``None`` leaves a side open. :func:`hybridhydro.calibrate` (``period``,
``validation_period``), :func:`hybridhydro.evaluate` (``period``), :func:`hybridhydro.prepare_run`
(``period``) and the protocol's splits all read periods this way.

Gauges: ``"dws"`` is the most downstream gauge (largest drained area, smash's default),
``"all"`` every gauge, or a list of gauge codes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["gauge_areas", "most_downstream_gauge", "period_labels", "period_mask", "select_gauges"]


def _bounds(period, what: str) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    if period is None:
        return None, None
    if isinstance(period, (str, bytes)) or len(period) != 2:
        raise ValueError(f"{what} {period!r} must be a pair (start, end) of dates (either may be None)")
    try:
        start, end = (None if p is None else pd.Timestamp(p) for p in period)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{what} {period!r}: {err}; write dates as 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM'") from None
    if start is not None and end is not None and not start < end:
        raise ValueError(f"{what} {period}: the start must be before the end")
    return start, end


def period_mask(times, period, what: str = "period") -> np.ndarray:
    """Boolean ``(time,)`` mask of the steps of ``times`` inside ``period`` = ``(start, end]``.

    ``times`` are step labels (ends of steps); ``period=None`` selects every step.

    Raises
    ------
    ValueError
        A start not before the end, or a period that lies outside ``times`` altogether.
    """
    times = pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]"))
    start, end = _bounds(period, what)
    mask = np.ones(times.size, bool)
    if start is None and end is None:
        return mask
    # The data cover (first label - dt, last label].
    lo = times[0] - (times[1] - times[0] if times.size > 1 else pd.Timedelta(0))
    hi = times[-1]
    if (start is not None and start >= hi) or (end is not None and end <= lo):
        raise ValueError(
            f"{what} {period} lies outside the basin's data ({times[0]} .. {times[-1]}); "
            "choose dates inside it or read a longer basin"
        )
    if start is not None:
        mask &= times > start
    if end is not None:
        mask &= times <= end
    return mask


def period_labels(times, period, what: str = "period") -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last step labels of ``times`` inside ``period`` (``(start, end]``)."""
    times = pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]"))
    inside = times[period_mask(times, period, what)]
    if inside.size == 0:
        raise ValueError(f"{what} {period} holds no time step of the data ({times[0]} .. {times[-1]}); widen it")
    return inside[0], inside[-1]


def gauge_areas(basin: xr.Dataset) -> np.ndarray:
    """Drained area of each gauge (``area_dln``, the delineated one, else the declared ``area``), m2."""
    return np.asarray(basin["area_dln"].values if "area_dln" in basin else basin["area"].values, dtype=np.float64)


def most_downstream_gauge(basin: xr.Dataset) -> int:
    """Index of the gauge draining the largest area: smash's ``"dws"``."""
    return int(np.nanargmax(gauge_areas(basin)))


def select_gauges(basin: xr.Dataset, gauges="dws") -> np.ndarray:
    """Indices along ``gauge`` of ``"dws"`` (default), ``"all"`` or a list of gauge codes."""
    codes = [str(c) for c in basin["gauge"].values] if "gauge" in basin.coords else []
    if not codes:
        raise ValueError("the basin has no gauge: this needs observed discharge at one gauge at least")
    if gauges is None or (isinstance(gauges, str) and gauges == "dws"):
        return np.array([most_downstream_gauge(basin)])
    if isinstance(gauges, str) and gauges == "all":
        return np.arange(len(codes))
    gauges = [gauges] if isinstance(gauges, str) else list(gauges)
    unknown = [g for g in gauges if str(g) not in codes]
    if unknown:
        raise ValueError(f"unknown gauge(s) {unknown}; the basin's gauges are {codes} (or 'dws', 'all')")
    return np.array([codes.index(str(g)) for g in gauges])
