"""Your own basin: D8 from a DEM, outlets, build_basin (reprojection, CRS checks), the writers,
the smash layout's NetCDF forcing and descriptors, and the pipeline's stages 01-06 on a new basin."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
import yaml

import hybridhydro as hh
from hybridhydro.__main__ import main
from hybridhydro.pipeline.params import REPOSITORY_ROOT

CRS = "EPSG:2154"
#: A window of hydro-smash's France flow directions, and the box of two outlets of 100-250 km2 in it.
WINDOW = (690000.0, 770000.0, 6390000.0, 6470000.0)
BOX = (710000.0, 750000.0, 6410000.0, 6450000.0)


def grid(values, res=1000.0, x0=0.0, y0=10000.0, crs=CRS, name="z"):
    """A (y, x) DataArray, row 0 north, cell centres, with a CRS (None: without one)."""
    ny, nx = np.shape(values)
    da = xr.DataArray(np.asarray(values), dims=("y", "x"), name=name,
                      coords={"y": y0 - (np.arange(ny) + 0.5) * res, "x": x0 + (np.arange(nx) + 0.5) * res})
    return da.rio.write_crs(crs) if crs else da


def comb(nrow=4, ncol=6):
    """Rows flowing east into a last column flowing south, framed by a no-data border (code 0)."""
    codes = np.zeros((nrow + 2, ncol + 2), dtype=np.int8)
    codes[1:-1, 1:-1] = 3
    codes[1:-1, ncol] = 5
    return hh.open_flwdir(grid(codes))


# --------------------------------------------------------------------------- outlets


def test_drained_area_of_a_comb_is_known():
    area = hh.drained_area(comb()).values  # km2, 1 km2 cells
    assert np.isnan(area[0]).all() and np.isnan(area[:, 0]).all()
    np.testing.assert_array_equal(area[1, 1:6], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(area[1:5, 6], [6, 12, 18, 24])


def test_find_outlets_box_area_range_and_ranking():
    flw = comb()
    table = hh.find_outlets(flw, area_range=(3, 4))
    assert list(table.columns) == ["code", "x", "y", "area"]
    # one outlet per river stretch: the most downstream cell in the range, column 4 (area 4) of each row
    assert (table["area"] == 4).all() and len(table) == 4
    assert set(table["x"]) == {float(flw["x"][4])}
    every = hh.find_outlets(flw, area_range=(3, 4), nested=True)
    assert sorted(every["area"]) == [3] * 4 + [4] * 4
    assert list(hh.find_outlets(flw, area_range=(1, 100))["area"]) == [24]  # the one outlet of the whole comb
    ranked = hh.find_outlets(flw, area_range=(1, 100), nested=True)
    assert list(ranked["area"]) == sorted(ranked["area"], reverse=True) and list(ranked["area"][:3]) == [24, 18, 12]
    assert list(ranked["code"][:2]) == ["G001", "G002"]
    # the box keeps the cells whose centre lies inside it: the two northern rows only
    x, y = flw["x"].values, flw["y"].values
    box = (x[0], x[-1], y[2] - 1, y[0])
    boxed = hh.find_outlets(flw, box, (3, 4))
    assert set(boxed["y"]) == {float(y[1]), float(y[2])}
    assert len(hh.find_outlets(flw, area_range=(1, 100), nested=True, n=2)) == 2


def test_find_outlets_says_why_none_qualifies():
    with pytest.raises(ValueError, match=r"no cell .*drains between 100 and 200 km2.*range from 1 to 24 km2.*widen"):
        hh.find_outlets(comb(), area_range=(100, 200))
    with pytest.raises(ValueError, match="min <= max"):
        hh.find_outlets(comb(), area_range=(5, 1))


def test_outlets_whose_catchment_reaches_the_edge_are_left_out():
    codes = np.full((3, 5), 3, dtype=np.int8)  # every row flows east off the grid, from the western edge
    flw = hh.open_flwdir(grid(codes))
    with pytest.raises(ValueError, match="raster's edge"):
        hh.find_outlets(flw, area_range=(1, 10))
    flagged = hh.find_outlets(flw, area_range=(1, 10), complete_only=False)
    assert not flagged["complete"].any()


@pytest.mark.smash
def test_outlets_on_the_command_line(tmp_path, capsys):
    france = hh.open_flwdir("France", WINDOW)
    expected = hh.find_outlets(france, BOX, (100, 250))
    assert main(["outlets", "France", "--bbox", ",".join(map(str, BOX)), "--area", "100,250", "--margin", "20000"]) == 0
    printed = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out), dtype={"code": str})
    pd.testing.assert_frame_equal(printed, expected.reset_index(drop=True), check_dtype=False)
    assert main(["outlets", "France", "--bbox", ",".join(map(str, BOX)), "--area", "1e6,2e6", "--margin", "0"]) == 2
    assert "widen" in capsys.readouterr().err


# --------------------------------------------------------------------------- d8 from a DEM


def test_d8_from_a_plane_tilted_south_east_flows_south_east():
    ny, nx = 8, 9
    rows, cols = np.mgrid[0:ny, 0:nx]
    dem = grid(100.0 - rows - cols, res=100.0)  # lower to the south and to the east, equally
    codes = hh.d8_from_dem(dem).values
    assert (codes[:-1, :-1] == 4).all(), codes  # SE everywhere inside
    assert (codes[-1, :-1] == 3).all() and (codes[:-1, -1] == 5).all(), codes  # along the low edges to the corner
    area = hh.drained_area(hh.d8_from_dem(dem)).values
    assert area[-1, -1] == pytest.approx(ny * nx * 0.01)  # every cell (0.01 km2) drains to the south-east corner


def test_d8_from_a_valley_follows_its_channel():
    ny, nx = 10, 7
    rows, cols = np.mgrid[0:ny, 0:nx]
    dem = grid(50.0 + 3.0 * np.abs(cols - 3) - 0.5 * rows, res=100.0)  # a V valley draining south along column 3
    dem[2, 5] = np.nan  # a no-data cell stays no data
    flw = hh.d8_from_dem(dem)
    codes = flw.values
    assert codes[2, 5] == 0
    assert (codes[:, 3] == 5).all(), codes[:, 3]  # the channel flows south, off the grid at the bottom
    assert (codes[:, :3] != 7).all() and (codes[:, 4:] != 3).all()  # nothing flows away from the channel
    area = hh.drained_area(flw).values
    assert area[-1, 3] == pytest.approx((ny * nx - 1) * 0.01)  # every valid cell reaches the outlet
    z = dem.values
    r, c = np.nonzero(codes > 0)
    r2, c2 = r + np.array([0, -1, -1, 0, 1, 1, 1, 0, -1])[codes[r, c]], c + np.array([0, 0, 1, 1, 1, 0, -1, -1, -1])[codes[r, c]]
    inside = (r2 >= 0) & (r2 < ny) & (c2 >= 0) & (c2 < nx)
    assert (z[r2[inside], c2[inside]] <= z[r[inside], c[inside]]).all()  # downhill (or flat), never up


def test_d8_from_dem_reads_a_geotiff(tmp_path):
    dem = grid(100.0 - np.add.outer(np.arange(5), np.arange(6)).astype("float32"), res=100.0)
    dem.rio.to_raster(tmp_path / "dem.tif")
    from_file = hh.d8_from_dem(tmp_path / "dem.tif")
    np.testing.assert_array_equal(from_file.values, hh.d8_from_dem(dem).values)
    assert from_file.rio.crs.to_epsg() == 2154


def test_synthetic_pet_has_a_day_and_a_year():
    """The demo's made-up PET varies over the day (hourly steps) and over the year (any step):
    at daily steps a constant PET would leave a network nothing to learn from it."""
    flwdir = comb()
    daily = hh.synthetic_forcing(flwdir, pd.date_range("2020-01-02", periods=366, freq="D"), 86400)["pet"]
    series = daily.isel(y=1, x=1).to_series()
    assert series["2020-06-10":"2020-07-01"].mean() > 3 * series["2020-12-10":"2021-01-01"].mean()
    assert series.mean() == pytest.approx(0.25 * 24 / np.pi, rel=5e-3)  # the noon rate's annual mean kept
    hourly = hh.synthetic_forcing(flwdir, pd.date_range("2020-06-21 01:00", periods=24, freq="h"), 3600)["pet"]
    assert float(hourly.isel(time=2, y=1, x=1)) == 0.0 and float(hourly.isel(time=11, y=1, x=1)) > 0.3
    flat = hh.synthetic_forcing(flwdir, pd.date_range("2020-01-02", periods=366, freq="D"), 86400,
                                pet_seasonal_amplitude=0.0)["pet"].isel(y=1, x=1)
    assert float(flat.std()) < 1e-6
    with pytest.raises(ValueError, match="pet_seasonal_amplitude"):
        hh.synthetic_forcing(flwdir, pd.date_range("2020-01-02", periods=3, freq="D"), 86400, pet_seasonal_amplitude=2)


# --------------------------------------------------------------------------- build_basin


@pytest.fixture(scope="module")
def france():
    return hh.open_flwdir("France", WINDOW)


@pytest.fixture(scope="module")
def inputs(france):
    outlets = hh.find_outlets(france, BOX, (100, 250), n=2)
    times = pd.date_range("2020-01-01 01:00", periods=24, freq="h")
    forcing = hh.synthetic_forcing(france, times, 3600, seed=1)
    return outlets, forcing


def build(france, inputs, **kwargs):
    outlets, forcing = inputs
    args = dict(flwdir=france, outlets=outlets, forcing={"prcp": forcing["prcp"], "pet": forcing["pet"]}, dt=3600)
    return hh.build_basin(**{**args, **kwargs})


@pytest.mark.smash
def test_build_basin_from_a_crop_of_france(france, inputs):
    outlets, forcing = inputs
    basin = build(france, inputs, descriptors=hh.synthetic_descriptors(france))
    hh.check_basin(basin)
    assert list(basin["gauge"].values) == list(outlets["code"])
    np.testing.assert_allclose(basin["area_dln"].values / 1e6, outlets["area"], rtol=1e-6)  # km2 both
    assert basin.attrs["start_time"] == "2020-01-01T00:00:00" and basin.sizes["time"] == 24
    assert basin.rio.crs.to_epsg() == 2154 and int(basin["active_cell"].sum()) == pytest.approx(363, abs=5)
    # the forcing on the same cells is taken as it is
    taken = forcing["prcp"].sel(x=basin["x"], y=basin["y"])
    np.testing.assert_array_equal(basin["prcp"].values, taken.values)
    assert list(basin["descriptor"].values) == ["log_area", "gradient"]


def _climatology(france, days=range(1, 367)):
    """A daily interannual PET (dayofyear, y, x) on the flow directions' grid: day d is d / 100 mm
    everywhere, plus a west-east ramp, so that each day and each column can be told apart."""
    days = np.asarray(list(days))
    ramp = np.linspace(0.0, 0.5, france.sizes["x"])[None, None, :]
    values = (days[:, None, None] / 100.0 + ramp + np.zeros((1, france.sizes["y"], 1))).astype(np.float32)
    da = xr.DataArray(values, dims=("dayofyear", "y", "x"), name="pet", attrs={"units": "mm"},
                      coords={"dayofyear": days, "y": france["y"].values, "x": france["x"].values})
    return da.rio.write_crs(france.rio.crs)


@pytest.mark.smash
def test_a_daily_interannual_pet_is_spread_over_the_day_as_smash_does(france, inputs, tmp_path):
    outlets, forcing = inputs
    clim = _climatology(france)
    basin = build(france, inputs, forcing={"prcp": forcing["prcp"], "pet": clim}, daily_interannual_pet=True)
    # steps end at 2020-01-01 01:00 ... 2020-01-02 00:00: day 1's map x the hourly profile, then day 2's at 00:00
    profile = hh.io.PET_HOURLY_PROFILE
    weights = np.r_[profile[1:], profile[0]]
    day = np.r_[np.full(23, 1), 2]
    col = basin["active_cell"].values.astype(bool)
    expected = clim.sel(dayofyear=xr.DataArray(day, dims="time")).sel(x=basin["x"], y=basin["y"]).values
    expected = expected * weights[:, None, None].astype(np.float32)
    np.testing.assert_allclose(basin["pet"].values[:, col], expected[:, col], rtol=1e-6)
    np.testing.assert_allclose(basin["pet"].sum("time").values[col], clim.sel(dayofyear=1).sel(
        x=basin["x"], y=basin["y"]).values[col], rtol=1e-5)  # the profile sums to 1 over the day
    # the same climatology as smash's files (%m%d GeoTIFFs) gives the same basin
    folder = tmp_path / "etp"
    folder.mkdir()
    for d in (1, 2, 3):
        clim.sel(dayofyear=d).drop_vars("dayofyear").rio.to_raster(folder / f"{pd.Timestamp(2000, 1, d):%m%d}_ETPJIA.tif")
    from_files = build(france, inputs, forcing={"prcp": forcing["prcp"], "pet": folder}, daily_interannual_pet=True)
    np.testing.assert_array_equal(from_files["pet"].values, basin["pet"].values)
    # a climatology without a day is refused only where the window needs it: a warning names the day
    with pytest.warns(UserWarning, match=r"no daily interannual map for day\(s\) 0102 .*1 of 24 step\(s\) are NaN"):
        build(france, inputs, forcing={"prcp": forcing["prcp"], "pet": clim.sel(dayofyear=[1, 3])},
              daily_interannual_pet=True, forcing_plausibility="off")
    with pytest.raises(ValueError, match=r"forcing\['pet'\]: a daily interannual PET needs a 'dayofyear' dimension"):
        build(france, inputs, daily_interannual_pet=True)
    with pytest.raises(ValueError, match="dayofyear must be distinct whole days 1-366"):
        build(france, inputs, forcing={"prcp": forcing["prcp"], "pet": clim.assign_coords(dayofyear=clim["dayofyear"] - 1)},
              daily_interannual_pet=True)
    with pytest.raises(ValueError, match=r"daily_interannual_pet=True"):
        build(france, inputs, forcing={"prcp": forcing["prcp"], "pet": clim})


@pytest.mark.smash
def test_forcing_in_another_crs_is_refused_naming_both_crs(france, inputs):
    outlets, forcing = inputs
    lambert2 = forcing["prcp"].drop_vars("spatial_ref").rio.write_crs("EPSG:27572")
    with pytest.raises(ValueError, match=r"EPSG:27572.*EPSG:2154.*reprojection is turned off"):
        build(france, inputs, forcing={"prcp": lambert2, "pet": forcing["pet"]}, reproject=False)
    bare = forcing["pet"].drop_vars("spatial_ref")
    bare.attrs.pop("grid_mapping", None)
    with pytest.raises(ValueError, match=r"no CRS \(raster: no CRS, flow directions: EPSG:2154\).*write_crs"):
        build(france, inputs, forcing={"prcp": forcing["prcp"], "pet": bare})


@pytest.mark.smash
def test_forcing_on_another_grid_or_crs_is_reprojected_by_average(france, inputs):
    outlets, forcing = inputs
    # a finer grid (500 m) in the same CRS: each 1 km cell is the mean of its four 500 m cells
    xs = np.arange(WINDOW[0] + 250, WINDOW[1], 500.0)
    ys = np.arange(WINDOW[3] - 250, WINDOW[2], -500.0)
    times = forcing["time"].values
    field = (xs[None, :] - xs[0]) / 1000.0 + 0 * ys[:, None]  # mm, linear in x
    fine = xr.DataArray(np.broadcast_to(field, (len(times), *field.shape)).astype("float32"),
                        dims=("time", "y", "x"), coords={"time": times, "y": ys, "x": xs}, attrs={"units": "mm"})
    fine = fine.rio.write_crs(CRS)
    basin = build(france, inputs, forcing={"prcp": fine, "pet": forcing["pet"]})
    expected = (basin["x"].values - xs[0]) / 1000.0  # the mean of x - 250 and x + 250
    np.testing.assert_allclose(basin["prcp"].values[0], np.broadcast_to(expected, basin["prcp"].shape[1:]), atol=1e-4)
    with pytest.raises(ValueError, match=r"EPSG:2154.*EPSG:2154 \(the same CRS but other cells\)"):
        build(france, inputs, forcing={"prcp": fine, "pet": forcing["pet"]}, reproject=False)
    # another CRS: a uniform 2 mm rain stays 2 mm on every active cell
    lon = np.arange(2.0, 5.0, 0.01)
    lat = np.arange(46.0, 44.0, -0.01)
    wgs = xr.DataArray(np.full((len(times), lat.size, lon.size), 2.0, dtype="float32"), dims=("time", "y", "x"),
                       coords={"time": times, "y": lat, "x": lon}).rio.write_crs("EPSG:4326")
    basin = build(france, inputs, forcing={"prcp": wgs, "pet": forcing["pet"]})
    active = basin["active_cell"].values
    np.testing.assert_allclose(basin["prcp"].values[:, active], 2.0, rtol=1e-6)


@pytest.mark.smash
def test_netcdf_forcing_files_and_qobs_table(france, inputs, tmp_path):
    outlets, forcing = inputs
    paths = {}
    for name in ("prcp", "pet"):
        paths[name] = tmp_path / f"{name}.nc"
        forcing[[name]].to_netcdf(paths[name])
    times = pd.DatetimeIndex(forcing["time"].values)
    table = pd.DataFrame({code: np.linspace(1, 2, len(times)) * (i + 1) for i, code in enumerate(outlets["code"])},
                         index=times)
    table.iloc[3, 0] = -1.0  # missing
    basin = build(france, inputs, forcing=paths, qobs=table)
    assert np.isnan(basin["qobs"].values[0, 3])
    np.testing.assert_allclose(basin["qobs"].values[1], table.iloc[:, 1], rtol=1e-6)
    in_memory = build(france, inputs)
    np.testing.assert_array_equal(basin["prcp"].values, in_memory["prcp"].values)
    # the same discharge from smash's per-gauge CSV files
    hh.write_qobs_csv(basin["qobs"], tmp_path / "qobs")
    from_csv = build(france, inputs, forcing=paths, qobs=tmp_path / "qobs")
    np.testing.assert_array_equal(from_csv["qobs"].values, basin["qobs"].values)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        hh.write_qobs_csv(basin["qobs"], tmp_path / "qobs")
    with pytest.raises(ValueError, match=r"not in its time labels.*END of each step"):
        build(france, inputs, forcing=paths, start="2019-12-31 00:00", end="2020-01-01 12:00")


@pytest.mark.smash
def test_outlets_in_km2_far_from_their_area_say_the_unit_and_the_setup_key(france, inputs):
    outlets, _ = inputs
    wrong = outlets.assign(area=outlets["area"] * 1e6)  # m2 where km2 are expected
    with pytest.raises(ValueError, match=r"km2 in a smash layout's gauge_attributes.csv.*m2 in build_mesh.*"
                                         r"a key of the setup YAML \(setup_<name>.yaml\)"):
        build(france, inputs, outlets=wrong)


# --------------------------------------------------------------------------- writers and the smash layout


@pytest.fixture(scope="module")
def basin(france, inputs):
    outlets, forcing = inputs
    base = build(france, inputs, descriptors=hh.synthetic_descriptors(france))
    qobs = pd.DataFrame({c: np.linspace(0.5, 3.0, base.sizes["time"]) for c in outlets["code"]},
                        index=pd.DatetimeIndex(base["time"].values))
    qobs.iloc[5, 1] = np.nan
    return build(france, inputs, qobs=qobs, descriptors=hh.synthetic_descriptors(france))


def same(a: xr.Dataset, b: xr.Dataset, names=("prcp", "pet", "qobs", "descriptors", "flwdir", "active_cell", "area",
                                               "area_dln", "gauge_x", "gauge_y", "gauge_row", "gauge_col")):
    for name in names:
        np.testing.assert_allclose(np.asarray(a[name].values, float), np.asarray(b[name].values, float), rtol=1e-6,
                                   equal_nan=True, err_msg=name)
    assert list(a["gauge"].values) == list(b["gauge"].values)
    np.testing.assert_array_equal(a["time"].values, b["time"].values)


@pytest.mark.smash
def test_write_smash_dataset_round_trips(basin, tmp_path):
    directory = hh.write_smash_dataset(basin, tmp_path / "layout")
    back = hh.read_smash_dataset(directory, progress=False)
    same(basin, back)
    assert list(back["descriptor"].values) == list(basin["descriptor"].values)
    table = pd.read_csv(directory / "gauge_attributes.csv")
    np.testing.assert_allclose(table["area"], basin["area"].values / 1e6)  # km2 in the file
    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True"):
        hh.write_smash_dataset(basin, directory)
    hh.write_smash_dataset(basin, directory, overwrite=True)


@pytest.mark.smash
def test_the_round_trip_test_sees_a_broken_writer(basin, tmp_path):
    directory = hh.write_smash_dataset(basin, tmp_path / "layout")
    first = sorted((directory / "prcp").glob("*.tif"))[0]
    first.rename(first.with_name(first.name.replace("202001010100", "202001010200")))  # a step-end date off by one
    with pytest.raises((AssertionError, ValueError)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            same(basin, hh.read_smash_dataset(directory, progress=False))


@pytest.mark.smash
def test_layout_reads_every_descriptor_when_none_is_named(basin, tmp_path):
    directory = hh.write_smash_dataset(basin, tmp_path / "layout")
    setup_path = next(directory.glob("setup_*.yaml"))
    setup = yaml.safe_load(setup_path.read_text())
    del setup["descriptor_name"]
    setup_path.write_text(yaml.safe_dump(setup))
    back = hh.read_smash_dataset(directory, progress=False)
    assert list(back["descriptor"].values) == sorted(basin["descriptor"].values)  # every <name>.tif, by name
    for tif in (directory / "descriptor").glob("*.tif"):
        tif.unlink()
    with pytest.raises(FileNotFoundError, match="names no descriptor.*descriptor_name.*read_descriptor: false"):
        hh.read_smash_dataset(directory, progress=False)


@pytest.mark.smash
def test_layout_reads_netcdf_forcing_and_checks_its_crs(basin, inputs, tmp_path):
    _, forcing = inputs
    directory = hh.write_smash_dataset(basin, tmp_path / "layout")
    for name in ("prcp", "pet"):
        for tif in (directory / name).glob("*.tif"):
            tif.unlink()
        (directory / name).rmdir()
        forcing[[name]].to_netcdf(directory / f"{name}.nc")  # on the whole window: a superset of the basin's cells
    back = hh.read_smash_dataset(directory, progress=False)
    same(basin, back)
    assert back["prcp"].attrs["source_file"].endswith("prcp.nc")
    other = forcing[["pet"]].drop_vars("spatial_ref")
    other["pet"].attrs.pop("grid_mapping", None)
    other = other.rio.write_crs("EPSG:27572")
    (directory / "pet.nc").unlink()
    other.to_netcdf(directory / "pet.nc")
    setup_path = next(directory.glob("setup_*.yaml"))
    setup = yaml.safe_load(setup_path.read_text())
    setup_path.write_text(yaml.safe_dump({**setup, "reproject": False}))
    with pytest.raises(ValueError, match=r"pet.nc.*EPSG:27572, the flow directions in EPSG:2154"):
        hh.read_smash_dataset(directory, progress=False)


@pytest.mark.smash
def test_write_basin_case_points_at_the_basin_file(basin, tmp_path):
    basin_file, case_file = hh.write_basin_case(basin, tmp_path / "case", case="mine",
                                                extends=REPOSITORY_ROOT / "params" / "ci.yaml")
    assert basin_file.name == "basin.nc" and case_file.name == "mine.yaml"
    written = yaml.safe_load(case_file.read_text())
    assert written["basin"] == {"source": "basin.nc"}
    params = hh.load_params(case_file)
    assert Path(params.basin.source) == basin_file.resolve() and params.case == "mine"
    same(basin, hh.read_basin(basin_file))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        hh.write_basin_case(basin, tmp_path / "case", case="mine")


# --------------------------------------------------------------------------- the pipeline on a new basin


@pytest.mark.smash
@pytest.mark.slow  # minutes: stage 05 trains the hybrids
def test_stages_01_to_06_run_on_a_new_basin(france, tmp_path):
    """The issue's test: a crop of France's flow directions, synthetic forcing written as NetCDF,
    discharge simulated by GR4, the basin file and a ci-sized parameter file, then stages 01-06."""
    from hybridhydro.pipeline.runner import run

    outlets = hh.find_outlets(france, BOX, (40, 80), n=2)  # two catchments, about 135 cells
    times = pd.date_range("2020-01-01 01:00", periods=72, freq="h")
    made_up = hh.synthetic_forcing(france, times, 3600, seed=0)
    forcing = {}
    for name in ("prcp", "pet"):
        forcing[name] = tmp_path / f"{name}.nc"
        made_up[[name]].to_netcdf(forcing[name])
    dry = hh.build_basin(flwdir=france, outlets=outlets, forcing=forcing, dt=3600)
    truth = hh.simulate(dry, "gr4-lr", {"cp": 60.0, "ct": 40.0, "llr": 5.0})
    basin = hh.build_basin(flwdir=france, outlets=outlets, forcing=forcing, dt=3600,
                           qobs=truth["q"].to_pandas().T, descriptors=hh.synthetic_descriptors(france))
    _, case_file = hh.write_basin_case(basin, tmp_path / "case", case="new_basin",
                                       extends=REPOSITORY_ROOT / "params" / "ci.yaml",
                                       settings={"hybrid": {"solvers": ["newton", "conservative"]}})
    assert hh.load_params(case_file).hybrid.solvers == ["newton", "conservative"]
    start = time.perf_counter()
    result = run(hh.load_params(case_file), output_root=tmp_path / "runs",
                 stages=["01_basin", "02_forward", "03_calibrate", "04_regionalize", "05_hybrid", "06_validate"],
                 progress=False)
    print(f"stages 01-06 on the new basin: {time.perf_counter() - start:.0f} s")
    assert [s.stage for s in result.stages] == ["01_basin", "02_forward", "03_calibrate", "04_regionalize",
                                                "05_hybrid", "06_validate"]
    run_dir = tmp_path / "runs" / "new_basin"
    same(basin, hh.read_basin(run_dir / "basin.nc"), names=("prcp", "pet", "qobs", "flwdir", "area"))
    assert (run_dir / "comparison.md").is_file()


@pytest.mark.smash
def test_stage_00_builds_the_demo_and_stage_01_reads_its_case(tmp_path):
    """Stage 00 on its defaults (no user data): a crop of France, made-up forcing as NetCDF, GR4's
    discharge; its parameter file is accepted by the runner, and stage 01 reads its basin.nc."""
    from hybridhydro.pipeline.runner import run

    ci = hh.load_params(REPOSITORY_ROOT / "params" / "ci.yaml")
    run(ci, output_root=tmp_path / "runs", stages=["00_new_basin"], progress=False)
    made = tmp_path / "runs" / "ci"
    for name in ("basin.nc", "demo_crop.yaml", "prcp.nc", "pet.nc", "gauge_attributes.csv", "smash_layout"):
        assert (made / name).exists(), name
    case = hh.load_params(made / "demo_crop.yaml")
    assert Path(case.basin.source) == (made / "basin.nc").resolve()
    run(case, output_root=tmp_path / "runs", stages=["01_basin"], progress=False)
    same(hh.read_basin(made / "basin.nc"), hh.read_basin(tmp_path / "runs" / "demo_crop" / "basin.nc"),
         names=("prcp", "pet", "qobs", "descriptors", "flwdir", "area"))
