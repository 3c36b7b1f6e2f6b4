"""Basin I/O: smash-layout reading (against the hydro-smash oracle), NetCDF/zarr round trip, errors.

Oracle tests call smash's public API only (``smash.factory.load_dataset``, ``smash.Model``)
and compare its arrays with ours: smash writes -99 (any negative) where we write NaN.
"""

from __future__ import annotations

import importlib.util

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.transform import Affine

import hybridhydro
from hybridhydro.io import read_basin, read_smash_dataset, write_basin
from hybridhydro.io._rasters import Grid, RasterReader
from hybridhydro.io._series import pet_day_weights
from hybridhydro.mesh import catchment_means as basin_means, upstream_masks
from hybridhydro.io.smash_layout import smash_dataset_root
from hybridhydro.mesh import Mesh

# hydro-smash's data folder; without the smash extra a path that does not exist (every test that reads
# it is marked smash and skipped, the others run)
DATA = smash_dataset_root() if importlib.util.find_spec("smash") else Path("<hydro-smash not installed>")
FLWDIR = DATA / "France_flwdir.tif"


# --------------------------------------------------------------------------- helpers


def from_origin(xmin: float, ymax: float, xres: float, yres: float) -> Affine:
    return Affine(xres, 0.0, xmin, 0.0, -yres, ymax)


def mesh_from_smash(m: dict) -> Mesh:
    """Our Mesh from smash's mesh dict (to test reading independently of build_mesh)."""
    ng = int(m.get("ng", 0))
    shape = m["flwdir"].shape
    flwdst = np.asarray(m.get("flwdst", np.full(shape, -99.0)), dtype=np.float32)
    pos = np.asarray(m["gauge_pos"]) if ng else np.zeros((0, 2), np.int32)
    return Mesh(
        flwdir=m["flwdir"].astype(np.int8),
        active_cell=m["active_cell"].astype(bool),
        dx=m["dx"],
        dy=m["dy"],
        flwacc=m["flwacc"],
        flwdst=np.where(flwdst < 0, np.nan, flwdst),
        flwpar=m["flwpar"],
        xmin=float(m["xmin"]),
        ymax=float(m["ymax"]),
        xres=float(m["xres"]),
        yres=float(m["yres"]),
        epsg=int(m["epsg"]),
        gauge_row=pos[:, 0],
        gauge_col=pos[:, 1],
        code=np.asarray(m.get("code", []), dtype=str),
        gauge_x=np.full(ng, np.nan),
        gauge_y=np.full(ng, np.nan),
        area=np.asarray(m.get("area", []), np.float32),
        area_dln=np.asarray(m.get("area_dln", []), np.float32),
    )


def assert_same(ours: np.ndarray, ref: np.ndarray, what: str, rtol: float = 0.0) -> float:
    """NaN exactly where smash has a negative value, values equal elsewhere; returns the max rel diff."""
    ref = np.asarray(ref)
    assert ours.shape == ref.shape, what
    assert ours.dtype == np.float32, what
    np.testing.assert_array_equal(np.isnan(ours), ref < 0, err_msg=f"{what}: missing values differ")
    ok = ~np.isnan(ours)
    rel = np.abs(ours[ok].astype(np.float64) - ref[ok]) / np.maximum(np.abs(ref[ok]), 1e-30)
    worst = float(rel.max()) if rel.size else 0.0
    assert worst <= rtol, f"{what}: max relative difference {worst:g}"
    return worst


def smash_model(name: str, **overrides):
    smash = pytest.importorskip("smash")
    setup, mesh = smash.factory.load_dataset(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = smash.Model({**setup, **overrides}, mesh)
    return model, mesh


def compare_with_smash(ds, model, descriptors: bool = True) -> None:
    assert_same(ds["prcp"].values, np.moveaxis(model.atmos_data.prcp, -1, 0), "prcp")
    assert_same(ds["pet"].values, np.moveaxis(model.atmos_data.pet, -1, 0), "pet")
    assert_same(ds["qobs"].values, model.response_data.q, "qobs")
    assert_same(ds["mean_prcp"].values, model.atmos_data.mean_prcp, "mean_prcp")
    assert_same(ds["mean_pet"].values, model.atmos_data.mean_pet, "mean_pet")
    if descriptors:
        assert_same(ds["descriptors"].values, np.moveaxis(model.physio_data.descriptor, -1, 0), "descriptors")


def write_setup(directory: Path, **setup) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"setup_{directory.name}.yaml"
    path.write_text(yaml.safe_dump({k: (str(v) if isinstance(v, Path) else v) for k, v in setup.items()}))
    return path


def cance_copy(tmp_path: Path, **setup) -> Path:
    """A user-layout dataset that points at Cance's files (absolute paths) and France_flwdir.tif."""
    d = tmp_path / "mycance"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "Cance" / "gauge_attributes.csv", d)
    base = dict(
        dt=3600,
        start_time="2014-09-15 00:00",
        end_time="2014-09-17 00:00",
        read_prcp=True,
        prcp_directory=DATA / "Cance" / "prcp",
        prcp_conversion_factor=0.1,
        read_pet=True,
        pet_directory=DATA / "Cance" / "pet",
        daily_interannual_pet=True,
        read_qobs=True,
        qobs_directory=DATA / "Cance" / "qobs",
        read_descriptor=True,
        descriptor_directory=DATA / "Cance" / "descriptor",
        descriptor_name=["slope", "dd"],
        flwdir=FLWDIR,
    )
    base.update(setup)
    write_setup(d, **base)
    return d


# --------------------------------------------------------------------------- oracle: bundled datasets


@pytest.fixture(scope="module")
def cance():
    end = "2014-10-15 00:00"  # 720 hourly steps
    ds = read_smash_dataset("Cance", end=end, progress=False)
    model, mesh = smash_model("Cance", end_time=end)
    return ds, model, mesh


@pytest.mark.smash
def test_cance_reads_as_smash(cance):
    ds, model, mesh = cance
    compare_with_smash(ds, model)
    np.testing.assert_array_equal(ds["active_cell"].values, mesh["active_cell"].astype(bool))
    np.testing.assert_array_equal(np.c_[ds["gauge_row"], ds["gauge_col"]], mesh["gauge_pos"])
    assert list(ds["gauge"].values) == list(mesh["code"])
    assert list(ds["descriptor"].values) == ["slope", "dd"]


@pytest.mark.smash
def test_lez_reads_as_smash_daily():
    ds = read_smash_dataset("lez", progress=False)  # case-insensitive name
    model, _ = smash_model("Lez")
    compare_with_smash(ds, model)
    assert ds.attrs["dt"] == 86400.0 and ds.sizes["time"] == 364
    assert ds["time"].values[0] == np.datetime64("2012-08-02")


@pytest.mark.smash
def test_france_bbox_reads_as_smash():
    end = "2012-01-01 09:00"  # steps of zero and non-zero PET weight
    ds = read_smash_dataset("France", end=end, progress=False)
    model, mesh = smash_model("France", end_time=end)
    compare_with_smash(ds, model, descriptors=False)
    assert ds.sizes["gauge"] == 0 and ds["qobs"].shape == (0, 9)
    assert ds["flwdir"].shape == mesh["flwdir"].shape
    assert (ds.attrs["xmin"], ds.attrs["ymax"]) == (100000.0, 7125000.0)
    np.testing.assert_array_equal(ds["active_cell"].values, mesh["active_cell"].astype(bool))


@pytest.mark.smash
@pytest.mark.parametrize("dt,start,end", [(1800, "2014-12-30 20:00", "2015-01-01 04:00"), (10800, "2014-10-01 01:00", "2014-10-03 01:00"), (86400, "2014-09-30 00:00", "2014-12-31 00:00")])
def test_daily_interannual_pet_for_other_steps(tmp_path, dt, start, end):
    """PET spread over the day for dt below, above and equal to a day, with a conversion factor."""
    d = cance_copy(tmp_path, dt=dt, start_time=start, end_time=end, read_prcp=False, read_qobs=False,
                   read_descriptor=False, pet_conversion_factor=0.7)
    model, mesh = smash_model("Cance", dt=dt, start_time=start, end_time=end, read_prcp=False, read_qobs=False,
                             read_descriptor=False, pet_conversion_factor=0.7)
    with pytest.warns(UserWarning, match="read_prcp: false"):
        ds = read_smash_dataset(d, mesh=mesh_from_smash(mesh), progress=False)
    assert_same(ds["pet"].values, np.moveaxis(model.atmos_data.pet, -1, 0), f"pet dt={dt}")


# one raster geometry per step: offsets of x.3, x.5, x.7 cells, coarser, finer and anisotropic
# resolutions, partial and no overlap, with several sample types, compressions and layouts
GEOMETRIES = [
    # xmin, ymax, xres, yres, nrow, ncol, dtype, creation options
    (807000, 6484000, 1000, 1000, 40, 40, "int32", {"compress": "packbits"}),
    (806700, 6484300, 1000, 1000, 40, 40, "float32", {"compress": "deflate"}),
    (806500, 6484500, 1000, 1000, 40, 40, "float32", {}),
    (805500, 6485500, 1000, 1000, 40, 40, "int16", {"compress": "lzw"}),
    (814500, 6476500, 1000, 1000, 40, 40, "float64", {"ENDIANNESS": "BIG"}),
    (820000, 6470000, 1000, 1000, 10, 15, "uint16", {"compress": "deflate", "predictor": 2}),
    (807250, 6484250, 500, 500, 80, 80, "float32", {"tiled": True, "blockxsize": 16, "blockysize": 16}),
    (806900, 6484100, 700, 700, 60, 60, "float32", {"compress": "packbits"}),
    (806900, 6484100, 1300, 1300, 30, 30, "float32", {}),
    (807500, 6484700, 2000, 2000, 20, 20, "float32", {}),
    (807000, 6484000, 3000, 3000, 40, 40, "float32", {}),
    (807000, 6484000, 5000, 5000, 40, 40, "float32", {}),
    (807000, 6484000, 1600, 1600, 40, 40, "float32", {}),
    (807000, 6484000, 500, 2000, 80, 20, "float32", {}),
    (900000, 6484000, 1000, 1000, 10, 10, "float32", {}),
]


def write_geometry_series(folder: Path, times: pd.DatetimeIndex, skip: int) -> None:
    folder.mkdir(parents=True)
    for k, (t, (x0, y0, xr, yr, nr, nc, dtype, opts)) in enumerate(zip(times, GEOMETRIES)):
        if k == skip:
            continue
        rr, cc = np.indices((nr, nc))
        values = (rr * 100 + cc + k).astype(dtype)
        values[0, 0] = 7  # the no-data value
        if np.dtype(dtype).kind in "if":
            values[1, 1] = -3  # negative: missing for smash too
        path = folder / f"{t:%Y}" / f"rain_{t:%Y%m%d%H%M}.tif"
        path.parent.mkdir(exist_ok=True)
        with rasterio.open(path, "w", driver="GTiff", width=nc, height=nr, count=1, dtype=dtype, crs="EPSG:2154",
                           transform=from_origin(x0, y0, xr, yr), nodata=7, **opts) as dst:
            dst.write(values, 1)


@pytest.mark.smash
def test_rasters_of_other_geometries_read_as_smash(tmp_path):
    """Windowing, resampling, no-data, missing step: one smash run, one raster geometry per step."""
    start = pd.Timestamp("2014-10-01 00:00")
    times = start + pd.to_timedelta(np.arange(1, len(GEOMETRIES) + 2), unit="h")  # the last step has no file
    end = times[-1]
    write_geometry_series(tmp_path / "rain", times, skip=2)
    d = cance_copy(tmp_path, start_time=str(start), end_time=str(end), prcp_directory=tmp_path / "rain",
                   prcp_conversion_factor=0.5, read_qobs=False, read_descriptor=False, read_pet=False)
    model, mesh = smash_model("Cance", start_time=str(start), end_time=str(end), prcp_directory=str(tmp_path / "rain"),
                             prcp_conversion_factor=0.5, read_qobs=False, read_descriptor=False, read_pet=False)
    with pytest.raises(ValueError, match="holds files dated"):  # the last step is past the last file
        read_smash_dataset(d, mesh=mesh_from_smash(mesh), progress=False)
    # the test rasters hold their row and column numbers (up to 4 000 "mm"): no rain, so no plausibility check
    with pytest.warns(UserWarning) as record:
        ds = read_smash_dataset(d, end=times[-2], mesh=mesh_from_smash(mesh), progress=False, forcing_plausibility="off")
    messages = " ".join(str(w.message) for w in record)
    assert "1 of 15 step(s) have no file" in messages and "nearest-neighbour" in messages
    assert_same(ds["prcp"].values, np.moveaxis(model.atmos_data.prcp, -1, 0)[:-1], "prcp")
    assert np.isnan(ds["prcp"].values[2]).all()


# --------------------------------------------------------------------------- period, attrs, layout


@pytest.mark.smash
def test_start_end_override_and_attrs(cance):
    ds = read_smash_dataset("CANCE", start="2014-10-01 00:00", end=pd.Timestamp("2014-10-02"))  # with progress bars
    assert ds.sizes["time"] == 24
    assert ds["time"].values[0] == np.datetime64("2014-10-01T01:00") and ds["time"].values[-1] == np.datetime64("2014-10-02")
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    assert ds.attrs["start_time"] == "2014-10-01T00:00:00" and ds.attrs["end_time"] == "2014-10-02T00:00:00"
    assert ds.attrs["dt"] == 3600.0 and ds.attrs["name"] == "Cance" and ds.attrs["epsg"] == 2154
    assert Path(ds.attrs["source"]) == DATA / "Cance"
    assert ds.rio.crs.to_epsg() == 2154
    for var, units in [("prcp", "mm"), ("pet", "mm"), ("qobs", "m3 s-1"), ("mean_prcp", "mm"), ("mean_pet", "mm"), ("descriptors", "1")]:
        assert ds[var].attrs["units"] == units
        assert ds[var].dtype == np.float32
    hybridhydro.check_basin(ds)
    # the same steps as the longer read
    full = cance[0]
    np.testing.assert_array_equal(ds["prcp"].values, full["prcp"].sel(time=ds["time"]).values)


@pytest.mark.smash
@pytest.mark.parametrize("start,end,match", [
    ("2014-10-02", "2014-10-01", "must end after it starts"),
    ("2014-10-01", "2014-10-01", "must end after it starts"),
    ("2013-01-01", "2013-01-05", "holds files dated"),
    ("2015-01-15 00:00", "2015-02-01 00:00", "holds files dated"),
    ("2014-10-01 00:30", "2014-10-02 00:00", "whole number of steps"),
    ("not a date", "2014-10-02", "not a date"),
])
def test_bad_period_is_a_clear_error(start, end, match):
    with pytest.raises(ValueError, match=match):
        read_smash_dataset("Cance", start, end, progress=False)


@pytest.mark.smash
def test_missing_forcing_step_is_nan_with_a_warning():
    with pytest.warns(UserWarning, match=r"prcp: 1 of 6 step\(s\) have no file .*2014-12-19 00:00"):
        ds = read_smash_dataset("Cance", "2014-12-18 21:00", "2014-12-19 03:00", progress=False)
    assert np.isnan(ds["prcp"].values[2]).all() and not np.isnan(ds["prcp"].values[[0, 1, 3, 4, 5]]).any()
    assert np.isnan(ds["mean_prcp"].values[:, 2]).all()


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="Cance, Lez, France"):
        read_smash_dataset("Garonne")


@pytest.mark.smash
def test_user_directory_layout(tmp_path):
    d = cance_copy(tmp_path)
    ds = read_smash_dataset(d, progress=False)
    ref = read_smash_dataset("Cance", end="2014-09-17 00:00", progress=False)
    for var in ("prcp", "pet", "qobs", "descriptors", "mean_prcp", "flwdir", "active_cell"):
        np.testing.assert_array_equal(ds[var].values, ref[var].values, err_msg=var)
    assert ds.attrs["name"] == "mycance" and Path(ds.attrs["source"]) == d


@pytest.mark.smash
def test_relative_directories_and_flwdir_file(tmp_path):
    d = tmp_path / "rel"
    shutil.copytree(DATA / "Lez", d, ignore=shutil.ignore_patterns("*.py", "*.hdf5", "__pycache__"))
    shutil.copy(FLWDIR, d / "flwdir.tif")
    ds = read_smash_dataset(d, end="2012-09-01", progress=False)
    assert ds.sizes["time"] == 31 and ds.sizes["gauge"] == 3 and ds.sizes["descriptor"] == 6
    (d / "flwdir.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"flwdir\.tif and for a 'flwdir' key"):
        read_smash_dataset(d, progress=False)


@pytest.mark.smash
def test_bbox_from_setup_and_argument(tmp_path):
    d = tmp_path / "box"
    write_setup(d, dt=3600, start_time="2012-01-01 00:00", end_time="2012-01-01 03:00", read_prcp=True,
                prcp_directory=DATA / "France" / "prcp", prcp_conversion_factor=0.1, read_pet=True,
                pet_directory=DATA / "France" / "pet", daily_interannual_pet=True, flwdir=FLWDIR,
                bbox=[700000, 760000, 6400000, 6450000])
    ds = read_smash_dataset(d, progress=False)
    assert ds["flwdir"].shape == (50, 60) and ds.sizes["gauge"] == 0
    assert ds["x"].values[0] == 700500.0 and ds["y"].values[0] == 6449500.0
    france = read_smash_dataset("France", end="2012-01-01 03:00", progress=False)
    np.testing.assert_array_equal(ds["prcp"].values, france["prcp"].sel(x=ds["x"], y=ds["y"]).values)
    small = read_smash_dataset(d, bbox=(700000, 720000, 6400000, 6410000), progress=False)
    assert small["flwdir"].shape == (10, 20)
    (d / f"setup_{d.name}.yaml").write_text((d / f"setup_{d.name}.yaml").read_text().replace("bbox", "other"))
    with pytest.raises(FileNotFoundError, match="no gauge_attributes.csv .* and no bbox"):
        read_smash_dataset(d, progress=False)


# --------------------------------------------------------------------------- bad inputs


def test_missing_setup_yaml(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no setup_\*\.yaml in .*empty"):
        read_smash_dataset(tmp_path / "empty")


@pytest.mark.smash
def test_missing_directory_names_it(tmp_path):
    d = cance_copy(tmp_path, prcp_directory="no_such_dir")
    with pytest.raises(FileNotFoundError, match=r"prcp: directory .*no_such_dir does not exist"):
        read_smash_dataset(d, progress=False)


@pytest.mark.smash
def test_undated_file_names(tmp_path):
    folder = tmp_path / "undated"
    folder.mkdir()
    shutil.copy(next((DATA / "Cance" / "prcp").rglob("*.tif")), folder / "rain.tif")
    d = cance_copy(tmp_path, prcp_directory=folder)
    with pytest.raises(ValueError, match=r"no file name under .* carries a date with 12 digits"):
        read_smash_dataset(d, progress=False)


@pytest.mark.smash
def test_qobs_header_not_a_date(tmp_path):
    q = tmp_path / "q"
    shutil.copytree(DATA / "Cance" / "qobs", q)
    (q / "V3515010.csv").write_text("discharge\n1.0\n2.0\n")
    d = cance_copy(tmp_path, qobs_directory=q)
    with pytest.raises(ValueError, match=r"header line of .*V3515010\.csv is 'discharge', which is not a date"):
        read_smash_dataset(d, progress=False)


@pytest.mark.smash
def test_qobs_file_layout(tmp_path):
    """Header formats, negative = missing, the last line is used, misaligned header is an error."""
    q = tmp_path / "q"
    q.mkdir()
    (q / "V3524010.csv").write_text("2014-09-15 01:00\n1.0\n-5\n3.0\n")
    (q / "V3515010.csv").write_text("20140915\n0.5\n1.5\n2.5\n\n\n")
    (q / "sub").mkdir()
    (q / "sub" / "x_V3517010_y.csv").write_text("201409150200\n9\n8\n")
    d = cance_copy(tmp_path, qobs_directory=q, end_time="2014-09-15 05:00")
    ds = read_smash_dataset(d, progress=False)
    nan = np.nan
    np.testing.assert_array_equal(ds["qobs"].values, np.array([[1, nan, 3, nan, nan], [1.5, 2.5, nan, nan, nan], [nan, 9, 8, nan, nan]], np.float32))
    (q / "V3524010.csv").write_text("201409150030\n1.0\n")
    with pytest.raises(ValueError, match="not on the model's step grid"):
        read_smash_dataset(d, progress=False)
    (q / "V3524010.csv").write_text("201409150100\n1.0\nabc\n")
    with pytest.raises(ValueError, match=r"line 3 of .*V3524010\.csv is 'abc', not a number"):
        read_smash_dataset(d, progress=False)


@pytest.mark.smash
def test_missing_qobs_file_warns(tmp_path):
    q = tmp_path / "q"
    shutil.copytree(DATA / "Cance" / "qobs", q)
    (q / "V3517010.csv").unlink()
    d = cance_copy(tmp_path, qobs_directory=q)
    with pytest.warns(UserWarning, match="for gauge.s. V3517010"):
        ds = read_smash_dataset(d, progress=False)
    assert np.isnan(ds["qobs"].sel(gauge="V3517010")).all()


@pytest.mark.smash
def test_descriptor_missing_or_with_holes(tmp_path):
    d = cance_copy(tmp_path, descriptor_name=["slope", "porosity"])
    with pytest.raises(FileNotFoundError, match="descriptor 'porosity': no raster .*porosity.tif"):
        read_smash_dataset(d, progress=False)
    desc = tmp_path / "desc"
    shutil.copytree(DATA / "Cance" / "descriptor", desc)
    with rasterio.open(desc / "dd.tif", "r+") as dst:
        values = dst.read(1)
        values[:, :] = dst.nodata
        dst.write(values, 1)
    d = cance_copy(tmp_path, descriptor_directory=desc)
    with pytest.raises(ValueError, match=r"descriptor 'dd' .*dd\.tif\) has no value on 383 active cell.*row \d+, col \d+ \(x = "):
        read_smash_dataset(d, progress=False)


# --------------------------------------------------------------------------- NetCDF / zarr


@pytest.mark.smash
@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_write_read_round_trip(cance, tmp_path, suffix):
    ds = cance[0].isel(time=slice(0, 48)).copy(deep=True)
    ds["qobs"][1, 5:9] = np.nan
    path = write_basin(ds, tmp_path / f"basin{suffix}")
    back = read_basin(path)
    assert back.identical(ds)
    for name, var in ds.variables.items():
        assert back[name].dtype == var.dtype, name
    assert back.rio.crs == ds.rio.crs
    assert back["gauge"].values.tolist() == ["V3524010", "V3515010", "V3517010"]
    assert np.isnan(back["qobs"].values).sum() == np.isnan(ds["qobs"].values).sum() > 0
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_basin(ds, path)
    write_basin(ds.isel(time=slice(0, 24)), path, overwrite=True)
    assert read_basin(path).sizes["time"] == 24


@pytest.mark.smash
@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_round_trip_without_gauges(tmp_path, suffix):
    ds = read_smash_dataset(tmp_path_box(tmp_path), progress=False)
    back = read_basin(write_basin(ds, tmp_path / f"box{suffix}"))
    assert back.identical(ds) and back.sizes["gauge"] == 0 and back["gauge"].dtype == ds["gauge"].dtype


def tmp_path_box(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    write_setup(d, dt=3600, start_time="2012-01-01 06:00", end_time="2012-01-01 09:00", read_prcp=True,
                prcp_directory=DATA / "France" / "prcp", prcp_conversion_factor=0.1, read_pet=True,
                pet_directory=DATA / "France" / "pet", daily_interannual_pet=True, flwdir=FLWDIR,
                bbox=[700000, 720000, 6400000, 6420000])
    return d


@pytest.mark.smash
def test_write_basin_bad_suffix(tmp_path, cance):
    with pytest.raises(ValueError, match=r"\.nc .* or \.zarr"):
        write_basin(cance[0], tmp_path / "basin.h5")


# --------------------------------------------------------------------------- building blocks


def test_pet_weights_cover_the_day():
    for dt in (900, 1800, 3600, 7200, 10800, 21600, 86400):
        times = pd.date_range("2014-06-01", periods=86400 // dt, freq=f"{dt}s") + pd.Timedelta(seconds=dt)
        _, w = pet_day_weights(times, dt)
        assert w.sum() == pytest.approx(1.0, abs=1e-6), dt
    # leap-year calendar: 1 March of a non-leap year takes the 29 February file
    mmdd, _ = pet_day_weights(pd.DatetimeIndex(["2014-03-01 12:00", "2016-03-01 12:00", "2014-12-31 12:00"]), 3600)
    assert mmdd.tolist() == ["0229", "0301", "1230"]


def _reference_mask(flwdir, r, c):
    drow = {1: -1, 2: -1, 3: 0, 4: 1, 5: 1, 6: 1, 7: 0, 8: -1}
    dcol = {1: 0, 2: 1, 3: 1, 4: 1, 5: 0, 6: -1, 7: -1, 8: -1}
    nrow, ncol = flwdir.shape
    mask = np.zeros(flwdir.shape, bool)
    for i in range(nrow):
        for j in range(ncol):
            seen, (a, b) = set(), (i, j)
            while (a, b) not in seen:
                if (a, b) == (r, c):
                    mask[i, j] = True
                    break
                seen.add((a, b))
                code = flwdir[a, b]
                if code not in drow:
                    break
                a, b = a + drow[code], b + dcol[code]
                if not (0 <= a < nrow and 0 <= b < ncol):
                    break
    return mask


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 9), st.integers(2, 9), st.integers(0, 2**32 - 1))
def test_upstream_masks_match_a_path_walk(nrow, ncol, seed):
    rng = np.random.default_rng(seed)
    flwdir = rng.integers(0, 9, size=(nrow, ncol))  # any codes, loops included
    rows, cols = rng.integers(0, nrow, 3), rng.integers(0, ncol, 3)
    masks = upstream_masks(flwdir, rows, cols)
    for g in range(3):
        np.testing.assert_array_equal(masks[g], _reference_mask(flwdir, rows[g], cols[g]))


def test_basin_means_ignore_nan():
    field = np.array([[[1.0, np.nan], [3.0, 5.0]], [[np.nan, np.nan], [np.nan, np.nan]]], np.float32)
    masks = np.array([[[True, True], [True, False]], [[False, False], [False, True]]])
    np.testing.assert_array_equal(basin_means(field, masks), np.array([[2.0, np.nan], [5.0, np.nan]], np.float32))
    assert basin_means(field, np.zeros((0, 2, 2), bool)).shape == (0, 2)


@pytest.mark.parametrize("opts", [{}, {"compress": "deflate"}, {"compress": "packbits"}, {"compress": "lzw"}])
def test_raster_reader_windows_compressed_rasters(tmp_path, opts):
    grid = Grid(1000.0, 5000.0, 100.0, 100.0, 30, 20)
    path = tmp_path / "r.tif"
    values = np.random.default_rng(0).normal(size=(37, 23)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=23, height=37, count=1, dtype="float32",
                       transform=from_origin(850.0, 5200.0, 100.0, 100.0), nodata=values[5, 5], blockysize=4, **opts) as dst:
        dst.write(values, 1)
    with RasterReader(grid) as fast, RasterReader(grid, fast=False) as slow:
        a = fast.read(path)
        np.testing.assert_array_equal(a, slow.read(path))
        assert fast.fast
    # the grid starts 1.5 raster cells east and 2 cells south of the raster's corner (rounded half to even: 2)
    np.testing.assert_array_equal(a[~np.isnan(a)], values[2:32, 2:22][~np.isnan(a)])
    assert np.isnan(a).sum() == 1  # the no-data cell; the grid lies inside the raster


@pytest.mark.smash
def test_fast_reads_equal_rasterio_on_the_cance_series():
    """Cance mixes pixel-is-area and pixel-is-point files: tifffile gives what rasterio gives."""
    files = sorted((DATA / "Cance" / "prcp").rglob("*.tif"))[:300]
    grid = Grid(813000.0, 6478000.0, 1000.0, 1000.0, 28, 28)
    with RasterReader(grid) as fast, RasterReader(grid, fast=False) as slow:
        for path, values in zip(files, fast.read_many(files)):
            np.testing.assert_array_equal(values, slow.read(path), err_msg=str(path))
        assert fast.fast, "the tifffile path should stay on for these plain GeoTIFFs"
