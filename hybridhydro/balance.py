"""Water balance of a forward run, per gauge catchment and for the whole domain.

Over the whole period and a unit of area (a gauge's upstream active cells, or every active
cell for the ``domain`` unit), in mm over the unit's area::

    residual = rain - evaporation - outflow + exchange + correction - storage_change

* ``rain``: the precipitation the model took in, ``prcp`` where both ``prcp`` and ``pet``
  are given (a cell-step with missing forcing receives nothing); with ``ssn`` the snowfall
  taken into the snow pack is added.
* ``evaporation``: interception ``ei`` plus production-store ``es``. gr4, gr5, gr6, grc and
  gr4_ode do not report ``ei``: it is ``pet - en``. (smash's gr4_ode has no ``es`` flux; ours
  reports the implicit Euler rate ``en·hp·(2 - hp)`` at the end-of-step level, spec 4.5.)
* ``outflow``: the gauge discharge volume for a catchment; the discharge of the domain's
  outlets (active cells that drain off the active cells) for the domain. The ``zero``
  routing does not accumulate: the gauge discharge is the gauge cell's own runoff only, so
  there the outflow of a unit is the runoff ``qt`` of all its cells (what leaves the
  hydrology), and the attrs say so.
* ``exchange``: the water the structure creates or removes on purpose, signed (positive
  gains), as each structure applies it: ``lexc`` into the transfer store plus what reaches
  the direct branch ``qd - prd`` (gr4, gr5, grc); gr6 adds ``lexc`` to the exponential store
  too; gr4_ode adds ``lexc`` to the store and to ``qt``; loieau's ``(kb - 1)·(qr + qd)``;
  grd has none. Hybrid structures apply it as their parent does (with the exchange
  correction already inside ``lexc``).
* ``correction``: the water a hybrid network creates or removes outside the exchange:
  gr4_ude's rain correction (1 + f1)·pn, reported as ``rain_correction``. The flux
  corrections of the ``*_mlp`` structures move water between fluxes and conserve it (0 here).
* ``storage_change``: final minus initial content of every store, normalised levels times
  their capacities (``he``, ``hs`` are mm); ``hlr`` is mm over the cell's upstream area
  ``flwacc - dx·dy``. ``kw`` has no explicit store: its term is the volume it holds back,
  runoff minus outflow, so a ``kw`` run closes by construction on its routing part.

* ``source_<name>``: every non-physical source or sink the structure reports
  (:data:`hybridhydro.structures.SOURCES`), signed (positive creates water), each its own
  term: smash's imperviousness sink, its transfer-store floor and steady outflow where
  precipitation is missing, the water an implicit ODE step leaves unaccounted for when its
  equation is not solved (Newton clipped or unconverged, or no root), and what clipping an
  explicit step creates. ``sources`` is their sum.

The ``residual`` is what none of the terms explains: it is round-off for a correct run
(well below 1e-6 of the rain in float32) and anything larger is a bookkeeping error, never a
named term in disguise. :func:`balance_closure` measures it and :func:`closes` tells whether
it is within tolerance.

Beside the budget, two terms that are parts of the ones above, shown because a reader will ask:
``overflow`` (part of ``outflow``: water the conservative ODE solver spills from a full
transfer store to the discharge) and ``storage_above_capacity`` (part of ``storage_change``:
the change of the water held above a store's capacity, which a hybrid's corrections can push
there, e.g. gr4_mlp's (1 + f)·ps).
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from .mesh import upstream_masks
from .model import prepare_run
from .structure_name import parse_structure
from .structures import SOURCES, get_module

#: Default tolerance of :func:`closes`: the unexplained residual, as a share of the water turned
#: over (the rain in a rain-driven run). The float32 core leaves ~1e-7 (measured on every
#: structure, up to 1000 mm/h storms).
BALANCE_TOLERANCE = 1e-6

#: State -> the parameter holding its capacity (mm); states missing here are in mm already.
STORE_CAPACITY = {"hi": "ci", "hp": "cp", "ht": "ct", "hl": "cl", "ha": "ca", "hc": "cc"}


def _field(name: str, result: xr.Dataset, basin: xr.Dataset | None, why: str) -> xr.DataArray:
    for ds in (result, basin):
        if ds is not None and name in ds:
            return ds[name]
    raise ValueError(
        f"water_balance: {name!r} ({why}) is in neither the result nor the basin; run "
        "simulate(..., return_states=True, return_fluxes=True, return_discharge_field=True) and pass "
        "the basin the run was made on"
    )


def _cells(da: xr.DataArray, plan) -> np.ndarray:
    """A (y, x) or (time, y, x) DataArray on the active cells, float64: (nac,) or (time, nac)."""
    dims = ("time", "y", "x") if "time" in da.dims else ("y", "x")
    return plan.to_cells(da.transpose(*dims).values).astype(np.float64)


def _window(result: xr.Dataset, dt: float):
    """The ``(start, end]`` period of a result's time steps (None: it has no time axis)."""
    if "time" not in result.coords or result.sizes.get("time", 0) == 0:
        return None
    times = result["time"].values
    return (times[0] - np.timedelta64(int(round(dt)), "s"), times[-1])


def _exchange(hydrology: str, flux) -> np.ndarray:
    """Exchange (mm per step, (time, nac)) as each structure applies it; positive gains water.

    A hybrid structure applies its (corrected) exchange as its parent does."""
    hydrology = get_module(hydrology).parent or hydrology
    if hydrology in ("gr4", "gr5", "grc"):
        return flux("lexc") + flux("qd") - flux("prd")
    if hydrology == "gr6":
        return 2.0 * flux("lexc") + flux("qd") - flux("prd")
    if hydrology == "gr4_ode":
        return 2.0 * flux("lexc")
    if hydrology == "loieau":
        return flux("qt_mm") - flux("qr") - flux("qd")
    return np.zeros_like(flux("qt_mm"))


def water_balance(result: xr.Dataset, basin: xr.Dataset | None = None) -> xr.Dataset:
    """Water balance of a :func:`~hybridhydro.simulate.simulate` run over its whole period.

    Parameters
    ----------
    result
        A run made with ``return_fluxes=True`` and ``return_discharge_field=True``; it
        carries the parameters and the initial and final states it used.
    basin
        The basin Dataset the run was made on: ``prcp``, ``pet`` (and ``snow``, ``temp``
        with ``ssn``) and the mesh fields. May be omitted when ``result`` holds them.

    Returns
    -------
    xarray.Dataset
        Along ``unit`` (the gauge codes, then ``"domain"``): ``rain``, ``evaporation`` (with
        its parts ``interception_evaporation``, ``soil_evaporation``), ``outflow``,
        ``exchange``, ``correction`` (a hybrid network's non-conserving rain correction),
        ``storage_change`` (with one ``storage_change_<store>`` per store) and
        ``residual``, all in mm over the unit's area; ``relative_residual``
        (residual / rain, dimensionless; NaN, with a warning, for a unit that took in no rain
        over the period, where that share is undefined: compare the residual with
        :func:`balance_closure`'s turnover instead); ``area`` (m2) and ``residual_volume`` (m3).

    Raises
    ------
    ValueError
        A result that is not a :func:`~hybridhydro.simulate.simulate` run, or a field the
        balance needs is missing (the message says which run options give it).
    """
    if not isinstance(result, xr.Dataset) or not result.attrs.get("structure") or "dt" not in result.attrs:
        raise ValueError(
            "water_balance: result must be a hybridhydro.simulate result (a Dataset whose attrs name its "
            "'structure' and 'dt'), made with return_fluxes=True, return_states=True, return_discharge_field=True; "
            f"got {type(result).__name__}" + (" without those attrs" if isinstance(result, xr.Dataset) else "")
        )
    s = parse_structure(result.attrs["structure"])
    dt = float(result.attrs["dt"])
    mesh_ds = basin if basin is not None else result
    _field("flwdir", result, basin, "the mesh")
    # The run's own preparation (hybridhydro.prepare_run) gives the plan and the forcing the run
    # read, over the result's window, with the parameters and initial states it used.
    inputs = prepare_run(
        mesh_ds, s.name,
        {n: _field(n, result, basin, "parameter used by the run") for n in s.parameters},
        {n: _field(f"{n}_initial", result, basin, "initial state") for n in s.states},
        period=_window(result, dt),
    )
    plan, mesh = inputs.labels.plan, inputs.labels.mesh
    area = plan.cell_area.astype(np.float64)  # (nac,) m2

    prcp = np.asarray(inputs.forcing["prcp"], np.float64)  # (time, nac) mm per step, NaN where missing
    pet = np.asarray(inputs.forcing["pet"], np.float64)
    valid = (prcp >= 0.0) & (pet >= 0.0)  # NaN compares False
    rain = np.where(valid, prcp, 0.0)
    if s.snow == "ssn" and "snow" in inputs.forcing and "temp" in inputs.forcing:
        snow = np.asarray(inputs.forcing["snow"], np.float64)
        temp = np.asarray(inputs.forcing["temp"], np.float64)
        rain = rain + np.where((snow >= 0.0) & np.isfinite(temp), snow, 0.0)

    def flux(name: str) -> np.ndarray:
        if name == "qt_mm":  # qt comes in m3/s, as smash reports it
            return flux("qt") * dt / area * 1e3
        return np.nan_to_num(_cells(_field(name, result, basin, f"internal flux of {s.hydrology}"), plan))

    hydro_fluxes = s.fluxes
    source_names = get_module(s.hydrology).sources
    sources = {name: flux(name) for name in source_names}
    overflow = flux("overflow") if "overflow" in hydro_fluxes else None
    ei = flux("ei") if "ei" in hydro_fluxes else np.where(valid, pet, 0.0) - flux("en")
    es = flux("es")
    exchange = _exchange(s.hydrology, flux)
    # gr4_ude's rain correction adds (1 + f1)·pn instead of pn: named, not hidden in the residual.
    correction = flux("rain_correction") if "rain_correction" in hydro_fluxes else np.zeros_like(es)
    runoff = flux("qt_mm")

    # Store contents (m3 per cell) at the start and the end.
    storage = {}
    above = np.zeros(plan.nac)  # m3 held above capacity, final minus initial
    for name in s.states:
        h0 = _cells(_field(f"{name}_initial", result, basin, "initial state"), plan)
        h1 = _cells(_field(f"{name}_final", result, basin, "final state"), plan)
        if name == "hlr":
            scale = plan.upstream_area.astype(np.float64) * 1e-3
        else:
            capacity = 1.0  # he, hs: mm already
            if name in STORE_CAPACITY:
                capacity = _cells(_field(STORE_CAPACITY[name], result, basin, "store capacity"), plan)
            scale = capacity * area * 1e-3
            if name in STORE_CAPACITY:
                above += (np.maximum(h1 - 1.0, 0.0) - np.maximum(h0 - 1.0, 0.0)) * scale
        storage[name] = (h1 - h0) * scale

    units = ["domain"]
    masks = []
    if "gauge" in result.dims and result.sizes["gauge"]:
        grid = upstream_masks(np.asarray(mesh.flwdir), mesh.gauge_row, mesh.gauge_col)
        masks = [plan.to_cells(m) for m in grid]
        units = [str(c) for c in result["gauge"].values] + units
    masks.append(np.ones(plan.nac, dtype=bool))

    # Domain outlets: active cells whose downstream cell is off the grid or inactive.
    outlet = plan.downstream < 0

    runoff_volume = runoff.sum(axis=0) * area * 1e-3  # m3 per cell over the period
    if s.routing != "zero":
        discharge = _cells(_field("discharge", result, basin, "routed discharge field"), plan)
        q = result["q"].transpose("gauge", "time").values.astype(np.float64)

    terms = {
        k: []
        for k in (
            "rain", "interception_evaporation", "soil_evaporation", "outflow", "exchange", "correction",
            *source_names, "overflow", "storage_above_capacity",
        )
    }
    store_terms = {name: [] for name in (*s.states, *(("kw",) if s.routing == "kw" else ()))}
    unit_area = []
    for u, mask in enumerate(masks):
        a = area[mask].sum()
        unit_area.append(a)

        def depth(per_cell_mm: np.ndarray) -> float:  # period total, mm over the unit
            return float((per_cell_mm.sum(axis=0)[mask] * area[mask]).sum() / a)

        terms["rain"].append(depth(rain))
        terms["interception_evaporation"].append(depth(ei))
        terms["soil_evaporation"].append(depth(es))
        terms["exchange"].append(depth(exchange))
        terms["correction"].append(depth(correction))
        for name in source_names:
            terms[name].append(depth(sources[name]))
        terms["overflow"].append(depth(overflow) if overflow is not None else 0.0)
        terms["storage_above_capacity"].append(float(above[mask].sum() / a * 1e3))
        if s.routing == "zero":
            out_m3 = runoff_volume[mask].sum()
        elif u < len(masks) - 1:
            out_m3 = q[u].sum() * dt
        else:
            out_m3 = discharge[:, outlet].sum() * dt
        terms["outflow"].append(float(out_m3 / a * 1e3))
        for name in s.states:
            store_terms[name].append(float(storage[name][mask].sum() / a * 1e3))
        if s.routing == "kw":
            store_terms["kw"].append(float((runoff_volume[mask].sum() - out_m3) / a * 1e3))

    mm = "mm over the unit's area, whole period"
    dim = ("unit",)
    data = {
        "rain": (dim, terms["rain"], {"units": "mm", "long_name": "precipitation taken in", "note": mm}),
        "interception_evaporation": (dim, terms["interception_evaporation"], {"units": "mm", "note": mm}),
        "soil_evaporation": (dim, terms["soil_evaporation"], {"units": "mm", "note": mm}),
        "outflow": (
            dim,
            terms["outflow"],
            {
                "units": "mm",
                "note": mm,
                "long_name": (
                    "runoff qt of all the unit's cells (zero routing: the gauge discharge is the gauge cell's own "
                    "runoff only, it does not accumulate)"
                    if s.routing == "zero"
                    else "gauge discharge volume (catchment) or domain outlets' discharge volume (domain)"
                ),
            },
        ),
        "exchange": (
            dim,
            terms["exchange"],
            {"units": "mm", "note": mm, "long_name": "water created (+) or removed (-) by the structure's exchange"},
        ),
    }
    data["correction"] = (
        dim,
        terms["correction"],
        {
            "units": "mm",
            "note": mm,
            "long_name": "water added (+) or removed (-) by a hybrid network's rain correction (gr4_ude); 0 otherwise",
        },
    )
    for name in source_names:
        data[name] = (dim, terms[name], {"units": "mm", "note": mm, "long_name": SOURCES[name]})
    total_sources = np.sum([terms[n] for n in source_names], axis=0) if source_names else np.zeros(len(units))
    data["sources"] = (
        dim,
        total_sources,
        {"units": "mm", "note": mm, "long_name": "sum of the non-physical sources and sinks (source_*), + creates water"},
    )
    data["overflow"] = (
        dim,
        terms["overflow"],
        {"units": "mm", "note": mm, "long_name": "part of the outflow: surplus spilled from full transfer stores"},
    )
    data["storage_above_capacity"] = (
        dim,
        terms["storage_above_capacity"],
        {"units": "mm", "note": mm, "long_name": "part of storage_change: change of the water held above capacity"},
    )
    data["evaporation"] = (
        dim,
        np.add(terms["interception_evaporation"], terms["soil_evaporation"]),
        {"units": "mm", "note": mm, "long_name": "actual evaporation ei + es"},
    )
    for name, values in store_terms.items():
        long_name = (
            "kw routing: water held back, runoff minus outflow (kw has no explicit store)"
            if name == "kw"
            else f"change of store {name}"
        )
        data[f"storage_change_{name}"] = (dim, values, {"units": "mm", "note": mm, "long_name": long_name})
    total_storage = np.sum([v for v in store_terms.values()], axis=0) if store_terms else np.zeros(len(units))
    data["storage_change"] = (dim, total_storage, {"units": "mm", "note": mm, "long_name": "change of all stores"})
    residual = (
        np.asarray(terms["rain"])
        - data["evaporation"][1]
        - np.asarray(terms["outflow"])
        + np.asarray(terms["exchange"])
        + np.asarray(terms["correction"])
        + total_sources
        - total_storage
    )
    data["residual"] = (
        dim,
        residual,
        {
            "units": "mm",
            "note": mm,
            "long_name": (
                "unexplained: rain - evaporation - outflow + exchange + correction + sources - storage_change"
            ),
        },
    )
    rain_mm = np.asarray(terms["rain"])
    dry = [u for u, r in zip(units, rain_mm) if not r > 0]
    if dry:
        warnings.warn(
            f"water_balance: unit(s) {dry} took in no rain over {result['time'].values[0]} .. "
            f"{result['time'].values[-1]}: their relative_residual (residual / rain) is undefined and set to NaN; "
            "judge their residual against the water turned over (balance_closure)",
            UserWarning, stacklevel=2,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(rain_mm > 0, residual / np.where(rain_mm > 0, rain_mm, 1.0), np.nan)
    data["relative_residual"] = (dim, share, {"units": "1", "long_name": "residual / rain (NaN without rain)"})
    data["area"] = (dim, unit_area, {"units": "m2", "long_name": "area of the unit's active cells"})
    data["residual_volume"] = (dim, residual * np.asarray(unit_area) * 1e-3, {"units": "m3"})
    return xr.Dataset(
        data,
        coords={"unit": units},
        attrs={"structure": s.name, "dt": dt, "period": f"{result['time'].values[0]} .. {result['time'].values[-1]}"},
    )


def balance_closure(balance: xr.Dataset, simulation: xr.Dataset | None = None) -> dict:
    """How well a run closes its water balance, with its named sources and its solver's health.

    ``balance``: a :func:`water_balance`; ``simulation``: the run (optional), for the solver
    statistics. Returns a dict of floats:

    * ``worst``: the largest |unexplained residual| over the units, as a share of the water
      the unit turned over: the largest of its rain, evaporation, outflow, |exchange|,
      |correction|, |named sources| and |storage change|. In a run that rain drives that is
      the rain; a run that mostly drains full stores is measured against what they release,
      since float32 round-off scales with the water moved. NaN where a unit moved no water
      (the share is undefined there, and :func:`closes` fails);
    * ``source_<name>``: for each non-physical source or sink of the structure, the largest
      |term| / rain over the units, shown beside the residual (units without rain do not
      count: the share is undefined there; NaN when no unit had rain);
    * from the simulation's ODE diagnostics (gr4_ode, gr4_ude; 0 otherwise): ``unconverged``,
      the share of solved cell-steps whose Newton stopped at its iteration limit without
      converging; ``no_root``, the share whose implicit equation has no root in the feasible
      set; ``several_roots``, the share where the root need not be unique;
    * ``above_capacity``: the share of cell-steps that end with a store above its capacity
      by more than float32 round-off (1e-5 of it; needs a run with ``return_states=True``;
      NaN without).
    """
    rain = balance["rain"].values
    gross = ["rain", "evaporation", "outflow", "exchange", "correction", "storage_change"]
    gross += [str(n) for n in balance.data_vars if str(n).startswith("source_")]
    turnover = np.max([np.abs(balance[n].values) for n in gross if n in balance], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        worst = np.abs(balance["residual"].values) / turnover
        out = {"worst": float(np.max(worst)) if np.all(turnover > 0) else float("nan")}
        for name in balance.data_vars:
            if str(name).startswith("source_"):  # share of the rain: undefined (NaN) on a unit without rain
                share = np.where(rain > 0, np.abs(balance[name].values) / np.where(rain > 0, rain, 1.0), np.nan)
                out[str(name)] = float(np.nanmax(share)) if np.isfinite(share).any() else float("nan")
    out.update(unconverged=0.0, no_root=0.0, several_roots=0.0, above_capacity=float("nan"))
    if simulation is None:
        return out
    out.update(solver_statistics(simulation))
    structure = parse_structure(simulation.attrs["structure"]) if "structure" in simulation.attrs else None
    levels = [n for n in (structure.states if structure else ()) if n in STORE_CAPACITY and n in simulation and "time" in simulation[n].dims]
    if levels:
        above = np.zeros(simulation[levels[0]].shape, bool)
        for n in levels:
            v = simulation[n].values
            above |= np.nan_to_num(v) > 1.0 + 1e-5  # above float32 round-off of a full store
        active = np.isfinite(simulation[levels[0]].values)
        out["above_capacity"] = float(above[active].mean()) if active.any() else 0.0
    return out


def solver_statistics(simulation: xr.Dataset) -> dict[str, float]:
    """The ODE solver's health in a run (gr4_ode, gr4_ude; zeros for the others), as shares of
    the solved cell-steps: ``unconverged`` (Newton at its iteration limit, still moving),
    ``no_root`` (no root of the implicit equation in the feasible box), ``several_roots``."""
    out = {"unconverged": 0.0, "no_root": 0.0, "several_roots": 0.0}
    if "newton_iterations" in simulation:
        from .structures import NEWTON_MAX_ITERATIONS, SAFEGUARDED_MAX_ITERATIONS

        solver = simulation.attrs.get("ode_solver", "newton")
        limit = SAFEGUARDED_MAX_ITERATIONS if solver == "conservative" else NEWTON_MAX_ITERATIONS
        it = simulation["newton_iterations"].values
        solved = np.isfinite(it) & (it > 0)
        if solved.any():
            at_limit = it[solved] >= limit
            if solver != "conservative":  # at the limit and still moving: the residual says which
                at_limit &= simulation["newton_residual"].values[solved] > 1e-5
            out["unconverged"] = float(np.mean(at_limit))
    for name, key in (("ode_root_exists", "no_root"), ("ode_root_unique", "several_roots")):
        if name in simulation:
            v = simulation[name].values
            given = np.isfinite(v)
            out[key] = float(np.mean(v[given] == 0)) if given.any() else 0.0
    return out


def closes(closure: dict, tolerance: float = BALANCE_TOLERANCE) -> bool:
    """True when the unexplained residual of :func:`balance_closure` is within ``tolerance`` of the
    water turned over. Named sources, unconverged steps or missing roots never excuse a residual: a run that
    loses water without naming it fails, and so does a run whose share is undefined (NaN)."""
    worst = closure["worst"]
    return bool(np.isfinite(worst) and worst <= tolerance)
