"""D8 flow directions: coding tables, conversions, topology and validation.

Our coding is smash's (clockwise from north; value -> downstream offset ``(drow, dcol)``, row 0
is the northern edge)::

    8 1 2        8 = NW (-1,-1)   1 = N (-1, 0)   2 = NE (-1,+1)
    7 . 3        7 = W  ( 0,-1)                   3 = E  ( 0,+1)
    6 5 4        6 = SW (+1,-1)   5 = S (+1, 0)   4 = SE (+1,+1)

``0`` is no data. Functions that take raw arrays also accept any value ``<= 0`` as no data, as
smash does.

The graph routines are vectorised NumPy (no Python loop per cell). The central one,
:func:`topological_levels`, peels the flow graph from its sources (Kahn's algorithm, one
NumPy step per level): level ``k`` holds the cells whose longest upstream path is ``k - 1``
cells long, which is exactly smash's routing partition ``flwpar``. Cells on a loop never
reach in-degree zero, so the same sweep finds every loop of any length.
"""

from __future__ import annotations

import numpy as np

#: Downstream row / column offset of each code (index 0 = no data, no move).
DROW = np.array([0, -1, -1, 0, 1, 1, 1, 0, -1], dtype=np.int64)
DCOL = np.array([0, 0, 1, 1, 1, 0, -1, -1, -1], dtype=np.int64)
#: Compass name of each code.
NAMES = ("no data", "N", "NE", "E", "SE", "S", "SW", "W", "NW")

#: ESRI / ArcGIS / pyflwdir "d8" powers of two -> our code (ESRI: 1=E, 2=SE, 4=S, ..., 128=NE).
ESRI_TO_D8 = {64: 1, 128: 2, 1: 3, 2: 4, 4: 5, 8: 6, 16: 7, 32: 8}
#: Our code -> ESRI power of two (index 0 unused).
D8_TO_ESRI = np.array([0, 64, 128, 1, 2, 4, 8, 16, 32], dtype=np.uint8)
#: pyflwdir's "d8" no-data value.
PYFLWDIR_NODATA = 247


def as_codes(flwdir, *, name: str = "flwdir") -> np.ndarray:
    """Check that ``flwdir`` holds D8 codes and return them as an ``int8`` array (0 = no data).

    Values ``<= 0`` and NaN are no data. Raises a ``ValueError`` naming the first offending
    cell ``(row, col)`` when a value is not an integer or is above 8, with a hint when the grid
    looks like ESRI 1..128 coding.
    """
    a = np.asarray(flwdir)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (row, col) array, got shape {a.shape}")
    if a.dtype.kind == "b" or a.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integer D8 codes 1..8 (0 = no data), got dtype {a.dtype}")
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        bad = finite & (a != np.round(a))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(
                f"{name}: cell ({r}, {c}) = {a[r, c].item()!r} is not an integer; D8 codes are integers 1..8 "
                "(0 = no data). "
                "Is this really a flow-direction grid (not a DEM or an accumulation)?"
            )
        a = np.where(finite, a, 0)
    big = a > 8
    if big.any():
        r, c = np.argwhere(big)[0]
        values = np.unique(a[a > 0])
        hint = ""
        if np.isin(values, list(ESRI_TO_D8)).all():
            hint = (
                " The grid holds only powers of two up to 128: it looks like ESRI (ArcGIS, pyflwdir 'd8') "
                "coding; convert it with hybridhydro.mesh.from_esri(codes)."
            )
        elif np.isin(values, list(ESRI_TO_D8) + [PYFLWDIR_NODATA, 255]).all():
            hint = (
                " It looks like pyflwdir 'd8' coding (powers of two, 0 = pit, 247 = no data); convert it "
                "with hybridhydro.mesh.from_esri(codes, nodata=247)."
            )
        raise ValueError(
            f"{name}: cell ({r}, {c}) = {a[r, c]} is not a D8 code: expected 1..8 (1=N, 2=NE, 3=E, 4=SE, 5=S, "
            f"6=SW, 7=W, 8=NW; 0 or negative = no data), {int(big.sum())} cell(s) are above 8.{hint}"
        )
    return np.where(a > 0, a, 0).astype(np.int8)


def from_esri(codes, nodata=None) -> np.ndarray:
    """Convert ESRI / ArcGIS / pyflwdir "d8" codes (1=E, 2=SE, 4=S, ..., 64=N, 128=NE) to ours.

    Parameters
    ----------
    codes
        2-D array of ESRI codes. ``0`` (an ESRI pit), negative values, NaN and ``nodata`` become
        ``0`` (no data).
    nodata
        The raster's no-data value, if any (247 for pyflwdir).

    Returns
    -------
    numpy.ndarray of int8
        Our D8 codes, 0 = no data.
    """
    a = np.asarray(codes)
    if a.ndim != 2:
        raise ValueError(f"codes must be a 2-D (row, col) array, got shape {a.shape}")
    a = np.where(np.isfinite(a), a, 0) if a.dtype.kind == "f" else a
    empty = a <= 0
    if nodata is not None:
        empty |= a == nodata
    lut = {int(k): v for k, v in ESRI_TO_D8.items()}
    out = np.zeros(a.shape, dtype=np.int8)
    known = np.isin(a, list(lut)) & ~empty
    bad = ~known & ~empty
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"codes: cell ({r}, {c}) = {a[r, c].item()!r} is not an ESRI D8 code (1, 2, 4, 8, 16, 32, 64 or 128; "
            "0 or nodata = no data). Pass the raster's no-data value as `nodata=`."
        )
    for k, v in lut.items():
        out[a == k] = v
    return out


def to_pyflwdir(flwdir, *, transform=None, latlon: bool = False):
    """A :class:`pyflwdir.FlwdirRaster` of our (validated) D8 codes.

    The grid is checked with :func:`validate_flwdir` first, because pyflwdir silently accepts
    loops. In pyflwdir, cells draining off the grid become pits and no-data cells are not part
    of the network, so its accumulations differ from smash's at no-data cells (smash counts
    water flowing into a no-data cell there).
    """
    import pyflwdir

    codes = as_codes(flwdir)
    validate_flwdir(codes)
    d8 = np.where(codes > 0, D8_TO_ESRI[codes], PYFLWDIR_NODATA).astype(np.uint8)
    kwargs = {"ftype": "d8", "check_ftype": True, "latlon": latlon}
    if transform is not None:
        kwargs["transform"] = transform
    return pyflwdir.from_array(d8, **kwargs)


def downstream(codes: np.ndarray) -> np.ndarray:
    """Flat index (row-major) of each cell's downstream cell, ``-1`` where there is none.

    A cell has none when it is no data or when its code points outside the grid. A cell that
    drains into a no-data cell does have one: smash accumulates area into no-data cells.
    """
    nrow, ncol = codes.shape
    k = codes.astype(np.int64).ravel()
    rows, cols = np.divmod(np.arange(k.size, dtype=np.int64), ncol)
    r2, c2 = rows + DROW[k], cols + DCOL[k]
    inside = (k > 0) & (r2 >= 0) & (r2 < nrow) & (c2 >= 0) & (c2 < ncol)
    return np.where(inside, r2 * ncol + c2, -1)


def topological_levels(down: np.ndarray) -> list[np.ndarray]:
    """Cells grouped by routing level, sources first (Kahn's algorithm, vectorised).

    ``levels[k]`` holds the flat indices of the cells whose longest upstream path is ``k``
    cells long (smash's ``flwpar == k + 1``). Each cell's downstream cell lies in a later
    level. Cells on a loop, of any length, appear in no level.
    """
    n = down.size
    has = down >= 0
    indeg = np.bincount(down[has], minlength=n)
    frontier = np.flatnonzero(indeg == 0)
    levels = []
    while frontier.size:
        levels.append(frontier)
        d = down[frontier]
        d = d[d >= 0]
        np.subtract.at(indeg, d, 1)
        frontier = np.unique(d[indeg[d] == 0])
    return levels


def loop_cells(down: np.ndarray, levels: list[np.ndarray]) -> np.ndarray:
    """Boolean flat mask of the cells that lie on a loop (in no topological level)."""
    placed = np.zeros(down.size, dtype=bool)
    for lev in levels:
        placed[lev] = True
    return ~placed


def accumulate(down: np.ndarray, levels: list[np.ndarray], area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upstream area (``area`` summed, the cell included) and routing partition of each cell.

    Sums run in float64, so they do not depend on the order of the additions. A cell on a loop
    keeps what flows into it from outside the loop (its own area plus its non-loop upstream), as
    smash does, and passes nothing on; its partition is likewise 1 + the largest partition of
    its non-loop upstream.

    Returns
    -------
    acc : float64, flat
        Upstream area in the unit of ``area``.
    par : int32, flat
        Partition (1 for cells with no upstream cell).
    """
    acc = np.asarray(area, dtype=np.float64).ravel().copy()
    par = np.ones(down.size, dtype=np.int32)
    for lev in levels:
        d = down[lev]
        m = d >= 0
        src, dst = lev[m], d[m]
        np.add.at(acc, dst, acc[src])
        np.maximum.at(par, dst, par[src] + 1)
    return acc, par


def accumulate_float32(down: np.ndarray, levels: list[np.ndarray], area: np.ndarray, shape) -> np.ndarray:
    """Upstream area summed in float32 in the order smash sums it, bit for bit.

    smash scans the grid in column-major order; each cell with no upstream cell starts a chain
    that adds the running total into the cell downstream, and goes on downstream as long as the
    next cell has received all its inflows. A cell therefore starts from its own area and adds
    its upstream cells' totals in the order their chains reached it: by the scan position of
    the last source cell each one waited for (``trigger``). We compute that key for every cell
    in one topological sweep, then add the upstream totals rank by rank, level by level, all
    vectorised. Order matters in float32 once a total exceeds about 1073 cells of 1 km2.

    Parameters
    ----------
    down, levels
        From :func:`downstream` and :func:`topological_levels`.
    area
        Own area of each cell (flat or 2-D; cast to float32).
    shape
        ``(nrow, ncol)`` of the grid, for the column-major scan position.

    Returns
    -------
    float32, flat
        Upstream area, the cell included; a loop cell keeps its own area plus its non-loop inflows.
    """
    nrow, ncol = shape
    n = down.size
    acc = np.asarray(area, dtype=np.float32).ravel().copy()
    level = np.full(n, len(levels), dtype=np.int64)  # loop cells: after every level
    for k, lev in enumerate(levels):
        level[lev] = k
    idx = np.arange(n, dtype=np.int64)
    trigger = np.where(level == 0, (idx % ncol) * nrow + idx // ncol, -1)
    for lev in levels:
        d = down[lev]
        m = d >= 0
        np.maximum.at(trigger, d[m], trigger[lev[m]])
    # edges from cells that get processed (loop cells push nothing)
    src = np.flatnonzero((down >= 0) & (level < len(levels)))
    dst = down[src]
    # rank of each edge among the inflows of its destination, by trigger
    o = np.lexsort((trigger[src], dst))
    src, dst = src[o], dst[o]
    first = np.r_[True, dst[1:] != dst[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(dst.size), 0))
    rank = np.arange(dst.size) - start
    # apply by (destination level, rank): each destination appears once per group
    o = np.lexsort((rank, level[dst]))
    src, dst = src[o], dst[o]
    key = level[dst] * 8 + rank[o]
    cuts = np.flatnonzero(np.diff(key)) + 1
    for s_, d_ in zip(np.split(src, cuts), np.split(dst, cuts)):
        acc[d_] = acc[d_] + acc[s_]
    return acc


def sink_pairs(codes: np.ndarray) -> np.ndarray:
    """Boolean mask of cells in pairs that point at each other (2-cycles), on all four axes."""
    codes = np.asarray(codes)
    nrow, ncol = codes.shape
    sink = np.zeros(codes.shape, dtype=bool)
    for k in (1, 2, 3, 4):  # N-S, NE-SW, E-W, SE-NW: code k in a cell, k + 4 in its downstream
        dr, dc = int(DROW[k]), int(DCOL[k])
        r0, r1 = max(0, -dr), nrow - max(0, dr)
        c0, c1 = max(0, -dc), ncol - max(0, dc)
        if r1 <= r0 or c1 <= c0:
            continue
        pair = (codes[r0:r1, c0:c1] == k) & (codes[r0 + dr : r1 + dr, c0 + dc : c1 + dc] == k + 4)
        sink[r0:r1, c0:c1] |= pair
        sink[r0 + dr : r1 + dr, c0 + dc : c1 + dc] |= pair
    return sink


def detect_sink(flwdir) -> np.ndarray:
    """Cells in pairs that point at each other ("sinks"), as a boolean ``(nrow, ncol)`` mask.

    Unlike ``smash.factory.detect_sink``, which checks the N-S, E-W and SE-NW axes only, the
    SW-NE axis is checked too: a SW-NE pair is as much a 2-cycle as the others.

    Parameters
    ----------
    flwdir
        2-D D8 codes (values <= 0 are no data).
    """
    return sink_pairs(as_codes(flwdir))


def _loop_path(down: np.ndarray, start: int, ncol: int, limit: int = 12) -> str:
    """The cells of the loop through ``start`` as "(r, c) -> (r, c) -> ...", for messages."""
    path, cur = [], start
    while len(path) < limit:
        path.append(f"({cur // ncol}, {cur % ncol})")
        cur = int(down[cur])
        if cur == start:
            return " -> ".join(path + [path[0]])
    return " -> ".join(path) + " -> ..."


def validate_flwdir(flwdir: np.ndarray, active: np.ndarray | None = None, *, outlets=None) -> None:
    """Check a D8 grid; raise a ``ValueError`` naming the cell ``(row, col)``, the problem and the fix.

    Checks, in this order:

    1. every value is an integer D8 code 1..8, or no data (0, negative or NaN); a grid in
       ESRI 1..128 coding is recognised and :func:`from_esri` is suggested;
    2. no loop among the cells used: two cells pointing at each other (on any of the four axes,
       SW-NE included) or a longer cycle. The cells used are the ``active`` ones when given,
       else every cell with a code;
    3. every active cell has a code (no active no-data cell);
    4. when ``outlets`` is given: no active cell drains off the grid unless it is one of the
       ``outlets``. Without ``outlets`` this check is skipped, because a domain may
       legitimately drain off its edges (a bounding-box domain, or a cropped catchment whose
       outlet is on the edge).

    Parameters
    ----------
    flwdir
        2-D D8 codes.
    active
        Optional boolean mask of the cells used, same shape.
    outlets
        Optional ``(n, 2)`` array-like of ``(row, col)`` cells allowed to drain off the grid
        (gauge outlets), or a boolean mask.
    """
    codes = as_codes(flwdir)
    nrow, ncol = codes.shape
    if active is None:
        used = codes > 0
    else:
        used = np.asarray(active)
        if used.shape != codes.shape:
            raise ValueError(f"active has shape {used.shape}, but flwdir has shape {codes.shape}")
        used = used.astype(bool)
        nodata = used & (codes == 0)
        if nodata.any():
            r, c = np.argwhere(nodata)[0]
            raise ValueError(
                f"cell ({r}, {c}) is active but has no flow direction (flwdir = 0, no data); give it a D8 "
                "code 1..8 or make it inactive"
            )
    pairs = sink_pairs(codes) & used
    if pairs.any():
        r, c = np.argwhere(pairs)[0]
        k = int(codes[r, c])
        r2, c2 = r + DROW[k], c + DCOL[k]
        raise ValueError(
            f"flow directions loop: cell ({r}, {c}) points {NAMES[k]} to ({r2}, {c2}), which points "
            f"{NAMES[codes[r2, c2]]} back to it (a 'sink' pair). Give one of the two cells a direction that "
            "leaves the pair (or set it to 0, no data); smash.factory.detect_sink and "
            "hybridhydro.mesh.detect_sink find all such pairs"
        )
    down = downstream(codes)
    loops = loop_cells(down, topological_levels(down)).reshape(codes.shape) & used
    if loops.any():
        r, c = np.argwhere(loops)[0]
        raise ValueError(
            f"flow directions loop through cell ({r}, {c}): {_loop_path(down, int(r * ncol + c), ncol)}. "
            "Water would circle forever; change the direction of one cell of the loop so that it leaves it "
            f"({int(loops.sum())} cell(s) lie on loops)"
        )
    if outlets is not None and active is not None:
        allowed = np.zeros(codes.shape, dtype=bool)
        o = np.asarray(outlets)
        if o.dtype == bool and o.shape == codes.shape:
            allowed = o
        elif o.size:
            o = o.reshape(-1, 2).astype(np.int64)
            ok = (o[:, 0] >= 0) & (o[:, 0] < nrow) & (o[:, 1] >= 0) & (o[:, 1] < ncol)
            allowed[o[ok, 0], o[ok, 1]] = True
        leaving = used & (codes > 0) & (down.reshape(codes.shape) < 0) & ~allowed
        if leaving.any():
            r, c = np.argwhere(leaving)[0]
            k = int(codes[r, c])
            raise ValueError(
                f"active cell ({r}, {c}) drains {NAMES[k]} off the grid (to ({r + DROW[k]}, {c + DCOL[k]}), "
                f"outside the {nrow} x {ncol} grid) but is not a gauge outlet: its water would leave the "
                f"domain unseen. Extend the grid, fix its direction, or make it inactive "
                f"({int(leaving.sum())} such cell(s))"
            )
