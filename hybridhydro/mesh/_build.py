"""Build the model :class:`Mesh` from a D8 flow-direction grid, as ``smash.factory.generate_mesh`` does.

Steps (spec section 6):

1. *Outlet snapping*: each gauge starts at the cell holding its ``(x, y)`` and moves to the
   cell of the ``(2 max_depth + 1)^2`` window whose upstream area best matches the declared
   area (smallest relative error, first in column-major order on ties).
2. *Domain*: the active cells are the union of the gauges' upstream areas; the grid is cropped
   to their bounding box (or to ``bbox``). With a ``bbox`` and no gauge, every cell with a code
   is active once the "sink" pairs are removed.
3. *Fields on the cropped grid*: cell sizes, upstream area ``flwacc``, routing partition
   ``flwpar`` and flow distance ``flwdst``.

Everything runs on whole arrays: one topological sweep (:func:`._d8.topological_levels`)
orders the cells, and every field is a vectorised pass over those levels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from os import PathLike

import numpy as np

from ._d8 import (
    accumulate,
    accumulate_float32,
    as_codes,
    downstream,
    loop_cells,
    sink_pairs,
    topological_levels,
    validate_flwdir,
)
from ._mesh import Mesh

#: Earth radius used by smash to turn degrees into metres (m).
EARTH_RADIUS = 6371228.0
#: Relative area error above which a gauge is refused when ``area_error_th`` is not given.
DEFAULT_AREA_ERROR_TH = 0.5


# --------------------------------------------------------------------------- reading


def read_flwdir(path: str | PathLike) -> tuple[np.ndarray, dict]:
    """Read a D8 flow-direction GeoTIFF (coding 1=N ... 8=NW, clockwise).

    Parameters
    ----------
    path
        Raster file readable by rasterio, north-up, not rotated.

    Returns
    -------
    codes : numpy.ndarray of int64, shape (nrow, ncol)
        The raster values, with the no-data value, NaN and every value ``<= 0`` set to 0.
        Values above 8 are kept, so that :func:`validate_flwdir` can report them.
    georef : dict
        ``xmin``, ``ymax`` (north-west corner), ``xres``, ``yres`` (positive cell sizes), all in
        CRS units; ``epsg`` (0 where unknown) and ``crs_wkt`` ("" where unknown).

    Raises
    ------
    ValueError
        A non-integer value (naming the cell), a rotated or south-up raster.
    """
    import rasterio

    with rasterio.open(path) as ds:
        band = ds.read(1, masked=True)
        t = ds.transform
        crs = ds.crs
    if t.b != 0 or t.d != 0:
        raise ValueError(f"{path}: the raster is rotated or sheared ({t}); resample it to a north-up grid first")
    if t.a <= 0 or t.e >= 0:
        raise ValueError(
            f"{path}: expected a north-up raster (positive x step, negative y step), got transform {tuple(t)[:6]}; "
            "flip it so that row 0 is the northern edge"
        )
    data = np.ma.getdata(band)
    empty = np.ma.getmaskarray(band)
    if data.dtype.kind == "f":
        empty = empty | ~np.isfinite(data)
        bad = ~empty & (data != np.round(data))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(
                f"{path}: cell ({r}, {c}) = {data[r, c].item()!r} is not an integer; a D8 flow-direction raster holds "
                "integer codes 1..8 (1=N, 2=NE, ..., 8=NW). Is this a DEM or an accumulation raster?"
            )
    codes = np.where(empty, 0, data)
    codes = np.where(codes > 0, codes, 0).astype(np.int64)
    epsg = 0
    wkt = ""
    if crs is not None:
        wkt = crs.to_wkt()
        epsg = int(crs.to_epsg() or 0)
    georef = dict(xmin=float(t.c), ymax=float(t.f), xres=float(t.a), yres=float(-t.e), epsg=epsg, crs_wkt=wkt)
    return codes, georef


def build_mesh_from_raster(path: str | PathLike, **kwargs) -> Mesh:
    """:func:`read_flwdir` then :func:`build_mesh`; ``kwargs`` are the gauge or bbox arguments."""
    codes, georef = read_flwdir(path)
    for key in ("epsg", "crs_wkt"):
        if kwargs.get(key) in (None, 0, ""):
            kwargs.pop(key, None)
    return build_mesh(codes, **{**georef, **kwargs})


# --------------------------------------------------------------------------- geometry


def is_geographic(epsg: int = 0, crs_wkt: str = "") -> bool:
    """Whether the CRS is in degrees (EPSG code or WKT; unknown counts as projected, in metres)."""
    if not crs_wkt and not epsg:
        return False
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        crs = CRS.from_wkt(crs_wkt) if crs_wkt else CRS.from_epsg(int(epsg))
    except CRSError as e:
        given = f"crs_wkt={crs_wkt[:60]!r}" if crs_wkt else f"epsg={epsg}"
        raise ValueError(f"{given} is not a CRS that PROJ knows ({e}); give the raster's EPSG code or WKT") from None
    return bool(crs.is_geographic)


def cell_sizes(nrow: int, ncol: int, *, ymax: float, xres: float, yres: float, geographic: bool):
    """Cell sizes ``dx``, ``dy`` in metres, float32 arrays of shape ``(nrow, ncol)``.

    Projected CRS: ``dx = xres`` and ``dy = yres``. Geographic CRS (degrees), as smash:
    ``dy = yres R pi/180`` and ``dx = xres cos(lat) R pi/180`` with ``lat`` the latitude of the
    row's cell centres and ``R = 6 371 228 m``.
    """
    if not geographic:
        return (np.full((nrow, ncol), xres, dtype=np.float32), np.full((nrow, ncol), yres, dtype=np.float32))
    lat = ymax - (np.arange(nrow) + 0.5) * yres
    k = EARTH_RADIUS * np.pi / 180.0
    dx = (xres * np.cos(np.deg2rad(lat)) * k).astype(np.float32)
    dx = np.repeat(dx[:, None], ncol, axis=1)
    dy = np.full((nrow, ncol), yres * k, dtype=np.float32)
    return dx, dy


def _bbox_window(bbox, *, nrow, ncol, xmin, ymax, xres, yres) -> tuple[int, int, int, int]:
    """Rows ``r0:r1`` and columns ``c0:c1`` of ``bbox = (xmin, xmax, ymin, ymax)`` on the grid.

    Each edge goes to the nearest cell edge, half-way cases outwards in ``x`` and upwards in
    ``y`` (as smash rounds), then the window is clipped to the grid.
    """
    try:
        bx0, bx1, by0, by1 = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ValueError(f"bbox must be (xmin, xmax, ymin, ymax), got {bbox!r}") from None
    if not (np.isfinite([bx0, bx1, by0, by1]).all() and bx0 < bx1 and by0 < by1):
        raise ValueError(f"bbox must be (xmin, xmax, ymin, ymax) with xmin < xmax and ymin < ymax, got {bbox!r}")
    c0 = int(np.floor((bx0 - xmin) / xres + 0.5))
    c1 = int(np.floor((bx1 - xmin) / xres + 0.5))
    r0 = int(np.ceil((ymax - by1) / yres - 0.5))
    r1 = int(np.ceil((ymax - by0) / yres - 0.5))
    c0, c1 = min(max(c0, 0), ncol), min(max(c1, 0), ncol)
    r0, r1 = min(max(r0, 0), nrow), min(max(r1, 0), nrow)
    if r1 <= r0 or c1 <= c0:
        raise ValueError(
            f"bbox {tuple(bbox)} covers no whole cell of the grid (x {xmin} .. {xmin + ncol * xres}, "
            f"y {ymax - nrow * yres} .. {ymax}, cells {xres} x {yres}); give a larger bbox in the raster's CRS"
        )
    return r0, r1, c0, c1


# --------------------------------------------------------------------------- gauges


def _gauge_arrays(x, y, area, code):
    """Standardise the gauge arguments to 1-D arrays (x, y in CRS units, area in m2, code str)."""
    if x is None or y is None or area is None:
        missing = [n for n, v in (("x", x), ("y", y), ("area", area)) if v is None]
        raise ValueError(f"gauges need x, y and area (m2) together; {', '.join(missing)} missing")
    gx = np.atleast_1d(np.asarray(x, dtype=np.float64)).ravel()
    gy = np.atleast_1d(np.asarray(y, dtype=np.float64)).ravel()
    ga = np.atleast_1d(np.asarray(area, dtype=np.float64)).ravel()
    if not gx.size == gy.size == ga.size:
        raise ValueError(f"x, y and area must have the same length, got {gx.size}, {gy.size} and {ga.size}")
    if code is None:
        codes = np.array([f"_c{i}" for i in range(gx.size)])
    else:
        codes = np.atleast_1d(np.asarray(code, dtype=str)).ravel()
        if codes.size != gx.size:
            raise ValueError(f"code must have one entry per gauge ({gx.size}), got {codes.size}")
        uniq, counts = np.unique(codes, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"gauge codes must be unique; repeated: {', '.join(uniq[counts > 1])}")
    if gx.size == 0:
        raise ValueError("no gauge given (x, y and area are empty)")
    for i in range(gx.size):
        if not (np.isfinite(gx[i]) and np.isfinite(gy[i])):
            raise ValueError(f"gauge {codes[i]}: coordinates ({gx[i]}, {gy[i]}) are not finite")
        if not (np.isfinite(ga[i]) and ga[i] > 0):
            raise ValueError(f"gauge {codes[i]}: area must be a positive number of m2, got {ga[i]}")
    return gx, gy, ga, codes


def _snap(code, gx, gy, garea, *, codes, loops, acc, nrow, ncol, xmin, ymax, xres, yres, max_depth):
    """Snapped outlet (row, col) of gauge ``code`` and its delineated area (m2).

    Candidates are the cells of the window around the cell holding ``(gx, gy)``, in
    column-major order. Cells on a flow loop and no-data cells are skipped (smash keeps no-data
    cells). Unlike smash, the raster's last row and last column are candidates too.
    """
    xmax, ymin = xmin + ncol * xres, ymax - nrow * yres
    r = int(np.floor((ymax - gy) / yres))
    c = int(np.floor((gx - xmin) / xres))
    if not (0 <= r < nrow and 0 <= c < ncol):
        raise ValueError(
            f"gauge {code} at ({gx}, {gy}) lies outside the flow-direction grid "
            f"(x {xmin} .. {xmax}, y {ymin} .. {ymax}); check its coordinates and that they are in the raster's CRS"
        )
    d = int(max_depth)
    rows = np.arange(max(r - d, 0), min(r + d, nrow - 1) + 1)
    cols = np.arange(max(c - d, 0), min(c + d, ncol - 1) + 1)
    cc, rr = np.meshgrid(cols, rows, indexing="ij")  # column outer, row inner
    flat = (rr * ncol + cc).ravel()
    on_loop = loops[flat]
    ok = ~on_loop & (codes.ravel()[flat] > 0)
    if on_loop.any():
        skipped = ", ".join(f"({f // ncol}, {f % ncol})" for f in flat[on_loop][:5])
        warnings.warn(
            f"gauge {code}: candidate outlet cell(s) {skipped} lie on a flow loop and were skipped; "
            "hybridhydro.mesh.detect_sink and validate_flwdir locate such loops",
            stacklevel=3,
        )
    if not ok.any():
        raise ValueError(
            f"gauge {code} at ({gx}, {gy}): no cell of the {2 * d + 1} x {2 * d + 1} window around cell ({r}, {c}) "
            "can be an outlet (all are no data or on a flow loop); check the "
            "coordinates, or increase max_depth"
        )
    cand = flat[ok]
    # errors from float32 areas, as smash stores them, so that ties break the same way
    a32 = np.float64(np.float32(garea))
    err = np.abs(a32 - acc[cand].astype(np.float32).astype(np.float64)) / a32
    best = int(cand[int(np.argmin(err))])
    return best // ncol, best % ncol, float(np.float32(acc[best]))


def _nearest_gauge(down, levels, gauge_flat):
    """Index of the first gauge met downstream of each cell (itself included), -1 if none."""
    lab = np.full(down.size, -1, dtype=np.int64)
    is_g = np.zeros(down.size, dtype=bool)
    # the first gauge of a shared cell labels it
    for g in range(len(gauge_flat) - 1, -1, -1):
        lab[gauge_flat[g]] = g
        is_g[gauge_flat[g]] = True
    for lev in reversed(levels):
        sel = lev[(down[lev] >= 0) & ~is_g[lev]]
        lab[sel] = lab[down[sel]]
    return lab


def _check_areas(codes, area, area_dln, area_error_th):
    """Indices of the gauges to keep; ValueError for a gauge far from its declared area."""
    err = np.abs(area_dln - area) / area
    if area_error_th is None:
        bad = np.flatnonzero(err > DEFAULT_AREA_ERROR_TH)
        if bad.size:
            lines = [
                f"{codes[i]}: declared {area[i] / 1e6:.6g} km2, delineated {area_dln[i] / 1e6:.6g} km2 "
                f"(relative error {err[i]:.0%})"
                for i in bad
            ]
            raise ValueError(
                f"{bad.size} gauge(s) delineate an area far from the declared one (more than "
                f"{DEFAULT_AREA_ERROR_TH:.0%} relative error):\n  " + "\n  ".join(lines) + "\n"
                "Check the coordinates and their CRS, and the areas' unit: km2 in a smash layout's "
                "gauge_attributes.csv (and in hybridhydro.build_basin's outlets), m2 in build_mesh's area argument "
                "(km2 x 1e6); or widen the search with max_depth. To drop such gauges set area_error_th to a "
                "relative error (e.g. 0.2): a key of the setup YAML (setup_<name>.yaml) in a smash layout, an "
                "argument of build_mesh / build_basin; to keep them, area_error_th: 1.0e+9 in the YAML, "
                "area_error_th=float('inf') in Python."
            )
        return np.arange(area.size)
    th = float(area_error_th)
    if not th >= 0:
        raise ValueError(f"area_error_th must be a non-negative relative error (e.g. 0.2), got {area_error_th!r}")
    keep = np.flatnonzero(err <= th)
    drop = np.flatnonzero(err > th)
    if drop.size:
        msg = ", ".join(f"{codes[i]} ({err[i]:.0%})" for i in drop)
        if keep.size == 0:
            raise ValueError(
                f"every gauge exceeds area_error_th = {th:g} (relative area error): {msg}; no catchment is left to "
                "mesh. Check the coordinates and the areas (km2 in gauge_attributes.csv, m2 in build_mesh's area "
                "argument), or raise area_error_th (a key of the smash layout's setup YAML, an argument of "
                "build_mesh / build_basin)"
            )
        warnings.warn(f"gauges dropped, relative area error above area_error_th = {th:g}: {msg}", stacklevel=3)
    return keep


# --------------------------------------------------------------------------- fields on the cropped grid


def _flow_distance(codes, down, levels, dx, dy, roots):
    """Distance (m) along the flow path to the root gauge downstream, NaN off the gauged network.

    Each step upstream adds ``dy`` (N/S), ``dx`` (E/W) or ``sqrt(dx^2 + dy^2)`` (diagonal),
    taken at the downstream cell, summed in float32 as smash does.
    """
    n = down.size
    k = codes.ravel().astype(np.int64)
    dxf = dx.ravel().astype(np.float32)
    dyf = dy.ravel().astype(np.float32)
    dist = np.full(n, np.nan, dtype=np.float32)
    is_root = np.zeros(n, dtype=bool)
    is_root[roots] = True
    dist[roots] = 0.0
    for lev in reversed(levels):
        sel = lev[(down[lev] >= 0) & ~is_root[lev]]
        d = down[sel]
        has = ~np.isnan(dist[d])
        sel, d = sel[has], d[has]
        kk = k[sel]
        step = np.where(
            (kk == 1) | (kk == 5),
            dyf[d],
            np.where((kk == 3) | (kk == 7), dxf[d], np.sqrt(dxf[d] * dxf[d] + dyf[d] * dyf[d])),
        )
        dist[sel] = dist[d] + step.astype(np.float32)
    return dist


def _grid_fields(codes, dx, dy):
    """``flwacc`` (m2, float32) and ``flwpar`` (int32) over the whole cropped grid, plus its topology."""
    down = downstream(codes)
    levels = topological_levels(down)
    _, par = accumulate(down, levels, np.zeros(codes.size))
    acc = accumulate_float32(down, levels, dx * dy, codes.shape)
    return acc.reshape(codes.shape), par.reshape(codes.shape), down, levels


# --------------------------------------------------------------------------- public builder


def build_mesh(
    flwdir: np.ndarray,
    *,
    xmin: float,
    ymax: float,
    xres: float,
    yres: float,
    epsg: int = 0,
    crs_wkt: str = "",
    x=None,
    y=None,
    area=None,
    code=None,
    bbox=None,
    max_depth: int = 1,
    area_error_th: float | None = None,
) -> Mesh:
    """Build the model mesh from D8 flow directions, like ``smash.factory.generate_mesh``.

    Parameters
    ----------
    flwdir
        2-D D8 codes (1=N, 2=NE, 3=E, 4=SE, 5=S, 6=SW, 7=W, 8=NW; values <= 0 are no data),
        row 0 at the north. See :func:`from_esri` for ESRI coding.
    xmin, ymax
        North-west corner of the grid (CRS units).
    xres, yres
        Cell sizes (CRS units, positive).
    epsg, crs_wkt
        The CRS (0 / "" when unknown, then taken as projected in metres). A geographic CRS gives
        cell sizes that depend on latitude.
    x, y, area, code
        Gauge outlets: coordinates (CRS units), declared drainage areas (m2) and codes (default
        ``_c0, _c1, ...``). Gauges keep the order given.
    bbox
        ``(xmin, xmax, ymin, ymax)`` in CRS units. Without gauges, the mesh is this box and every
        cell with a code is active, after the cells of "sink" pairs are set to no data (with a
        warning). With gauges, the grid is cropped to the box, the active cells are still the
        gauges' catchments, and a catchment that leaves the box is an error.
    max_depth
        Half-width, in cells, of the outlet search window.
    area_error_th
        Relative area error ``|area_dln - area| / area`` above which a gauge is dropped (with a
        warning), as in smash. When ``None`` (the default) no gauge is dropped silently: a gauge
        above 50 % relative error raises a ``ValueError`` naming it. Pass ``float('inf')`` to
        keep every gauge whatever its error.

    Returns
    -------
    Mesh
        Cropped grid: ``flwdir``, ``active_cell``, ``dx``/``dy`` (m), ``flwacc`` (m2, cell
        included, over the whole cropped grid), ``flwdst`` (m, NaN off the gauged network and
        everywhere in bbox mode), ``flwpar`` and the gauges (``area``/``area_dln`` in m2).

    Raises
    ------
    ValueError
        Bad codes (naming the cell), a gauge outside the grid, a gauge with no possible outlet,
        a gauge far from its declared area, a catchment leaving ``bbox``, or, in bbox mode, a
        flow loop among the active cells.

    Notes
    -----
    Equal to smash 1.3 ``generate_mesh`` field by field (``flwacc`` bit for bit: it is summed in
    float32 in smash's order, see :func:`._d8.accumulate_float32`), except where smash is wrong
    or fragile, on purpose:

    * SW-NE pairs pointing at each other are sinks too (smash's ``detect_sink`` misses them).
    * Catchments are delineated whole. smash delineates each candidate outlet only inside a box
      of ``ceil(area / (dx dy))`` cells around it, and never enters the raster's last row or
      last column (an off-by-one): a catchment that touches them, or one much larger and longer
      than its declared area, comes out truncated in smash.
    * An outlet is never snapped onto a no-data cell (smash may), and the raster's last row and
      column can hold outlets (smash skips them).
    * smash drops the inflow of a SE-pointing cell (code 4) into a cell whose raw value is 0
      (``|4 - 0| = 4`` looks like a pit to it); we count it. This only changes ``flwacc`` and
      ``flwpar`` of inactive no-data cells (so, rarely, ``ncpar``/``cpar_to_rowcol``).
    * Geographic CRS: smash accumulates the row latitude in float32 (about 1e-6 relative
      error on ``dx`` after a few dozen rows); we compute it exactly. smash sizes a bbox window
      from float coordinates by truncation, and may lose its last row/column at resolutions
      such as 0.01 degree; we round cell indices.
    * Bad input raises a ``ValueError`` where smash keeps a far-off gauge, drops a catchment
      silently, returns a gauge at (0, 0) with area 0, or crashes.
    """
    codes = as_codes(flwdir)
    nrow, ncol = codes.shape
    for name, v in (("xres", xres), ("yres", yres)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive cell size, got {v!r}")
    if int(max_depth) != max_depth or max_depth < 0:
        raise ValueError(f"max_depth must be a non-negative integer, got {max_depth!r}")
    gauged = x is not None or y is not None or area is not None
    if not gauged and bbox is None:
        raise ValueError("give gauge outlets (x, y, area) or a bbox (xmin, xmax, ymin, ymax)")
    geo = dict(nrow=nrow, ncol=ncol, xmin=xmin, ymax=ymax, xres=xres, yres=yres)
    dx, dy = cell_sizes(nrow, ncol, ymax=ymax, xres=xres, yres=yres, geographic=is_geographic(epsg, crs_wkt))
    win = None if bbox is None else _bbox_window(bbox, **geo)
    if gauged:
        dom = _gauged_domain(codes, dx, dy, win, bbox, x, y, area, code, max_depth, area_error_th, geo)
    else:
        dom = _bbox_domain(codes, win)

    r0, r1, c0, c1 = dom.window
    c_dx, c_dy = dx[r0:r1, c0:c1], dy[r0:r1, c0:c1]
    flwacc, flwpar, c_down, c_levels = _grid_fields(dom.codes, c_dx, c_dy)
    if dom.roots is None:
        flwdst = np.full(dom.codes.shape, np.nan, dtype=np.float32)
    else:
        flwdst = _flow_distance(dom.codes, c_down, c_levels, c_dx, c_dy, dom.roots).reshape(dom.codes.shape)
        flwdst[~dom.active] = np.nan
    g = dom.gauges
    return Mesh(
        flwdir=dom.codes.astype(np.int8),
        active_cell=dom.active.astype(bool),
        dx=c_dx.astype(np.float32),
        dy=c_dy.astype(np.float32),
        flwacc=flwacc,
        flwdst=flwdst.astype(np.float32),
        flwpar=flwpar.astype(np.int32),
        xmin=float(xmin + c0 * xres),
        ymax=float(ymax - r0 * yres),
        xres=float(xres),
        yres=float(yres),
        epsg=int(epsg or 0),
        gauge_row=(g["row"] - r0).astype(np.int32),
        gauge_col=(g["col"] - c0).astype(np.int32),
        code=np.asarray(g["code"], dtype=str),
        gauge_x=np.asarray(g["x"], dtype=np.float64),
        gauge_y=np.asarray(g["y"], dtype=np.float64),
        area=np.asarray(g["area"], dtype=np.float32),
        area_dln=np.asarray(g["area_dln"], dtype=np.float32),
        crs_wkt=str(crs_wkt or ""),
    )


@dataclass
class _Domain:
    """The modelled domain on the raster: crop window, cropped codes, active cells, gauges."""

    window: tuple[int, int, int, int]  # rows r0:r1, columns c0:c1 of the raster
    codes: np.ndarray  # cropped D8 codes
    active: np.ndarray  # cropped active mask
    gauges: dict  # x, y, area, code, row, col (raster indices), area_dln; empty in bbox mode
    roots: np.ndarray | None  # flat indices (cropped grid) of the gauges with no gauge downstream


def _bbox_domain(codes, win) -> _Domain:
    """bbox mode: every coded cell of the box is active, once sink pairs are set to no data."""
    r0, r1, c0, c1 = win
    c_codes = codes[r0:r1, c0:c1].copy()
    sinks = sink_pairs(c_codes)
    if sinks.any():
        first = ", ".join(f"({r + r0}, {c + c0})" for r, c in np.argwhere(sinks)[:4])
        warnings.warn(
            f"{int(sinks.sum())} cell(s) of the bbox lie in pairs pointing at each other (sinks), e.g. {first}; "
            "they are set to no data and inactive (hybridhydro.mesh.detect_sink lists them)",
            stacklevel=3,
        )
        c_codes[sinks] = 0
    active = c_codes > 0
    try:
        validate_flwdir(c_codes, active)  # longer loops among the active cells
    except ValueError as e:
        raise ValueError(f"in the bbox (rows offset by {r0}, columns by {c0} in the raster): {e}") from None
    empty = {k: np.zeros(0) for k in ("x", "y", "area", "area_dln")}
    empty.update(code=np.zeros(0, dtype=str), row=np.zeros(0, np.int64), col=np.zeros(0, np.int64))
    return _Domain(win, c_codes, active, empty, None)


def _gauged_domain(codes, dx, dy, win, bbox, x, y, area, code, max_depth, area_error_th, geo) -> _Domain:
    """Gauge mode: snap the outlets, keep their catchments, crop to them (or to ``win``)."""
    nrow, ncol = codes.shape
    gx, gy, garea, gcode = _gauge_arrays(x, y, area, code)
    # whole-raster topology: candidate areas are upstream areas (float64, order-free, as smash's area_dln)
    down = downstream(codes)
    levels = topological_levels(down)
    loops = loop_cells(down, levels)
    acc, _ = accumulate(down, levels, dx.astype(np.float64) * dy.astype(np.float64))
    snapped = np.array(
        [
            _snap(gcode[i], gx[i], gy[i], garea[i], codes=codes, loops=loops, acc=acc, max_depth=max_depth, **geo)
            for i in range(gx.size)
        ]
    )
    grow, gcol, area_dln = snapped[:, 0].astype(np.int64), snapped[:, 1].astype(np.int64), snapped[:, 2]
    keep = _check_areas(gcode, garea.astype(np.float32).astype(np.float64), area_dln, area_error_th)
    gx, gy, garea, gcode, grow, gcol, area_dln = (a[keep] for a in (gx, gy, garea, gcode, grow, gcol, area_dln))
    gflat = grow * ncol + gcol
    lab = _nearest_gauge(down, levels, gflat)
    active_full = (lab >= 0).reshape(codes.shape)
    if win is None:
        rows = np.flatnonzero(active_full.any(axis=1))
        cols = np.flatnonzero(active_full.any(axis=0))
        win = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    else:
        _check_inside_bbox(lab, down, gflat, gcode, codes.shape, win, bbox)
    r0, r1, c0, c1 = win
    # root gauges: no gauge downstream (and, of gauges sharing a cell, the first one)
    below = down[gflat]
    nested = np.where(below >= 0, lab[np.maximum(below, 0)] >= 0, False) | (lab[gflat] != np.arange(gflat.size))
    roots = (grow[~nested] - r0) * (c1 - c0) + (gcol[~nested] - c0)
    gauges = dict(x=gx, y=gy, area=garea, code=gcode, row=grow, col=gcol, area_dln=area_dln)
    return _Domain(win, codes[r0:r1, c0:c1].copy(), active_full[r0:r1, c0:c1], gauges, roots)


def _check_inside_bbox(lab, down, gflat, gcode, shape, win, bbox):
    """ValueError for a gauge whose catchment (nested ones included) leaves the bbox window."""
    r0, r1, c0, c1 = win
    inside = np.zeros(shape, dtype=bool)
    inside[r0:r1, c0:c1] = True
    ng = gflat.size
    outside = np.zeros(ng, dtype=bool)
    hit = lab[(lab >= 0) & ~inside.ravel()]
    outside[np.unique(hit)] = True
    # a gauge also leaves the box through the gauges nested in it: walk each gauge down the gauge tree
    parent = np.where(down[gflat] >= 0, lab[np.maximum(down[gflat], 0)], -1)
    parent[lab[gflat] != np.arange(ng)] = lab[gflat][lab[gflat] != np.arange(ng)]
    for g in np.flatnonzero(outside):
        p, seen = parent[g], 0
        while p >= 0 and seen <= ng:
            outside[p] = True
            p, seen = parent[p], seen + 1
    if outside.any():
        names = ", ".join(gcode[outside])
        raise ValueError(
            f"the catchment of gauge(s) {names} extends outside bbox {tuple(bbox)}; enlarge the bbox to contain "
            "the whole catchment, or leave those gauges out (smash drops them silently)"
        )
