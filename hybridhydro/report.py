"""The tables the notebooks show, built once: water budgets and their closure, the implicit
solver's statistics, the solvers compared, calibrated parameters, scores, and the comparison's
markdown; and the saver of a stage's figures.

Every function takes the library's own results (:func:`hybridhydro.simulate` runs,
:func:`hybridhydro.water_balance` budgets, :func:`hybridhydro.balance_closure` dicts,
:class:`~hybridhydro.calibration.CalibrationResult`\\ s, :func:`hybridhydro.protocol.score`
tables) and returns a :class:`pandas.DataFrame` (or :class:`~pandas.Series`) whose columns say
their unit. Only :func:`network_table` and :func:`solver_comparison` run models themselves
(a zero-weight run; the solver runs and their reference). Figures are in
:mod:`hybridhydro.plotting`; :func:`figure_saver` writes them where a stage's figures go.

A typical stage::

    cfg = hh.load_params(params)
    save = report.figure_saver(output_dir, "02_forward", cfg.figures)
    balances, closures = report.water_balances({"gr4-lr": result}, basin)
    report.balance_table(balances, closures)          # one row per run, every term in mm
    report.newton_statistics(ode, closures["gr4_ode-lr"])
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import structures
from .balance import balance_closure, water_balance
from .periods import most_downstream_gauge
from .plotting import catchment_mean, save_figure
from .structure_name import calibrated_parameters, parse_structure, structure_label
from .structures import PARAMETER_BOUNDS, PARAMETER_UNITS, get_module

__all__ = [
    "BUDGET_TERMS",
    "balance_table",
    "basin_summary",
    "closure_table",
    "comparison_markdown",
    "correction_names",
    "correction_sizes",
    "descriptor_table",
    "figure_saver",
    "flood_events",
    "flux_changes",
    "gauge_summary",
    "iteration_limit",
    "largest_events",
    "network_table",
    "networks_table",
    "newton_statistics",
    "outlet",
    "parameter_names",
    "parameter_ranges",
    "read_comparison",
    "scenario_means",
    "signature_errors",
    "solver_comparison",
    "storm",
    "water_balances",
    "write_comparison",
]

#: The gross terms of a water budget, in the order the tables show them (mm over the unit).
BUDGET_TERMS = ("rain", "evaporation", "outflow", "exchange", "correction", "storage_change")

#: What each key of :func:`hybridhydro.balance_closure` is called in a table.
CLOSURE_COLUMNS = {
    "worst": "unexplained / water turned over",
    "unconverged": "unconverged (share of solved cell-steps)",
    "no_root": "without a root (share of cell-steps)",
    "several_roots": "possibly several roots (share of cell-steps)",
    "above_capacity": "above capacity (share of cell-steps)",
}

#: The options that keep every field a budget or a map needs.
_RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)

#: Fluxes (mm per step) a hybrid shares with its parent, compared by :func:`flux_changes`.
_SHARED_FLUXES = ("pn", "en", "es", "ps", "pr", "perc", "lexc", "qr", "qd")


# --- figures -----------------------------------------------------------------------------------


class SavedFigure(type(Path())):
    """The path of a saved figure, shown as ``figures/<file>`` (a notebook's output, e.g. on the
    documentation site, does not show the absolute path of the machine that ran it)."""

    def __repr__(self) -> str:
        return f"saved {self.parent.name}/{self.name}"


def figure_saver(output_dir: str | Path, stage: str, figures: Any = None) -> Callable[..., Path]:
    """A ``save(fig, name)`` that writes ``<output_dir>/figures/<stage>_<name>.<format>``.

    Parameters
    ----------
    output_dir
        The stage's output folder (the run directory).
    stage
        The prefix of every file name (the notebook's stem, e.g. ``02_forward``).
    figures
        The ``figures`` section of the parameters (``cfg.figures``) or a mapping with ``dpi``
        and ``format``; None: 120 dpi PNG.

    Returns
    -------
    callable
        ``save(fig, name) -> Path`` (:func:`hybridhydro.plotting.save_figure`).
    """
    if figures is None:
        dpi, fmt = 120, "png"
    elif isinstance(figures, Mapping):
        dpi, fmt = int(figures.get("dpi", 120)), str(figures.get("format", "png"))
    else:
        dpi, fmt = int(figures.dpi), str(figures.format)
    output_dir = Path(output_dir)

    def save(fig, name: str) -> Path:
        return SavedFigure(save_figure(fig, output_dir, f"{stage}_{name}", dpi=dpi, format=fmt))

    save.__doc__ = f"Save a figure as {output_dir}/figures/{stage}_<name>.{fmt} ({dpi} dpi); returns the path."
    return save


# --- basin -------------------------------------------------------------------------------------


def outlet(basin: xr.Dataset) -> str:
    """The code of the gauge that drains the largest area (smash's ``"dws"``)."""
    return str(basin["gauge"].values[most_downstream_gauge(basin)])


def basin_summary(ds: xr.Dataset) -> pd.DataFrame:
    """One column: the grid, active cells, mean cell area, gauges, routing partitions, time steps, window."""
    from .mesh import Mesh

    mesh = Mesh.from_dataset(ds)
    cell_km2 = float((ds["dx"] * ds["dy"]).where(ds["active_cell"]).mean()) / 1e6
    return pd.Series(
        {
            "grid (rows × columns)": f"{mesh.nrow} × {mesh.ncol}",
            "active cells": mesh.nac,
            "mean cell area (km²)": round(cell_km2, 3),
            "gauges": mesh.ng,
            "routing partitions": mesh.npar,
            "time steps": ds.sizes["time"],
            "time step (s)": ds.attrs["dt"],
            "window": f"({ds.attrs['start_time']}, {ds.attrs['end_time']}]",
        },
        name=ds.attrs.get("name", "basin"),
    ).to_frame()


def gauge_summary(ds: xr.Dataset, rain: xr.DataArray | None = None) -> pd.DataFrame:
    """Per gauge: the rain over its catchment (mm), the share of steps observed, the peak discharge (m³ s⁻¹)."""
    rain = catchment_mean(ds, "prcp") if rain is None else rain
    return pd.DataFrame(
        {
            "rain total (mm)": rain.sum("time").values.astype(float),
            "observed discharge (share of steps)": ds["qobs"].notnull().mean("time").values.astype(float),
            "peak discharge (m³ s⁻¹)": ds["qobs"].max("time").values.astype(float),
        },
        index=pd.Index(ds["gauge"].values.astype(str), name="gauge"),
    ).round(3)


def descriptor_table(basin: xr.Dataset) -> pd.DataFrame:
    """Per descriptor: its unit and its minimum, mean and maximum over the active cells."""
    from .plotting import descriptor_units

    if "descriptors" not in basin or "descriptor" not in basin.coords:
        raise ValueError("descriptor_table: the basin has no descriptors (variable 'descriptors', dims descriptor, y, "
                         "x); regionalisation (ann, cnn, multi-*) needs them: read a dataset with descriptor rasters")
    names = [str(d) for d in basin["descriptor"].values]
    active = basin["active_cell"].values.astype(bool)
    raw = basin["descriptors"].values[:, active]
    units = descriptor_units(basin)
    return pd.DataFrame(
        {"unit": [units.get(n, "") for n in names], "min": raw.min(axis=1), "mean": raw.mean(axis=1),
         "max": raw.max(axis=1)},
        index=pd.Index(names, name="descriptor"),
    ).round(3)


def storm(basin: xr.Dataset, factor: float) -> xr.Dataset:
    """The basin with its rain multiplied by ``factor`` (the accounting under heavy rain).

    The scenario is built on purpose beyond the rain records, so its ``forcing_plausibility``
    is ``"off"``: the run does not warn about (or refuse) the rain it was asked to carry.
    """
    out = basin.copy()
    out["prcp"] = basin["prcp"] * factor
    out["prcp"].attrs = dict(basin["prcp"].attrs)
    out.attrs = {**basin.attrs, "forcing_plausibility": "off"}
    return out


# --- water balance -----------------------------------------------------------------------------


def water_balances(runs: Mapping[str, xr.Dataset], basin: xr.Dataset) -> tuple[dict[str, xr.Dataset], dict[str, dict]]:
    """The budget (:func:`hybridhydro.water_balance`) and its closure (:func:`hybridhydro.balance_closure`) of each run.

    ``runs`` need ``return_fluxes`` and ``return_discharge_field`` (and ``return_states`` for the
    share of cell-steps above capacity). Returns ``(balances, closures)``, both keyed like ``runs``.
    """
    balances = {name: water_balance(run, basin) for name, run in runs.items()}
    closures = {name: balance_closure(balances[name], run) for name, run in runs.items()}
    return balances, closures


def balance_table(
    balances: xr.Dataset | Mapping[str, xr.Dataset],
    closures: Mapping[str, Mapping] | None = None,
    *,
    unit: str | None = "domain",
    relative: bool = False,
) -> pd.DataFrame:
    """Budgets side by side: every gross term, each named source in its own column, the residual.

    Parameters
    ----------
    balances
        One :func:`hybridhydro.water_balance` (one row per unit: the gauge catchments and the
        domain), or several by name (one row per name at ``unit``; ``unit=None``: every unit,
        indexed by ``(run, unit)``).
    closures
        The closures of the named balances (:func:`water_balances`): adds the unexplained share
        and the solver's statistics (:data:`CLOSURE_COLUMNS`).
    relative
        Every term as a percentage of the rain (``"<term> (% of rain)"``), the rain in mm;
        otherwise every term in mm, and ``relative_residual`` (residual / rain).
    """
    single = isinstance(balances, xr.Dataset)
    items = {"": balances} if single else dict(balances)
    if single and closures is not None:
        raise TypeError("closures go with several named balances: balance_table({name: balance}, {name: closure})")
    sources = list(dict.fromkeys(str(v) for b in items.values() for v in b.data_vars if str(v).startswith("source_")))
    terms = [t for t in BUDGET_TERMS if any(t in b for b in items.values())] + sources + ["overflow", "residual"]
    rows = {}
    for name, b in items.items():
        units = [str(u) for u in b["unit"].values] if (single or unit is None) else [unit]
        for u in units:
            d = b.sel(unit=u)
            rows[(name, u)] = {t: float(d[t]) if t in d else np.nan for t in terms}
    table = pd.DataFrame.from_dict(rows, orient="index")
    if single:
        table.index = pd.Index([u for _, u in rows], name="unit")
    elif unit is None:
        table.index = pd.MultiIndex.from_tuples(list(rows), names=["run", "unit"])
    else:
        table.index = pd.Index([n for n, _ in rows], name="run")
    if relative:
        with np.errstate(divide="ignore", invalid="ignore"):
            shares = {f"{t} (% of rain)": 100 * table[t] / table["rain"] for t in terms if t != "rain"}
        table = pd.DataFrame({"rain (mm)": table["rain"], **shares})
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            table["relative_residual"] = table["residual"] / table["rain"]
    if closures is not None:
        shown = closure_table(closures)[list(CLOSURE_COLUMNS.values())]
        table = table.join(shown, on="run" if unit is None else None)
    return table


def closure_table(closures: Mapping[str, Mapping]) -> pd.DataFrame:
    """One row per run: the unexplained share, each named source's largest share of the rain, the solver's statistics."""
    table = pd.DataFrame({name: dict(c) for name, c in closures.items()}).T.astype(float)
    sources = [c for c in table if c.startswith("source_")]
    table = table[["worst", *sources, *(k for k in CLOSURE_COLUMNS if k != "worst")]]
    table = table.rename(columns={**CLOSURE_COLUMNS, **{c: f"{c} / rain (largest)" for c in sources}})
    table.index.name = "run"
    return table


# --- the implicit solver -----------------------------------------------------------------------


def iteration_limit(run: xr.Dataset) -> int:
    """The most updates the run's implicit solver takes per step (the solver's own constant).

    ``newton`` and ``implicit``: :data:`hybridhydro.structures.NEWTON_MAX_ITERATIONS`;
    ``conservative``: the safeguarded solver's limit.
    """
    solver = run.attrs.get("ode_solver", "newton")
    if solver == "conservative":
        return int(structures.SAFEGUARDED_MAX_ITERATIONS)
    return int(structures.NEWTON_MAX_ITERATIONS)  # read when called: the solver's constant, whatever it is


def newton_statistics(run: xr.Dataset, closure: Mapping) -> pd.Series:
    """How hard the implicit solver of a gr4_ode / gr4_ude run worked, over its solved cell-steps.

    Parameters
    ----------
    run
        A run of an ODE structure (it carries ``newton_iterations`` and ``newton_residual``).
    closure
        Its :func:`hybridhydro.balance_closure` (the shares unconverged, without a root, with
        possibly several roots).

    Returns
    -------
    pandas.Series
        Cell-steps solved (a step is solved where its forcing is given), mean and largest number
        of updates, the share unconverged after :func:`iteration_limit` updates, the shares
        without a root and with possibly several roots (%), the largest and median residual of
        the implicit equation (dimensionless), and the largest residual among the steps that
        stopped before the limit (converged steps: round-off).
    """
    if "newton_iterations" not in run:
        raise ValueError(f"the run of {run.attrs.get('structure', '?')} has no implicit solver (no newton_iterations)")
    limit = iteration_limit(run)
    it = run["newton_iterations"].values
    res = run["newton_residual"].values
    solved = np.isfinite(it) & (it > 0)
    converged = solved & (it < limit)
    any_solved = bool(solved.any())
    stats = {
        "cell-steps solved": int(solved.sum()),
        "mean updates": float(it[solved].mean()) if any_solved else 0.0,
        "max updates": int(it[solved].max()) if any_solved else 0,
        f"unconverged after {limit} updates (%)": 100 * float(closure["unconverged"]),
        "steps without a root (%)": 100 * float(closure["no_root"]),
        "steps with possibly several roots (%)": 100 * float(closure["several_roots"]),
        "largest residual": float(res[solved].max()) if any_solved else np.nan,
        "median residual": float(np.median(res[solved])) if any_solved else np.nan,
        "largest residual of a converged step": float(res[converged].max()) if converged.any() else 0.0,
    }
    return pd.Series(stats, name=structure_label(str(run.attrs.get("structure", ""))), dtype=object)


def solver_comparison(
    basin: xr.Dataset,
    structure: str,
    network,
    solvers: Sequence[str],
    *,
    substeps: int = 4,
    reference_substeps: int = 64,
    gauge: str | None = None,
) -> tuple[pd.DataFrame, dict[str, xr.Dataset], xr.Dataset]:
    """A neural ODE (gr4_ude) run with each of ``solvers`` against an accurate reference.

    The reference is RK4 with ``reference_substeps`` sub-steps; each solver's run is timed
    after a first run that compiles it. Returns the table (one row per solver: largest
    discharge error at ``gauge`` (default: the outlet) against the reference, in m³/s and
    relative to its peak, Newton updates and shares, the solver's named source over the rain,
    the run time and the unexplained share of the balance), the runs, and the reference run.
    """
    from .simulate import simulate

    gauge = outlet(basin) if gauge is None else str(gauge)
    reference = simulate(basin, structure, nn_parameters=network, ode_solver="rk4", ode_substeps=reference_substeps)
    q_ref = reference["q"].sel(gauge=gauge).values
    rows, runs = {}, {}
    for solver in solvers:
        options = dict(nn_parameters=network, ode_solver=solver, ode_substeps=substeps)
        simulate(basin, structure, **options, **_RUN)  # compile (the timed run reuses it)
        t0 = time.perf_counter()
        result = simulate(basin, structure, **options, **_RUN)
        seconds = time.perf_counter() - t0
        runs[solver] = result
        balance = water_balance(result, basin)
        closure = balance_closure(balance, result)
        stats = newton_statistics(result, closure)
        error = float(np.abs(result["q"].sel(gauge=gauge).values - q_ref).max())
        domain = balance.sel(unit="domain")
        rows[solver] = {
            "outlet error vs reference, max (m³/s)": error,
            "relative to peak": error / max(float(q_ref.max()), 1e-12),
            "mean Newton updates": stats["mean updates"],
            "unconverged steps (%)": 100 * closure["unconverged"],
            "steps without a root (%)": 100 * closure["no_root"],
            "largest Newton residual": stats["largest residual"],
            "largest residual of a converged step": stats["largest residual of a converged step"],
            "solver source / rain": float(domain["source_solver"] / domain["rain"]) if "source_solver" in domain else 0.0,
            "run time (s)": seconds,
            "unexplained / water turned over": closure["worst"],
        }
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("solver")
    return table, runs, reference


# --- hybrids -----------------------------------------------------------------------------------


def network_table(basin: xr.Dataset, networks: Mapping[str, Any], parents: Mapping[str, xr.Dataset]) -> pd.DataFrame:
    """Per hybrid structure: its parent, the network's inputs and corrections, its number of
    weights, and whether zero weights (smash's default) give the parent's discharge exactly.

    ``networks`` maps a hybrid structure to its :class:`hybridhydro.FluxCorrectionNet`,
    ``parents`` to its parent's run; a zero-weight run of each hybrid is made here.
    """
    from .protocol import parent_structure
    from .simulate import simulate

    rows = {}
    for name, net in networks.items():
        module = get_module(parse_structure(name).hydrology)
        zero = simulate(basin, name)  # smash's default: zero weights
        rows[name] = {
            "parent": parent_structure(name),
            "network inputs": ", ".join(module.nn_inputs),
            "corrections": ", ".join(module.nn_outputs),
            "weights": sum(int(np.size(v)) for v in net.weights().values()),
            "zero weights = parent": bool(np.array_equal(zero["q"].values, parents[name]["q"].values)),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("hybrid")


def networks_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """Every network of the trained models, one row each (the referees' table): which model,
    its role, its inputs and outputs with their units and bounds, its layers and activations,
    and its number of trained weights.

    ``results``: :class:`~hybridhydro.calibration.CalibrationResult` by model name (the saved
    ones read back carry their networks). A flux-correction network reads the states as
    fractions of their capacities and ``pn``, ``en`` in mm per step (``raw``) or mm per hour
    (``hourly`` input scaling) and gives corrections in (−1, 1); a regionalisation network reads
    the descriptors transformed with the training basin's statistics and gives parameters
    inside their bounds.
    """
    from .io import step_units

    rows = {}
    for model, r in results.items():
        dt = r.options.get("dt")
        if r.nn_parameters is not None:
            module = get_module(parse_structure(r.structure).hydrology)
            if r.options.get("nn_input_scaling") == "hourly":
                rate = "mm h-1, as a rate"
            else:
                rate = f"mm per step of {dt:g} s" if dt else "mm per time step"
            inputs = [f"{n} ({rate})" if n in structures.FORCING_INPUTS else f"{n} (1: fraction of capacity)"
                      for n in module.nn_inputs]
            w = r.nn_parameters
            n_layers = sum(1 for k in w if k.startswith("weight_") and np.size(w[k]) > 0)
            sizes = [int(np.shape(w["weight_1"])[1])] + [int(np.shape(w[f"weight_{k}"])[0]) for k in range(1, n_layers + 1)]
            layers = " → ".join([str(sizes[0])] + [f"{n} ({'silu' if k < n_layers else 'tanh'})"
                                                   for k, n in enumerate(sizes[1:], start=1)])
            rows[f"{model}: flux correction"] = {
                "model": model, "role": "flux correction", "inputs": ", ".join(inputs),
                "outputs": ", ".join(f"{o} correction (1)" for o in module.nn_outputs), "bounds": "(-1, 1)",
                "layers": layers, "weights": int(sum(np.size(v) for v in w.values())),
            }
        if r.network is not None:
            import jax

            from .networks import architecture, pure

            arch = architecture(r.network)
            names = list(r.options.get("parameters", []))
            scaling = getattr(r, "descriptor_scaling", None)
            descriptors = ", ".join(scaling.names) if scaling is not None else f"{arch['n_descriptors']} descriptors"
            method = scaling.method if scaling is not None else r.options.get("descriptor_transform", "")
            units = {n: step_units(PARAMETER_UNITS.get(n, ""), dt) if dt else PARAMETER_UNITS.get(n, "") for n in names}
            if arch["class"] == "DescriptorMLP":
                layers = " → ".join([str(arch["n_descriptors"])] + [f"{n} ({arch['activation']})" for n in arch["hidden"]]
                                    + [f"{len(arch['bounds'])} (tanh, scaled to the bounds)"])
                role = "regionalisation (MLP, per cell)"
            else:
                layers = " → ".join([str(arch["n_descriptors"])]
                                    + [f"{c} ({arch['kernel']}×{arch['kernel']} conv, {arch['activation']})"
                                       for c in arch["channels"]]
                                    + [f"{len(arch['bounds'])} (per-cell dense, tanh scaled to the bounds)"])
                role = "regionalisation (CNN, neighbourhood)"
            rows[f"{model}: regionalisation"] = {
                "model": model, "role": role, "inputs": f"{descriptors} ({method}d, training basin's statistics)",
                "outputs": ", ".join(f"{n} ({units[n]})" for n in names),
                "bounds": ", ".join(f"{n} [{lo:g}, {hi:g}]" for n, (lo, hi) in zip(names, arch["bounds"])),
                "layers": layers,
                "weights": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(pure(r.network)[1]))),
            }
    columns = ["model", "role", "inputs", "outputs", "bounds", "layers", "weights"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("network")


def flux_changes(runs: Mapping[str, xr.Dataset], parents: Mapping[str, xr.Dataset], basin: xr.Dataset) -> pd.DataFrame:
    """Per hybrid and shared flux: the period total over the active cells (mean, mm) of parent and hybrid, and the change."""
    active = basin["active_cell"] == 1
    rows = []
    for name, run in runs.items():
        parent = parents[name]
        for flux in _SHARED_FLUXES:
            if flux in run and flux in parent:
                hybrid_total = float(run[flux].where(active).sum("time").mean())
                parent_total = float(parent[flux].where(active).sum("time").mean())
                rows.append({"hybrid": name, "flux": flux, "parent (mm)": parent_total, "hybrid (mm)": hybrid_total,
                             "change (mm)": hybrid_total - parent_total})
    return pd.DataFrame(rows, columns=["hybrid", "flux", "parent (mm)", "hybrid (mm)", "change (mm)"]).set_index(
        ["hybrid", "flux"])


def correction_names(run: xr.Dataset) -> list[str]:
    """A hybrid run's network corrections (``correction_<output>``), in the order of the network's outputs."""
    present = [str(v) for v in run.data_vars if str(v).startswith("correction_")]
    try:
        outputs = get_module(parse_structure(run.attrs["structure"]).hydrology).nn_outputs
    except (KeyError, ValueError):
        outputs = ()
    ordered = [f"correction_{o}" for o in outputs if f"correction_{o}" in present]
    return ordered + [v for v in present if v not in ordered]


def correction_sizes(runs: Mapping[str, xr.Dataset]) -> pd.DataFrame:
    """Per run: the mean |correction| of each of its network's outputs (dimensionless)."""
    rows = {name: {v: float(np.nanmean(np.abs(run[v].values))) for v in correction_names(run)} for name, run in runs.items()}
    return pd.DataFrame(rows).T.rename_axis("mean |correction| (dimensionless)", axis=1)


# --- calibrated models -------------------------------------------------------------------------


def parameter_names(results: Mapping[str, Any]) -> list[str]:
    """The parameters the calibrations adjusted (:func:`hybridhydro.calibrated_parameters` of each
    result's structure), each once, in smash's order."""
    names: list[str] = []
    for r in results.values():
        names += [n for n in calibrated_parameters(r.structure) if n not in names]
    return names


def parameter_ranges(results: Mapping[str, Any], basin: xr.Dataset) -> pd.DataFrame:
    """Per model and calibrated parameter, over the active cells: the bounds, the minimum, mean and
    maximum, and whether every value is finite and within the bounds (compared in float32, the
    maps' type)."""
    active = basin["active_cell"].values.astype(bool)
    rows = []
    for name, r in results.items():
        for p in calibrated_parameters(r.structure):
            lo, hi = PARAMETER_BOUNDS[p]
            v = np.asarray(r.parameters[p], np.float32)[active]
            within = bool(np.isfinite(v).all() and (v >= np.float32(lo)).all() and (v <= np.float32(hi)).all())
            rows.append({"model": name, "parameter": p, "unit": PARAMETER_UNITS.get(p, ""), "lower bound": lo,
                         "min": float(np.nanmin(v)), "mean": float(np.nanmean(v)), "max": float(np.nanmax(v)),
                         "upper bound": hi, "within bounds": within})
    columns = ["model", "parameter", "unit", "lower bound", "min", "mean", "max", "upper bound", "within bounds"]
    return pd.DataFrame(rows, columns=columns).set_index(["model", "parameter"])


# --- scores and the comparison -----------------------------------------------------------------


def scenario_means(scores: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The mean over the gauges of each scenario: one row per model, one column per (metric, scenario)."""
    from .protocol import SCENARIOS

    means = scores.groupby(["model", "scenario"], sort=False)[list(metrics)].mean().unstack("scenario")
    present = set(means.columns.get_level_values(1))
    return means.reindex(columns=[s for s in SCENARIOS if s in present], level=1)


def comparison_markdown(scores: pd.DataFrame, split, metrics: Sequence[str] = ("nse", "kge"), *, case: str = "") -> str:
    """The comparison as markdown: the split, then one table per metric (:func:`hybridhydro.protocol.comparison_table`)."""
    from .protocol import comparison_table, to_markdown

    lines = [f"# Comparison of the models: {case}" if case else "# Comparison of the models", "",
             f"Calibration period {split.calibration_period[0]} .. {split.calibration_period[1]}, validation period "
             f"{split.validation_period[0]} .. {split.validation_period[1]}; calibration gauges "
             f"{', '.join(split.calibration_gauges)}; pseudo-ungauged gauges {', '.join(split.validation_gauges) or '(none)'}.",
             ""]
    for m in metrics:
        lines += [f"## {m.upper()}", "", to_markdown(comparison_table(scores, m)), ""]
    return "\n".join(lines)


def write_comparison(
    scores: pd.DataFrame, split, output_dir: str | Path, metrics: Sequence[str] = ("nse", "kge"), *, case: str = ""
) -> dict[str, pd.DataFrame]:
    """Write ``comparison_scores.csv`` (every score) and ``comparison.md`` (:func:`comparison_markdown`)
    into ``output_dir``; return the comparison table of each metric."""
    from .protocol import comparison_table

    output_dir = Path(output_dir)
    scores.to_csv(output_dir / "comparison_scores.csv", index=False)
    (output_dir / "comparison.md").write_text(comparison_markdown(scores, split, metrics, case=case))
    return {m: comparison_table(scores, m) for m in metrics}


def read_comparison(path: str | Path) -> dict[str, pd.DataFrame]:
    """The tables of a ``comparison.md`` (:func:`write_comparison`), by metric: one row per model,
    one column per ``"<scenario> <gauge>"``, the values as written (3 decimals; NaN where blank)."""
    tables: dict[str, pd.DataFrame] = {}
    metric, header, rows = None, None, []

    def close():
        if metric is not None and header is not None:
            tables[metric] = pd.DataFrame([r[1] for r in rows], index=pd.Index([r[0] for r in rows], name="model"),
                                          columns=header, dtype=float)

    for line in Path(path).read_text().splitlines():
        heading = re.match(r"^## (\S+)\s*$", line)
        if heading:
            close()
            metric, header, rows = heading.group(1).lower(), None, []
        elif metric is not None and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells[1:]
            elif not set(line) <= set("|-: "):
                rows.append((cells[0], [float(c) if c else np.nan for c in cells[1:]]))
    close()
    return tables


# --- flood events and signatures ---------------------------------------------------------------


def flood_events(basin: xr.Dataset) -> pd.DataFrame:
    """The flood events of the observed discharge at each gauge (smash's hydrograph segmentation)."""
    from .signatures import segment_events

    rain = catchment_mean(basin, "prcp")
    return segment_events(basin["qobs"].values, rain.values, float(basin.attrs["dt"]), times=basin["time"].values,
                          codes=[str(g) for g in basin["gauge"].values])


def largest_events(events: pd.DataFrame, basin: xr.Dataset) -> pd.DataFrame:
    """Per gauge with an event: the event of the largest observed peak (start, end, peak in m³ s⁻¹)."""
    rows = {}
    for gauge in (str(g) for g in basin["gauge"].values):
        ev = events[events["code"] == gauge] if len(events) else events
        if len(ev):
            peaks = [float(basin["qobs"].sel(gauge=gauge, time=slice(a, b)).max()) for a, b in zip(ev["start"], ev["end"])]
            k = int(np.nanargmax(peaks))
            rows[gauge] = {"start": ev["start"].iloc[k], "end": ev["end"].iloc[k], "peak (m³ s⁻¹)": peaks[k]}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["start", "end", "peak (m³ s⁻¹)"]).rename_axis("gauge")


def signature_errors(simulations: Mapping[str, xr.Dataset], basin: xr.Dataset) -> pd.DataFrame:
    """Per model: each continuous signature's relative error (simulated / observed − 1), averaged over the gauges."""
    from .signatures import signatures

    observed = signatures(basin["qobs"], basin, kinds=("continuous",))["cont"].set_index("code")
    errors = {}
    for name, sim in simulations.items():
        simulated = signatures(sim["q"].sel(gauge=basin["gauge"]), basin, kinds=("continuous",))["cont"].set_index("code")
        with np.errstate(divide="ignore", invalid="ignore"):
            errors[name] = (simulated / observed.where(observed > 0) - 1.0).mean()
    return pd.DataFrame(errors).T
