"""The figures and tables the notebooks show: maps on the basin's x/y grid, hydrographs, gauge tables.

Every function takes a basin Dataset (schema of :mod:`hybridhydro.basin`) or a labelled
DataArray, draws with matplotlib (headless is fine: the Agg backend), labels every axis with
its unit, and returns the figure or axes so that a notebook can save it
(:func:`save_figure`). Nothing here changes the data.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import offset_copy

_SUPERSCRIPTS = {"m2": "m²", "km2": "km²", "m3 s-1": "m³ s⁻¹", "km-1": "km⁻¹", "m-1": "m⁻¹"}


# --- maps --------------------------------------------------------------------------------------


def xy_labels(ds: xr.Dataset | xr.DataArray) -> tuple[str, str]:
    """Axis labels for the basin's x and y coordinates, with the CRS's unit (``x (m, EPSG:2154)``)."""
    unit, name = "", ""
    crs = _crs(ds)
    if crs is not None:
        unit = {"metre": "m", "meter": "m", "degree": "°"}.get(str(crs.linear_units or ""), str(crs.linear_units or ""))
        if crs.is_geographic:
            unit = "°"
        epsg = crs.to_epsg()
        name = f"EPSG:{epsg}" if epsg else str(crs.name or "")
    if not unit:
        unit = str(ds["x"].attrs.get("units", "")) if "x" in ds.coords else ""
    inside = ", ".join(part for part in (unit, name) if part)
    suffix = f" ({inside})" if inside else ""
    return f"x{suffix}", f"y{suffix}"


def map_field(
    field: xr.DataArray,
    ax: Axes | None = None,
    *,
    mask: xr.DataArray | np.ndarray | None = None,
    label: str | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    norm=None,
    colorbar: bool = True,
) -> Axes:
    """Draw a ``(y, x)`` field on the basin grid, one square per cell, north up.

    Parameters
    ----------
    field
        The values, with ``y`` and ``x`` coordinates (cell centres, CRS units).
    mask
        Cells to draw (True); the others are left blank (grey background).
    label
        Colour bar label (default: ``long_name (units)`` from the field's attrs).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
    values = field.transpose("y", "x")
    if mask is not None:
        values = values.where(np.asarray(mask, dtype=bool))
    mesh = ax.pcolormesh(values["x"], values["y"], values.values, cmap=cmap, norm=norm, shading="nearest")
    ax.set_facecolor("0.92")
    ax.set_aspect("equal")
    xlabel, ylabel = xy_labels(field)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.ticklabel_format(style="plain", useOffset=False)
    # CRS coordinates are long numbers: few x ticks, slanted, stay legible on narrow panels
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.tick_params(axis="x", labelrotation=30)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    if title:
        ax.set_title(title)
    if colorbar:
        bar = ax.figure.colorbar(mesh, ax=ax, shrink=0.85)
        if not isinstance(mesh.norm, LogNorm):
            # as many ticks whatever the bar's length: constrained layout measures the bar before it
            # places it beside a map of fixed aspect, and ticks that change with the length (0.0035
            # appearing) would outgrow the room it left, the label running into the next panel
            bar.locator = MaxNLocator(5)
        bar.set_label(label if label is not None else _quantity_label(field))
    return ax


def plot_flow_accumulation(ds: xr.Dataset, ax: Axes | None = None, *, gauges: bool = True) -> Axes:
    """Upstream drainage area of each active cell in km², on a log colour scale, with the gauges."""
    area_km2 = (ds["flwacc"] / 1e6).where(ds["flwacc"] > 0)
    active = ds["active_cell"].values
    shown = area_km2.values[active]
    vmin = float(np.nanmin(shown)) if shown.size and np.isfinite(shown).any() else 1e-3
    vmax = float(np.nanmax(shown)) if shown.size and np.isfinite(shown).any() else 1.0
    ax = map_field(
        area_km2,
        ax,
        mask=active,
        label="drainage area (km²)",
        title="Flow accumulation",
        cmap="Blues",
        norm=LogNorm(vmin=vmin, vmax=max(vmax, vmin * 10)),
    )
    if gauges:
        plot_gauges(ds, ax)
    return ax


def plot_active_cells(ds: xr.Dataset, ax: Axes | None = None, *, gauges: bool = True) -> Axes:
    """The modelled domain: active cells against the rest of the grid."""
    active = ds["active_cell"].astype(np.int8)
    ax = map_field(active, ax, cmap=ListedColormap(["0.85", "tab:green"]), colorbar=False)
    ny, nx = active.shape
    ax.set_title(f"Active cells: {int(active.sum())} of {ny} × {nx}")
    handles = [Patch(color="tab:green", label="active"), Patch(color="0.85", label="inactive")]
    if gauges:
        handles += plot_gauges(ds, ax)
    ax.legend(handles=handles, loc="best", fontsize="small")
    return ax


def plot_mesh(ds: xr.Dataset) -> Figure:
    """The flow accumulation (:func:`plot_flow_accumulation`) beside the active cells (:func:`plot_active_cells`)."""
    fig, (ax_acc, ax_active) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    plot_flow_accumulation(ds, ax_acc)
    plot_active_cells(ds, ax_active)
    return fig


def plot_gauges(ds: xr.Dataset, ax: Axes) -> list:
    """Mark each gauge: its declared outlet (ring) and the cell it was snapped to (triangle), with its code.

    Gauges close to one another (:func:`gauge_label_groups`) have their codes stacked one above
    the other beside the group, each joined to its triangle by a thin line, so that no two codes
    overlap whatever the map's size. Returns the legend handles.
    """
    if ds.sizes.get("gauge", 0) == 0:
        return []
    rows, cols = ds["gauge_row"].values, ds["gauge_col"].values
    sx, sy = ds["x"].values[cols], ds["y"].values[rows]
    declared = ax.scatter(ds["gauge_x"], ds["gauge_y"], s=60, facecolors="none", edgecolors="k", label="declared outlet", zorder=3)
    snapped = ax.scatter(sx, sy, s=40, marker="^", color="tab:red", edgecolors="k", label="snapped cell", zorder=4)
    codes = [str(c) for c in ds["gauge"].values]
    fontsize = "small"
    step = 1.35 * FontProperties(size=fontsize).get_size_in_points()  # one line of codes, in points
    for group in gauge_label_groups(rows, cols, ds.sizes["y"], ds.sizes["x"]):
        # the stack starts beside the group's north-east gauge; the southern gauges' codes lowest
        anchor = max(group, key=lambda g: (sy[g], sx[g]))
        for k, g in enumerate(sorted(group, key=lambda g: (sy[g], sx[g]))):
            where = offset_copy(ax.transData, fig=ax.figure, x=5, y=4 + k * step, units="points")
            leader = dict(arrowstyle="-", lw=0.6, color="0.25", shrinkA=0, shrinkB=3) if len(group) > 1 else None
            ax.annotate(codes[g], (sx[g], sy[g]), xytext=(sx[anchor], sy[anchor]), textcoords=where, fontsize=fontsize,
                        ha="left", va="bottom", zorder=5, arrowprops=leader)
    return [declared, snapped]


def gauge_label_groups(rows, cols, nrow: int, ncol: int) -> list[list[int]]:
    """The gauges whose codes would collide on a map, grouped (indices along ``gauge``).

    Two gauges join one group when they are within 6 % of the grid's height of each other (at
    least one row) and within 15 % of its width (at least two columns): about the height and
    the width of a code on a map of the usual size. Groups are closed under that relation.
    """
    rows, cols = np.asarray(rows), np.asarray(cols)
    near_rows, near_cols = max(1, round(0.06 * nrow)), max(2, round(0.15 * ncol))
    parent = list(range(rows.size))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(rows.size):
        for j in range(i + 1, rows.size):
            if abs(int(rows[i]) - int(rows[j])) <= near_rows and abs(int(cols[i]) - int(cols[j])) <= near_cols:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(rows.size):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def plot_catchment_outlines(ds: xr.Dataset, ax: Axes, *, gauges: bool = True, masks: np.ndarray | None = None) -> list:
    """Draw the outline of the modelled domain (the active cells, solid) and, with ``gauges``, of each
    gauge's catchment (dashed) along the cell edges, over a map of the basin grid.

    ``masks``: the ``(gauge, y, x)`` catchments (:func:`upstream_masks`), when already at hand.
    Returns the line collections (labelled ``active cells`` and ``catchment of <code>``).
    """
    x, y = ds["x"].values.astype(np.float64), ds["y"].values.astype(np.float64)
    lines = [_outline(ds["active_cell"].values.astype(bool), x, y, ax, color="k", lw=1.2, ls="-", label="active cells")]
    if gauges and ds.sizes.get("gauge", 0):
        masks = upstream_masks(ds) if masks is None else masks
        for code, mask in zip(ds["gauge"].values, masks):
            lines.append(_outline(mask, x, y, ax, color="0.15", lw=0.8, ls="--", label=f"catchment of {code}"))
    return lines


def _outline(mask: np.ndarray, x: np.ndarray, y: np.ndarray, ax: Axes, **style) -> LineCollection:
    """The edges between the cells of ``mask`` and the others (or the grid's border), as segments in CRS units."""
    hx = np.abs(x[1] - x[0]) / 2 if x.size > 1 else 0.5
    hy = np.abs(y[1] - y[0]) / 2 if y.size > 1 else 0.5
    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    sy = np.sign(y[1] - y[0]) if y.size > 1 else -1.0  # -1: rows run south, y decreasing
    segments = []
    r, c = np.nonzero(padded[1:-1, 1:-1])
    # a cell's edge is on the outline where its neighbour across that edge is outside
    for dr, dc, corners in (
        (-1, 0, ((-1, 1), (1, 1))),  # the neighbour in the row above (y + dy): the top edge
        (1, 0, ((-1, -1), (1, -1))),
        (0, -1, ((-1, -1), (-1, 1))),
        (0, 1, ((1, -1), (1, 1))),
    ):
        edge = ~padded[r + 1 + dr, c + 1 + dc]
        for rr, cc in zip(r[edge], c[edge]):
            (ax0, ay0), (ax1, ay1) = corners
            segments.append(((x[cc] + ax0 * hx, y[rr] - sy * ay0 * hy), (x[cc] + ax1 * hx, y[rr] - sy * ay1 * hy)))
    lines = LineCollection(segments, colors=style.pop("color"), linewidths=style.pop("lw"), linestyles=style.pop("ls"),
                           zorder=2.5, **style)
    ax.add_collection(lines, autolim=False)
    return lines


def plot_descriptors(ds: xr.Dataset, *, ncols: int = 3, outlines: bool = True) -> Figure:
    """One map per physical descriptor, over the active cells, each with its own unit; with
    ``outlines``, the active cells' and each gauge's catchment outlined (:func:`plot_catchment_outlines`)."""
    names = [str(n) for n in ds["descriptor"].values] if "descriptors" in ds else []
    if not names:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no descriptors in this basin", ha="center", va="center")
        return fig
    units = descriptor_units(ds)
    ncols = min(ncols, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.8 * nrows), layout="constrained", squeeze=False)
    masks = upstream_masks(ds) if outlines and ds.sizes.get("gauge", 0) else None
    for ax, name in zip(axes.flat, names):
        unit = units.get(name, "")
        label = f"{name} ({_pretty_unit(unit)})" if unit else name
        map_field(ds["descriptors"].sel(descriptor=name), ax, mask=ds["active_cell"], label=label, title=name)
        if outlines:
            plot_catchment_outlines(ds, ax, masks=masks)
    for ax in list(axes.flat)[len(names):]:
        ax.set_axis_off()
    return fig


def descriptor_units(ds: xr.Dataset) -> dict[str, str]:
    """The unit of each descriptor, from ``descriptors.attrs["descriptor_units"]`` (``"slope: degree; dd: km-1"``)
    or a ``units`` coordinate along ``descriptor``; descriptors without one are left out."""
    if "descriptors" not in ds:
        return {}
    if "units" in ds["descriptors"].coords and ds["descriptors"]["units"].dims == ("descriptor",):
        return {str(n): str(u) for n, u in zip(ds["descriptor"].values, ds["descriptors"]["units"].values)}
    text = ds["descriptors"].attrs.get("descriptor_units", "")
    units = {}
    for item in str(text).split(";"):
        name, sep, unit = item.partition(":")
        if sep and name.strip():
            units[name.strip()] = unit.strip()
    return units


# --- time series -------------------------------------------------------------------------------


def plot_hydrographs(
    discharge: xr.DataArray | None,
    rain: xr.DataArray | None = None,
    *,
    max_gauges: int = 12,
) -> Figure:
    """One panel per gauge: discharge (line, left axis) under the basin-mean rain (bars from the top).

    Parameters
    ----------
    discharge
        ``(gauge, time)`` discharge, units in ``attrs["units"]`` (m3 s-1); None to draw rain only.
    rain
        ``(gauge, time)`` basin-mean rain per step, units in ``attrs["units"]`` (mm).
    max_gauges
        Draw at most this many gauges (the first ones).
    """
    series = discharge if discharge is not None else rain
    if series is None:
        raise ValueError("plot_hydrographs needs discharge, rain, or both")
    gauges = [str(g) for g in series["gauge"].values[:max_gauges]]
    fig, axes = plt.subplots(
        max(1, len(gauges)), 1, figsize=(10, 2.4 * max(1, len(gauges)) + 0.6), sharex=True, layout="constrained", squeeze=False
    )
    for ax, gauge in zip(axes[:, 0], gauges):
        if discharge is not None:
            q = discharge.sel(gauge=gauge)
            ax.plot(q["time"].values, q.values, color="tab:blue", lw=1.0, label="observed discharge")
            ax.set_ylabel(f"discharge ({_pretty_unit(discharge.attrs.get('units', '?'))})")
            ax.set_ylim(bottom=0)
            if not np.isfinite(q.values).any():
                ax.text(0.5, 0.5, "no observed discharge", transform=ax.transAxes, ha="center", va="center", color="0.4")
        if rain is not None:
            r = rain.sel(gauge=gauge)
            rax = ax.twinx() if discharge is not None else ax
            # a step covers (time - dt, time]: draw each value over the step that ends at its time
            rax.fill_between(r["time"].values, 0, np.nan_to_num(r.values), step="pre", color="tab:gray", alpha=0.6, lw=0)
            top = float(np.nanmax(r.values)) if np.isfinite(r.values).any() else 1.0
            if discharge is not None:
                rax.set_ylim(3 * max(top, 1e-6), 0)  # rain hangs from the top, over the upper third
            rax.set_ylabel(f"basin rain ({_pretty_unit(rain.attrs.get('units', '?'))} per step)")
        ax.set_title(str(gauge), loc="left", fontsize="medium")
        date_axis(ax)
    axes[-1, 0].set_xlabel("time (end of step)")
    if len(series["gauge"]) > max_gauges:
        fig.suptitle(f"first {max_gauges} of {len(series['gauge'])} gauges")
    return fig


def catchment_mean(ds: xr.Dataset, var: str = "prcp") -> xr.DataArray:
    """Mean of a ``(time, y, x)`` field over the catchment of each gauge, as smash's ``mean_prcp``.

    Cells count equally (the cells of a projected grid have one area). Missing values (NaN)
    are left out; a step where the whole catchment is missing is NaN. Returns a
    ``(gauge, time)`` DataArray in the field's units.
    """
    from .mesh import catchment_means

    mean = catchment_means(ds[var].transpose("time", "y", "x").values, upstream_masks(ds))
    attrs = {"units": ds[var].attrs.get("units", ""), "long_name": f"catchment-mean {var}"}
    return xr.DataArray(mean, dims=("gauge", "time"), coords={"gauge": ds["gauge"], "time": ds["time"]}, attrs=attrs)


def upstream_masks(ds: xr.Dataset) -> np.ndarray:
    """``(gauge, y, x)`` booleans: the cells that drain through each gauge's cell (the cell included)."""
    from .mesh import upstream_masks as _masks

    return _masks(ds["flwdir"].values, ds["gauge_row"].values, ds["gauge_col"].values)


# --- calibration and comparison (stages 03-06) ---------------------------------------------------

_PERIOD_COLOURS = {"calibration": "tab:green", "validation": "tab:orange"}


def _shade_periods(ax: Axes, split) -> None:
    for name, (a, b) in (("calibration", split.calibration_period), ("validation", split.validation_period)):
        ax.axvspan(pd.Timestamp(a), pd.Timestamp(b), color=_PERIOD_COLOURS[name], alpha=0.12, lw=0,
                   label=f"{name} period")


def plot_split(basin: xr.Dataset, split, *, title: str | None = "observed discharge, calibration and validation periods") -> Figure:
    """Observed discharge at every gauge with the calibration and validation periods shaded.

    ``split`` is a :class:`hybridhydro.protocol.Split`; calibration gauges are drawn solid,
    pseudo-ungauged (validation) gauges dashed.
    """
    fig, ax = plt.subplots(figsize=(10, 3.4), layout="constrained")
    if title:
        ax.set_title(title)
    _shade_periods(ax, split)
    for g in basin["gauge"].values:
        code = str(g)
        held = code in split.validation_gauges
        q = basin["qobs"].sel(gauge=g)
        ax.plot(q["time"].values, q.values, lw=1.0, ls="--" if held else "-",
                label=f"{code} ({'pseudo-ungauged' if held else 'calibration'})")
    ax.set_xlabel("time (end of step)")
    ax.set_ylabel("observed discharge (m³ s⁻¹)")
    ax.set_ylim(bottom=0)
    date_axis(ax)
    ax.legend(fontsize="small", ncol=2)
    return fig


def plot_histories(results: dict, *, log: bool = False, title: str | None = None) -> Figure:
    """The calibration cost per iteration of each :class:`~hybridhydro.calibration.CalibrationResult`
    (smash's sbs: per sub-iteration, ``maxiter`` × the number of controls of them at most)."""
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    if title:
        ax.set_title(title)
    for name, r in results.items():
        h = r.history
        ax.plot(h.index.values, h["cost"].values, marker="." if len(h) < 30 else None, label=f"{name} ({r.optimizer})")
    # smash's sbs takes maxiter x (number of controls) sub-iterations, one history row each
    sbs = any(r.optimizer == "sbs" for r in results.values())
    ax.set_xlabel("iteration (sbs: sub-iteration, maxiter × controls in all)" if sbs else "iteration")
    ax.set_ylabel("cost (dimensionless, e.g. 1 - NSE)")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize="small")
    return fig


def plot_parameter_maps(maps: dict[str, xr.Dataset], names, basin: xr.Dataset, *, width: float = 2.9,
                        outlines: bool = True) -> Figure:
    """A grid of parameter maps: one row per model, one column per parameter, one colour scale per column.

    ``maps`` holds each model's :meth:`CalibrationResult.parameter_maps` (units in attrs). With
    ``outlines``, the active cells and each gauge's catchment are outlined (:func:`plot_catchment_outlines`).
    """
    names = list(names)
    fig, axes = plt.subplots(len(maps), len(names), figsize=(width * len(names) + 1.0, 2.6 * len(maps) + 0.4),
                             layout="constrained", squeeze=False)
    active = basin["active_cell"].values.astype(bool)
    masks = upstream_masks(basin) if outlines and basin.sizes.get("gauge", 0) else None
    for j, n in enumerate(names):
        values = [m[n].values[active] for m in maps.values() if n in m]
        finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([0.0])
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5 * (abs(lo) or 1.0), hi + 0.5 * (abs(hi) or 1.0)
        for i, (model, m) in enumerate(maps.items()):
            ax = axes[i, j]
            if n not in m:
                ax.set_axis_off()
                continue
            field = m[n].assign_coords(spatial_ref=basin["spatial_ref"]) if "spatial_ref" in basin.coords else m[n]
            unit = m[n].attrs.get("units", "")
            # model and parameter on two lines: one line is wider than a narrow panel and its colour bar
            map_field(field, ax, mask=active, label=f"{n} ({unit})" if unit else n, norm=plt.Normalize(lo, hi),
                      title=f"{model}\n{n}")
            if outlines:
                plot_catchment_outlines(basin, ax, masks=masks)
    return fig


def plot_model_hydrographs(
    simulations: dict[str, xr.Dataset],
    basin: xr.Dataset,
    gauge: str,
    *,
    start=None,
    end=None,
    split=None,
    ax: Axes | None = None,
) -> Axes:
    """Observed and simulated discharge (m³/s) of several models at one gauge, from ``start`` to ``end``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.4), layout="constrained")
    if split is not None:
        _shade_periods(ax, split)
    obs = basin["qobs"].sel(gauge=gauge, time=slice(start, end))
    ax.plot(obs["time"].values, obs.values, color="k", lw=1.6, label="observed")
    for name, sim in simulations.items():
        q = sim["q"].sel(gauge=gauge, time=slice(start, end))
        ax.plot(q["time"].values, q.values, lw=1.0, label=name)
    ax.set_xlim(obs["time"].values[0], obs["time"].values[-1])
    date_axis(ax)
    ax.set_xlabel("time (end of step)")
    ax.set_ylabel("discharge (m³ s⁻¹)")
    ax.set_ylim(bottom=0)
    ax.set_title(str(gauge), loc="left", fontsize="medium")
    ax.legend(fontsize="x-small", ncol=2)
    return ax


def plot_scores(
    table: pd.DataFrame, metric: str = "nse", *, vmin: float | None = None, vmax: float = 1.0, title: str | None = None
) -> Figure:
    """A heat map of a comparison table (:func:`hybridhydro.protocol.comparison_table`), values written in.

    The colour scale runs from ``vmin`` (default: 0, and 1 − √2 ≈ −0.41 for KGE, the KGE of
    the mean flow) to ``vmax``; ``title`` defaults to ``"<METRIC> per model, scenario and gauge"``.
    """
    if vmin is None:
        vmin = 1.0 - np.sqrt(2.0) if metric.lower() == "kge" else 0.0
    values = table.values.astype(float)
    fig, ax = plt.subplots(figsize=(1.15 * values.shape[1] + 3.2, 0.42 * values.shape[0] + 1.6), layout="constrained")
    ax.set_title(title if title is not None else f"{metric.upper()} per model, scenario and gauge")
    image = ax.imshow(values, cmap="RdYlGn", vmin=vmin, vmax=vmax, aspect="auto")
    labels = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in table.columns]
    ax.set_xticks(range(values.shape[1]), labels, rotation=35, ha="right")
    ax.set_yticks(range(values.shape[0]), [str(i) for i in table.index])
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize="small")
    ax.set_xlabel("scenario, gauge")
    ax.set_ylabel("model")
    fig.colorbar(image, ax=ax, label=f"{metric.upper()} (dimensionless)")
    return fig


def plot_simulations(
    simulations: dict[str, xr.Dataset],
    basin: xr.Dataset,
    gauges=None,
    *,
    split=None,
    start=None,
    end=None,
) -> Figure:
    """One panel per gauge: observed discharge and that of each run (m³ s⁻¹), from ``start`` to ``end``.

    ``gauges``: codes (default: every gauge). With a ``split``, its periods are shaded and its
    pseudo-ungauged gauges say so in their title.
    """
    gauges = [str(g) for g in (basin["gauge"].values if gauges is None else gauges)]
    fig, axes = plt.subplots(max(1, len(gauges)), 1, figsize=(10, 3.2 * max(1, len(gauges))), layout="constrained",
                             squeeze=False)
    for ax, gauge in zip(axes[:, 0], gauges):
        plot_model_hydrographs(simulations, basin, gauge, start=start, end=end, split=split, ax=ax)
        if split is not None and gauge in split.validation_gauges:
            ax.set_title(f"{gauge} (pseudo-ungauged)", loc="left", fontsize="medium")
    return fig


def plot_events(simulations: dict[str, xr.Dataset], basin: xr.Dataset, events: pd.DataFrame, *, split=None) -> Figure:
    """One panel per row of ``events`` (indexed by gauge, with ``start`` and ``end``: e.g.
    :func:`hybridhydro.report.largest_events`): observed and simulated discharge over the event."""
    fig, axes = plt.subplots(max(1, len(events)), 1, figsize=(10, 3.3 * max(1, len(events))), layout="constrained",
                             squeeze=False)
    for ax, (gauge, ev) in zip(axes[:, 0], events.iterrows()):
        plot_model_hydrographs(simulations, basin, str(gauge), start=ev["start"], end=ev["end"], ax=ax)
        where = "" if split is None else (" (pseudo-ungauged)" if gauge in split.validation_gauges else " (calibration gauge)")
        ax.set_title(f"{gauge}{where}: event {ev['start']} .. {ev['end']}", loc="left", fontsize="medium")
    if not len(events):
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no event", ha="center", va="center")
    return fig


def _observed_and_simulated(basin: xr.Dataset, sim: xr.Dataset, gauge: str, period) -> tuple[np.ndarray, np.ndarray]:
    """Observed and simulated discharge (m³ s⁻¹) at ``gauge`` over ``period`` (``(start, end]``, None:
    every step), on the basin's steps; a missing observation (NaN, or negative as smash writes it) is NaN."""
    from .periods import period_mask

    times = basin["time"].values
    inside = period_mask(times, period)
    obs = basin["qobs"].sel(gauge=gauge).values[inside].astype(np.float64)
    obs = np.where(obs >= 0, obs, np.nan)
    q = sim["q"].sel(gauge=gauge).reindex(time=times[inside]).values.astype(np.float64)
    return obs, q


def _panels(n: int, ncols: int, size: tuple[float, float]):
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols + 0.4, size[1] * nrows + 0.4), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def exceedance(values) -> tuple[np.ndarray, np.ndarray]:
    """The flow-duration curve of a series: its finite values from the largest down, and the
    probability (%) that each is exceeded or equalled, ``100 k / (n + 1)`` for the k-th largest of
    ``n`` (Weibull's plotting position)."""
    v = np.asarray(values, dtype=np.float64)
    v = np.sort(v[np.isfinite(v)])[::-1]
    return 100.0 * np.arange(1, v.size + 1) / (v.size + 1), v


def plot_flow_duration(simulations: dict[str, xr.Dataset], basin: xr.Dataset, gauges=None, *, period=None,
                       ncols: int = 3, title: str | None = None) -> Figure:
    """Flow-duration curves, one panel per gauge: the discharge (m³ s⁻¹, log scale) against the
    probability that it is exceeded (%), observed (black) and simulated by each run.

    The simulated curves use only the steps where the gauge has an observation, so that every
    curve describes the same steps; at a gauge without any observation the simulated curves use
    every step of ``period`` (``(start, end]``; None: the whole run) and the panel says so.
    Discharge of 0 has no place on the log scale and is left out of the drawing (not of the ranks);
    the axis spans at most four decades below the largest flow.
    """
    gauges = [str(g) for g in (basin["gauge"].values if gauges is None else gauges)]
    fig, axes = _panels(len(gauges), ncols, (3.6, 3.0))
    for ax, gauge in zip(axes.flat, gauges):
        obs = None
        for name, sim in simulations.items():
            obs, q = _observed_and_simulated(basin, sim, gauge, period)
            seen = np.isfinite(obs)
            ax.plot(*exceedance(q[seen] if seen.any() else q), lw=1.0, label=name)
        if obs is None:
            obs = _observed_and_simulated(basin, xr.Dataset({"q": basin["qobs"]}), gauge, period)[0]
        if np.isfinite(obs).any():
            ax.plot(*exceedance(obs), color="k", lw=1.6, label="observed", zorder=3)
        else:
            ax.text(0.5, 0.9, "no observed discharge: simulated over every step", transform=ax.transAxes,
                    ha="center", va="top", fontsize="small", color="0.4")
        ax.set_yscale("log", nonpositive="mask")
        drawn = np.concatenate([np.asarray(ln.get_ydata(), np.float64) for ln in ax.get_lines()] or [np.zeros(0)])
        positive = drawn[drawn > 0]
        if positive.size:  # four decades below the largest flow: a run that dries up would squash the rest
            top = float(positive.max())
            ax.set_ylim(max(float(positive.min()), 1e-4 * top) / 1.5, 1.5 * top)
        ax.set_xlim(0, 100)
        ax.set_xlabel("exceedance probability (%)")
        ax.set_ylabel("discharge (m³ s⁻¹)")
        ax.set_title(str(gauge), loc="left", fontsize="medium")
        ax.grid(True, which="major", lw=0.3, color="0.8")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    if title:
        fig.suptitle(title)
    return fig


def plot_scatter(simulations: dict[str, xr.Dataset], basin: xr.Dataset, gauges=None, *, period=None,
                 title: str | None = None) -> Figure:
    """Simulated against observed discharge (m³ s⁻¹), one panel per gauge (rows) and run (columns):
    one point per step with an observation, the 1:1 line, equal axes, and the run's NSE over those
    steps in the panel's title.

    ``period``: ``(start, end]`` (None: the whole run). A gauge without any observation gets an
    empty panel that says so (NSE n/a).
    """
    from .cost.metrics import metric

    gauges = [str(g) for g in (basin["gauge"].values if gauges is None else gauges)]
    names = list(simulations)
    fig, axes = plt.subplots(max(1, len(gauges)), max(1, len(names)), figsize=(2.9 * max(1, len(names)) + 0.4,
                             2.9 * max(1, len(gauges)) + 0.4), squeeze=False, layout="constrained")
    for i, gauge in enumerate(gauges):
        for j, name in enumerate(names):
            ax = axes[i, j]
            obs, q = _observed_and_simulated(basin, simulations[name], gauge, period)
            pair = np.isfinite(obs) & np.isfinite(q)
            # the whole period, unpaired steps as missing: one array shape, one compilation for every panel
            nse = float(metric("nse", np.where(pair, obs, np.nan), np.where(pair, q, 0.0))) if pair.any() else np.nan
            if pair.any():
                ax.scatter(obs[pair], q[pair], s=9, alpha=0.5, lw=0, color="tab:blue", rasterized=True)
                top = 1.05 * float(max(obs[pair].max(), q[pair].max(), 1e-6))
            else:
                ax.text(0.5, 0.5, "no observed discharge", transform=ax.transAxes, ha="center", va="center",
                        fontsize="small", color="0.4")
                top = 1.0
            ax.plot([0, top], [0, top], color="k", lw=0.8, ls="--", label="1:1")
            ax.set_xlim(0, top)
            ax.set_ylim(0, top)
            ax.set_aspect("equal", adjustable="box")
            ax.set_xlabel("observed discharge (m³ s⁻¹)")
            ax.set_ylabel("simulated discharge (m³ s⁻¹)")
            ax.set_title(f"{name}\n{gauge}: NSE {nse:.2f}" if np.isfinite(nse) else f"{name}\n{gauge}: NSE n/a",
                         fontsize="medium")
    if title:
        fig.suptitle(title)
    return fig


# --- inside a run (stages 02 and 05) ------------------------------------------------------------


def _when(value) -> str:
    return str(value)[:16].replace("T", " ")


def _level_label(name: str, field: xr.DataArray, prefix: str = "") -> str:
    unit = field.attrs.get("units", "1")
    return f"{prefix}{name} ({'mm' if unit == 'mm' else 'fraction of capacity'})"


def _name(run: xr.Dataset) -> str:
    """The run's structure as written in the parameters (``gr4-lr``: without the ``zero-`` snow module)."""
    from .structure_name import structure_label

    return structure_label(str(run.attrs.get("structure", "")))


def _structure(run: xr.Dataset):
    from .structure_name import parse_structure

    return parse_structure(run.attrs["structure"])


def plot_state_maps(result: xr.Dataset, basin: xr.Dataset, *, steps: int = 3) -> Figure:
    """The stores of a run (``return_states=True``) at ``steps`` times spread over the period: one
    row per store, as a fraction of its capacity (``he``, ``hs``, ``hlr`` in mm)."""
    names = [n for n in _structure(result).states if n in result and "time" in result[n].dims]
    times = np.linspace(0, result.sizes["time"] - 1, steps).round().astype(int)
    fig, axes = plt.subplots(len(names), len(times), figsize=(3.2 * len(times), 2.8 * len(names)), squeeze=False,
                             layout="constrained")
    for row, name in enumerate(names):
        for col, k in enumerate(times):
            field = result[name].isel(time=k)
            map_field(field, axes[row, col], mask=basin["active_cell"], label=_level_label(name, field),
                      title=_when(field["time"].values))
    return fig


def plot_flux_maps(result: xr.Dataset, basin: xr.Dataset, which: str = "step") -> Figure:
    """The internal fluxes of a run (``return_fluxes=True``), one map each.

    ``which="step"``: at the step of heaviest basin rain (``pn``), in mm per step (``qt`` in
    m³ s⁻¹); ``"total"``: over the whole period, depths summed (mm), discharges averaged.
    """
    if which not in ("step", "total"):
        raise ValueError(f"which must be 'step' or 'total', got {which!r}")
    active = basin["active_cell"] == 1
    wettest = int(result["pn"].where(active).mean(("y", "x")).argmax("time")) if "pn" in result else 0
    when = _when(result["time"].values[wettest])
    names = [n for n in _structure(result).fluxes if n in result and n not in ("qup", "qim1j")]
    ncols = max(1, min(4, len(names)))
    nrows = max(1, -(-len(names) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.9 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        field = result[name]
        in_m3s = field.attrs.get("units") == "m3 s-1"
        if which == "step":
            shown, label = field.isel(time=wettest), f"{name} ({'m³ s⁻¹' if in_m3s else 'mm per step'})"
        else:  # depths add up over the period; a discharge is averaged
            shown = (field.mean("time") if in_m3s else field.sum("time")).where(active)
            label = f"{name} mean (m³ s⁻¹)" if in_m3s else f"{name} total (mm)"
        map_field(shown, ax, mask=basin["active_cell"], label=label, title=when if which == "step" else "whole period")
    what = f"step of heaviest rain ({when})" if which == "step" else "whole period"
    fig.suptitle(f"{_name(result)} fluxes: {what}")
    return fig


def plot_newton(run: xr.Dataset, basin: xr.Dataset, *, title: str | None = None) -> Figure:
    """The implicit solver of a gr4_ode / gr4_ude run: updates per cell-step (up to the solver's
    limit), the residual it leaves, the mean updates per cell, and the share of steps without a root."""
    from .report import iteration_limit

    it = run["newton_iterations"]
    solved = np.isfinite(it.values) & (it.values > 0)
    residual = run["newton_residual"].values[solved]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6), layout="constrained")
    axes[0].hist(it.values[solved], bins=np.arange(0.5, iteration_limit(run) + 1.5), color="tab:blue")
    axes[0].set_xlabel("Newton updates per cell and step")
    axes[0].set_ylabel("count (cell-steps)")
    axes[1].hist(np.log10(np.maximum(residual, 1e-12)), bins=40, color="tab:orange")
    axes[1].set_xlabel("log10 residual of the implicit step (dimensionless)")
    axes[1].set_ylabel("count (cell-steps)")
    title = title or _name(run)
    map_field(it.where(it > 0).mean("time"), axes[2], mask=basin["active_cell"],
              label="mean Newton updates per step (count)", title=title)
    no_root = 100 * (1 - run["ode_root_exists"].where(it > 0).mean("time"))
    map_field(no_root, axes[3], mask=basin["active_cell"], label="steps without a root (%)",
              title="solvability of the implicit step")
    return fig


def _corrections(run: xr.Dataset) -> list[str]:
    from .report import correction_names

    return correction_names(run)


def plot_corrections(runs: dict[str, xr.Dataset], basin: xr.Dataset) -> Figure:
    """Per hybrid run: the domain mean of each network correction at every step (dimensionless),
    under the basin-mean rain (bars from the top)."""
    active = basin["active_cell"] == 1
    rain = basin["prcp"].where(active).mean(("y", "x"))
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.8 * len(runs)), squeeze=False, sharex=True,
                             layout="constrained")
    for ax, (name, run) in zip(axes[:, 0], runs.items()):
        names = _corrections(run)
        for v in names:
            ax.plot(basin["time"].values, run[v].where(active).mean(("y", "x")).values, lw=1.0,
                    label=f"f ({v.removeprefix('correction_')})")
        ax.set_ylabel("correction (-)")
        ax.set_title(name, loc="left", fontsize="medium")
        ax.legend(loc="upper left", ncol=max(1, len(names)), fontsize="small")
        twin = ax.twinx()
        twin.bar(basin["time"].values, rain.values, width=float(basin.attrs["dt"]) / 86400, color="tab:gray", alpha=0.3)
        twin.set_ylabel("basin rain (mm per step)")
        twin.invert_yaxis()
        date_axis(ax)
    axes[-1, 0].set_xlabel("time (end of step)")
    return fig


def plot_correction_maps(run: xr.Dataset, basin: xr.Dataset, *, title: str | None = None) -> Figure:
    """Each network correction of a hybrid run averaged over the period, per cell (dimensionless)."""
    names = _corrections(run)
    active = basin["active_cell"] == 1
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(3.4 * max(1, len(names)), 3.0), squeeze=False,
                             layout="constrained")
    for ax, v in zip(axes[0], names):
        map_field(run[v].mean("time").where(active), ax, mask=basin["active_cell"], cmap="RdBu_r",
                  label=f"mean f ({v.removeprefix('correction_')}) (-)", title=title or _name(run))
    return fig


def plot_hybrid_vs_parent(runs: dict[str, xr.Dataset], parents: dict[str, xr.Dataset], basin: xr.Dataset, gauge: str) -> Figure:
    """One panel per hybrid: observed discharge, its parent's and its own at ``gauge`` (m³ s⁻¹)."""
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.6 * len(runs)), squeeze=False, sharex=True,
                             layout="constrained")
    t = basin["time"].values
    for ax, (name, run) in zip(axes[:, 0], runs.items()):
        parent = parents[name]
        ax.plot(t, basin["qobs"].sel(gauge=gauge).values, color="k", lw=1.0, label="observed")
        ax.plot(t, parent["q"].sel(gauge=gauge).values, lw=1.0, label=f"parent ({_name(parent)})")
        ax.plot(t, run["q"].sel(gauge=gauge).values, lw=1.0, ls="--", label=name)
        ax.set_ylabel("discharge (m³ s⁻¹)")
        ax.set_title(f"{gauge}: {name}", loc="left", fontsize="medium")
        ax.legend(loc="upper right", fontsize="small")
        date_axis(ax)
    axes[-1, 0].set_xlabel("time (end of step)")
    return fig


def plot_state_changes(run: xr.Dataset, parent: xr.Dataset, basin: xr.Dataset, *, title: str | None = None) -> Figure:
    """The final stores of a run minus those of another (a hybrid and its parent), per cell:
    fractions of capacity (mm for ``he``, ``hs``, ``hlr``); the interception store is left out."""
    names = [n for n in _structure(run).states if n != "hi" and f"{n}_final" in run and f"{n}_final" in parent]
    active = basin["active_cell"] == 1
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(3.4 * max(1, len(names)), 3.0), squeeze=False,
                             layout="constrained")
    for ax, n in zip(axes[0], names):
        final = run[f"{n}_final"]
        map_field((final - parent[f"{n}_final"]).where(active), ax, mask=basin["active_cell"], cmap="RdBu_r",
                  label=_level_label(n, final, "Δ final "), title=title or _name(run))
    return fig


def plot_solvers(runs: dict[str, xr.Dataset], reference: xr.Dataset, basin: xr.Dataset, gauge: str) -> Figure:
    """Discharge at ``gauge`` of each solver's run against the reference run (left), and the
    Newton updates per cell-step of the implicit solvers (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), layout="constrained")
    t = basin["time"].values
    label = f"{reference.attrs.get('ode_solver', 'reference')}, {reference.attrs.get('ode_substeps', '?')} sub-steps (reference)"
    axes[0].plot(t, reference["q"].sel(gauge=gauge).values, color="k", lw=1.5, label=label)
    for solver, run in runs.items():
        axes[0].plot(t, run["q"].sel(gauge=gauge).values, lw=1.0, ls="--", label=solver)
    axes[0].set_xlabel("time (end of step)")
    axes[0].set_ylabel("discharge (m³ s⁻¹)")
    date_axis(axes[0])
    axes[0].set_title(f"{gauge}: {_name(reference)}", loc="left", fontsize="medium")
    axes[0].legend(fontsize="small")
    for solver in ("newton", "conservative", "implicit"):
        if solver in runs:
            it = runs[solver]["newton_iterations"].values
            it = it[np.isfinite(it) & (it > 0)]
            if it.size:
                axes[1].hist(it, bins=np.arange(0.5, it.max() + 1.5), alpha=0.6, label=solver)
    axes[1].set_xlabel("Newton updates per cell and step")
    axes[1].set_ylabel("count (cell-steps)")
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend()
    return fig


# --- models and descriptors (stages 04-06) --------------------------------------------------------


def plot_parameters_vs_descriptors(maps: dict[str, xr.Dataset], basin: xr.Dataset, names) -> Figure:
    """Each cell's parameter against each of its descriptors (normalised to [0, 1], as the
    regionalisation networks see them): one row per parameter, one column per descriptor."""
    from .mapping import transform_descriptors

    names = list(names)
    descriptors = [str(d) for d in basin["descriptor"].values]
    active = basin["active_cell"].values.astype(bool)
    scaled = transform_descriptors(basin, "normalize")[active]  # (cell, descriptor)
    fig, axes = plt.subplots(len(names), len(descriptors), figsize=(2.8 * len(descriptors), 2.3 * len(names)),
                             layout="constrained", squeeze=False)
    for i, p in enumerate(names):
        unit = next((m[p].attrs.get("units", "") for m in maps.values() if p in m), "")
        for j, d in enumerate(descriptors):
            ax = axes[i, j]
            for model, m in maps.items():
                if p in m:
                    ax.scatter(scaled[:, j], m[p].values[active], s=4, alpha=0.5, label=model)
            ax.set_xlabel(f"{d} (normalised, dimensionless)")
            ax.set_ylabel(f"{p} ({unit})" if unit else p)
    if maps:
        axes[0, 0].legend(fontsize="x-small", markerscale=3)
    return fig


def plot_water_balances(table: pd.DataFrame) -> Figure:
    """Where each run sends the rain, over the whole domain (mm): evaporation, outflow, storage
    change and the exchange stacked against the rain (dashed).

    ``table``: :func:`hybridhydro.report.balance_table` of several runs (one row each, in mm).
    """
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(table) + 1.4), layout="constrained")
    names = [str(i) for i in table.index]
    left = np.zeros(len(table))
    for term in ("evaporation", "outflow", "storage_change"):
        values = table[term].to_numpy(float)
        ax.barh(names, values, left=left, label=term)
        left = left + values
    ax.barh(names, -table["exchange"].to_numpy(float), left=left, label="exchange (loss > 0)", alpha=0.6)
    ax.axvline(float(table["rain"].iloc[0]), color="k", ls="--", label="rain")
    ax.set_xlabel("water over the run, domain (mm)")
    ax.set_ylabel("model")
    ax.legend(fontsize="small", loc="lower right")
    return fig


# --- tables and files --------------------------------------------------------------------------


def gauge_roles(ds: xr.Dataset) -> list[str]:
    """Each gauge's place in the network: ``outlet`` (the gauge draining the largest area, wherever
    it is in the table), ``nested in <code>`` (the smallest gauge whose catchment holds it), or
    ``separate outlet`` (a catchment of its own, not inside another gauge's)."""
    from .mesh import upstream_masks
    from .periods import most_downstream_gauge

    rows, cols = ds["gauge_row"].values.astype(int), ds["gauge_col"].values.astype(int)
    codes = [str(g) for g in ds["gauge"].values]
    masks = upstream_masks(ds["flwdir"].values, rows, cols)
    sizes = masks.reshape(len(codes), -1).sum(axis=1)
    main = int(most_downstream_gauge(ds))
    roles = []
    for g in range(len(codes)):
        if g == main:
            roles.append("outlet")
            continue
        holders = [h for h in range(len(codes)) if h != g and masks[h, rows[g], cols[g]] and sizes[h] > sizes[g]]
        roles.append(f"nested in {codes[min(holders, key=lambda h: sizes[h])]}" if holders else "separate outlet")
    return roles


def gauge_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per gauge: its role (the outlet, nested in another gauge, or a separate outlet),
    declared and snapped position, declared and delineated drainage areas (km²)."""
    rows, cols = ds["gauge_row"].values, ds["gauge_col"].values
    sx, sy = ds["x"].values[cols], ds["y"].values[rows]
    area = ds["area"].values.astype(np.float64) / 1e6
    area_dln = ds["area_dln"].values.astype(np.float64) / 1e6
    table = pd.DataFrame(
        {
            "role": gauge_roles(ds),
            "row": rows,
            "col": cols,
            "snap distance (CRS units)": np.hypot(sx - ds["gauge_x"].values, sy - ds["gauge_y"].values),
            "declared area (km²)": area,
            "delineated area (km²)": area_dln,
            "area difference (%)": 100 * (area_dln - area) / np.where(area > 0, area, np.nan),
        },
        index=pd.Index([str(g) for g in ds["gauge"].values], name="gauge"),
    )
    return table.round(2)


def save_figure(fig: Figure, output_dir: str | Path, name: str, *, dpi: int = 120, format: str = "png") -> Path:
    """Save ``fig`` as ``<output_dir>/figures/<name>.<format>`` and return the path."""
    path = Path(output_dir) / "figures" / f"{name}.{format}"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format=format, bbox_inches="tight")
    return path


def date_axis(ax: Axes) -> Axes:
    """Date ticks that never collide: :class:`~matplotlib.dates.AutoDateLocator` (3 to 7 ticks)
    written by :class:`~matplotlib.dates.ConciseDateFormatter` (``Feb``, ``03``, ``12:00``; the
    year or the day once, at the axis' end)."""
    locator = mdates.AutoDateLocator(minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    return ax


# --- helpers -----------------------------------------------------------------------------------


def _crs(obj: xr.Dataset | xr.DataArray):
    if "spatial_ref" not in obj.coords:
        return None
    try:
        import rioxarray  # noqa: F401  (registers the .rio accessor)

        return obj.rio.crs
    except Exception:  # noqa: BLE001  (an unreadable CRS only costs the unit in a label)
        return None


def _quantity_label(field: xr.DataArray) -> str:
    name = field.attrs.get("long_name", field.name or "")
    units = field.attrs.get("units")
    return f"{name} ({_pretty_unit(units)})" if units else str(name)


def _pretty_unit(unit: str) -> str:
    return _SUPERSCRIPTS.get(str(unit), str(unit))
