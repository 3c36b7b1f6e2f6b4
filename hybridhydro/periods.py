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

import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .dates import parse_date

__all__ = ["gauge_areas", "most_downstream_gauge", "period_labels", "period_mask", "select_gauges"]


def _date(value, what: str, period) -> pd.Timestamp | None:
    """One side of a period: None, or a date read by :func:`hybridhydro.dates.parse_date` (ISO
    text, compact digits year first, a datetime, a numpy datetime64); other numbers, day-first
    text and time zones are refused."""
    if value is None:
        return None
    if isinstance(value, (xr.DataArray, np.ndarray)) and np.ndim(value) == 0:
        value = np.asarray(value).item() if np.asarray(value).dtype.kind != "M" else np.asarray(value)[()]
    hint = "write dates as 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM' (or None for an open side)"
    return parse_date(value, f"{what}={period!r}: {value!r}", fix=hint)


def _bounds(period, what: str) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    if period is None:
        return None, None
    pair = isinstance(period, (Sequence, np.ndarray, pd.Index)) and not isinstance(period, (str, bytes, Mapping))
    if not pair or len(period) != 2:
        raise ValueError(f"{what}={period!r} must be a pair (start, end) of dates (either may be None), "
                         "e.g. ('2014-09-15', '2014-11-14')")
    start, end = (_date(p, what, period) for p in period)
    if start is not None and end is not None and not start < end:
        raise ValueError(f"{what}={period!r}: the start must be before the end")
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
    # The data cover (first label - dt, last label] (one step alone: its label, dt being unknown here).
    lo = times[0] - (times[1] - times[0] if times.size > 1 else pd.Timedelta(1, "ns"))
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


def select_gauges(basin: xr.Dataset, gauges="dws", what: str = "gauges") -> np.ndarray:
    """Indices along ``gauge`` of ``"dws"`` (default), ``"all"`` or a list of gauge codes.

    Raises
    ------
    ValueError
        An empty list, a code given twice, something that is not a gauge code, or an unknown
        code; the message names the argument (``what``) and lists the basin's gauges.
    """
    codes = [str(c) for c in basin["gauge"].values] if "gauge" in basin.coords else []
    if not codes:
        raise ValueError("the basin has no gauge: this needs observed discharge at one gauge at least")
    if gauges is None or (isinstance(gauges, str) and gauges == "dws"):
        return np.array([most_downstream_gauge(basin)])
    if isinstance(gauges, str) and gauges == "all":
        return np.arange(len(codes))
    choices = f"the basin's gauges are {codes} (or 'dws', 'all')"
    if isinstance(gauges, str):
        gauges = [gauges]
    elif isinstance(gauges, (Sequence, np.ndarray)) and not isinstance(gauges, bytes):
        gauges = list(gauges)
    else:
        raise ValueError(f"{what}={gauges!r} must be 'dws', 'all' or a list of gauge codes; {choices}")
    if not gauges:
        raise ValueError(f"{what}={gauges!r} selects no gauge; {choices}")
    odd = [g for g in gauges if not isinstance(g, (str, np.str_, numbers.Integral)) or isinstance(g, bool)]
    if odd:
        raise ValueError(f"{what}: {odd[0]!r} is not a gauge code; {choices}")
    unknown = [g for g in gauges if str(g) not in codes]
    if unknown:
        raise ValueError(f"{what}: unknown gauge(s) {unknown}; {choices}")
    twice = sorted({str(g) for g in gauges if [str(h) for h in gauges].count(str(g)) > 1})
    if twice:
        raise ValueError(f"{what}: gauge(s) {twice} given more than once (each gauge counts once); {choices}")
    return np.array([codes.index(str(g)) for g in gauges])
