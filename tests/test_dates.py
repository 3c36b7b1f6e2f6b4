"""One reading of a user's dates (hybridhydro.dates.parse_date), on every road a date comes by:
a parameter file, a period given to the API, a generator's start (the setup.yaml and qobs-header
roads are in test_edges_input.py)."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest
import yaml

from hybridhydro.dates import parse_date
from hybridhydro.periods import period_mask
from hybridhydro.pipeline.params import ParamsError, load_params

T = pd.Timestamp("2014-09-15 00:00")


@pytest.mark.parametrize("value", [
    "2014-09-15", "2014-09-15 00:00", "2014-09-15T00:00:00", " 2014-09-15 00:00 ",
    "20140915", "2014091500", "201409150000", "20140915000000",
    20140915, 201409150000,  # YAML's reading of unquoted compact dates
    datetime.date(2014, 9, 15), datetime.datetime(2014, 9, 15), np.datetime64("2014-09-15"), T,
])
def test_every_spelling_of_a_date_is_the_same_instant(value):
    assert parse_date(value, "x") == T


@pytest.mark.parametrize("value,match", [
    ("01/10/2014", "puts the day or the month first"),  # 1 October in France, 10 January in pandas
    ("15/09/2014 00:00", "puts the day or the month first"),
    ("1.10.2014", "puts the day or the month first"),
    ("09-15-2014", "puts the day or the month first"),
    ("2014-09-15 00:00+02:00", r"carries a time zone \(UTC\+02:00\)"),
    ("2014-09-15T00:00Z", r"carries a time zone \(UTC\)"),
    (5, "is a number, not a date"),
    (1.5, "is a number, not a date"),
    (True, r"is not a date \(True is a boolean\)"),
    ("201409150", r"is not a date \(9 digits"),
    ("someday", "is not a date"),
    ("", "is not a date"),
    ([2014, 9, 15], r"is not a date \(list\)"),
])
def test_ambiguous_zoned_and_non_dates_are_refused_with_the_way_to_write_them(value, match):
    with pytest.raises(ValueError, match=rf"^where it was written {match}.*"):
        parse_date(value, "where it was written")
    with pytest.raises(ValueError, match="year first"):
        parse_date(value, "x")


def _params(tmp_path, **basin):
    path = tmp_path / "case.yaml"
    path.write_text(yaml.safe_dump({"basin": {"source": "Lez", **basin}}))
    return path


def test_a_parameter_file_reads_dates_the_same_way(tmp_path):
    assert load_params(_params(tmp_path, start=201210010000, end="2013-01-01")).basin.start == "2012-10-01 00:00:00"
    for bad, match in (("01/10/2012", "day or the month first"), ("2012-10-01 00:00+02:00", "time zone"),
                       (2012, "is a number, not a date")):
        with pytest.raises(ParamsError, match=match):
            load_params(_params(tmp_path, start=bad))


def test_a_period_given_to_the_api_reads_dates_the_same_way():
    times = pd.date_range("2014-09-15 01:00", periods=48, freq="h")
    assert period_mask(times, ("2014-09-15", 2014091600)).sum() == 24
    with pytest.raises(ValueError, match=r"period=\('01/10/2014', None\): '01/10/2014' puts the day or the month first"):
        period_mask(times, ("01/10/2014", None))
    with pytest.raises(ValueError, match="is a number, not a date"):
        period_mask(times, (5, None))


def test_a_generated_basin_reads_its_start_the_same_way():
    from hybridhydro import synthetic_basin

    with pytest.raises(ValueError, match=r"synthetic_basin: start='01/10/2014' puts the day or the month first"):
        synthetic_basin(start="01/10/2014")


def test_stage_00_settings_read_their_start_the_same_way():
    from hybridhydro.newbasin import NewBasinParams

    assert NewBasinParams(start=2020010100).start == "2020-01-01 00:00:00"
    with pytest.raises(ValueError, match=r"new_basin.start = '01/10/2020' puts the day or the month first"):
        NewBasinParams(start="01/10/2020")
