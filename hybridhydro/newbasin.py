"""Your own basin: from a DEM or flow directions, outlets, forcing and discharge to a basin file.

The builder side of "a basin the project has never seen", in five calls:

1. :func:`d8_from_dem`: a DEM conditioned (depressions filled) and directed with pyflwdir,
   returned as D8 codes in hybridhydro's (smash's) coding; or :func:`open_flwdir` for an
   existing D8 raster (a window of it, e.g. of hydro-smash's France).
2. :func:`find_outlets`: the cells of a box whose drained area (km2) lies in a range, ranked,
   as the table ``code, x, y, area`` of ``gauge_attributes.csv``
   (``python -m hybridhydro outlets FLWDIR --bbox ... --area ...`` prints it).
3. :func:`build_basin`: flow directions + outlets + forcing + discharge + descriptors -> the
   basin Dataset (:mod:`hybridhydro.basin`); rasters on another grid or CRS are reprojected
   onto the flow-direction grid (:mod:`hybridhydro.io.regrid`).
4. :func:`write_smash_dataset`: the basin in the smash directory layout (reads back with
   :func:`hybridhydro.read_smash_dataset`).
5. :func:`write_basin_case`: ``basin.nc`` and a parameter file whose ``basin.source`` points at
   it, for the pipeline's stages 01-06.

D8 coding (smash's, clockwise from north; row 0 is the northern edge)::

    8 1 2        1 = N, 2 = NE, 3 = E, 4 = SE, 5 = S, 6 = SW, 7 = W, 8 = NW
    7 . 3        0 = no data (off the network)
    6 5 4

Units: forcing depths in mm per step, discharge in m3 s-1, outlet and gauge areas in km2 in
tables and files (``gauge_attributes.csv``), m2 inside the basin Dataset (``area``,
``area_dln``, ``flwacc``), coordinates in the units of the CRS.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .basin import PLAUSIBILITY_MODES, read_dt
from .dates import parse_date
from .mesh import (DCOL, DROW, PYFLWDIR_NODATA, accumulate, as_codes, build_mesh, cell_sizes, downstream, from_esri,
                   is_geographic, topological_levels)

#: Column of ``gauge_attributes.csv`` and of :func:`find_outlets`'s table, with their units.
OUTLET_COLUMNS = {"code": "gauge code", "x": "CRS units", "y": "CRS units", "area": "km2"}
_FORCING = ("prcp", "pet")


# --------------------------------------------------------------------------- flow directions


def _crs_of(da: xr.DataArray):
    import rioxarray  # noqa: F401

    return da.rio.crs


def _flwdir_array(codes: np.ndarray, like: xr.DataArray, crs, source: str) -> xr.DataArray:
    """D8 codes as a ``(y, x)`` int8 DataArray on ``like``'s coordinates, with the CRS."""
    import rioxarray  # noqa: F401

    out = xr.DataArray(
        codes.astype(np.int8),
        dims=("y", "x"),
        coords={"y": like["y"].values, "x": like["x"].values},
        name="flwdir",
        attrs={"units": "1", "long_name": "D8 flow direction, 1=N 2=NE 3=E 4=SE 5=S 6=SW 7=W 8=NW, 0=no data",
               "source": source},
    )
    if crs is not None:
        out = out.rio.write_crs(crs)
    return out.rio.write_nodata(0, encoded=False)


def _open_single(source, what: str) -> xr.DataArray:
    """A (y, x) raster from a DataArray or a GeoTIFF / NetCDF path (masked: no data is NaN)."""
    from .io.regrid import open_raster

    da = open_raster(source, what)
    extra = [d for d in da.dims if d not in ("y", "x")]
    if extra:
        raise ValueError(f"{what}: expected a single (y, x) raster, got dimensions {da.dims}; select one {extra[0]}")
    return da


def d8_from_dem(dem, *, max_depth: float = -1.0, outlets: str = "edge") -> xr.DataArray:
    """D8 flow directions from a digital elevation model, conditioned and directed by pyflwdir.

    ``pyflwdir.from_dem`` fills the depressions and directs the cells in one priority flood
    from the edges (Wang & Liu 2006; depressions deeper than ``max_depth`` are kept): each cell
    points at the neighbour the flood reached it from, its lowest neighbour in the filled DEM.
    That is the largest *drop*, not the steepest slope: where a diagonal neighbour is as low as
    a straight one (a plane sloping along a row or a column), pyflwdir's queue order decides.
    Its ESRI codes are converted to hybridhydro's (smash's) coding,
    clockwise from north: 1=N, 2=NE, 3=E, 4=SE, 5=S, 6=SW, 7=W, 8=NW, 0 = no data. pyflwdir
    ends the network in pits at the edge of the valid cells; each such pit is pointed at its
    neighbour off the grid or in no data (north, east, south, west first, then the diagonals),
    so that the water leaves the grid there, as smash expects of an outlet. An interior pit
    (only with ``max_depth >= 0``) becomes no data (0), with a warning.

    Parameters
    ----------
    dem
        Elevation (m, or any unit: only the order matters) as a ``(y, x)`` DataArray with its
        CRS (rioxarray), or the path of a GeoTIFF. No data: the raster's no-data value or NaN.
        North-up, not rotated.
    max_depth
        Largest depression depth filled (elevation unit); negative (default): fill every one.
    outlets
        pyflwdir's ``outlets``: ``"edge"`` (every edge cell may drain off the grid) or ``"min"``
        (only the lowest edge cell).

    Returns
    -------
    xarray.DataArray
        ``flwdir`` (y, x) int8 D8 codes on the DEM's cells, with its CRS (no data 0).
    """
    import pyflwdir

    da = _open_single(dem, "dem")
    crs = _crs_of(da)
    values = np.asarray(da.values, dtype=np.float64)
    nodata_value = da.rio.nodata
    invalid = ~np.isfinite(values)
    if nodata_value is not None and np.isfinite(nodata_value):
        invalid |= values == nodata_value
    if invalid.all():
        raise ValueError("dem: every cell is no data; check the raster and its no-data value")
    fill = -9999.0 if not (values[~invalid] == -9999.0).any() else float(np.nanmin(values[~invalid]) - 1e6)
    data = np.where(invalid, fill, values)
    transform = da.rio.transform()
    if transform.b != 0 or transform.d != 0 or transform.a <= 0 or transform.e >= 0:
        raise ValueError(f"dem: only north-up rasters without rotation are supported (transform {tuple(transform)[:6]}); "
                         "warp it first (gdalwarp)")
    latlon = bool(crs is not None and crs.is_geographic)
    flw = pyflwdir.from_dem(data, nodata=fill, max_depth=max_depth, transform=transform, latlon=latlon,
                            outlets=outlets)
    esri = flw.to_array(ftype="d8")
    codes = from_esri(esri, nodata=PYFLWDIR_NODATA).astype(np.int64)
    pits = (esri == 0) & ~invalid
    codes = _point_pits_outward(codes, pits, invalid)
    left = pits & (codes == 0)
    if left.any():
        r, c = np.argwhere(left)[0]
        warnings.warn(f"d8_from_dem: {int(left.sum())} interior pit(s) (max_depth = {max_depth:g}) are no data, e.g. "
                      f"row {r}, col {c}; the cells draining into them end there (a negative max_depth fills them)",
                      stacklevel=2)
    return _flwdir_array(codes, da, crs, "pyflwdir.from_dem")


def _point_pits_outward(codes: np.ndarray, pits: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """Pits next to the grid's edge or to no data, pointed at that neighbour (cardinals first)."""
    nrow, ncol = codes.shape
    out = codes.copy()
    todo = pits.copy()
    for code in (1, 3, 5, 7, 2, 4, 6, 8):
        rows, cols = np.nonzero(todo)
        r2, c2 = rows + DROW[code], cols + DCOL[code]
        off = (r2 < 0) | (r2 >= nrow) | (c2 < 0) | (c2 >= ncol)
        inside = ~off
        off[inside] = invalid[r2[inside], c2[inside]]
        out[rows[off], cols[off]] = code
        todo[rows[off], cols[off]] = False
    return out


def open_flwdir(source, bbox=None) -> xr.DataArray:
    """A D8 flow-direction raster (or the window of it over ``bbox``) as a ``(y, x)`` DataArray.

    Only the window is read from the file, so a crop of hydro-smash's France (1 200 x 1 125
    cells of 1 km) costs a few milliseconds.

    Parameters
    ----------
    source
        The path of a D8 GeoTIFF (coding 1=N ... 8=NW; no data and values <= 0 are 0), a
        ``(y, x)`` DataArray of such codes, or ``"France"`` (also ``"Cance"``, ``"Lez"``): the
        flow directions shipped with hydro-smash (Lambert-93, EPSG:2154, 1 km).
    bbox
        ``(xmin, xmax, ymin, ymax)`` in CRS units: keep the cells whose centre lies inside.

    Returns
    -------
    xarray.DataArray
        ``flwdir`` int8 with its CRS (``spatial_ref``), no data 0.
    """
    import rioxarray

    from .io.smash_layout import BUNDLED, france_flwdir

    label = str(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if isinstance(source, str) and source.lower() in BUNDLED and not path.exists():
            path = france_flwdir(f"the flow directions {source!r}")
        if not path.is_file():
            raise FileNotFoundError(f"flow directions: no file {path}; give a D8 GeoTIFF, a DataArray, or 'France' "
                                    "(hydro-smash's)")
        da = rioxarray.open_rasterio(path, masked=True).squeeze("band", drop=True)
        label = str(path)
    elif isinstance(source, xr.DataArray):
        da = source
    else:
        raise TypeError(f"flow directions: expected a path, a DataArray or 'France', got {type(source).__name__}")
    if bbox is not None:
        xmin, xmax, ymin, ymax = _check_bbox(bbox)
        x, y = da["x"].values, da["y"].values
        cols = np.flatnonzero((x >= xmin) & (x <= xmax))
        rows = np.flatnonzero((y >= ymin) & (y <= ymax))
        if not cols.size or not rows.size:
            raise ValueError(f"bbox {tuple(bbox)} holds no cell centre of {label} (x {x.min():g} to {x.max():g}, "
                             f"y {y.min():g} to {y.max():g}, CRS units)")
        da = da.isel(x=slice(cols[0], cols[-1] + 1), y=slice(rows[0], rows[-1] + 1))
    crs = _crs_of(da)
    codes = as_codes(np.asarray(da.values), name=f"flow directions ({label})")
    return _flwdir_array(codes, da, crs, label)


def _check_bbox(bbox) -> tuple[float, float, float, float]:
    from .io.smash_layout import check_bbox

    return check_bbox(bbox, "bbox=")


def _as_flwdir(flwdir) -> xr.DataArray:
    return flwdir if isinstance(flwdir, xr.DataArray) and flwdir.dtype == np.int8 else open_flwdir(flwdir)


def _georef(da: xr.DataArray) -> dict:
    """``xmin, ymax, xres, yres, epsg, crs_wkt`` of a (y, x) raster, as :func:`hybridhydro.build_mesh` takes them."""
    t = da.rio.transform()
    crs = _crs_of(da)
    return dict(xmin=float(t.c), ymax=float(t.f), xres=float(t.a), yres=float(-t.e),
                epsg=int(crs.to_epsg() or 0) if crs is not None else 0, crs_wkt=crs.to_wkt() if crs is not None else "")


# --------------------------------------------------------------------------- outlets


def drained_area(flwdir) -> xr.DataArray:
    """Upstream drainage area of every cell, the cell included, in km2 (float64), over the raster given.

    Cells draining into the raster from outside it are not counted: on a window of a larger
    raster, a catchment cut by the window's edge is too small (:func:`find_outlets` flags it).
    """
    da = _as_flwdir(flwdir)
    codes = np.asarray(da.values, dtype=np.int64)
    g = _georef(da)
    dx, dy = cell_sizes(*codes.shape, ymax=g["ymax"], xres=g["xres"], yres=g["yres"],
                        geographic=is_geographic(g["epsg"], g["crs_wkt"]))
    down = downstream(codes)
    levels = topological_levels(down)
    area = np.where(codes.ravel() > 0, (dx.astype(np.float64) * dy).ravel() / 1e6, 0.0)
    acc, _ = accumulate(down, levels, area)
    out = xr.DataArray(np.where(codes > 0, acc.reshape(codes.shape), np.nan), dims=("y", "x"),
                       coords={"y": da["y"].values, "x": da["x"].values}, name="drained_area",
                       attrs={"units": "km2", "long_name": "upstream drainage area, the cell included"})
    return out


def _edge_inflow(codes: np.ndarray) -> np.ndarray:
    """Whether each cell's catchment holds a valid cell on the raster's edge (water may come from outside)."""
    down = downstream(codes)
    levels = topological_levels(down)
    edge = np.zeros(codes.shape, dtype=np.float64)
    edge[[0, -1], :] = 1.0
    edge[:, [0, -1]] = 1.0
    edge[codes <= 0] = 0.0
    acc, _ = accumulate(down, levels, edge.ravel())
    return acc.reshape(codes.shape) > 0


def find_outlets(
    flwdir,
    bbox=None,
    area_range=(0.0, np.inf),
    *,
    n: int | None = None,
    nested: bool = False,
    complete_only: bool = True,
    prefix: str = "G",
) -> pd.DataFrame:
    """Candidate gauge outlets: cells inside a box whose drained area lies in a range, ranked.

    Parameters
    ----------
    flwdir
        D8 flow directions: a ``(y, x)`` DataArray (:func:`open_flwdir`, :func:`d8_from_dem`),
        the path of a D8 GeoTIFF, or ``"France"`` (hydro-smash's).
    bbox
        ``(xmin, xmax, ymin, ymax)`` in CRS units: the outlet cell's centre lies inside
        (default: the whole raster).
    area_range
        ``(min_km2, max_km2)``: the drained area of the outlet cell, km2, bounds included.
    n
        Keep the first ``n`` outlets of the ranking (default: all).
    nested
        False (default): one outlet per stretch of river, its most downstream cell in the box and
        the range (a cell whose downstream cell also qualifies is left out). True: every
        qualifying cell (neighbours along a river included).
    complete_only
        Leave out outlets whose catchment holds a cell on the raster's edge (water may flow in
        from outside the raster, so their area is a lower bound). The table says ``complete``
        either way when False.
    prefix
        Codes are ``<prefix>001``, ``<prefix>002``, ... in ranking order.

    Returns
    -------
    pandas.DataFrame
        Columns ``code``, ``x``, ``y`` (the outlet cell's centre, CRS units) and ``area`` (km2),
        ranked by area, largest first: ``table.to_csv("gauge_attributes.csv", index=False)``
        is a smash ``gauge_attributes.csv``. With ``complete_only=False``, a column
        ``complete`` too.

    Raises
    ------
    ValueError
        No cell qualifies: the message gives the areas found in the box and what to widen.
    """
    da = _as_flwdir(flwdir)
    lo, hi = (float(v) for v in area_range)
    if not (0 <= lo <= hi):
        raise ValueError(f"area_range = {tuple(area_range)!r} must be (min_km2, max_km2) with 0 <= min <= max")
    codes = np.asarray(da.values, dtype=np.int64)
    area = drained_area(da).values
    x, y = da["x"].values, da["y"].values
    box = _check_bbox(bbox) if bbox is not None else (-np.inf, np.inf, -np.inf, np.inf)
    inside = ((x[None, :] >= box[0]) & (x[None, :] <= box[1]) & (y[:, None] >= box[2]) & (y[:, None] <= box[3])
              & (codes > 0))
    ok = inside & (area >= lo) & (area <= hi)
    complete = ~_edge_inflow(codes)
    if complete_only:
        ok &= complete
    if not nested:
        down = downstream(codes).reshape(codes.shape)
        flat_ok = ok.ravel()
        has_down = down >= 0
        down_ok = np.zeros(codes.shape, dtype=bool)
        down_ok[has_down] = flat_ok[down[has_down]]
        ok &= ~down_ok
    if not ok.any():
        where = f"inside bbox {tuple(box)}" if bbox is not None else "on the raster"
        found = area[inside & np.isfinite(area)]
        span = f"drained areas there range from {found.min():.4g} to {found.max():.4g} km2" if found.size else \
            "no cell of the network lies there"
        more = ("; outlets whose catchment reaches the raster's edge were left out (complete_only=True): read a "
                "larger window of the flow directions") if complete_only else ""
        raise ValueError(f"find_outlets: no cell {where} drains between {lo:g} and {hi:g} km2 ({span}){more}; widen "
                         "area_range or the box")
    rows, cols = np.nonzero(ok)
    order = np.lexsort((cols, rows, -area[rows, cols]))
    rows, cols = rows[order], cols[order]
    if n is not None:
        rows, cols = rows[: int(n)], cols[: int(n)]
    width = max(3, len(str(len(rows))))
    table = pd.DataFrame({
        "code": [f"{prefix}{i + 1:0{width}d}" for i in range(len(rows))],
        "x": x[cols].astype(np.float64),
        "y": y[rows].astype(np.float64),
        "area": area[rows, cols],
    })
    if not complete_only:
        table["complete"] = complete[rows, cols]
    table.attrs["units"] = dict(OUTLET_COLUMNS)
    return table


# --------------------------------------------------------------------------- build


def _outlet_table(outlets) -> pd.DataFrame:
    """``code, x, y, area`` with the area in m2, from a gauge_attributes CSV (km2) or a DataFrame (km2)."""
    from .io.smash_layout import gauge_table, read_gauge_attributes

    if isinstance(outlets, (str, os.PathLike)):
        path = Path(outlets).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"outlets: no file {path}; give a CSV code,x,y,area (area in km2) or a DataFrame")
        return read_gauge_attributes(path)
    if not isinstance(outlets, pd.DataFrame):
        raise TypeError(f"outlets: expected the path of a gauge_attributes.csv or a DataFrame with columns code, x, y, "
                        f"area (km2), got {type(outlets).__name__}")
    return gauge_table(outlets, "outlets (the table given to build_basin)")


def _first_times(forcing: Mapping) -> pd.DatetimeIndex | None:
    from .io.regrid import open_raster

    for what in _FORCING:
        src = forcing.get(what)
        if src is not None and not (isinstance(src, (str, os.PathLike)) and Path(src).expanduser().is_dir()):
            da = open_raster(src, what)
            if "time" in da.dims:
                return pd.DatetimeIndex(da["time"].values)
    return None


def build_basin(
    *,
    flwdir=None,
    dem=None,
    outlets,
    forcing: Mapping,
    qobs=None,
    descriptors: Mapping | None = None,
    dt: float,
    start=None,
    end=None,
    name: str = "new_basin",
    reproject: bool = True,
    max_depth: int = 1,
    area_error_th: float | None = None,
    forcing_plausibility: str = "error",
    daily_interannual_pet: bool = False,
    progress: bool = False,
) -> xr.Dataset:
    """Build a basin Dataset (:mod:`hybridhydro.basin`) from your own data.

    Parameters
    ----------
    flwdir, dem
        One of them. ``flwdir``: D8 flow directions in hybridhydro's coding (1=N, 2=NE, ...,
        8=NW, clockwise; 0 = no data), a ``(y, x)`` DataArray with its CRS or a GeoTIFF path
        (:func:`open_flwdir`). ``dem``: an elevation raster, directed by :func:`d8_from_dem`.
        Its grid and CRS are the basin's: every other raster is brought onto it.
    outlets
        The gauges: the path of a ``gauge_attributes.csv`` or a DataFrame, columns ``code``,
        ``x``, ``y`` (CRS units) and ``area`` (declared drainage area, **km2**), e.g. from
        :func:`find_outlets`. Each is snapped to the cell of the ``(2 max_depth + 1)^2`` window
        whose drained area best matches (as smash); the active cells are their catchments.
    forcing
        ``{"prcp": ..., "pet": ...}``, depths in **mm per step** (``units`` absent, ``mm`` or
        ``kg m-2``): each a ``(time, y, x)`` DataArray or Dataset with its CRS, a NetCDF file,
        or a directory of GeoTIFFs whose names carry the step-end date (``%Y%m%d%H%M``, or
        ``%Y%m%d`` for daily steps; as in the smash layout). Time labels are the **end** of
        each step. Rasters on other cells or in another CRS are reprojected onto the
        flow-direction grid with GDAL's ``average`` resampling (the overlap-weighted mean depth
        of the source cells: it keeps the water of an area, to the cells cut by the edges);
        GeoTIFF series in the flow directions' CRS are read as smash reads them (nearest cell).
    qobs
        Observed discharge, **m3 s-1**: a directory of per-gauge CSV files in smash's format
        (``*<code>*.csv``; first line the date of the first value, ``%Y%m%d%H%M``; one value
        per line, every ``dt``; negative = missing), or a DataFrame (one column per gauge code,
        indexed by the step-end times). None: no observation (NaN).
    descriptors
        ``{name: raster}`` (a ``(y, x)`` DataArray with its CRS, or a GeoTIFF / NetCDF path),
        raw values; reprojected with ``average`` resampling like the forcing. Each must have a
        value on every active cell.
    dt
        The step, s (3600 hourly, 86400 daily).
    start, end
        The window ``(start, end]``: steps end at ``start + dt, ..., end``. Default: the time
        labels of the first forcing given as xarray or NetCDF (``start`` = first label - dt).
    name
        The basin's name (``attrs["name"]``).
    reproject
        False: a raster on other cells or in another CRS is an error naming both CRSs.
    max_depth, area_error_th
        :func:`hybridhydro.build_mesh`'s outlet search half-width (cells) and the relative
        area error above which a gauge is dropped (None: an error above 50 %).
    forcing_plausibility
        ``"error"``, ``"warn"`` or ``"off"``: what rain or PET beyond physical limits gives
        (:func:`hybridhydro.basin.check_forcing_values`).
    daily_interannual_pet
        ``forcing["pet"]`` is a daily interannual climatology, **mm per day** (as smash's
        ``daily_interannual_pet`` setup key): a directory of ``%m%d`` GeoTIFFs (e.g.
        ``0114_ETPJIA.tif``) or a DataArray / NetCDF file with a ``dayofyear`` dimension (1-366,
        a leap-year calendar). Each day's map is put on the grid like any raster, then spread
        over the day's steps with smash's hourly profile (one value a day at daily steps).
    progress
        Progress bars while reading GeoTIFF series.

    Returns
    -------
    xarray.Dataset
        The basin, as :func:`hybridhydro.read_smash_dataset` returns one (checked by
        :func:`hybridhydro.check_basin`).
    """
    from .io.regrid import grid_template
    from .io.smash_layout import (assemble_basin, model_times, read_descriptor_maps, read_forcing_source,
                                  read_interannual_pet_source, read_qobs_source)

    if forcing_plausibility not in PLAUSIBILITY_MODES:
        raise ValueError(f"forcing_plausibility = {forcing_plausibility!r}; choose one of "
                         f"{', '.join(map(repr, PLAUSIBILITY_MODES))}")
    if (flwdir is None) == (dem is None):
        raise ValueError("build_basin: give either flwdir= (D8 flow directions) or dem= (an elevation raster), "
                         "not both and not neither")
    if not isinstance(forcing, Mapping) or any(k not in forcing for k in _FORCING):
        raise ValueError(f"build_basin: forcing must be a mapping with 'prcp' and 'pet' (mm per step), got "
                         f"{sorted(forcing) if isinstance(forcing, Mapping) else type(forcing).__name__}")
    unknown = sorted(set(forcing) - set(_FORCING))
    if unknown:
        raise ValueError(f"build_basin: forcing {', '.join(unknown)} is not read (only prcp and pet)")
    dt = read_dt(dt, "build_basin")
    da = d8_from_dem(dem) if dem is not None else _as_flwdir(flwdir)
    georef = _georef(da)
    gauges = _outlet_table(outlets)
    mesh = build_mesh(
        np.asarray(da.values, dtype=np.int64), **georef, x=gauges["x"].to_numpy(), y=gauges["y"].to_numpy(),
        area=gauges["area"].to_numpy(), code=gauges["code"].to_numpy(dtype=str), max_depth=max_depth,
        area_error_th=area_error_th,
    )
    if start is None or end is None:
        labels = _first_times({"prcp": forcing["prcp"]} if daily_interannual_pet else forcing)
        if labels is None:
            raise ValueError("build_basin: give start= and end= (the window (start, end]) when the forcing is a GeoTIFF "
                             "directory")
        start = labels[0] - pd.Timedelta(seconds=dt) if start is None else start
        end = labels[-1] if end is None else end
    times, dt = model_times({"dt": dt}, Path("build_basin(...)"), start, end)
    mesh_ds = mesh.to_dataset()
    template = grid_template(mesh_ds)

    variables, coords = {}, {}
    if descriptors:
        variables["descriptors"] = (read_descriptor_maps(descriptors, template, mesh, reproject=reproject),
                                    {"units": "1"})
        coords["descriptor"] = ("descriptor", np.asarray([str(k) for k in descriptors], dtype=str))
    variables["qobs"] = (read_qobs_source(qobs, mesh.code, times, dt), {"units": "m3 s-1"})
    checks = {}
    for what in _FORCING:
        if what == "pet" and daily_interannual_pet:
            data, source = read_interannual_pet_source(forcing[what], times, dt, template, reproject=reproject,
                                                       progress=progress)
        else:
            data, source = read_forcing_source(forcing[what], what, times, dt, mesh, template, reproject=reproject,
                                               progress=progress)
        variables[what] = (data, {"units": "mm", "source": source})
        checks[what] = f"{what} given to build_basin ({source})"
    attrs = {"name": str(name), "source": "hybridhydro.build_basin", "flwdir_source": str(da.attrs.get("source", ""))}
    return assemble_basin(mesh, mesh_ds, times, dt, variables, coords, attrs=attrs, checks=checks,
                          forcing_plausibility=forcing_plausibility,
                          override="build_basin(..., forcing_plausibility='warn') (or 'off')", where="build_basin")


# --------------------------------------------------------------------------- writers


def _check_empty_target(directory: Path, overwrite: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} is a file, not a directory; choose another path")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise FileExistsError(f"{directory} is not empty; pass overwrite=True to write into it (files of the same "
                              "names are replaced, others are kept), or choose an empty or new directory")


def _write_tif(path: Path, values: np.ndarray, basin: xr.Dataset, dtype: str, nodata) -> None:
    import rasterio
    from rasterio.transform import from_origin

    crs = basin.rio.crs if "spatial_ref" in basin.coords else None
    transform = from_origin(float(basin.attrs["xmin"]), float(basin.attrs["ymax"]), float(basin.attrs["xres"]),
                            float(basin.attrs["yres"]))
    profile = dict(driver="GTiff", height=values.shape[0], width=values.shape[1], count=1, dtype=dtype,
                   transform=transform, nodata=nodata, compress="deflate")
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as out:
        out.write(values.astype(dtype), 1)


def write_smash_dataset(ds: xr.Dataset, directory, *, overwrite: bool = False) -> Path:
    """Write a basin Dataset in the smash directory layout, which :func:`hybridhydro.read_smash_dataset` reads back.

    Writes ``setup_<name>.yaml`` (dt in s, start_time, end_time, the read_* keys, ``flwdir``),
    ``flwdir.tif`` (the D8 codes of the basin's grid, 0 = no data), ``prcp/`` and ``pet/``
    (one float32 GeoTIFF per step, mm per step, named ``<var>_<step-end date>.tif`` with
    ``%Y%m%d%H%M``, or ``%Y%m%d`` when dt is a day; missing values as -99), ``qobs/<code>.csv``
    (first line the date of the first value, then one discharge per line in m3/s, -99 for
    missing), ``descriptor/<name>.tif`` and ``gauge_attributes.csv`` (code, x, y, area in km2:
    the declared outlets and areas). Without gauges the setup gets the grid's ``bbox``.

    Parameters
    ----------
    ds
        A basin (:func:`hybridhydro.check_basin` passes on it).
    directory
        The dataset directory; created if missing.
    overwrite
        Write into a directory that is not empty (replacing files of the same names). Without
        it, a non-empty directory is refused and nothing is written.

    Returns
    -------
    pathlib.Path
        The directory.
    """
    import yaml

    from .basin import check_basin
    from .io.smash_layout import date_format

    check_basin(ds, where="write_smash_dataset")
    directory = Path(directory).expanduser()
    _check_empty_target(directory, overwrite)
    directory.mkdir(parents=True, exist_ok=True)
    name = str(ds.attrs.get("name") or directory.name)
    dt = float(ds.attrs["dt"])
    times = pd.DatetimeIndex(ds["time"].values)
    _, fmt = date_format(dt)
    _write_tif(directory / "flwdir.tif", ds["flwdir"].values, ds, "int16", 0)
    for what in _FORCING:
        folder = directory / what
        folder.mkdir(exist_ok=True)
        data = np.asarray(ds[what].transpose("time", "y", "x").values, dtype=np.float32)
        for k, t in enumerate(times):
            _write_tif(folder / f"{what}_{t.strftime(fmt)}.tif", np.nan_to_num(data[k], nan=-99.0), ds, "float32", -99.0)
    codes = [str(c) for c in ds["gauge"].values]
    setup = {
        "dt": dt,
        "start_time": pd.Timestamp(ds.attrs["start_time"]).strftime("%Y-%m-%d %H:%M"),
        "end_time": times[-1].strftime("%Y-%m-%d %H:%M"),
        "flwdir": "flwdir.tif",
        "read_prcp": True, "prcp_directory": "prcp", "prcp_conversion_factor": 1.0,
        "read_pet": True, "pet_directory": "pet", "pet_conversion_factor": 1.0, "daily_interannual_pet": False,
        "read_qobs": bool(codes), "qobs_directory": "qobs",
    }
    if codes:
        write_qobs_csv(ds["qobs"], directory / "qobs", overwrite=True)
        pd.DataFrame({"code": codes, "x": ds["gauge_x"].values, "y": ds["gauge_y"].values,
                      "area": ds["area"].values.astype(np.float64) / 1e6}).to_csv(
            directory / "gauge_attributes.csv", index=False)
        if "area_dln" in ds:
            err = np.abs(ds["area_dln"].values - ds["area"].values) / ds["area"].values
            if float(np.nanmax(err)) > 0.5:  # built with a larger area_error_th: the reader must accept them too
                setup["area_error_th"] = 2 * float(np.nanmax(err))
    else:
        xres, yres = float(ds.attrs["xres"]), float(ds.attrs["yres"])
        x, y = ds["x"].values, ds["y"].values
        setup["bbox"] = [float(x.min() - xres / 2), float(x.max() + xres / 2), float(y.min() - yres / 2),
                         float(y.max() + yres / 2)]
    if "descriptors" in ds:
        (directory / "descriptor").mkdir(exist_ok=True)
        names = [str(n) for n in ds["descriptor"].values]
        for i, desc in enumerate(names):
            values = np.asarray(ds["descriptors"].isel(descriptor=i).transpose("y", "x").values, dtype=np.float32)
            _write_tif(directory / "descriptor" / f"{desc}.tif", np.nan_to_num(values, nan=-99.0), ds, "float32", -99.0)
        setup.update(read_descriptor=True, descriptor_directory="descriptor", descriptor_name=names)
    else:
        setup["read_descriptor"] = False
    header = (f"# {name}: written by hybridhydro.write_smash_dataset; dt in s, dates are step ends (the window is "
              "(start_time, end_time]), forcing in mm per step, qobs in m3/s, gauge areas in km2\n")
    (directory / f"setup_{name}.yaml").write_text(header + yaml.safe_dump(setup, sort_keys=False))
    return directory


def write_qobs_csv(qobs: xr.DataArray, directory, *, overwrite: bool = False) -> list[Path]:
    """One smash qobs CSV per gauge, ``<directory>/<code>.csv``: the date of the first value
    (``%Y%m%d%H%M``, a step end) on the first line, then one discharge per line (m3/s), -99 for
    missing. ``qobs`` is ``(gauge, time)`` (a basin's ``qobs``, or a simulation's ``q``).

    Existing files are refused unless ``overwrite``; returns the files written.
    """
    directory = Path(directory).expanduser()
    if "gauge" not in qobs.dims or "time" not in qobs.dims:
        raise ValueError(f"write_qobs_csv: expected dims (gauge, time), got {qobs.dims}")
    codes = [str(c) for c in qobs["gauge"].values]
    paths = [directory / f"{code}.csv" for code in codes]
    if not overwrite:
        for path in paths:
            if path.exists():
                raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it, or choose another "
                                      "directory")
    directory.mkdir(parents=True, exist_ok=True)
    times = pd.DatetimeIndex(qobs["time"].values)
    q = np.asarray(qobs.transpose("gauge", "time").values, dtype=np.float64)
    for g, path in enumerate(paths):
        values = np.where(np.isfinite(q[g]), q[g], -99.0)
        lines = [times[0].strftime("%Y%m%d%H%M")] + [repr(float(np.float32(v))) for v in values]
        path.write_text("\n".join(lines) + "\n")
    return paths


def synthetic_forcing(flwdir, times, dt: float, *, seed: int = 0, wet_fraction: float = 0.15,
                      mean_storm_mm_per_hour: float = 2.0, pet_noon_mm_per_hour: float = 0.25,
                      pet_seasonal_amplitude: float = 0.6) -> xr.Dataset:
    """Made-up rain and PET on a flow-direction grid, to try the pipeline without data.

    Rain: each step is wet with probability ``wet_fraction``; a wet step's intensity is drawn
    from a gamma distribution of mean ``mean_storm_mm_per_hour`` (mm per hour), times a smooth
    spatial pattern between 0.6 and 1.4 (a gradient across the grid). PET: a half-sine over
    06:00-18:00 peaking at noon, zero at night, times a seasonal cycle (a northern-hemisphere
    sine over the year, highest around 21 June, lowest around 21 December, of relative
    amplitude ``pet_seasonal_amplitude``), so that its noon rate averages
    ``pet_noon_mm_per_hour`` over a year. Both in **mm per step** (``dt`` s), ``(time, y, x)``
    float32 on ``flwdir``'s cells with its CRS, labelled by step ends ``times``.
    """
    if not 0.0 <= pet_seasonal_amplitude <= 1.0:
        raise ValueError(f"synthetic_forcing: pet_seasonal_amplitude = {pet_seasonal_amplitude!r}; give a relative "
                         "amplitude in [0, 1] (0: the same PET every day)")
    da = _as_flwdir(flwdir)
    times = pd.DatetimeIndex(times)
    hours = float(dt) / 3600.0
    rng = np.random.default_rng(seed)
    nt, (ny, nx) = len(times), da.shape
    wet = rng.random(nt) < wet_fraction
    intensity = np.where(wet, rng.gamma(0.8, mean_storm_mm_per_hour / 0.8, nt), 0.0) * hours
    u = np.linspace(0.0, 1.0, nx)[None, :]
    v = np.linspace(0.0, 1.0, ny)[:, None]
    angle = rng.uniform(0, 2 * np.pi)
    pattern = 1.0 + 0.4 * (np.cos(angle) * (2 * u - 1) + np.sin(angle) * (2 * v - 1)) / np.sqrt(2)
    prcp = (intensity[:, None, None] * pattern[None]).astype(np.float32)
    mid = (times - pd.Timedelta(seconds=dt / 2)).hour + (times - pd.Timedelta(seconds=dt / 2)).minute / 60.0
    # daily steps: the day's mean of the half-sine, (12 h / 24 h) x 2 / pi of the noon rate
    sun = np.clip(np.sin(np.pi * (np.asarray(mid) - 6.0) / 12.0), 0.0, None) if dt < 86400 else np.full(nt, 1 / np.pi)
    middle = times - pd.Timedelta(seconds=dt / 2)
    season = 1.0 + pet_seasonal_amplitude * np.sin(2 * np.pi * (middle.dayofyear.to_numpy() - 80.5) / 365.25)
    pet = np.broadcast_to((pet_noon_mm_per_hour * hours * sun * season)[:, None, None], (nt, ny, nx)).astype(np.float32)
    coords = {"time": times.values, "y": da["y"].values, "x": da["x"].values}
    if "spatial_ref" in da.coords:
        coords["spatial_ref"] = da["spatial_ref"]
    out = xr.Dataset(
        {"prcp": (("time", "y", "x"), prcp, {"units": "mm", "long_name": "synthetic precipitation depth over the step"}),
         "pet": (("time", "y", "x"), pet.copy(),
                 {"units": "mm", "long_name": "synthetic potential evapotranspiration depth over the step"})},
        coords=coords, attrs={"dt": float(dt), "seed": int(seed), "time_labels": "end of each step"},
    )
    for name in ("prcp", "pet"):
        if "spatial_ref" in out.coords:
            out[name].attrs["grid_mapping"] = "spatial_ref"
    return out


def synthetic_descriptors(flwdir, *, seed: int = 0) -> dict[str, xr.DataArray]:
    """Two made-up descriptor maps on a flow-direction grid (with its CRS), to try the pipeline without data.

    ``log_area``: log10 of the drained area in km2 (:func:`drained_area`), 0 off the network;
    ``gradient``: a smooth field from 0 to 1 across the grid in a random direction. Both
    dimensionless (units "1").
    """
    da = _as_flwdir(flwdir)
    rng = np.random.default_rng(seed)
    area = drained_area(da).values
    ny, nx = da.shape
    angle = rng.uniform(0, 2 * np.pi)
    u = np.linspace(-1.0, 1.0, nx)[None, :]
    v = np.linspace(-1.0, 1.0, ny)[:, None]
    gradient = 0.5 + 0.5 * (np.cos(angle) * u + np.sin(angle) * v) / np.sqrt(2)
    coords = {"y": da["y"].values, "x": da["x"].values}
    if "spatial_ref" in da.coords:
        coords["spatial_ref"] = da["spatial_ref"]
    maps = {"log_area": np.log10(np.where(np.isfinite(area), area, 1.0)), "gradient": gradient}
    return {name: xr.DataArray(values.astype(np.float32), dims=("y", "x"), coords=coords, name=name,
                               attrs={"units": "1", "grid_mapping": "spatial_ref"} if "spatial_ref" in coords
                               else {"units": "1"})
            for name, values in maps.items()}


class NewBasinParams(BaseModel):
    """The settings of stage 00 (``notebooks/00_new_basin.py``): where a new basin's data are.

    Every default builds the demo: a crop of hydro-smash's France flow directions, two outlets
    of 100-250 km2, synthetic forcing and descriptors, and discharge simulated by GR4 with the
    ``truth`` parameters. Give ``forcing``, ``qobs`` and ``descriptors`` to build yours.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    flwdir: str | None = Field("France", description="D8 flow-direction GeoTIFF (1=N ... 8=NW) or 'France' (hydro-smash's); "
                               "null when dem is given")
    dem: str | None = Field(None, description="an elevation GeoTIFF to direct with pyflwdir instead of flwdir")
    bbox: tuple[float, float, float, float] = Field(
        (710000.0, 750000.0, 6410000.0, 6450000.0), description="box of the outlets: xmin, xmax, ymin, ymax (CRS units)")
    margin: float = Field(20000.0, ge=0, description="flow directions read this far around bbox (CRS units), so that "
                          "catchments reaching out of the box are whole")
    area_range: tuple[float, float] = Field((100.0, 250.0), description="drained area of the outlets, min and max, km2")
    ngauge: int = Field(2, ge=1, description="how many outlets to keep, largest first")
    forcing: dict[str, str] | None = Field(None, description="{prcp: file or folder, pet: ...}, mm per step; null: "
                                           "synthetic forcing written as NetCDF")
    daily_interannual_pet: bool = Field(False, description="forcing.pet is a daily interannual climatology in mm per "
                                        "day (a folder of %m%d GeoTIFFs, or a NetCDF with a dayofyear dimension), "
                                        "spread over the steps as smash does")
    qobs: str | None = Field(None, description="folder of per-gauge qobs CSVs (m3/s); null: GR4 with `truth` simulates it")
    descriptors: dict[str, str] = Field(default_factory=dict, description="{name: raster file}; empty: two synthetic maps")
    dt: float = Field(3600.0, gt=0, description="time step, s")
    start: str = Field("2020-01-01 00:00", description="start of the window; the first step ends at start + dt")
    ntime: int = Field(120, ge=2, description="number of steps (used when the forcing is synthetic; else end = start + "
                       "ntime * dt too)")
    seed: int = Field(0, description="seed of the synthetic forcing and descriptors")
    name: str = Field("demo_crop", description="the basin's name and the case's name")
    structure: str = Field("gr4-lr", description="the model that makes the synthetic discharge")
    truth: dict[str, float] = Field(default_factory=lambda: {"cp": 60.0, "ct": 40.0, "kexc": 0.0, "llr": 5.0},
                                    description="its parameters (smash names: cp, ct mm; kexc mm per step; llr min)")

    @field_validator("start", mode="before")
    @classmethod
    def _a_date(cls, value):
        stamp = parse_date(value, f"new_basin.start = {value!r}")  # refused as everywhere else: day first, zones
        return value if isinstance(value, str) else str(stamp)

    @model_validator(mode="after")
    def _one_grid(self) -> "NewBasinParams":
        if (self.flwdir is None) == (self.dem is None):
            raise ValueError("new_basin: give flwdir (a D8 raster or 'France') or dem (an elevation raster), one of them")
        if self.forcing is not None and set(self.forcing) != set(_FORCING):
            raise ValueError(f"new_basin.forcing needs exactly prcp and pet, got {sorted(self.forcing)}")
        if self.daily_interannual_pet and self.forcing is None:
            raise ValueError("new_basin.daily_interannual_pet describes your forcing.pet: set new_basin.forcing too "
                             "(the demo's made-up PET is a series)")
        if not (self.bbox[0] < self.bbox[1] and self.bbox[2] < self.bbox[3]):
            raise ValueError(f"new_basin.bbox must be xmin, xmax, ymin, ymax with min < max, got {self.bbox}")
        return self


def new_basin_settings(cfg=None) -> NewBasinParams:
    """Stage 00's settings: ``cfg.new_basin`` when the parameters have that section, else the demo's defaults.

    ``cfg`` may also be a mapping of :class:`NewBasinParams`'s keys.
    """
    if isinstance(cfg, NewBasinParams):
        return cfg
    if isinstance(cfg, Mapping):
        return NewBasinParams.model_validate(dict(cfg))
    section = getattr(cfg, "new_basin", None) if cfg is not None else None
    if section is None:
        return NewBasinParams()
    return section if isinstance(section, NewBasinParams) else NewBasinParams.model_validate(
        section.model_dump() if isinstance(section, BaseModel) else dict(section))


def default_base_params() -> Path | None:
    """The project's ``params/base.yaml`` when hybridhydro runs from its repository, else None."""
    from .pipeline.params import REPOSITORY_ROOT

    path = Path(REPOSITORY_ROOT) / "params" / "base.yaml"
    return path if path.is_file() else None


def write_basin_case(
    ds: xr.Dataset,
    directory,
    *,
    case: str | None = None,
    extends="base",
    settings: Mapping | None = None,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``basin.nc`` and a parameter file ``<case>.yaml`` that runs the pipeline on it.

    Parameters
    ----------
    ds
        The basin (:func:`build_basin`, :func:`hybridhydro.read_smash_dataset`, ...).
    directory
        Where both files go (created if missing).
    case
        The case name (``runs/<case>/``) and the file's stem; default: the basin's name.
    extends
        The parameter file the case extends: ``"base"`` (the project's ``params/base.yaml``,
        when run from the repository), a path (e.g. ``params/ci.yaml`` for a tiny run), or
        None (the schema's defaults only). Written as a path relative to ``directory``.
    settings
        More sections of the case, merged over the defaults (e.g.
        ``{"calibration": {"optimizers": {"distributed": {"maxiter": 5}}}}``).
    overwrite
        Replace ``basin.nc`` and ``<case>.yaml`` when they exist; without it they are refused.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The basin file and the parameter file, whose ``basin.source`` is ``basin.nc`` (relative
        to the parameter file).
    """
    import yaml

    from .io import write_basin
    from .io.netcdf import check_target

    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    case = str(case or ds.attrs.get("name") or "new_basin")
    basin_path, params_path = directory / "basin.nc", directory / f"{case}.yaml"
    check_target(params_path, overwrite)
    check_target(basin_path, overwrite)
    if extends == "base":
        extends = default_base_params()
    data: dict = {}
    if extends is not None:
        parent = Path(extends).expanduser().resolve()
        if not parent.is_file():
            raise FileNotFoundError(f"extends: no parameter file {parent}")
        here = directory.resolve()
        shared = Path(os.path.commonpath([parent, here]))
        # relative inside one tree (a repository moved whole keeps working), absolute across trees (/tmp vs /work)
        data["extends"] = os.path.relpath(parent, here) if len(shared.parts) > 2 else str(parent)
    else:
        data["extends"] = None
    data["case"] = case
    data["basin"] = {"source": basin_path.name}
    for key, value in (settings or {}).items():
        if key in ("extends", "case"):
            raise ValueError(f"settings: set {key!r} with the argument of the same name")
        data[key] = _merge(data.get(key, {}), value) if isinstance(value, Mapping) else value
    write_basin(ds, basin_path, overwrite=overwrite)
    header = (f"# The case of the basin {case}: written by hybridhydro.write_basin_case. basin.source is relative to "
              "this file.\n#     python -m hybridhydro run " + str(params_path) + "\n")
    params_path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return basin_path, params_path


def _merge(base, over):
    out = dict(base) if isinstance(base, Mapping) else {}
    for key, value in over.items():
        out[key] = _merge(out.get(key), value) if isinstance(value, Mapping) else value
    return out


def _numbers(count: int):
    def parse(text: str):
        try:
            values = tuple(float(v) for v in text.replace(" ", "").split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            import argparse

            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}")
        return values
    return parse


def add_outlets_arguments(parser) -> None:
    """The ``outlets`` subcommand's arguments (shared by ``python -m hybridhydro outlets``)."""
    parser.add_argument("flwdir", help="a D8 flow-direction GeoTIFF (1=N ... 8=NW), or France (hydro-smash's)")
    parser.add_argument("--bbox", type=_numbers(4), default=None, metavar="XMIN,XMAX,YMIN,YMAX",
                        help="the box the outlets lie in, CRS units (default: the whole raster)")
    parser.add_argument("--area", type=_numbers(2), required=True, metavar="MIN,MAX",
                        help="drained area of the outlets, km2")
    parser.add_argument("-n", type=int, default=None, help="keep the n largest")
    parser.add_argument("--nested", action="store_true", help="every qualifying cell, not one per river stretch")
    parser.add_argument("--prefix", default="G", help="code prefix (default: %(default)s)")
    parser.add_argument("--margin", type=float, default=None,
                        help="read only the box and this margin around it (CRS units), faster on a large raster; "
                             "outlets whose catchment reaches beyond are left out (default: read the whole raster)")


def run_outlets(args) -> int:
    """Print :func:`find_outlets`'s table as ``gauge_attributes.csv`` (area in km2)."""
    import sys

    window = None
    if args.bbox is not None and args.margin is not None:
        m = float(args.margin)
        window = (args.bbox[0] - m, args.bbox[1] + m, args.bbox[2] - m, args.bbox[3] + m)
    flw = open_flwdir(args.flwdir, window)
    table = find_outlets(flw, args.bbox, args.area, n=args.n, nested=args.nested, prefix=args.prefix)
    table.to_csv(sys.stdout, index=False)
    return 0
