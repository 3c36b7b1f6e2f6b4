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
# # 05 · Hybrid models: a neural network inside the conceptual model
#
# A hybrid structure keeps its parent's stores and equations and lets one small network,
# shared by every cell, correct the fluxes from the state of the cell (Huynh et al., GMD 2026):
#
# * **flux correction** (`gr4_mlp`, and `gr5_mlp` ... `loieau_mlp`): after interception, the
#   network maps $(h_p, h_t, p_n, e_n)$ to corrections $f \in (-1, 1)^4$ that scale
#   infiltration $(1 + f_1)\,p_s$ and evaporation $(1 + f_2)\,e_s$, move runoff between the
#   routed and direct branches ($f_3$) and scale the exchange $(1 + f_4)\,l$;
# * **neural ODE** (`gr4_ude`): the continuous GR4 of stage 02,
#   $\dot h = F(h;\,f(h, p_n, e_n))$, whose rain, evaporation, exchange and outflow terms the
#   network multiplies by $(1 + f_k)$; each time step is an implicit Euler step solved by
#   Newton.
#
# The first sections use **untrained** networks, with small random weights (He-uniform times
# `weight_scale`, the start of smash's training guide), so that each hybrid stays close to
# its parent. They show what a network does inside the model: its corrections over time and
# space, the change of states, fluxes and flows, the water balance with the terms the
# corrections add, and the solvers of the neural ODE. The last section **trains** the hybrids
# of the comparison (`calibration.models`) from the calibrations of stages 03 and 04; stage 06
# validates them.

# %% tags=["parameters"]
# Injected by `python -m hybridhydro run params/<case>.yaml`; these values serve interactive use.
case = "interactive"
output_dir = "runs/interactive"
hybrid_structures = ["gr4_mlp-lr", "gr4_ude-lr"]
hybrid_hidden = [16]  # hidden layer widths
hybrid_initializer = "he_uniform"
hybrid_weight_scale = 0.1
hybrid_seed = 0
hybrid_solvers = ["newton", "conservative", "implicit", "heun", "rk4"]
hybrid_substeps = 4  # explicit sub-steps per time step
hybrid_reference_substeps = 64  # RK4 sub-steps of the accurate reference
hybrid_balance_tolerance = 1e-6  # largest unexplained |residual| / water turned over
hybrid_storm_factor = 10.0  # the storm scenario multiplies the rain by this factor
calibration_models = ["gr4_mlp-distributed", "gr4_ude-distributed"]  # the hybrids are trained here
calibration_routing = "lr"
calibration_cost = ["nse"]
calibration_metrics = ["nse", "kge"]
calibration_optimizers = {}  # {mapping: {optimizer, maxiter, learning_rate}}
calibration_pre_maxiter = None
figures_dpi = 120
figures_format = "png"

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import hybridhydro as hh
from hybridhydro import plotting, protocol
from hybridhydro.simulate import parse_structure
from hybridhydro.structures import NEWTON_MAX_ITERATIONS, get_module

output_dir = Path(output_dir)
RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)


def save(fig, name):
    """Save a figure of this stage into the run's figures/ folder."""
    return plotting.save_figure(fig, output_dir, f"05_hybrid_{name}", dpi=figures_dpi, format=figures_format)


basin = hh.read_basin(output_dir / "basin.nc")
active = basin["active_cell"] == 1
gauges = [str(g) for g in basin["gauge"].values]
outlet = gauges[0]

# %% [markdown]
# ## The networks and the runs
#
# For each hybrid structure: its network (inputs, outputs, weights in smash's layout, so a
# network trained in smash loads as it is), a run of the parent structure and of the hybrid
# with the same default parameters, and a check that **zero weights give the parent exactly**.

# %%
runs, parents, networks = {}, {}, {}
rows = []
for name in hybrid_structures:
    s = parse_structure(name)
    module = get_module(s.hydrology)
    parent_name = f"{module.parent}-{s.routing}"
    net = hh.FluxCorrectionNet.for_structure(
        name, hidden=tuple(hybrid_hidden), initializer=hybrid_initializer, scale=hybrid_weight_scale, seed=hybrid_seed
    )
    networks[name] = net
    parents[name] = hh.simulate(basin, parent_name, **RUN)
    runs[name] = hh.simulate(basin, name, nn_parameters=net, **RUN)
    zero = hh.simulate(basin, name)  # smash's default: zero weights
    exact = bool(np.array_equal(zero["q"].values, parents[name]["q"].values))
    rows.append({
        "hybrid": name,
        "parent": parent_name,
        "network inputs": ", ".join(module.nn_inputs),
        "corrections": ", ".join(module.nn_outputs),
        "weights": sum(int(np.size(v)) for v in net.weights().values()),
        "zero weights = parent": exact,
    })
pd.DataFrame(rows).set_index("hybrid")

# %% [markdown]
# ## Corrections over time
#
# The domain mean of each correction $f_k$ (dimensionless, in (−1, 1)) at every step, under
# the basin-mean rain. A correction of 0 leaves the parent's flux unchanged.

# %%
rain = basin["prcp"].where(active).mean(("y", "x"))
fig, axes = plt.subplots(len(hybrid_structures), 1, figsize=(10, 2.8 * len(hybrid_structures)), squeeze=False,
                         sharex=True, layout="constrained")
for ax, name in zip(axes[:, 0], hybrid_structures):
    module = get_module(parse_structure(name).hydrology)
    for out in module.nn_outputs:
        ax.plot(basin["time"].values, runs[name][f"correction_{out}"].where(active).mean(("y", "x")).values,
                lw=1.0, label=f"f ({out})")
    ax.set_ylabel("correction (-)")
    ax.set_title(name, loc="left", fontsize="medium")
    ax.legend(loc="upper left", ncol=len(module.nn_outputs), fontsize="small")
    twin = ax.twinx()
    twin.bar(basin["time"].values, rain.values, width=float(basin.attrs["dt"]) / 86400, color="tab:gray", alpha=0.3)
    twin.set_ylabel("basin rain (mm per step)")
    twin.invert_yaxis()
axes[-1, 0].set_xlabel("time (end of step)")
save(fig, "corrections_time")

# %% [markdown]
# ## Corrections in space
#
# Each correction averaged over the period, per cell: the network is shared, so the pattern
# comes from the cells' states and forcing only.

# %%
for name in hybrid_structures:
    outs = get_module(parse_structure(name).hydrology).nn_outputs
    fig, axes = plt.subplots(1, len(outs), figsize=(3.4 * len(outs), 3.0), squeeze=False, layout="constrained")
    for ax, out in zip(axes[0], outs):
        plotting.map_field(runs[name][f"correction_{out}"].mean("time").where(active), ax, mask=basin["active_cell"],
                           label=f"mean f ({out}) (-)", title=name, cmap="RdBu_r")
    save(fig, f"corrections_map_{name}")

# %% [markdown]
# ## Hybrid against parent: flows, states and fluxes
#
# Outlet hydrographs of each hybrid and its parent (m³ s⁻¹), then the difference of the final
# states (hybrid minus parent, as fractions of capacity) and of the period totals of the
# fluxes they share (mm).

# %%
fig, axes = plt.subplots(len(hybrid_structures), 1, figsize=(10, 2.6 * len(hybrid_structures)), squeeze=False,
                         sharex=True, layout="constrained")
for ax, name in zip(axes[:, 0], hybrid_structures):
    t = basin["time"].values
    ax.plot(t, basin["qobs"].sel(gauge=outlet).values, color="k", lw=1.0, label="observed")
    ax.plot(t, parents[name]["q"].sel(gauge=outlet).values, lw=1.0, label=f"parent ({parents[name].attrs['structure']})")
    ax.plot(t, runs[name]["q"].sel(gauge=outlet).values, lw=1.0, ls="--", label=name)
    ax.set_ylabel("discharge (m³ s⁻¹)")
    ax.set_title(f"{outlet}: {name}", loc="left", fontsize="medium")
    ax.legend(loc="upper right", fontsize="small")
axes[-1, 0].set_xlabel("time (end of step)")
save(fig, "hydrographs")

# %%
comparison = []
for name in hybrid_structures:
    s = parse_structure(name)
    module = get_module(s.hydrology)
    states = [n for n in s.states if n not in ("hi",)]
    fig, axes = plt.subplots(1, len(states), figsize=(3.4 * len(states), 3.0), squeeze=False, layout="constrained")
    for ax, state in zip(axes[0], states):
        diff = runs[name][f"{state}_final"] - parents[name][f"{state}_final"]
        unit = runs[name][f"{state}_final"].attrs.get("units", "1")
        plotting.map_field(diff.where(active), ax, mask=basin["active_cell"], cmap="RdBu_r",
                           label=f"Δ final {state} ({'mm' if unit == 'mm' else 'fraction of capacity'})", title=name)
    save(fig, f"states_{name}")
    for flux in ("pn", "en", "es", "ps", "pr", "perc", "lexc", "qr", "qd"):
        if flux in runs[name] and flux in parents[name]:
            hybrid_total = float(runs[name][flux].where(active).sum("time").mean())
            parent_total = float(parents[name][flux].where(active).sum("time").mean())
            comparison.append({"hybrid": name, "flux": flux, "parent (mm)": parent_total, "hybrid (mm)": hybrid_total,
                               "change (mm)": hybrid_total - parent_total})
pd.DataFrame(comparison).set_index(["hybrid", "flux"]).round(3)

# %% [markdown]
# ## Water balance of the hybrid models
#
# The flux corrections of the `*_mlp` structures move water between fluxes: their balance
# closes like the parent's. gr4_ude's rain correction takes in $(1 + f_1)\,p_n$ instead of
# $p_n$: it **creates or removes water**, and the balance names that term `correction`
# (mm over the unit) instead of hiding it in the residual. Every other non-physical source
# (smash's impervious sink, store floor, steady outflow, an implicit step's unsolved
# equation: `source_*`) has its own column; a correction that pushes a store above its
# capacity shows in `above capacity (% of cell-steps)`. The residual left is round-off.

# %%
BUDGET = ["rain", "evaporation", "outflow", "exchange", "correction", "storage_change"]


def budget_table(balance):
    """The budget's terms, each named source in its own column, and the unexplained residual (mm)."""
    named = [v for v in balance.data_vars if str(v).startswith("source_")]
    return balance[BUDGET + named + ["overflow", "residual", "relative_residual"]].to_dataframe()


balances = {name: hh.water_balance(runs[name], basin) for name in hybrid_structures}
closures = {name: hh.balance_closure(balances[name], runs[name]) for name in hybrid_structures}
table = pd.concat({name: budget_table(b) for name, b in balances.items()}, names=["hybrid"])
table["correction / rain (%)"] = 100 * table["correction"] / table["rain"]
display(pd.DataFrame(closures).T.rename(columns={"worst": "unexplained / water turned over",
                                                 "above_capacity": "above capacity (% of cell-steps)"}))
table.round(4)

# %% [markdown]
# ## The neural ODE's solvers
#
# gr4_ude solved five ways (`hybrid_solvers`):
#
# * `newton`: smash's scheme. The network is evaluated once, at the start of the step, and
#   held fixed (with its state derivatives in the Newton matrix) while Newton solves the
#   implicit Euler step: the physics is implicit, the correction lagged (semi-implicit).
#   The loop stops once every cell has converged; gradients come from the implicit function
#   theorem at converged roots, and are zero where Newton clipped or did not converge.
# * `conservative`: the same semi-implicit step, solved so that it always returns a root in
#   the feasible set: the production level in closed form, the transfer level by Newton
#   safeguarded with bisection. A step that would overfill the transfer store fills it and
#   sends the surplus to the discharge (`overflow`): no water is lost, at any rain.
# * `implicit`: the fully implicit step. The network sits inside the residual, evaluated at
#   the new state; Newton uses the exact Jacobian; gradients come from the implicit function
#   theorem at the solution, not from the iterations.
# * `heun`, `rk4`: explicit Runge–Kutta schemes with `hybrid_substeps` sub-steps.
#
# Accuracy is measured against an RK4 run with `hybrid_reference_substeps` sub-steps (the
# ODE's solution to round-off); cost is the wall time of a forward run (after compilation).

# %%
ude = [n for n in hybrid_structures if parse_structure(n).hydrology == "gr4_ude"]
solver_rows, solver_runs = [], {}
if ude:
    name = ude[0]
    net = networks[name]
    reference = hh.simulate(basin, name, nn_parameters=net, ode_solver="rk4", ode_substeps=hybrid_reference_substeps)
    q_ref = reference["q"].sel(gauge=outlet).values
    for solver in hybrid_solvers:
        options = dict(nn_parameters=net, ode_solver=solver, ode_substeps=hybrid_substeps)
        hh.simulate(basin, name, **options, **RUN)  # compile (the timed run reuses it)
        t0 = time.perf_counter()
        result = hh.simulate(basin, name, **options, **RUN)
        seconds = time.perf_counter() - t0
        solver_runs[solver] = result
        q = result["q"].sel(gauge=outlet).values
        it = result["newton_iterations"].values[:, active.values]
        res = result["newton_residual"].values[:, active.values]
        solved = it > 0
        b = hh.water_balance(result, basin)
        c = hh.balance_closure(b, result)
        solver_rows.append({
            "solver": solver,
            "outlet error vs reference, max (m³/s)": float(np.abs(q - q_ref).max()),
            "relative to peak": float(np.abs(q - q_ref).max() / max(q_ref.max(), 1e-12)),
            "mean Newton updates": float(it[solved].mean()) if solved.any() else 0.0,
            "unconverged steps (%)": 100 * c["unconverged"],
            "steps without a root (%)": 100 * c["no_root"],
            "largest Newton residual": float(res[solved].max()) if solved.any() else np.nan,
            "solver source / rain": float(b["source_solver"].sel(unit="domain") / b["rain"].sel(unit="domain")),
            "run time (s)": seconds,
            "unexplained / water turned over": c["worst"],
        })
    solvers = pd.DataFrame(solver_rows).set_index("solver")
else:
    solvers = pd.DataFrame()
    print("no gr4_ude structure in hybrid_structures: no solver comparison")
solvers

# %%
if solver_runs:
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), layout="constrained")
    t = basin["time"].values
    axes[0].plot(t, q_ref, color="k", lw=1.5, label=f"rk4, {hybrid_reference_substeps} sub-steps (reference)")
    for solver, result in solver_runs.items():
        axes[0].plot(t, result["q"].sel(gauge=outlet).values, lw=1.0, ls="--", label=solver)
    axes[0].set_xlabel("time (end of step)")
    axes[0].set_ylabel("discharge (m³ s⁻¹)")
    axes[0].set_title(f"{outlet}: {ude[0]}", loc="left", fontsize="medium")
    axes[0].legend(fontsize="small")
    for solver in ("newton", "conservative", "implicit"):
        if solver in solver_runs:
            it = solver_runs[solver]["newton_iterations"].values[:, active.values]
            axes[1].hist(it[it > 0], bins=np.arange(0.5, it.max() + 1.5), alpha=0.6, label=solver)
    axes[1].set_xlabel("Newton updates per cell and step")
    axes[1].set_ylabel("count (cell-steps)")
    axes[1].legend()
    save(fig, "solvers")

# %% [markdown]
# ### A storm
#
# The same network and basin with the rain multiplied by `hybrid_storm_factor`. Steps whose
# rain would overfill a transfer store have no root: smash's Newton loses the water above
# the clip (`source_solver`, named), the conservative solver spills it (`overflow`). Each
# run's budget must close with the named terms shown beside it.

# %%
storm_rows, storm_closures = {}, {}
if ude:
    storm = basin.copy()
    storm["prcp"] = basin["prcp"] * hybrid_storm_factor
    for solver in hybrid_solvers:
        run = hh.simulate(storm, ude[0], nn_parameters=networks[ude[0]], ode_solver=solver,
                          ode_substeps=hybrid_substeps, **RUN)
        b = hh.water_balance(run, storm)
        storm_closures[solver] = hh.balance_closure(b, run)
        d = b.sel(unit="domain")
        storm_rows[solver] = {
            "rain (mm)": float(d["rain"]), "correction (% of rain)": 100 * float(d["correction"] / d["rain"]),
            "solver source (% of rain)": 100 * float(d["source_solver"] / d["rain"]),
            "overflow (% of rain)": 100 * float(d["overflow"] / d["rain"]),
            "steps without a root (%)": 100 * storm_closures[solver]["no_root"],
            "unexplained / water turned over": storm_closures[solver]["worst"],
        }
storm_table = pd.DataFrame(storm_rows).T
storm_table

# %% [markdown]
# ## Training the hybrids
#
# smash's guide trains a hybrid in three steps (spec 10.5):
#
# 1. **pre-calibrate the parent** conceptual model: its network is zero, so it is the parent
#    GR. Here the parent calibrated in stage 03 (`gr4-uniform`) or the regionalisation of
#    stage 04 (`gr4-ann`, ...) is reused when the run has it; otherwise a short uniform SBS
#    (2 iterations, the guide's) or a regionalisation pre-training runs first;
# 2. start the correction network **small**: He-uniform times `weight_scale`;
# 3. train the network **jointly** with the conceptual parameters (or with the
#    regionalisation network: two networks, one gradient), on the calibration gauges and period
#    of stage 03.

# %%


split = protocol.Split.load(output_dir / "split.json")  # written by stage 03
models_dir = output_dir / "models"
trained, train_seconds = protocol.train_models(
    basin, calibration_models, split, directory=models_dir, stage="05_hybrid", routing=calibration_routing,
    settings=calibration_optimizers, cost=calibration_cost,
    hybrid=dict(hidden=hybrid_hidden, initializer=hybrid_initializer, weight_scale=hybrid_weight_scale,
                seed=hybrid_seed, pre_maxiter=calibration_pre_maxiter),
)
protocol.summary(trained, train_seconds)

# %%
if trained:
    fig = plotting.plot_histories(trained)
    fig.axes[0].set_title("joint training of the hybrids (the parent's cost: first point)")
    save(fig, "training")

# %% [markdown]
# ### The trained networks at work
#
# The trained hybrids against their pre-calibrated parents at the calibration gauges, the
# mean size of each correction, and the balance, whose correction term (gr4_ude's rain
# correction) says how much water the network adds or removes.

# %%
trained_runs = {name: r.simulate(basin, **RUN) for name, r in trained.items()}
parents = {}
for name, r in trained.items():
    parent = protocol.parent_model(name)
    if (models_dir / parent / "calibration.json").exists():
        parents[f"{parent} (parent)"] = hh.load_calibration(models_dir / parent).simulate(basin, **RUN)
if trained:
    gauges = split.calibration_gauges
    fig, axes = plt.subplots(len(gauges), 1, figsize=(10, 3.2 * len(gauges)), layout="constrained", squeeze=False)
    for ax, gauge in zip(axes[:, 0], gauges):
        plotting.plot_model_hydrographs({**parents, **trained_runs}, basin, gauge, split=split, ax=ax)
    save(fig, "trained_hydrographs")
correction_rows = {}
for name, res in trained_runs.items():
    corr = [v for v in res.data_vars if str(v).startswith("correction_")]
    correction_rows[name] = {str(v): float(np.nanmean(np.abs(res[v].values))) for v in corr}
display(pd.DataFrame(correction_rows).T.round(4).rename_axis("mean |correction| (dimensionless)", axis=1))
trained_balances = {name: hh.water_balance(res, basin) for name, res in trained_runs.items()}
display(pd.DataFrame({name: budget_table(b).loc["domain"] for name, b in trained_balances.items()}).T.round(4)
        .rename_axis("domain balance (mm over the run)", axis=1))
trained_closures = {name: protocol.balance_closure(res, basin, trained_balances[name])
                    for name, res in trained_runs.items()}
display(pd.DataFrame(trained_closures).T.rename(columns={"worst": "unexplained / water turned over"}))

# %% [markdown]
# ## What must hold
#
# * zero weights give each parent exactly (smash's default network);
# * every hybrid's discharge is finite;
# * the `*_mlp` balances close without a correction term; gr4_ude's closes once its rain
#   correction and its solver's named source are counted, under every solver, in the storm
#   too, where the conservative solver loses no water;
# * converged Newton steps solve their implicit equation; the explicit schemes with more
#   sub-steps are at least as close to the reference as implicit Euler's one step.

# %%
assert all(r["zero weights = parent"] for r in rows), pd.DataFrame(rows)
for name, result in runs.items():
    assert np.isfinite(result["q"].values).all(), f"{name}: non-finite discharge"
    assert hh.closes(closures[name], hybrid_balance_tolerance), f"{name}: {closures[name]}\n{table}"
    if parse_structure(name).hydrology != "gr4_ude":
        assert float(np.abs(balances[name]["correction"]).max()) == 0.0, f"{name}: a flux correction created water"
if solver_rows:
    assert (solvers["unexplained / water turned over"] <= hybrid_balance_tolerance).all(), solvers
    for solver in ("newton", "implicit"):
        if solver in solver_runs:
            it = solver_runs[solver]["newton_iterations"].values
            res = solver_runs[solver]["newton_residual"].values
            converged = (it > 0) & (it < NEWTON_MAX_ITERATIONS)
            assert np.all(res[converged] < 1e-4), f"{solver}: a converged step leaves a large residual"
for solver, c in storm_closures.items():
    assert hh.closes(c, hybrid_balance_tolerance), f"storm, {solver}: {c}"
if "conservative" in storm_rows:
    assert abs(storm_rows["conservative"]["solver source (% of rain)"]) < 1e-4, storm_table
    if "rk4" in solvers.index and "newton" in solvers.index:
        assert solvers.loc["rk4", "outlet error vs reference, max (m³/s)"] <= \
            solvers.loc["newton", "outlet error vs reference, max (m³/s)"] + 1e-6, solvers
for name, r in trained.items():
    h = r.history
    assert np.isfinite(h["cost"]).all(), f"{name}: a non-finite training cost"
    assert h["cost"].min() < h["cost"].iloc[0], f"{name}: joint training never lowered the cost below its first value"
    closure = trained_closures[name]
    # nothing excuses an unexplained residual: solver losses and store rules are named terms
    assert protocol.closes(closure, hybrid_balance_tolerance), f"{name}: {closure}"
    back = hh.load_calibration(models_dir / name).simulate(basin)["q"].values
    assert np.allclose(back, trained_runs[name]["q"].values, equal_nan=True), f"{name}: the saved model does not rerun"
print(f"05_hybrid: {', '.join(hybrid_structures)} built; {len(trained)} hybrids trained; "
      f"balances close to {hybrid_balance_tolerance:g} of the rain")
