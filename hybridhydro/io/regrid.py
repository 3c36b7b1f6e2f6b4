"""Rasters given as xarray (NetCDF files, DataArrays) onto the flow-direction grid: one operator.

Used by :func:`hybridhydro.read_smash_dataset` (``prcp.nc`` / ``pet.nc`` in a smash layout)
and by :func:`hybridhydro.build_basin` (forcing and descriptors of a new basin):

* a raster in the grid's CRS whose cell centres are the grid's (or a superset of them) is
  taken cell for cell, without resampling;
* otherwise it is reprojected onto the grid with rioxarray's ``reproject_match`` and GDAL's
  ``average`` resampling (the mean of the source cells that overlap each target cell, weighted
  by their overlap): for a forcing depth (mm per step) that keeps the mean depth over an area,
  so it conserves water where the rasters cover each other, to the source cells cut by the
  target cells' edges; the same for descriptors (the mean value over the cell);
* a raster or a grid without a CRS, or a reprojection that the caller turned off
  (``reproject=False``), is refused with an error naming both CRSs and how to fix it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

#: GDAL resampling used for forcing depths and descriptors (see the module docstring).
RESAMPLING = "average"


def crs_name(crs) -> str:
    """``EPSG:2154``, the CRS's name where it has no EPSG code, or ``no CRS``."""
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    if epsg:
        return f"EPSG:{epsg}"
    wkt = crs.to_wkt()
    return f"a CRS without EPSG code ({wkt[:80]}...)"


def open_raster(source, what: str, variable: str | None = None) -> xr.DataArray:
    """A DataArray from a DataArray, a one-variable Dataset, a NetCDF file or a GeoTIFF file.

    ``variable`` (default ``what``) picks the variable of a Dataset or NetCDF file that holds
    several. Dimensions named ``lon``/``lat`` or ``longitude``/``latitude`` are renamed ``x``/``y``.
    """
    import rioxarray  # noqa: F401  (the .rio accessor)

    where = f"{what}"
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        where = f"{what} ({path})"
        if not path.is_file():
            raise FileNotFoundError(f"{where}: no such file; give a NetCDF (.nc) or GeoTIFF (.tif) file, or a DataArray")
        if path.suffix.lower() in (".tif", ".tiff"):
            da = rioxarray.open_rasterio(path, masked=True)
            da = da.squeeze("band", drop=True) if "band" in da.dims and da.sizes["band"] == 1 else da
            return da.rename(what)
        try:
            source = xr.open_dataset(path, decode_coords="all")
        except Exception as err:  # noqa: BLE001  (any decoding failure is the file's)
            raise ValueError(f"{where}: cannot be read as NetCDF ({type(err).__name__}: {err}); is it a NetCDF file?") \
                from None
    if isinstance(source, xr.Dataset):
        names = [v for v in source.data_vars if source[v].ndim >= 2]
        name = variable or what
        if name in source.data_vars:
            pick = name
        elif len(names) == 1:
            pick = names[0]
        else:
            raise ValueError(f"{where}: no variable {name!r} among {', '.join(map(str, source.data_vars)) or 'none'}; "
                             f"name the one to read (variable {name!r})")
        da = source[pick]
    elif isinstance(source, xr.DataArray):
        da = source
    else:
        raise TypeError(f"{where}: expected a DataArray, a Dataset or the path of a .nc/.tif file, got "
                        f"{type(source).__name__}")
    renames = {a: b for a, b in (("lon", "x"), ("longitude", "x"), ("lat", "y"), ("latitude", "y")) if a in da.dims}
    return da.rename(renames) if renames else da


def grid_template(basin: xr.Dataset) -> xr.DataArray:
    """The (y, x) grid of a basin or mesh Dataset, with its CRS, to match rasters onto."""
    import rioxarray  # noqa: F401

    template = basin["flwdir"].astype(np.float32)
    if "spatial_ref" in basin.coords:
        template = template.rio.write_crs(basin.rio.crs)
    return template.rio.set_spatial_dims(x_dim="x", y_dim="y")


def _same_cells(da: xr.DataArray, template: xr.DataArray) -> bool:
    """Whether every cell centre of ``template`` is one of ``da``'s (to 1e-6 of a cell)."""
    for dim in ("x", "y"):
        if dim not in da.coords or da.sizes[dim] < 1:
            return False
        res = abs(float(template[dim][1] - template[dim][0])) if template.sizes[dim] > 1 else 1.0
        src = np.asarray(da[dim].values, dtype=np.float64)
        if src.size > 1 and abs(abs(src[1] - src[0]) - res) > 1e-6 * res:
            return False
        want = np.asarray(template[dim].values, dtype=np.float64)
        order = np.argsort(src)
        pos = np.clip(np.searchsorted(src[order], want), 0, src.size - 1)
        near = np.minimum(np.abs(src[order][pos] - want), np.abs(src[order][np.maximum(pos - 1, 0)] - want))
        if not (near <= 1e-6 * res).all():
            return False
    return True


def onto_grid(
    da: xr.DataArray,
    template: xr.DataArray,
    *,
    where: str,
    reproject: bool = True,
    resampling: str = RESAMPLING,
) -> xr.DataArray:
    """``da`` (``(..., y, x)``) on the cells of ``template``, float32, ``NaN`` where it has no data.

    Parameters
    ----------
    da
        The raster (a forcing series ``(time, y, x)`` or one map ``(y, x)``) with its CRS
        (rioxarray's ``spatial_ref`` / ``grid_mapping``, or ``da.rio.write_crs(...)``).
    template
        The target grid (:func:`grid_template`).
    where
        What the raster is and where it came from, for the error messages.
    reproject
        Allow reprojection / resampling; when False, a raster on other cells is an error.
    resampling
        GDAL resampling for :meth:`rioxarray.raster_array.RasterArray.reproject_match`.

    Raises
    ------
    ValueError
        Either side without a CRS, or a raster that needs reprojecting with ``reproject=False``:
        the message names both CRSs and the fix.
    """
    import rioxarray  # noqa: F401
    from rasterio.enums import Resampling

    if "x" not in da.dims or "y" not in da.dims:
        raise ValueError(f"{where}: expected dimensions named y and x (rows and columns of the raster), got {da.dims}; "
                         "rename them, e.g. da.rename(lat='y', lon='x')")
    da = da.rio.set_spatial_dims(x_dim="x", y_dim="y")
    src, dst = da.rio.crs, template.rio.crs
    if src is None or dst is None:
        missing = "the raster" if src is None else "the flow-direction grid"
        raise ValueError(
            f"{where}: {missing} has no CRS (raster: {crs_name(src)}, flow directions: {crs_name(dst)}), so the "
            f"two cannot be matched; write the CRS onto it, e.g. da = da.rio.write_crs('{crs_name(dst if src is None else src)}')"
            f" if that is the CRS its coordinates are in"
        )
    if src == dst and _same_cells(da, template):
        out = da.sel(x=template["x"].values, y=template["y"].values, method="nearest")
        out = out.assign_coords(x=template["x"].values, y=template["y"].values)
    elif not reproject:
        same = "the same CRS but other cells" if src == dst else "another CRS"
        raise ValueError(
            f"{where}: the raster is in {crs_name(src)}, the flow directions in {crs_name(dst)} ({same}), and "
            "reprojection is turned off; warp the raster onto the flow-direction grid first (gdalwarp -t_srs ... -tr "
            "...), or allow reprojection (reproject=True)"
        )
    else:
        da = da.astype(np.float32)
        if da.rio.nodata is None:
            da = da.rio.write_nodata(np.nan, encoded=False)
        out = da.rio.reproject_match(template, resampling=Resampling[resampling], nodata=np.nan)
        out = out.assign_coords(x=template["x"].values, y=template["y"].values)
    out = out.astype(np.float32)
    nodata = out.rio.nodata
    if nodata is not None and np.isfinite(nodata):
        out = out.where(out != nodata)
    return out


def select_steps(da: xr.DataArray, times: pd.DatetimeIndex, where: str) -> xr.DataArray:
    """The steps ``times`` (step ends) of a ``(time, y, x)`` raster; an error naming the missing ones."""
    if "time" not in da.dims and "dayofyear" in da.dims:
        raise ValueError(f"{where}: a 'dayofyear' dimension and no 'time': a daily interannual climatology (mm per day), "
                         "not a series; give it as one: build_basin(..., daily_interannual_pet=True), or "
                         "new_basin.daily_interannual_pet: true in stage 00")
    if "time" not in da.dims:
        raise ValueError(f"{where}: no 'time' dimension (dims {da.dims}); forcing is a series (time, y, x) labelled "
                         "by the end of each step")
    labels = pd.DatetimeIndex(da["time"].values)
    missing = times.difference(labels)
    if len(missing):
        raise ValueError(
            f"{where}: {len(missing)} of the {len(times)} step(s) the basin needs are not in its time labels (first "
            f"{missing[0]}; it holds {labels.min()} to {labels.max()}, {len(labels)} labels); time labels are the END "
            "of each step: give start/end within its range, or the data of the missing steps"
        )
    return da.sel(time=times)


def forcing_depth(da: xr.DataArray, what: str, where: str) -> None:
    """Refuse a forcing whose ``units`` is not a depth per step (mm), naming it."""
    from ..basin import DEPTH_UNITS

    units = da.attrs.get("units")
    if units is not None and str(units).strip().lower() not in DEPTH_UNITS:
        raise ValueError(
            f"{where}: {what} has units {units!r}; hybridhydro's forcing is a depth in mm over each step (units 'mm'): "
            f"convert it (e.g. mm/h x dt/3600; kg m-2 s-1 x dt) and set da.attrs['units'] = 'mm'"
        )
