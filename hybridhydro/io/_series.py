"""Forcing time series from dated GeoTIFF files (precipitation, PET, daily interannual PET)."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..basin import user_stacklevel
from ._rasters import Grid, RasterReader

#: Hourly weights that spread a daily PET over the day, indexed by the hour of the step end
#: (smash's fixed profile; the weights sum to 1).
PET_HOURLY_PROFILE = np.zeros(24, dtype=np.float32)
PET_HOURLY_PROFILE[7:19] = [0.035, 0.062, 0.079, 0.097, 0.110, 0.117, 0.117, 0.110, 0.097, 0.079, 0.062, 0.035]

_DIGITS = re.compile(r"\d+")
_LEAP_MMDD = pd.date_range("2000-01-01", "2000-12-31", freq="D").strftime("%m%d").to_numpy()
_MMDD_SET = frozenset(_LEAP_MMDD)


def date_format(dt: float) -> tuple[int, str]:
    """Number of digits and strftime format of the date in forcing file names for a step ``dt`` (s)."""
    return (12, "%Y%m%d%H%M") if dt < 86400 else (8, "%Y%m%d")


def _dates_in_names(stems: list[str], ndigit: int, fmt: str) -> list[pd.Timestamp | None]:
    """For each name, the first run of at least ``ndigit`` digits whose first digits parse with ``fmt``."""
    runs = [[r[:ndigit] for r in _DIGITS.findall(stem) if len(r) >= ndigit] for stem in stems]
    first = pd.to_datetime([r[0] if r else "" for r in runs], format=fmt, errors="coerce")
    dates: list[pd.Timestamp | None] = []
    for date, candidates in zip(first, runs):
        if date is pd.NaT and len(candidates) > 1:  # rare: try the other digit runs
            later = pd.to_datetime(candidates[1:], format=fmt, errors="coerce").dropna()
            date = later[0] if len(later) else pd.NaT
        dates.append(None if date is pd.NaT else pd.Timestamp(date))
    return dates


def list_tifs(directory: Path, what: str) -> list[str]:
    """All ``*.tif``/``*.tiff`` files under ``directory`` (recursive), sorted paths; a clear error if none."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{what}: directory {directory} does not exist; create it or set the '{what}_directory' key of the setup YAML"
        )
    files = []
    for root, _, names in os.walk(directory):
        files.extend(os.path.join(root, n) for n in names if n.lower().endswith((".tif", ".tiff")))
    if not files:
        raise FileNotFoundError(f"{what}: no GeoTIFF (*.tif) file under {directory}")
    return sorted(files)


def dated_files(directory: Path, dt: float, what: str) -> dict[pd.Timestamp, str]:
    """Map step-end dates to files, the date parsed from each file name.

    The date is the first run of 12 digits (``%Y%m%d%H%M``, when ``dt < 86400``) or of 8 digits
    (``%Y%m%d``, daily) in the file name, e.g. ``rain_precipitation_201411231700_201411231700.tif``
    or ``201211020000_PT.tif``. Files without such a date are skipped with a warning; when two
    files carry the same date the first in sorted path order is kept, with a warning that names
    them. When most dates have several files (hourly files read with ``dt = 86400``: the date
    keeps only the day), it is an error that says what ``dt`` the files look like.
    """
    ndigit, fmt = date_format(dt)
    paths = list_tifs(directory, what)
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    found: dict[pd.Timestamp, str] = {}
    undated: list[str] = []
    duplicates: dict[pd.Timestamp, list[str]] = {}
    for path, date in zip(paths, _dates_in_names(stems, ndigit, fmt)):
        if date is None:
            undated.append(path)
        elif date not in found:
            found[date] = path
        else:
            duplicates.setdefault(date, [found[date]]).append(path)
    if duplicates:
        date, same = next(iter(duplicates.items()))
        names = ", ".join(os.path.basename(p) for p in same[:3]) + (", ..." if len(same) > 3 else "")
        if len(duplicates) > len(found) / 2:
            finer = _DIGITS.findall(os.path.basename(same[1]))
            raise ValueError(
                f"{what}: {len(duplicates)} of the {len(found)} dates under {directory} have several files at the "
                f"precision of dt = {dt:g} s ({fmt}), e.g. {date:%Y-%m-%d %H:%M}: {names}; the files look finer than "
                f"dt: set dt in the setup YAML to their spacing (e.g. 3600 for hourly files"
                f"{', whose names hold ' + finer[0] if finer else ''})"
            )
        warnings.warn(
            f"{what}: {sum(len(v) - 1 for v in duplicates.values())} file(s) under {directory} repeat the date of "
            f"another ({len(duplicates)} date(s), e.g. {date:%Y-%m-%d %H:%M}: {names}); the first in sorted path order "
            "is read, the others are ignored",
            stacklevel=3,
        )
    if not found:
        raise ValueError(
            f"{what}: no file name under {directory} carries a date with {ndigit} digits ({fmt}) as expected for "
            f"dt = {dt:g} s (e.g. {os.path.basename(undated[0])}); rename the files so that they hold the step-end date"
        )
    if len(found) > 2:
        spacing = float(np.median(np.diff(np.sort(np.array(list(found), dtype="datetime64[s]"))).astype(np.int64)))
        if spacing < dt:
            raise ValueError(
                f"{what}: the files under {directory} are dated every {spacing:g} s (median) but dt = {dt:g} s: each "
                f"step would take one file's {what} as the whole step's and ignore the files between; set dt in the "
                f"setup YAML to {spacing:g}, or sum the files over steps of dt first"
            )
    if undated:
        warnings.warn(
            f"{what}: {len(undated)} file(s) under {directory} have no {fmt} date in their name and are ignored "
            f"(e.g. {os.path.basename(undated[0])})",
            stacklevel=3,
        )
    return found


def check_coverage(files: dict[pd.Timestamp, str], times: pd.DatetimeIndex, directory: Path, what: str) -> None:
    """Raise a ``ValueError`` when the steps ``times`` reach outside the dates of ``files``."""
    first, last = min(files), max(files)
    if times[0] < first or times[-1] > last:
        raise ValueError(
            f"{what}: the period needs files for step ends {times[0]} to {times[-1]}, but {directory} holds files "
            f"dated {first} to {last}; pass start/end (or set start_time/end_time in the setup YAML) within that range"
        )


def _progress(iterable, total: int, desc: str, progress: bool):
    from ..progress import bar  # the one switch (HYBRIDHYDRO_PROGRESS) that the pipeline's kernels set

    return bar(iterable, progress=progress, total=total, desc=desc, unit="file", leave=False)


def _warn_missing(missing: list[pd.Timestamp], total: int, what: str, directory: Path) -> None:
    if missing:
        shown = ", ".join(str(t) for t in missing[:5]) + (", ..." if len(missing) > 5 else "")
        warnings.warn(
            f"{what}: {len(missing)} of {total} step(s) have no file under {directory} and are NaN ({shown})",
            stacklevel=3,
        )


def read_series(
    files: dict[pd.Timestamp, str],
    times: pd.DatetimeIndex,
    grid: Grid,
    factor: float,
    *,
    what: str,
    directory: Path,
    progress: bool,
) -> tuple[np.ndarray, RasterReader]:
    """Read one raster per step onto ``grid``: float32 ``(time, y, x)``, times ``factor``.

    Missing files, no-data cells, cells outside the rasters and negative values are ``NaN``.
    """
    out = np.full((len(times), grid.nrow, grid.ncol), np.nan, dtype=np.float32)
    factor32 = np.float32(factor)
    present = [(k, files[t]) for k, t in enumerate(times) if t in files]
    missing = [t for t in times if t not in files]
    with RasterReader(grid, what=what) as reader:
        grids = reader.read_many(path for _, path in present)
        for (k, _), values in zip(present, _progress(grids, len(present), what, progress)):
            out[k] = values * factor32
    out[out < 0] = np.nan
    _warn_missing(missing, len(times), what, directory)
    return out, reader


def pet_day_weights(times: pd.DatetimeIndex, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Which daily file and which fraction of the daily PET each step gets.

    Returns
    -------
    mmdd : ndarray of str, shape (T,)
        ``%m%d`` of the daily interannual file for each step: the step end's day of year looked
        up in a leap-year calendar (so in non-leap years, from 1 March on, the previous calendar
        day's file is used, as smash does).
    weight : ndarray of float32, shape (T,)
        Fraction of the daily value: the hourly profile at the step end's hour, divided by the
        number of steps per hour when ``dt < 3600``, summed over the block of ``dt / 3600``
        hours of the day that holds the step end's hour when ``dt > 3600``; 1 for daily steps.
    """
    mmdd = _LEAP_MMDD[times.day_of_year.to_numpy() - 1]
    hour = times.hour.to_numpy()
    if dt >= 86400:
        weight = np.ones(len(times), dtype=np.float32)
    elif dt <= 3600:
        weight = PET_HOURLY_PROFILE[hour] * np.float32(dt / 3600)
    else:
        n = int(round(dt / 3600))
        if n * 3600 != dt or 24 % n:
            raise ValueError(
                f"daily_interannual_pet: a step of {dt:g} s cannot be spread over the day; use a dt that divides "
                "3600 s or a whole number of hours that divides 24"
            )
        blocks = PET_HOURLY_PROFILE.reshape(24 // n, n).sum(axis=1, dtype=np.float32)
        weight = blocks[hour // n]
    return mmdd, weight.astype(np.float32)


def read_daily_interannual(
    directory: Path,
    times: pd.DatetimeIndex,
    dt: float,
    grid: Grid,
    factor: float,
    *,
    progress: bool,
) -> tuple[np.ndarray, RasterReader]:
    """PET per step from up to 366 daily interannual rasters named ``%m%d...`` (e.g. ``0114_ETPJIA.tif``).

    PET (mm per step) = daily value x conversion factor x :func:`pet_day_weights` weight. Only
    the days the period needs are read. A missing day file makes every step of that day ``NaN``;
    a missing cell in a day file is ``NaN`` at the steps of non-zero weight and 0 at the others
    (smash multiplies its -99 by the weight, and -99 x 0 is not negative).
    """
    found = interannual_files(directory)
    mmdd, _ = pet_day_weights(times, dt)
    days = list(dict.fromkeys(mmdd))  # unique, in order of first use
    factor32 = np.float32(factor)
    daily: dict[str, np.ndarray] = {}
    wanted = [day for day in days if day in found]
    with RasterReader(grid, what="pet") as reader:
        grids = reader.read_many(found[day] for day in wanted)
        for day, values in zip(wanted, _progress(grids, len(wanted), "pet (daily interannual)", progress)):
            daily[day] = values * factor32  # factor first, as smash
    return expand_daily_interannual(daily, times, dt, (grid.nrow, grid.ncol), f"under {directory}"), reader


def interannual_files(directory: Path) -> dict[str, str]:
    """``{"%m%d": path}`` of the daily interannual rasters under ``directory`` (the first run of
    four or more digits of a file's name starts with its day, e.g. ``0114_ETPJIA.tif``)."""
    found: dict[str, str] = {}
    for path in list_tifs(directory, "pet"):
        run = next((r for r in _DIGITS.findall(os.path.basename(path)) if len(r) >= 4), None)
        if run is not None and run[:4] in _MMDD_SET and run[:4] not in found:
            found[run[:4]] = path
    if not found:
        raise ValueError(
            f"pet: daily_interannual_pet is set but no file name under {directory} starts with a %m%d day "
            "(e.g. 0114_ETPJIA.tif)"
        )
    return found


def day_of_year_key(day: int) -> str:
    """The ``%m%d`` of day ``day`` (1-366) of a leap-year calendar, as the daily interannual maps are keyed."""
    return str(_LEAP_MMDD[int(day) - 1])


def expand_daily_interannual(daily: Mapping[str, np.ndarray], times: pd.DatetimeIndex, dt: float,
                             shape: tuple[int, int], where: str) -> np.ndarray:
    """PET per step ``(time, y, x)`` float32 from daily interannual maps ``{"%m%d": (y, x) mm per day}``.

    The one operator of every road to a daily-interannual PET (the smash layout's files,
    :func:`hybridhydro.build_basin`'s climatology): each step takes its day's map (a leap-year
    calendar, as smash) times its :func:`pet_day_weights` weight; a step of zero weight is 0
    even where the map is missing (as smash: -99 x 0); negative values are missing (NaN); a
    day without a map makes its steps NaN, with a warning naming the days (``where`` says
    where they were looked for).
    """
    mmdd, weight = pet_day_weights(times, dt)
    out = np.full((len(times), *shape), np.nan, dtype=np.float32)
    for k, (day, w) in enumerate(zip(mmdd, weight)):
        if day in daily:
            out[k] = daily[day] * w if w else 0.0
    out[out < 0] = np.nan
    missing_days = [d for d in dict.fromkeys(mmdd) if d not in daily]
    if missing_days:
        nstep = int(np.isin(mmdd, missing_days).sum())
        warnings.warn(
            f"pet: no daily interannual map for day(s) {', '.join(missing_days[:10])}"
            f"{', ...' if len(missing_days) > 10 else ''} {where}; {nstep} of {len(times)} step(s) are NaN",
            stacklevel=user_stacklevel(),
        )
    return out
