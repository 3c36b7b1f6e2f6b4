"""The referees' studies: the neural ODE's solvers in training, cumulative water budgets, and
drawings of each configuration's data flow.

Three questions the notebooks' tables did not answer (stage ``08_referees`` runs them):

* **Does the solver change the training?** :func:`solver_training_study` trains gr4_ude from one
  and the same start (parameters and network weights) with each ODE solver (smash's Newton, the
  conservative and fully implicit steps, explicit RK4 with a few or many sub-steps) and returns,
  per solver, the cost curve, the final calibration and temporal-validation NSE, the seconds per
  iteration, the implicit solver's statistics on the final model's run, the share of unstable
  explicit steps, and the water the solver left unaccounted for (``source_solver``).
* **What do the networks change in the water budget, and when?** :func:`cumulative_budget` is
  the budget of :func:`hybridhydro.water_balance` accumulated over time: each term from the
  start of the run to every step, the correction of gr4_ude's network as its own term.
* **What flows where?** :func:`dataflow_diagram` draws one configuration (hydrology × mapping):
  forcing and descriptors, the mapping, the stores, the correction network with its inputs and
  outputs (read from the structure's own tables), routing, discharge, cost and gradients;
  :func:`dataflow_grid` draws them all.

Figures: :func:`plot_solver_study`, :func:`plot_cumulative_budgets`; :func:`markdown_table`
writes a table for a report.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from . import structures
from .balance import STORE_CAPACITY, balance_closure, water_balance
from .calibration import CalibrationResult, calibrate
from .calibration.optimizers import DEFAULT_OPTIMIZER
from .cost import evaluate
from .mapping import MAPPINGS, REGIONAL_MAPPINGS
from .networks import FluxCorrectionNet
from .structure_name import calibrated_parameters, parse_structure
from .structures import get_module

__all__ = [
    "DEFAULT_STUDY_SOLVERS",
    "EXPLICIT_SOLVERS",
    "STUDY_COLUMNS",
    "SolverStudy",
    "cumulative_budget",
    "dataflow_diagram",
    "dataflow_grid",
    "markdown_table",
    "parse_solver",
    "plot_cumulative_budgets",
    "plot_solver_study",
    "solver_label",
    "solver_training_study",
]

#: The solvers of the referees' study: smash's Newton, the conservative and the fully implicit
#: steps (one step each), explicit RK4 with 4 and with 16 sub-steps.
DEFAULT_STUDY_SOLVERS = (("newton", 1), ("conservative", 1), ("implicit", 1), ("rk4", 4), ("rk4", 16))

#: The explicit schemes of :data:`hybridhydro.ODE_SOLVERS` (their sub-steps matter).
EXPLICIT_SOLVERS = ("heun", "rk4")

#: The columns of :attr:`SolverStudy.table`, in order.
STUDY_COLUMNS = (
    "solver", "substeps", "iterations", "initial cost", "final cost", "cost decrease (%)",
    "calibration NSE", "temporal NSE", "temporal NSE, reference solver", "s / iteration (median)",
    "first iteration (s)", "training wall time (s)", "mean Newton updates", "max Newton updates",
    "unconverged steps (%)", "steps without a root (%)", "unstable explicit steps (%)",
    "non-finite discharge (%)", "solver source (mm)", "solver source (% of rain)",
    "start fingerprint", "stopped",
)

#: What every run of the study keeps (states, fluxes with the solver's diagnostics, routed discharge).
_RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)


# --- solvers ---------------------------------------------------------------------------------


def parse_solver(spec) -> tuple[str, int]:
    """``(solver, substeps)`` from ``"rk4:16"``, ``"newton"``, ``("rk4", 16)`` or ``["newton", 1]``.

    The solver must be one of :data:`hybridhydro.ODE_SOLVERS`; sub-steps a whole number >= 1
    (1 for an implicit solver when not given; they only matter for the explicit schemes).
    """
    if isinstance(spec, str):
        name, _, n = spec.partition(":")
        substeps = int(n) if n.strip() else 1
    else:
        try:
            name, substeps = spec
        except (TypeError, ValueError):
            raise ValueError(f"solver {spec!r}: write it 'rk4:16', 'newton' or ('rk4', 16)") from None
    name = str(name).strip()
    if name not in structures.ODE_SOLVERS:
        raise ValueError(f"unknown ODE solver {name!r} in {spec!r}; choose among {', '.join(structures.ODE_SOLVERS)}")
    if isinstance(substeps, bool) or int(substeps) != substeps or int(substeps) < 1:
        raise ValueError(f"solver {spec!r}: sub-steps must be a whole number >= 1")
    return name, int(substeps)


def solver_label(solver: str, substeps: int = 1) -> str:
    """How tables and figures name a solver: ``newton``, or ``rk4 ×16`` for an explicit scheme."""
    return f"{solver} ×{int(substeps)}" if solver in EXPLICIT_SOLVERS else solver


def _fingerprint(parameters: Mapping, weights: Mapping | None) -> str:
    """sha256 (first 12 hex) of a start: its parameter maps and network weights, by name."""
    digest = hashlib.sha256()
    for name in sorted(parameters):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(np.asarray(parameters[name], np.float32)).tobytes())
    for name in sorted(weights or {}):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(np.asarray(weights[name], np.float32)).tobytes())
    return digest.hexdigest()[:12]


@dataclass
class SolverStudy:
    """What :func:`solver_training_study` found.

    Attributes
    ----------
    table
        One row per solver (index: :func:`solver_label`), columns :data:`STUDY_COLUMNS`.
    curves
        The cost curves, long: one row per (solver, iteration) with ``cost`` (training, 1 − NSE
        summed over the calibration gauges for ``cost="nse"``), ``validation_cost`` (the same over
        the validation period), ``grad_norm`` and ``seconds`` since the calibration started.
    results
        The trained models by solver label (:class:`~hybridhydro.calibration.CalibrationResult`).
    runs
        Each trained model's run over the whole basin with its own solver (states, fluxes,
        diagnostics).
    start
        The common start: ``parameters`` ((y, x) maps), ``nn_parameters`` (the network's
        weights, None for gr4_ode), ``fingerprint`` and ``origin`` (where it came from).

    ``table, curves = study`` unpacks the two tables.
    """

    table: pd.DataFrame
    curves: pd.DataFrame
    results: dict[str, CalibrationResult] = field(default_factory=dict)
    runs: dict[str, xr.Dataset] = field(default_factory=dict)
    start: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.table, self.curves))


def _start_point(basin, structure, split, start, *, cost, seed, hidden, initializer, weight_scale, pre_maxiter,
                 nn_input_scaling, progress) -> dict:
    """The common start of every solver: parameter maps and network weights (see :func:`solver_training_study`)."""
    s = parse_structure(structure)
    module = get_module(s.hydrology)
    hybrid = bool(getattr(module, "hybrid", False))

    def fresh_network():
        if not hybrid:
            return None
        net = FluxCorrectionNet.for_structure(s.hydrology, hidden=tuple(hidden), initializer=initializer,
                                              scale=weight_scale, seed=seed)
        scale = structures.input_scale(module.nn_inputs, float(basin.attrs["dt"]), nn_input_scaling)
        return {k: np.asarray(v) for k, v in structures.weights_for_raw_inputs(net.weights(), scale).items()}

    if start is None:
        pre_maxiter = 2 if pre_maxiter is None else int(pre_maxiter)
        parent = structure
        if hybrid:
            from .protocol import parent_structure

            parent = parent_structure(structure)
        pre = calibrate(basin, parent, "uniform", "sbs", pre_maxiter, cost=cost, period=split.calibration_period,
                        gauges=list(split.calibration_gauges), seed=seed, progress=progress)
        origin = f"{parent} pre-calibrated here (uniform, sbs, {pre_maxiter} iterations)"
        parameters, weights = pre.parameters, fresh_network()
    elif isinstance(start, CalibrationResult):
        own = parse_structure(start.structure).hydrology == s.hydrology
        parameters = start.parameters
        weights = start.nn_parameters if (own and start.nn_parameters is not None) else fresh_network()
        origin = (f"{start.structure} ({start.mapping}), its parameters"
                  + (" and network" if own and start.nn_parameters is not None else " and a new network"))
    elif isinstance(start, Mapping):
        unknown = set(start) - {"parameters", "nn_parameters"}
        if unknown or "parameters" not in start:
            raise ValueError(f"start: a mapping holds 'parameters' (and 'nn_parameters'), got keys {sorted(start)}")
        parameters = dict(start["parameters"])
        weights = start.get("nn_parameters")
        if hasattr(weights, "weights"):  # a FluxCorrectionNet
            weights = weights.weights()
        weights = fresh_network() if (weights is None and hybrid) else weights
        origin = "the parameters given" + (" and network" if start.get("nn_parameters") is not None else "")
    else:
        raise ValueError(f"start must be None, a CalibrationResult or a mapping, got {type(start).__name__}")
    missing = [n for n in s.parameters if n not in parameters]
    if missing:
        raise ValueError(f"start: its parameters lack {missing} of {structure!r}")
    parameters = {n: np.asarray(parameters[n], np.float32) for n in s.parameters}
    if weights is not None:
        weights = {k: np.asarray(v, np.float32) for k, v in dict(weights).items()}
    return {"parameters": parameters, "nn_parameters": weights, "fingerprint": _fingerprint(parameters, weights),
            "origin": origin}


def _mean_score(q: xr.DataArray, basin: xr.Dataset, gauges, period) -> float:
    """The mean NSE over ``gauges`` of a discharge in ``period`` (NaN where undefined)."""
    if not len(gauges):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a gauge without observations: NaN, left out of the mean
        table = evaluate(q.sel(gauge=list(gauges)), basin, ["nse"], period)
    values = np.asarray(table["nse"].values, np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def solver_training_study(
    basin: xr.Dataset,
    split,
    *,
    structure: str = "gr4_ude-lr",
    mapping: str = "distributed",
    solvers: Sequence = DEFAULT_STUDY_SOLVERS,
    optimizer: str | None = None,
    maxiter: int = 10,
    learning_rate: float | None = None,
    start=None,
    seed: int = 0,
    cost: str | Sequence[str] = "nse",
    hidden: Sequence[int] = (16,),
    initializer: str = "he_uniform",
    weight_scale: float = 0.1,
    pre_maxiter: int | None = None,
    nn_input_scaling: str = "raw",
    reference: tuple[str, int] | None = ("rk4", 64),
    progress: bool = False,
) -> SolverStudy:
    """Train a neural ODE (gr4_ude; or gr4_ode) from one start with each solver, and compare.

    Parameters
    ----------
    basin, split
        The basin and its :class:`~hybridhydro.protocol.Split`: training on the calibration
        gauges over the calibration period; the validation period's cost is recorded at every
        iteration too (the same run, one step further), and the final model is scored there.
    structure, mapping
        The ODE structure (``gr4_ude-<routing>``, ``gr4_ode-<routing>``) and the mapping of its
        parameters (``distributed`` by default; ``uniform``, ``multi-*`` too).
    solvers
        ``(solver, substeps)`` pairs or ``"rk4:16"`` strings (:func:`parse_solver`), default
        :data:`DEFAULT_STUDY_SOLVERS`.
    optimizer, maxiter, learning_rate
        The training's optimiser (default the mapping's, :data:`hybridhydro.calibration.
        DEFAULT_OPTIMIZER`: L-BFGS-B for ``distributed``), its iterations and learning rate.
    start
        The start, the same for every solver: a :class:`~hybridhydro.calibration.CalibrationResult`
        (a pre-calibrated parent: its parameters, and a new network drawn with ``seed``; or a
        trained hybrid of this hydrology: its parameters and its network), a mapping
        ``{"parameters": ..., "nn_parameters": ...}``, or None: the parent (``gr4_ode``) is
        pre-calibrated here as smash's guide does (uniform, sbs, ``pre_maxiter`` iterations,
        None: the guide's 2)
        and a network drawn (``initializer`` times ``weight_scale``, ``hidden`` widths, ``seed``).
    cost
        The cost components (:func:`hybridhydro.calibrate`).
    reference
        ``(solver, substeps)`` of an accurate solver (RK4 with 64 sub-steps) under which each
        trained model is also scored over the validation period: a model that learnt its own
        solver's error scores lower there. None: skipped.

    Returns
    -------
    SolverStudy
        ``table`` (one row per solver, :data:`STUDY_COLUMNS`), ``curves`` (long), the trained
        ``results`` and their ``runs``, the ``start``. In the table: the initial cost is the
        cost of the common start under that solver (the solvers solve the same ODE, so they
        differ by their discretisation only); seconds per iteration are the median of the
        iterations after the first (the first compiles); the Newton statistics are those of
        :func:`hybridhydro.report.newton_statistics` on the final model's run (0 updates for
        an explicit scheme); unstable explicit steps are the cell-steps whose levels left
        [0, 1] and were clipped (the water that made is in ``source_solver``), NaN for an
        implicit solver; the solver source is the ``source_solver`` term of the domain's
        budget (:func:`hybridhydro.water_balance`), mm over the run and as a share of the rain.
    """
    from .report import newton_statistics

    s = parse_structure(structure)
    module = get_module(s.hydrology)
    if "newton_iterations" not in module.diagnostics:
        raise ValueError(f"{structure!r} has no ODE solver to compare; give a gr4_ude or gr4_ode structure")
    pairs = [parse_solver(spec) for spec in solvers]
    if not pairs:
        raise ValueError("solvers is empty: name at least one, e.g. ('newton', 1)")
    labels = [solver_label(*p) for p in pairs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"solvers: {labels} names a solver twice")
    if mapping not in MAPPINGS:
        raise ValueError(f"unknown mapping {mapping!r}; choose one of {', '.join(MAPPINGS)}")
    optimizer = optimizer or DEFAULT_OPTIMIZER[mapping]
    hybrid = bool(getattr(module, "hybrid", False))
    begin = _start_point(basin, structure, split, start, cost=cost, seed=seed, hidden=hidden, initializer=initializer,
                         weight_scale=weight_scale, pre_maxiter=pre_maxiter, nn_input_scaling=nn_input_scaling,
                         progress=progress)
    gauges = list(split.calibration_gauges)
    options = dict(cost=cost, period=split.calibration_period, gauges=gauges,
                   validation_period=split.validation_period, validation_gauges=gauges,
                   initial_parameters=begin["parameters"], seed=seed, progress=progress)
    if hybrid:
        options.update(nn_parameters=begin["nn_parameters"], train_nn=True, nn_input_scaling=nn_input_scaling)
    if learning_rate is not None:
        options["learning_rate"] = learning_rate
    rows, curves, results, runs = {}, [], {}, {}
    for (solver, substeps), label in zip(pairs, labels):
        t0 = time.perf_counter()
        result = calibrate(basin, s.name, mapping, optimizer, maxiter, ode_solver=solver, ode_substeps=substeps,
                           **options)
        wall = time.perf_counter() - t0
        h = result.history
        curve = h.reset_index()
        curve.insert(0, "solver", label)
        curves.append(curve)
        run = result.simulate(basin, **_RUN)
        results[label], runs[label] = result, run
        balance = water_balance(run, basin)
        closure = balance_closure(balance, run)
        stats = newton_statistics(run, closure)
        domain = balance.sel(unit="domain")
        rain = float(domain["rain"])
        source = float(domain["source_solver"]) if "source_solver" in domain else 0.0
        src = run["source_solver"].values
        q = run["q"].values
        active = np.isfinite(src)
        unstable = float("nan")
        if solver in EXPLICIT_SOLVERS:  # a clipped level leaves a non-zero source; an unclipped one exactly 0
            bad = (src != 0.0) | ~np.isfinite(run["hp"].values) | ~np.isfinite(run["ht"].values)
            unstable = 100.0 * float(np.mean(bad[active])) if active.any() else 0.0
        reference_nse = float("nan")
        if reference is not None:
            ref_solver, ref_substeps = parse_solver(reference)
            ref = result.simulate(basin, ode_solver=ref_solver, ode_substeps=ref_substeps)
            reference_nse = _mean_score(ref["q"], basin, gauges, split.validation_period)
        seconds = h["seconds"].to_numpy(np.float64)
        steps = np.diff(seconds)
        per_iteration = float(np.median(steps[1:] if steps.size > 1 else steps)) if steps.size else float("nan")
        first, last = float(h["cost"].iloc[0]), float(h["cost"].iloc[-1])
        rows[label] = {
            "solver": solver, "substeps": substeps, "iterations": int(h.index.max()) if len(h) else 0,
            "initial cost": first, "final cost": last,
            "cost decrease (%)": 100.0 * (first - last) / first if first else float("nan"),
            "calibration NSE": _mean_score(run["q"], basin, gauges, split.calibration_period),
            "temporal NSE": _mean_score(run["q"], basin, gauges, split.validation_period),
            "temporal NSE, reference solver": reference_nse,
            "s / iteration (median)": per_iteration,
            "first iteration (s)": float(seconds[0]) if seconds.size else float("nan"),
            "training wall time (s)": wall,
            "mean Newton updates": float(stats["mean updates"]),
            "max Newton updates": int(stats["max updates"]),
            "unconverged steps (%)": 100.0 * float(closure["unconverged"]),
            "steps without a root (%)": 100.0 * float(closure["no_root"]),
            "unstable explicit steps (%)": unstable,
            "non-finite discharge (%)": 100.0 * float(np.mean(~np.isfinite(q))),
            "solver source (mm)": source,
            "solver source (% of rain)": 100.0 * source / rain if rain > 0 else float("nan"),
            "start fingerprint": begin["fingerprint"],
            "stopped": result.message,
        }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(STUDY_COLUMNS)).rename_axis("solver label")
    long = pd.concat(curves, ignore_index=True)
    keep = [c for c in ("solver", "iteration", "cost", "validation_cost", "grad_norm", "seconds") if c in long]
    return SolverStudy(table=table, curves=long[keep], results=results, runs=runs, start=begin)


# --- cumulative water budget -----------------------------------------------------------------

#: The terms of :func:`cumulative_budget` before the sources, each signed as it enters the budget.
CUMULATIVE_TERMS = ("rain", "evaporation", "outflow", "exchange", "correction")


def cumulative_budget(
    simulation: xr.Dataset, basin: xr.Dataset | None = None, gauge: str | None = None, *, points: int = 200
) -> pd.DataFrame:
    """The water budget of a run accumulated from its start to each step, term by term (mm).

    Each row is :func:`hybridhydro.water_balance` of the run cut at that step (its first
    steps, with the states reached there as final states): the same terms, computed by the same
    function, over ``(start, t]``. Every column is signed as it enters the budget, so that the
    terms add up to the residual::

        rain − evaporation − outflow ± exchange ± correction ± sources − storage change = residual

    Parameters
    ----------
    simulation
        A :func:`hybridhydro.simulate` run with ``return_states``, ``return_fluxes`` and
        ``return_discharge_field``.
    basin
        The basin the run was made on (its forcing and mesh; may be omitted when the run holds them).
    gauge
        A gauge code: the budget over its catchment (mm over its area); None: over every active
        cell (the ``domain``).
    points
        How many steps to cut at (evenly spaced, the last step always among them; every step
        when the run has fewer).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``time`` (the label of the last step counted; a first row of zeros at the
        start of the run), columns ``rain`` (+), ``evaporation`` (−), ``outflow`` (−),
        ``exchange`` (±, the structure's own), ``correction`` (±, the water gr4_ude's network
        adds by its rain correction; 0 for the flux corrections of ``*_mlp``, which move water
        between fluxes), one column per named source ``source_<name>`` (±), ``storage_change``
        (−, minus the change of every store), and ``residual`` (the sum of the others: what
        no term explains, round-off for a correct run); all in mm over the unit's area.
        ``attrs``: ``unit``, ``structure``, ``units``.
    """
    if not isinstance(simulation, xr.Dataset) or "structure" not in simulation.attrs:
        raise ValueError("cumulative_budget: give a hybridhydro.simulate run (return_states, return_fluxes and "
                         "return_discharge_field)")
    s = parse_structure(simulation.attrs["structure"])
    series = [n for n in s.states if n not in simulation or "time" not in simulation[n].dims]
    if series:
        raise ValueError(f"cumulative_budget: the run has no state series {series}; run simulate(..., "
                         "return_states=True, return_fluxes=True, return_discharge_field=True)")
    units = [str(g) for g in simulation["gauge"].values] if "gauge" in simulation.dims else []
    unit = "domain" if gauge is None else str(gauge)
    if unit != "domain" and unit not in units:
        raise ValueError(f"cumulative_budget: gauge {gauge!r} is not one of the run's gauges {units}")
    n = simulation.sizes["time"]
    if n == 0:
        raise ValueError("cumulative_budget: the run has no time step")
    if int(points) < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    cuts = np.unique(np.round(np.linspace(1, n, min(int(points), n))).astype(int))
    rows = []
    for k in cuts:
        part = simulation.isel(time=slice(0, int(k)))
        part = part.assign({f"{name}_final": simulation[name].isel(time=int(k) - 1, drop=True) for name in s.states})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the first steps may be dry: their share is not used
            b = water_balance(part, basin).sel(unit=unit)
        row = {"rain": float(b["rain"]), "evaporation": -float(b["evaporation"]), "outflow": -float(b["outflow"]),
               "exchange": float(b["exchange"]), "correction": float(b["correction"])}
        row.update({str(v): float(b[v]) for v in b.data_vars if str(v).startswith("source_")})
        row["storage_change"] = -float(b["storage_change"])
        row["residual"] = float(b["residual"])
        rows.append(row)
    times = pd.DatetimeIndex(simulation["time"].values)
    dt = pd.Timedelta(seconds=float(simulation.attrs["dt"]))
    table = pd.DataFrame(rows, index=pd.DatetimeIndex(times[cuts - 1], name="time"))
    zero = pd.DataFrame(0.0, index=pd.DatetimeIndex([times[0] - dt], name="time"), columns=table.columns)
    table = pd.concat([zero, table])
    table.attrs = {"unit": unit, "structure": s.label, "units": "mm"}
    return table


def plot_cumulative_budgets(budgets: Mapping[str, pd.DataFrame], *, reference: str | None = None,
                            title: str | None = None) -> Figure:
    """One panel per run: each term of its :func:`cumulative_budget` over time (mm, signed), the
    network's correction drawn thick; and a last panel with what the other runs change against
    ``reference`` (default the first run, e.g. the conceptual GR4): the difference of their
    cumulative evaporation, outflow and storage change, and their correction."""
    names = list(budgets)
    reference = names[0] if reference is None else reference
    if reference not in budgets:
        raise ValueError(f"reference {reference!r} is not one of the budgets {names}")
    others = [n for n in names if n != reference]
    panels = len(names) + (1 if others else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.7), constrained_layout=True)
    axes = np.atleast_1d(axes)
    colours = {"rain": "tab:blue", "evaporation": "tab:orange", "outflow": "tab:green", "exchange": "tab:purple",
               "correction": "tab:red", "storage_change": "tab:brown", "residual": "black", "source_solver": "tab:pink",
               "source_floor": "tab:cyan", "source_steady": "tab:olive", "source_impervious": "tab:gray",
               "source_clip": "tab:pink"}
    for ax, name in zip(axes, names):
        b = budgets[name]
        for col in b.columns:
            if col != "correction" and not np.any(np.abs(b[col].to_numpy()) > 1e-6):
                continue  # a term that stays at round-off (no exchange, no impervious cells)
            style = dict(lw=2.4) if col == "correction" else dict(lw=1.1)
            if col == "residual":
                style = dict(lw=1.0, ls=":")
            ax.plot(b.index, b[col], label=col.replace("_", " "), color=colours.get(col), **style)
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_title(f"{name} ({b.attrs.get('unit', '')})", fontsize=9)
        ax.set_ylabel("cumulative term (mm, signed as in the budget)")
        ax.set_xlabel("time")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.legend(fontsize=6, loc="upper left")
    if others:
        ax = axes[-1]
        styles = ["-", "--", ":", "-."]
        base = budgets[reference]
        for k, name in enumerate(others):
            b = budgets[name].reindex(base.index)
            for col in ("correction", "evaporation", "outflow", "storage_change"):
                values = b[col] if col == "correction" else b[col] - base[col]
                what = "correction" if col == "correction" else f"Δ {col.replace('_', ' ')}"
                ax.plot(base.index, values, color=colours[col], ls=styles[k % len(styles)],
                        lw=2.2 if col == "correction" else 1.1, label=f"{name}: {what}")
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_title(f"what the networks change (against {reference})", fontsize=9)
        ax.set_ylabel("cumulative difference (mm, signed as in the budget)")
        ax.set_xlabel("time")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.legend(fontsize=5.5, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
        fig.get_layout_engine().set(h_pad=0.08)
    return fig


# --- the solver study's figure -----------------------------------------------------------------


def plot_solver_study(curves: pd.DataFrame, table: pd.DataFrame | None = None, *, title: str | None = None) -> Figure:
    """The cost curves of :func:`solver_training_study`: training cost and validation cost per
    iteration, and training cost against wall time, one line per solver (with ``table``, each
    label adds the final temporal NSE and the seconds per iteration)."""
    has_validation = "validation_cost" in curves and curves["validation_cost"].notna().any()
    panels = 3 if has_validation else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.4 * panels, 3.6), constrained_layout=True)
    for label, c in curves.groupby("solver", sort=False):
        if table is not None and label in table.index:
            row = table.loc[label]
            label = f"{label} (temporal NSE {row['temporal NSE']:.3f}, {row['s / iteration (median)']:.2g} s/it)"
        line, = axes[0].plot(c["iteration"], c["cost"], marker=".", ms=3, lw=1.2, label=label)
        if has_validation:
            axes[1].plot(c["iteration"], c["validation_cost"], marker=".", ms=3, lw=1.2, color=line.get_color(),
                         label=label)
        axes[-1].plot(c["seconds"], c["cost"], marker=".", ms=3, lw=1.2, color=line.get_color(), label=label)
    axes[0].set_title("training (calibration period and gauges)", fontsize=9)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("cost (1 − NSE, dimensionless)")
    if has_validation:
        axes[1].set_title("validation period, same gauges", fontsize=9)
        axes[1].set_xlabel("iteration")
        axes[1].set_ylabel("validation cost (1 − NSE, dimensionless)")
    axes[-1].set_title("training cost against time", fontsize=9)
    axes[-1].set_xlabel("wall time since the start of training (s, compilation included)")
    axes[-1].set_ylabel("cost (1 − NSE, dimensionless)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# --- data-flow diagrams ----------------------------------------------------------------------

_HYDROLOGY_LABELS = {"gr4": "GR4", "gr4_mlp": "GR4-MLP", "gr4_ode": "GR4-ODE", "gr4_ude": "GR4-UDE"}
_MAPPING_LABELS = {"uniform": "uniform", "distributed": "distributed", "ann": "MLP regionalisation",
                   "cnn": "CNN regionalisation", "multi-linear": "multi-linear regionalisation",
                   "multi-power": "multi-power regionalisation"}
_STORE_NAMES = {"hi": "interception", "hp": "production", "ht": "transfer", "hl": "slow", "he": "exponential",
                "ha": "production", "hc": "routing", "hs": "snow"}


def _box(ax, x, y, w, h, text, *, face="white", edge="0.25", style="-", fontsize=6.0, weight="normal", alpha=1.0):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.4,rounding_size=1.2", fc=face, ec=edge, lw=0.9,
                                ls=style, alpha=alpha))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, weight=weight, wrap=False,
            color="0.1" if alpha == 1.0 else "0.5")
    return (x, y, w, h)


def _arrow(ax, start, end, *, text=None, colour="0.2", style="-", curve=0.0, fontsize=5.5, offset=(0.0, 1.2)):
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle="-|>", color=colour, lw=0.9, ls=style, shrinkA=1, shrinkB=1,
                                connectionstyle=f"arc3,rad={curve}", mutation_scale=7))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text, ha="center",
                va="bottom", fontsize=fontsize, color=colour)


def _mapping_text(mapping: str, names: Sequence[str]) -> str:
    listed = ", ".join(names)
    if mapping == "uniform":
        return f"uniform mapping\none value per parameter\n→ {listed}"
    if mapping == "distributed":
        return f"distributed mapping\none value per cell\n→ maps of {listed}"
    if mapping == "ann":
        return f"MLP regionalisation\nD(cell) → dense layers → tanh\nscaled to bounds → {listed}"
    if mapping == "cnn":
        return f"CNN regionalisation\nD rasters → 3×3 convolutions\n→ tanh scaled to bounds → {listed}"
    return f"{_MAPPING_LABELS.get(mapping, mapping)}\nθ = l + (u − l)·σ(ρ₀ + Σ ρ_d·D_d)\n→ {listed}"


def dataflow_diagram(hydrology: str, mapping: str, ax: Axes | None = None, *, routing: str = "lr",
                     hidden: Sequence[int] = (16,)) -> Axes:
    """Draw the data flow of one configuration (boxes and arrows), from the library's own tables.

    Forcing (rain, PET) and descriptors on the left; the mapping of the parameters
    (``uniform``, ``distributed`` maps, MLP or CNN regionalisation of the descriptors); the
    cell's stores (the structure's states, each with its capacity parameter); for a hybrid, the
    correction network with its inputs and outputs (:attr:`~hybridhydro.structures.HydrologicalModule.nn_inputs`,
    ``nn_outputs``) and its number of weights (``hidden`` widths), applied once per step
    (``*_mlp``) or inside the ODE that implicit Euler and Newton solve (``gr4_ude``); the
    routing from cell to cell; discharge, cost and the way back to the controls (gradients by
    reverse mode, or a gradient-free search where the mapping's default optimiser is sbs).

    Returns the axes (drawn on ``ax``, or on a new figure).
    """
    s = parse_structure(f"{hydrology}-{routing}")
    module = get_module(s.hydrology)
    if mapping not in MAPPINGS:
        raise ValueError(f"unknown mapping {mapping!r}; choose one of {', '.join(MAPPINGS)}")
    hybrid = bool(getattr(module, "hybrid", False))
    parent = get_module(module.parent) if hybrid else module
    ode = "newton_iterations" in parent.diagnostics
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 5.0))
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 68)
    ax.set_axis_off()
    hydro_params = [p for p in module.parameters]
    routing_params = [p for p in s.parameters if p not in hydro_params]
    calibrated = list(calibrated_parameters(s))
    regional = mapping in REGIONAL_MAPPINGS
    label = f"{_HYDROLOGY_LABELS.get(s.hydrology, s.hydrology)}, {_MAPPING_LABELS.get(mapping, mapping)}"
    ax.set_title(f"{label}  ({s.hydrology}-{routing}, {mapping})", fontsize=8)

    # inputs
    _box(ax, 1, 47, 14, 8, "rain P\nprcp (mm/step)", face="#dbe9f6")
    _box(ax, 1, 33, 14, 8, "PET E\npet (mm/step)", face="#dbe9f6")
    _box(ax, 1, 6, 14, 9, "descriptors D\n(maps)" + ("" if regional else "\nnot used"),
         face="#eeeeee", style="-" if regional else "--", alpha=1.0 if regional else 0.55)
    # mapping
    _box(ax, 19, 4, 27, 13, _mapping_text(mapping, calibrated), face="#fde9d9", fontsize=5.6)
    if regional:
        _arrow(ax, (16, 10.5), (18.5, 10.5))
    # the cell
    cell_text = "one cell, every time step"
    if ode:
        solver = "implicit Euler, Newton" if hybrid else "implicit Euler, Newton (smash)"
        cell_text = f"continuous ODE dh/dt = F(h, θ{', f' if hybrid else ''}); {solver}"
    ax.add_patch(FancyBboxPatch((21, 25), 45, 27, boxstyle="round,pad=0.4,rounding_size=1.5", fc="#f4f9f1",
                                ec="0.3", lw=0.9))
    ax.text(43.5, 50.2, cell_text, ha="center", va="top", fontsize=6.0, style="italic")
    stores = [n for n in module.states]
    width = 41.0 / max(len(stores), 1)
    for k, name in enumerate(stores):
        cap = STORE_CAPACITY.get(name)
        text = f"{_STORE_NAMES.get(name, name)}\n{name}" + (f" (cap. {cap})" if cap else "")
        _box(ax, 23 + k * width, 38, width - 2.0, 7.5, text, face="white", fontsize=5.6)
    exchange = [p for p in hydro_params if p.startswith("kexc") or p.startswith("aexc") or p == "kb"]
    flux_text = "fluxes: " + ", ".join(f for f in module.fluxes if not f.startswith("correction_")
                                       and f not in ("rain_correction",))[:80]
    ax.text(43.5, 33.5, flux_text, ha="center", va="center", fontsize=4.8, color="0.25")
    ax.text(43.5, 28.5, "exchange " + (", ".join(exchange) if exchange else "none") + " · θ: "
            + ", ".join(hydro_params), ha="center", va="center", fontsize=5.2, color="0.25")
    _arrow(ax, (15.5, 51), (22.5, 45), text="P", offset=(0, 0.4))
    _arrow(ax, (15.5, 37), (22.5, 39.5), text="E", offset=(0, -3.2))
    _arrow(ax, (30, 17.6), (30, 24.6))
    ax.text(29, 21, "θ", ha="right", va="center", fontsize=6.0, color="0.2")
    # the correction network
    if hybrid:
        n_in, n_out = len(module.nn_inputs), len(module.nn_outputs)
        sizes = [n_in, *hidden, n_out]
        weights = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
        where = ("inside the ODE: solved with the step\n(implicit Euler, Newton)" if ode
                 else "discrete step: after interception,\nonce per step")
        text = (f"correction network f (MLP {'–'.join(map(str, sizes))}, {weights} weights)\n"
                f"inputs: {', '.join(module.nn_inputs)}\n"
                f"outputs f ∈ (−1, 1): {', '.join(module.nn_outputs)}\n{where}")
        _box(ax, 21, 55, 45, 12, text, face="#e8e0f3", fontsize=5.6)
        _arrow(ax, (36, 52.5), (36, 54.6), colour="0.3")
        _arrow(ax, (51, 54.6), (51, 52.5), colour="#6a3d9a", text="f", offset=(2, -1.2))
        ax.text(33.5, 53.0, ", ".join(n for n in module.nn_inputs), ha="right", va="center", fontsize=4.8, color="0.3")
    # routing, discharge, cost
    _box(ax, 71, 31, 13, 12, f"routing {s.routing}\ncell to cell\n({', '.join(routing_params) or 'no parameter'})",
         face="#dfeee4")
    _arrow(ax, (66.5, 38), (70.5, 37), text="qt", offset=(0, 0.4))
    _box(ax, 87, 31, 12, 12, "discharge Q\n(m³/s)\nat gauges", face="#dbe9f6")
    _arrow(ax, (84.5, 37), (86.6, 37))
    _box(ax, 71, 5, 28, 11, f"cost J = 1 − NSE(Q, Qobs)\ncalibration gauges and period\n"
         f"optimiser: {DEFAULT_OPTIMIZER[mapping]}", face="#fbe3e3")
    _box(ax, 50, 2.5, 15, 7, "observed Qobs\n(m³/s)", face="#dbe9f6", fontsize=5.4)
    _arrow(ax, (65.5, 6.2), (70.6, 7))
    _arrow(ax, (93, 30.6), (93, 16.5))
    gradient = DEFAULT_OPTIMIZER[mapping] != "sbs"
    back = "#c0392b" if gradient else "0.45"
    what = "sbs: search, no gradient"
    if gradient:
        what = "∇J by reverse mode" + (" (IFT through Newton)" if ode else "")
    _arrow(ax, (70.6, 12.5), (46.6, 12.5), colour=back, style="--")
    ax.text(58.5, 18.5, what, ha="center", va="bottom", fontsize=5.2, color=back)
    if hybrid:
        _arrow(ax, (74, 16.5), (66.6, 60), colour="#c0392b", style="--", curve=0.15)
        ax.text(82, 50, "∇J → network weights" + ("" if gradient else "\n(sbs keeps them fixed:\ntrain with adam)"),
                ha="center", va="center", fontsize=5.2, color="#c0392b")
    return ax


def dataflow_grid(hydrologies: Sequence[str] = ("gr4", "gr4_mlp", "gr4_ode", "gr4_ude"),
                  mappings: Sequence[str] = ("uniform", "distributed", "ann", "cnn"), *, routing: str = "lr",
                  hidden: Sequence[int] = (16,), panel: tuple[float, float] = (6.4, 4.3)) -> Figure:
    """One :func:`dataflow_diagram` per configuration: a row per hydrology, a column per mapping."""
    hydrologies, mappings = list(hydrologies), list(mappings)
    if not hydrologies or not mappings:
        raise ValueError("dataflow_grid: give at least one hydrology and one mapping")
    fig, axes = plt.subplots(len(hydrologies), len(mappings), figsize=(panel[0] * len(mappings),
                                                                       panel[1] * len(hydrologies)), squeeze=False)
    for i, hydrology in enumerate(hydrologies):
        for j, mapping in enumerate(mappings):
            dataflow_diagram(hydrology, mapping, axes[i, j], routing=routing, hidden=hidden)
    fig.subplots_adjust(left=0.005, right=0.995, top=0.97, bottom=0.005, wspace=0.02, hspace=0.08)
    return fig


# --- tables ------------------------------------------------------------------------------------


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a GitHub markdown table (index first): whole numbers as they are, other numbers
    with ``digits`` decimals (small ones with ``digits`` significant digits), NaN as ``–``."""
    def cell(v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return str(bool(v))
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            if not np.isfinite(v):
                return "–" if np.isnan(v) else str(v)
            return f"{v:.{digits}f}" if abs(v) >= 10 ** -digits or v == 0 else f"{v:.{digits}g}"
        return str(v).replace("|", "\\|")

    head = [str(table.index.name or "")] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, row in zip(table.index, table.itertuples(index=False, name=None)):
        lines.append("| " + " | ".join([cell(idx)] + [cell(v) for v in row]) + " |")
    return "\n".join(lines)
