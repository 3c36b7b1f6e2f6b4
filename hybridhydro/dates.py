"""Dates a user writes, read one way everywhere: :func:`parse_date`.

A date reaches hybridhydro from a parameter file (``basin.start``, ``calibration_period``), a
smash-layout ``setup.yaml`` (``start_time``), the header line of a qobs CSV, or an argument of
the API (a period, a generator's ``start``). All of them go through :func:`parse_date`, so the
same text means the same instant wherever it is written, and the same mistakes are refused:

* text with the day or the month first (``01/10/2014`` is 1 October in France and 10 January
  in pandas): it reads both ways;
* a time zone (``2014-09-15 00:00+02:00``): the model's step labels and the forcing's file
  names carry none, and a converted date would shift the data by hours;
* a number that is not a compact date (``5`` would be 5 ns after 1970 in pandas; YAML reads an
  unquoted ``201409150000`` as an integer, which is accepted as the compact date it spells).

Accepted: ISO 8601 text (``2014-09-15``, ``2014-09-15 00:00``, ``2014-09-15T00:00:00``), compact
digits year first (``20140915``, ``2014091500``, ``201409150000``, ``20140915000000``, text or
integer), ``datetime.date``/``datetime.datetime``, ``numpy.datetime64`` and ``pandas.Timestamp``.
"""

from __future__ import annotations

import datetime
import numbers
import re

import numpy as np
import pandas as pd

__all__ = ["DAY_OR_MONTH_FIRST", "EXAMPLE", "parse_date"]

#: A date written day or month first (``01/10/2014``, ``1.10.2014``): ambiguous, refused.
DAY_OR_MONTH_FIRST = re.compile(r"^\s*\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}")

#: How to write a date, for the messages.
EXAMPLE = "write it year first without a time zone, e.g. 2014-09-15 00:00 (ISO 8601) or 201409150000"

#: Compact dates, year first, by their number of digits.
_COMPACT = {8: "%Y%m%d", 10: "%Y%m%d%H", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}


def parse_date(value, what: str, fix: str = EXAMPLE) -> pd.Timestamp:
    """``value`` as a time-zone-free :class:`pandas.Timestamp`, or a ``ValueError`` that names it.

    ``what`` says where the value was written, as the start of the message (e.g.
    ``"start_time = '20/09/2014' (data/setup.yaml)"``); ``fix`` how to write it instead.
    The rules are the module's (day- or month-first text, time zones and bare numbers are refused).
    """
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{what} is not a date ({value!r} is a boolean); {fix}")
    if isinstance(value, numbers.Integral):
        value = str(int(value))  # YAML's reading of an unquoted 201409150000
        if len(value) not in _COMPACT:
            raise ValueError(f"{what} is a number, not a date (pandas would read it as nanoseconds after 1970); {fix}")
    elif isinstance(value, numbers.Number):
        raise ValueError(f"{what} is a number, not a date; {fix}")
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        value = datetime.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        text = value.strip()
        if DAY_OR_MONTH_FIRST.match(text):
            raise ValueError(f"{what} puts the day or the month first, which reads both ways (01/10 is 1 October or "
                             f"10 January); {fix}")
        if text.isdigit():
            if len(text) not in _COMPACT:
                raise ValueError(f"{what} is not a date ({len(text)} digits; a compact date has 8, 10, 12 or 14: "
                                 f"%Y%m%d[%H[%M[%S]]]); {fix}")
            value = pd.to_datetime(text, format=_COMPACT[len(text)], errors="coerce")
        else:
            value = text
    elif not isinstance(value, (datetime.datetime, np.datetime64, pd.Timestamp)):
        raise ValueError(f"{what} is not a date ({type(value).__name__}); {fix}")
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        stamp = pd.NaT
    if pd.isna(stamp):
        raise ValueError(f"{what} is not a date; {fix}")
    if stamp.tzinfo is not None:
        raise ValueError(f"{what} carries a time zone ({stamp.tzinfo}); hybridhydro's times carry none (nor do the "
                         f"forcing's file names), and converting it would shift the data: give the date in the time of the forcing "
                         f"files; {fix}")
    return stamp
