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
