"""The CF conventions of the files hybridhydro writes, so that other tools read them.

:func:`to_cf` is the one road every written Dataset takes (:func:`hybridhydro.write_basin`,
:func:`hybridhydro.write_simulation`, :func:`hybridhydro.write_parameter_maps`, a calibration's
``parameters.nc``). It follows CF-1.10 (:data:`CONVENTIONS`):

* ``Conventions`` on the Dataset;
* ``x``/``y``: ``axis`` ``X``/``Y``, ``standard_name`` ``projection_x_coordinate`` /
  ``projection_y_coordinate`` (``longitude``/``latitude`` in a geographic CRS) and the CRS's
  unit (``m``; ``degrees_east``/``degrees_north``) where the basin schema says ``CRS units``;
* ``time``: ``axis`` ``T``, ``standard_name`` ``time`` and ``bounds = "time_bounds"``: a step
  labelled ``t`` covers ``(t - dt, t]``, and ``time_bounds`` (time, nv) holds ``t - dt`` and ``t``;
* the CRS as rioxarray writes it (a ``spatial_ref`` grid-mapping variable) and ``grid_mapping``
  on every gridded variable;
* ``standard_name`` and ``cell_methods`` where CF has them (discharge, rain, snow, air
  temperature; :data:`hybridhydro.basin.BASIN_VARIABLES`);
* units that UDUNITS and pint (through ``cf_xarray.units``) both read. A quantity per time step
  (``kexc``, ``ks``, ... in :data:`hybridhydro.PARAMETER_UNITS`) is written with the step in its
  unit (:func:`step_units`): ``mm h-1`` at ``dt = 3600`` s, ``mm d-1`` at ``86400`` s,
  ``mm / (15 min)`` at ``900`` s. Depths over a step (rain, fluxes) stay ``mm`` with
  ``cell_methods = "time: sum"``: an amount over the interval ``time_bounds`` gives.

Every ``units`` attribute is checked: one that pint cannot read is an error that names the
variable.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import xarray as xr

from ..basin import BASIN_VARIABLES

#: The version of the CF conventions the files follow.
CONVENTIONS = "CF-1.10"
#: The token of a unit string that stands for one model time step (``"mm dt-1"``).
STEP_TOKEN = "dt"
#: Name of the time-bounds variable and of its second dimension.
TIME_BOUNDS, BOUNDS_DIM = "time_bounds", "nv"
#: What the basin schema writes where a coordinate is in the unit of the CRS.
CRS_UNITS = "CRS units"

# Units a step of that many seconds is named by (UDUNITS and pint both read them).
_NAMED_STEPS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))
_STEP_RE = re.compile(rf"^{STEP_TOKEN}(?P<exp>[-+]?\d+)?$")
# Variables outside the basin schema that CF names (the optional forcing of snow structures).
_EXTRA_CF = {
    "snow": ("lwe_thickness_of_snowfall_amount", "time: sum"),
    "temp": ("air_temperature", "time: mean"),
    "mean_prcp": ("lwe_thickness_of_precipitation_amount", "time: sum"),
    "mean_pet": ("", "time: sum"),
}


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------


def step_unit(dt: float) -> str:
    """The unit of one time step of ``dt`` seconds: ``"h"`` (3600), ``"d"`` (86400), ``"min"``
    (60), ``"s"`` (1), otherwise a scaled unit in the largest of those that divides it,
    ``"(15 min)"`` for 900 s, ``"(3 h)"`` for 10800 s, ``"(2.5 s)"`` for 2.5 s."""
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"the time step must be a positive number of seconds, got dt = {dt!r}")
    for seconds, name in _NAMED_STEPS:
        if dt == seconds:
            return name
    for seconds, name in _NAMED_STEPS:
        n = dt / seconds
        if n == round(n):
            return f"({int(n)} {name})"
    return f"({dt!r} s)"


def step_units(units: str, dt: float | None) -> str:
    """``units`` with the token ``dt`` (one time step) written as the step of ``dt`` seconds.

    ``step_units("mm dt-1", 3600) == "mm h-1"``; ``step_units("mm dt-1", 900) ==
    "mm / (15 min)"``; ``step_units("dt mm-1", 86400) == "d mm-1"``. A unit without the token
    comes back as it is (``dt`` may then be None).

    Raises
    ------
    ValueError
        The unit holds the token but ``dt`` is None, or a scaled step carries an exponent
        other than 1 or -1.
    """
    tokens = str(units).split()
    found = [(k, _STEP_RE.match(t)) for k, t in enumerate(tokens)]
    found = [(k, m) for k, m in found if m]
    if not found:
        return str(units)
    if dt is None:
        raise ValueError(f"units {units!r} are per time step ({STEP_TOKEN!r}): give the step, dt in seconds")
    step = step_unit(dt)
    rest = [t for k, t in enumerate(tokens) if k not in {k for k, _ in found}]
    exponent = sum(int(m.group("exp") or 1) for _, m in found)
    if exponent == 0:
        return " ".join(rest) or "1"
    if not step.startswith("("):  # the step where its exponent's sign puts it: "mm h-1", "h mm-1"
        named = step if exponent == 1 else f"{step}{exponent}"
        return " ".join([named, *rest] if exponent > 0 else [*rest, named])
    if exponent == 1:  # a scaled step: "(15 min) mm-1" is read by neither, "15 min mm-1" by both
        return " ".join([step[1:-1], *rest])
    if exponent == -1:
        return f"{' '.join(rest) or '1'} / {step}"
    raise ValueError(f"units {units!r}: a step of {dt} s has no unit name, and {STEP_TOKEN}{exponent} cannot be "
                     "written with a scaled one; express the quantity per hour or per second")


def parse_units(units: str):
    """``units`` read by pint through cf-xarray's registry (the UDUNITS spellings): a
    ``pint.Quantity``. A ``ValueError`` says why a unit cannot be read."""
    from cf_xarray.units import units as registry

    text = str(units).strip()
    if any(_STEP_RE.match(token) for token in text.split()):  # pint would read "dt" as a decitonne
        raise ValueError(f"units {units!r} hold the per-step token {STEP_TOKEN!r}: write the step with step_units")
    try:
        value = registry(text) if text else registry("1")
    except Exception as err:  # pint raises several kinds (UndefinedUnitError, DefinitionSyntaxError, ...)
        raise ValueError(f"units {units!r} cannot be read by pint/UDUNITS ({type(err).__name__}: {err})") from None
    if not hasattr(value, "units"):  # a bare number, e.g. "1", is dimensionless
        value = registry.Quantity(value, "1")
    return value


# ---------------------------------------------------------------------------------------------
# CRS
# ---------------------------------------------------------------------------------------------


def read_crs(crs):
    """``crs`` (a ``pyproj.CRS``, ``"EPSG:2154"``, an EPSG code, a WKT string) as a
    ``pyproj.CRS``; None stays None. A ``ValueError`` names what could not be read."""
    if crs is None:
        return None
    import pyproj

    try:
        return pyproj.CRS.from_user_input(crs)
    except Exception as err:
        raise ValueError(f"crs = {crs!r} is not a coordinate reference system pyproj reads ({err}); give e.g. "
                         "'EPSG:2154' or basin.rio.crs") from None


def coordinate_attrs(crs) -> dict[str, dict[str, str]]:
    """CF attributes of the ``x`` and ``y`` coordinates in ``crs`` (None: the unknown CRS the
    library reads as projected in metres)."""
    crs = read_crs(crs)
    if crs is not None and crs.is_geographic:
        return {"x": {"axis": "X", "standard_name": "longitude", "units": "degrees_east"},
                "y": {"axis": "Y", "standard_name": "latitude", "units": "degrees_north"}}
    units = "m"
    if crs is not None and crs.axis_info:
        factor = float(crs.axis_info[0].unit_conversion_factor)
        units = "m" if factor == 1.0 else f"{factor!r} m"
    return {"x": {"axis": "X", "standard_name": "projection_x_coordinate", "units": units},
            "y": {"axis": "Y", "standard_name": "projection_y_coordinate", "units": units}}


def _with_crs(ds: xr.Dataset, crs, where: str) -> tuple[xr.Dataset, object]:
    """``ds`` carrying ``crs`` (or its own) as rioxarray's grid mapping, ``grid_mapping`` on every
    gridded variable; and the CRS (None when neither says one)."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    given = read_crs(crs)
    have = ds.rio.crs
    have = read_crs(have.to_wkt()) if have is not None else None
    if given is not None and have is not None and given != have:
        raise ValueError(f"{where} is in {_crs_name(have)} but crs = {_crs_name(given)}: reproject it first "
                         "(ds.rio.reproject), or leave crs out to keep its own")
    if given is not None and have is None:
        return ds.rio.write_crs(given.to_wkt()), given
    if have is not None:
        return ds.rio.write_grid_mapping(ds.rio.grid_mapping), have
    if any({"x", "y"} <= set(var.dims) for var in ds.data_vars.values()):
        warnings.warn(f"{where} has no CRS: the file will not say where it lies; pass crs= (e.g. basin.rio.crs)",
                      UserWarning, stacklevel=3)
    return ds, None


def _crs_name(crs) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else repr(crs.name)


# ---------------------------------------------------------------------------------------------
# The Dataset
# ---------------------------------------------------------------------------------------------


def _read_step(ds: xr.Dataset, dt, where: str) -> float | None:
    """The step in seconds: ``dt``, else ``ds.attrs["dt"]``; they must agree when both are given."""
    own = ds.attrs.get("dt")
    if dt is None and own is None:
        return None
    values = []
    for what, value in (("dt", dt), ("ds.attrs['dt']", own)):
        if value is None:
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{where}: {what} = {value!r} must be a positive number of seconds (3600 for hourly steps)")
        values.append(v)
    if len(values) == 2 and values[0] != values[1]:
        raise ValueError(f"{where}: dt = {dt!r} but the Dataset says dt = {own!r}; leave dt out or correct it")
    return values[0]


def _time_bounds(ds: xr.Dataset, step: float | None, where: str) -> xr.Dataset:
    """``time`` with its CF attributes and, for datetimes, ``time_bounds`` (each step covers ``(t - dt, t]``)."""
    time = ds["time"]
    attrs = {**time.attrs, "axis": "T", "standard_name": "time"}
    attrs.setdefault("long_name", "end of the time step (the step covers (time - dt, time])")
    if time.dtype.kind != "M":  # not datetimes (a damaged basin being stored): no bounds to compute
        return ds.assign_coords(time=xr.Variable(time.dims, time.values, attrs, time.encoding))
    if step is None:
        raise ValueError(f"{where} has a time axis but no step: give dt (seconds) or set ds.attrs['dt'], so that "
                         "each step's bounds (t - dt, t] can be written")
    values = time.values.astype("datetime64[ns]")
    delta = np.timedelta64(int(round(step * 1e9)), "ns")
    bounds = np.stack([values - delta, values], axis=-1)
    attrs["bounds"] = TIME_BOUNDS
    encoding = {k: v for k, v in time.encoding.items() if k not in ("units", "calendar", "dtype", "bounds")}
    encoding.update(_time_encoding(bounds))
    out = ds.assign_coords(time=xr.Variable(time.dims, time.values, attrs, encoding))
    bounds_var = xr.Variable((*time.dims, BOUNDS_DIM), bounds, {}, _time_encoding(bounds))
    # a variable, not a coordinate: xarray would list a coordinate in a global "coordinates" attribute
    return out.assign({TIME_BOUNDS: bounds_var})


def _time_encoding(bounds: np.ndarray) -> dict:
    """One time unit for the labels and their bounds (CF: bounds take their coordinate's units):
    whole seconds (or milliseconds) since the first bound, as integers, when they are whole."""
    valid = bounds[~np.isnat(bounds)]
    if valid.size == 0:
        return {}
    origin = str(np.datetime_as_string(valid.min(), unit="s")).replace("T", " ")
    offsets = (valid - valid.min()).astype(np.int64)  # ns
    for unit, ns in (("seconds", 10**9), ("milliseconds", 10**6)):
        if not (offsets % ns).any() and valid.min() == valid.min().astype("datetime64[s]"):
            return {"units": f"{unit} since {origin}", **({"dtype": "int64"} if valid.size == bounds.size else {})}
    return {}


def _cf_names(name: str) -> tuple[str, str]:
    """The standard name and cell methods of a variable the library writes ("" where CF has none)."""
    spec = BASIN_VARIABLES.get(name)
    if spec is not None:
        return spec.standard_name, spec.cell_methods
    return _EXTRA_CF.get(name, ("", ""))


def to_cf(ds: xr.Dataset, *, crs=None, dt: float | None = None, where: str = "the Dataset") -> xr.Dataset:
    """``ds`` with the attributes, time bounds and CRS of the CF conventions (see the module).

    Parameters
    ----------
    ds
        A basin, a simulation (:func:`hybridhydro.simulate`), parameter maps, or any Dataset on
        the library's ``time``/``y``/``x``/``gauge`` dimensions. It is not changed.
    crs
        Its CRS, for a Dataset that does not carry one (``basin.rio.crs``, ``"EPSG:2154"``).
        A different CRS from the one ``ds`` carries is an error.
    dt
        The time step (s), for a Dataset without ``attrs["dt"]``: needed for ``time_bounds``
        and for units per step (``"mm dt-1"``).
    where
        A name for ``ds`` in error messages (a file).

    Returns
    -------
    xarray.Dataset
        A shallow copy: the same arrays, new attributes; ``time_bounds`` (time, nv) added;
        ``spatial_ref`` (the grid mapping) when the CRS is known.

    Raises
    ------
    ValueError
        A ``units`` attribute pint cannot read (the message names the variable), units per
        step or a datetime axis without a step, a ``crs`` that is not one or that contradicts
        the Dataset's.

    Warns
    -----
    UserWarning
        A gridded Dataset without a CRS (none carried, none given).
    """
    out = ds.drop_vars(TIME_BOUNDS, errors="ignore").copy(deep=False)  # already CF (read from a file): bounds anew
    for var in out.variables.values():
        var.attrs = dict(var.attrs)
    out.attrs = dict(out.attrs)
    step = _read_step(ds, dt, where)
    out, known_crs = _with_crs(out, crs, where)
    axes = coordinate_attrs(known_crs)
    for dim in ("x", "y"):
        if dim in out.coords:
            var = out.variables[dim]
            var.attrs.update(axes[dim])
            var.attrs.setdefault("long_name", f"cell-centre {dim}")
            var.encoding = {**var.encoding, "_FillValue": None}  # CF: a coordinate has no missing values
    for name, var in out.variables.items():
        units = var.attrs.get("units")
        if units == CRS_UNITS:  # x-like or y-like by name (gauge_x, gauge_y)
            var.attrs["units"] = axes["y" if name.endswith("y") else "x"]["units"]
            if name in ("gauge_x", "gauge_y"):
                var.attrs.setdefault("standard_name", axes[name[-1]]["standard_name"])
        elif units is not None:
            try:
                var.attrs["units"] = step_units(units, step)
            except ValueError as err:
                raise ValueError(f"{where}, variable {name!r}: {err} (or set ds.attrs['dt'])") from None
        standard_name, cell_methods = _cf_names(name)
        if standard_name:
            var.attrs.setdefault("standard_name", standard_name)
        if cell_methods and "time" in var.dims:
            var.attrs.setdefault("cell_methods", cell_methods)
    if "time" in out.coords and out["time"].ndim == 1:
        out = _time_bounds(out, step, where)
    for name, var in out.variables.items():
        if "units" in var.attrs:
            try:
                parse_units(var.attrs["units"])
            except ValueError as err:
                raise ValueError(f"{where}, variable {name!r}: {err}; set a unit UDUNITS knows, e.g. 'mm', "
                                 "'m3 s-1', '1' (dimensionless)") from None
    out.attrs["Conventions"] = CONVENTIONS
    return out
