"""Routing (zero, lag0, lr, kw): the plan's numbering and levels, mass budgets, a cell-by-cell
NumPy reference written from the spec (section 5), and finite gradients."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridhydro.mesh import Mesh, build_routing_plan, routing_plan
from hybridhydro.routing import (
    ROUTING_PARAMETERS,
    initial_routing_state,
    route_series,
    route_step,
)

DT = 3600.0
# Upstream neighbour i = 1..8 of a cell sits at (r + dr_i, c + dc_i) and drains into it iff its code is i.
_UP_DR = (1, 1, 0, -1, -1, -1, 0, 1)
_UP_DC = (0, -1, -1, -1, 0, 1, 1, 1)


def _mesh_from_codes(codes: np.ndarray, active: np.ndarray, gauges: list[tuple[int, int]], size=1000.0) -> Mesh:
    """A Mesh from hand-written D8 codes (flwacc and flwpar computed here, by brute force)."""
    nrow, ncol = codes.shape
    drow = {1: -1, 2: -1, 3: 0, 4: 1, 5: 1, 6: 1, 7: 0, 8: -1}
    dcol = {1: 0, 2: 1, 3: 1, 4: 1, 5: 0, 6: -1, 7: -1, 8: -1}
    acc = np.zeros((nrow, ncol))
    par = np.ones((nrow, ncol), dtype=np.int32)
    for r in range(nrow):
        for c in range(ncol):
            rr, cc, depth = r, c, 1
            acc[r, c] += 1
            while codes[rr, cc] > 0 and depth <= nrow * ncol:  # the bound stops on loops
                nr, nc = rr + drow[int(codes[rr, cc])], cc + dcol[int(codes[rr, cc])]
                if not (0 <= nr < nrow and 0 <= nc < ncol):
                    break
                rr, cc, depth = nr, nc, depth + 1
                acc[rr, cc] += 1
                par[rr, cc] = max(par[rr, cc], depth)
    g = np.array(gauges, dtype=np.int32).reshape(-1, 2)
    return Mesh(
        flwdir=codes.astype(np.int8),
        active_cell=active.astype(bool),
        dx=np.full((nrow, ncol), size, np.float32),
        dy=np.full((nrow, ncol), size, np.float32),
        flwacc=(acc * size * size).astype(np.float32),
        flwdst=np.zeros((nrow, ncol), np.float32),
        flwpar=par,
        xmin=0.0,
        ymax=0.0,
        xres=size,
        yres=size,
        epsg=0,
        gauge_row=g[:, 0],
        gauge_col=g[:, 1],
        code=np.array([f"g{i}" for i in range(len(g))]),
        gauge_x=np.zeros(len(g)),
        gauge_y=np.zeros(len(g)),
        area=np.zeros(len(g), np.float32),
        area_dln=np.zeros(len(g), np.float32),
    )


@pytest.fixture(scope="module")
def basin_mesh() -> Mesh:
    """The Cance mesh (383 cells, 31 partitions, 3 nested gauges; read without importing smash)."""
    from hybridhydro.io import read_smash_dataset

    return Mesh.from_dataset(read_smash_dataset("Cance", "2014-09-15 00:00", "2014-09-15 01:00", progress=False))


def _reference(module: str, mesh: Mesh, qt_series: np.ndarray, params: dict, dt: float):
    """Cell-by-cell routing, in smash's partition order, written from the spec (float64)."""
    rows, cols = np.nonzero(mesh.active_cell.T)[::-1]  # column-major numbering
    index = -np.ones(mesh.flwdir.shape, dtype=int)
    index[rows, cols] = np.arange(rows.size)
    order = [(r, c) for r, c in mesh.cpar_to_rowcol if mesh.active_cell[r, c] and mesh.flwpar[r, c] > 1]
    nrow, ncol = mesh.flwdir.shape
    area_up = mesh.flwacc.astype(float) - mesh.dx.astype(float) * mesh.dy
    hlr = np.full(rows.size, 1e-6)
    q_prev, qt_prev = np.zeros(rows.size), np.zeros(rows.size)
    out = []
    for qt in qt_series.astype(float):
        q = qt.copy()
        for r, c in order:
            k = index[r, c]
            qup = 0.0
            for i in range(8):
                rr, cc = r + _UP_DR[i], c + _UP_DC[i]
                if 0 <= rr < nrow and 0 <= cc < ncol and mesh.flwdir[rr, cc] == i + 1 and index[rr, cc] >= 0:
                    qup += q[index[rr, cc]]
            if module == "lag0":
                q[k] = qt[k] + qup
            elif module == "lr":
                a = area_up[r, c]
                h_star = hlr[k] + qup * dt / (1e-3 * a)
                hlr[k] = h_star * np.exp(-dt / (60.0 * params["llr"][k]))
                q[k] = qt[k] + (h_star - hlr[k]) * 1e-3 * a / dt
            elif module == "kw":
                qup, qm = max(qup, 1e-6), max(q_prev[k], 1e-6)
                ql, qlm = max(qt[k], 1e-6), max(qt_prev[k], 1e-6)
                d1 = dt / mesh.dx[r, c]
                akw, bkw = params["akw"][k], params["bkw"][k]
                d2 = akw * bkw * ((qm + qup) / 2) ** (bkw - 1)
                q[k] = (d1 * qup + d2 * qm + d1 * (qlm + ql) / 2) / (d1 + d2)
        q_prev, qt_prev = q, qt
        out.append(q)
    return np.array(out), hlr


def _runoff(nt: int, nac: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    storm = np.exp(-0.5 * ((np.arange(nt) - nt / 3) / 3.0) ** 2)[:, None]
    return (rng.uniform(0.0, 0.2, (nt, nac)) * (0.05 + storm)).astype(np.float32)


def _random_params(nac: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "llr": rng.uniform(5.0, 300.0, nac).astype(np.float32),
        "akw": rng.uniform(0.5, 20.0, nac).astype(np.float32),
        "bkw": rng.uniform(0.2, 0.9, nac).astype(np.float32),
    }


# ------------------------------------------------------------------------------- the plan


def test_plan_numbers_cells_column_major_and_orders_levels():
    # 3 x 3, everything drains to the bottom-middle cell, which drains south out of the grid.
    codes = np.array([[4, 5, 6], [3, 5, 7], [2, 5, 8]])
    codes[2] = [3, 5, 7]
    mesh = _mesh_from_codes(codes, np.ones((3, 3), bool), [(2, 1)])
    plan = routing_plan(mesh)
    assert list(zip(plan.rows, plan.cols)) == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 2)]
    assert plan.gauge_index.tolist() == [5]
    # levels: (1,1) after (0,0), (0,1), (0,2), (1,0), (1,2); then the outlet
    levels = plan.levels()
    assert [c.tolist() for c, _ in levels] == [[4], [5]]
    assert [u.tolist() for u in levels[0][1]] == [[0, 1, 3, 6, 7]]
    assert [u.tolist() for u in levels[1][1]] == [[2, 4, 8]]
    assert np.allclose(plan.upstream_area, mesh.flwacc[plan.rows, plan.cols] - 1e6)


@pytest.mark.smash
def test_plan_levels_are_a_topological_order_matching_flwpar(basin_mesh):
    mesh = basin_mesh
    plan = routing_plan(mesh)
    nac = plan.nac
    assert nac == mesh.nac
    levels = plan.levels()
    assert len(levels) == plan.nlevel == mesh.npar - 1
    level = np.ones(nac, dtype=int)
    for i, (cells, _) in enumerate(levels):
        level[cells] = i + 2
    # each active cell appears at most once over all levels, in column-major order within a level
    listed = np.concatenate([c for c, _ in levels])
    assert listed.size == np.unique(listed).size
    assert all(np.all(np.diff(c) > 0) for c, _ in levels)
    np.testing.assert_array_equal(level, mesh.flwpar[plan.rows, plan.cols])
    for i, (cells, ups) in enumerate(levels):
        for u in ups:
            assert u.size > 0 and np.all(level[u] < i + 2)
    # every upstream relation of the mesh is listed once
    n_links = sum(u.size for _, ups in levels for u in ups)
    drains_inside = 0
    index = plan.cell_index(mesh.nrow, mesh.ncol)
    from hybridhydro.mesh import DCOL, DROW

    for r, c in zip(plan.rows, plan.cols):
        rr, cc = r + DROW[mesh.flwdir[r, c]], c + DCOL[mesh.flwdir[r, c]]
        drains_inside += 0 <= rr < mesh.nrow and 0 <= cc < mesh.ncol and index[rr, cc] >= 0
    assert n_links == drains_inside


def test_levels_are_grouped_into_segments_of_similar_width():
    from hybridhydro.mesh._plan import _segment_levels

    widths = [1000, 500, 300, 200, 100, 50, 30, 20, 10, 5, 3, 2, 1, 1, 6]
    groups = _segment_levels(widths)
    assert sum(groups, []) == list(range(len(widths)))
    for g in groups:
        w = [widths[i] for i in g]
        assert max(w) <= 4 * min(w) or max(w) <= 64
    assert groups == [[0, 1, 2], [3, 4, 5], list(range(6, 15))]


def test_plan_errors_name_the_cell():
    codes = np.array([[5, 0], [1, 0]])  # two cells pointing at each other
    with pytest.raises(ValueError, match=r"loop through \(row 0, col 0\)"):
        routing_plan(_mesh_from_codes(codes, np.array([[1, 0], [1, 0]]), [(1, 0)]))
    codes = np.array([[5, 0], [5, 0]])
    with pytest.raises(ValueError, match=r"gauge g0 at \(row 0, col 1\) is not an active cell"):
        routing_plan(_mesh_from_codes(codes, np.array([[1, 0], [1, 0]]), [(0, 1)]))
    with pytest.raises(ValueError, match="valid: zero, lag0, lr, kw"):
        plan = routing_plan(_mesh_from_codes(codes, np.array([[1, 0], [1, 0]]), [(1, 0)]))
        route_step("lag1", plan, {}, jnp.zeros(2), {}, DT)


@pytest.mark.smash
def test_plan_is_read_only_and_routes_the_same_on_the_device(basin_mesh):
    import dataclasses

    plan = routing_plan(basin_mesh)
    assert not plan.rows.flags.writeable  # a plan may be shared by many runs: read-only
    fresh = build_routing_plan(basin_mesh)
    for a, b in zip(jax.tree_util.tree_leaves(plan), jax.tree_util.tree_leaves(fresh)):
        np.testing.assert_array_equal(a, b)
    # another cell size is another plan
    other = routing_plan(dataclasses.replace(basin_mesh, dx=basin_mesh.dx * 2))
    assert not np.array_equal(other.dx, plan.dx)
    # the plan copied to the device routes identically
    qt = jnp.asarray(_runoff(12, plan.nac))
    params = {"llr": jnp.asarray(_random_params(plan.nac)["llr"])}
    state = initial_routing_state("lr", plan.nac)
    a, _ = jax.jit(lambda p: route_series("lr", p, params, qt, state, DT))(plan)
    b, _ = jax.jit(lambda p: route_series("lr", p, params, qt, state, DT))(jax.device_put(plan))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.smash
def test_to_cells_gathers_the_active_cells(basin_mesh):
    plan = routing_plan(basin_mesh)
    grid = np.random.default_rng(0).normal(size=(3, basin_mesh.nrow, basin_mesh.ncol))
    np.testing.assert_array_equal(plan.to_cells(grid), grid[:, plan.rows, plan.cols])
    cells32 = plan.to_cells(grid, dtype=np.float32)
    assert cells32.dtype == np.float32
    np.testing.assert_array_equal(cells32, grid[:, plan.rows, plan.cols].astype(np.float32))
    back = plan.to_grid(plan.to_cells(grid[0]), *grid.shape[1:])
    np.testing.assert_array_equal(back[plan.rows, plan.cols], grid[0, plan.rows, plan.cols])


# ------------------------------------------------------------------------------- budgets


@pytest.mark.smash
def test_zero_returns_the_runoff(basin_mesh):
    plan = routing_plan(basin_mesh)
    qt = _runoff(5, plan.nac)
    q, _ = route_series("zero", plan, {}, jnp.asarray(qt), {}, DT)
    np.testing.assert_array_equal(np.asarray(q), qt)


@pytest.mark.smash
def test_lag0_outlet_receives_all_runoff_at_each_step(basin_mesh):
    plan = routing_plan(basin_mesh)
    qt = _runoff(30, plan.nac)
    q, _ = route_series("lag0", plan, {}, jnp.asarray(qt), {}, DT)
    outlet = np.asarray(q)[:, plan.gauge_index[0]]
    np.testing.assert_allclose(outlet, qt.astype(np.float64).sum(axis=1), rtol=2e-6)
    # step by step gives the same series
    step = jax.jit(lambda x: route_step("lag0", plan, {}, x, {}, DT)[0])
    stepped = np.stack([np.asarray(step(jnp.asarray(x))) for x in qt])
    np.testing.assert_allclose(stepped, np.asarray(q), rtol=1e-6)


@pytest.mark.smash
def test_lr_storage_budget_closes(basin_mesh):
    plan = routing_plan(basin_mesh)
    nt = 40
    qt = _runoff(nt, plan.nac)
    params = {k: jnp.asarray(v) for k, v in _random_params(plan.nac).items()}
    state = initial_routing_state("lr", plan.nac)
    volume = lambda s: float(np.sum(np.asarray(s["hlr"], np.float64) * 1e-3 * plan.upstream_area))  # noqa: E731
    step = jax.jit(lambda x, s: route_step("lr", plan, params, x, s, DT))
    for x in qt:
        v0 = volume(state)
        q, state = step(jnp.asarray(x), state)
        inflow = float(x.astype(np.float64).sum()) * DT
        outflow = float(np.asarray(q, np.float64)[plan.gauge_index[0]]) * DT
        assert inflow - outflow == pytest.approx(volume(state) - v0, rel=1e-4, abs=1e-3 * inflow + 1.0)
    # the reservoirs delay the flood: something is still stored at the end
    assert volume(state) > 0


@pytest.mark.smash
def test_kw_sanity_positive_and_steady_state_is_lag0(basin_mesh):
    plan = routing_plan(basin_mesh)
    params = {k: jnp.asarray(v) for k, v in _random_params(plan.nac).items()}
    qt = _runoff(30, plan.nac)
    q, _ = route_series("kw", plan, params, jnp.asarray(qt), initial_routing_state("kw", plan.nac), DT)
    q = np.asarray(q)
    assert np.all(np.isfinite(q)) and np.all(q > 0)
    sources = np.setdiff1d(np.arange(plan.nac), np.concatenate([c for c, _ in plan.levels()]))
    np.testing.assert_array_equal(q[:, sources], qt[:, sources])  # partition 1 is not routed
    # constant runoff for long enough: Q = Qup + qt everywhere, the lag0 answer
    const = np.tile(qt[10], (400, 1))
    qk, _ = route_series("kw", plan, params, jnp.asarray(const), initial_routing_state("kw", plan.nac), DT)
    ql, _ = route_series("lag0", plan, {}, jnp.asarray(const[:1]), {}, DT)
    np.testing.assert_allclose(np.asarray(qk)[-1], np.asarray(ql)[0], rtol=1e-3)


@pytest.mark.smash
@pytest.mark.parametrize("module", ["lag0", "lr", "kw"])
def test_matches_cell_by_cell_reference(basin_mesh, module):
    mesh = basin_mesh
    plan = routing_plan(mesh)
    qt = _runoff(25, plan.nac, seed=4)
    params = _random_params(plan.nac, seed=5)
    ref, ref_hlr = _reference(module, mesh, qt, params, DT)
    state = initial_routing_state(module, plan.nac)
    q, state = route_series(module, plan, {k: jnp.asarray(v) for k, v in params.items()}, jnp.asarray(qt), state, DT)
    np.testing.assert_allclose(np.asarray(q), ref, rtol=2e-5, atol=1e-6 * ref.max())
    if module == "lr":
        np.testing.assert_allclose(np.asarray(state["hlr"]), ref_hlr, rtol=2e-5, atol=1e-6)


@pytest.mark.smash
@pytest.mark.parametrize("module", ["lr", "kw"])
def test_gradients_wrt_routing_parameters_are_finite(basin_mesh, module):
    plan = routing_plan(basin_mesh)
    qt = jnp.asarray(_runoff(20, plan.nac))
    params = {k: jnp.asarray(v) for k, v in _random_params(plan.nac).items()}
    state = initial_routing_state(module, plan.nac)

    def outlet_total(p):
        q, _ = route_series(module, plan, p, qt, state, DT)
        return q[:, plan.gauge_index[0]].sum()

    grads = jax.jit(jax.grad(outlet_total))(params)
    names = ("llr",) if module == "lr" else ("akw", "bkw")
    for name in names:
        g = np.asarray(grads[name])
        assert np.all(np.isfinite(g)), name
        assert np.any(g != 0), name


@pytest.mark.smash
@pytest.mark.parametrize("module", ["lr", "kw"])
def test_gradients_match_finite_differences_in_float64(basin_mesh, module):
    plan = routing_plan(basin_mesh)
    rng = np.random.default_rng(7)
    with jax.enable_x64(True):
        qt = jnp.asarray(_runoff(15, plan.nac), jnp.float64)
        params = {k: jnp.asarray(v, jnp.float64) for k, v in _random_params(plan.nac).items()}
        state = initial_routing_state(module, plan.nac, dtype=jnp.float64)

        @jax.jit
        def outlet_total(p):
            q, _ = route_series(module, plan, p, qt, state, DT)
            return q[:, plan.gauge_index[0]].sum()

        grads = jax.jit(jax.grad(outlet_total))(params)
        for name in ROUTING_PARAMETERS[module]:
            d = jnp.asarray(rng.uniform(0.5, 1.5, plan.nac))
            eps = 1e-4 * float(jnp.mean(params[name]))
            up = outlet_total({**params, name: params[name] + eps * d})
            down = outlet_total({**params, name: params[name] - eps * d})
            fd = float(up - down) / (2 * eps)
            assert float(jnp.dot(grads[name], d)) == pytest.approx(fd, rel=1e-5, abs=1e-9), name


# --------------------------------------------------- lr's hand-written adjoint (custom VJP)


def _lr_case(plan, nt, dtype, seed=11):
    rng = np.random.default_rng(seed)
    qt = jnp.asarray(_runoff(nt, plan.nac, seed=seed), dtype)
    llr = jnp.asarray(_random_params(plan.nac, seed=seed + 1)["llr"], dtype)
    hlr = jnp.asarray(rng.uniform(0.0, 5.0, plan.nac), dtype)
    # Random weights on every output, so every cotangent path of the adjoint is exercised.
    w_q = jnp.asarray(rng.uniform(0.0, 1.0, (nt, plan.nac)), dtype)
    w_h = jnp.asarray(rng.uniform(0.0, 1.0, plan.nac), dtype)
    w_s = jnp.asarray(rng.uniform(0.0, 1.0, (nt, plan.nac)), dtype)
    return qt, llr, hlr, (w_q, w_h, w_s)


def _lr_loss(plan, weights, adjoint, every, keep):
    w_q, w_h, w_s = weights

    def loss(qt, llr, hlr):
        out = route_series("lr", plan, {"llr": llr}, qt, {"hlr": hlr}, DT, every, keep, adjoint=adjoint)
        total = jnp.sum(out[0] * w_q) + jnp.sum(out[1]["hlr"] * w_h)
        return total + jnp.sum(out[2]["hlr"] * w_s) if keep else total

    return loss


@pytest.mark.smash
@pytest.mark.parametrize(
    ("every", "keep"),
    [(None, False), pytest.param(None, True, marks=pytest.mark.slow), pytest.param(7, True, marks=pytest.mark.slow),
     pytest.param(40, False, marks=pytest.mark.slow)],
)
def test_lr_adjoint_matches_autodiff_in_float32(basin_mesh, every, keep):
    """The custom VJP of lr: forward bit-identical to the autodiff path; the gradients w.r.t.
    the runoff, llr and the initial hlr equal JAX's own reverse mode to float32 rounding (max
    difference below 1e-5 of the largest component; measured ~1e-6), with and without
    checkpoint_every (7 leaves a partial last chunk of 30 steps; 40 is longer than the run)
    and with the hlr series as an output."""
    plan = routing_plan(basin_mesh)
    qt, llr, hlr, weights = _lr_case(plan, 30, jnp.float32)
    new = jax.jit(jax.value_and_grad(_lr_loss(plan, weights, True, every, keep), argnums=(0, 1, 2)))
    old = jax.jit(jax.value_and_grad(_lr_loss(plan, weights, False, every, keep), argnums=(0, 1, 2)))
    (v_new, g_new), (v_old, g_old) = new(qt, llr, hlr), old(qt, llr, hlr)
    assert float(v_new) == float(v_old)  # the same forward operations
    for name, a, b in zip(("qt", "llr", "hlr"), g_new, g_old):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype == np.float32, name
        assert np.all(np.isfinite(a)) and np.any(a != 0), name
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max(), err_msg=name)


@pytest.mark.smash
def test_lr_adjoint_forward_is_bit_identical(basin_mesh):
    plan = routing_plan(basin_mesh)
    qt, llr, hlr, _ = _lr_case(plan, 30, jnp.float32)
    for every in (None, 7):
        def run(q, p, h, adjoint):
            return route_series("lr", plan, {"llr": p}, q, {"hlr": h}, DT, every, True, adjoint=adjoint)

        outs = [jax.jit(partial(run, adjoint=a))(qt, llr, hlr) for a in (True, False)]
        for x, y in zip(jax.tree_util.tree_leaves(outs[0]), jax.tree_util.tree_leaves(outs[1])):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.smash
@pytest.mark.parametrize("every", [None, pytest.param(7, marks=pytest.mark.slow)])
def test_lr_adjoint_matches_autodiff_and_finite_differences_in_float64(basin_mesh, every):
    """In float64 the custom VJP equals JAX's reverse mode to 1e-12 and a central finite
    difference along a random direction in (qt, llr, hlr) to 1e-6."""
    plan = routing_plan(basin_mesh)
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        qt, llr, hlr, weights = _lr_case(plan, 25, jnp.float64)
        loss = jax.jit(_lr_loss(plan, weights, True, every, True))
        g_new = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(qt, llr, hlr)
        g_old = jax.jit(jax.grad(_lr_loss(plan, weights, False, every, True), argnums=(0, 1, 2)))(qt, llr, hlr)
        for a, b in zip(g_new, g_old):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12 * np.abs(np.asarray(b)).max())
        x = (qt, llr, hlr)
        v = tuple(jnp.asarray(rng.uniform(0.5, 1.5, a.shape)) * (1e-4 * jnp.mean(a)) for a in x)
        up = loss(*(a + b for a, b in zip(x, v)))
        down = loss(*(a - b for a, b in zip(x, v)))
        fd = float(up - down) / 2.0
        ad = sum(float(jnp.vdot(g, d)) for g, d in zip(g_new, v))
        assert ad == pytest.approx(fd, rel=1e-6)


@pytest.mark.smash
def test_lr_forward_mode_needs_the_autodiff_path(basin_mesh):
    """The custom VJP is reverse mode only: jax.jvp raises through it, and works with adjoint=False."""
    plan = routing_plan(basin_mesh)
    qt, llr, hlr, _ = _lr_case(plan, 10, jnp.float32)

    def f(adjoint):
        return lambda p: route_series("lr", plan, {"llr": p}, qt, {"hlr": hlr}, DT, adjoint=adjoint)[0]

    _, tangent = jax.jvp(f(False), (llr,), (jnp.ones_like(llr),))
    assert np.all(np.isfinite(np.asarray(tangent))) and np.any(np.asarray(tangent) != 0)
    with pytest.raises(TypeError):
        jax.jvp(f(True), (llr,), (jnp.ones_like(llr),))
