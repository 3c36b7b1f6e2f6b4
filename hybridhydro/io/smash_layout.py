"""Read a dataset in the smash directory layout into a basin Dataset.

Layout (everything but the setup YAML is optional, as the setup's ``read_*`` keys say)::

    <dataset>/
        setup_<name>.yaml         dt (s), start_time, end_time, read_prcp, prcp_directory,
                                  prcp_conversion_factor, read_pet, pet_directory,
                                  pet_conversion_factor, daily_interannual_pet, read_qobs,
                                  qobs_directory, read_descriptor, descriptor_directory,
                                  descriptor_name; optional flwdir, bbox, max_depth, area_error_th
        prcp/**/...<%Y%m%d%H%M>...tif   one raster per step, dated at the END of the step (mm per
                                        step once multiplied by prcp_conversion_factor)
        pet/**/...tif                   idem, or 366 daily interannual rasters <%m%d>...tif
        prcp.nc, pet.nc                 or the whole series as NetCDF (see "NetCDF forcing" below)
        qobs/**/*<code>*.csv            header = date of the first value, one value per line (m3/s)
        descriptor/<name>.tif           one raster per descriptor (raw values)
        gauge_attributes.csv            code,x,y,area (area in km2); absent: bbox mode, no gauge
        flwdir.tif                      D8 flow directions (or the setup's ``flwdir`` key)

Directories in the setup are relative to the dataset directory.

Optional setup keys besides smash's:

* ``flwdir``: the D8 flow-direction GeoTIFF (coding 1=N, 2=NE, ..., 8=NW, clockwise; 0 or
  no data off the network), relative to the dataset directory or absolute. Default:
  ``flwdir.tif`` in the dataset directory (the bundled datasets use hydro-smash's
  ``France_flwdir.tif``). Its CRS and grid are the basin's: every other raster is read onto it.
* ``bbox`` (xmin, xmax, ymin, ymax, CRS units), ``max_depth`` (outlet search half-width,
  cells) and ``area_error_th`` (largest relative error between a gauge's declared area in
  ``gauge_attributes.csv`` and its delineated one; gauges beyond it are dropped with a
  warning): the arguments of :func:`hybridhydro.build_mesh`.
* ``read_descriptor: true`` without ``descriptor_name`` reads every ``<name>.tif`` of the
  descriptor directory (sorted by name); an empty directory is an error.

NetCDF forcing: ``prcp_format: nc`` (or ``pet_format``), or a ``prcp_directory`` that names a
``.nc`` file, or a ``prcp.nc`` file beside the setup when the ``prcp`` directory does not exist,
reads the variable ``prcp`` (or the file's only variable) ``(time, y, x)``, labelled by the end
of each step, in mm per step once multiplied by the conversion factor (``units`` absent or
``mm``). Its CRS (``spatial_ref`` / ``grid_mapping``) must be given; it is compared with the
flow-direction raster's. A raster on the same cells is read as it is; one on other cells or in
another CRS is reprojected onto the flow-direction grid with GDAL's ``average`` resampling
(:mod:`hybridhydro.io.regrid`), unless the setup says ``reproject: false``; then, or when
either CRS is missing, the error names both CRSs. GeoTIFF series are never reprojected (read
as smash reads them; another CRS is an error). The bundled smash datasets
(``"Cance"``, ``"Lez"``, ``"France"``) are found in the installed hydro-smash package without
importing it; their flow directions are smash's ``France_flwdir.tif``.

Values are read as smash 1.3 reads them (float32, same windowing and PET disaggregation), with
``NaN`` where smash writes -99 (missing files, no-data, negative values). One deliberate
difference: smash never uses the last line of a qobs CSV; we do.

The setup is checked as it is read: ``read_*`` and ``daily_interannual_pet`` must be YAML
booleans (``true``/``false``, not the string ``'false'``), ``dt`` and the conversion factors
numbers (a factor must be positive: a negative one would turn every value into missing data),
dates year first (``2014-09-15 00:00``) and without a time zone. The rain and PET read are
checked for physical plausibility (:func:`hybridhydro.basin.check_forcing_values`: a
conversion factor of 100 instead of 0.1 is an error that names it); ``forcing_plausibility=
"warn"`` turns that into a warning and is recorded in the basin's attributes.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..basin import (
    PLAUSIBILITY_ATTR,
    PLAUSIBILITY_MODES,
    annotate,
    check_basin,
    check_forcing_values,
    forcing_limit,
    read_dt,
)
from ..mesh import Mesh
from ._descriptors import check_cover, list_descriptors, read_descriptors
from ..dates import parse_date as read_date
from ._qobs import qobs_from_table, read_qobs
from ._rasters import Grid, gdal_error, warn_geometry
from ._series import (check_coverage, date_format, dated_files, day_of_year_key, expand_daily_interannual,  # noqa: F401  (date_format: for newbasin)
                      interannual_files, pet_day_weights, read_daily_interannual, read_series)
from ..mesh import catchment_means, upstream_masks

#: Datasets shipped in the hydro-smash wheel, and the bbox (xmin, xmax, ymin, ymax) of those without gauges.
BUNDLED = {"cance": "Cance", "lez": "Lez", "france": "France"}
BUNDLED_BBOX = {"France": (100000.0, 1250000.0, 6050000.0, 7125000.0)}

_VARIABLES = ("prcp", "pet", "qobs", "descriptor")


def france_flwdir(asked_for: str | None = None) -> Path:
    """hydro-smash's D8 flow directions of France (Lambert-93, 1 km), which its bundled datasets
    (and the known-answer basin, and stage 00's demo) are cut from; ``asked_for`` as in
    :func:`smash_dataset_root`."""
    return smash_dataset_root(asked_for) / "France_flwdir.tif"


def smash_dataset_root(asked_for: str | None = None) -> Path:
    """``<installed smash package>/factory/dataset`` (found without importing smash).

    ``asked_for`` names what needed it (``"the dataset 'Cance'"``) in the error raised when
    hydro-smash, an optional extra of hybridhydro, is not installed.
    """
    spec = importlib.util.find_spec("smash")
    if spec is None or not spec.submodule_search_locations:
        what = asked_for or "hydro-smash's bundled data (Cance, Lez, France; the known-answer basin is cut from France)"
        raise ModuleNotFoundError(
            f"{what} comes with hydro-smash, an optional extra that is not installed in this Python "
            f"({sys.executable}). Install it with `pip install \"hybridhydro[smash]\"` (in a checkout: `pip install -e "
            "\".[smash]\"`; or hydro-smash alone: `pip install hydro-smash==1.3.0`, wheels for CPython 3.10-3.13 on "
            "x86-64 Linux or Windows), or use a basin that needs no download: `basin.source: synthetic` "
            "in the parameter file (hybridhydro.synthetic_basin), or the path of your own dataset directory in the "
            "smash layout"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "factory" / "dataset"


def resolve_dataset(name_or_path: str | Path) -> tuple[Path, str, bool]:
    """The dataset directory, its name, and whether it is a bundled smash dataset."""
    text = str(name_or_path)
    if isinstance(name_or_path, str) and text.lower() in BUNDLED and not any(s in text for s in "/\\"):
        name = BUNDLED[text.lower()]
        return smash_dataset_root(f"the dataset {name!r}") / name, name, True
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{text!r} is neither a bundled dataset name ({', '.join(BUNDLED.values())}, case-insensitive) nor an "
            "existing dataset directory"
        )
    return path.resolve(), path.resolve().name, False


def load_setup(directory: Path) -> tuple[dict, Path]:
    """The setup dict from the dataset's ``setup_*.yaml``, and that file's path."""
    import yaml

    candidates = sorted(directory.glob("setup_*.yaml")) + sorted(directory.glob("setup_*.yml"))
    if not candidates:
        raise FileNotFoundError(
            f"no setup_*.yaml in {directory}: a smash-layout dataset needs one, with at least dt (s), start_time, "
            "end_time and the read_* keys of the data to read (e.g. read_prcp: true, prcp_directory: prcp)"
        )
    if len(candidates) > 1:
        preferred = [p for p in candidates if p.stem == f"setup_{directory.name}"]
        if not preferred:
            raise ValueError(
                f"several setup files in {directory} ({', '.join(p.name for p in candidates)}); keep one, or name the "
                f"one to use setup_{directory.name}.yaml"
            )
        candidates = preferred
    path = candidates[0]
    with open(path) as f:
        setup = yaml.safe_load(f) or {}
    if not isinstance(setup, dict):
        raise ValueError(f"{path}: the setup YAML must be a mapping of keys (dt: 3600, start_time: ...)")
    return setup, path


def parse_date(value, what: str, where: str) -> pd.Timestamp:
    """A date of the setup (``start_time``, ``end_time``, or the ``start``/``end`` arguments),
    read by :func:`hybridhydro.dates.parse_date` (day-first text, time zones and bare numbers refused)."""
    return read_date(value, f"{what} = {value!r} ({where})")


def setup_bool(setup: dict, key: str, where, default: bool = False) -> bool:
    """A boolean key of the setup: YAML ``true``/``false`` only (the string ``'false'`` is refused)."""
    value = setup.get(key, default)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(
        f"{key} = {value!r} in {where} must be a boolean: write {key}: true or {key}: false (no quotes; a quoted "
        "'false' is a string, which smash and Python read as true)"
    )


def setup_number(setup: dict, key: str, where, default: float) -> float:
    """A number of the setup (int, float, or text that is one), finite; a clear error otherwise."""
    value = setup.get(key, default)
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise ValueError(f"{key} = {value!r} in {where} must be a number, e.g. {key}: {default:g}")
    return number


def conversion_factor(setup: dict, what: str, where) -> float:
    """``<what>_conversion_factor``: a positive number (raster values x factor = mm per step)."""
    key = f"{what}_conversion_factor"
    factor = setup_number(setup, key, where, 1.0)
    if not factor > 0:
        raise ValueError(
            f"{key} = {setup.get(key)!r} in {where} must be a positive number: the raster values are multiplied by "
            f"it to give mm per step (0.1 for rasters in tenths of mm, 1 for mm); a negative or zero factor would turn "
            f"every {what} value into missing data or zero"
        )
    return factor


def model_times(setup: dict, setup_path: Path, start, end) -> tuple[pd.DatetimeIndex, float]:
    """Step-end times ``start + dt ... end`` and ``dt`` (s), ``start``/``end`` overriding the setup."""
    dt = read_dt(setup.get("dt", 3600), f"{setup_path}: key 'dt'")
    for key, given in (("start_time", start), ("end_time", end)):
        if given is None and key not in setup:
            raise ValueError(f"no {key} in {setup_path}; add it, or pass {key.split('_')[0]}= to read_smash_dataset")
    t0 = parse_date(start if start is not None else setup["start_time"], "start",
                    "start=" if start is not None else str(setup_path))
    t1 = parse_date(end if end is not None else setup["end_time"], "end", "end=" if end is not None else str(setup_path))
    if t1 <= t0:
        raise ValueError(f"the period must end after it starts, got start {t0} and end {t1}")
    nstep = (t1 - t0).total_seconds() / dt
    if nstep != int(nstep):
        raise ValueError(f"the period {t0} to {t1} is not a whole number of steps of dt = {dt:g} s")
    times = pd.DatetimeIndex(t0 + pd.to_timedelta(np.arange(1, int(nstep) + 1) * dt, unit="s"))
    return times, dt


def _directory(base: Path, setup: dict, what: str) -> Path:
    value = setup.get(f"{what}_directory") or what
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


data_directory = _directory  # public name: the early checks (hybridhydro.pipeline.checks) find the same folders


def _check_format(setup: dict, what: str, setup_path: Path) -> None:
    fmt = str(setup.get(f"{what}_format", "tif")).lower()
    if fmt != "tif":
        raise ValueError(f"{what}_format = {fmt!r} in {setup_path}: only 'tif' (GeoTIFF) series can be read")


def read_gauge_attributes(path: Path) -> pd.DataFrame:
    """``code, x, y, area`` of each gauge from ``gauge_attributes.csv`` (area converted from km2 to m2)."""
    return gauge_table(pd.read_csv(path, dtype={"code": str}), str(path))


def gauge_table(table: pd.DataFrame, where: str) -> pd.DataFrame:
    """``code, x, y, area`` of each gauge from a table with the columns of ``gauge_attributes.csv``
    (area in km2, converted to m2); ``where`` names the table in the errors."""
    missing = [c for c in ("code", "x", "y", "area") if c not in table.columns]
    if missing:
        raise ValueError(
            f"{where} lacks column(s) {', '.join(missing)}; it needs a header code,x,y,area (x, y in CRS units, area "
            f"in km2, e.g. from hybridhydro.find_outlets) and has {', '.join(map(str, table.columns))}"
        )
    out = pd.DataFrame({"code": table["code"].astype(str).str.strip().to_numpy(dtype=str)})
    for col in ("x", "y", "area"):
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(values).any():
            row = int(np.flatnonzero(np.isnan(values))[0])
            raise ValueError(f"{where}: column {col!r} of gauge {out['code'][row]!r} is not a number")
        out[col] = values * (1e6 if col == "area" else 1.0)
    return out


def flwdir_path(directory: Path, setup: dict, setup_path: Path, bundled: bool) -> Path:
    """The D8 flow-direction raster of the dataset."""
    if bundled:
        return france_flwdir()
    if setup.get("flwdir"):
        path = Path(str(setup["flwdir"])).expanduser()
        path = path if path.is_absolute() else directory / path
        if not path.is_file():
            raise FileNotFoundError(f"flwdir = {setup['flwdir']!r} in {setup_path}: no file {path}")
        return path
    path = directory / "flwdir.tif"
    if not path.is_file():
        raise FileNotFoundError(
            f"no flow-direction raster for {directory}: looked for {path} and for a 'flwdir' key in {setup_path}; "
            "add a D8 GeoTIFF (1=N, 2=NE, ..., 8=NW) there, or point the setup's flwdir key at one (flwdir: "
            "path/to/flwdir.tif, relative to the dataset directory); hybridhydro.d8_from_dem makes one from a DEM"
        )
    return path


def check_bbox(value, where: str) -> tuple[float, float, float, float]:
    """``(xmin, xmax, ymin, ymax)`` as floats (CRS units); an error naming ``where`` when it is not
    four numbers with xmin < xmax and ymin < ymax."""
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        box = ()
    if len(box) != 4 or not (box[0] < box[1] and box[2] < box[3]):
        raise ValueError(f"bbox = {value!r} ({where}) must be (xmin, xmax, ymin, ymax) in CRS units, with xmin < xmax "
                         "and ymin < ymax")
    return box


def _read_flwdir(read_flwdir, path: Path):
    """``read_flwdir(path)``, a file GDAL cannot read named in the error."""
    try:
        return read_flwdir(path)
    except Exception as err:
        if not gdal_error(err):
            raise
        raise ValueError(
            f"flow directions: {path} cannot be read as a GeoTIFF ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:200]}): the file is truncated, empty or damaged; replace it"
        ) from None


def build_dataset_mesh(directory: Path, name: str, setup: dict, setup_path: Path, bundled: bool, bbox) -> tuple[Mesh, dict]:
    """Build the :class:`Mesh` from the flow directions and the gauges (or the bbox)."""
    from ..mesh import build_mesh, read_flwdir

    if bbox is not None:
        bbox = check_bbox(bbox, "bbox=")
    elif setup.get("bbox") is not None:
        bbox = check_bbox(setup["bbox"], str(setup_path))
    elif bundled and name in BUNDLED_BBOX:
        bbox = BUNDLED_BBOX[name]
    gauges_path = directory / "gauge_attributes.csv"
    gauges = read_gauge_attributes(gauges_path) if gauges_path.is_file() else None
    if gauges is None and bbox is None:
        raise FileNotFoundError(
            f"no gauge_attributes.csv in {directory} and no bbox: give the gauges (a CSV code,x,y,area with area in "
            "km2) or the domain (bbox=(xmin, xmax, ymin, ymax), or a bbox key in the setup YAML)"
        )
    path = flwdir_path(directory, setup, setup_path, bundled)
    codes, georef = _read_flwdir(read_flwdir, path)
    kwargs = dict(georef)
    if gauges is not None:
        kwargs.update(x=gauges["x"].to_numpy(), y=gauges["y"].to_numpy(), area=gauges["area"].to_numpy(),
                      code=gauges["code"].to_numpy(dtype=str))
    if bbox is not None:
        kwargs["bbox"] = bbox
    if "max_depth" in setup:
        depth = setup_number(setup, "max_depth", setup_path, 1)
        if depth != int(depth) or depth < 1:
            raise ValueError(f"max_depth = {setup['max_depth']!r} in {setup_path} must be a whole number >= 1")
        kwargs["max_depth"] = int(depth)
    if setup.get("area_error_th") is not None:
        kwargs["area_error_th"] = setup_number(setup, "area_error_th", setup_path, 0.2)
    mesh = build_mesh(codes, **kwargs)
    provenance = {"flwdir_file": str(path)}
    if gauges is not None:
        provenance["gauge_attributes_file"] = str(gauges_path)
    return mesh, provenance


def netcdf_forcing_file(directory: Path, setup: dict, setup_path: Path, what: str) -> Path | None:
    """The NetCDF file holding ``what`` (``prcp``/``pet``) in the layout, or None for a GeoTIFF series."""
    fmt = str(setup.get(f"{what}_format", "")).lower()
    if fmt not in ("", "tif", "nc", "netcdf"):
        raise ValueError(f"{what}_format = {fmt!r} in {setup_path}: 'tif' (a GeoTIFF series) or 'nc' (a NetCDF file)")
    path = _directory(directory, setup, what)
    if fmt in ("nc", "netcdf") or path.suffix.lower() == ".nc":
        if path.suffix.lower() != ".nc":
            path = path.with_suffix(".nc") if not path.is_dir() else path / f"{what}.nc"
        if not path.is_file():
            raise FileNotFoundError(f"{what}: {setup_path} asks for NetCDF forcing but there is no file {path}; set "
                                    f"{what}_directory: <file>.nc")
        return path
    if not path.exists() and (directory / f"{what}.nc").is_file():
        return directory / f"{what}.nc"
    return None


def read_netcdf_forcing(path, what: str, times, template: xr.DataArray, factor: float, *, reproject: bool,
                        where: str) -> np.ndarray:
    """A NetCDF or xarray forcing ``(time, y, x)`` onto the flow-direction grid, mm per step, float32.

    The steps ``times`` (step ends) are selected, the values multiplied by ``factor``, matched
    onto ``template`` (:func:`hybridhydro.io.regrid.onto_grid`: as it is, or reprojected with
    ``average`` resampling); negative values become ``NaN`` (missing, as in smash).
    """
    from .regrid import forcing_depth, onto_grid, open_raster, select_steps

    da = open_raster(path, what)
    forcing_depth(da, what, where)
    da = select_steps(da, times, where)
    values = onto_grid(da, template, where=where, reproject=reproject).transpose("time", "y", "x").values
    out = values.astype(np.float32) * np.float32(factor)
    out[out < 0] = np.nan
    return out


def read_forcing_source(source, what: str, times, dt: float, mesh: Mesh, template: xr.DataArray, *,
                        reproject: bool = True, progress: bool = False) -> tuple[np.ndarray, str]:
    """A forcing ``(time, y, x)`` float32 in mm per step on the mesh's grid, and where it came from.

    ``source``: a directory of GeoTIFFs dated by step end (read as smash reads them when they are
    in the mesh's CRS, else stacked and reprojected), a NetCDF file, or a DataArray / Dataset
    (:func:`read_netcdf_forcing`: matched or reprojected by :func:`hybridhydro.io.regrid.onto_grid`).
    """
    from .regrid import crs_name, open_raster

    if isinstance(source, (str, os.PathLike)) and Path(source).expanduser().is_dir():
        folder = Path(source).expanduser()
        files = dated_files(folder, dt, what)
        check_coverage(files, times, folder, what)
        first = open_raster(files[min(files)], what)
        src, dst = first.rio.crs, template.rio.crs
        if src is not None and dst is not None and src != dst:
            if not reproject:
                raise ValueError(f"{what} ({folder}): the rasters are in {crs_name(src)}, the flow directions in "
                                 f"{crs_name(dst)}, and reprojection is turned off; warp them first, or pass "
                                 "reproject=True")
            present = [t for t in times if t in files]
            series = xr.concat([open_raster(files[t], what) for t in present], dim="time").assign_coords(time=present)
            data = read_netcdf_forcing(series, what, times, template, 1.0, reproject=True, where=f"{what} ({folder})")
        else:
            data, _ = read_series(files, times, Grid.of(mesh), 1.0, what=what, directory=folder, progress=progress)
        return data, str(folder)
    named = isinstance(source, (str, os.PathLike))
    where = f"{what} ({source})" if named else f"forcing[{what!r}]"
    data = read_netcdf_forcing(source, what, times, template, 1.0, reproject=reproject, where=where)
    return data, str(source) if named else type(source).__name__


def read_interannual_pet_source(source, times, dt: float, template: xr.DataArray, *, reproject: bool,
                                progress: bool = False) -> tuple[np.ndarray, str]:
    """PET per step ``(time, y, x)`` float32 (mm) from a daily interannual climatology, onto the grid.

    ``source``: a directory of ``%m%d`` GeoTIFFs (smash's layout, e.g. ``0114_ETPJIA.tif``), or a
    DataArray, Dataset or NetCDF file with a ``dayofyear`` dimension (1-366, a leap-year
    calendar: 60 is 29 February), mm per day. Only the days ``times`` need are read; each is put
    on the grid as a forcing raster is (:func:`hybridhydro.io.regrid.onto_grid`), then spread over
    the steps by :func:`expand_daily_interannual` (the smash layout's operator).
    """
    from ..progress import bar
    from .regrid import onto_grid, open_raster

    needed = list(dict.fromkeys(pet_day_weights(times, dt)[0]))
    shape = (template.sizes["y"], template.sizes["x"])
    daily: dict[str, np.ndarray] = {}
    if isinstance(source, (str, os.PathLike)) and Path(source).expanduser().is_dir():
        folder = Path(source).expanduser()
        found = interannual_files(folder)
        for day in bar(needed, progress=progress, total=len(needed), desc="pet (daily interannual)", unit="day", leave=False):
            if day in found:
                da = open_raster(found[day], "pet")
                daily[day] = onto_grid(da, template, where=f"pet ({found[day]})", reproject=reproject).values
        return expand_daily_interannual(daily, times, dt, shape, f"under {folder}"), str(folder)
    named = isinstance(source, (str, os.PathLike))
    where = f"pet ({source})" if named else "forcing['pet']"
    da = open_raster(source, "pet")
    if "dayofyear" not in da.dims:
        raise ValueError(f"{where}: a daily interannual PET needs a 'dayofyear' dimension (1-366, mm per day), got "
                         f"dimensions {da.dims}; or give a directory of %m%d GeoTIFFs (e.g. 0114_ETPJIA.tif)")
    days = np.asarray(da["dayofyear"].values) if "dayofyear" in da.coords else np.arange(1, da.sizes["dayofyear"] + 1)
    if days.size == 0:
        raise ValueError(f"{where}: its 'dayofyear' dimension is empty; give the days 1-366 (mm per day)")
    if days.dtype.kind not in "iu" or days.min() < 1 or days.max() > 366 or len(set(days.tolist())) != len(days):
        raise ValueError(f"{where}: dayofyear must be distinct whole days 1-366 (a leap-year calendar), got "
                         f"{days.min()}..{days.max()} ({len(days)} values)")
    keys = [day_of_year_key(d) for d in days]
    wanted = [i for i, k in enumerate(keys) if k in needed]
    on_grid = onto_grid(da.isel(dayofyear=wanted), template, where=where, reproject=reproject).values
    daily = {keys[i]: on_grid[j] for j, i in enumerate(wanted)}
    return expand_daily_interannual(daily, times, dt, shape, f"in {where}"), str(source) if named else type(source).__name__


def read_qobs_source(source, codes, times, dt: float) -> np.ndarray:
    """Observed discharge ``(gauge, time)`` float32 m3 s-1: from a directory of smash qobs CSVs, or a
    DataFrame (one column per gauge code, indexed by step ends); None: NaN everywhere."""
    if source is None:
        return np.full((len(codes), len(times)), np.nan, dtype=np.float32)
    if isinstance(source, (str, os.PathLike)):
        return read_qobs(Path(source).expanduser(), codes, times, dt)
    return qobs_from_table(source, codes, times, "qobs")


def read_descriptor_maps(sources, template: xr.DataArray, mesh: Mesh, *, reproject: bool = True) -> np.ndarray:
    """Descriptors ``(descriptor, y, x)`` float32 from ``{name: DataArray or GeoTIFF / NetCDF path}``, matched or
    reprojected onto the grid (``average``); a value missing on an active cell is an error naming it."""
    from .regrid import onto_grid, open_raster

    x = template["x"].values
    y = template["y"].values
    maps = []
    for key, src in sources.items():
        label = src if isinstance(src, (str, os.PathLike)) else "DataArray"
        da = open_raster(src, str(key))
        extra = [d for d in da.dims if d not in ("y", "x")]
        if extra:
            raise ValueError(f"descriptor {key!r} ({label}): expected one (y, x) raster, got dimensions {da.dims}")
        values = onto_grid(da, template, where=f"descriptor {key!r} ({label})", reproject=reproject).values
        check_cover(values, str(key), label, mesh.active_cell, x, y)
        maps.append(values.astype(np.float32))
    return np.stack(maps)


def _forcing(directory: Path, setup: dict, setup_path: Path, what: str, times, dt, grid, progress, template=None):
    """One forcing variable ``(time, y, x)`` float32, its attrs, samplers and folder (NaN everywhere if not read)."""
    attrs = {"units": "mm"}
    if not setup_bool(setup, f"read_{what}", setup_path):
        warnings.warn(f"{setup_path} has read_{what}: false; {what} is NaN everywhere", stacklevel=3)
        return np.full((len(times), grid.nrow, grid.ncol), np.nan, dtype=np.float32), attrs, [], None
    factor = conversion_factor(setup, what, setup_path)
    nc = netcdf_forcing_file(directory, setup, setup_path, what)
    if nc is not None:
        reproject = setup_bool(setup, "reproject", setup_path, default=True)
        data = read_netcdf_forcing(nc, what, times, template, factor, reproject=reproject,
                                   where=f"{what} ({nc}, {setup_path})")
        attrs.update(conversion_factor=factor, source_file=str(nc))
        return data, attrs, [], nc
    _check_format(setup, what, setup_path)
    folder = _directory(directory, setup, what)
    attrs.update(conversion_factor=factor, source_directory=str(folder))
    if what == "pet" and setup_bool(setup, "daily_interannual_pet", setup_path):
        data, reader = read_daily_interannual(folder, times, dt, grid, factor, progress=progress)
        attrs["daily_interannual"] = 1
    else:
        files = dated_files(folder, dt, what)
        check_coverage(files, times, folder, what)
        data, reader = read_series(files, times, grid, factor, what=what, directory=folder, progress=progress)
    return data, attrs, reader.samplers, folder




def _suspicious(data: np.ndarray, limit: float) -> bool:
    """Whether the rasters read hold an infinite value or one above ``limit`` anywhere (two
    passes over the whole grid; only then are the active cells gathered and checked)."""
    flat = data.reshape(data.shape[0], -1)
    hi, lo = np.fmax.reduce(flat, axis=1), np.fmin.reduce(flat, axis=1)
    return bool(np.isinf(lo).any() or (hi > limit).any())


def read_smash_dataset(
    name_or_path: str | Path,
    start=None,
    end=None,
    *,
    progress: bool = True,
    bbox=None,
    mesh: Mesh | None = None,
    forcing_plausibility: str = "error",
) -> xr.Dataset:
    """Read a dataset in the smash layout into a basin Dataset (see :mod:`hybridhydro.basin`).

    Parameters
    ----------
    name_or_path
        ``"Cance"``, ``"Lez"`` or ``"France"`` (case-insensitive) for a dataset bundled with
        hydro-smash, or the path of a directory in the same layout (see the module docstring).
    start, end
        Simulation window ``(start, end]`` (str or datetime); default: the setup's
        ``start_time``/``end_time``. Steps end at ``start + dt, ..., end``.
    progress
        Show a progress bar while reading the rasters.
    bbox
        ``(xmin, xmax, ymin, ymax)`` in CRS units: the domain, for datasets without gauges (or
        to clip gauged ones). Default: the setup's ``bbox`` key; for the bundled France,
        ``(100000, 1250000, 6050000, 7125000)``.
    mesh
        A prebuilt :class:`~hybridhydro.mesh.Mesh` to read the data onto; skips reading flow
        directions and gauge attributes.
    forcing_plausibility
        ``"error"`` (default): rain or PET beyond the physical limits of
        :func:`hybridhydro.basin.check_forcing_values` on many cells is an error (a wrong
        conversion factor); ``"warn"``: a warning, and the basin keeps that choice in its
        attribute ``forcing_plausibility`` (runs on it then warn too); ``"off"``: no check.

    Returns
    -------
    xarray.Dataset
        The basin: ``prcp``, ``pet`` (time, y, x) in mm per step; ``qobs`` (gauge, time) in
        m3 s-1; ``descriptors`` (descriptor, y, x) raw values (when the setup reads them);
        ``mean_prcp``, ``mean_pet`` (gauge, time) in mm, the NaN-aware means over each gauge's
        upstream cells; the mesh fields; attrs ``dt`` (s), ``name``, ``start_time``,
        ``end_time``, ``source`` and the CRS (``spatial_ref``). Missing values are ``NaN``.

    Raises
    ------
    FileNotFoundError
        Unknown dataset, missing setup YAML, data directory, descriptor raster, flow directions.
    ValueError
        A period outside the data or ending before it starts, undated file names, a qobs header
        that is not a date, descriptors with missing values on active cells, a setup key of the
        wrong type, a non-positive conversion factor, a damaged GeoTIFF or one in another CRS,
        implausible rain or PET, infinite or impossible discharges, ... (each names the file
        or key and says what to do).
    """
    if forcing_plausibility not in PLAUSIBILITY_MODES:
        raise ValueError(f"forcing_plausibility = {forcing_plausibility!r}; choose one of "
                         f"{', '.join(map(repr, PLAUSIBILITY_MODES))}")
    directory, name, bundled = resolve_dataset(name_or_path)
    setup, setup_path = load_setup(directory)
    times, dt = model_times(setup, setup_path, start, end)
    provenance = {}
    if mesh is None:
        mesh, provenance = build_dataset_mesh(directory, name, setup, setup_path, bundled, bbox)
    grid = Grid.of(mesh)
    ds = mesh.to_dataset()
    coords = {"time": ("time", times.values.astype("datetime64[ns]"), {"long_name": "end of the time step"})}
    variables = {}

    # the small inputs first, so that their errors come before the long raster series
    if setup_bool(setup, "read_descriptor", setup_path):
        names = setup.get("descriptor_name") or []
        names = [names] if isinstance(names, str) else [str(n) for n in names]
        folder = _directory(directory, setup, "descriptor")
        if not names:
            names = list_descriptors(folder, str(setup_path))
        desc, _ = read_descriptors(folder, names, grid, mesh.active_cell, ds["x"].values, ds["y"].values)
        variables["descriptors"] = (("descriptor", "y", "x"), desc, {"units": "1", "source_directory": str(folder)})
        coords["descriptor"] = ("descriptor", np.asarray(names, dtype=str))
    qobs, qattrs = np.full((mesh.ng, len(times)), np.nan, dtype=np.float32), {"units": "m3 s-1"}
    if setup_bool(setup, "read_qobs", setup_path) and mesh.ng:
        folder = _directory(directory, setup, "qobs")
        qobs = read_qobs(folder, mesh.code, times, dt)
        qattrs["source_directory"] = str(folder)
    variables["qobs"] = (("gauge", "time"), qobs, qattrs)
    for key in ("read_snow", "read_temp", "read_imperviousness"):
        if setup_bool(setup, key, setup_path):
            warnings.warn(f"{setup_path} sets {key}: true; hybridhydro does not read that input yet", stacklevel=2)

    template = None
    if any(netcdf_forcing_file(directory, setup, setup_path, w) is not None
           for w in ("prcp", "pet") if setup_bool(setup, f"read_{w}", setup_path)):
        from .regrid import grid_template

        template = grid_template(ds)
    forcing, checks = {}, {}
    for what in ("prcp", "pet"):
        data, attrs, samplers, folder = _forcing(directory, setup, setup_path, what, times, dt, grid, progress, template)
        if samplers:
            warn_geometry(samplers, what, folder)
        forcing[what] = (data, attrs)
        if folder is not None:
            checks[what] = f"{what} read from {folder} ({what}_conversion_factor = {attrs['conversion_factor']:g}, {setup_path})"
    variables["prcp"], variables["pet"] = forcing["prcp"], forcing["pet"]
    attrs = dict(name=name, source=str(directory), setup_file=str(setup_path), **provenance)
    return assemble_basin(
        mesh, ds, times, dt, variables, coords, attrs=attrs, checks=checks, forcing_plausibility=forcing_plausibility,
        override="read_smash_dataset(..., forcing_plausibility='warn') (or 'off')", where=str(directory),
    )


def assemble_basin(
    mesh: Mesh,
    mesh_ds: xr.Dataset,
    times: pd.DatetimeIndex,
    dt: float,
    variables: dict,
    coords: dict | None = None,
    *,
    attrs: dict,
    checks: dict[str, str],
    forcing_plausibility: str = "error",
    override: str,
    where: str,
) -> xr.Dataset:
    """The basin Dataset from the mesh's fields and the data read onto its grid (every reader's last step).

    Parameters
    ----------
    mesh, mesh_ds
        The mesh and ``mesh.to_dataset()`` (flow directions, mesh fields, gauges, CRS).
    times, dt
        Step ends and the step (s).
    variables
        ``prcp``, ``pet`` (``(time, y, x)`` float32 mm per step), optional ``qobs``
        (``(gauge, time)`` m3 s-1) and ``descriptors`` (``(descriptor, y, x)``): each a tuple
        ``(data, attrs)`` or ``(dims, data, attrs)``.
    coords
        Extra coordinates (``descriptor`` names); ``time`` is added from ``times``.
    attrs
        Dataset attributes (``name``, ``source``, provenance); ``dt``, ``start_time`` and
        ``end_time`` are set here.
    checks
        Forcing variables to check for physical plausibility, each with the text that says where
        it came from (:func:`hybridhydro.basin.check_forcing_values`).
    forcing_plausibility, override
        ``"error"``, ``"warn"`` or ``"off"``, and the call that relaxes it (for the message).
    where
        The source, named by :func:`hybridhydro.basin.check_basin`'s errors.

    The gauges' catchment means ``mean_prcp`` and ``mean_pet`` (gauge, time) in mm are computed
    here (NaN-aware over each gauge's upstream active cells, as smash).
    """
    dims = {"prcp": ("time", "y", "x"), "pet": ("time", "y", "x"), "qobs": ("gauge", "time"),
            "descriptors": ("descriptor", "y", "x")}
    variables = {k: (v if len(v) == 3 else (dims[k], *v)) for k, v in variables.items()}
    masks = upstream_masks(mesh.flwdir, mesh.gauge_row, mesh.gauge_col) & mesh.active_cell[None]
    cells = np.nonzero(mesh.active_cell)
    for what, long_name in (("prcp", "precipitation"), ("pet", "potential evapotranspiration")):
        data = variables[what][1]
        if what in checks and _suspicious(data, forcing_limit(what, dt)):
            check_forcing_values(
                {what: data[:, cells[0], cells[1]]}, times.values, dt, cells[0], cells[1], mode=forcing_plausibility,
                where=checks[what], missing=False, override=override,
            )
        mean_attrs = {"units": "mm", "long_name": f"basin-mean {long_name} depth over the gauge's upstream active cells"}
        variables[f"mean_{what}"] = (("gauge", "time"), catchment_means(data, masks), mean_attrs)
    if "qobs" not in variables:
        variables["qobs"] = (("gauge", "time"), np.full((mesh.ng, len(times)), np.nan, dtype=np.float32),
                             {"units": "m3 s-1"})
    coords = dict(coords or {})
    coords["time"] = ("time", times.values.astype("datetime64[ns]"), {"long_name": "end of the time step"})
    ds = mesh_ds.assign_coords(coords)
    for var in ("prcp", "pet", "qobs", "mean_prcp", "mean_pet", "descriptors"):
        if var in variables:
            ds[var] = xr.Variable(*variables[var])
    ds.attrs.update(
        dt=float(dt),
        start_time=(times[0] - pd.Timedelta(seconds=dt)).isoformat(),
        end_time=times[-1].isoformat(),
        **attrs,
    )
    if forcing_plausibility != "error":
        ds.attrs[PLAUSIBILITY_ATTR] = forcing_plausibility
    if "spatial_ref" in ds.coords:
        ds = ds.rio.write_crs(ds.rio.crs)  # grid_mapping on the variables added above
    annotate(ds)
    check_basin(ds, where=where)
    return ds
