"""The routing plan of a mesh: the order in which discharge flows from cell to cell.

:func:`routing_plan` builds, once per mesh and in plain NumPy, a :class:`RoutingPlan`: the
active cells numbered column-major as smash numbers them, the routing levels (the drainage
partitions 2..npar) as padded index arrays, and for every cell of every level the padded
indices of its upstream neighbours. Index ``nac`` is the padding: gathers read it as 0
(``mode="fill"``) and scatters drop it (``mode="drop"``), so no level needs a mask. Levels
are padded in segments of similar width (on the 906 044-cell France mesh, 809 levels from
160 789 cells down to 1 fit in 7 segments and 1.8x the cells instead of 280x). The routing
operators (:mod:`hybridhydro.routing`) sweep these levels.

Units: ``upstream_area`` and ``cell_area`` in m2, ``dx`` in m.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from ._d8 import DCOL, DROW, topological_levels
from ._mesh import Mesh


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class RoutingPlan:
    """Static routing arrays of a mesh (a JAX pytree of NumPy arrays; build with :func:`routing_plan`).

    Attributes
    ----------
    rows, cols : int32, shape (nac,)
        Raster position of each active cell, column-major order (column outer, row inner), so
        index ``k`` here is smash's active-cell index ``k + 1``.
    segments : tuple of (cells, upstream) pairs
        The routing levels (partitions 2..npar, in order), in runs of consecutive levels of
        similar size: ``cells`` int32 ``(nlevel_s, width_s)`` are the cells of each level and
        ``upstream`` int32 ``(nlevel_s, width_s, nup_s)`` their upstream neighbours, both
        padded with ``nac``. One padded width for all levels would waste most of the work on
        large meshes, where the first levels hold 1e5 cells and the last ones a single cell;
        a segment's widths stay within a factor 4 of each other (or all under 64 cells).
    upstream_area : float32, shape (nac,)
        ``flwacc - dx*dy``: drainage area upstream of the cell, the cell excluded (m2).
    dx : float32, shape (nac,)
        Cell size along x (m), the reach length ``kw`` uses.
    cell_area : float32, shape (nac,)
        ``dx*dy`` (m2), to turn runoff depths into discharge.
    gauge_index : int32, shape (ng,)
        Active-cell index of each gauge cell.
    downstream : int32, shape (nac,)
        Active-cell index of each cell's downstream cell; ``-1`` where the water leaves the
        active domain (the domain's outlets).
    """

    rows: np.ndarray
    cols: np.ndarray
    segments: tuple
    upstream_area: np.ndarray
    dx: np.ndarray
    cell_area: np.ndarray
    gauge_index: np.ndarray
    downstream: np.ndarray

    @property
    def nac(self) -> int:
        """Number of active cells."""
        return int(self.rows.shape[0])

    @property
    def nlevel(self) -> int:
        """Number of sequential routing levels (``npar - 1`` on a smash mesh)."""
        return sum(int(cells.shape[0]) for cells, _ in self.segments)

    def levels(self) -> list[tuple[np.ndarray, list[np.ndarray]]]:
        """Unpadded levels, in order: the cells of each and each cell's upstream neighbours."""
        out = []
        for cells, ups in self.segments:
            for c, u in zip(np.asarray(cells), np.asarray(ups)):
                keep = c < self.nac
                out.append((c[keep], [x[x < self.nac] for x in u[keep]]))
        return out

    def cell_index(self, nrow: int, ncol: int) -> np.ndarray:
        """``(nrow, ncol)`` active-cell index of each raster cell, -1 off the active cells."""
        index = -np.ones((nrow, ncol), dtype=np.int64)
        index[self.rows, self.cols] = np.arange(self.nac)
        return index

    def to_cells(self, grid, dtype=None) -> np.ndarray:
        """Gather a ``(..., nrow, ncol)`` raster onto the active cells: ``(..., nac)``.

        One ``np.take`` of the flattened raster (no 2-D fancy indexing, no transposed copy);
        with ``dtype`` the result is cast once, after the gather (the cast of ``nac`` values,
        not of the whole raster).
        """
        grid = np.asarray(grid)
        nrow, ncol = grid.shape[-2:]
        flat = grid.reshape(grid.shape[:-2] + (nrow * ncol,))
        out = np.take(flat, self.rows.astype(np.intp) * ncol + self.cols, axis=-1)
        return out if dtype is None else out.astype(dtype, copy=False)

    def to_grid(self, values, nrow: int, ncol: int, fill=np.nan) -> np.ndarray:
        """Scatter ``(..., nac)`` cell values onto a ``(..., nrow, ncol)`` raster (``fill`` elsewhere)."""
        values = np.asarray(values)
        dtype = np.result_type(values.dtype, np.asarray(fill).dtype)
        grid = np.full(values.shape[:-1] + (nrow, ncol), fill, dtype=dtype)
        grid[..., self.rows, self.cols] = values
        return grid


def routing_plan(mesh: Mesh) -> RoutingPlan:
    """The :class:`RoutingPlan` of a mesh (plain NumPy arrays, read-only).

    Building it takes ~0.5 s on the 906 044-cell France mesh: build it once per mesh, which
    :func:`hybridhydro.prepare_run` does for every run it prepares (reuse its ``RunInputs`` to
    run many times).

    Raises
    ------
    ValueError
        A gauge off the active cells, an active cell with a D8 code outside 1..8, or a loop in
        the flow directions of the active cells.
    """
    plan = build_routing_plan(mesh)
    for leaf in jax.tree_util.tree_leaves(plan):
        leaf.flags.writeable = False
    return plan


def build_routing_plan(mesh: Mesh) -> RoutingPlan:
    """Build the :class:`RoutingPlan` of a mesh (plain NumPy, writable arrays).

    The levels are the longest-upstream-path partitions of the graph of *active* cells. On a
    mesh from ``generate_mesh``/:func:`hybridhydro.mesh.build_mesh`, where every upstream
    neighbour of an active cell is active, they are smash's ``flwpar`` partitions 2..npar
    exactly. Elsewhere they stay a valid processing order, whereas smash would read the
    discharge of an inactive neighbour (spec 16.2).

    Raises
    ------
    ValueError
        A gauge off the active cells, an active cell with a D8 code outside 1..8, or a loop in
        the flow directions of the active cells.
    """
    active = np.asarray(mesh.active_cell, dtype=bool)
    nrow, ncol = active.shape
    # Column-major numbering: argwhere over the transposed mask walks columns outer, rows inner.
    cr = np.argwhere(active.T)
    cols, rows = cr[:, 0].astype(np.int32), cr[:, 1].astype(np.int32)
    nac = rows.size
    index = -np.ones((nrow, ncol), dtype=np.int64)
    index[rows, cols] = np.arange(nac)

    code = np.asarray(mesh.flwdir, dtype=np.int64)[rows, cols]
    bad = np.flatnonzero((code < 1) | (code > 8))
    if bad.size:
        k = bad[0]
        raise ValueError(
            f"routing_plan: active cell (row {rows[k]}, col {cols[k]}) has flow direction {code[k]}; "
            "active cells need a D8 code in 1..8 (1=N, 2=NE, ..., 8=NW)"
        )
    dr, dc = rows + DROW[code], cols + DCOL[code]
    inside = (dr >= 0) & (dr < nrow) & (dc >= 0) & (dc < ncol)
    down = np.full(nac, -1, dtype=np.int64)
    down[inside] = index[dr[inside], dc[inside]]  # -1 where the water leaves the active domain

    # Longest upstream path over the active graph (level 1 = sources); loop cells get no level.
    n_in = np.bincount(down[down >= 0], minlength=nac)
    level = np.zeros(nac, dtype=np.int64)
    for lvl, cells_of_level in enumerate(topological_levels(down), start=1):
        level[cells_of_level] = lvl
    if nac and (level == 0).any():
        k = np.flatnonzero(level == 0)[0]
        raise ValueError(
            f"routing_plan: the flow directions of the active cells contain a loop through (row {rows[k]}, "
            f"col {cols[k]}); fix flwdir (see hybridhydro.mesh.validate_flwdir)"
        )

    nlevel = max(0, int(level.max()) - 1) if nac else 0
    # Column-major order within each level, as smash's cpar_to_rowcol lists them.
    members = [np.flatnonzero(level == lvl) for lvl in range(2, nlevel + 2)]
    # Upstream lists: cells grouped by their downstream cell (stable, so column-major).
    src = np.flatnonzero(down >= 0)
    src = src[np.argsort(down[src], kind="stable")]
    starts = np.searchsorted(down[src], np.arange(nac + 1))
    # Rank of each upstream cell among its downstream cell's upstream list.
    rank = np.arange(src.size) - starts[down[src]]
    segments = []
    for group in _segment_levels([m.size for m in members]):
        width = max(members[i].size for i in group)
        nup = max(1, max(int(n_in[members[i]].max()) for i in group))
        cells = np.full((len(group), width), nac, dtype=np.int32)
        upstream = np.full((len(group), width, nup), nac, dtype=np.int32)
        slot_row = np.full(nac, -1, dtype=np.int64)  # (row, column) of each cell in this segment
        slot_col = np.zeros(nac, dtype=np.int64)
        for row, i in enumerate(group):
            m = members[i]
            cells[row, : m.size] = m
            slot_row[m], slot_col[m] = row, np.arange(m.size)
        mine = slot_row[down[src]] >= 0
        upstream[slot_row[down[src[mine]]], slot_col[down[src[mine]]], rank[mine]] = src[mine]
        segments.append((cells, upstream))

    dx = np.asarray(mesh.dx, dtype=np.float32)[rows, cols]
    dy = np.asarray(mesh.dy, dtype=np.float32)[rows, cols]
    cell_area = (dx * dy).astype(np.float32)
    upstream_area = (np.asarray(mesh.flwacc, dtype=np.float32)[rows, cols] - cell_area).astype(np.float32)

    grow, gcol = np.asarray(mesh.gauge_row, dtype=np.int64), np.asarray(mesh.gauge_col, dtype=np.int64)
    gauge_index = np.empty(grow.size, dtype=np.int32)
    for g, (r, c) in enumerate(zip(grow, gcol)):
        if not (0 <= r < nrow and 0 <= c < ncol) or index[r, c] < 0:
            name = np.asarray(mesh.code)[g] if np.size(mesh.code) > g else g
            raise ValueError(
                f"routing_plan: gauge {name} at (row {r}, col {c}) is not an active cell of the mesh; "
                "rebuild the mesh so that every gauge lies on its own catchment"
            )
        gauge_index[g] = index[r, c]

    return RoutingPlan(
        rows=rows,
        cols=cols,
        segments=tuple(segments),
        upstream_area=upstream_area,
        dx=dx,
        cell_area=cell_area,
        gauge_index=gauge_index,
        downstream=down.astype(np.int32),
    )


def _segment_levels(widths: list[int], small: int = 64) -> list[list[int]]:
    """Group consecutive levels into runs whose widths stay within a factor 4 of each other
    (or all under ``small``, where padding costs less than another ``scan``)."""
    groups: list[list[int]] = []
    lo = hi = 0
    for i, w in enumerate(widths):
        new_lo, new_hi = min(lo, w), max(hi, w)
        if groups and (new_hi <= 4 * new_lo or new_hi <= small):
            groups[-1].append(i)
            lo, hi = new_lo, new_hi
        else:
            groups.append([i])
            lo = hi = w
    return groups
