"""Crop a basin to the catchment of one of its gauges: :func:`crop_basin`.

The cropped basin is a basin like any other (:mod:`hybridhydro.basin`): the grid is cut to the
bounding box of the cells that drain through the gauge, those cells are the active ones, and the
mesh fields that depend on the domain are computed again on the cut grid by
:func:`hybridhydro.mesh.build_mesh`, as the readers compute them (``flwacc`` and ``flwpar`` over
the whole cut grid, ``flwdst`` to the gauge, NaN off the catchment), with each gauge pinned to its
cell. The gauges kept are the chosen one and
those upstream of it (nested), with their observations; the forcing, the descriptors and every
other variable are the basin's own on the cut grid.

Use: apply a trained regionalisation to a sub-catchment
(:meth:`hybridhydro.calibration.CalibrationResult.regionalise`), or run and calibrate one
sub-catchment alone.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .mesh import build_mesh, upstream_masks


def crop_basin(basin: xr.Dataset, gauge: str) -> xr.Dataset:
    """The basin restricted to the cells upstream of ``gauge`` (its catchment, the gauge cell included).

    Parameters
    ----------
    basin
        A basin Dataset with its mesh (``flwdir``, ``active_cell``, ``dx``, ``dy``, ``gauge_row``,
        ``gauge_col``, attrs ``xmin``, ``ymax``, ``xres``, ``yres``).
    gauge
        The code of the gauge whose catchment is kept (a value of ``basin["gauge"]``).

    Returns
    -------
    xarray.Dataset
        The basin on the catchment's bounding box: ``active_cell`` the catchment; ``flwacc``
        (m2), ``flwpar`` and ``flwdst`` (m, to ``gauge``) computed again on the cut grid;
        ``gauge_row``/``gauge_col`` in the cut grid; the gauges inside the catchment only
        (``gauge`` and those nested upstream of it, in the basin's order) with every variable
        along ``gauge``; attrs ``xmin``/``ymax`` of the cut grid and ``cropped_to`` = ``gauge``.
        Every other variable (forcing, descriptors, ...) is the basin's on the cut grid.

    Raises
    ------
    ValueError
        An unknown gauge (the message lists the basin's), a basin without its mesh, a gauge
        whose cell is not active, or cell sizes ``dx``/``dy`` that are not those its grid and
        CRS give (a mesh built otherwise than by :func:`hybridhydro.mesh.build_mesh`).
    """
    missing = [v for v in ("flwdir", "active_cell", "dx", "dy", "gauge_row", "gauge_col") if v not in basin]
    missing += [f"attribute {a!r}" for a in ("xmin", "ymax", "xres", "yres") if a not in basin.attrs]
    if missing or "gauge" not in basin.coords:
        missing += [] if "gauge" in basin.coords else ["coordinate 'gauge'"]
        raise ValueError(f"crop_basin: the basin lacks {', '.join(missing)}; read it with hybridhydro.read_basin "
                         "or read_smash_dataset, or build it with synthetic_basin")
    codes = [str(c) for c in basin["gauge"].values]
    if not isinstance(gauge, str) or gauge not in codes:
        raise ValueError(f"crop_basin: unknown gauge {gauge!r}; the basin's gauges are {', '.join(codes) or 'none'}")
    g = codes.index(gauge)
    rows, cols = basin["gauge_row"].values.astype(int), basin["gauge_col"].values.astype(int)
    flwdir = basin["flwdir"].transpose("y", "x").values
    active = basin["active_cell"].transpose("y", "x").values.astype(bool)
    if not active[rows[g], cols[g]]:
        raise ValueError(f"crop_basin: gauge {gauge!r} sits on cell (row {rows[g]}, col {cols[g]}), which is not "
                         "active: the basin does not model its catchment")
    catchment = upstream_masks(flwdir, [rows[g]], [cols[g]])[0]
    inside = [k for k in range(len(codes)) if catchment[rows[k], cols[k]]]
    # The mesh again, as the readers build it, with each kept gauge pinned to its cell
    # (max_depth=0: no snapping) and kept whatever its area (the area only steers snapping).
    crs_wkt = str(basin["spatial_ref"].attrs.get("crs_wkt", "")) if "spatial_ref" in basin.coords else ""
    acc = basin["flwacc"].transpose("y", "x").values
    mesh = build_mesh(
        flwdir, xmin=float(basin.attrs["xmin"]), ymax=float(basin.attrs["ymax"]),
        xres=float(basin.attrs["xres"]), yres=float(basin.attrs["yres"]), epsg=int(basin.attrs.get("epsg", 0) or 0),
        crs_wkt=crs_wkt, x=basin["x"].values[cols[inside]], y=basin["y"].values[rows[inside]],
        area=np.maximum(acc[rows[inside], cols[inside]].astype(np.float64), 1.0), code=[codes[k] for k in inside],
        max_depth=0, area_error_th=float("inf"),
    )
    c0 = int(round((mesh.xmin - float(basin.attrs["xmin"])) / float(basin.attrs["xres"])))
    r0 = int(round((float(basin.attrs["ymax"]) - mesh.ymax) / float(basin.attrs["yres"])))
    window = dict(y=slice(r0, r0 + mesh.nrow), x=slice(c0, c0 + mesh.ncol))
    out = basin.isel(**window, gauge=inside)
    for name in ("dx", "dy"):
        theirs = basin[name].transpose("y", "x").values[window["y"], window["x"]]
        if not np.allclose(getattr(mesh, name), theirs, rtol=1e-6):
            raise ValueError(
                f"crop_basin: the basin's {name} (m) is not the cell size its grid and CRS give (as "
                "hybridhydro.build_mesh computes it), so its mesh cannot be recomputed consistently; build the "
                "basin's mesh with hybridhydro.build_mesh"
            )
    fields = mesh.to_dataset()
    for name in ("flwdir", "active_cell", "flwacc", "flwpar", "flwdst", "gauge_row", "gauge_col"):
        out[name] = (basin[name].dims, fields[name].transpose(*basin[name].dims).values.astype(basin[name].dtype),
                     basin[name].attrs)
    xmin, ymax = float(mesh.xmin), float(mesh.ymax)
    out.attrs = {**basin.attrs, "xmin": xmin, "ymax": ymax, "cropped_to": gauge}  # a new dict: the basin's stays
    if "spatial_ref" in out.coords and "GeoTransform" in out["spatial_ref"].attrs:
        xres, yres = float(basin.attrs["xres"]), float(basin.attrs["yres"])
        out["spatial_ref"].attrs = {**out["spatial_ref"].attrs, "GeoTransform": f"{xmin} {xres} 0.0 {ymax} 0.0 {-yres}"}
    return out
