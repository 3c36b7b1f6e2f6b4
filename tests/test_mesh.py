"""The mesh: equivalence with smash's ``generate_mesh``, mesh invariants, and the small public helpers.

smash is used only as an oracle (its public API, called here); the tests marked ``smash`` need it.
"""

from __future__ import annotations

import warnings
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hybridhydro.mesh import (
    DCOL,
    DROW,
    Mesh,
    build_mesh,
    build_mesh_from_raster,
    cell_sizes,
    detect_sink,
    from_esri,
    read_flwdir,
    to_pyflwdir,
    validate_flwdir,
)

# --------------------------------------------------------------------------- helpers


def write_tif(path, codes, *, xmin=0.0, ymax=None, res=1000.0, epsg=2154, nodata=-99, dtype="int32"):
    """A north-up GeoTIFF of ``codes`` (cells ``res`` wide)."""
    codes = np.asarray(codes)
    ymax = codes.shape[0] * res if ymax is None else ymax
    with rasterio.open(
        path, "w", driver="GTiff", height=codes.shape[0], width=codes.shape[1], count=1, dtype=dtype,
        crs=f"EPSG:{epsg}", transform=Affine(res, 0.0, xmin, 0.0, -res, ymax), nodata=nodata,
    ) as ds:
        ds.write(codes.astype(dtype), 1)
    return str(path)


def dem_flwdir(rng, nrow, ncol, *, nodata_fraction=0.0, outflow=True):
    """Acyclic D8 codes: steepest descent on a random tilted surface (0 = no data / pit)."""
    z = rng.random((nrow, ncol)) + rng.uniform(-2, 2) * np.linspace(0, 1, ncol)[None, :]
    z = z + rng.uniform(-2, 2) * np.linspace(0, 1, nrow)[:, None]
    pad = np.full((nrow + 2, ncol + 2), z.min() - 1.0 if outflow else np.inf)
    pad[1:-1, 1:-1] = z
    best, code = np.zeros((nrow, ncol)), np.zeros((nrow, ncol), dtype=np.int64)
    for k in range(1, 9):
        nb = pad[1 + DROW[k] : 1 + DROW[k] + nrow, 1 + DCOL[k] : 1 + DCOL[k] + ncol]
        drop = (z - nb) / (np.sqrt(2.0) if k % 2 == 0 else 1.0)
        take = drop > best
        best, code = np.where(take, drop, best), np.where(take, k, code)
    code[rng.random((nrow, ncol)) < nodata_fraction] = 0
    return code


def upstream_cells(codes, r, c):
    """Cells draining to (r, c), by breadth-first search (reference implementation)."""
    nrow, ncol = codes.shape
    seen, todo = {(r, c)}, deque([(r, c)])
    while todo:
        a, b = todo.popleft()
        for k in range(1, 9):
            ua, ub = a - DROW[k], b - DCOL[k]
            if 0 <= ua < nrow and 0 <= ub < ncol and codes[ua, ub] == k and (ua, ub) not in seen:
                seen.add((ua, ub))
                todo.append((ua, ub))
    return seen


def downstream_of(codes, r, c):
    k = int(codes[r, c])
    if k <= 0:
        return None
    r2, c2 = r + DROW[k], c + DCOL[k]
    return (r2, c2) if 0 <= r2 < codes.shape[0] and 0 <= c2 < codes.shape[1] else None


def smash_dict_arrays(s):
    """smash's mesh dict with masked arrays replaced by their underlying data."""
    return {k: (np.asarray(v.data) if isinstance(v, np.ma.MaskedArray) else v) for k, v in s.items()}


def assert_matches_smash(m: Mesh, s: dict, *, rtol: float = 0.0) -> dict:
    """Compare every field with a smash mesh dict; return the max differences found."""
    s = smash_dict_arrays(s)
    assert (m.nrow, m.ncol) == (int(s["nrow"]), int(s["ncol"]))
    assert m.xmin == pytest.approx(float(s["xmin"])) and m.ymax == pytest.approx(float(s["ymax"]))
    assert m.xres == float(s["xres"]) and m.yres == float(s["yres"])
    active = np.asarray(s["active_cell"]).astype(bool)
    np.testing.assert_array_equal(m.active_cell, active)
    assert m.nac == int(s["nac"])
    fd = np.asarray(s["flwdir"])
    np.testing.assert_array_equal(m.flwdir, np.where(fd > 0, fd, 0))
    diffs = {}
    for name in ("dx", "dy", "flwacc"):
        ours, theirs = getattr(m, name), np.asarray(s[name])
        diffs[name] = float(np.max(np.abs(ours.astype(np.float64) - theirs))) if ours.size else 0.0
        if rtol == 0:
            np.testing.assert_array_equal(ours, theirs, err_msg=name)
        else:
            np.testing.assert_allclose(ours, theirs, rtol=rtol, err_msg=name)
    np.testing.assert_array_equal(m.flwpar, np.asarray(s["flwpar"]))
    assert m.npar == int(s["npar"])
    np.testing.assert_array_equal(m.ncpar, s["ncpar"])
    np.testing.assert_array_equal(m.cscpar, s["cscpar"])
    np.testing.assert_array_equal(m.cpar_to_rowcol, s["cpar_to_rowcol"])
    assert m.ng == int(s["ng"])
    if "gauge_pos" in s:
        np.testing.assert_array_equal(np.stack([m.gauge_row, m.gauge_col], axis=1), s["gauge_pos"])
        assert list(m.code) == list(s["code"])
        np.testing.assert_array_equal(m.area, s["area"])
        np.testing.assert_allclose(m.area_dln, s["area_dln"], rtol=rtol)
        diffs["area_dln"] = float(np.max(np.abs(m.area_dln.astype(np.float64) - s["area_dln"])))
        theirs = np.asarray(s["flwdst"])
        net = theirs != -99
        np.testing.assert_array_equal(np.isfinite(m.flwdst), net)
        np.testing.assert_allclose(m.flwdst[net], theirs[net], rtol=max(rtol, 1e-6))
        diffs["flwdst"] = float(np.max(np.abs(m.flwdst[net] - theirs[net]), initial=0.0))
    return diffs


def check_invariants(m: Mesh) -> None:
    """Properties every mesh must satisfy, checked against plain reference computations."""
    codes = m.flwdir.astype(np.int64)
    nrow, ncol = codes.shape
    ups = {(r, c): [] for r in range(nrow) for c in range(ncol)}
    for r in range(nrow):
        for c in range(ncol):
            d = downstream_of(codes, r, c)
            if d is not None:
                ups[d].append((r, c))
    for (r, c), us in ups.items():
        # accumulation: own area plus upstream accumulations (float32 sums)
        expect = float(m.dx[r, c]) * float(m.dy[r, c]) + sum(float(m.flwacc[u]) for u in us)
        assert m.flwacc[r, c] == pytest.approx(expect, rel=1e-5)
        # partitions: 1 + longest upstream partition
        assert m.flwpar[r, c] == (1 + max(int(m.flwpar[u]) for u in us) if us else 1)
    # active cells = union of the gauges' upstream areas, each gauge active and its area = flwacc there
    union = set()
    for g in range(m.ng):
        cells = upstream_cells(codes, int(m.gauge_row[g]), int(m.gauge_col[g]))
        union |= cells
        assert m.area_dln[g] == pytest.approx(float(m.flwacc[m.gauge_row[g], m.gauge_col[g]]), rel=1e-5)
    if m.ng:
        expect = np.zeros((nrow, ncol), dtype=bool)
        expect[tuple(np.array(sorted(union)).T)] = True
        np.testing.assert_array_equal(m.active_cell, expect)
        # the crop is the bounding box of the active cells
        a = m.active_cell
        assert a[0].any() and a[-1].any() and a[:, 0].any() and a[:, -1].any()
        # flow distance: 0 at the root outlets (nothing active downstream), one step more per cell
        # upstream (dy N/S, dx E/W, diagonal otherwise, at the downstream cell), NaN off the network
        assert np.isnan(m.flwdst[~m.active_cell]).all() and np.isfinite(m.flwdst[m.active_cell]).all()
        gauges = set(zip(m.gauge_row.tolist(), m.gauge_col.tolist()))
        for r, c in zip(*np.nonzero(m.active_cell)):
            d = downstream_of(codes, r, c)
            if d is None or not m.active_cell[d]:
                assert (r, c) in gauges and m.flwdst[r, c] == 0.0
                continue
            k = codes[r, c]
            step = m.dy[d] if k in (1, 5) else m.dx[d] if k in (3, 7) else np.hypot(m.dx[d], m.dy[d])
            assert m.flwdst[r, c] == pytest.approx(float(m.flwdst[d]) + float(step), rel=1e-5)
    # partitions bookkeeping over the whole cropped grid
    assert m.ncpar.sum() == nrow * ncol and m.cscpar[0] == 0
    rc = m.cpar_to_rowcol
    par_seq = m.flwpar[rc[:, 0], rc[:, 1]]
    assert (np.diff(par_seq) >= 0).all()
    for p in range(m.npar):
        block = rc[m.cscpar[p] : m.cscpar[p] + m.ncpar[p]]
        assert (m.flwpar[block[:, 0], block[:, 1]] == p + 1).all()
        key = block[:, 1] * nrow + block[:, 0]  # column-major within a partition
        assert (np.diff(key) > 0).all()


# --------------------------------------------------------------------------- smash fixtures

smash = None
try:  # the oracle is optional: tests marked "smash" skip without it
    import smash  # noqa: F811
except ImportError:  # pragma: no cover
    pass

needs_smash = pytest.mark.skipif(smash is None, reason="hydro-smash (the reference oracle) is not installed")


@pytest.fixture(scope="module")
def france_flwdir():
    return smash.factory.load_dataset("flwdir")


def gauges_of(name):
    """Gauges of a bundled dataset (``"Cance+Lez"`` joins two), area in m2."""
    import pandas as pd

    folder = Path(smash.__file__).parent / "factory" / "dataset"
    g = pd.concat([pd.read_csv(folder / n / "gauge_attributes.csv") for n in name.split("+")])
    return dict(
        x=g["x"].to_numpy(float), y=g["y"].to_numpy(float), area=g["area"].to_numpy(float) * 1e6,
        code=[str(c) for c in g["code"]],
    )


def smash_mesh(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return smash.factory.generate_mesh(path, **kwargs)


# --------------------------------------------------------------------------- equivalence with smash


@pytest.mark.smash
@needs_smash
@pytest.mark.parametrize("name", ["Cance", "Lez", "Cance+Lez"])
def test_real_catchments_match_generate_mesh(name, france_flwdir):
    kwargs = gauges_of(name)
    ours = build_mesh_from_raster(france_flwdir, **kwargs)
    diffs = assert_matches_smash(ours, smash_mesh(france_flwdir, **kwargs))
    assert diffs["flwacc"] == 0.0 and diffs["area_dln"] == 0.0 and diffs["flwdst"] == 0.0
    check_invariants(ours)


@pytest.mark.smash
@needs_smash
@pytest.mark.parametrize("name", ["Cance", "Lez"])
def test_real_catchments_match_the_bundled_meshes(name, france_flwdir):
    _, bundled = smash.factory.load_dataset(name)
    ours = build_mesh_from_raster(france_flwdir, **gauges_of(name))
    assert_matches_smash(ours, bundled)
    assert ours.epsg == int(bundled["epsg"]) == 2154


@pytest.mark.smash
@needs_smash
def test_france_bbox_matches_the_bundled_mesh_and_is_fast(france_flwdir):
    import time

    t0 = time.perf_counter()
    ours = build_mesh_from_raster(france_flwdir, bbox=(100_000, 1_250_000, 6_050_000, 7_125_000))
    elapsed = time.perf_counter() - t0
    _, bundled = smash.factory.load_dataset("France")
    assert (ours.xmin, ours.ymax, ours.nrow, ours.ncol, ours.nac) == (100_000, 7_125_000, 1075, 1150, 906_044)
    # float32 accumulations are reproduced bit for bit, up to 1.4e11 m2
    assert_matches_smash(ours, bundled)
    assert np.isnan(ours.flwdst).all() and ours.ng == 0
    assert elapsed < 10.0, f"France bbox mesh took {elapsed:.1f} s"


@pytest.mark.smash
@needs_smash
def test_geographic_grid_matches_generate_mesh(tmp_path):
    # 0.01 degree cells around 46 N: dx shrinks with latitude, dy is constant
    rng = np.random.default_rng(5)
    codes = dem_flwdir(rng, 30, 25)
    codes[codes == 0] = -99
    codes[-1, :] = codes[:, -1] = -99
    path = write_tif(tmp_path / "geo.tif", codes, xmin=3.0, ymax=46.0, res=0.01, epsg=4326)
    rows, cols = np.nonzero(codes[:-1, :-1] > 0)
    acc = np.array([len(upstream_cells(codes, r, c)) for r, c in zip(rows, cols)])
    pick = np.argsort(acc)[::-1][[0, 3, 10]]
    r, c = rows[pick], cols[pick]
    dx, dy = cell_sizes(30, 25, ymax=46.0, xres=0.01, yres=0.01, geographic=True)
    kwargs = dict(x=3.0 + (c + 0.5) * 0.01, y=46.0 - (r + 0.5) * 0.01, area=acc[pick] * float(dx[r[0], 0] * dy[0, 0]))
    ours = build_mesh_from_raster(path, **kwargs)
    assert (np.diff(ours.dx[:, 0]) > 0).all() and np.ptp(ours.dy) == 0  # row 0 is the northernmost
    # smash accumulates the row latitude in float32 (error ~3e-5 degree here); ours is exact:
    # dx, and so areas, agree to about 1e-6
    diffs = assert_matches_smash(ours, smash_mesh(path, **kwargs), rtol=1e-5)
    assert diffs["dx"] < 1e-3  # metres
    check_invariants(ours)


def smash_search_box_truncates(codes, r, c, area_cells, max_depth):
    """Whether smash's delineation box changes the area of a candidate outlet (see Notes in build_mesh)."""
    nrow, ncol = codes.shape
    k = int(np.ceil(area_cells))
    for rr in range(max(0, r - max_depth), min(r + max_depth, nrow - 2) + 1):
        for cc in range(max(0, c - max_depth), min(c + max_depth, ncol - 2) + 1):
            if codes[rr, cc] <= 0:
                continue
            cells = upstream_cells(codes, rr, cc)
            rows = range(max(0, rr - k), min(rr + k, nrow - 1))  # the end is exclusive: smash's off-by-one
            cols = range(max(0, cc - k), min(cc + k, ncol - 1))
            inside = {(a, b) for a, b in cells if a in rows and b in cols}
            # the box keeps only cells whose whole path lies inside: compare with a box-restricted search
            restricted, todo = {(rr, cc)}, deque([(rr, cc)])
            while todo:
                a, b = todo.popleft()
                for kk in range(1, 9):
                    ua, ub = a - DROW[kk], b - DCOL[kk]
                    if (ua, ub) in inside and codes[ua, ub] == kk and (ua, ub) not in restricted:
                        restricted.add((ua, ub))
                        todo.append((ua, ub))
            if len(restricted) != len(cells):
                return True
    return False


@pytest.mark.smash
@needs_smash
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(
    seed=st.integers(0, 2**31 - 1),
    nrow=st.integers(6, 14),
    ncol=st.integers(6, 14),
    ngauge=st.integers(1, 3),
    max_depth=st.integers(0, 2),
    nodata=st.sampled_from([0.0, 0.1]),
)
def test_random_grids_match_generate_mesh(tmp_path, seed, nrow, ncol, ngauge, max_depth, nodata):
    rng = np.random.default_rng(seed)
    codes = dem_flwdir(rng, nrow, ncol, nodata_fraction=nodata)
    codes[codes == 0] = -99  # no-data as -99: smash mistakes a raw 0 for a pit next to a code-4 cell
    codes[-1, :] = codes[:, -1] = -99  # smash never delineates the raster's last row and column
    # windows inside the raster: smash can crash (free(): invalid pointer) on windows beyond its edge
    r = rng.integers(max_depth, nrow - 1 - max_depth, ngauge)
    c = rng.integers(max_depth, ncol - 1 - max_depth, ngauge)
    area_cells = rng.integers(1, nrow * ncol // 2 + 2, ngauge)
    for i in range(ngauge):
        # smash (1) may snap onto a no-data cell, we never do; (2) delineates inside a box of
        # ceil(area) cells around each candidate, we delineate whole catchments
        window = codes[max(0, r[i] - max_depth) : r[i] + max_depth + 1, max(0, c[i] - max_depth) : c[i] + max_depth + 1]
        assume((window > 0).all())
        assume(not smash_search_box_truncates(codes, r[i], c[i], area_cells[i], max_depth))
    path = write_tif(tmp_path / f"r{seed}.tif", codes)
    kwargs = dict(
        x=(c + rng.random(ngauge)) * 1000.0, y=(nrow - r - rng.random(ngauge)) * 1000.0,
        area=area_cells * 1e6, max_depth=max_depth,
    )
    ours = build_mesh_from_raster(path, area_error_th=np.inf, **kwargs)
    assert_matches_smash(ours, smash_mesh(path, **kwargs))
    check_invariants(ours)


@pytest.mark.smash
@needs_smash
def test_bbox_with_sinks_matches_generate_mesh(tmp_path):
    codes = np.full((6, 7), 5)
    codes[-1, :] = -99
    codes[1, 1], codes[1, 2] = 3, 7  # E-W pair
    codes[3, 4], codes[4, 5] = 4, 8  # SE-NW pair
    codes[2, 5], codes[3, 5] = 5, 1  # S-N pair
    path = write_tif(tmp_path / "s.tif", codes)
    bbox = (0, 7000, 0, 6000)
    with pytest.warns(UserWarning, match="sinks"):
        ours = build_mesh_from_raster(path, bbox=bbox)
    assert_matches_smash(ours, smash_mesh(path, bbox=bbox))
    assert not ours.active_cell[1, 1:3].any() and (ours.flwdir[1, 1:3] == 0).all()


@pytest.mark.smash
@needs_smash
def test_bbox_edges_round_like_smash(tmp_path):
    codes = np.full((8, 8), 5)
    codes[-1, :] = -99
    path = write_tif(tmp_path / "b.tif", codes, xmin=250.0)
    for v in (400.0, 499.0, 500.0, 501.0, 1500.0, 2500.0):
        for bbox in ((250 + v, 8250, 0, 8000), (250, 8250 - v, 0, 8000), (250, 8250, v, 8000), (250, 8250, 0, 8000 - v)):
            ours, theirs = build_mesh_from_raster(path, bbox=bbox), smash_mesh(path, bbox=bbox)
            expect = (theirs["xmin"], theirs["ymax"], theirs["nrow"], theirs["ncol"])
            assert (ours.xmin, ours.ymax, ours.nrow, ours.ncol) == expect, bbox


@pytest.mark.smash
@needs_smash
def test_bbox_with_gauges_keeps_the_box_and_the_catchments(tmp_path):
    codes = np.full((6, 6), 5)
    codes[-1, :] = -99
    path = write_tif(tmp_path / "g.tif", codes)
    kwargs = dict(bbox=(0, 6000, 0, 6000), x=[500], y=[1500], area=[5e6])
    ours = build_mesh_from_raster(path, **kwargs)
    assert_matches_smash(ours, smash_mesh(path, **kwargs))
    assert (ours.nrow, ours.ncol) == (6, 6) and ours.nac == 5


# --------------------------------------------------------------------------- where we differ from smash, on purpose


@pytest.mark.smash
@needs_smash
def test_smash_truncates_catchments_that_reach_the_rasters_last_column(tmp_path):
    # every cell drains west along its row, then south down column 0 to the gauge
    codes = np.full((5, 6), 7)
    codes[:, 0] = 5
    codes[-1, :] = -99
    path = write_tif(tmp_path / "t.tif", codes)
    kwargs = dict(x=[500], y=[1500], area=[24e6], max_depth=0)
    theirs = smash_mesh(path, **kwargs)
    ours = build_mesh_from_raster(path, **kwargs)
    assert ours.area_dln[0] == 24e6 and ours.nac == 24  # the whole catchment
    assert theirs["area_dln"][0] == 20e6 and theirs["nac"] == 20  # smash leaves out the last column


@pytest.mark.smash
@needs_smash
def test_sw_ne_pairs_are_sinks_too(tmp_path):
    codes = np.full((4, 4), 5)
    codes[2, 1], codes[1, 2] = 2, 6  # (2,1) points NE to (1,2), which points SW back
    path = write_tif(tmp_path / "p.tif", codes)
    assert not np.asarray(smash.factory.detect_sink(path)).any()  # smash misses it
    np.testing.assert_array_equal(np.argwhere(detect_sink(codes)), [[1, 2], [2, 1]])


# --------------------------------------------------------------------------- invariants (no smash)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    nrow=st.integers(2, 16),
    ncol=st.integers(2, 16),
    ngauge=st.integers(1, 4),
    max_depth=st.integers(0, 2),
    nodata=st.sampled_from([0.0, 0.15]),
    res=st.sampled_from([1000.0, 250.0]),
)
def test_meshes_of_random_acyclic_grids_satisfy_the_invariants(seed, nrow, ncol, ngauge, max_depth, nodata, res):
    rng = np.random.default_rng(seed)
    codes = dem_flwdir(rng, nrow, ncol, nodata_fraction=nodata)
    rows, cols = np.nonzero(codes > 0)
    assume(rows.size > 0)
    pick = rng.integers(0, rows.size, ngauge)
    r, c = rows[pick], cols[pick]
    area = np.array([len(upstream_cells(codes, a, b)) for a, b in zip(r, c)]) * res * res
    x = 500_000.0 + (c + rng.random(ngauge)) * res
    y = 6_000_000.0 - (r + rng.random(ngauge)) * res
    m = build_mesh(codes, xmin=500_000.0, ymax=6_000_000.0, xres=res, yres=res, epsg=2154, x=x, y=y, area=area,
                   max_depth=max_depth, area_error_th=np.inf)
    assert m.flwdir.dtype == np.int8 and m.flwacc.dtype == np.float32 and m.flwpar.dtype == np.int32
    assert m.dx.dtype == np.float32 and m.flwdst.dtype == np.float32 and m.area_dln.dtype == np.float32
    check_invariants(m)
    validate_flwdir(m.flwdir, m.active_cell, outlets=np.stack([m.gauge_row, m.gauge_col], axis=1))
    if max_depth == 0:  # no search: each gauge stays on its own cell
        np.testing.assert_array_equal(m.gauge_row + round((6_000_000.0 - m.ymax) / res), r)
        np.testing.assert_allclose(m.area_dln, area, rtol=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), nrow=st.integers(1, 12), ncol=st.integers(1, 12))
def test_bbox_meshes_of_random_acyclic_grids_satisfy_the_invariants(seed, nrow, ncol):
    rng = np.random.default_rng(seed)
    codes = dem_flwdir(rng, nrow, ncol, nodata_fraction=0.1)
    m = build_mesh(codes, xmin=0.0, ymax=nrow * 100.0, xres=100.0, yres=100.0, bbox=(0, ncol * 100.0, 0, nrow * 100.0))
    np.testing.assert_array_equal(m.active_cell, codes > 0)
    check_invariants(m)


def test_flwacc_agrees_with_pyflwdir_upstream_area():
    rng = np.random.default_rng(1)
    codes = dem_flwdir(rng, 40, 50, nodata_fraction=0.05)
    m = build_mesh(codes, xmin=0.0, ymax=4000.0, xres=100.0, yres=100.0, bbox=(0, 5000, 0, 4000))
    cells = to_pyflwdir(codes).upstream_area(unit="cell")
    # pyflwdir leaves no-data cells out of the network; smash (and we) accumulate into them
    coded = codes > 0
    np.testing.assert_array_equal(m.flwacc[coded], (cells[coded] * 1e4).astype(np.float32))


def test_mesh_round_trips_through_its_dataset():
    rng = np.random.default_rng(3)
    codes = dem_flwdir(rng, 12, 12)
    sizes = np.array([[len(upstream_cells(codes, a, b)) for b in range(12)] for a in range(12)])
    r, c = np.unravel_index(np.argmax(sizes), sizes.shape)
    m = build_mesh(codes, xmin=0.0, ymax=12e3, xres=1e3, yres=1e3, epsg=2154, x=[c * 1e3 + 500],
                   y=[12e3 - r * 1e3 - 500], area=[sizes[r, c] * 1e6], code=["G1"])
    back = Mesh.from_dataset(m.to_dataset())
    for name in ("flwdir", "active_cell", "dx", "dy", "flwacc", "flwpar", "gauge_row", "gauge_col", "area", "area_dln"):
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name))
    np.testing.assert_array_equal(np.isnan(back.flwdst), np.isnan(m.flwdst))
    assert list(back.code) == ["G1"] and back.epsg == 2154


# --------------------------------------------------------------------------- small helpers


def test_gauge_codes_default_to_c0_c1():
    codes = np.full((4, 3), 5)
    m = build_mesh(codes, xmin=0.0, ymax=4e3, xres=1e3, yres=1e3, x=[500, 1500], y=[500, 500], area=[4e6, 4e6],
                   max_depth=0)
    assert list(m.code) == ["_c0", "_c1"] and m.ng == 2


def test_gauges_keep_their_order_and_nested_distances_run_to_the_outlet():
    codes = np.full((6, 3), 5)  # three columns draining south
    m = build_mesh(codes, xmin=0.0, ymax=6e3, xres=1e3, yres=1e3, x=[1500, 1500], y=[2500, 500], area=[4e6, 6e6],
                   code=["up", "down"], max_depth=0)
    assert list(m.code) == ["up", "down"]
    assert m.flwdst[m.gauge_row[0], m.gauge_col[0]] == 2000.0  # distance to the downstream gauge, not 0
    assert m.flwdst[m.gauge_row[1], m.gauge_col[1]] == 0.0


def test_cell_sizes_of_a_geographic_grid():
    dx, dy = cell_sizes(3, 2, ymax=45.0, xres=0.5, yres=0.5, geographic=True)
    k = 6371228.0 * np.pi / 180
    np.testing.assert_allclose(dy, 0.5 * k, rtol=1e-7)
    np.testing.assert_allclose(dx[:, 0], 0.5 * k * np.cos(np.radians([44.75, 44.25, 43.75])), rtol=1e-7)
    assert dx.dtype == dy.dtype == np.float32


def test_read_flwdir_maps_no_data_and_reads_the_georeference(tmp_path):
    codes = np.array([[1, 2, -9999], [0, -3, 8]])
    path = write_tif(tmp_path / "r.tif", codes, xmin=100.0, ymax=5000.0, res=50.0, nodata=-9999)
    out, geo = read_flwdir(path)
    np.testing.assert_array_equal(out, [[1, 2, 0], [0, 0, 8]])
    assert geo["xmin"] == 100.0 and geo["ymax"] == 5000.0 and geo["xres"] == geo["yres"] == 50.0
    assert geo["epsg"] == 2154 and "Lambert" in geo["crs_wkt"]


def test_from_esri_converts_every_direction():
    esri = np.array([[32, 64, 128], [16, 0, 1], [8, 4, 2]])
    np.testing.assert_array_equal(from_esri(esri), [[8, 1, 2], [7, 0, 3], [6, 5, 4]])
    np.testing.assert_array_equal(from_esri(np.array([[247, 1]]), nodata=247), [[0, 3]])
    with pytest.raises(ValueError, match=r"cell \(0, 1\) = 3 is not an ESRI"):
        from_esri(np.array([[1, 3]]))


def test_detect_sink_checks_all_four_axes():
    for k in (1, 2, 3, 4):
        codes = np.zeros((3, 3), dtype=int)
        codes[1, 1] = k
        codes[1 + DROW[k], 1 + DCOL[k]] = k + 4
        sink = detect_sink(codes)
        assert sink.sum() == 2 and sink[1, 1] and sink[1 + DROW[k], 1 + DCOL[k]]
    assert not detect_sink(np.full((3, 3), 5)).any()
