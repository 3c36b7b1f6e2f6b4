"""A case's basin, from whatever ``basin.source`` names: :func:`open_basin`.

``basin.source`` is a hydro-smash dataset (``Cance``, ``Lez``, ``France``), ``synthetic``,
``known_answer``, a directory in the smash layout, or a basin file written by
:func:`hybridhydro.write_basin` (``.nc`` or ``.zarr``). ``basin.start``/``basin.end`` select
the window ``(start, end]`` of a dataset, a directory or a file (a file basin is sliced in
time, its mesh kept). With ``basin.spinup_start`` the data are read from there: the steps
up to ``basin.start`` are spin-up, recorded in the basin's attribute :data:`SPINUP_ATTR`
(:func:`hybridhydro.protocol.make_split` keeps them out of every period). With
``basin.initial_states`` the runs start from the states of that file
(:mod:`hybridhydro.states`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .params import BasinParams, Params, load_params

__all__ = ["SPINUP_ATTR", "file_times", "open_basin", "open_lazily", "window_steps"]

#: Basin attribute: the end of the spin-up (ISO 8601); steps labelled up to it are warm-up only.
SPINUP_ATTR = "spinup_end"


def _basin_params(basin) -> BasinParams:
    if isinstance(basin, BasinParams):
        return basin
    if isinstance(basin, Params):
        return basin.basin
    if isinstance(basin, Mapping) and "source" in basin and "basin" not in basin:
        return BasinParams.model_validate(dict(basin))
    return load_params(basin).basin


def open_lazily(path: str | Path) -> xr.Dataset:
    """A basin file (``.nc`` or ``.zarr``) opened lazily (nothing read until asked; use it as a
    context manager); a file that cannot be opened is an error naming it."""
    from ..io.netcdf import netcdf_engine

    path = Path(path)
    try:
        if path.suffix.lower() == ".zarr":
            return xr.open_zarr(path, consolidated=False)
        return xr.open_dataset(path, engine=netcdf_engine())
    except Exception as err:  # a damaged file: read_basin says more; here: what and where
        raise ValueError(f"basin file {path} cannot be opened ({type(err).__name__}: {err}); rewrite it with "
                         "hybridhydro.write_basin") from None


def file_times(path: str | Path) -> tuple[pd.DatetimeIndex, float]:
    """The step labels and ``dt`` (s) of a basin file (``.nc`` or ``.zarr``), opened lazily (no forcing read)."""
    path = Path(path)
    with open_lazily(path) as opened:
        if "time" not in opened.coords:
            raise ValueError(f"basin file {path} has no time coordinate: it is not a basin written by hybridhydro.write_basin")
        times = pd.DatetimeIndex(opened["time"].values)
        dt = float(opened.attrs.get("dt", np.nan))
    return times, dt


def window_steps(times: pd.DatetimeIndex, dt: float, start, end, where: str, start_key: str = "basin.start") -> np.ndarray:
    """Boolean mask of the labels in ``(start, end]``; an error when the window leaves the file's span or
    does not fall on its step grid."""
    first, last = times[0] - pd.Timedelta(seconds=dt), times[-1]
    span = f"the file covers ({first}, {last}] in steps of {dt:g} s"
    for key, value in ((start_key, start), ("basin.end", end)):
        if value is None:
            continue
        stamp = pd.Timestamp(value)
        if not first <= stamp <= last:
            raise ValueError(f"{where}: {key} = {stamp} lies outside the basin file; {span}: choose a date inside it "
                             "or write a longer basin")
        offset = (stamp - first).total_seconds() / dt
        if offset != int(offset):
            raise ValueError(f"{where}: {key} = {stamp} is not on the file's step grid; {span}: choose a step boundary")
    mask = np.ones(times.size, bool)
    if start is not None:
        mask &= times > pd.Timestamp(start)
    if end is not None:
        mask &= times <= pd.Timestamp(end)
    if not mask.any():
        raise ValueError(f"{where}: the window ({start}, {end}] holds no step of the basin file; {span}")
    return mask


def _open_file(params: BasinParams) -> xr.Dataset:
    from ..io import read_basin

    path = Path(params.source)
    where = f"basin.source {path}"
    times, dt = file_times(path)
    start_key = "basin.spinup_start" if params.spinup_start is not None else "basin.start"
    mask = window_steps(times, dt, params.read_start, params.end, where, start_key)
    ds = read_basin(path)
    if not mask.all():
        ds = ds.isel(time=np.flatnonzero(mask))
        ds.attrs["start_time"] = (pd.Timestamp(ds["time"].values[0]) - pd.Timedelta(seconds=dt)).isoformat()
        ds.attrs["end_time"] = pd.Timestamp(ds["time"].values[-1]).isoformat()
    ds.attrs["source"] = str(path)
    return ds


def open_basin(basin, *, progress: bool = True) -> xr.Dataset:
    """The basin of a case, whatever its ``basin.source``.

    Parameters
    ----------
    basin
        The ``basin`` section of the parameters (``cfg.basin``), the parameters themselves
        (``cfg``), or a parameter file.
    progress
        Show a progress bar while reading the rasters of a smash-layout dataset.

    Returns
    -------
    xarray.Dataset
        The basin (:mod:`hybridhydro.basin`) over ``(basin.spinup_start or basin.start,
        basin.end]`` (the source's own window where they are null). With a spin-up, the
        attribute ``spinup_end`` (:data:`SPINUP_ATTR`) holds ``basin.start``; with
        ``basin.initial_states``, the checked states as ``initial_<state>`` variables.

    Raises
    ------
    ValueError
        A window outside the data or off their step grid, a damaged file, initial states that
        do not fit the basin (each names the key and the file and says what to do).
    FileNotFoundError
        A source or states file that is not there.
    """
    params = _basin_params(basin)
    kind = params.kind
    if kind == "synthetic":
        from ..synthetic import synthetic_basin

        ds = synthetic_basin(**params.synthetic.model_dump())
    elif kind == "known_answer":
        from ..known_answer import known_answer_basin

        ds = known_answer_basin(**params.known_answer.model_dump())
    elif kind in ("netcdf", "zarr"):
        if not Path(params.source).exists():
            raise FileNotFoundError(f"basin.source: no basin file {params.source}; write it with hybridhydro.write_basin "
                                    "or correct the path")
        ds = _open_file(params)
    else:
        from ..io import read_smash_dataset

        ds = read_smash_dataset(params.source, params.read_start, params.end, progress=progress)
    if params.spinup_start is not None:
        ds.attrs[SPINUP_ATTR] = pd.Timestamp(params.start).isoformat()
    if params.initial_states is not None:
        from ..states import attach_states, read_states

        states = read_states(params.initial_states, ds)
        with xr.open_dataset(params.initial_states) as opened:  # its attributes only
            valid = opened.attrs.get("valid_time")
        if valid is not None and pd.Timestamp(valid) != pd.Timestamp(ds.attrs["start_time"]):
            warnings.warn(f"basin.initial_states {params.initial_states} holds at {valid} (its valid_time), and the "
                          f"runs start at {ds.attrs['start_time']}: the states are used as they are; to continue that "
                          "run, set basin.start (or basin.spinup_start) to its valid_time", stacklevel=2)
        ds = attach_states(ds, states, source=str(params.initial_states))
    return ds
