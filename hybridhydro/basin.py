"""The basin Dataset: one schema shared by every reader, generator and stage.

A *basin* is an :class:`xarray.Dataset` that holds everything the model needs about a
catchment (or a set of nested catchments): forcing, observations, physical descriptors,
flow directions and the mesh fields derived from them. Every reader
(:func:`hybridhydro.read_smash_dataset`, :func:`hybridhydro.read_basin`), the synthetic
generator (:func:`hybridhydro.synthetic_basin`) and every notebook stage produce or consume
this one schema, so a user who brings a new basin only has to produce it once.

Dimensions
----------
``time``        end of each model time step (a step covers ``(time - dt, time]``)
``y``, ``x``    raster rows (north to south) and columns (west to east), cell centres in CRS units
``gauge``       gauge codes
``descriptor``  physical descriptor names

Variables (units in each variable's ``attrs["units"]``)
-------------------------------------------------------
See :data:`BASIN_VARIABLES`. Missing forcing and missing observations are ``NaN``.

Attributes
----------
``dt`` (s), ``name``, ``start_time`` and ``end_time`` (ISO 8601, the simulation window is
``(start_time, end_time]``), ``xres`` and ``yres`` (CRS units), ``epsg`` (0 where unknown).
The CRS is also carried by rioxarray's ``spatial_ref`` coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class VariableSpec:
    """What a basin variable is: its dimensions, dtype kind, unit and meaning."""

    dims: tuple[str, ...]
    kind: str  # numpy dtype kind(s) accepted: "f" float, "i" signed int, "b" bool, "U"/"O" str
    units: str
    long_name: str
    required: bool = True


BASIN_VARIABLES: dict[str, VariableSpec] = {
    "prcp": VariableSpec(("time", "y", "x"), "f", "mm", "precipitation depth over the time step"),
    "pet": VariableSpec(("time", "y", "x"), "f", "mm", "potential evapotranspiration depth over the time step"),
    "qobs": VariableSpec(("gauge", "time"), "f", "m3 s-1", "observed discharge at the gauge, mean over the time step"),
    "flwdir": VariableSpec(("y", "x"), "i", "1", "D8 flow direction, 1=N 2=NE 3=E 4=SE 5=S 6=SW 7=W 8=NW, 0=no data"),
    "active_cell": VariableSpec(("y", "x"), "b", "1", "cell belongs to the modelled domain"),
    "flwacc": VariableSpec(("y", "x"), "f", "m2", "upstream drainage area, the cell included"),
    "flwdst": VariableSpec(("y", "x"), "f", "m", "flow distance to the most downstream gauge (NaN off the network)"),
    "flwpar": VariableSpec(("y", "x"), "i", "1", "routing partition: 1 + longest upstream path in cells"),
    "dx": VariableSpec(("y", "x"), "f", "m", "cell size along x"),
    "dy": VariableSpec(("y", "x"), "f", "m", "cell size along y"),
    "descriptors": VariableSpec(("descriptor", "y", "x"), "f", "1", "physical descriptors (raw values, units per descriptor in attrs)", required=False),
    "gauge_x": VariableSpec(("gauge",), "f", "CRS units", "declared outlet x coordinate"),
    "gauge_y": VariableSpec(("gauge",), "f", "CRS units", "declared outlet y coordinate"),
    "gauge_row": VariableSpec(("gauge",), "i", "1", "row of the snapped outlet cell (0 = north)"),
    "gauge_col": VariableSpec(("gauge",), "i", "1", "column of the snapped outlet cell (0 = west)"),
    "area": VariableSpec(("gauge",), "f", "m2", "declared drainage area"),
    "area_dln": VariableSpec(("gauge",), "f", "m2", "delineated drainage area on the D8 grid"),
}

BASIN_ATTRS = ("dt", "name", "start_time", "end_time", "xres", "yres", "epsg")


def check_basin(ds: xr.Dataset, *, where: str = "basin") -> None:
    """Check that ``ds`` follows the basin schema; raise a ``ValueError`` that says what to fix.

    Parameters
    ----------
    ds
        The Dataset to check.
    where
        A name for the Dataset in error messages (a file path, a case name).
    """
    problems: list[str] = []
    for name, spec in BASIN_VARIABLES.items():
        if name not in ds:
            if spec.required:
                problems.append(f"variable {name!r} ({spec.long_name}, {spec.units}) is missing")
            continue
        var = ds[name]
        if tuple(var.dims) != spec.dims:
            problems.append(f"variable {name!r} has dims {tuple(var.dims)}, expected {spec.dims}")
        if var.dtype.kind not in spec.kind:
            problems.append(f"variable {name!r} has dtype {var.dtype}, expected kind {spec.kind!r}")
        if var.attrs.get("units") != spec.units:
            problems.append(f"variable {name!r} has units {var.attrs.get('units')!r}, expected {spec.units!r}")
    for attr in BASIN_ATTRS:
        if attr not in ds.attrs:
            problems.append(f"attribute {attr!r} is missing")
    if "dt" in ds.attrs and not float(ds.attrs["dt"]) > 0:
        problems.append(f"attribute 'dt' must be a positive number of seconds, got {ds.attrs['dt']!r}")
    if "active_cell" in ds and "flwdir" in ds and ds["active_cell"].dtype.kind == "b":
        codes = ds["flwdir"].values[ds["active_cell"].values]
        if codes.size and (codes.min() < 1 or codes.max() > 8):
            problems.append("active cells must carry a D8 code in 1..8 in 'flwdir'")
    if "time" in ds.dims and ds.sizes["time"] > 1:
        steps = np.diff(ds["time"].values).astype("timedelta64[s]").astype(np.int64)
        if "dt" in ds.attrs and not np.all(steps == int(ds.attrs["dt"])):
            problems.append(f"'time' is not evenly spaced by dt = {ds.attrs['dt']} s")
    if problems:
        raise ValueError(f"{where} does not follow the hybridhydro basin schema:\n  - " + "\n  - ".join(problems))


def annotate(ds: xr.Dataset) -> xr.Dataset:
    """Write ``units`` and ``long_name`` attrs from :data:`BASIN_VARIABLES` onto ``ds`` (in place)."""
    for name, spec in BASIN_VARIABLES.items():
        if name in ds:
            ds[name].attrs.setdefault("units", spec.units)
            ds[name].attrs.setdefault("long_name", spec.long_name)
    ds.attrs.setdefault("schema_version", SCHEMA_VERSION)
    return ds
