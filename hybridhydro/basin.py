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
The CRS is also carried by rioxarray's ``spatial_ref`` coordinate. Optional:
``forcing_plausibility`` (``"error"``, the default, ``"warn"`` or ``"off"``; see below), and
``spinup_end`` (ISO 8601): a basin read with a spin-up (``basin.spinup_start``,
:func:`hybridhydro.open_basin`) holds warm-up steps up to it, kept out of every period
(:func:`hybridhydro.protocol.make_split`).

Optional variables ``initial_<state>`` (y, x), e.g. ``initial_hp`` (unit ``"1"``: a level
normalised by its store's capacity) or ``initial_hlr`` (mm): the states every run on the basin
starts from unless given others (``basin.initial_states``; :mod:`hybridhydro.states`).

What every run checks (:func:`check_run_basin`, :func:`check_forcing_values`)
------------------------------------------------------------------------------
:func:`hybridhydro.prepare_run` (under ``simulate``, ``calibrate`` and ``water_balance``)
checks the basin once, before and after gathering the forcing onto the active cells; a
problem is a ``ValueError`` that names the variable, the step (time label) and the cell
(row, col), and says how to fix it:

* the variables a run needs (``prcp``, ``pet`` with dims ``(time, y, x)``, the mesh fields)
  and the attribute ``dt`` (a positive number of seconds);
* the time axis: datetimes, strictly increasing, no duplicate, evenly spaced by ``dt``
  (``dt = 86400`` on hourly labels is an error that gives the right ``dt``);
* forcing units: ``mm`` (depth over the step; ``kg m-2`` and spellings of millimetre are
  accepted; no ``units`` attribute is read as mm); any other unit is an error;
* values: ``+inf``/``-inf`` are errors (never data); ``NaN`` is missing data; negative
  values are missing too, as smash reads them (a warning says how many); rain or PET
  missing on every active cell at every step is an error; steps missing on every active
  cell get a warning;
* physical plausibility: rain above the world-record envelope for the step's duration,
  :data:`RAIN_RECORD_MM` x (duration in hours) ** :data:`RAIN_RECORD_EXPONENT` (Jennings
  1950, the envelope of the WMO's manual on probable maximum precipitation: 422 mm in one
  hour, 1 900 mm in a day), and PET above :data:`PET_RECORD_MM_PER_HOUR` mm per hour of the
  step (the sun's energy at noon evaporates about 1.5 mm per hour), get a warning; more than
  :data:`IMPLAUSIBLE_FACTOR` times that limit on at least :data:`IMPLAUSIBLE_SHARE` of the
  active cells at one step is an error (a unit or conversion-factor slip: rain x 1000).
  Fewer cells (an isolated radar artefact) get a warning. A stress test beyond that (a storm
  of 5 000 mm/h) sets ``basin.attrs["forcing_plausibility"] = "warn"`` (warnings only) or
  ``"off"``.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Mapping
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
    standard_name: str = ""  # the CF standard name, "" where CF has none
    cell_methods: str = ""  # CF cell_methods along time ("time: sum": an amount over the step)


BASIN_VARIABLES: dict[str, VariableSpec] = {
    "prcp": VariableSpec(("time", "y", "x"), "f", "mm", "precipitation depth over the time step",
                         standard_name="lwe_thickness_of_precipitation_amount", cell_methods="time: sum"),
    "pet": VariableSpec(("time", "y", "x"), "f", "mm", "potential evapotranspiration depth over the time step",
                        cell_methods="time: sum"),  # CF's water_potential_evaporation_amount is in kg m-2
    "qobs": VariableSpec(("gauge", "time"), "f", "m3 s-1", "observed discharge at the gauge, mean over the time step",
                         standard_name="water_volume_transport_in_river_channel", cell_methods="time: mean"),
    "flwdir": VariableSpec(("y", "x"), "i", "1", "D8 flow direction, 1=N 2=NE 3=E 4=SE 5=S 6=SW 7=W 8=NW, 0=no data"),
    "active_cell": VariableSpec(("y", "x"), "b", "1", "cell belongs to the modelled domain"),
    "flwacc": VariableSpec(("y", "x"), "f", "m2", "upstream drainage area, the cell included"),
    "flwdst": VariableSpec(("y", "x"), "f", "m", "flow distance to the most downstream gauge (NaN off the network)"),
    "flwpar": VariableSpec(("y", "x"), "i", "1", "routing partition: 1 + longest upstream path in cells"),
    "dx": VariableSpec(("y", "x"), "f", "m", "cell size along x"),
    "dy": VariableSpec(("y", "x"), "f", "m", "cell size along y"),
    "descriptors": VariableSpec(("descriptor", "y", "x"), "f", "1", "physical descriptors (raw values, units per descriptor in attrs)", required=False),
    # "CRS units": the unit of the basin's CRS; files name it (m, degrees_east): hybridhydro.io.cf.to_cf
    "gauge_x": VariableSpec(("gauge",), "f", "CRS units", "declared outlet x coordinate"),
    "gauge_y": VariableSpec(("gauge",), "f", "CRS units", "declared outlet y coordinate"),
    "gauge_row": VariableSpec(("gauge",), "i", "1", "row of the snapped outlet cell (0 = north)"),
    "gauge_col": VariableSpec(("gauge",), "i", "1", "column of the snapped outlet cell (0 = west)"),
    "area": VariableSpec(("gauge",), "f", "m2", "declared drainage area"),
    "area_dln": VariableSpec(("gauge",), "f", "m2", "delineated drainage area on the D8 grid"),
}

BASIN_ATTRS = ("dt", "name", "start_time", "end_time", "xres", "yres", "epsg")

#: Units accepted for a forcing depth (mm of water over the step). No ``units`` attribute reads as mm.
DEPTH_UNITS = frozenset({"mm", "millimeter", "millimeters", "millimetre", "millimetres", "mm/step", "mm per step",
                         "mm step-1", "kg m-2", "kg/m2", "kg m**-2", "kg.m-2"})
#: World-record rain envelope (Jennings 1950; WMO-No. 1045, 2009): ``RAIN_RECORD_MM x D ** RAIN_RECORD_EXPONENT``
#: mm over D hours (422 mm in 1 h, 1 900 mm in 24 h).
RAIN_RECORD_MM = 422.0
RAIN_RECORD_EXPONENT = 0.475
#: The most PET a step can hold, in mm per hour of the step (clear-sky noon radiation, ~1 000 W m-2,
#: evaporates ~1.5 mm per hour).
PET_RECORD_MM_PER_HOUR = 2.0
#: Forcing above this many times its limit ...
IMPLAUSIBLE_FACTOR = 3.0
#: ... on at least this share of the active cells (and at least one cell) at one step is an error.
IMPLAUSIBLE_SHARE = 0.01
#: ``basin.attrs[PLAUSIBILITY_ATTR]``: what implausible forcing gives (``"error"`` when absent).
PLAUSIBILITY_ATTR = "forcing_plausibility"
PLAUSIBILITY_MODES = ("error", "warn", "off")
#: The fields :class:`hybridhydro.mesh.Mesh` is rebuilt from, and the attributes it needs.
RUN_MESH_VARIABLES = ("flwdir", "active_cell", "dx", "dy", "flwacc", "flwdst", "flwpar", "gauge_row", "gauge_col",
                      "gauge_x", "gauge_y", "area", "area_dln")
RUN_MESH_ATTRS = ("xmin", "ymax", "xres", "yres")
_FORCING = ("prcp", "pet", "snow", "temp")


class ForcingWarning(UserWarning):
    """Forcing that a run accepts but a user should know about (missing steps, negative values,
    values beyond the plausibility limits)."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning of the calling function point at the first frame
    outside hybridhydro (the user's line), however deep the call came from."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def forcing_limit(name: str, dt: float) -> float:
    """The largest plausible depth (mm) of forcing ``name`` (``prcp``, ``pet``) over a step of ``dt`` s.

    ``prcp``: the world-record envelope ``RAIN_RECORD_MM * (dt / 3600) ** RAIN_RECORD_EXPONENT``;
    ``pet``: ``PET_RECORD_MM_PER_HOUR * dt / 3600``. A run refuses ``IMPLAUSIBLE_FACTOR`` times
    this on ``IMPLAUSIBLE_SHARE`` of the active cells (see the module docstring).
    """
    hours = float(dt) / 3600.0
    if name == "pet":
        return PET_RECORD_MM_PER_HOUR * hours
    return RAIN_RECORD_MM * hours**RAIN_RECORD_EXPONENT


def _label(t) -> str:
    """A time label as ``2014-09-15 01:00`` (seconds only when they are not zero)."""
    ts = np.datetime64(t, "s").astype(object)
    return ts.strftime("%Y-%m-%d %H:%M:%S" if ts.second else "%Y-%m-%d %H:%M")


def read_dt(value, where: str = "basin") -> float:
    """``dt`` as a positive, finite number of seconds, or a ``ValueError`` that says how to write it."""
    try:
        dt = float(value)
    except (TypeError, ValueError):
        dt = float("nan")
    if isinstance(value, bool) or not (math.isfinite(dt) and dt > 0):
        raise ValueError(
            f"{where}: dt = {value!r} must be a positive number of seconds (e.g. 3600 for hourly steps, 86400 for "
            "daily ones)"
        )
    return dt


def time_axis_problems(times, dt: float | None) -> list[str]:
    """What is wrong with the step labels ``times`` for a run of step ``dt`` (s): each problem says
    where and how to fix it. Empty when they are datetimes, strictly increasing, evenly spaced by ``dt``."""
    times = np.asarray(times)
    if times.dtype.kind != "M":
        return [f"'time' must hold datetimes (datetime64), got dtype {times.dtype}: convert it, e.g. "
                "basin['time'] = pd.to_datetime(basin['time'].values)"]
    if times.size == 0:
        return ["'time' is empty: the basin needs at least one step"]
    times = times.astype("datetime64[ns]")
    if np.isnat(times).any():
        k = int(np.flatnonzero(np.isnat(times))[0])
        return [f"'time' holds a missing date (NaT) at step {k}: every step needs its end date"]
    if times.size < 2:
        return []
    steps = np.diff(times).astype(np.int64) / 1e9  # seconds
    if (steps < 0).all():
        return [f"'time' runs backwards ({_label(times[0])} ... {_label(times[-1])}): sort it, "
                "basin = basin.sortby('time')"]
    problems = []
    back = np.flatnonzero(steps < 0)
    if back.size:
        k = int(back[0])
        problems.append(f"'time' is not in order: step {k + 1} ({_label(times[k + 1])}) comes after step {k} "
                        f"({_label(times[k])}) ({back.size} such place(s)): sort it, basin = basin.sortby('time')")
    _, first, counts = np.unique(times, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = np.flatnonzero(counts > 1)
        k = int(first[dup[0]])
        where = np.flatnonzero(times == times[k])
        problems.append(f"'time' holds {_label(times[k])} {int(counts[dup[0]])} times (steps "
                        f"{', '.join(map(str, where[:5].tolist()))}; {dup.size} duplicated date(s) in all): keep one, "
                        "basin = basin.drop_duplicates('time')")
    if problems or dt is None:
        return problems
    if np.all(steps == steps[0]) and steps[0] != dt:
        return [f"the steps are {steps[0]:g} s apart but attribute dt = {dt:g} s: set basin.attrs['dt'] = {steps[0]:g} "
                "(or resample the basin to steps of dt)"]
    odd = np.flatnonzero(steps != dt)
    if odd.size:
        k = int(odd[0])
        n = steps[k] / dt
        what = (f"{int(round(n)) - 1} step(s) of dt = {dt:g} s are missing" if n > 1 and n == round(n)
                else f"{steps[k]:g} s is not dt = {dt:g} s")
        problems.append(
            f"'time' is not evenly spaced by dt: it jumps from {_label(times[k])} to {_label(times[k + 1])} "
            f"(steps {k} and {k + 1}: {what}; {odd.size} uneven interval(s) in all); a run needs every step: reindex "
            "on the full axis, basin = basin.reindex(time=pd.date_range(first, last, freq=f'{dt}s')) (the added steps "
            "are missing forcing, NaN)"
        )
    return problems


def _units_problem(name: str, units) -> str | None:
    """Why ``units`` is not a depth in mm (None when it is, or when there is none: read as mm)."""
    if units is None:
        return None
    text = str(units).strip().lower()
    if text in DEPTH_UNITS:
        return None
    if any(r in text for r in ("/h", "h-1", "/s", "s-1", "/d", "d-1", "day", "/min", "min-1", "hr")):
        hint = "it is a rate: multiply by the step's duration to get the depth over each step"
    elif text in ("m", "meter", "meters", "metre", "metres"):
        hint = f"multiply by 1000: basin['{name}'] = basin['{name}'] * 1000"
    elif text in ("cm", "centimeter", "centimeters", "centimetre", "centimetres"):
        hint = f"multiply by 10: basin['{name}'] = basin['{name}'] * 10"
    elif text in ("in", "inch", "inches"):
        hint = f"multiply by 25.4: basin['{name}'] = basin['{name}'] * 25.4"
    elif text in ("0.1 mm", "1/10 mm", "tenth of mm", "dmm"):
        hint = f"multiply by 0.1: basin['{name}'] = basin['{name}'] * 0.1"
    else:
        hint = "convert it to mm"
    return (f"variable {name!r} has units {units!r}; the model takes the depth over each step in mm: {hint}, then "
            f"set basin['{name}'].attrs['units'] = 'mm'")


def plausibility_mode(ds: xr.Dataset, where: str = "basin") -> str:
    """``ds.attrs["forcing_plausibility"]`` checked: ``"error"`` (default), ``"warn"`` or ``"off"``."""
    mode = ds.attrs.get(PLAUSIBILITY_ATTR, "error")
    if mode not in PLAUSIBILITY_MODES:
        raise ValueError(f"{where}: attribute {PLAUSIBILITY_ATTR!r} = {mode!r}; choose one of "
                         f"{', '.join(map(repr, PLAUSIBILITY_MODES))}")
    return str(mode)


def _dt_or_problem(ds: xr.Dataset, problems: list[str]) -> float | None:
    """The basin's ``dt`` (s), or None (and what is wrong with it appended to ``problems``)."""
    if "dt" not in ds.attrs:
        return None
    try:
        return read_dt(ds.attrs["dt"], "attribute")
    except ValueError as err:
        problems.append(str(err))
        return None


def _mode_problem(ds: xr.Dataset, problems: list[str]) -> None:
    """Append what is wrong with the basin's ``forcing_plausibility`` attribute, if anything."""
    try:
        plausibility_mode(ds, "attribute")
    except ValueError as err:
        problems.append(str(err))


def check_run_basin(ds: xr.Dataset, *, where: str = "basin") -> float:
    """Check what a run needs of ``ds`` before any array is read; return ``dt`` (s).

    The forcing variables (present, dims ``(time, y, x)``, numeric, units in mm), the mesh fields,
    ``dt``, the time axis (:func:`time_axis_problems`) and ``forcing_plausibility``. Raises one
    ``ValueError`` that lists every problem. Costs nothing measurable (no pass over the forcing).
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"{where}: a basin is an xarray.Dataset, got {type(ds).__name__}; read one with "
                        "hybridhydro.read_basin or read_smash_dataset, or build one with synthetic_basin")
    problems: list[str] = []
    missing = [f"variable {n!r}" for n in ("prcp", "pet") if n not in ds]
    missing += [f"variable {n!r}" for n in RUN_MESH_VARIABLES if n not in ds]
    missing += [f"attribute {a!r}" for a in ("dt", *RUN_MESH_ATTRS) if a not in ds.attrs]
    if "gauge" not in ds.variables:
        missing.append("coordinate 'gauge'")
    if missing:
        problems.append(f"it lacks {', '.join(missing)}: read it with hybridhydro.read_basin or read_smash_dataset, "
                        "or build it with synthetic_basin")
    dt = _dt_or_problem(ds, problems)
    for name in _FORCING:
        if name not in ds:
            continue
        var = ds[name]
        if set(var.dims) != {"time", "y", "x"} or var.ndim != 3:
            problems.append(f"variable {name!r} has dims {tuple(var.dims)}; it needs ('time', 'y', 'x') (rename the "
                            f"dims, e.g. basin = basin.rename({{'lat': 'y', 'lon': 'x'}}))")
        if var.dtype.kind not in "fiu":
            problems.append(f"variable {name!r} has dtype {var.dtype}; it needs numbers (float32 mm per step)")
        if name != "temp":
            problem = _units_problem(name, var.attrs.get("units"))
            if problem:
                problems.append(problem)
    if "time" in ds.variables:
        problems += time_axis_problems(ds["time"].values, dt)
    elif any(n in ds for n in _FORCING):
        problems.append("it has no 'time' coordinate: label each step with its end date")
    _mode_problem(ds, problems)
    if problems:
        raise ValueError(f"{where} cannot be run:\n  - " + "\n  - ".join(problems))
    return float(dt)


def _first_cell(x: np.ndarray, steps: np.ndarray, test, times, rows, cols, unit: str = " mm") -> tuple[int, str]:
    """How many cell-steps of ``x[steps]`` pass ``test``, and the first one as text: value, time
    (step k), cell (row, col).

    Looks only at the few offending ``steps`` (the caller found them from per-step extremes).
    """
    hits, first = 0, None
    for k in steps:
        m = test(x[k])
        n = int(np.count_nonzero(m))
        if n and first is None:
            first = (int(k), int(np.flatnonzero(m)[0]))
        hits += n
    k, c = first
    return hits, (f"{float(x[k, c]):g}{unit} at {_label(times[k])} (step {k}), "
                  f"cell (row {int(rows[c])}, col {int(cols[c])})")


def check_forcing_values(
    forcing: Mapping[str, np.ndarray],
    times,
    dt: float,
    rows,
    cols,
    *,
    mode: str = "error",
    where: str = "basin",
    missing: bool = True,
    override: str | None = None,
    stacklevel: int | None = None,
) -> None:
    """Check forcing values gathered onto the active cells, each ``(time, nac)``.

    Two vectorised passes per variable (the per-step maximum and minimum, NaN ignored); the
    offending steps alone are looked at again to name a cell. ``rows``/``cols`` give each
    column's cell, ``times`` each row's label. See the module docstring for the rules;
    ``mode`` is ``forcing_plausibility`` (``"error"``, ``"warn"``, ``"off"``); ``missing=False``
    skips the rules on missing values (a reader that has warned already); ``override`` says how
    to relax the plausibility error (default: the basin attribute).
    """
    if override is None:
        override = f"basin.attrs['{PLAUSIBILITY_ATTR}'] = 'warn' (or 'off')"
    stacklevel = stacklevel or user_stacklevel()
    times = np.asarray(times)
    for name, x in forcing.items():
        if name not in _FORCING or x.size == 0:
            continue
        x = np.asarray(x)
        hi = np.fmax.reduce(x, axis=1)  # per step; NaN only where every cell is NaN
        lo = np.fmin.reduce(x, axis=1)
        infinite = np.isinf(hi) | np.isinf(lo)
        if infinite.any():
            n, at = _first_cell(x, np.flatnonzero(infinite), np.isinf, times, rows, cols, unit="")
            raise ValueError(
                f"{where}: variable {name!r} holds {n} infinite value(s) on the active cells "
                f"(at {int(infinite.sum())} step(s)), "
                f"e.g. {at}; infinity is not data (nor is a value beyond float32's range): replace those values by "
                f"the real ones, or by NaN where the data are missing, e.g. basin['{name}'] = "
                f"basin['{name}'].where(np.isfinite(basin['{name}']))"
            )
        if name == "temp":
            continue
        empty = np.isnan(hi)
        if missing and name in ("prcp", "pet") and empty.all():
            raise ValueError(
                f"{where}: variable {name!r} is missing (NaN) on every active cell at every step "
                f"({_label(times[0])} ... {_label(times[-1])}): the run would have no {name}. Read it (e.g. "
                f"read_{name}: true in the setup YAML), or set it to 0 where that is meant: "
                f"basin['{name}'] = basin['{name}'].fillna(0)"
            )
        if missing and empty.any() and name in ("prcp", "pet"):
            k = np.flatnonzero(empty)
            shown = ", ".join(_label(t) for t in times[k[:5]]) + (", ..." if k.size > 5 else "")
            warnings.warn(
                f"{where}: {name} is missing (NaN) on every active cell at {k.size} of {times.size} step(s) ({shown}); "
                "those steps run as missing forcing (smash's rule: the production store keeps its level, the transfer "
                "stores give their steady outflow)", ForcingWarning, stacklevel=stacklevel,
            )
        negative = lo < 0
        if negative.any():
            n, at = _first_cell(x, np.flatnonzero(negative), lambda v: v < 0, times, rows, cols)
            warnings.warn(
                f"{where}: variable {name!r} holds {n} negative value(s) on the active cells, e.g. {at}; they are read "
                "as missing, like NaN (as smash reads them)", ForcingWarning, stacklevel=stacklevel,
            )
        if name not in ("prcp", "pet") or mode == "off":
            continue
        limit = forcing_limit(name, dt)
        over = hi > limit
        if not over.any():
            continue
        steps = np.flatnonzero(over)
        sub = x[steps]
        big = IMPLAUSIBLE_FACTOR * limit
        per_step = np.count_nonzero(sub > big, axis=1)
        needed = max(1, math.ceil(IMPLAUSIBLE_SHARE * x.shape[1]))
        worst = int(np.argmax(per_step))
        what = "rain" if name == "prcp" else "PET"
        rule = (f"the world-record rain over {dt / 3600:g} h: {limit:.0f} mm" if name == "prcp"
                else f"the most PET the sun's energy gives in {dt / 3600:g} h: {limit:.2g} mm")
        if mode == "error" and per_step[worst] >= needed:
            k = int(steps[worst])
            cells = np.flatnonzero(sub[worst] > big)
            c = int(cells[np.argmax(sub[worst][cells])])
            raise ValueError(
                f"{where}: variable {name!r} is not plausible {what}: at {_label(times[k])} (step {k}) "
                f"{per_step[worst]} of {x.shape[1]} active cells exceed {big:.0f} mm per step of {dt:g} s "
                f"({IMPLAUSIBLE_FACTOR:g} x {rule}), up to {float(x[k, c]):g} mm at cell (row {int(rows[c])}, "
                f"col {int(cols[c])}). A unit or conversion-factor slip (e.g. values in 0.1 mm read as mm, or a factor "
                f"applied twice)? Fix the values (mm over each step); for a deliberate stress test use {override}"
            )
        n, at = _first_cell(x, steps, lambda v: v > limit, times, rows, cols)
        warnings.warn(
            f"{where}: {name} exceeds {limit:.3g} mm per step of {dt:g} s ({rule}) at {n} cell-step(s) "
            f"({steps.size} step(s)), e.g. {at}; the run goes on with these values (check the units if they are not "
            "meant)", ForcingWarning, stacklevel=stacklevel,
        )


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
        units = var.attrs.get("units")
        if name in ("prcp", "pet") and units is not None:
            problem = _units_problem(name, units)
            if problem:
                problems.append(problem)
        elif units != spec.units:
            problems.append(f"variable {name!r} has units {units!r}, expected {spec.units!r}")
    for attr in BASIN_ATTRS:
        if attr not in ds.attrs:
            problems.append(f"attribute {attr!r} is missing")
    dt = _dt_or_problem(ds, problems)
    if "active_cell" in ds and "flwdir" in ds and ds["active_cell"].dtype.kind == "b":
        codes = ds["flwdir"].values[ds["active_cell"].values]
        if codes.size and (codes.min() < 1 or codes.max() > 8):
            problems.append("active cells must carry a D8 code in 1..8 in 'flwdir'")
    if "time" in ds.variables:
        problems += time_axis_problems(ds["time"].values, dt)
    _mode_problem(ds, problems)
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
