"""Observed discharge: one CSV per gauge (header = date of the first value, one value per line).

Checked as read: the header must be a date written year first without a time zone
(``200601010000``, ``20060101``, ``2006-01-01 00:00``); an empty file is NaN with a warning;
a value that is not a number, infinite, or above :data:`MAX_DISCHARGE` (no river carries that)
is an error naming the file and line; negative values are missing (as in smash).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..basin import user_stacklevel
from ..dates import parse_date

#: A discharge no river carries (m3/s): the Amazon's largest floods are about 3e5 m3/s.
MAX_DISCHARGE = 1e6


def find_qobs_file(directory: Path, code: str) -> Path | None:
    """The CSV for gauge ``code``: first match of ``**/*<code>*.csv`` under ``directory`` (sorted)."""
    matches = sorted(directory.rglob(f"*{code}*.csv"))
    if len(matches) > 1:
        warnings.warn(
            f"qobs: {len(matches)} files under {directory} match gauge {code!r} ({', '.join(m.name for m in matches[:3])}); "
            f"using {matches[0]}",
            stacklevel=3,
        )
    return matches[0] if matches else None


def parse_header(header: str, path: Path) -> pd.Timestamp:
    """The date of the first value, from the CSV's header line (e.g. ``200601010000`` or ``19580801``),
    read by :func:`hybridhydro.dates.parse_date`."""
    text = header.strip().strip(",;").strip('"')
    fix = ("the first line must be the date of the first value, written year first without a time zone, e.g. "
           "200601010000 (%Y%m%d%H%M), 20060101 (%Y%m%d) or 2006-01-01 00:00")
    return parse_date(text, f"qobs: the header line of {path} is {header.strip()!r}, which", fix=fix)


def read_qobs_file(path: Path, times: pd.DatetimeIndex, dt: float) -> np.ndarray:
    """Discharge (m3 s-1) of one gauge at the step ends ``times``, float32, ``NaN`` when missing.

    Row ``i`` of the file (0-based, after the header) is the value at ``header + i * dt``; step
    ``k`` takes the row dated at its end. Negative values are missing. The file's last value is
    used (smash 1.3 never uses the last line of a qobs file; we consider that a bug).
    """
    lines = path.read_text().split("\n")
    if not any(line.strip() for line in lines):
        warnings.warn(f"qobs: {path} is empty; its gauge's qobs is NaN (write the date of the first value on line 1, "
                      "then one value per line)", stacklevel=user_stacklevel())
        return np.full(len(times), np.nan, dtype=np.float32)
    start = parse_header(lines[0], path)
    offset_s = (times[0] - start).total_seconds()
    first_row = offset_s / dt
    if first_row != int(first_row):
        raise ValueError(
            f"qobs: {path} starts at {start}, which is not on the model's step grid (step ends {times[0]}, "
            f"{times[0] + pd.Timedelta(seconds=dt)}, ... every {dt:g} s); fix the header date or the period"
        )
    first_row = int(first_row)
    body = lines[1:]
    while body and not body[-1].strip():
        body.pop()
    out = np.full(len(times), np.nan, dtype=np.float32)
    lo, hi = max(first_row, 0), min(first_row + len(times), len(body))
    if lo < hi:
        chunk = body[lo:hi]
        try:
            values = np.asarray(chunk, dtype=np.float64)
        except ValueError:
            bad = next(i for i, s in enumerate(chunk) if not _is_float(s))
            raise ValueError(
                f"qobs: line {lo + bad + 2} of {path} is {chunk[bad]!r}, not a number; write one discharge value "
                "(m3/s) per line, a negative value for missing"
            ) from None
        bad = np.flatnonzero(~(np.abs(values) <= MAX_DISCHARGE))  # inf, and NaN written as such, are caught below
        bad = bad[~np.isnan(values[bad])]
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"qobs: line {lo + i + 2} of {path} is {chunk[i].strip()!r}, not a discharge any river carries "
                f"(above {MAX_DISCHARGE:g} m3/s or infinite; {bad.size} such value(s) in the period); fix it, or write "
                "a negative value for missing"
            )
        out[lo - first_row : hi - first_row] = values.astype(np.float32)
    out[out < 0] = np.nan
    return out


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_qobs(directory: Path, codes, times: pd.DatetimeIndex, dt: float) -> np.ndarray:
    """Observed discharge ``(gauge, time)`` float32 in m3 s-1 for each gauge code (``NaN`` if missing)."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"qobs: directory {directory} does not exist; create it or set the 'qobs_directory' key of the setup YAML "
            "(or read_qobs: false)"
        )
    out = np.full((len(codes), len(times)), np.nan, dtype=np.float32)
    absent = []
    for g, code in enumerate(codes):
        path = find_qobs_file(directory, str(code))
        if path is None:
            absent.append(str(code))
            continue
        out[g] = read_qobs_file(path, times, dt)
    if absent:
        warnings.warn(
            f"qobs: no file matching *<code>*.csv under {directory} for gauge(s) {', '.join(absent)}; their qobs is NaN",
            stacklevel=3,
        )
    return out


def qobs_from_table(table, codes, times: pd.DatetimeIndex, where: str = "qobs") -> np.ndarray:
    """Observed discharge ``(gauge, time)`` float32 in m3 s-1 from a table: one column per gauge
    code, indexed by the step-end times (a :class:`pandas.DataFrame`).

    Steps absent from the table and negative values are ``NaN`` (missing, as in the CSV files);
    a gauge without a column is ``NaN`` with a warning; an infinite value or one above
    :data:`MAX_DISCHARGE` is an error naming the gauge and the time.
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{where}: expected a pandas DataFrame (one column per gauge code, indexed by the step-end "
                        f"times, values in m3/s), got {type(table).__name__}")
    try:
        index = pd.DatetimeIndex(table.index)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: the index must hold the step-end times (datetimes), got {table.index[:3].tolist()}") \
            from None
    if index.tz is not None:
        raise ValueError(f"{where}: the index carries a time zone ({index.tz}); the model's times carry none: use "
                         "table.tz_localize(None) after converting to the forcing's time")
    if index.has_duplicates:
        raise ValueError(f"{where}: the time {index[index.duplicated()][0]} appears twice in the index; drop duplicates")
    columns = {str(c).strip(): c for c in table.columns}
    out = np.full((len(codes), len(times)), np.nan, dtype=np.float32)
    absent = []
    for g, code in enumerate(map(str, codes)):
        if code not in columns:
            absent.append(code)
            continue
        series = pd.Series(pd.to_numeric(table[columns[code]], errors="coerce").to_numpy(np.float64), index=index)
        values = series.reindex(times).to_numpy(dtype=np.float64, copy=True)
        bad = np.flatnonzero(~(np.abs(values) <= MAX_DISCHARGE) & ~np.isnan(values))
        if bad.size:
            raise ValueError(f"{where}: gauge {code!r} at {times[bad[0]]} is {values[bad[0]]!r}, not a discharge any river "
                             f"carries (above {MAX_DISCHARGE:g} m3/s or infinite); fix it, or write NaN for missing")
        values[values < 0] = np.nan
        out[g] = values.astype(np.float32)
    if absent:
        warnings.warn(f"{where}: no column for gauge(s) {', '.join(absent)}; their qobs is NaN",
                      stacklevel=user_stacklevel())
    return out
