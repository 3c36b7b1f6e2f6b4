"""The files hybridhydro writes are read by other tools: CF NetCDF and GeoTIFF, checked with
plain xarray, rioxarray and pint (through cf-xarray's UDUNITS registry), never our readers.

Two parts:

* fast tests of :func:`hybridhydro.io.to_cf`, :func:`hybridhydro.io.write_simulation` and
  :func:`hybridhydro.io.write_parameter_maps` on the synthetic basin (and of the file checkers
  below: each must catch a bad file);
* ``-m outputs``: every ``.nc`` and ``.tif`` of a pipeline run directory, named by the
  environment variable ``HYBRIDHYDRO_RUN_DIR`` (``make test-notebooks`` runs it on the ci run
  nbval made); skipped when the variable is unset.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import rioxarray
import xarray as xr
from cf_xarray.units import units as ureg
from rasterio.crs import CRS

import hybridhydro as hh
from hybridhydro.io import CONVENTIONS, step_units, to_cf, write_parameter_maps, write_simulation
from hybridhydro.structures import PARAMETER_UNITS

RUN_DIR_VARIABLE = "HYBRIDHYDRO_RUN_DIR"


# ---------------------------------------------------------------------------------------------
# The checkers: what another tool needs from a file (used on the run directory and tested below)
# ---------------------------------------------------------------------------------------------


def unit_problem(name: str, units) -> str | None:
    """Why pint (cf-xarray's UDUNITS registry) cannot read ``units``; None when it can. The
    library's per-step token is a problem too: pint reads ``"mm dt-1"`` as mm per decitonne."""
    if any(re.fullmatch(r"dt[-+]?\d*", token) for token in str(units).split()):
        return f"{name}: units {units!r} hold the per-step token 'dt' (pint reads it as a decitonne)"
    try:
        value = ureg(str(units))
    except Exception as err:  # noqa: BLE001  (pint raises several kinds)
        return f"{name}: units {units!r} do not parse ({type(err).__name__}: {err})"
    if not isinstance(value, (int, float)) and not hasattr(value, "units"):
        return f"{name}: units {units!r} parse to {value!r}, not a quantity"
    return None


def nc_problems(path: Path, basin_crs) -> list[str]:
    """What is wrong with the NetCDF file ``path`` for a CF tool; ``basin_crs`` is the run's CRS."""
    problems = []
    with xr.open_dataset(path, decode_coords="all") as ds:
        if not str(ds.attrs.get("Conventions", "")).startswith("CF-"):
            problems.append(f"Conventions = {ds.attrs.get('Conventions')!r}, not CF-x.y")
        for name, var in ds.variables.items():
            if "units" in var.attrs:  # time units are decoded into the encoding by xarray
                problem = unit_problem(name, var.attrs["units"])
                if problem:
                    problems.append(problem)
        for dim, axis in (("x", "X"), ("y", "Y"), ("time", "T")):
            if dim in ds.coords and ds[dim].attrs.get("axis") != axis:
                problems.append(f"{dim}: axis = {ds[dim].attrs.get('axis')!r}, expected {axis!r}")
        if "time" in ds.coords and ds["time"].dtype.kind == "M":
            problems += _time_bounds_problems(ds)
        gridded = [n for n, v in ds.data_vars.items() if {"x", "y"} <= set(v.dims)]
        if gridded:
            if ds.rio.crs is None or ds.rio.crs != basin_crs:
                problems.append(f"CRS {ds.rio.crs} is not the basin's {basin_crs}")
            unmapped = [n for n in gridded if "grid_mapping" not in ds[n].encoding]
            if unmapped:
                problems.append(f"no grid_mapping on {unmapped}")
    return problems


def _time_bounds_problems(ds: xr.Dataset) -> list[str]:
    name = ds["time"].attrs.get("bounds") or ds["time"].encoding.get("bounds")
    if name is None or name not in ds.variables:
        return [f"time has no bounds variable (bounds = {name!r})"]
    bounds = ds[name].values
    times = ds["time"].values
    dt = np.timedelta64(int(round(float(ds.attrs["dt"]) * 1e9)), "ns") if "dt" in ds.attrs else None
    if bounds.shape != (times.size, 2) or not np.array_equal(bounds[:, 1], times):
        return [f"{name}: the upper bounds are not the time labels"]
    if dt is not None and not np.array_equal(bounds[:, 0], times - dt):
        return [f"{name}: the lower bounds are not time - dt"]
    return []


def tif_problems(path: Path, basin_crs) -> list[str]:
    """What is wrong with the GeoTIFF ``path`` for a GIS tool: CRS, nodata, band names and units."""
    problems = []
    with rioxarray.open_rasterio(path) as da:
        if da.rio.crs is None or da.rio.crs != basin_crs:
            problems.append(f"CRS {da.rio.crs} is not the basin's {basin_crs}")
        if da.rio.nodata is None:
            problems.append("no nodata value")
        n = da.sizes["band"]
        names = _per_band(da.attrs.get("long_name"), n)
        units = _per_band(da.attrs.get("units"), n)
        if not all(names):
            problems.append(f"a band has no description: {names}")
        for name, unit in zip(names, units):
            problem = unit_problem(name, unit) if unit else f"{name}: no unit"
            if problem:
                problems.append(problem)
    return problems


def _per_band(value, n: int) -> list:
    if isinstance(value, (tuple, list)):
        return list(value)
    return [value] * n if n == 1 else [None] * n


# ---------------------------------------------------------------------------------------------
# Fast tests on the synthetic basin
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basin():
    return hh.synthetic_basin(nrow=8, ncol=8, ntime=24, seed=1)


@pytest.fixture(scope="module")
def sim(basin):
    return hh.simulate(basin, "gr4-lr", {"kexc": -0.5}, return_states=True, return_fluxes=True,
                       return_discharge_field=True)


@pytest.mark.parametrize("units,dt,expected", [
    ("mm dt-1", 3600, "mm h-1"), ("mm dt-1", 86400, "mm d-1"), ("mm dt-1", 60, "mm min-1"),
    ("mm dt-1", 900, "mm / (15 min)"), ("mm dt-1", 10800, "mm / (3 h)"), ("dt mm-1", 3600, "h mm-1"),
    ("dt mm-1", 900, "15 min mm-1"), ("mm K-1 dt-1", 86400, "mm K-1 d-1"), ("mm", None, "mm"),
])
def test_step_units_state_the_step_and_parse(units, dt, expected):
    assert step_units(units, dt) == expected
    assert unit_problem(units, expected) is None


@pytest.mark.parametrize("dt,per_hour", [(3600, 1.0), (900, 4.0), (86400, 1 / 24)])
def test_a_rate_per_step_converts_to_the_same_rate(dt, per_hour):
    """1 mm per step is 1, 4 or 1/24 mm per hour: the unit carries the step's length."""
    assert ureg(step_units("mm dt-1", dt)).to("mm/h").magnitude == pytest.approx(per_hour)


def test_every_parameter_unit_parses_at_any_step():
    for dt in (60, 900, 3600, 86400):
        for name, units in PARAMETER_UNITS.items():
            assert unit_problem(name, step_units(units, dt)) is None, (name, units, dt)


def test_kexc_has_one_unit_everywhere(basin, sim):
    expected = step_units(PARAMETER_UNITS["kexc"], basin.attrs["dt"])
    assert expected == "mm h-1"
    assert sim["kexc"].attrs["units"] == expected
    assert to_cf(sim)["kexc"].attrs["units"] == expected


def test_to_cf_adds_the_conventions_and_leaves_its_input(basin):
    before = {n: dict(v.attrs) for n, v in basin.variables.items()}
    cf = to_cf(basin)
    assert {n: dict(v.attrs) for n, v in basin.variables.items()} == before and "time_bounds" not in basin
    assert cf.attrs["Conventions"] == CONVENTIONS
    assert (cf["x"].attrs["axis"], cf["y"].attrs["axis"], cf["time"].attrs["axis"]) == ("X", "Y", "T")
    assert cf["x"].attrs["units"] == cf["gauge_x"].attrs["units"] == "m"  # "CRS units" of the schema, in EPSG:2154
    assert cf["x"].attrs["standard_name"] == "projection_x_coordinate"
    assert cf["qobs"].attrs["standard_name"] == "water_volume_transport_in_river_channel"
    assert cf["prcp"].attrs["standard_name"] == "lwe_thickness_of_precipitation_amount"
    assert cf["prcp"].attrs["cell_methods"] == "time: sum"
    assert cf["time"].attrs["bounds"] == "time_bounds"
    bounds = cf["time_bounds"].values
    np.testing.assert_array_equal(bounds[:, 1], cf["time"].values)
    np.testing.assert_array_equal(bounds[:, 0], cf["time"].values - np.timedelta64(3600, "s"))
    gridded = [n for n, v in cf.data_vars.items() if {"x", "y"} <= set(v.dims)]
    assert gridded and all(cf[n].encoding.get("grid_mapping") == "spatial_ref" for n in gridded)
    assert not [p for n, v in cf.variables.items() if "units" in v.attrs if (p := unit_problem(n, v.attrs["units"]))]
    again = to_cf(cf)  # a Dataset already CF (e.g. read from a file) goes through unchanged
    xr.testing.assert_identical(again, cf)


def test_to_cf_in_a_geographic_crs():
    maps = xr.Dataset({"cp": (("y", "x"), np.ones((2, 3), np.float32), {"units": "mm"})},
                      coords={"y": [45.5, 45.4], "x": [3.0, 3.1, 3.2]})
    cf = to_cf(maps, crs="EPSG:4326")
    assert (cf["x"].attrs["units"], cf["y"].attrs["units"]) == ("degrees_east", "degrees_north")
    assert (cf["x"].attrs["standard_name"], cf["y"].attrs["standard_name"]) == ("longitude", "latitude")
    assert cf.rio.crs.to_epsg() == 4326


@pytest.mark.parametrize("change,match", [
    (lambda ds: ds.assign(prcp=ds["prcp"].assign_attrs(units="mm per step please")), r"variable 'prcp'.*units 'mm per step please'"),
    (lambda ds: ds.assign(cp=(("y", "x"), np.ones((ds.sizes["y"], ds.sizes["x"])), {"units": "mm dt-1"})).drop_attrs(deep=False),
     r"variable 'cp'.*per time step"),
])
def test_to_cf_names_the_variable_it_cannot_describe(basin, change, match):
    with pytest.raises(ValueError, match=match):
        to_cf(change(basin))


def test_to_cf_refuses_a_crs_that_contradicts_the_dataset(basin):
    with pytest.raises(ValueError, match=r"is in EPSG:2154 but crs = EPSG:4326"):
        to_cf(basin, crs="EPSG:4326")
    with pytest.raises(ValueError, match=r"dt = 900 but the Dataset says dt = 3600"):
        to_cf(basin, dt=900)


def test_a_basin_file_is_cf_and_reads_back_the_same(basin, tmp_path):
    path = hh.write_basin(basin, tmp_path / "basin.nc")
    assert nc_problems(path, basin.rio.crs) == []
    back = hh.read_basin(path)
    xr.testing.assert_identical(back, basin.assign_coords(time=basin["time"].astype("datetime64[ns]")))
    # what the pipeline does: a stage reads the basin file, runs, writes the run (and the basin again)
    sim = write_simulation(hh.simulate(back, "gr4-lr", return_states=True), back, tmp_path / "sim.nc")
    assert nc_problems(sim, basin.rio.crs) == []
    assert nc_problems(hh.write_basin(back, tmp_path / "again.nc"), basin.rio.crs) == []


def test_a_simulation_file_holds_the_run(basin, sim, tmp_path):
    path = write_simulation(sim, basin, tmp_path / "sims" / "gr4-lr.nc")
    assert nc_problems(path, basin.rio.crs) == []
    with xr.open_dataset(path, decode_coords="all") as f:
        assert f["q"].dims == ("gauge", "time")
        np.testing.assert_array_equal(f["q"].values, sim["q"].values)
        for name in ("gauge_x", "gauge_y", "area"):
            assert name in f["q"].coords
            np.testing.assert_array_equal(f[name].values, basin[name].values)
        assert f["gauge"].values.tolist() == basin["gauge"].values.tolist()
        assert f["q"].attrs["standard_name"] == "water_volume_transport_in_river_channel"
        assert f["kexc"].attrs["units"] == "mm h-1" and float(np.nanmax(f["kexc"].values)) == -0.5
        assert {"hp", "ht", "hi", "hlr", "discharge", "hp_final", "cp"} <= set(f.data_vars)
        assert not {"pn", "perc", "qt"} & set(f.data_vars)  # the internal fluxes only when asked
        assert f.attrs["structure"] == sim.attrs["structure"] and f.attrs["Conventions"] == CONVENTIONS
    with_fluxes = write_simulation(sim, basin, tmp_path / "sims" / "with_fluxes.nc", fluxes=True)
    with xr.open_dataset(with_fluxes) as f:
        assert {"pn", "perc", "qt"} <= set(f.data_vars) and f["pn"].attrs["cell_methods"] == "time: sum"
        assert f["qt"].attrs["units"] == "m3 s-1"


def test_a_simulation_file_is_never_replaced_without_asking(basin, sim, tmp_path):
    path = write_simulation(sim, basin, tmp_path / "q.nc")
    stamp = path.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match=r"q\.nc already exists; pass overwrite=True"):
        write_simulation(sim, basin, path)
    assert path.stat().st_mtime_ns == stamp
    write_simulation(sim.isel(time=slice(0, 5)), basin, path, overwrite=True)
    with xr.open_dataset(path) as f:
        assert f.sizes["time"] == 5


def test_an_unwritable_path_is_named(basin, sim, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the folder should be\n")
    with pytest.raises(OSError, match=rf"cannot write {blocker / 'sims' / 'q.nc'}"):
        write_simulation(sim, basin, blocker / "sims" / "q.nc")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match=rf"cannot write {locked / 'q.nc'}"):
            write_simulation(sim, basin, locked / "q.nc")


@pytest.mark.parametrize("bad,match", [
    (lambda sim, basin: (sim[["cp"]], basin), r"not a simulation"),
    (lambda sim, basin: (sim, basin.isel(x=slice(1, None))), r"the simulation's x \(\d+ cells\) is not the basin's"),
    (lambda sim, basin: (sim, basin.isel(gauge=[0])), r"gauge\(s\) .* are not in the basin"),
])
def test_a_simulation_that_is_not_of_the_basin_is_refused(basin, sim, tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        write_simulation(*bad(sim, basin), tmp_path / "q.nc")


def test_parameter_maps_as_geotiff_read_back_with_rioxarray(basin, sim, tmp_path):
    names = ["cp", "ct", "kexc", "llr"]
    maps = sim[names].drop_vars("spatial_ref")  # like CalibrationResult.parameter_maps(): no CRS of its own
    path = write_parameter_maps(maps, tmp_path / "gr4" / "parameters.tif", crs=basin.rio.crs, dt=3600)
    assert tif_problems(path, basin.rio.crs) == []
    with rioxarray.open_rasterio(path, masked=True) as tif:
        assert list(tif.attrs["long_name"]) == names
        assert list(tif.attrs["units"]) == ["mm", "mm", "mm h-1", "min"]
        assert tif.rio.crs == basin.rio.crs
        np.testing.assert_allclose(tif["x"].values, basin["x"].values)
        np.testing.assert_allclose(tif["y"].values, basin["y"].values)
        for band, name in enumerate(names):
            np.testing.assert_array_equal(tif.values[band], sim[name].values)  # NaN (nodata) off the basin
    assert np.isnan(sim["cp"].values).any(), "the synthetic basin should have off-basin cells to check nodata"


def test_parameter_maps_as_netcdf(basin, sim, tmp_path):
    path = write_parameter_maps(sim[["cp", "kexc"]], tmp_path / "parameters.nc")
    assert nc_problems(path, basin.rio.crs) == []
    with xr.open_dataset(path, decode_coords="all") as f:
        assert f["kexc"].attrs["units"] == "mm h-1" and f.rio.crs == basin.rio.crs


@pytest.mark.parametrize("call,error,match", [
    (lambda sim, p: write_parameter_maps(sim[["cp", "q"]], p / "m.tif"), ValueError, r"'q' \('gauge', 'time'\) is not"),
    (lambda sim, p: write_parameter_maps(sim[["cp"]], p / "m.png"), ValueError, r"\.nc or \.tif or \.tiff"),
    (lambda sim, p: write_parameter_maps(xr.Dataset({"kexc": sim["kexc"].assign_attrs(units="mm dt-1")}).drop_attrs(deep=False),
                                         p / "m.tif"), ValueError, r"'kexc'.*give the step"),
])
def test_parameter_maps_errors_say_what_to_do(sim, tmp_path, call, error, match):
    with pytest.raises(error, match=match):
        call(sim, tmp_path)


# --- the checkers catch what they are for ------------------------------------------------------


def test_the_checkers_catch_an_unparseable_unit_and_a_wrong_crs(basin, sim, tmp_path):
    good = write_simulation(sim, basin, tmp_path / "good.nc")
    assert nc_problems(good, basin.rio.crs) == []
    bad_unit = tmp_path / "bad_unit.nc"
    with xr.open_dataset(good, decode_coords="all") as f:
        f = f.load()
    f["hp"].attrs["units"] = "CRS units"
    f.to_netcdf(bad_unit)
    assert any("units 'CRS units' do not parse" in p for p in nc_problems(bad_unit, basin.rio.crs))
    f["hp"].attrs["units"] = "1"
    f["kexc"].attrs["units"] = "mm dt-1"  # parses, as mm per decitonne: the checker must still refuse it
    f.to_netcdf(bad_unit)
    assert any("per-step token" in p for p in nc_problems(bad_unit, basin.rio.crs))
    assert any("is not the basin's" in p for p in nc_problems(good, CRS.from_epsg(4326)))
    no_cf = tmp_path / "no_cf.nc"
    f.drop_vars("time_bounds").drop_attrs(deep=False).to_netcdf(no_cf)
    problems = nc_problems(no_cf, basin.rio.crs)
    assert any("Conventions" in p for p in problems) and any("time has no bounds" in p for p in problems)
    tif = write_parameter_maps(sim[["cp"]], tmp_path / "cp.tif")
    assert any("is not the basin's" in p for p in tif_problems(tif, CRS.from_epsg(4326)))
    bad_tif = tmp_path / "bad.tif"
    sim["cp"].rio.write_crs("EPSG:4326").rio.write_nodata(np.nan).assign_attrs(units="mm per step",
                                                                             long_name="cp").rio.to_raster(bad_tif)
    problems = tif_problems(bad_tif, basin.rio.crs)
    assert any("mm per step" in p for p in problems) and any("EPSG:4326" in p for p in problems)


# ---------------------------------------------------------------------------------------------
# Every file of a pipeline run directory (make test-notebooks: the ci run nbval made)
# ---------------------------------------------------------------------------------------------


def _run_dir() -> Path | None:
    value = os.environ.get(RUN_DIR_VARIABLE)
    return Path(value) if value else None


def _run_files() -> list:
    run_dir = _run_dir()
    if run_dir is None:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"{RUN_DIR_VARIABLE} is not set: point it at a pipeline run directory (make test-notebooks "
                   f"does, with build/nbval/ci) to check every file it wrote"))]
    files = sorted(p for p in run_dir.rglob("*") if p.suffix in (".nc", ".tif") and p.is_file())
    return [pytest.param(p, id=str(p.relative_to(run_dir))) for p in files] or [
        pytest.param(None, marks=pytest.mark.skip(reason=f"{run_dir} holds no .nc or .tif file"))]


@pytest.fixture(scope="module")
def run_crs():
    run_dir = _run_dir()
    with xr.open_dataset(run_dir / "basin.nc", decode_coords="all") as basin:
        return basin.rio.crs


@pytest.mark.outputs
@pytest.mark.parametrize("path", _run_files())
def test_every_output_file_reads_in_other_tools(path, run_crs):
    problems = tif_problems(path, run_crs) if path.suffix == ".tif" else nc_problems(path, run_crs)
    assert problems == [], f"{path}:\n  " + "\n  ".join(problems)


@pytest.mark.outputs
@pytest.mark.skipif(_run_dir() is None, reason=f"{RUN_DIR_VARIABLE} is not set")
def test_the_run_wrote_its_simulations_and_maps():
    run_dir = _run_dir()
    sims = {p.stem for p in (run_dir / "simulations").glob("*.nc")}
    models = {p.parent.name for p in (run_dir / "models").glob("*/calibration.json")}
    assert any(s.startswith("forward-") for s in sims), f"no forward run in {run_dir / 'simulations'}: {sorted(sims)}"
    assert models <= sims, f"models without a simulation file: {sorted(models - sims)}"
    missing = sorted(m for m in models if not (run_dir / "models" / m / "parameters.tif").is_file())
    assert not missing, f"models without parameters.tif: {missing}"
