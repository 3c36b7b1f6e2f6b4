# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · The referees' studies
#
# A **study stage**: it runs only when the parameters' `stages` (or `--stages`) name it, after
# the stages it reads: 01 (the basin), 03 (the split, the conceptual models) and 05 (the
# hybrids). What it shows, in the order the referees asked:
#
# 1. **The neural ODE's solvers in training**, not only in a forward run: gr4_ude trained from
#    one and the same start (parameters and network weights) with each solver of
#    `referees.solvers`: the cost per iteration, the final NSE in calibration and in temporal
#    validation, the seconds per iteration, the implicit solver's statistics on the trained
#    model, the unstable explicit steps, and the water each solver leaves unaccounted for;
# 2. **cumulative water budgets** of GR4, GR4-MLP and GR4-UDE: every term from the start of the
#    run to each step, with the water the network's correction adds as its own term;
# 3. **every network's inputs, outputs, units, bounds and weights** in one table;
# 4. **a data-flow diagram per configuration** (hydrology × mapping), drawn from the
#    structures' own tables.

# %% tags=["parameters"]
# The runner (`python -m hybridhydro run params/<case>.yaml`) replaces both: `params` by the
# case's validated parameters, every section whole; `output_dir` by the run directory.
params = "params/ci-referees.yaml"  # a parameter file (a relative path is looked for from the repository too)
output_dir = "runs/interactive"

# %%
# hybridhydro: study stage
from pathlib import Path

import numpy as np
import pandas as pd

import hybridhydro as hh
from hybridhydro import protocol, report, studies

cfg = hh.load_params(params)
referees, hybrid, calibration = cfg.referees, cfg.hybrid, cfg.calibration
output_dir = Path(output_dir)
models_dir = output_dir / "models"
save = report.figure_saver(output_dir, "08_referees", cfg.figures)
RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)

basin = hh.read_basin(output_dir / "basin.nc")  # stage 01
split = protocol.Split.load(output_dir / "split.json")  # stage 03
outlet = report.outlet(basin)
training = protocol.training_options(cfg)  # the stages' own settings: the models here are theirs
hybrid_options = training["hybrid"]
split.describe()

# %% [markdown]
# ## 1 · The solvers in training
#
# gr4_ude (`gr4_ude-<routing>`, mapping `referees.mapping`) is trained once per solver, each
# from the same start: the parent gr4_ode as stage 03 calibrated it (`gr4_ode-uniform`, the
# guide's parent) when the run has it, otherwise pre-calibrated here the guide's way (uniform,
# sbs), and one correction network drawn with the run's seed. The solvers:
#
# * `newton`: smash's semi-implicit Euler step (network at the start of the step), Newton with
#   clipping; gradients by the implicit function theorem at converged roots;
# * `conservative`: the same equations, always a root in the feasible set, overflow sent to
#   the discharge;
# * `implicit`: the fully implicit step (the network inside the residual);
# * `rk4 ×n`: explicit Runge–Kutta with n sub-steps per time step.
#
# Each training records its cost (1 − NSE over the calibration gauges and period) and the
# same cost over the validation period at every iteration. The table adds the final NSE (mean
# over the calibration gauges), the NSE of the same trained model solved accurately (RK4 with
# `referees.reference_substeps` sub-steps: a model that learnt its own solver's error scores
# lower there), the median seconds per iteration after the first (the first compiles), the
# Newton statistics of the trained model's run (mean and largest number of updates, the share
# of cell-steps unconverged after the limit or without a root), the share of explicit steps
# whose levels left [0, 1] (clipped), and the solver's unaccounted water `source_solver` over
# the whole run (mm over the domain and % of its rain).

# %%
ude_model = f"gr4_ude-{referees.mapping}"
parent = protocol.parent_model(ude_model)
start = hh.load_calibration(models_dir / parent) if (models_dir / parent / "calibration.json").exists() else None
print(f"start: {parent} from the run directory" if start is not None else
      f"start: {parent} not in {models_dir}; pre-calibrated here")
study = studies.solver_training_study(
    basin, split, structure=f"gr4_ude-{calibration.routing}", mapping=referees.mapping, solvers=referees.solvers,
    optimizer=referees.optimizer, maxiter=referees.maxiter, learning_rate=referees.learning_rate, start=start,
    cost=calibration.cost,
    reference=None if referees.reference_substeps is None else ("rk4", referees.reference_substeps),
    **hybrid_options,
)
solver_table, curves = study
print(study.start["origin"], "· fingerprint", study.start["fingerprint"])
solver_table.drop(columns=["start fingerprint"]).T

# %%
save(studies.plot_solver_study(curves, solver_table, title=f"{ude_model}: training with each ODE solver "
                               f"(same start, {referees.maxiter} iterations)"), "solver_training")
solver_table.to_csv(output_dir / "referees_solvers.csv")
curves.to_csv(output_dir / "referees_curves.csv", index=False)

# %% [markdown]
# ## 2 · Cumulative water budgets
#
# Each model of `referees.budget_models` (read from the run's `models/`, trained here with
# the run's settings when a stage did not), run over the whole basin period; its budget over
# the outlet's catchment accumulated from the start of the run, every term signed as it enters
# the budget (rain +, evaporation −, outflow −, storage change −, exchange and the network's
# correction ±, each named source ±), so that they add up to the residual, which stays at
# round-off at every step. gr4_ude's correction is the water its network adds by the rain
# correction $(1 + f_1)\,p_n$; the flux corrections of gr4_mlp move water between fluxes
# (their correction term is 0), and what they change shows in the other terms (the last panel
# and the table of differences).

# %%
budget_results = {}
for name in referees.budget_models:
    if (models_dir / name / "calibration.json").exists():
        budget_results[name] = hh.load_calibration(models_dir / name)
    else:
        pretrained = None
        parent_name = protocol.parent_model(name)
        if parent_name and (models_dir / parent_name / "calibration.json").exists():
            pretrained = hh.load_calibration(models_dir / parent_name)
        print(f"{name}: not in {models_dir}; trained here")
        budget_results[name] = protocol.train_model(basin, name, split, pretrained=pretrained, **training)
budget_runs = {name: r.simulate(basin, **RUN) for name, r in budget_results.items()}
budgets = {name: studies.cumulative_budget(run, basin, gauge=outlet, points=referees.budget_points)
           for name, run in budget_runs.items()}
save(studies.plot_cumulative_budgets(budgets, title=f"cumulative water budget over the catchment of {outlet} "
                                     "(mm over its area)"), "cumulative_budget")

# %%
columns = list(dict.fromkeys(c for b in budgets.values() for c in b.columns if c not in ("storage_change", "residual")))
final = pd.DataFrame({name: b.iloc[-1] for name, b in budgets.items()}).T.rename_axis("model")
final = final[columns + ["storage_change", "residual"]]
rain_share = (100 * final.div(final["rain"], axis=0)).add_suffix(" (% of rain)")
display(final.round(3))
differences = final.sub(final.iloc[0], axis=1).drop(index=final.index[0])
differences = differences.rename_axis(f"model − {final.index[0]} (mm)")
display(differences.round(3))
rain_share[["correction (% of rain)", "evaporation (% of rain)", "outflow (% of rain)"]].round(2)

# %%
pd.concat({name: b for name, b in budgets.items()}, names=["model", "time"]).to_csv(output_dir / "referees_budgets.csv")

# %% [markdown]
# ## 3 · Every network of the trained models
#
# One row per network of the models in the run directory (and those trained above): the
# flux-correction networks of the hybrids (inputs: the stores as fractions of their capacity,
# `pn` and `en` in mm per step; outputs: corrections in (−1, 1)) and the regionalisation
# networks (inputs: the descriptors, transformed with the training basin's statistics;
# outputs: the parameters, in their units, inside their bounds), with their layers and their
# number of trained weights.

# %%
saved = sorted(p.parent.name for p in models_dir.glob("*/calibration.json")) if models_dir.is_dir() else []
all_results = {**protocol.load_models(models_dir, saved), **budget_results}
networks = report.networks_table(all_results)
networks.to_csv(output_dir / "referees_networks.csv")
networks

# %% [markdown]
# ## 4 · The data flow of each configuration
#
# One panel per hydrology (rows, `referees.diagram_hydrologies`) and mapping (columns,
# `referees.diagram_mappings`): the forcing and the descriptors, the mapping of the
# parameters, the cell's stores (the structure's states, with their capacity), the correction
# network with its inputs and outputs (read from the structure's tables), the routing from
# cell to cell, the discharge, the cost and the way back to the controls (reverse-mode
# gradients, through Newton by the implicit function theorem for the ODEs; sbs, the uniform
# mapping's default, searches without gradient).

# %%
grid = studies.dataflow_grid(referees.diagram_hydrologies, referees.diagram_mappings, routing=calibration.routing,
                             hidden=hybrid.hidden)
save(grid, "dataflow_grid")
single = studies.dataflow_diagram("gr4_ude", referees.mapping, routing=calibration.routing, hidden=hybrid.hidden)
save(single.figure, f"dataflow_gr4_ude-{referees.mapping}")

# %% [markdown]
# ## The tables, for the report
#
# `referees.md` in the run directory holds the tables above as markdown (docs/referees.md
# quotes them).

# %%
shown = ["iterations", "initial cost", "final cost", "calibration NSE", "temporal NSE",
         "temporal NSE, reference solver", "s / iteration (median)", "mean Newton updates", "max Newton updates",
         "unconverged steps (%)", "steps without a root (%)", "unstable explicit steps (%)", "solver source (mm)",
         "solver source (% of rain)"]
text = ["# The referees' studies", "", f"Case {cfg.case}; start: {study.start['origin']}.", "",
        "## Solvers in training", "", studies.markdown_table(solver_table[shown]), "",
        f"## Cumulative budget at the end of the run, catchment of {outlet} (mm)", "",
        studies.markdown_table(final, 2), "", "## Networks", "", studies.markdown_table(networks, 2), ""]
(output_dir / "referees.md").write_text("\n".join(text))

# %% [markdown]
# ## What must hold
#
# * every solver started from the same start (one fingerprint) and its training lowered the
#   cost, every cost finite;
# * each cumulative budget closes at every step: the terms add up to the residual, which is
#   round-off against the water turned over; its last row is the budget of the whole run
#   (`hh.water_balance`) over the same catchment;
# * only gr4_ude's network creates water (a non-zero correction term); GR4's and GR4-MLP's is 0;
# * the networks table has one row per network: one per hybrid, one per regionalisation;
# * the grid has one panel per configuration, and each hybrid's panel names its network's inputs.

# %%
assert solver_table["start fingerprint"].nunique() == 1, solver_table["start fingerprint"]
for label, c in curves.groupby("solver", sort=False):
    assert np.isfinite(c["cost"]).all(), f"{label}: a non-finite training cost"
    assert c["cost"].iloc[-1] < c["cost"].iloc[0], f"{label}: the training did not lower the cost {c['cost'].tolist()}"
assert len(solver_table) == len(referees.solvers), solver_table.index
for name, b in budgets.items():
    terms = b.drop(columns="residual")
    assert np.allclose(terms.sum(axis=1), b["residual"], rtol=0, atol=1e-9), f"{name}: the terms do not add up"
    turnover = terms.abs().max(axis=1).max()
    assert b["residual"].abs().max() <= hybrid.balance_tolerance * turnover, f"{name}: {b['residual'].abs().max()} mm"
    whole = hh.water_balance(budget_runs[name], basin).sel(unit=outlet)
    for term, sign in (("rain", 1), ("outflow", -1), ("storage_change", -1), ("correction", 1)):
        assert np.isclose(b[term].iloc[-1], sign * float(whole[term]), rtol=1e-9, atol=1e-9), (name, term)
    creates = hh.parse_structure(budget_results[name].structure).hydrology == "gr4_ude"
    assert (np.abs(b["correction"]).max() > 0) == creates, f"{name}: correction {b['correction'].iloc[-1]} mm"
expected = sum(int(r.nn_parameters is not None) + int(r.network is not None) for r in all_results.values())
assert len(networks) == expected, (len(networks), expected)
assert len(grid.axes) == len(referees.diagram_hydrologies) * len(referees.diagram_mappings), len(grid.axes)
for ax in grid.axes:
    title, texts = ax.get_title(), " ".join(t.get_text() for t in ax.texts)
    hydrology = title.split("(")[-1].split("-")[0]
    inputs = hh.get_module(hydrology).nn_inputs
    assert all(n in texts for n in inputs), (title, inputs)
print(f"08_referees: {len(solver_table)} solvers trained from one start; {len(budgets)} budgets close at every step; "
      f"{len(networks)} networks; {len(grid.axes)} data-flow diagrams")
