"""Results other tools read: simulations as CF NetCDF, parameter maps as CF NetCDF or GeoTIFF.

* :func:`write_simulation`: a Dataset :func:`hybridhydro.simulate` returned, with the gauges'
  coordinates from the basin, as a CF-1.10 NetCDF-4 file (:func:`hybridhydro.io.cf.to_cf`).
* :func:`write_parameter_maps`: (y, x) maps (:meth:`CalibrationResult.parameter_maps`, or a
  simulation's parameters) as CF NetCDF (``.nc``) or as one multi-band GeoTIFF (``.tif``): one
  band per parameter, the band's description its name, its unit in the band's unit and tags.

Both refuse to replace a file unless ``overwrite=True``, write next to the target first (a failed
write leaves the old file intact), create the folder when it is missing, and name the path when
it cannot be written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from ..structure_name import parse_structure
from .cf import to_cf
from .netcdf import check_target, netcdf_engine, replace_atomically

#: zlib level of the gridded variables (off-basin NaN and smooth fields compress several-fold).
COMPRESSION_LEVEL = 4
_GEOTIFF = (".tif", ".tiff")


def _version() -> str:
    import hybridhydro

    return getattr(hybridhydro, "__version__", "unknown")


def _prepare(path, suffixes: tuple[str, ...], overwrite: bool, what: str) -> Path:
    """``path`` checked: its suffix, not an existing file unless ``overwrite``, its folder made."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{path}: {what} are written as {' or '.join(suffixes)}, got the suffix {path.suffix!r}")
    check_target(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file where a folder should be, no permission
        kind = PermissionError if isinstance(err, PermissionError) else OSError
        raise kind(f"cannot write {path}: the folder {path.parent} cannot be made ({err.strerror or err}); choose a "
                   "folder you can write to") from err
    return path


def _write_netcdf(ds: xr.Dataset, path: Path) -> None:
    """NetCDF-4, gridded numeric variables compressed."""
    for var in ds.variables.values():
        if var.ndim >= 2 and var.dtype.kind in "fiu":
            var.encoding = {**var.encoding, "zlib": True, "complevel": COMPRESSION_LEVEL}
    replace_atomically(path, lambda tmp: ds.to_netcdf(tmp, engine=netcdf_engine()))


# ---------------------------------------------------------------------------------------------
# Simulations
# ---------------------------------------------------------------------------------------------


def _check_simulation(sim: xr.Dataset, basin: xr.Dataset, path: Path) -> None:
    if not isinstance(sim, xr.Dataset) or "q" not in sim or "structure" not in sim.attrs or "dt" not in sim.attrs:
        raise ValueError(f"{path}: not a simulation (no 'q' or no attrs 'structure' and 'dt'); pass the Dataset "
                         "hybridhydro.simulate (or a calibration's .simulate) returned")
    missing = [str(g) for g in sim["gauge"].values if g not in set(basin["gauge"].values)] if "gauge" in sim.coords else []
    if missing:
        raise ValueError(f"{path}: gauge(s) {', '.join(missing)} of the simulation are not in the basin; pass the basin "
                         "it was run on")
    for dim in ("y", "x"):
        if dim in sim.coords and dim in basin.coords:
            a, b = np.asarray(sim[dim].values, float), np.asarray(basin[dim].values, float)
            if a.shape != b.shape or not np.allclose(a, b):
                raise ValueError(f"{path}: the simulation's {dim} ({a.size} cells) is not the basin's ({b.size} cells); "
                                 "pass the basin it was run on")


def _simulation_for_file(sim: xr.Dataset, basin: xr.Dataset, *, fluxes: bool = False) -> xr.Dataset:
    """What :func:`write_simulation` writes, before :func:`~hybridhydro.io.cf.to_cf`: ``sim``
    without its internal fluxes (unless ``fluxes``), with the gauges' declared outlet ``gauge_x``,
    ``gauge_y`` and drainage ``area`` as coordinates along ``gauge``, and file-level attributes."""
    structure = parse_structure(sim.attrs["structure"])
    gridded = [n for n, v in sim.data_vars.items() if v.dims == ("time", "y", "x")]
    dropped = [] if fluxes else [n for n in gridded if n not in structure.states and n != "discharge"]
    out = sim.drop_vars(dropped)
    if "gauge" in out.coords:
        codes = out["gauge"].values
        out = out.assign_coords(
            {name: ("gauge", basin[name].sel(gauge=codes).values, dict(basin[name].attrs))
             for name in ("gauge_x", "gauge_y", "area") if name in basin}
        )
        out["gauge"].attrs.setdefault("long_name", "gauge code")
    out.attrs.update(
        title=f"hybridhydro simulation of {structure.name} on the basin {basin.attrs.get('name', '')!s}".strip(),
        source=f"hybridhydro {_version()}",
        basin=str(basin.attrs.get("name", "")),
        contents=("q: discharge at the gauges; <parameter>: the parameters used; <state>_initial, <state>_final; "
                  + ("<state>, <flux>" if fluxes else "<state>") + " and discharge (time, y, x) when the run kept them"),
    )
    return out


def write_simulation(sim: xr.Dataset, basin: xr.Dataset, path: str | Path, *, fluxes: bool = False,
                     overwrite: bool = False) -> Path:
    """Write a simulation as a CF NetCDF-4 file that any CF tool reads.

    Parameters
    ----------
    sim
        What :func:`hybridhydro.simulate` (or ``CalibrationResult.simulate``) returned.
    basin
        The basin it ran on: the gauges' coordinates and areas, and the CRS when ``sim`` has none.
    path
        The file (``.nc``); its folder is made when missing.
    fluxes
        Also write the internal fluxes (time, y, x) the run kept (``return_fluxes=True``); they
        are left out by default, as they make most of the file.
    overwrite
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The path written. It holds ``q`` (gauge, time) in m3 s-1 with the coordinates ``gauge``
        (codes), ``gauge_x``, ``gauge_y`` (declared outlet, CRS units) and ``area`` (m2); the
        parameter maps and the initial and final states (y, x); the state series and the
        routed ``discharge`` (time, y, x) when the run kept them; a hybrid's network weights;
        ``time_bounds``; the CRS (``spatial_ref``). CF-1.10 (:mod:`hybridhydro.io.cf`).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    ValueError
        ``sim`` is not a simulation, or not of this basin; a suffix other than ``.nc``.
    OSError
        ``path`` cannot be written (the message names it).
    """
    path = _prepare(path, (".nc",), overwrite, "simulations")
    _check_simulation(sim, basin, path)
    ds = _simulation_for_file(sim, basin, fluxes=fluxes)
    crs = basin.rio.crs if ("spatial_ref" in basin.coords and ds.rio.crs is None) else None
    _write_netcdf(to_cf(ds, crs=crs, dt=sim.attrs["dt"], where=str(path)), path)
    return path


# ---------------------------------------------------------------------------------------------
# Parameter maps
# ---------------------------------------------------------------------------------------------


def _maps(ds: xr.Dataset, path: Path) -> xr.Dataset:
    if not isinstance(ds, xr.Dataset) or not ds.data_vars:
        raise ValueError(f"{path}: give the maps as a Dataset of (y, x) variables, e.g. result.parameter_maps()")
    other = {n: v.dims for n, v in ds.data_vars.items() if v.dims != ("y", "x") or v.dtype.kind not in "fiub"}
    if other:
        shown = ", ".join(f"{n!r} {tuple(d)}" for n, d in other.items())
        raise ValueError(f"{path}: parameter maps are numeric (y, x) variables; {shown} is not: select the maps, "
                         "e.g. ds[['cp', 'ct']]")
    return ds


def _write_geotiff(ds: xr.Dataset, path: Path) -> None:
    """One float32 band per variable, NaN as nodata; description, unit and tags per band."""
    import rasterio

    names = list(ds.data_vars)
    crs = ds.rio.crs
    profile = dict(
        driver="GTiff", width=ds.sizes["x"], height=ds.sizes["y"], count=len(names), dtype="float32",
        crs=crs.to_wkt() if crs is not None else None, transform=ds.rio.transform(recalc=True), nodata=np.nan,
        compress="deflate", predictor=3,
    )

    def write(tmp: Path) -> None:
        with rasterio.open(tmp, "w", **profile) as dst:
            for band, name in enumerate(names, start=1):
                var = ds[name]
                dst.write(np.asarray(var.transpose("y", "x").values, dtype=np.float32), band)
                dst.set_band_description(band, name)
                units = str(var.attrs.get("units", ""))
                if units:
                    dst.set_band_unit(band, units)
                dst.update_tags(band, name=name, **{k: str(v) for k, v in var.attrs.items()
                                                    if k in ("units", "long_name", "standard_name")})
            dst.update_tags(AREA_OR_POINT="Area", source=f"hybridhydro {_version()}", bands=",".join(names),
                            **({"dt": str(ds.attrs["dt"])} if "dt" in ds.attrs else {}))

    replace_atomically(path, write)


def write_parameter_maps(ds: xr.Dataset, path: str | Path, *, crs=None, dt: float | None = None,
                         overwrite: bool = False) -> Path:
    """Write (y, x) parameter maps as CF NetCDF (``.nc``) or as one GeoTIFF (``.tif``).

    Parameters
    ----------
    ds
        Numeric (y, x) maps: ``CalibrationResult.parameter_maps()``, or a simulation's
        parameters (``sim[["cp", "ct"]]``). NaN off the basin.
    path
        ``.nc``: a CF-1.10 NetCDF-4 file. ``.tif``/``.tiff``: one GeoTIFF, one float32 band per
        variable in the Dataset's order; each band's description is the variable's name, its
        unit (GDAL's band unit and the ``units`` tag) and ``long_name`` are band tags; off-basin
        cells are nodata (NaN). The folder is made when missing.
    crs
        The CRS, for maps that do not carry one (``basin.rio.crs``); one different from the
        maps' own is an error.
    dt
        The time step (s), for units per step (``"mm dt-1"`` is written ``"mm h-1"`` at 3600 s)
        when ``ds.attrs`` has no ``dt``.
    overwrite
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    ValueError
        A suffix other than ``.nc``/``.tif``; a variable that is not a numeric (y, x) map; units
        pint cannot read, or per step without ``dt``; a CRS that contradicts the maps'.
    OSError
        ``path`` cannot be written (the message names it).
    """
    path = _prepare(path, (".nc", *_GEOTIFF), overwrite, "parameter maps")
    cf = to_cf(_maps(ds, path), crs=crs, dt=dt, where=str(path))
    if path.suffix.lower() in _GEOTIFF:
        _write_geotiff(cf, path)
    else:
        cf.attrs.setdefault("source", f"hybridhydro {_version()}")
        _write_netcdf(cf, path)
    return path
