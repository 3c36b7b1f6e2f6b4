"""Bad flow directions and bad gauges: clear ValueErrors naming the cell or gauge, never a hang or a crash."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hybridhydro.mesh import DCOL, DROW, build_mesh, build_mesh_from_raster, detect_sink, read_flwdir, validate_flwdir

GRID = dict(xmin=0.0, ymax=5000.0, xres=1000.0, yres=1000.0, epsg=2154)


def south_grid(nrow=5, ncol=4):
    """Every cell drains south; the bottom row drains off the grid."""
    return np.full((nrow, ncol), 5)


# --------------------------------------------------------------------------- reference checks


def reference_loop_cells(codes):
    """Cells on a cycle, by following each cell's path (slow, obviously right)."""
    nrow, ncol = codes.shape
    on_loop = np.zeros(codes.shape, dtype=bool)
    for r in range(nrow):
        for c in range(ncol):
            path, cur = [], (r, c)
            while cur is not None and cur not in path:
                path.append(cur)
                k = int(codes[cur])
                nxt = (cur[0] + DROW[k], cur[1] + DCOL[k]) if 1 <= k <= 8 else None
                cur = nxt if nxt is not None and 0 <= nxt[0] < nrow and 0 <= nxt[1] < ncol else None
            if cur is not None:
                for cell in path[path.index(cur) :]:
                    on_loop[cell] = True
    return on_loop


def reference_problem(codes, active=None, outlets=None):
    """Whether validate_flwdir must raise, by the rules it documents."""
    if (codes > 8).any():
        return True
    used = codes > 0 if active is None else active
    if active is not None and (active & (codes <= 0)).any():
        return True
    if (reference_loop_cells(np.where(codes > 0, codes, 0)) & used).any():
        return True
    if active is not None and outlets is not None:
        nrow, ncol = codes.shape
        for r, c in zip(*np.nonzero(active)):
            k = int(codes[r, c])
            r2, c2 = r + DROW[k], c + DCOL[k]
            if not (0 <= r2 < nrow and 0 <= c2 < ncol) and (r, c) not in outlets:
                return True
    return False


# --------------------------------------------------------------------------- adversarial grids


@st.composite
def adversarial_grids(draw):
    """Random codes with planted 2-cycles (every axis), long cycles and outward-pointing edges."""
    nrow = draw(st.integers(1, 12))
    ncol = draw(st.integers(1, 12))
    codes = draw(hnp.arrays(np.int64, (nrow, ncol), elements=st.integers(0, 8)))
    if draw(st.booleans()):  # a few wild values: negative (no data) or out of range
        for _ in range(draw(st.integers(1, 3))):
            codes[draw(st.integers(0, nrow - 1)), draw(st.integers(0, ncol - 1))] = draw(
                st.sampled_from([-9999, -1, 9, 16, 128, 255])
            )
    for _ in range(draw(st.integers(0, 2))):  # 2-cycles on any axis, SW-NE included
        k = draw(st.integers(1, 8))
        r, c = draw(st.integers(0, nrow - 1)), draw(st.integers(0, ncol - 1))
        r2, c2 = r + DROW[k], c + DCOL[k]
        if 0 <= r2 < nrow and 0 <= c2 < ncol:
            codes[r, c], codes[r2, c2] = k, (k + 3) % 8 + 1
    if draw(st.booleans()) and nrow >= 2 and ncol >= 2:  # a rectangular loop, clockwise
        h, w = draw(st.integers(1, nrow - 1)), draw(st.integers(1, ncol - 1))
        r0, c0 = draw(st.integers(0, nrow - 1 - h)), draw(st.integers(0, ncol - 1 - w))
        codes[r0, c0 : c0 + w] = 3
        codes[r0 : r0 + h, c0 + w] = 5
        codes[r0 + h, c0 + 1 : c0 + w + 1] = 7
        codes[r0 + 1 : r0 + h + 1, c0] = 1
    if draw(st.booleans()) and nrow >= 3 and ncol >= 3:  # a diamond loop along the diagonals
        s = draw(st.integers(1, (min(nrow, ncol) - 1) // 2))
        r, c = draw(st.integers(s, nrow - 1 - s)), draw(st.integers(0, ncol - 1 - 2 * s))
        for k in (2, 4, 6, 8):
            for _ in range(s):
                codes[r, c] = k
                r, c = r + DROW[k], c + DCOL[k]
    if draw(st.booleans()):  # edges pointing outward
        codes[0, :] = np.where(draw(st.booleans()), 1, codes[0, :])
        codes[:, -1] = np.where(draw(st.booleans()), 3, codes[:, -1])
    active = None
    if draw(st.booleans()):
        active = draw(hnp.arrays(bool, (nrow, ncol))) & (codes > 0) if draw(st.booleans()) else codes > 0
    return codes, active


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(grid=adversarial_grids(), with_outlets=st.booleans())
def test_validation_raises_exactly_when_there_is_a_problem(grid, with_outlets):
    codes, active = grid
    outlets = [(0, 0)] if with_outlets else None
    expect = reference_problem(codes, active, outlets)
    if expect:
        with pytest.raises(ValueError, match=r"\(\d+, \d+\)"):  # names a cell
            validate_flwdir(codes, active, outlets=outlets)
    else:
        validate_flwdir(codes, active, outlets=outlets)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(grid=adversarial_grids(), data=st.data())
def test_building_a_mesh_from_any_grid_gives_a_mesh_or_a_value_error(grid, data):
    codes, _ = grid
    nrow, ncol = codes.shape
    ng = data.draw(st.integers(1, 3))
    x = data.draw(st.lists(st.floats(-500, ncol * 1000 + 500), min_size=ng, max_size=ng))
    y = data.draw(st.lists(st.floats(-500, nrow * 1000 + 500), min_size=ng, max_size=ng))
    area = data.draw(st.lists(st.floats(1e5, 1e9), min_size=ng, max_size=ng))
    th = data.draw(st.sampled_from([None, 0.5, np.inf]))
    grid_kw = dict(GRID, ymax=nrow * 1000.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            m = build_mesh(codes, x=x, y=y, area=area, max_depth=data.draw(st.integers(0, 2)), area_error_th=th,
                           **grid_kw)
        except ValueError:
            return
    # a mesh was built: its active cells form loop-free catchments draining to the gauges
    outlets = np.stack([m.gauge_row, m.gauge_col], axis=1)
    validate_flwdir(m.flwdir, m.active_cell, outlets=outlets)
    assert m.active_cell[m.gauge_row, m.gauge_col].all()
    assert (m.flwacc[m.active_cell] >= 1e6).all() and (m.flwpar >= 1).all()


@settings(max_examples=100, deadline=2000)
@given(grid=adversarial_grids())
def test_bbox_meshes_of_any_grid_are_loop_free_or_refused(grid):
    codes, _ = grid
    nrow, ncol = codes.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            m = build_mesh(codes, bbox=(0, ncol * 1000.0, 0, nrow * 1000.0), **dict(GRID, ymax=nrow * 1000.0))
        except ValueError as e:
            assert "(" in str(e)
            return
    assert not (reference_loop_cells(m.flwdir) & m.active_cell).any()
    assert not detect_sink(m.flwdir).any()


# --------------------------------------------------------------------------- codes


def test_codes_above_8_name_the_cell():
    codes = south_grid()
    codes[2, 3] = 9
    with pytest.raises(ValueError, match=r"flwdir: cell \(2, 3\) = 9 is not a D8 code"):
        validate_flwdir(codes)


def test_esri_coding_is_recognised_and_a_conversion_offered():
    esri = np.full((3, 3), 4)  # ESRI 4 = south
    esri[0, 0] = 64
    with pytest.raises(ValueError, match="from_esri"):
        validate_flwdir(esri)
    with pytest.raises(ValueError, match=r"from_esri\(codes, nodata=247\)"):
        validate_flwdir(np.array([[64, 247], [4, 1]]))


def test_non_integer_codes_are_refused():
    with pytest.raises(ValueError, match=r"flwdir: cell \(0, 1\) = 2.5 is not an integer"):
        validate_flwdir(np.array([[1.0, 2.5]]))
    validate_flwdir(np.array([[5.0, np.nan], [-9999.0, 0.0]]))  # NaN and <= 0 are no data


def test_read_flwdir_refuses_non_integer_rasters(tmp_path):
    path = tmp_path / "dem.tif"
    with rasterio.open(path, "w", driver="GTiff", height=2, width=2, count=1, dtype="float32", crs="EPSG:2154",
                       transform=Affine(1000.0, 0.0, 0.0, 0.0, -1000.0, 2000.0), nodata=-9999) as ds:
        ds.write(np.array([[1.0, 2.0], [3.5, -9999.0]], dtype=np.float32), 1)
    with pytest.raises(ValueError, match=r"cell \(1, 0\) = 3.5 is not an integer"):
        read_flwdir(path)


# --------------------------------------------------------------------------- loops


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7, 8])
def test_two_cells_pointing_at_each_other_on_every_axis(k):
    codes = np.zeros((5, 5), dtype=int)
    codes[2, 2] = k
    r2, c2 = 2 + DROW[k], 2 + DCOL[k]
    codes[r2, c2] = (k + 3) % 8 + 1
    first = min((2, 2), (r2, c2))
    with pytest.raises(ValueError, match=rf"loop: cell \({first[0]}, {first[1]}\) points .* back to it"):
        validate_flwdir(codes)


def test_long_loops_are_traced():
    codes = np.full((4, 4), 5)
    codes[1, 1], codes[1, 2], codes[2, 2], codes[2, 1] = 3, 5, 7, 1  # 2 x 2 clockwise loop
    path = r"\(1, 1\) -> \(1, 2\) -> \(2, 2\) -> \(2, 1\) -> \(1, 1\)"
    with pytest.raises(ValueError, match=r"loop through cell \(1, 1\): " + path):
        validate_flwdir(codes)
    # the loop is not used when inactive
    active = np.zeros((4, 4), dtype=bool)
    active[:, 0] = True
    validate_flwdir(codes, active)


def test_a_large_loop_does_not_hang():
    n = 300
    codes = np.full((n, n), 5)
    codes[0, :-1], codes[:-1, -1], codes[-1, 1:], codes[1:, 0] = 3, 5, 7, 1  # loop along the border
    with pytest.raises(ValueError, match=r"1196 cell\(s\) lie on loops"):
        validate_flwdir(codes)


# --------------------------------------------------------------------------- active cells and outlets


def test_an_active_cell_draining_off_the_grid_must_be_an_outlet():
    codes = south_grid()
    active = np.zeros(codes.shape, dtype=bool)
    active[:, 1] = True
    with pytest.raises(ValueError, match=r"active cell \(4, 1\) drains S off the grid"):
        validate_flwdir(codes, active, outlets=[])
    validate_flwdir(codes, active, outlets=[(4, 1)])
    validate_flwdir(codes, active)  # without outlets the domain may drain off its edges


def test_an_active_cell_needs_a_direction():
    codes = south_grid()
    codes[1, 1] = 0
    with pytest.raises(ValueError, match=r"cell \(1, 1\) is active but has no flow direction"):
        validate_flwdir(codes, np.ones(codes.shape, dtype=bool))


# --------------------------------------------------------------------------- gauges


def test_a_gauge_outside_the_grid_is_named_with_the_extent():
    extent = r"x 0.0 .. 4000.0, y 0.0 .. 5000.0"
    with pytest.raises(ValueError, match=r"gauge Y1 at \(9000.0, 500.0\) lies outside .*" + extent):
        build_mesh(south_grid(), x=[500, 9000], y=[500, 500], area=[5e6, 5e6], code=["Y0", "Y1"], **GRID)


def test_a_gauge_far_from_its_declared_area_is_refused_by_default():
    with pytest.raises(ValueError, match=r"Y0: declared 50 km2, delineated 5 km2 \(relative error 90%\)") as err:
        build_mesh(south_grid(), x=[500], y=[500], area=[50e6], code=["Y0"], max_depth=0, **GRID)
    assert "m2" in str(err.value) and "area_error_th" in str(err.value)
    # the same gauge is kept on request, or dropped with a warning by an explicit threshold
    m = build_mesh(south_grid(), x=[500], y=[500], area=[50e6], max_depth=0, area_error_th=np.inf, **GRID)
    assert m.area_dln[0] == 5e6
    with pytest.warns(UserWarning, match=r"dropped.*Y0 \(90%\)"):
        m = build_mesh(south_grid(), x=[500, 1500], y=[500, 500], area=[50e6, 5e6], code=["Y0", "Y1"], max_depth=0,
                       area_error_th=0.2, **GRID)
    assert list(m.code) == ["Y1"]
    with pytest.raises(ValueError, match="every gauge exceeds area_error_th"):
        build_mesh(south_grid(), x=[500], y=[500], area=[50e6], code=["Y0"], max_depth=0, area_error_th=0.2, **GRID)


def test_a_gauge_with_no_possible_outlet():
    codes = south_grid()
    codes[1, 1], codes[1, 2] = 3, 7  # the gauge sits on a sink pair
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        match = r"gauge G at \(1500.0, 3500.0\): no cell of the 1 x 1 window around cell \(1, 1\)"
        with pytest.raises(ValueError, match=match):
            build_mesh(codes, x=[1500], y=[3500], area=[1e6], code=["G"], max_depth=0, **GRID)
    assert any("lie on a flow loop" in str(w.message) for w in caught)


def test_a_catchment_leaving_the_bbox_is_refused():
    with pytest.raises(ValueError, match=r"catchment of gauge\(s\) G extends outside bbox"):
        build_mesh(south_grid(), x=[1500], y=[500], area=[5e6], code=["G"], bbox=(0, 4000, 0, 3000), **GRID)


def test_a_bbox_with_a_loop_is_refused_and_sink_pairs_are_removed():
    codes = south_grid()
    codes[1, 1], codes[1, 2], codes[2, 2], codes[2, 1] = 3, 5, 7, 1
    with pytest.raises(ValueError, match=r"in the bbox .*loop through cell \(1, 1\)"):
        build_mesh(codes, bbox=(0, 4000, 0, 5000), **GRID)
    codes = south_grid()
    codes[1, 1], codes[2, 2] = 4, 8  # a SE-NW pair
    with pytest.warns(UserWarning, match=r"2 cell\(s\) of the bbox lie in pairs"):
        m = build_mesh(codes, bbox=(0, 4000, 0, 5000), **GRID)
    assert not m.active_cell[1, 1] and not m.active_cell[2, 2] and m.nac == 18


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x=[500], y=[500]), "area missing"),
        (dict(x=[500, 600], y=[500], area=[1e6]), "same length"),
        (dict(x=[500], y=[500], area=[-1.0]), "positive number of m2"),
        (dict(x=[500, 1500], y=[500, 500], area=[1e6, 1e6], code=["A", "A"]), "unique"),
        (dict(x=[500], y=[500], area=[1e6], max_depth=-1), "max_depth"),
        (dict(bbox=(100, 100, 0, 10)), "xmin < xmax"),
        (dict(bbox=(10_000, 20_000, 0, 5000)), "covers no whole cell"),
        (dict(), "gauge outlets .* or a bbox"),
    ],
)
def test_bad_arguments_say_what_to_change(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_mesh(south_grid(), **GRID, **kwargs)


def test_raster_in_esri_coding_fails_with_the_hint(tmp_path):
    esri = np.full((3, 3), 4)
    path = tmp_path / "esri.tif"
    with rasterio.open(path, "w", driver="GTiff", height=3, width=3, count=1, dtype="int16", crs="EPSG:2154",
                       transform=Affine(1000.0, 0.0, 0.0, 0.0, -1000.0, 3000.0), nodata=255) as ds:
        ds.write(np.where(np.arange(9).reshape(3, 3) == 0, 64, esri).astype(np.int16), 1)
    with pytest.raises(ValueError, match="ESRI"):
        build_mesh_from_raster(path, x=[500], y=[500], area=[1e6])
