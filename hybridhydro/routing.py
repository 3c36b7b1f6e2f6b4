"""Routing: runoff of every active cell -> discharge of every active cell (smash ``zero``,
``lag0``, ``lr``, ``kw``; spec section 5).

Two halves, as everywhere in the core:

* :func:`routing_plan` builds, once per mesh and in plain NumPy, a :class:`RoutingPlan`
  (cached on the mesh's content, with a copy on the JAX device from :func:`device_plan`):
  the active cells numbered column-major as smash numbers them, the routing levels (the
  drainage partitions 2..npar) as padded index arrays, and for every cell of every level the
  padded indices of its upstream neighbours. Index ``nac`` is the padding: gathers read it as
  0 (``mode="fill"``) and scatters drop it (``mode="drop"``), so no level needs a mask.
  Levels are padded in segments of similar width (on the 906 044-cell France mesh, 809 levels
  from 160 789 cells down to 1 fit in 7 segments and 1.8x the cells instead of 280x).
* Pure-JAX operators over plain arrays of shape ``(nac,)`` for one step
  (:func:`route_step`) or ``(time, nac)`` for a whole series (:func:`route_series`): a
  ``lax.scan`` over the levels of each segment, a vectorised update inside each level.

Routing never feeds back into the hydrology, so a run computes the runoff of all steps first
and routes the whole series afterwards. ``zero`` and ``lag0`` have no state and are linear, so
the series is swept level by level with all steps at once (``npar - 1`` sequential updates
instead of ``T * (npar - 1)``), with the same floating-point operations as step by step.
``lr`` and ``kw`` carry a state in time and scan over the steps with a level sweep inside each
step, exactly smash's order of operations. (``lr`` is linear too, but its reservoirs make each
level a recurrence in time: a parallel prefix scan would change the float32 rounding, so it
stays sequential.)

Units: runoff ``qt`` and discharge ``Q`` in m3/s; ``hlr`` in mm over the cell's upstream area
(the cell excluded); ``llr`` in minutes; ``akw``, ``bkw`` dimensionless as smash uses them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .mesh import DCOL, DROW, Mesh
from .mesh._d8 import topological_levels

#: Routing modules and their parameters (smash names, in smash's order).
ROUTING_PARAMETERS: dict[str, tuple[str, ...]] = {"zero": (), "lag0": (), "lr": ("llr",), "kw": ("akw", "bkw")}
#: Internal fluxes each routing module reports (smash names): ``qup`` in m3/s for lag0 but in mm
#: over the upstream area for lr (the reservoir's inflow depth), ``qim1j`` in m3/s for kw.
ROUTING_FLUXES: dict[str, tuple[str, ...]] = {"zero": (), "lag0": ("qup",), "lr": ("qup",), "kw": ("qim1j",)}
#: Routing modules and their states that the user can set (``kw``'s Q(t-1) always starts at 0).
ROUTING_STATES: dict[str, tuple[str, ...]] = {"zero": (), "lag0": (), "lr": ("hlr",), "kw": ()}

# D8 offsets (drow, dcol) to the downstream neighbour, smash coding 1..8 (N, NE, E, ..., NW).
# kw floors every discharge it reads at this value (m3/s), as smash does.
_KW_FLOOR = 1e-6


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


#: Plans of the meshes seen last, keyed on a digest of the mesh arrays the plan depends on:
#: ``[plan, the plan on the JAX device or None]``.
_PLAN_CACHE: "OrderedDict[bytes, list]" = OrderedDict()
_PLAN_CACHE_SIZE = 4


def _mesh_digest(mesh: Mesh) -> bytes:
    """BLAKE2 digest of every mesh field :func:`routing_plan` reads (arrays with shape and dtype)."""
    h = hashlib.blake2b(digest_size=20)
    for a in (mesh.active_cell, mesh.flwdir, mesh.dx, mesh.dy, mesh.flwacc, mesh.gauge_row, mesh.gauge_col, mesh.code):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes() if a.dtype.kind not in "OU" else "\0".join(map(str, a.ravel())).encode())
    return h.digest()


def routing_plan(mesh: Mesh) -> RoutingPlan:
    """The :class:`RoutingPlan` of a mesh, from a small cache (the last 4 meshes) or built.

    The cache key is a digest of the mesh arrays the plan depends on (``active_cell``,
    ``flwdir``, ``dx``, ``dy``, ``flwacc`` and the gauges), so a mesh rebuilt from the same
    Dataset on every :func:`hybridhydro.simulate` call reuses its plan (building it takes
    ~0.5 s on the 906 044-cell France mesh; the digest ~20 ms). The plan's arrays are
    read-only, as they are shared between calls.

    Raises
    ------
    ValueError
        As :func:`build_routing_plan`.
    """
    key = _mesh_digest(mesh)
    entry = _PLAN_CACHE.get(key)
    if entry is None:
        plan = build_routing_plan(mesh)
        for leaf in jax.tree_util.tree_leaves(plan):
            leaf.flags.writeable = False
        _PLAN_CACHE[key] = [plan, None]
        while len(_PLAN_CACHE) > _PLAN_CACHE_SIZE:
            _PLAN_CACHE.popitem(last=False)
        return plan
    _PLAN_CACHE.move_to_end(key)
    return entry[0]


def device_plan(plan: RoutingPlan) -> RoutingPlan:
    """The plan with its arrays on the default JAX device, kept with the cached plan.

    A plan of NumPy arrays handed to a jitted function is copied to the device on every call
    (~0.7 s per call on France, ~60 MB of index arrays); this copy is made once per cached
    plan (:func:`routing_plan`), or on every call for a plan that is not in the cache.
    """
    for entry in _PLAN_CACHE.values():
        if entry[0] is plan:
            if entry[1] is None:
                entry[1] = jax.device_put(plan)
            return entry[1]
    return jax.device_put(plan)


def build_routing_plan(mesh: Mesh) -> RoutingPlan:
    """Build the :class:`RoutingPlan` of a mesh (plain NumPy; :func:`routing_plan` caches it).

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


# ---------------------------------------------------------------------------------------------
# Pure-JAX operators
# ---------------------------------------------------------------------------------------------


def _gather(values, index, fill):
    """``values[..., index]`` over the last axis, ``fill`` where ``index`` is the padding ``nac``."""
    return jnp.take(values, index, axis=-1, mode="fill", fill_value=fill)


def _scatter(values, index, new):
    """``values[..., index] = new`` over the last axis, dropping the padding entries."""
    return values.at[..., index].set(new, mode="drop")


def _segment_inputs(plan: RoutingPlan, params: Mapping[str, jax.Array], names=(), dt: float = 0.0) -> list[dict]:
    """Per segment, the ``scan`` inputs of its levels: cells, upstream neighbours, and the
    routing parameters and static cell arrays gathered at the level cells ``(nlevel_s, width_s)``.

    Gathered once per run, not once per step. Padding reads 1, a harmless value (no 0/0)
    whose results are dropped by the scatter anyway.
    """
    out = []
    for cells, ups in plan.segments:
        c = jnp.asarray(cells)
        seg = {"cells": c, "ups": jnp.asarray(ups)}
        for n in names:
            seg[n] = _gather(jnp.asarray(params[n]), c, 1.0)
        if names:
            seg["upstream_area"] = _gather(jnp.asarray(plan.upstream_area), c, 1.0)
            seg["dx"] = _gather(jnp.asarray(plan.dx), c, 1.0)
        if "llr" in names:
            # lr's reservoir decay over one step, exp(-dt / llr) (llr in min), needs only the
            # parameter: computed once per run, not per step, nor stored per step for the gradient.
            seg["decay"] = jnp.exp(-dt / (60.0 * seg["llr"]))
        out.append(seg)
    return out


def _sweep(level, carry, segments: list[dict]):
    """Apply ``level(carry, inputs) -> carry`` to every level in routing order."""

    def body(c, x):
        return level(c, x), None

    for seg in segments:
        carry, _ = jax.lax.scan(body, carry, seg)
    return carry


def initial_routing_state(module: str, nac: int, hlr=None, dtype=jnp.float32) -> dict:
    """Routing state at t = 0: ``hlr`` (mm) for ``lr``, Q(t-1) = qt(t-1) = 0 for ``kw``."""
    _check_module(module)
    if module == "lr":
        h = jnp.full((nac,), 1e-6, dtype) if hlr is None else jnp.broadcast_to(jnp.asarray(hlr, dtype), (nac,))
        return {"hlr": h}
    if module == "kw":
        return {"q_prev": jnp.zeros((nac,), dtype), "qt_prev": jnp.zeros((nac,), dtype)}
    return {}


def _check_module(module: str) -> None:
    if module not in ROUTING_PARAMETERS:
        raise ValueError(f"unknown routing module {module!r}; valid: {', '.join(ROUTING_PARAMETERS)}")


def _sweep_lag0(plan: RoutingPlan, qt):
    """lag0 over any leading shape: ``Q <- qt + sum of upstream Q`` level by level."""

    def level(q, x):
        c = x["cells"]
        return _scatter(q, c, _gather(qt, c, 0.0) + _gather(q, x["ups"], 0.0).sum(-1))

    return _sweep(level, qt, _segment_inputs(plan, {}))


def _step_lr(segments: list[dict], dt: float, qt, state):
    def level(carry, x):
        q, hlr = carry
        c, area = x["cells"], x["upstream_area"]
        qup = _gather(q, x["ups"], 0.0).sum(-1)
        v = qup * dt / (1e-3 * area)  # upstream inflow as a depth over the upstream area (mm)
        h_star = _gather(hlr, c, 0.0) + v
        h_new = h_star * x["decay"]
        qc = _gather(qt, c, 0.0) + (h_star - h_new) * 1e-3 * area / dt
        return _scatter(q, c, qc), _scatter(hlr, c, h_new)

    q, hlr = _sweep(level, (qt, state["hlr"]), segments)
    return q, {"hlr": hlr}


def _step_kw(segments: list[dict], dt: float, qt, state):
    q_prev, qt_prev = state["q_prev"], state["qt_prev"]

    def level(q, x):
        c, akw, bkw = x["cells"], x["akw"], x["bkw"]
        qup = jnp.maximum(_gather(q, x["ups"], 0.0).sum(-1), _KW_FLOOR)
        qm = jnp.maximum(_gather(q_prev, c, 0.0), _KW_FLOOR)
        ql = jnp.maximum(_gather(qt, c, 0.0), _KW_FLOOR)
        qlm = jnp.maximum(_gather(qt_prev, c, 0.0), _KW_FLOOR)
        d1 = dt / x["dx"]
        # Linearised implicit Chow scheme for A = akw Q^bkw (celerity term lagged).
        d2 = akw * bkw * ((qm + qup) * 0.5) ** (bkw - 1.0)
        qc = (d1 * qup + d2 * qm + d1 * (qlm + ql) * 0.5) / (d1 + d2)
        return _scatter(q, c, qc)

    q = _sweep(level, qt, segments)
    return q, {"q_prev": q, "qt_prev": qt}


def route_step(module: str, plan: RoutingPlan, params: Mapping[str, jax.Array], qt, state: Mapping, dt: float):
    """Route one time step.

    Parameters
    ----------
    module
        ``"zero"``, ``"lag0"``, ``"lr"`` or ``"kw"``.
    plan
        The mesh's :class:`RoutingPlan`.
    params
        Routing parameters, each ``(nac,)``: ``llr`` (min) for lr, ``akw`` and ``bkw`` for kw.
    qt
        ``(nac,)`` runoff of this step (m3/s).
    state
        From :func:`initial_routing_state` or the previous call: ``hlr`` (mm) for lr,
        ``q_prev``/``qt_prev`` (m3/s) for kw, empty otherwise.
    dt
        Time step (s).

    Returns
    -------
    q, state
        ``(nac,)`` discharge at every active cell (m3/s) and the new state.
    """
    _check_module(module)
    if module == "zero":
        return qt, dict(state)
    if module == "lag0":
        return _sweep_lag0(plan, qt), dict(state)
    segments = _segment_inputs(plan, params, ROUTING_PARAMETERS[module], dt)
    return (_step_lr if module == "lr" else _step_kw)(segments, dt, qt, state)


def upstream_discharge(plan: RoutingPlan, q):
    """Sum of the discharge of each cell's upstream neighbours, over any leading shape (m3/s).

    0 at cells with no upstream cell. Vectorised over every level at once: it reads the
    routed discharge, it does not route.
    """
    out = jnp.zeros_like(q)
    for cells, ups in plan.segments:
        qup = _gather(q, jnp.asarray(ups), 0.0).sum(-1)  # (..., nlevel_s, width_s)
        out = _scatter(out, jnp.asarray(cells).ravel(), qup.reshape(q.shape[:-1] + (-1,)))
    return out


def routing_fluxes(module: str, plan: RoutingPlan, q, dt: float) -> dict:
    """The internal fluxes smash reports for a routing module (see :data:`ROUTING_FLUXES`).

    Parameters
    ----------
    q
        Routed discharge ``(..., nac)`` (m3/s), e.g. from :func:`route_series`.
    dt
        Time step (s).
    """
    _check_module(module)
    if module == "zero":
        return {}
    qup = upstream_discharge(plan, q)
    if module == "kw":
        return {"qim1j": qup}
    if module == "lr":
        area = jnp.asarray(plan.upstream_area)
        # Source cells have no upstream area: their inflow depth is 0 (and 0/0 must not reach a gradient).
        safe = jnp.where(area > 0, area, 1.0)
        qup = jnp.where(area > 0, qup * dt / (1e-3 * safe), 0.0)
    return {"qup": qup}


def checkpointed_scan(f, init, xs, every: int | None = None):
    """``jax.lax.scan(f, init, xs)``, optionally in ``jax.checkpoint``-ed chunks of ``every`` steps.

    Reverse-mode differentiation then keeps one carry per chunk and recomputes the steps inside
    a chunk, so memory grows with ``T / every + every`` instead of ``T``. Same results. A last
    partial chunk (``T`` not a multiple of ``every``) runs as a plain scan.
    """
    if every is None:
        return jax.lax.scan(f, init, xs)
    every = int(every)
    if every < 1:
        raise ValueError(f"checkpoint_every must be a positive number of steps, got {every}")
    ntime = jax.tree_util.tree_leaves(xs)[0].shape[0]
    nchunk = ntime // every
    head = jax.tree_util.tree_map(lambda x: x[: nchunk * every].reshape((nchunk, every) + x.shape[1:]), xs)
    tail = jax.tree_util.tree_map(lambda x: x[nchunk * every :], xs)

    @partial(jax.checkpoint, prevent_cse=False)  # prevent_cse is not needed under scan
    def chunk(carry, x):
        return jax.lax.scan(f, carry, x)

    carry, ys = jax.lax.scan(chunk, init, head)
    ys = jax.tree_util.tree_map(lambda y: y.reshape((nchunk * every,) + y.shape[2:]), ys)
    if ntime > nchunk * every:
        carry, ys_tail = jax.lax.scan(f, carry, tail)
        ys = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), ys, ys_tail)
    return carry, ys


def route_series(
    module: str,
    plan: RoutingPlan,
    params: Mapping[str, jax.Array],
    qt,
    state: Mapping,
    dt: float,
    checkpoint_every: int | None = None,
    return_state_series: bool = False,
):
    """Route a whole ``(time, nac)`` runoff series (m3/s).

    ``zero`` and ``lag0`` sweep the levels once with every step at once (exact: the same
    operations as step by step, only batched). ``lr`` and ``kw`` scan over time, with the
    level sweep of :func:`route_step` inside each step.

    ``checkpoint_every`` chunks the time scan of ``lr`` and ``kw`` (see :func:`checkpointed_scan`).

    Returns
    -------
    q, state
        ``(time, nac)`` discharge (m3/s) and the state after the last step.
    series
        Only with ``return_state_series``: ``{"hlr": (time, nac)}`` (mm, end of each step)
        for ``lr``, empty otherwise.
    """
    _check_module(module)
    if module in ("zero", "lag0"):
        q = qt if module == "zero" else _sweep_lag0(plan, qt)
        return (q, dict(state), {}) if return_state_series else (q, dict(state))
    segments = _segment_inputs(plan, params, ROUTING_PARAMETERS[module], dt)
    step = _step_lr if module == "lr" else _step_kw
    keep = ROUTING_STATES[module] if return_state_series else ()

    def body(s, qt_t):
        q, s = step(segments, dt, qt_t, s)
        return s, (q, {k: s[k] for k in keep})

    state, (q, series) = checkpointed_scan(body, dict(state), qt, checkpoint_every)
    return (q, state, series) if return_state_series else (q, state)
