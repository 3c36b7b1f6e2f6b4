"""Read a dataset in the smash directory layout into a basin Dataset.

Layout (everything but the setup YAML is optional, as the setup's ``read_*`` keys say)::

    <dataset>/
        setup_<name>.yaml         dt (s), start_time, end_time, read_prcp, prcp_directory,
                                  prcp_conversion_factor, read_pet, pet_directory,
                                  pet_conversion_factor, daily_interannual_pet, read_qobs,
                                  qobs_directory, read_descriptor, descriptor_directory,
                                  descriptor_name; optional flwdir, bbox, max_depth, area_error_th
        prcp/**/...<%Y%m%d%H%M>...tif   one raster per step, dated at the END of the step
        pet/**/...tif                   idem, or 366 daily interannual rasters <%m%d>...tif
        qobs/**/*<code>*.csv            header = date of the first value, one value per line (m3/s)
        descriptor/<name>.tif
        gauge_attributes.csv            code,x,y,area (area in km2); absent: bbox mode, no gauge
        flwdir.tif                      D8 flow directions (or the setup's ``flwdir`` key)

Directories in the setup are relative to the dataset directory. The bundled smash datasets
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
import warnings
from datetime import date, datetime
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
from ._descriptors import read_descriptors
from ._qobs import DAY_OR_MONTH_FIRST, read_qobs
from ._rasters import Grid, gdal_error, warn_geometry
from ._series import check_coverage, dated_files, read_daily_interannual, read_series
from ..mesh import catchment_means, upstream_masks

#: Datasets shipped in the hydro-smash wheel, and the bbox (xmin, xmax, ymin, ymax) of those without gauges.
BUNDLED = {"cance": "Cance", "lez": "Lez", "france": "France"}
BUNDLED_BBOX = {"France": (100000.0, 1250000.0, 6050000.0, 7125000.0)}

_VARIABLES = ("prcp", "pet", "qobs", "descriptor")


def smash_dataset_root() -> Path:
    """``<installed smash package>/factory/dataset`` (found without importing smash)."""
    spec = importlib.util.find_spec("smash")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the bundled datasets (Cance, Lez, France) come with hydro-smash; install it with "
            "`pip install hydro-smash==1.3.0`, or pass the path of a dataset directory instead"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "factory" / "dataset"


def resolve_dataset(name_or_path: str | Path) -> tuple[Path, str, bool]:
    """The dataset directory, its name, and whether it is a bundled smash dataset."""
    text = str(name_or_path)
    if isinstance(name_or_path, str) and text.lower() in BUNDLED and not any(s in text for s in "/\\"):
        name = BUNDLED[text.lower()]
        return smash_dataset_root() / name, name, True
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
    """A date from the setup or a file header: a datetime, or text written year first.

    Text with the day or month first (``01/10/2014``) is refused (it reads either way), and
    so is a time zone (file names and the setup carry none: the data would be shifted).
    """
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    example = "write it year first, e.g. 2014-09-15 00:00 (ISO 8601) or 201409150000"
    if isinstance(value, str) and DAY_OR_MONTH_FIRST.match(value):
        raise ValueError(
            f"{what} = {value!r} ({where}) puts the day or the month first, which reads both ways (01/10 is 1 October "
            f"or 10 January); {example}"
        )
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        ts = pd.NaT
    if ts is pd.NaT:
        raise ValueError(f"{what} = {value!r} ({where}) is not a date; {example}")
    if ts.tzinfo is not None:
        raise ValueError(
            f"{what} = {value!r} ({where}) carries a time zone ({ts.tzinfo}); hybridhydro's times carry none (the "
            "forcing's file names have none): write the date without it, in the time of the forcing files"
        )
    return ts


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


def _check_format(setup: dict, what: str, setup_path: Path) -> None:
    fmt = str(setup.get(f"{what}_format", "tif")).lower()
    if fmt != "tif":
        raise ValueError(f"{what}_format = {fmt!r} in {setup_path}: only 'tif' (GeoTIFF) series can be read")


def read_gauge_attributes(path: Path) -> pd.DataFrame:
    """``code, x, y, area`` of each gauge from ``gauge_attributes.csv`` (area converted from km2 to m2)."""
    table = pd.read_csv(path, dtype={"code": str})
    missing = [c for c in ("code", "x", "y", "area") if c not in table.columns]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {', '.join(missing)}; it needs a header code,x,y,area (area in km2) "
            f"and has {', '.join(map(str, table.columns))}"
        )
    out = pd.DataFrame({"code": table["code"].astype(str).str.strip().to_numpy(dtype=str)})
    for col in ("x", "y", "area"):
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(values).any():
            row = int(np.flatnonzero(np.isnan(values))[0])
            raise ValueError(f"{path}: column {col!r} of gauge {out['code'][row]!r} is not a number")
        out[col] = values * (1e6 if col == "area" else 1.0)
    return out


def flwdir_path(directory: Path, setup: dict, setup_path: Path, bundled: bool) -> Path:
    """The D8 flow-direction raster of the dataset."""
    if bundled:
        return smash_dataset_root() / "France_flwdir.tif"
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
            "add a D8 GeoTIFF (1=N, 2=NE, ..., 8=NW) there, or point the setup's flwdir key at one"
        )
    return path


def _bbox(value, where: str) -> tuple[float, float, float, float]:
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        box = ()
    if len(box) != 4 or not (box[0] < box[1] and box[2] < box[3]):
        raise ValueError(f"bbox = {value!r} ({where}) must be (xmin, xmax, ymin, ymax) with xmin < xmax and ymin < ymax")
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
        bbox = _bbox(bbox, "bbox=")
    elif setup.get("bbox") is not None:
        bbox = _bbox(setup["bbox"], str(setup_path))
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


def _forcing(directory: Path, setup: dict, setup_path: Path, what: str, times, dt, grid, progress):
    """One forcing variable ``(time, y, x)`` float32, its attrs, samplers and folder (NaN everywhere if not read)."""
    attrs = {"units": "mm"}
    if not setup_bool(setup, f"read_{what}", setup_path):
        warnings.warn(f"{setup_path} has read_{what}: false; {what} is NaN everywhere", stacklevel=3)
        return np.full((len(times), grid.nrow, grid.ncol), np.nan, dtype=np.float32), attrs, [], None
    _check_format(setup, what, setup_path)
    folder = _directory(directory, setup, what)
    factor = conversion_factor(setup, what, setup_path)
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

    masks = upstream_masks(mesh.flwdir, mesh.gauge_row, mesh.gauge_col) & mesh.active_cell[None]
    cells = np.nonzero(mesh.active_cell)
    for what, long_name in (("prcp", "precipitation"), ("pet", "potential evapotranspiration")):
        data, attrs, samplers, folder = _forcing(directory, setup, setup_path, what, times, dt, grid, progress)
        warn_geometry(samplers, what, folder)
        if folder is not None and _suspicious(data, forcing_limit(what, dt)):
            factor = f"{what}_conversion_factor = {attrs['conversion_factor']:g}"
            check_forcing_values(
                {what: data[:, cells[0], cells[1]]}, times.values, dt, cells[0], cells[1], mode=forcing_plausibility,
                where=f"{what} read from {folder} ({factor}, {setup_path})", missing=False,
                override="read_smash_dataset(..., forcing_plausibility='warn') (or 'off')",
            )
        variables[what] = (("time", "y", "x"), data, attrs)
        mean_attrs = {"units": "mm", "long_name": f"basin-mean {long_name} depth over the gauge's upstream active cells"}
        variables[f"mean_{what}"] = (("gauge", "time"), catchment_means(data, masks), mean_attrs)

    ds = ds.assign_coords(coords)
    for var in ("prcp", "pet", "qobs", "mean_prcp", "mean_pet", "descriptors"):
        if var in variables:
            ds[var] = xr.Variable(*variables[var])
    ds.attrs.update(
        name=name,
        dt=float(dt),
        start_time=(times[0] - pd.Timedelta(seconds=dt)).isoformat(),
        end_time=times[-1].isoformat(),
        source=str(directory),
        setup_file=str(setup_path),
        **provenance,
    )
    if forcing_plausibility != "error":
        ds.attrs[PLAUSIBILITY_ATTR] = forcing_plausibility
    if "spatial_ref" in ds.coords:
        ds = ds.rio.write_crs(ds.rio.crs)  # grid_mapping on the variables added above
    annotate(ds)
    check_basin(ds, where=str(directory))
    return ds
