"""The figures and tables the notebooks show: maps on the basin's x/y grid, hydrographs, gauge tables.

Every function takes a basin Dataset (schema of :mod:`hybridhydro.basin`) or a labelled
DataArray, draws with matplotlib (headless is fine: the Agg backend), labels every axis with
its unit, and returns the figure or axes so that a notebook can save it
(:func:`save_figure`). Nothing here changes the data.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

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


def plot_gauges(ds: xr.Dataset, ax: Axes) -> list:
    """Mark each gauge: its declared outlet (ring) and the cell it was snapped to (triangle).

    Returns the legend handles.
    """
    if ds.sizes.get("gauge", 0) == 0:
        return []
    sx = ds["x"].values[ds["gauge_col"].values]
    sy = ds["y"].values[ds["gauge_row"].values]
    declared = ax.scatter(ds["gauge_x"], ds["gauge_y"], s=60, facecolors="none", edgecolors="k", label="declared outlet", zorder=3)
    snapped = ax.scatter(sx, sy, s=40, marker="^", color="tab:red", edgecolors="k", label="snapped cell", zorder=4)
    for code, x, y in zip(ds["gauge"].values, sx, sy):
        ax.annotate(str(code), (x, y), xytext=(4, 4), textcoords="offset points", fontsize="small")
    return [declared, snapped]


def plot_descriptors(ds: xr.Dataset, *, ncols: int = 3) -> Figure:
    """One map per physical descriptor, over the active cells, each with its own unit."""
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
    for ax, name in zip(axes.flat, names):
        unit = units.get(name, "")
        label = f"{name} ({_pretty_unit(unit)})" if unit else name
        map_field(ds["descriptors"].sel(descriptor=name), ax, mask=ds["active_cell"], label=label, title=name)
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


def plot_split(basin: xr.Dataset, split) -> Figure:
    """Observed discharge at every gauge with the calibration and validation periods shaded.

    ``split`` is a :class:`hybridhydro.protocol.Split`; calibration gauges are drawn solid,
    pseudo-ungauged (validation) gauges dashed.
    """
    fig, ax = plt.subplots(figsize=(10, 3.4), layout="constrained")
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
    ax.legend(fontsize="small", ncol=2)
    return fig


def plot_histories(results: dict, *, log: bool = False) -> Figure:
    """The calibration cost per iteration of each :class:`~hybridhydro.calibration.CalibrationResult`."""
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    for name, r in results.items():
        h = r.history
        ax.plot(h.index.values, h["cost"].values, marker="." if len(h) < 30 else None, label=f"{name} ({r.optimizer})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cost (dimensionless, e.g. 1 - NSE)")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize="small")
    return fig


def plot_parameter_maps(maps: dict[str, xr.Dataset], names, basin: xr.Dataset, *, width: float = 2.9) -> Figure:
    """A grid of parameter maps: one row per model, one column per parameter, one colour scale per column.

    ``maps`` holds each model's :meth:`CalibrationResult.parameter_maps` (units in attrs).
    """
    names = list(names)
    fig, axes = plt.subplots(len(maps), len(names), figsize=(width * len(names) + 1.0, 2.6 * len(maps) + 0.4),
                             layout="constrained", squeeze=False)
    active = basin["active_cell"].values.astype(bool)
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
            map_field(field, ax, mask=active, label=f"{n} ({unit})" if unit else n, norm=plt.Normalize(lo, hi),
                      title=f"{model}: {n}")
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
    ax.set_xlabel("time (end of step)")
    ax.set_ylabel("discharge (m³ s⁻¹)")
    ax.set_ylim(bottom=0)
    ax.set_title(str(gauge), loc="left", fontsize="medium")
    ax.legend(fontsize="x-small", ncol=2)
    return ax


def plot_scores(table: pd.DataFrame, metric: str = "nse", *, vmin: float = 0.0, vmax: float = 1.0) -> Figure:
    """A heat map of a comparison table (:func:`hybridhydro.protocol.comparison_table`), values written in."""
    values = table.values.astype(float)
    fig, ax = plt.subplots(figsize=(1.15 * values.shape[1] + 3.2, 0.42 * values.shape[0] + 1.6), layout="constrained")
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


# --- tables and files --------------------------------------------------------------------------


def gauge_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per gauge: declared and snapped outlet, declared and delineated drainage areas."""
    rows, cols = ds["gauge_row"].values, ds["gauge_col"].values
    sx, sy = ds["x"].values[cols], ds["y"].values[rows]
    area = ds["area"].values.astype(np.float64) / 1e6
    area_dln = ds["area_dln"].values.astype(np.float64) / 1e6
    table = pd.DataFrame(
        {
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
