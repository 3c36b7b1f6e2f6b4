"""Early checks: can the case's basin serve the models and the split it asks for?

:func:`check_case` reads the basin's *metadata* cheaply (:func:`basin_metadata`: no forcing is
read) and refuses, before any stage runs, what a later stage would die on:

* a model whose mapping needs descriptors (``multi-linear``, ``multi-power``, ``ann``, ``cnn``,
  a hybrid's too) on a basin without them;
* a validation gauge that is not in the basin, a period outside its data or inside the spin-up
  (the split is made by :func:`hybridhydro.protocol.make_split` itself, on the metadata);
* a scenario (calibration, temporal, spatial, spatio-temporal) whose period has no observed
  discharge at one of its gauges.

``python -m hybridhydro check`` and ``run`` call it (exit status 2, nothing run); a notebook
user gets the same message from :func:`check_case`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .params import ParamsError, Params, load_params

__all__ = ["BasinMetadata", "CaseError", "basin_metadata", "case_problems", "check_case"]


class CaseError(ParamsError):
    """The basin cannot serve what the parameters ask for; the message names each model, gauge or
    period, what is missing, and how to fix it."""


@dataclass(frozen=True)
class BasinMetadata:
    """What the checks need to know of a basin, read without its forcing.

    Attributes
    ----------
    source
        Where it comes from (``basin.source``).
    times
        Step labels (ends of steps) of the window the case reads.
    dt
        Time step, s.
    gauges
        Gauge codes.
    areas
        Drained area of each gauge, m2 (delineated where the basin file has it, declared in a
        smash layout's ``gauge_attributes.csv``; None for a known-answer basin, whose gauges are
        all fully observed).
    descriptors
        Descriptor names (empty: none).
    observed
        ``(gauge, time)`` bool: whether discharge is observed at that step.
    spinup_end
        End of the spin-up (``basin.start`` with ``basin.spinup_start``), or None.
    """

    source: str
    times: pd.DatetimeIndex
    dt: float
    gauges: tuple[str, ...]
    areas: np.ndarray | None
    descriptors: tuple[str, ...]
    observed: np.ndarray
    spinup_end: pd.Timestamp | None = None

    def as_dataset(self) -> xr.Dataset:
        """A basin-shaped Dataset of the metadata (time, gauge, area, qobs as 0/NaN, attrs): enough for
        :func:`hybridhydro.protocol.make_split`, which then makes the split stage 03 will make."""
        areas = self.areas if self.areas is not None else np.arange(len(self.gauges), 0, -1, dtype=float)
        ds = xr.Dataset(
            {"area": ("gauge", np.asarray(areas, float)),
             "qobs": (("gauge", "time"), np.where(self.observed, 0.0, np.nan))},
            coords={"gauge": list(self.gauges), "time": self.times.values},
            attrs={"dt": self.dt},
        )
        if self.spinup_end is not None:
            from .sources import SPINUP_ATTR

            ds.attrs[SPINUP_ATTR] = self.spinup_end.isoformat()
        return ds


def basin_metadata(params) -> BasinMetadata:
    """The :class:`BasinMetadata` of a case's basin, read cheaply.

    A smash layout (a directory or a hydro-smash dataset): its setup, ``gauge_attributes.csv``,
    the descriptor names the setup reads (no raster read) and the qobs CSVs; a basin
    file (``.nc``, ``.zarr``): opened lazily, only ``qobs`` read; ``synthetic``: generated (a
    second); ``known_answer``: from its parameters (generating it takes minutes).

    Parameters
    ----------
    params
        The parameters (:class:`Params`, a file, a mapping) or their ``basin`` section.
    """
    from .params import BasinParams

    basin = params if isinstance(params, BasinParams) else load_params(params).basin
    spinup_end = pd.Timestamp(basin.start) if basin.spinup_start is not None else None
    kind = basin.kind
    if kind == "synthetic":
        from ..synthetic import synthetic_basin

        return _from_dataset(synthetic_basin(**basin.synthetic.model_dump()), kind, spinup_end)
    if kind == "known_answer":
        from ..known_answer import DESCRIPTOR_UNITS

        ka = basin.known_answer
        # as known_answer_basin builds them: its step count, its gauge codes; every gauge observed at every step
        ntime = int(round(ka.years * 365.25 * 86400.0 / ka.dt))
        times = pd.DatetimeIndex(pd.Timestamp(ka.start) + pd.to_timedelta(np.arange(1, ntime + 1) * ka.dt, unit="s"))
        codes = tuple(f"KA{i + 1:02d}" for i in range(ka.ngauge))
        return BasinMetadata("known_answer", times, float(ka.dt), codes, None, tuple(DESCRIPTOR_UNITS),
                             np.ones((len(codes), ntime), bool), spinup_end)
    if kind in ("netcdf", "zarr"):
        return _file_metadata(basin, spinup_end)
    return _smash_metadata(basin, spinup_end)


def _from_dataset(ds: xr.Dataset, source: str, spinup_end) -> BasinMetadata:
    names = tuple(map(str, ds["descriptor"].values)) if "descriptors" in ds and "descriptor" in ds.coords else ()
    areas = ds["area_dln"].values if "area_dln" in ds else ds["area"].values if "area" in ds else None
    observed = (np.isfinite(ds["qobs"].values) & (ds["qobs"].values >= 0)) if "qobs" in ds else \
        np.zeros((ds.sizes.get("gauge", 0), ds.sizes["time"]), bool)
    return BasinMetadata(source, pd.DatetimeIndex(ds["time"].values), float(ds.attrs["dt"]),
                         tuple(map(str, ds["gauge"].values)) if "gauge" in ds.coords else (),
                         None if areas is None else np.asarray(areas, float), names,
                         np.asarray(observed, bool), spinup_end)


def _file_metadata(basin, spinup_end) -> BasinMetadata:
    from .sources import open_lazily, window_steps

    path = Path(basin.source)
    with open_lazily(path) as opened:
        times = pd.DatetimeIndex(opened["time"].values)
        dt = float(opened.attrs.get("dt", np.nan))
        start_key = "basin.spinup_start" if basin.spinup_start is not None else "basin.start"
        mask = window_steps(times, dt, basin.read_start, basin.end, f"basin.source {path}", start_key)
        small = opened[[v for v in ("qobs", "area", "area_dln") if v in opened]].isel(time=np.flatnonzero(mask)).load()
        small.attrs["dt"] = dt
        if "descriptors" in opened and "descriptor" in opened.coords:
            small = small.assign_coords(descriptor=opened["descriptor"].values)
            small["descriptors"] = ("descriptor", np.zeros(opened.sizes["descriptor"]))
    return _from_dataset(small, str(path), spinup_end)


def _smash_metadata(basin, spinup_end) -> BasinMetadata:
    from ..io.smash_layout import (data_directory, list_descriptors, load_setup, model_times, read_gauge_attributes,
                                   read_qobs, resolve_dataset, setup_bool)

    directory, _, _ = resolve_dataset(basin.source)
    setup, setup_path = load_setup(directory)
    times, dt = model_times(setup, setup_path, basin.read_start, basin.end)
    gauges_file = directory / "gauge_attributes.csv"
    table = read_gauge_attributes(gauges_file) if gauges_file.is_file() else None
    codes = tuple(table["code"]) if table is not None else ()
    names: tuple[str, ...] = ()
    if setup_bool(setup, "read_descriptor", setup_path):
        names = setup.get("descriptor_name") or []
        names = (names,) if isinstance(names, str) else tuple(map(str, names))
        if not names:  # read_smash_dataset then reads every <name>.tif of the folder
            names = tuple(list_descriptors(data_directory(directory, setup, "descriptor"), str(setup_path)))
    observed = np.zeros((len(codes), len(times)), bool)
    if codes and setup_bool(setup, "read_qobs", setup_path):
        qobs = read_qobs(data_directory(directory, setup, "qobs"), codes, times, dt)
        observed = np.isfinite(qobs) & (qobs >= 0)
    areas = None if table is None else table["area"].to_numpy(float)
    return BasinMetadata(str(directory), times, dt, codes, areas, names, observed, spinup_end)


def _models_stage(stage: str) -> bool:
    """Whether a stage calibrates, trains or scores the models (03 on): stages 01-02 need no split."""
    return not stage.startswith(("01", "02"))


def touches_models(stages) -> bool:
    """Whether running ``stages`` (stems; None: every stage) calibrates, trains or scores models,
    which is what :func:`case_problems` checks (stages 01 and 02 alone check nothing)."""
    return stages is None or any(_models_stage(s) for s in stages)


def case_problems(params, metadata: BasinMetadata | None = None, stages=None) -> list[str]:
    """What the case's basin cannot serve, one sentence each (empty: nothing).

    Parameters
    ----------
    params
        The case's :class:`Params` (or a file or mapping :func:`load_params` reads).
    metadata
        The basin's :class:`BasinMetadata`; default: :func:`basin_metadata` of the case.
    stages
        The stages to run (stems); None: every stage. Stages 01 and 02 alone need no model
        nor split: nothing is checked (a new basin can be looked at before its case is set).
    """
    from ..mapping import REGIONAL_MAPPINGS
    from ..protocol import SCENARIOS, ModelName, make_split

    params = load_params(params)
    if not touches_models(stages):
        return []
    meta = basin_metadata(params) if metadata is None else metadata
    where = f"{params.params_file}" if params.params_file is not None else f"case {params.case!r}"
    problems = []
    if not meta.descriptors:
        needy = [m for m in params.calibration.models if ModelName.parse(m).mapping in REGIONAL_MAPPINGS]
        if needy:
            problems.append(
                f"{where}: calibration.models {needy}: the {', '.join(sorted({ModelName.parse(m).mapping for m in needy}))} "
                f"mapping(s) compute parameters from physical descriptors, and the basin ({meta.source}) has none; "
                "remove these models (keep uniform and distributed ones), or give the basin descriptors (smash layout: "
                "read_descriptor: true and descriptor_name in the setup, with a raster per name)"
            )
    if not meta.gauges:
        problems.append(f"{where}: the basin ({meta.source}) has no gauge: calibration needs observed discharge at one gauge "
                        "at least; add gauge_attributes.csv (code,x,y,area) and qobs files")
        return problems
    c = params.calibration
    try:
        split = make_split(meta.as_dataset(), calibration_period=c.calibration_period,
                           validation_period=c.validation_period, warmup_fraction=c.warmup_fraction,
                           validation_gauges=c.validation_gauges, swap_periods=c.swap_periods)
    except ValueError as err:
        problems.append(f"{where}: calibration: {err}")
        return problems
    times = meta.times
    for scenario in SCENARIOS:
        period, gauges = split.scenario(scenario)
        steps = (times > pd.Timestamp(period[0])) & (times <= pd.Timestamp(period[1]))
        blind = [g for g in gauges if not meta.observed[meta.gauges.index(g)][steps].any()]
        if blind:
            key = "calibration_period" if period == split.calibration_period else "validation_period"
            gkey = "validation_gauges" if scenario in ("spatial", "spatio-temporal") else "the calibration gauges"
            problems.append(
                f"{where}: the {scenario} scenario has no observed discharge at gauge(s) {blind} over its period "
                f"({period[0]}, {period[1]}] (calibration.{key}); choose a period with observations there, or other "
                f"gauges ({gkey}), or check the basin's qobs ({meta.source})"
            )
    return problems


def check_case(params, metadata: BasinMetadata | None = None, stages=None) -> None:
    """Raise :class:`CaseError` when the case's basin cannot serve its models or its split
    (:func:`case_problems` says which, for the ``stages`` to run); nothing is read but the
    basin's metadata."""
    problems = case_problems(params, metadata, stages)
    if problems:
        raise CaseError("the basin cannot serve these parameters:\n  - " + "\n  - ".join(problems))
