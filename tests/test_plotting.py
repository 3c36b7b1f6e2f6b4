"""Figures and tables of the notebooks, drawn headless on a hand-made 3 x 4 basin with known answers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from types import SimpleNamespace  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from hybridhydro import plotting  # noqa: E402
from hybridhydro.basin import annotate, check_basin  # noqa: E402
from hybridhydro.mesh import Mesh  # noqa: E402

# Every cell drains south; the bottom row drains east to the outlet (2, 3), which leaves the grid.
FLWDIR = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [3, 3, 3, 5]], dtype=np.int8)
CELLS_UPSTREAM = np.array([[1, 1, 1, 1], [2, 2, 2, 2], [3, 6, 9, 12]])
PARTITION = np.array([[1, 1, 1, 1], [2, 2, 2, 2], [3, 4, 5, 6]])
GAUGES = {"OUT": (2, 3), "MID": (2, 1)}  # the outlet (12 cells) and a nested gauge (6 cells)


@pytest.fixture(scope="module")
def basin() -> xr.Dataset:
    rows = np.array([rc[0] for rc in GAUGES.values()])
    cols = np.array([rc[1] for rc in GAUGES.values()])
    res, xmin, ymax = 1000.0, 700_000.0, 6_500_000.0
    mesh = Mesh(
        flwdir=FLWDIR,
        active_cell=np.ones(FLWDIR.shape, bool),
        dx=np.full(FLWDIR.shape, res, np.float32),
        dy=np.full(FLWDIR.shape, res, np.float32),
        flwacc=(CELLS_UPSTREAM * res**2).astype(np.float32),
        flwdst=np.zeros(FLWDIR.shape, np.float32),
        flwpar=PARTITION.astype(np.int32),
        xmin=xmin,
        ymax=ymax,
        xres=res,
        yres=res,
        epsg=2154,
        gauge_row=rows,
        gauge_col=cols,
        code=np.array(list(GAUGES)),
        gauge_x=xmin + (cols + 0.5) * res + 120.0,  # declared 120 m east of the cell centre
        gauge_y=ymax - (rows + 0.5) * res,
        area=np.array([12.6e6, 5.7e6], np.float32),
        area_dln=np.array([12e6, 6e6], np.float32),
    )
    ds = mesh.to_dataset()
    times = pd.date_range("2020-01-01 01:00", periods=4, freq="h")
    prcp = np.broadcast_to(np.arange(4.0), (4, 3, 4)).copy()  # rain = column index, mm
    prcp[0, 0, 0] = np.nan  # one missing cell at the first step
    ds["prcp"] = (("time", "y", "x"), prcp.astype(np.float32))
    ds["pet"] = (("time", "y", "x"), np.full((4, 3, 4), 0.1, np.float32))
    ds["qobs"] = (("gauge", "time"), np.array([[1.0, 2.0, np.nan, 1.5], [0.5, 1.0, 0.8, 0.6]], np.float32))
    ds["descriptors"] = (("descriptor", "y", "x"), np.stack([np.arange(12.0).reshape(3, 4), np.ones((3, 4))]).astype(np.float32))
    ds = ds.assign_coords(time=times, descriptor=["slope", "dd"])
    ds["descriptors"].attrs["descriptor_units"] = "slope: degree; dd: km-1"
    ds.attrs.update(dt=3600.0, name="tiny", start_time="2020-01-01T00:00:00", end_time=str(times[-1]))
    annotate(ds)
    check_basin(ds, where="the tiny test basin")
    return ds


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def colorbar_labels(fig) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


# --- known answers -----------------------------------------------------------------------------


def test_upstream_masks_follow_the_flow_directions(basin):
    masks = plotting.upstream_masks(basin)
    assert masks.shape == (2, 3, 4)
    assert masks[0].all()  # everything drains to the outlet
    np.testing.assert_array_equal(masks[1], [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(masks.sum(axis=(1, 2)), CELLS_UPSTREAM[2, [3, 1]])


def test_catchment_mean_leaves_out_missing_cells(basin):
    rain = plotting.catchment_mean(basin, "prcp")
    assert rain.dims == ("gauge", "time") and rain.attrs["units"] == "mm"
    np.testing.assert_allclose(rain.sel(gauge="OUT").values, [18 / 11, 1.5, 1.5, 1.5], rtol=1e-6)
    np.testing.assert_allclose(rain.sel(gauge="MID").values, [0.6, 0.5, 0.5, 0.5], rtol=1e-6)


def test_gauge_table(basin):
    table = plotting.gauge_table(basin)
    assert list(table.index) == ["OUT", "MID"]
    np.testing.assert_allclose(table["declared area (km²)"], [12.6, 5.7])
    np.testing.assert_allclose(table["delineated area (km²)"], [12.0, 6.0])
    np.testing.assert_allclose(table["area difference (%)"], [-4.76, 5.26], atol=0.01)
    np.testing.assert_allclose(table["snap distance (CRS units)"], [120.0, 120.0])


def test_descriptor_units(basin):
    assert plotting.descriptor_units(basin) == {"slope": "degree", "dd": "km-1"}


# --- figures -----------------------------------------------------------------------------------


def test_axis_labels_carry_the_crs_unit(basin):
    assert plotting.xy_labels(basin) == ("x (m, EPSG:2154)", "y (m, EPSG:2154)")
    assert plotting.xy_labels(basin.drop_vars("spatial_ref")) == ("x (CRS units)", "y (CRS units)")


def test_flow_accumulation_map(basin):
    ax = plotting.plot_flow_accumulation(basin)
    assert ax.get_xlabel() == "x (m, EPSG:2154)" and ax.get_ylabel() == "y (m, EPSG:2154)"
    assert colorbar_labels(ax.figure) == ["drainage area (km²)"]
    assert isinstance(ax.collections[0].norm, LogNorm)
    assert ax.collections[0].norm.vmax == pytest.approx(12.0)
    assert {t.get_text() for t in ax.texts} == {"OUT", "MID"}  # gauges marked


def test_active_cells_map(basin):
    ax = plotting.plot_active_cells(basin)
    assert "12 of 3 × 4" in ax.get_title()
    assert ax.get_xlabel() and ax.get_ylabel()
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"active", "snapped cell", "declared outlet"}


def test_mesh_figure_holds_both_maps(basin):
    fig = plotting.plot_mesh(basin)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == ["Flow accumulation", "Active cells: 12 of 3 × 4"]


def test_descriptor_maps_one_panel_each_with_units(basin):
    fig = plotting.plot_descriptors(basin)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.axison]
    assert [ax.get_title() for ax in panels] == ["slope", "dd"]
    assert colorbar_labels(fig) == ["slope (degree)", "dd (km⁻¹)"]
    assert all(ax.get_xlabel().startswith("x (m") for ax in panels)


def test_hydrographs_one_panel_per_gauge_with_units(basin):
    fig = plotting.plot_hydrographs(basin["qobs"], plotting.catchment_mean(basin))
    panels = [ax for ax in fig.axes if ax.get_ylabel().startswith("discharge")]
    assert [ax.get_title(loc="left") for ax in panels] == ["OUT", "MID"]
    assert all(ax.get_ylabel() == "discharge (m³ s⁻¹)" for ax in panels)
    assert sum(ax.get_ylabel() == "basin rain (mm per step)" for ax in fig.axes) == 2
    assert panels[-1].get_xlabel() == "time (end of step)"


def test_hydrographs_without_rain_or_with_empty_discharge(basin):
    empty = basin["qobs"] * np.nan
    empty.attrs = basin["qobs"].attrs
    fig = plotting.plot_hydrographs(empty)
    assert any("no observed discharge" in t.get_text() for ax in fig.axes for t in ax.texts)
    with pytest.raises(ValueError):
        plotting.plot_hydrographs(None, None)


def test_save_figure(basin, tmp_path):
    fig = plotting.plot_descriptors(basin)
    path = plotting.save_figure(fig, tmp_path, "descriptors", dpi=50, format="svg")
    assert path == tmp_path / "figures" / "descriptors.svg"
    assert path.read_text().lstrip().startswith("<?xml")


# --- the figures of stages 02-06, on runs of a small synthetic basin ------------------------------

RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)


@pytest.fixture(scope="module")
def synthetic():
    import hybridhydro as hh

    basin = hh.synthetic_basin(nrow=6, ncol=6, ntime=24, seed=3, ngauge=2)
    net = hh.FluxCorrectionNet.for_structure("gr4_ude", hidden=4, initializer="he_uniform", scale=0.1, seed=0)
    runs = {
        "gr4-lr": hh.simulate(basin, "gr4-lr", **RUN),
        "gr4_ode-lr": hh.simulate(basin, "gr4_ode-lr", **RUN),
        "gr4_ude-lr": hh.simulate(basin, "gr4_ude-lr", nn_parameters=net, **RUN),
    }
    return basin, runs


def panel_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.get_visible() and ax.axison]


def test_simulations_one_panel_per_gauge_with_the_split(synthetic):
    from hybridhydro.protocol import make_split

    basin, runs = synthetic
    split = make_split(basin)
    fig = plotting.plot_simulations({"a": runs["gr4-lr"], "b": runs["gr4_ode-lr"]}, basin, split=split)
    axes = panel_axes(fig)
    codes = [str(g) for g in basin["gauge"].values]
    assert [ax.get_title(loc="left") for ax in axes] == [
        f"{g} (pseudo-ungauged)" if g in split.validation_gauges else g for g in codes]
    labels = {t.get_text() for t in axes[0].get_legend().get_texts()}
    assert {"observed", "a", "b", "calibration period", "validation period"} <= labels
    assert all(ax.get_ylabel() == "discharge (m³ s⁻¹)" for ax in axes)
    one = plotting.plot_simulations({"a": runs["gr4-lr"]}, basin, [codes[1]])
    assert [ax.get_title(loc="left") for ax in panel_axes(one)] == [codes[1]]


def test_state_and_flux_maps_label_their_units(synthetic):
    basin, runs = synthetic
    fig = plotting.plot_state_maps(runs["gr4-lr"], basin, steps=2)
    labels = colorbar_labels(fig)
    assert len(labels) == 4 * 2  # hi, hp, ht, hlr at two times
    assert "hp (fraction of capacity)" in labels and "hlr (mm)" in labels
    step = plotting.plot_flux_maps(runs["gr4-lr"], basin, "step")
    assert "pn (mm per step)" in colorbar_labels(step) and "qt (m³ s⁻¹)" in colorbar_labels(step)
    assert step._suptitle.get_text().startswith("gr4-lr fluxes: step of heaviest rain")
    total = plotting.plot_flux_maps(runs["gr4-lr"], basin, "total")
    assert "pn total (mm)" in colorbar_labels(total) and "qt mean (m³ s⁻¹)" in colorbar_labels(total)
    with pytest.raises(ValueError, match="'step' or 'total'"):
        plotting.plot_flux_maps(runs["gr4-lr"], basin, "peak")


def test_newton_figure_counts_to_the_solvers_limit(synthetic):
    from hybridhydro.structures import NEWTON_MAX_ITERATIONS

    basin, runs = synthetic
    fig = plotting.plot_newton(runs["gr4_ode-lr"], basin)
    hist = fig.axes[0]
    assert hist.get_xlabel() == "Newton updates per cell and step"
    assert hist.get_xlim()[1] >= NEWTON_MAX_ITERATIONS  # the whole range up to the limit
    counts = sum(p.get_height() for p in hist.patches)
    it = runs["gr4_ode-lr"]["newton_iterations"].values
    assert counts == np.sum(np.isfinite(it) & (it > 0))
    assert "steps without a root (%)" in colorbar_labels(fig)
    assert fig.axes[2].get_title() == "gr4_ode-lr"


def test_hybrid_figures(synthetic):
    basin, runs = synthetic
    hybrid = {"gr4_ude-lr": runs["gr4_ude-lr"]}
    parents = {"gr4_ude-lr": runs["gr4_ode-lr"]}
    fig = plotting.plot_corrections(hybrid, basin)
    lines = {ln.get_label() for ax in fig.axes for ln in ax.get_lines()}
    assert lines == {"f (rain)", "f (evaporation)", "f (exchange)", "f (outflow)"}
    maps = plotting.plot_correction_maps(runs["gr4_ude-lr"], basin, title="x")
    assert colorbar_labels(maps) == [f"mean f ({k}) (-)" for k in ("rain", "evaporation", "exchange", "outflow")]
    gauge = str(basin["gauge"].values[0])
    pair = plotting.plot_hybrid_vs_parent(hybrid, parents, basin, gauge)
    assert {ln.get_label() for ln in pair.axes[0].get_lines()} == {"observed", "parent (gr4_ode-lr)", "gr4_ude-lr"}
    states = plotting.plot_state_changes(runs["gr4_ude-lr"], runs["gr4_ode-lr"], basin)
    assert colorbar_labels(states) == ["Δ final hp (fraction of capacity)", "Δ final ht (fraction of capacity)",
                                      "Δ final hlr (mm)"]


def test_solver_figure(synthetic):
    basin, runs = synthetic
    gauge = str(basin["gauge"].values[0])
    fig = plotting.plot_solvers({"newton": runs["gr4_ude-lr"]}, runs["gr4_ude-lr"], basin, gauge)
    assert fig.axes[0].get_ylabel() == "discharge (m³ s⁻¹)"
    assert {ln.get_label() for ln in fig.axes[0].get_lines()} >= {"newton"}
    assert fig.axes[1].get_legend() is not None


def test_parameters_against_descriptors_and_water_balances(synthetic):
    from hybridhydro import report

    basin, runs = synthetic
    active = basin["active_cell"].values.astype(bool)
    cp = xr.Dataset({"cp": (("y", "x"), np.where(active, 200.0, np.nan), {"units": "mm"})})
    fig = plotting.plot_parameters_vs_descriptors({"m": cp}, basin, ["cp"])
    ndesc = basin.sizes["descriptor"]
    assert len(fig.axes) == ndesc
    assert fig.axes[0].get_ylabel() == "cp (mm)" and "normalised" in fig.axes[0].get_xlabel()
    assert len(fig.axes[0].collections[0].get_offsets()) == active.sum()
    balances, _ = report.water_balances(runs, basin)
    table = report.balance_table(balances)
    bars = plotting.plot_water_balances(table)
    ax = bars.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(runs)
    evaporation = [p.get_width() for p in ax.containers[0]]
    np.testing.assert_allclose(evaporation, table["evaporation"].values)


def test_events_and_titles(synthetic):
    basin, runs = synthetic
    times = basin["time"].values
    gauge = str(basin["gauge"].values[0])
    events = pd.DataFrame({"start": [times[2]], "end": [times[10]]}, index=pd.Index([gauge], name="gauge"))
    fig = plotting.plot_events({"gr4-lr": runs["gr4-lr"]}, basin, events)
    assert fig.axes[0].get_title(loc="left").startswith(f"{gauge}: event")
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == 9  # the steps of the event
    empty = plotting.plot_events({}, basin, events.iloc[:0])
    assert any(t.get_text() == "no event" for t in empty.axes[0].texts)
    table = pd.DataFrame([[0.5, np.nan]], index=["m"], columns=pd.MultiIndex.from_tuples([("calibration", "A"), ("temporal", "A")]))
    kge = plotting.plot_scores(table, "kge")
    assert kge.axes[0].get_title() == "KGE per model, scenario and gauge"
    assert kge.axes[0].images[0].norm.vmin == pytest.approx(1 - np.sqrt(2))
    assert plotting.plot_scores(table, "nse").axes[0].images[0].norm.vmin == 0.0


# --- legibility: nothing overlaps (issue 15) --------------------------------------------------------


def _drawn_texts(ax):
    """The texts an axes draws: tick labels inside its view, axis labels, titles, offset texts."""
    out = []
    for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
        ticks = axis.get_major_ticks()
        locs = axis.get_majorticklocs()
        span = hi - lo
        inside = [lo - 1e-9 * span <= v <= hi + 1e-9 * span for v in locs]
        out += [t.label1 for t, shown in zip(ticks, inside) if shown and t.label1.get_visible()]
        out += [axis.label, axis.get_offset_text()]
    out += [ax.title, ax._left_title, ax._right_title]
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def overlapping(fig, *, redraw: bool = False) -> list[tuple[str, str]]:
    """Pairs of texts of different axes that overlap, or a text over another axes' frame, as the
    figure was last drawn (``redraw``: draw it first)."""
    if redraw:
        fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    shown = [ax for ax in fig.axes if ax.get_visible()]
    texts = [(ax, t, t.get_window_extent(renderer)) for ax in shown for t in _drawn_texts(ax)]
    bad = []
    for k, (ax_a, a, box_a) in enumerate(texts):
        for ax_b, b, box_b in texts[k + 1:]:
            if ax_a is not ax_b and box_a.overlaps(box_b):
                bad.append((a.get_text(), b.get_text()))
        for ax_b in shown:
            if ax_b is not ax_a and box_a.overlaps(ax_b.get_window_extent(renderer)):
                bad.append((a.get_text(), f"frame of {ax_b.get_label() or ax_b.get_title()}"))
    return bad


def _grid_basin(shape=(40, 40)):
    import hybridhydro as hh

    return hh.synthetic_basin(nrow=shape[0], ncol=shape[1], ntime=4, seed=0, ngauge=2)


@pytest.mark.parametrize("step", [(0, 1), (1, 0), (1, 1)], ids=["east", "south", "south-east"])
def test_gauge_codes_one_cell_apart_do_not_overlap(step):
    ds = _grid_basin()
    r, c = int(ds["gauge_row"].values[0]), int(ds["gauge_col"].values[0])
    ds["gauge_row"].values[1], ds["gauge_col"].values[1] = r - step[0], c - step[1]
    ds = ds.assign_coords(gauge=["V3524010", "V3524011"])
    fig = plotting.plot_mesh(ds)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        codes = [t for t in ax.texts if t.get_text() in ("V3524010", "V3524011")]
        if codes:
            assert len(codes) == 2
            a, b = (Text.get_window_extent(t, renderer) for t in codes)  # the text, without its leader line
            assert not a.overlaps(b), (a, b)


def test_gauge_label_groups():
    assert sorted(map(sorted, plotting.gauge_label_groups([5, 5, 30], [5, 6, 30], 40, 40))) == [[0, 1], [2]]
    assert plotting.gauge_label_groups([0, 2, 4], [0, 0, 0], 10, 10) == [[0], [1], [2]]  # 2 rows apart on 10
    assert sorted(map(sorted, plotting.gauge_label_groups([0, 1, 2], [0, 0, 0], 10, 10))) == [[0, 1, 2]]  # a chain


def test_colour_bar_labels_clear_the_next_panel(tmp_path):
    """The labels of the colour bars of a map grid stay off the neighbouring panels in the saved figure
    (stage 03's maps of the ci basin: a colour bar's ticks lengthen once the bar is placed beside its
    square map, and the first layout used to miss them)."""
    basin = _grid_basin((12, 12))
    active = basin["active_cell"].values.astype(bool)

    def maps(spread):
        values = {"cp": (1.0, 200.0, "mm"), "ct": (500.0, 500.0 + spread, "mm"), "kexc": (0.0, 0.0033, "mm h-1"),
                  "llr": (0.5, 5.0, "min")}
        ramp = lambda lo, hi: np.where(active, np.linspace(lo, hi, active.size).reshape(active.shape), np.nan)  # noqa: E731
        return xr.Dataset({n: (("y", "x"), ramp(lo, hi), {"units": u}) for n, (lo, hi, u) in values.items()},
                          coords={"y": basin.y, "x": basin.x})

    fig = plotting.plot_parameter_maps({"gr4-uniform": maps(0.0), "gr4-distributed": maps(0.01)},
                                       ["cp", "ct", "kexc", "llr"], basin)
    fig.set_dpi(60)  # the positions of the saved image, read back at its resolution
    plotting.save_figure(fig, tmp_path, "maps", dpi=60)
    assert overlapping(fig) == []


def test_date_ticks_do_not_collide():
    for times in (pd.date_range("2014-01-01 01:00", periods=365 * 24, freq="h"),
                  pd.date_range("2014-01-01 01:00", periods=27 * 24, freq="h")):
        q = xr.DataArray(np.random.default_rng(0).gamma(2.0, 3.0, (1, times.size)), dims=("gauge", "time"),
                         coords={"gauge": ["A"], "time": times}, attrs={"units": "m3 s-1"})
        run = xr.Dataset({"q": q * 1.1}, attrs={"structure": "zero-gr4_ude-lr"})
        basin = xr.Dataset({"qobs": q})
        figures = [plotting.plot_hydrographs(q),  # 01
                   plotting.plot_model_hydrographs({"m": run}, basin, "A").figure,  # 03-06
                   plotting.plot_hybrid_vs_parent({"h": run}, {"h": run}, basin, "A"),  # 05
                   plotting.plot_solvers({"heun": run}, run, basin, "A")]  # 05: a half-width panel
        for fig in figures:
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            ax = fig.axes[0]
            labels = [t for t in _drawn_texts(ax) if t in ax.get_xticklabels()]
            assert len(labels) >= 3
            boxes = [t.get_window_extent(renderer) for t in labels]
            collide = any(a.overlaps(b) for k, a in enumerate(boxes) for b in boxes[k + 1:])
            assert not collide, [t.get_text() for t in labels]


# --- flow-duration curves, scatter plots, catchment outlines (issue 15) ------------------------------


@pytest.fixture()
def observed_and_runs(basin):
    """Observed discharge with a missing step at OUT and none at all at MID, and two runs."""
    qobs = basin["qobs"].copy()
    qobs.loc[dict(gauge="MID")] = np.nan
    obs = basin.assign(qobs=qobs)
    q = basin["qobs"].fillna(1.2).rename(None)
    runs = {"twice": xr.Dataset({"q": q * 2}), "same": xr.Dataset({"q": q})}
    return obs, runs


def test_exceedance_is_weibulls_plotting_position():
    p, v = plotting.exceedance([1.0, np.nan, 3.0, 2.0])
    np.testing.assert_allclose(p, [25.0, 50.0, 75.0])
    np.testing.assert_allclose(v, [3.0, 2.0, 1.0])


def test_flow_duration_curves(observed_and_runs):
    basin, runs = observed_and_runs
    fig = plotting.plot_flow_duration(runs, basin)
    out, mid = panel_axes(fig)
    assert out.get_xlabel() == "exceedance probability (%)" and out.get_ylabel() == "discharge (m³ s⁻¹)"
    assert out.get_yscale() == "log" and out.get_title(loc="left") == "OUT"
    lines = {ln.get_label(): ln for ln in out.get_lines()}
    assert set(lines) == {"observed", "twice", "same"}
    np.testing.assert_allclose(lines["observed"].get_ydata(), [2.0, 1.5, 1.0])  # the missing step left out
    np.testing.assert_allclose(lines["observed"].get_xdata(), [25.0, 50.0, 75.0])
    np.testing.assert_allclose(lines["twice"].get_ydata(), [4.0, 3.0, 2.0])  # the same steps as observed
    assert "observed" not in {ln.get_label() for ln in mid.get_lines()}
    assert any("no observed discharge" in t.get_text() for t in mid.texts)
    assert len({ln.get_label(): ln for ln in mid.get_lines()}["same"].get_ydata()) == 4  # every step


def test_scatter_against_the_observations(observed_and_runs):
    basin, runs = observed_and_runs
    fig = plotting.plot_scatter(runs, basin)
    axes = np.array(fig.axes).reshape(2, 2)
    same, twice = axes[0, 1], axes[0, 0]
    assert same.get_xlabel() == "observed discharge (m³ s⁻¹)"
    assert same.get_ylabel() == "simulated discharge (m³ s⁻¹)"
    assert same.get_title() == "same\nOUT: NSE 1.00"
    o = np.array([1.0, 2.0, 1.5])
    nse = 1 - np.sum((2 * o - o) ** 2) / np.sum((o - o.mean()) ** 2)
    assert twice.get_title() == f"twice\nOUT: NSE {nse:.2f}"
    assert len(twice.collections[0].get_offsets()) == 3  # the missing step left out
    one_to_one = twice.get_lines()[0]
    assert one_to_one.get_label() == "1:1" and twice.get_xlim() == twice.get_ylim()
    assert twice.get_aspect() == 1.0
    assert axes[1, 0].get_title().endswith("NSE n/a") and any("no observed" in t.get_text() for t in axes[1, 0].texts)


def test_maps_outline_the_domain_and_each_catchment(basin):
    cp = xr.Dataset({"cp": (("y", "x"), np.full((3, 4), 100.0), {"units": "mm"})}, coords={"y": basin.y, "x": basin.x})
    fig = plotting.plot_parameter_maps({"m": cp}, ["cp"], basin)
    ax = panel_axes(fig)[0]
    outlines = {c.get_label(): c for c in ax.collections if c.get_label() in ("active cells", "catchment of OUT",
                                                                              "catchment of MID")}
    assert set(outlines) == {"active cells", "catchment of OUT", "catchment of MID"}
    assert len(outlines["active cells"].get_segments()) == 2 * (3 + 4)  # the grid's border, cell edge by cell edge
    mid = np.concatenate(outlines["catchment of MID"].get_segments())
    assert len(outlines["catchment of MID"].get_segments()) == 2 * (3 + 2)  # columns 0 and 1, every row
    x0, y1 = 700_000.0, 6_500_000.0
    assert (mid[:, 0].min(), mid[:, 0].max(), mid[:, 1].min(), mid[:, 1].max()) == (x0, x0 + 2000, y1 - 3000, y1)
    descriptors = plotting.plot_descriptors(basin)
    assert all(any(c.get_label() == "catchment of MID" for c in a.collections) for a in panel_axes(descriptors))


def test_sbs_histories_say_sub_iterations():
    history = pd.DataFrame({"cost": [1.0, 0.5]}, index=pd.Index([0, 1], name="iteration"))
    sbs = plotting.plot_histories({"m": SimpleNamespace(history=history, optimizer="sbs")})
    assert sbs.axes[0].get_xlabel().startswith("iteration (sbs: sub-iteration")
    adam = plotting.plot_histories({"m": SimpleNamespace(history=history, optimizer="adam")})
    assert adam.axes[0].get_xlabel() == "iteration"


@pytest.mark.smash
def test_gauge_table_names_the_outlet_wherever_it_is_and_tells_nested_from_separate_gauges():
    from hybridhydro.io import read_smash_dataset

    cance = read_smash_dataset("Cance", end="2014-09-15 06:00", progress=False)
    reordered = cance.isel(gauge=[2, 0, 1])  # the outlet V3524010 no longer first
    table = plotting.gauge_table(reordered)
    assert table.loc["V3524010", "role"] == "outlet"
    assert set(table.drop(index="V3524010")["role"]) == {"nested in V3524010"}
    # without the outlet, the two upstream gauges are separate catchments: the larger is the outlet
    upstream = plotting.gauge_table(cance.isel(gauge=[1, 2]))
    assert sorted(upstream["role"]) == ["outlet", "separate outlet"]
    larger = upstream["delineated area (km²)"].idxmax()
    assert upstream.loc[larger, "role"] == "outlet"
