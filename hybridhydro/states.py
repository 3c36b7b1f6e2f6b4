"""Initial states from a file, and a run's final states written to one.

A *states file* is a NetCDF (or any Dataset) with one ``(y, x)`` variable per state, named as
the structures name them (``hp``, ``ht``, ``hlr``, ...; :data:`STATE_UNITS`): normalised levels
in (0, 1) (unit ``"1"``, a store's content over its capacity), except ``he``, ``hs`` and ``hlr``
in mm. Values off the active cells are ignored (NaN there is fine). The attribute
``valid_time`` (ISO 8601), when present, is the time at which the states hold.

* :func:`final_states` takes the ``<state>_final`` maps of a :func:`hybridhydro.simulate`
  result (an earlier run, e.g. ``result.simulate(basin)`` of a calibrated model) as such a
  Dataset; :func:`write_states` writes it to NetCDF.
* :func:`read_states` reads and checks one against a basin: unknown state names, another
  grid, values outside a state's feasible range, a wrong unit are errors that name the file,
  the variable and a cell.
* :func:`attach_states` stores checked states in a basin as ``initial_<state>`` variables;
  :func:`hybridhydro.prepare_run` (so every run, calibration and stage) starts from them
  wherever the caller gives no ``initial_states`` of its own (:func:`basin_initial_states`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from . import structures

__all__ = ["STATE_UNITS", "attach_states", "basin_initial_states", "final_states", "read_states", "write_states"]

#: Unit of every state a structure has: ``"1"`` (a level normalised by its store's capacity) or ``"mm"``.
STATE_UNITS = {name: ("mm" if name in ("he", "hs", "hlr") else "1") for name in structures.STATE_DEFAULTS}
#: Prefix of the basin variables that hold initial states (``initial_hp``, ...).
BASIN_STATE_PREFIX = "initial_"


def final_states(simulation: xr.Dataset) -> xr.Dataset:
    """The final states of a :func:`hybridhydro.simulate` result, as a states file's Dataset.

    Parameters
    ----------
    simulation
        A result of :func:`hybridhydro.simulate` (any structure): its ``<state>_final`` (y, x) maps.

    Returns
    -------
    xarray.Dataset
        One ``(y, x)`` variable per state (``hp``, ``ht``, ``hlr``, ...; normalised levels, or mm
        for ``he``, ``hs``, ``hlr``), attribute ``valid_time``: the end of the run's last step.
        A state on the edge of its feasible domain, which is open (a store that ended exactly
        empty, 0), is moved to its bound (:data:`hybridhydro.structures.STATE_BOUNDS`: 1e-6 of
        the store); every other value is kept as it is.
    """
    names = [str(v).removesuffix("_final") for v in simulation.data_vars if str(v).endswith("_final")]
    if not names:
        raise ValueError("final_states: the Dataset has no <state>_final variable; give a result of hybridhydro.simulate")
    out = xr.Dataset({n: _feasible(n, simulation[f"{n}_final"]).rename(n) for n in names})
    for n in names:
        out[n].attrs = {"units": STATE_UNITS.get(n, "1"), "long_name": f"initial state {n} (final state of an earlier run)"}
    if "time" in simulation.coords and simulation.sizes.get("time", 0):
        out.attrs["valid_time"] = pd.Timestamp(simulation["time"].values[-1]).isoformat()
    out = out.drop_vars([c for c in out.coords if c not in ("y", "x", "spatial_ref")])
    return out


def _feasible(name: str, value: xr.DataArray) -> xr.DataArray:
    """``value`` where it lies inside the state's open feasible domain; its bound where it does not."""
    lo, hi = structures.FEASIBLE[name]
    inside = (value > lo) & (value < hi)
    return value.where(inside | value.isnull(), value.clip(*structures.STATE_BOUNDS[name]))


def write_states(states: xr.Dataset, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a states Dataset (:func:`final_states`, or a :func:`hybridhydro.simulate` result) to NetCDF.

    Parameters
    ----------
    states
        A states Dataset, or a simulation (its final states are written).
    path
        A ``.nc`` file; ``basin.initial_states`` of a parameter file can name it.
    overwrite
        Replace an existing file.

    The file is written atomically (a failed write leaves the old one) with its attributes
    sealed: :func:`read_states` refuses it, naming it, if it is later damaged.
    """
    path = Path(path)
    if path.suffix.lower() != ".nc":
        raise ValueError(f"write_states: {path} must end in .nc (a NetCDF file)")
    if path.exists() and not overwrite:
        raise FileExistsError(f"write_states: {path} exists; pass overwrite=True to replace it")
    if any(str(v).endswith("_final") for v in states.data_vars):
        states = final_states(states)
    from .io.netcdf import write_sealed_netcdf

    if not path.parent.is_dir():
        raise FileNotFoundError(f"write_states: the folder {path.parent} does not exist; create it first")
    return write_sealed_netcdf(states, path)


def read_states(source: str | Path | xr.Dataset, basin: xr.Dataset) -> dict[str, xr.DataArray]:
    """Read and check initial states against ``basin``: name -> (y, x) DataArray on its grid.

    Parameters
    ----------
    source
        A states file (NetCDF, see the module docstring) or its Dataset.
    basin
        The basin they are for: its ``y``, ``x`` coordinates and ``active_cell``.

    Raises
    ------
    ValueError
        A variable that names no state of any structure, a variable not on the basin's
        ``(y, x)`` grid, a unit other than the state's, a value on an active cell outside the
        state's feasible range (NaN included); the message names the file, the variable and a
        cell, and says what to do.
    FileNotFoundError
        No such file.
    """
    where = str(source) if not isinstance(source, xr.Dataset) else "the initial states"
    if isinstance(source, xr.Dataset):
        ds = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"initial states: no file {path}; write one with hybridhydro.write_states, or correct "
                                    "basin.initial_states")
        from .io.netcdf import load_sealed_netcdf

        ds = load_sealed_netcdf(path, "NetCDF file of initial states",
                                "write it again with hybridhydro.write_states, or correct basin.initial_states")
    names = [str(v) for v in ds.data_vars if str(v) not in ("spatial_ref", "crs")]
    unknown = [n for n in names if n not in structures.STATE_DEFAULTS]
    if unknown:
        raise ValueError(f"{where}: variable(s) {unknown} name no model state; the states are "
                         f"{', '.join(structures.STATE_DEFAULTS)} (rename or drop the others)")
    if not names:
        raise ValueError(f"{where}: no state variable; give (y, x) variables named as the states "
                         f"({', '.join(structures.STATE_DEFAULTS)})")
    active = basin["active_cell"].values.astype(bool)
    out = {}
    for name in names:
        var = ds[name]
        if set(var.dims) != {"y", "x"}:
            raise ValueError(f"{where}: state {name!r} has dims {var.dims}; a state is a (y, x) map on the basin's grid")
        var = var.transpose("y", "x")
        if var.shape != active.shape:
            raise ValueError(f"{where}: state {name!r} is a {var.shape[0]} x {var.shape[1]} grid, the basin's is "
                             f"{active.shape[0]} x {active.shape[1]}; write the states of a run on this basin")
        for dim in ("y", "x"):
            if dim in var.coords and dim in basin.coords:
                mine, theirs = np.asarray(var[dim].values, float), np.asarray(basin[dim].values, float)
                step = float(np.min(np.abs(np.diff(theirs)))) if theirs.size > 1 else 1.0
                if not np.allclose(mine, theirs, rtol=0.0, atol=1e-3 * step):
                    raise ValueError(f"{where}: state {name!r}: its {dim} coordinate ({mine.min():g} .. {mine.max():g}) "
                                     f"is not the basin's ({theirs.min():g} .. {theirs.max():g}): another grid; write "
                                     "the states of a run on this basin")
        units = var.attrs.get("units")
        if units is not None and str(units) != STATE_UNITS[name]:
            raise ValueError(f"{where}: state {name!r} has units {units!r}; it is in {STATE_UNITS[name]!r} "
                             f"({'a normalised level in (0, 1)' if STATE_UNITS[name] == '1' else 'mm'})")
        lo, hi = structures.FEASIBLE[name]
        values = var.values.astype(np.float64)
        bad = active & ~((values > lo) & (values < hi))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"{where}: state {name!r} = {float(values[r, c])!r} at cell (row {r}, col {c}) ({int(bad.sum())} "
                             f"active cell(s) in all) is outside its feasible range ({lo}, {hi}) (open interval; "
                             f"unit {STATE_UNITS[name]!r}); fix the file")
        out[name] = xr.DataArray(values, dims=("y", "x"), coords={d: basin[d] for d in ("y", "x") if d in basin.coords},
                                 attrs={"units": STATE_UNITS[name], "long_name": f"initial state {name}"})
    return out


def attach_states(basin: xr.Dataset, states: Mapping[str, xr.DataArray], *, source: str = "") -> xr.Dataset:
    """``basin`` with the checked ``states`` as ``initial_<state>`` variables (runs start from them)."""
    out = basin.copy()
    for name, value in states.items():
        out[f"{BASIN_STATE_PREFIX}{name}"] = value
        if source:
            out[f"{BASIN_STATE_PREFIX}{name}"].attrs["source"] = source
    return out


def basin_initial_states(basin: xr.Dataset, names) -> dict[str, xr.DataArray]:
    """The initial states a basin carries (``initial_<state>`` variables) among ``names``."""
    return {n: basin[f"{BASIN_STATE_PREFIX}{n}"] for n in names if f"{BASIN_STATE_PREFIX}{n}" in basin}
