"""Bad input never passes silently: each class of bad input is a clear error (or, where the result
is correct but surprising, a warning) that says what is wrong, where, and how to fix it.

1. the basin on its way into a run (``prepare_run``, under simulate, calibrate, water_balance):
   time axis, ``dt``, missing variables, units, infinite, missing, negative and implausible forcing;
4. smash-layout files: damaged GeoTIFFs, another CRS, shifted or coarser rasters, setup keys of the
   wrong type, conversion factors, qobs CSVs (infinite values, time zones, empty files, day-first dates);
5. basin and model files: damaged ``.nc``/``.zarr``, calibration results and checkpoints.

No message may be a raw HDF5, JSON, zip, pandas or GDAL error, nor a KeyError.
"""

from __future__ import annotations

import importlib.util

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rasterio.transform import Affine

import hybridhydro as hh
from hybridhydro.basin import (
    IMPLAUSIBLE_FACTOR,
    ForcingWarning,
    check_forcing_values,
    check_run_basin,
    forcing_limit,
    time_axis_problems,
)
from hybridhydro.calibration.checkpoints import load_checkpoint, save_checkpoint
from hybridhydro.io._rasters import Grid, RasterReader
from hybridhydro.io.smash_layout import smash_dataset_root

# hydro-smash's data folder; without the smash extra a path that does not exist (every test that reads
# it is marked smash and skipped, the others run)
DATA = smash_dataset_root() if importlib.util.find_spec("smash") else Path("<hydro-smash not installed>")
FLWDIR = DATA / "France_flwdir.tif"
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def basin():
    """8 x 8 synthetic basin, 48 hourly steps."""
    return hh.synthetic_basin(nrow=8, ncol=8, ntime=48, seed=5)


@pytest.fixture(scope="module")
def big():
    """A basin of more than 100 active cells (1 % of them is more than one cell)."""
    b = hh.synthetic_basin(nrow=16, ncol=16, ntime=24, seed=1)
    assert int(b["active_cell"].sum()) > 100
    return b


def _with(basin, name, values, attrs=None):
    out = basin.copy()
    out[name] = (basin[name].dims, values, basin[name].attrs if attrs is None else attrs)
    return out


def _active_cells(basin):
    rows, cols = np.nonzero(basin["active_cell"].values)
    return rows, cols


def _no_forcing_warning(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ForcingWarning)
        return fn(*args, **kwargs)


# =============================================================================== 1. the basin into a run

# ----------------------------------------------------------------------------- the time axis


@settings(max_examples=25, **SETTINGS)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_shuffled_time_axis_is_refused(basin, seed):
    order = np.random.default_rng(seed).permutation(basin.sizes["time"])
    if (order == np.arange(order.size)).all():
        order = order[::-1]
    with pytest.raises(ValueError, match=r"'time' (is not in order: step \d+ \(\d{4}-.*\) comes after|runs backwards)"
                                         r".*basin.sortby\('time'\)"):
        hh.prepare_run(basin.isel(time=order), "gr4-lr")


def test_a_reversed_time_axis_is_refused_by_simulate_and_calibrate(basin):
    backwards = basin.isel(time=slice(None, None, -1))
    with pytest.raises(ValueError, match=r"'time' runs backwards \(2020-01-03 00:00 \.\.\. 2020-01-01 01:00\)"):
        hh.simulate(backwards, "gr4-lr")
    with pytest.raises(ValueError, match=r"'time' runs backwards"):
        hh.calibrate(backwards, "gr4-lr", "uniform", "adam", 1, gauges="all", progress=False)


@settings(max_examples=25, **SETTINGS)
@given(k=st.integers(0, 47), times=st.integers(2, 3))
def test_a_duplicated_step_is_refused(basin, k, times):
    order = list(range(k)) + [k] * times + list(range(k + 1, basin.sizes["time"]))
    label = pd.Timestamp(basin["time"].values[k]).strftime("%Y-%m-%d %H:%M")
    with pytest.raises(ValueError, match=rf"'time' holds {label} {times} times .*drop_duplicates\('time'\)"):
        hh.prepare_run(basin.isel(time=order), "gr4-lr")


@settings(max_examples=25, **SETTINGS)
@given(k=st.integers(1, 46), width=st.integers(1, 5))
def test_a_gap_is_refused_and_located(basin, k, width):
    assume(k + width < basin.sizes["time"])  # a gap, not a shorter basin
    keep = [i for i in range(basin.sizes["time"]) if not k <= i < k + width]
    before = pd.Timestamp(basin["time"].values[k - 1]).strftime("%Y-%m-%d %H:%M")
    with pytest.raises(ValueError, match=rf"not evenly spaced by dt: it jumps from {before} .*: {width} step\(s\) "
                                         rf"of dt = 3600 s are missing.*reindex"):
        hh.prepare_run(basin.isel(time=keep), "gr4-lr")


@pytest.mark.parametrize("dt", [86400, 1800, 7200, 3600.5])
def test_dt_that_disagrees_with_the_labels_gives_the_right_one(basin, dt):
    wrong = basin.copy()
    wrong.attrs["dt"] = dt
    with pytest.raises(ValueError, match=r"the steps are 3600 s apart but attribute dt = .* set basin.attrs\['dt'\] = 3600"):
        hh.simulate(wrong, "gr4-lr")


@pytest.mark.parametrize("dt,match", [
    ("1h", r"dt = '1h' must be a positive number of seconds"),
    (0, r"dt = 0 must be a positive number"),
    (-3600, r"dt = -3600 must be a positive number"),
    (float("nan"), r"dt = nan must be a positive number"),
    (True, r"dt = True must be a positive number"),
])
def test_dt_that_is_not_a_duration_is_named(basin, dt, match):
    wrong = basin.copy()
    wrong.attrs["dt"] = dt
    with pytest.raises(ValueError, match=match):
        hh.prepare_run(wrong, "gr4-lr")


def test_time_labels_that_are_not_dates(basin):
    wrong = basin.assign_coords(time=np.arange(basin.sizes["time"]))
    with pytest.raises(ValueError, match=r"'time' must hold datetimes"):
        hh.prepare_run(wrong, "gr4-lr")


# ------------------------------------------------------------------------- what a run needs


@pytest.mark.parametrize("drop,match", [
    ("prcp", r"lacks variable 'prcp'"),
    ("pet", r"lacks variable 'pet'"),
    ("flwdir", r"lacks variable 'flwdir'"),
    ("gauge_row", r"lacks variable 'gauge_row'"),
])
def test_a_missing_variable_is_named_not_a_key_error(basin, drop, match):
    with pytest.raises(ValueError, match=match):
        hh.simulate(basin.drop_vars(drop), "gr4-lr")


@pytest.mark.parametrize("attr", ["dt", "xres", "xmin"])
def test_a_missing_attribute_is_named_not_a_key_error(basin, attr):
    wrong = basin.copy()
    del wrong.attrs[attr]
    with pytest.raises(ValueError, match=rf"lacks attribute '{attr}'"):
        hh.simulate(wrong, "gr4-lr")


def test_calibrate_without_dt_names_it(basin):
    wrong = basin.copy()
    del wrong.attrs["dt"]
    with pytest.raises(ValueError, match=r"lacks attribute 'dt'"):
        hh.calibrate(wrong, "gr4-lr", "uniform", "adam", 1, gauges="all", progress=False)
    with pytest.raises(ValueError, match="has no 'qobs'"):
        hh.calibrate(basin.drop_vars("qobs"), "gr4-lr", "uniform", "adam", 1, gauges="all", progress=False)


def test_a_basin_that_is_not_a_dataset(basin):
    with pytest.raises(TypeError, match="a basin is an xarray.Dataset, got DataArray"):
        hh.prepare_run(basin["prcp"], "gr4-lr")


def test_forcing_with_other_dims_is_named(basin):
    renamed = basin.copy()
    renamed["prcp"] = basin["prcp"].rename(y="lat", x="lon")
    with pytest.raises(ValueError, match=r"variable 'prcp' has dims \('time', 'lat', 'lon'\); it needs"):
        hh.prepare_run(renamed, "gr4-lr")
    transposed = _with(basin, "prcp", basin["prcp"].values)
    transposed["prcp"] = basin["prcp"].transpose("x", "time", "y")  # any order of the right dims runs
    np.testing.assert_array_equal(hh.prepare_run(transposed, "gr4-lr").forcing["prcp"],
                                  hh.prepare_run(basin, "gr4-lr").forcing["prcp"])


# ---------------------------------------------------------------------------------- units


@pytest.mark.parametrize("units,hint", [
    ("m", r"multiply by 1000"),
    ("cm", r"multiply by 10"),
    ("mm/h", r"it is a rate"),
    ("mm h-1", r"it is a rate"),
    ("kg m-2 s-1", r"it is a rate"),
    ("inch", r"multiply by 25.4"),
    ("furlongs", r"convert it to mm"),
])
@pytest.mark.parametrize("name", ["prcp", "pet"])
def test_forcing_units_are_read_not_ignored(basin, name, units, hint):
    wrong = _with(basin, name, basin[name].values, {**basin[name].attrs, "units": units})
    with pytest.raises(ValueError, match=rf"variable '{name}' has units '{units}'.*in mm: {hint}"):
        hh.simulate(wrong, "gr4-lr")
    with pytest.raises(ValueError, match=rf"variable '{name}' has units '{units}'"):
        hh.check_basin(wrong)


@pytest.mark.parametrize("units", ["mm", "kg m-2", "millimetres", "MM", None])
def test_depth_units_and_no_units_run(basin, units):
    attrs = {k: v for k, v in basin["prcp"].attrs.items() if k != "units"}
    if units is not None:
        attrs["units"] = units
    ok = _with(basin, "prcp", basin["prcp"].values, attrs)
    np.testing.assert_array_equal(hh.simulate(ok, "gr4-lr")["q"].values, hh.simulate(basin, "gr4-lr")["q"].values)


# ------------------------------------------------------------------------------- values


@settings(max_examples=30, **SETTINGS)
@given(data=st.data())
def test_infinite_forcing_is_refused_and_located(basin, data):
    name = data.draw(st.sampled_from(["prcp", "pet"]))
    sign = data.draw(st.sampled_from([1.0, -1.0]))
    rows, cols = _active_cells(basin)
    n = data.draw(st.integers(1, 4))
    picks = data.draw(st.lists(st.tuples(st.integers(0, basin.sizes["time"] - 1), st.integers(0, rows.size - 1)),
                               min_size=n, max_size=n, unique=True))
    values = basin[name].values.copy()
    for k, c in picks:
        values[k, rows[c], cols[c]] = sign * np.inf
    first = min(k for k, _ in picks)
    label = pd.Timestamp(basin["time"].values[first]).strftime("%Y-%m-%d %H:%M")
    with pytest.raises(ValueError, match=rf"variable '{name}' holds {len(picks)} infinite value\(s\).*{'-' if sign < 0 else ''}"
                                         rf"inf at {label} \(step {first}\), cell \(row \d+, col \d+\).*replace"):
        hh.prepare_run(_with(basin, name, values), "gr4-lr")


def test_infinite_forcing_names_the_cell(basin):
    rows, cols = _active_cells(basin)
    values = basin["prcp"].values.copy()
    values[7, rows[3], cols[3]] = np.inf
    with pytest.raises(ValueError, match=rf"inf at 2020-01-01 08:00 \(step 7\), cell \(row {rows[3]}, col {cols[3]}\)"):
        hh.simulate(_with(basin, "prcp", values), "gr4-lr")


def test_a_value_beyond_float32_is_infinite(basin):
    values = basin["prcp"].values.astype(np.float64)
    rows, cols = _active_cells(basin)
    values[3, rows[0], cols[0]] = 1e40
    with pytest.raises(ValueError, match=r"infinite value.*beyond float32's range"):
        hh.prepare_run(_with(basin, "prcp", values), "gr4-lr")


def test_infinite_values_off_the_active_cells_do_not_matter(basin):
    inactive = np.argwhere(~basin["active_cell"].values)
    assert inactive.size
    values = basin["prcp"].values.copy()
    values[:, inactive[0][0], inactive[0][1]] = np.inf
    _no_forcing_warning(hh.prepare_run, _with(basin, "prcp", values), "gr4-lr")


@settings(max_examples=15, **SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), share=st.floats(0.0, 0.4))
def test_nan_forcing_is_missing_data_and_runs(basin, seed, share):
    rng = np.random.default_rng(seed)
    values = basin["prcp"].values.copy()
    values[rng.random(values.shape) < share] = np.nan
    values[0] = 1.0  # never missing everywhere at every step
    q = hh.simulate(_with(basin, "prcp", values), "gr4-lr")["q"].values
    assert np.isfinite(q).all()


@settings(max_examples=10, **SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), value=st.sampled_from([-99.0, -1.0, -1e-3, -1e6]))
def test_negative_forcing_is_missing_with_a_warning(basin, seed, value):
    """As smash reads them: a negative value is missing, exactly like NaN (documented, and warned)."""
    rng = np.random.default_rng(seed)
    mask = rng.random(basin["prcp"].shape) < 0.1
    negative, nan = basin["prcp"].values.copy(), basin["prcp"].values.copy()
    negative[mask], nan[mask] = value, np.nan
    with pytest.warns(ForcingWarning, match=r"variable 'prcp' holds \d+ negative value\(s\).*read as missing, like NaN"):
        q_negative = hh.simulate(_with(basin, "prcp", negative), "gr4-lr")["q"].values
    q_nan = hh.simulate(_with(basin, "prcp", nan), "gr4-lr")["q"].values
    np.testing.assert_array_equal(q_negative, q_nan)


@pytest.mark.parametrize("name", ["prcp", "pet"])
def test_forcing_missing_everywhere_is_refused(basin, name):
    with pytest.raises(ValueError, match=rf"variable '{name}' is missing \(NaN\) on every active cell at every step"):
        hh.simulate(_with(basin, name, np.full(basin[name].shape, np.nan, np.float32)), "gr4-lr")


def test_steps_missing_everywhere_are_named_in_a_warning(basin):
    values = basin["prcp"].values.copy()
    values[[4, 5, 30]] = np.nan
    with pytest.warns(ForcingWarning, match=r"prcp is missing \(NaN\) on every active cell at 3 of 48 step\(s\) "
                                            r"\(2020-01-01 05:00, 2020-01-01 06:00, 2020-01-02 07:00\)"):
        hh.prepare_run(_with(basin, "prcp", values), "gr4-lr")


def test_the_warning_points_at_the_users_line(basin):
    values = basin["prcp"].values.copy()
    values[4] = np.nan
    with pytest.warns(ForcingWarning) as record:
        hh.simulate(_with(basin, "prcp", values), "gr4-lr")
    assert Path(record[0].filename) == Path(__file__)


# ---------------------------------------------------------------------------- plausibility


@pytest.mark.parametrize("factor", [1000.0, 300.0])
def test_rain_scaled_up_is_refused_by_every_road(basin, factor):
    scaled = basin.copy()
    scaled["prcp"] = basin["prcp"] * factor
    match = r"variable 'prcp' is not plausible rain: at .* active cells exceed 1266 mm per step of 3600 s.*world-record"
    with pytest.raises(ValueError, match=match):
        hh.simulate(scaled, "gr4-lr")
    with pytest.raises(ValueError, match=match):
        hh.calibrate(scaled, "gr4-lr", "uniform", "adam", 1, gauges="all", progress=False)
    result = hh.simulate(basin, "gr4-lr", return_fluxes=True, return_discharge_field=True)
    with pytest.raises(ValueError, match=match):
        hh.water_balance(result, scaled)


def test_pet_scaled_up_is_refused(basin):
    scaled = basin.copy()
    scaled["pet"] = basin["pet"] * 1000
    with pytest.raises(ValueError, match=r"variable 'pet' is not plausible PET"):
        hh.simulate(scaled, "gr4-lr")


@pytest.mark.parametrize("dt", [900, 3600, 86400])
def test_the_limit_follows_the_steps_duration(dt):
    b = hh.synthetic_basin(nrow=6, ncol=6, ntime=8, dt=dt, seed=2)
    _no_forcing_warning(hh.prepare_run, b, "gr4-lr")
    limit = forcing_limit("prcp", dt)
    assert limit == pytest.approx(422.0 * (dt / 3600) ** 0.475)
    just_below = b.copy()
    just_below["prcp"] = b["prcp"] * 0.0 + 0.99 * IMPLAUSIBLE_FACTOR * limit
    with pytest.warns(ForcingWarning, match=r"prcp exceeds .* world-record rain"):
        hh.prepare_run(just_below, "gr4-lr")
    above = b.copy()
    above["prcp"] = b["prcp"] * 0.0 + 1.01 * IMPLAUSIBLE_FACTOR * limit
    with pytest.raises(ValueError, match="is not plausible rain"):
        hh.prepare_run(above, "gr4-lr")


def test_a_1000_mm_storm_is_a_warning_and_5000_an_error_unless_asked(basin):
    """The storms of tests/test_ode_trust.py (1000 mm/h, beyond the world record) run, with a
    warning; 5000 mm/h is refused unless the basin says it is a stress test."""
    storm = basin.copy()
    storm["prcp"] = basin["prcp"] * 0.0 + 1000.0
    with pytest.warns(ForcingWarning, match=r"prcp exceeds 422 mm per step of 3600 s"):
        hh.prepare_run(storm, "gr4-lr")
    storm["prcp"] = basin["prcp"] * 0.0 + 5000.0
    with pytest.raises(ValueError, match=r"forcing_plausibility'\] = 'warn'"):
        hh.prepare_run(storm, "gr4-lr")
    storm.attrs["forcing_plausibility"] = "warn"
    with pytest.warns(ForcingWarning, match=r"prcp exceeds"):
        hh.prepare_run(storm, "gr4-lr")
    storm.attrs["forcing_plausibility"] = "off"
    _no_forcing_warning(hh.prepare_run, storm, "gr4-lr")
    storm.attrs["forcing_plausibility"] = "no"
    with pytest.raises(ValueError, match=r"attribute 'forcing_plausibility' = 'no'; choose one of"):
        hh.prepare_run(storm, "gr4-lr")


def test_an_isolated_spike_is_a_warning_naming_the_cell(big):
    """One radar artefact on one cell is not a unit slip: warned, with its cell, not refused."""
    rows, cols = _active_cells(big)
    values = big["prcp"].values.copy()
    values[10, rows[7], cols[7]] = 9000.0
    with pytest.warns(ForcingWarning, match=rf"9000 mm at .* \(step 10\), cell \(row {rows[7]}, col {cols[7]}\)"):
        hh.prepare_run(_with(big, "prcp", values), "gr4-lr")


@settings(max_examples=12, **SETTINGS)
@given(seed=st.integers(0, 1000), dt=st.sampled_from([900, 1800, 3600, 10800, 86400]))
def test_valid_basins_pass_without_a_word(seed, dt):
    b = hh.synthetic_basin(nrow=6, ncol=6, ntime=24, dt=dt, seed=seed)
    _no_forcing_warning(hh.prepare_run, b, "gr4-lr")
    check_run_basin(b)
    hh.check_basin(b)


@pytest.mark.smash
def test_the_bundled_datasets_pass():
    for name, end in (("Cance", "2014-10-15 00:00"), ("Lez", None), ("France", "2012-01-01 06:00")):
        ds = _no_forcing_warning(hh.read_smash_dataset, name, end=end, progress=False)
        check_run_basin(ds)
        inputs = hh.prepare_run(ds, "gr4-lr")
        check_forcing_values(dict(inputs.forcing), ds["time"].values, ds.attrs["dt"], np.asarray(inputs.plan.rows),
                             np.asarray(inputs.plan.cols))


def test_the_check_is_vectorised_over_the_steps():
    """Two reductions per variable: a (T, n) block with nothing wrong is checked without a loop."""
    x = np.random.default_rng(0).random((200, 5000)).astype(np.float32)
    x[x < 0.2] = np.nan
    times = pd.date_range("2020-01-01 01:00", periods=200, freq="h").values
    rows = cols = np.arange(5000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_forcing_values({"prcp": x, "pet": x * 0.1}, times, 3600.0, rows, cols)


def test_time_axis_problems_are_empty_for_a_regular_axis():
    times = pd.date_range("2020-01-01", periods=10, freq="30min").values
    assert time_axis_problems(times, 1800.0) == []
    assert time_axis_problems(times[:1], 1800.0) == []


# =============================================================================== 4. smash-layout files


def _setup(directory: Path, **setup) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"setup_{directory.name}.yaml").write_text(
        yaml.safe_dump({k: (str(v) if isinstance(v, Path) else v) for k, v in setup.items()}))
    return directory


START, END = "2014-09-20 10:00", "2014-09-20 16:00"  # Cance's wettest hours


def _prcp_files(start=START, end=END):
    times = pd.date_range(start, end, freq="h")[1:]
    return [next((DATA / "Cance" / "prcp").rglob(f"*{t:%Y%m%d%H%M}*.tif")) for t in times]


def cance(tmp_path: Path, *, copy_prcp: bool = False, **setup) -> Path:
    """A smash-layout dataset on Cance's files; ``copy_prcp``: its own copy of the rain files."""
    d = tmp_path / "ds"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "Cance" / "gauge_attributes.csv", d)
    prcp = DATA / "Cance" / "prcp"
    if copy_prcp:
        prcp = d / "prcp"
        prcp.mkdir(exist_ok=True)
        for f in _prcp_files(setup.get("start_time", START), setup.get("end_time", END)):
            shutil.copy(f, prcp / f.name)
    base = dict(dt=3600, start_time=START, end_time=END, read_prcp=True, prcp_directory=prcp,
                prcp_conversion_factor=0.1, read_pet=True, pet_directory=DATA / "Cance" / "pet",
                daily_interannual_pet=True, read_qobs=True, qobs_directory=DATA / "Cance" / "qobs",
                read_descriptor=False, flwdir=FLWDIR)
    return _setup(d, **{**base, **setup})


def _rewrite(path: Path, **change):
    """Rewrite a GeoTIFF with its values and ``change`` applied to its profile (crs, transform, ...)."""
    with rasterio.open(path) as src:
        values, profile = src.read(1), src.profile
    profile.update(change)
    if "crs" in change and change["crs"] is None:
        profile.pop("crs")
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)


def _read(d, **kwargs):
    return hh.read_smash_dataset(d, progress=False, **kwargs)


# ---------------------------------------------------------------------------- GeoTIFFs


@pytest.mark.smash
@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 0.5, 0.8, 0.95])
def test_a_truncated_geotiff_is_named(tmp_path, fraction):
    d = cance(tmp_path, copy_prcp=True)
    victim = sorted((d / "prcp").glob("*.tif"))[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError, match=rf"prcp: .*{victim.name} (cannot be read as a GeoTIFF|carries no georeferencing)"
                                         rf".*(truncated|damaged).*replace the file"):
        _read(d)


@pytest.mark.smash
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9, 0.99])
def test_a_truncated_compressed_geotiff_is_named(tmp_path, fraction):
    """France's rain rasters are compressed, with their tags at the end."""
    src = next((DATA / "France" / "prcp").rglob("*201201010100*.tif"))
    folder = tmp_path / "rain"
    folder.mkdir()
    target = folder / src.name
    data = src.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    with rasterio.open(FLWDIR) as f:
        t = f.transform
    grid = Grid(t.c + 700 * 1000, t.f - 400 * 1000, 1000.0, 1000.0, 20, 20, 2154)
    for fast in (True, False):
        with RasterReader(grid, fast=fast, what="prcp") as reader, pytest.raises(ValueError, match=rf"prcp: .*{src.name}"):
            reader.read(target)


@pytest.mark.smash
@pytest.mark.parametrize("content", [b"", b"not a tiff at all", b"II*\x00" + bytes(200)])
def test_a_file_that_is_no_geotiff_is_named(tmp_path, content):
    d = cance(tmp_path, copy_prcp=True)
    victim = sorted((d / "prcp").glob("*.tif"))[0]
    victim.write_bytes(content)
    with pytest.raises(ValueError, match=rf"prcp: .*{victim.name}"):
        _read(d)


@pytest.mark.smash
@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:27572", "EPSG:32631"])
def test_a_raster_in_another_crs_is_refused(tmp_path, crs):
    d = cance(tmp_path, copy_prcp=True)
    victim = sorted((d / "prcp").glob("*.tif"))[2]
    _rewrite(victim, crs=crs)
    epsg = crs.split(":")[1]
    with pytest.raises(ValueError, match=rf"prcp: .*{victim.name} is in EPSG:{epsg} but the mesh .* is in EPSG:2154.*gdalwarp"):
        _read(d)


@pytest.mark.smash
def test_a_raster_without_crs_is_read_as_the_mesh(tmp_path):
    d = cance(tmp_path, copy_prcp=True)
    for f in sorted((d / "prcp").glob("*.tif")):
        _rewrite(f, crs=None)
    ds = _no_forcing_warning(_read, d)
    ref = _read(cance(tmp_path / "ref"))
    np.testing.assert_array_equal(ds["prcp"].values, ref["prcp"].values)


@pytest.mark.smash
@pytest.mark.parametrize("change,match", [
    (dict(dx=300.0), r"lies off the mesh's cells by \(\+0.3, \+0\) of a cell \(x east, y north\)"),
    (dict(dx=0.0, res=2000.0), r"has cells of 2000 x 2000, the mesh 1000 x 1000; read by nearest-neighbour"),
    (dict(dx=10000.0), r"does not cover the whole mesh; \d+ of its 784 cells are outside and read as NaN"),
])
def test_geometry_warnings_name_a_file(tmp_path, change, match):
    d = cance(tmp_path, copy_prcp=True)
    files = sorted((d / "prcp").glob("*.tif"))
    for f in files:
        with rasterio.open(f) as src:
            t = src.transform
        res = change.get("res", t.a)
        _rewrite(f, transform=Affine(res, 0.0, t.c + change["dx"], 0.0, -res, t.f))
    with pytest.warns(UserWarning, match=rf"prcp: .*{files[0].name} \(and the files of its geometry under .*\) {match}"):
        _read(d, forcing_plausibility="off")


# ------------------------------------------------------------------------- setup keys


@pytest.mark.smash
@pytest.mark.parametrize("key,value", [
    ("read_prcp", "false"), ("read_prcp", "true"), ("read_qobs", "False"), ("read_pet", 1),
    ("daily_interannual_pet", "yes"), ("read_descriptor", "no"),
])
def test_boolean_keys_must_be_booleans(tmp_path, key, value):
    d = cance(tmp_path, **{key: value})
    with pytest.raises(ValueError, match=rf"{key} = {value!r} in .*setup_ds.yaml must be a boolean: write {key}: true or"):
        _read(d)


@pytest.mark.smash
@pytest.mark.parametrize("dt", ["1h", "hourly", "", [3600]])
def test_dt_that_is_not_a_number_names_the_key(tmp_path, dt):
    d = cance(tmp_path, dt=dt)
    with pytest.raises(ValueError, match=r"setup_ds.yaml: key 'dt': dt = .* must be a positive number of seconds"):
        _read(d)


@pytest.mark.smash
@pytest.mark.parametrize("factor,match", [
    (-0.1, r"prcp_conversion_factor = -0.1 in .* must be a positive number"),
    (0, r"prcp_conversion_factor = 0 in .* must be a positive number"),
    ("0,1", r"prcp_conversion_factor = '0,1' in .* must be a number"),
    (100, r"prcp read from .*prcp_conversion_factor = 100.*is not plausible rain.*forcing_plausibility='warn'"),
    (10, r"prcp read from .*prcp_conversion_factor = 10.*is not plausible rain"),
])
def test_a_wrong_conversion_factor_is_refused(tmp_path, factor, match):
    with pytest.raises(ValueError, match=match):
        _read(cance(tmp_path, prcp_conversion_factor=factor))


@pytest.mark.smash
def test_a_large_factor_can_be_asked_for(tmp_path):
    d = cance(tmp_path, prcp_conversion_factor=100)
    with pytest.warns(ForcingWarning, match=r"prcp_conversion_factor = 100.*prcp exceeds"):
        ds = _read(d, forcing_plausibility="warn")
    assert ds.attrs["forcing_plausibility"] == "warn"
    with pytest.warns(ForcingWarning, match=r"prcp exceeds"):  # the run follows the basin's choice
        hh.prepare_run(ds, "gr4-lr")
    with pytest.raises(ValueError, match=r"forcing_plausibility = 'maybe'; choose one of"):
        _read(d, forcing_plausibility="maybe")


@pytest.mark.smash
def test_pet_conversion_factor_is_checked_too(tmp_path):
    with pytest.raises(ValueError, match=r"pet_conversion_factor = -1 in .* must be a positive number"):
        _read(cance(tmp_path, pet_conversion_factor=-1))
    with pytest.raises(ValueError, match=r"pet read from .*pet_conversion_factor = 1000.*not plausible PET"):
        _read(cance(tmp_path, pet_conversion_factor=1000))


@pytest.mark.smash
@pytest.mark.parametrize("dt,match", [
    (86400, r"dates under .* have several files at the precision of dt = 86400 s .* set dt"),
    (10800, r"dated every 3600 s \(median\) but dt = 10800 s.*set dt in the setup YAML to 3600"),
])
def test_dt_coarser_than_the_files_is_refused(tmp_path, dt, match):
    d = cance(tmp_path, dt=dt, start_time="2014-09-20 00:00", end_time="2014-09-23 00:00", read_qobs=False)
    with pytest.raises(ValueError, match=match):
        _read(d)


@pytest.mark.smash
@pytest.mark.parametrize("key,value,match", [
    ("start_time", "20/09/2014 10:00", r"puts the day or the month first"),
    ("start_time", "09/20/2014 10:00", r"puts the day or the month first"),
    ("end_time", "2014-09-20 16:00+02:00", r"carries a time zone"),
    ("start_time", "yesterday", r"is not a date"),
    # YAML reads an unquoted number as an integer: pandas would take it as nanoseconds after 1970
    ("start_time", 2014092010, None),
    ("start_time", 20140920100, r"is a number, not a date"),
])
def test_setup_dates_are_unambiguous(tmp_path, key, value, match):
    if match is None:  # an unquoted compact date is the date it spells
        ds = _read(cance(tmp_path, **{key: value}))
        assert str(ds["time"].values[0]).startswith("2014-09-20T11") and ds.sizes["time"] == 6
        return
    with pytest.raises(ValueError, match=rf"{key.split('_')[0]} = {re.escape(repr(value))} \(.*setup_ds.yaml\) {match}"):
        _read(cance(tmp_path, **{key: value}))


@pytest.mark.smash
def test_a_truncated_flow_direction_raster_is_named(tmp_path):
    flwdir = tmp_path / "flwdir.tif"
    data = FLWDIR.read_bytes()
    flwdir.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"flow directions: .*flwdir.tif cannot be read as a GeoTIFF"):
        _read(cance(tmp_path, flwdir=flwdir))


# ------------------------------------------------------------------------------- qobs


def _qobs_case(tmp_path, text: str, code="V3524010") -> Path:
    q = tmp_path / "q"
    shutil.copytree(DATA / "Cance" / "qobs", q)
    (q / f"{code}.csv").write_text(text)
    return cance(tmp_path, qobs_directory=q)


@pytest.mark.smash
@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "1e40", "2e6"])
def test_qobs_beyond_any_river_is_refused_with_its_line(tmp_path, value):
    text = "201409201100\n1.0\n2.0\n" + value + "\n3.0\n"
    with pytest.raises(ValueError, match=rf"qobs: line 4 of .*V3524010.csv is '{value}', not a discharge any river "
                                         rf"carries.*negative value for missing"):
        _read(_qobs_case(tmp_path, text))


@pytest.mark.smash
def test_qobs_nan_text_and_negative_values_are_missing(tmp_path):
    ds = _read(_qobs_case(tmp_path, "201409201100\n1.0\nnan\n-99\n3.0\n"))
    np.testing.assert_array_equal(ds["qobs"].sel(gauge="V3524010").values[:4], np.array([1, np.nan, np.nan, 3], np.float32))


@pytest.mark.smash
@pytest.mark.parametrize("header,match", [
    ("2014-09-20 11:00+02:00", r"which carries a time zone \(UTC\+02:00\)"),
    ("2014-09-20T11:00Z", r"which carries a time zone \(UTC\)"),
    ("20/09/2014 11:00", r"which puts the day or the month first.*year first"),
    ("01/10/2014", r"which puts the day or the month first.*year first"),
    ("1.10.2014 00:00", r"which puts the day or the month first.*year first"),
    ("discharge", r"which is not a date.*year first"),
    ("2014092011", None),  # compact, to the hour: read
    ("201409201100000", r"which is not a date \(15 digits"),
])
def test_qobs_headers_are_unambiguous_dates(tmp_path, header, match):
    if match is None:
        ds = _read(_qobs_case(tmp_path, f"{header}\n1.0\n2.0\n"))
        assert ds["qobs"].sel(gauge="V3524010", time="2014-09-20 11:00").item() == 1.0
        return
    with pytest.raises(ValueError, match=rf"qobs: the header line of .*V3524010.csv is '{re.escape(header)}', {match}"):
        _read(_qobs_case(tmp_path, f"{header}\n1.0\n2.0\n"))


@pytest.mark.smash
@pytest.mark.parametrize("text", ["", "\n", "  \n\n"])
def test_an_empty_qobs_file_is_missing_with_a_warning(tmp_path, text):
    with pytest.warns(UserWarning, match=r"qobs: .*V3524010.csv is empty; its gauge's qobs is NaN"):
        ds = _read(_qobs_case(tmp_path, text))
    assert np.isnan(ds["qobs"].sel(gauge="V3524010").values).all()
    assert not np.isnan(ds["qobs"].sel(gauge="V3515010").values).all()


# =============================================================================== 5. basin and model files


@pytest.fixture(scope="module")
def stored(tmp_path_factory, basin):
    d = tmp_path_factory.mktemp("stored")
    return hh.write_basin(basin, d / "basin.nc"), hh.write_basin(basin, d / "basin.zarr")


def _copy(src: Path, dst: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
    return dst


REWRITE = r"write it again with hybridhydro.write_basin"


@settings(max_examples=20, **SETTINGS)
@given(fraction=st.floats(0.0, 0.999))
def test_a_truncated_netcdf_basin_is_named(tmp_path_factory, stored, fraction):
    target = tmp_path_factory.mktemp("trunc") / "basin.nc"
    data = stored[0].read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError, match=rf"{target}.*(empty|truncated).*{REWRITE}"):
        hh.read_basin(target)


@settings(max_examples=20, **SETTINGS)
@given(position=st.floats(0.05, 0.95), seed=st.integers(0, 2**32 - 1))
def test_a_corrupted_netcdf_basin_is_named_or_reads_the_same(tmp_path_factory, stored, basin, position, seed):
    """Random bytes anywhere: an error that names the file, or (bytes in unused space) the same basin."""
    target = tmp_path_factory.mktemp("corrupt") / "basin.nc"
    data = bytearray(stored[0].read_bytes())
    at = int(len(data) * position)
    data[at: at + 64] = np.random.default_rng(seed).integers(0, 256, 64, dtype=np.uint8).tobytes()
    target.write_bytes(bytes(data))
    try:
        back = hh.read_basin(target)
    except ValueError as err:
        assert str(target) in str(err) and ("damaged" in str(err) or "schema" in str(err)), err
    else:
        xr.testing.assert_identical(back, basin)


def test_a_damaged_attribute_is_named_not_read_as_other_text(tmp_path, stored, basin):
    """Fletcher-32 covers the arrays; a byte changed in an attribute (here the CRS's text) once
    read back as another CRS without a word. The file's attributes are sealed by a sha256."""
    data = bytearray(stored[0].read_bytes())
    at = data.find(b"Lambert-93")
    assert at > 0
    data[at: at + 3] = b"XYZ"
    target = tmp_path / "basin.nc"
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{target}.*attributes .* are not the ones it was written with.*damaged"):
        hh.read_basin(target)
    assert "_hybridhydro_attributes_sha256" not in hh.read_basin(stored[0]).attrs


def test_a_netcdf_basin_of_text_is_named(tmp_path):
    target = tmp_path / "basin.nc"
    target.write_text("this is not NetCDF\n")
    with pytest.raises(ValueError, match=rf"{target} cannot be read as a NetCDF-4 basin file .*{REWRITE}"):
        hh.read_basin(target)


@pytest.mark.parametrize("variable", ["prcp", "pet", "flwdir", "qobs", "time"])
def test_a_deleted_zarr_chunk_is_named(tmp_path, stored, variable):
    store = _copy(stored[1], tmp_path / "basin.zarr")
    chunks = [p for p in (store / variable / "c").rglob("*") if p.is_file()]
    chunks[0].unlink()
    with pytest.raises(ValueError, match=rf"{store} \(variable '{variable}'\): 1 of \d+ chunk\(s\) are missing.*{REWRITE}"):
        hh.read_basin(store)


@pytest.mark.parametrize("what", ["chunk", "array metadata", "group metadata"])
@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_a_truncated_zarr_file_is_named(tmp_path, stored, what, fraction):
    store = _copy(stored[1], tmp_path / "basin.zarr")
    victim = {"chunk": store / "prcp" / "c" / "0" / "0" / "0", "array metadata": store / "prcp" / "zarr.json",
              "group metadata": store / "zarr.json"}[what]
    data = victim.read_bytes()
    victim.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError, match=rf"{store}.*(damaged|not a zarr store).*{REWRITE}"):
        hh.read_basin(store)


def test_an_empty_zarr_directory_is_named(tmp_path):
    (tmp_path / "basin.zarr").mkdir()
    with pytest.raises(ValueError, match=r"basin.zarr is not a zarr store \(no zarr.json in it\)"):
        hh.read_basin(tmp_path / "basin.zarr")


def test_a_stored_basin_that_breaks_the_schema_is_named(tmp_path, basin):
    path = hh.write_basin(basin.isel(time=[0, 1, 1, 2]), tmp_path / "dup.nc")
    with pytest.raises(ValueError, match=rf"(?s){path} does not follow the hybridhydro basin schema:.*holds .* 2 times"):
        hh.read_basin(path)
    assert hh.read_basin(path, check=False).sizes["time"] == 4


def test_stores_round_trip_with_their_checks(tmp_path, basin):
    for suffix in (".nc", ".zarr"):
        back = hh.read_basin(hh.write_basin(basin, tmp_path / f"b{suffix}"))
        xr.testing.assert_identical(back, basin)


# ------------------------------------------------------------------------- calibrations


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    b = hh.synthetic_basin(nrow=6, ncol=6, ntime=48, seed=0)
    result = hh.calibrate(b, "gr4_mlp-lr", "distributed", "adam", 2, gauges="all", progress=False)
    return result.save(tmp_path_factory.mktemp("calib") / "gr4_mlp")


@pytest.mark.parametrize("name,fraction", [
    ("calibration.json", 0.0), ("calibration.json", 0.5), ("parameters.nc", 0.0), ("parameters.nc", 0.5),
    ("nn_parameters.npz", 0.0), ("nn_parameters.npz", 0.5), ("history.csv", 0.0),
])
def test_a_damaged_calibration_file_is_named(tmp_path, saved, name, fraction):
    d = _copy(saved, tmp_path / "calib")
    data = (d / name).read_bytes()
    (d / name).write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError, match=rf"{d / name} cannot be read as .*(empty|truncated|damaged).*save the "
                                         r"calibration again"):
        hh.load_calibration(d)


def test_a_calibration_json_without_its_keys_is_named(tmp_path, saved):
    d = _copy(saved, tmp_path / "calib")
    (d / "calibration.json").write_text(json.dumps({"structure": "gr4-lr"}))
    with pytest.raises(ValueError, match=r"calibration.json lacks 'mapping', 'optimizer'"):
        hh.load_calibration(d)


def test_a_calibration_missing_a_file_is_named(tmp_path, saved):
    d = _copy(saved, tmp_path / "calib")
    (d / "parameters.nc").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds calibration.json but no parameters.nc"):
        hh.load_calibration(d)


def test_a_saved_calibration_loads(saved):
    loaded = hh.load_calibration(saved)
    assert loaded.structure == "gr4_mlp-lr" and loaded.nn_parameters is not None


# ------------------------------------------------------------------------------ checkpoints


def _checkpoint(tmp_path):
    path = tmp_path / "ck"
    like = {"x": np.arange(4.0, dtype=np.float32), "y": np.zeros((2, 3), np.float32)}
    save_checkpoint(path, like, {"signature": {"a": 1}, "iteration": 3})
    return path, like


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.9])
def test_a_damaged_checkpoint_is_named(tmp_path, fraction):
    path, like = _checkpoint(tmp_path)
    target = tmp_path / "ck.npz"
    data = target.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError, match=r"the checkpoint .*ck.npz cannot be read as .*delete .*ck.npz to start over"):
        load_checkpoint(path, like, {"a": 1})


def test_a_checkpoint_with_damaged_metadata_is_named(tmp_path):
    path, like = _checkpoint(tmp_path)
    np.savez(tmp_path / "ck.npz", arr_0=like["x"], arr_1=like["y"], meta=np.frombuffer(b"{not json", np.uint8))
    with pytest.raises(ValueError, match=r"the checkpoint .*ck.npz cannot be read as a checkpoint \(its JSON "
                                         r"metadata\).*delete .*ck.npz to start over"):
        load_checkpoint(path, like, {"a": 1})


def test_a_checkpoint_of_other_shapes_is_refused(tmp_path):
    path, like = _checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"does not match this calibration's controls"):
        load_checkpoint(path, {"x": np.zeros(5, np.float32), "y": np.zeros((2, 3), np.float32)}, {"a": 1})
    state, meta = load_checkpoint(path, like, {"a": 1})
    np.testing.assert_array_equal(state["x"], like["x"])
    assert meta["iteration"] == 3


def test_calibrate_names_a_damaged_checkpoint(tmp_path):
    b = hh.synthetic_basin(nrow=6, ncol=6, ntime=48, seed=0)
    ck = tmp_path / "run"
    hh.calibrate(b, "gr4-lr", "uniform", "adam", 2, gauges="all", checkpoint=ck, checkpoint_every=1, progress=False)
    data = ck.with_suffix(".npz").read_bytes()
    ck.with_suffix(".npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"the checkpoint .*run.npz cannot be read as a NumPy .npz archive"):
        hh.calibrate(b, "gr4-lr", "uniform", "adam", 4, gauges="all", checkpoint=ck, checkpoint_every=1, progress=False)
