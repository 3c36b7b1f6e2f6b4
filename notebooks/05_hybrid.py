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
# The runner (`python -m hybridhydro run params/<case>.yaml`) replaces both: `params` by the
# case's validated parameters, every section whole; `output_dir` by the run directory.
params = "params/ci.yaml"  # a parameter file (a relative path is looked for from the repository too)
output_dir = "runs/interactive"

# %%
from pathlib import Path

import numpy as np
import xarray as xr

import hybridhydro as hh
from hybridhydro import plotting, protocol, report

cfg = hh.load_params(params)
hybrid, calibration = cfg.hybrid, cfg.calibration
output_dir = Path(output_dir)
models_dir = output_dir / "models"
save = report.figure_saver(output_dir, "05_hybrid", cfg.figures)
RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)

basin = hh.read_basin(output_dir / "basin.nc")
outlet = report.outlet(basin)

# %% [markdown]
# ## The networks and the runs
#
# For each hybrid structure: its network (inputs, outputs, weights in smash's layout, so a
# network trained in smash loads as it is), a run of the parent structure and of the hybrid
# with the same default parameters, and a check that **zero weights give the parent exactly**.

# %%
networks = {
    name: hh.FluxCorrectionNet.for_structure(name, hidden=tuple(hybrid.hidden), initializer=hybrid.initializer,
                                             scale=hybrid.weight_scale, seed=cfg.hybrid_seed)
    for name in hybrid.structures
}
runs = {name: hh.simulate(basin, name, nn_parameters=net, **RUN) for name, net in networks.items()}
parents = {name: hh.simulate(basin, protocol.parent_structure(name), **RUN) for name in networks}
overview = report.network_table(basin, networks, parents)
overview

# %% [markdown]
# ## Corrections over time
#
# The domain mean of each correction $f_k$ (dimensionless, in (−1, 1)) at every step, under
# the basin-mean rain. A correction of 0 leaves the parent's flux unchanged.

# %%
save(plotting.plot_corrections(runs, basin), "corrections_time")

# %% [markdown]
# ## Corrections in space
#
# Each correction averaged over the period, per cell: the network is shared, so the pattern
# comes from the cells' states and forcing only.

# %%
for name, run in runs.items():
    save(plotting.plot_correction_maps(run, basin, title=name), f"corrections_map_{name}")

# %% [markdown]
# ## Hybrid against parent: flows, states and fluxes
#
# Outlet hydrographs of each hybrid and its parent (m³ s⁻¹), then the difference of the final
# states (hybrid minus parent, as fractions of capacity) and of the period totals of the
# fluxes they share (mm).

# %%
save(plotting.plot_hybrid_vs_parent(runs, parents, basin, outlet), "hydrographs")

# %%
for name, run in runs.items():
    save(plotting.plot_state_changes(run, parents[name], basin, title=name), f"states_{name}")
report.flux_changes(runs, parents, basin).round(3)

# %% [markdown]
# ## Water balance of the hybrid models
#
# The flux corrections of the `*_mlp` structures move water between fluxes: their balance
# closes like the parent's. gr4_ude's rain correction takes in $(1 + f_1)\,p_n$ instead of
# $p_n$: it **creates or removes water**, and the balance names that term `correction`
# (mm over the unit) instead of hiding it in the residual. Every other non-physical source
# (smash's impervious sink, store floor, steady outflow, an implicit step's unsolved
# equation: `source_*`) has its own column; a correction that pushes a store above its
# capacity shows in `above capacity`. The residual left is round-off.

# %%
balances, closures = report.water_balances(runs, basin)
display(report.closure_table(closures))
report.balance_table(balances, unit=None).round(4)

# %% [markdown]
# ## The neural ODE's solvers
#
# gr4_ude solved five ways (`hybrid.solvers`):
#
# * `newton`: smash's scheme. The network is evaluated once, at the start of the step, and
#   held fixed (with its state derivatives in the Newton matrix) while Newton solves the
#   implicit Euler step: the physics is implicit, the correction lagged (semi-implicit).
#   The loop stops once every cell has converged; gradients come from the implicit function
#   theorem at converged roots and, where Newton clipped or did not converge (its last iterate
#   is no solution there), through the safeguarded solve of the same equations.
# * `conservative`: the same semi-implicit step, solved so that it always returns a root in
#   the feasible set: the production level in closed form, the transfer level by Newton
#   safeguarded with bisection. A step that would overfill the transfer store fills it and
#   sends the surplus to the discharge (`overflow`): no water is lost, at any rain.
# * `implicit`: the fully implicit step. The network sits inside the residual, evaluated at
#   the new state; Newton uses the exact Jacobian; gradients come from the implicit function
#   theorem at the solution, not from the iterations.
# * `heun`, `rk4`: explicit Runge–Kutta schemes with `hybrid.substeps` sub-steps.
#
# Accuracy is measured against an RK4 run with `hybrid.reference_substeps` sub-steps (the
# ODE's solution to round-off); cost is the wall time of a forward run (after compilation).

# %%
ude = [name for name in hybrid.structures if hh.parse_structure(name).hydrology == "gr4_ude"]
solvers, solver_runs = None, {}
if ude:
    solvers, solver_runs, reference = report.solver_comparison(
        basin, ude[0], networks[ude[0]], hybrid.solvers, substeps=hybrid.substeps,
        reference_substeps=hybrid.reference_substeps, gauge=outlet)
    save(plotting.plot_solvers(solver_runs, reference, basin, outlet), "solvers")
    display(solvers)
else:
    print("no gr4_ude structure in hybrid.structures: no solver comparison")

# %% [markdown]
# ### A storm
#
# The same network and basin with the rain multiplied by `hybrid.storm_factor`. Steps whose
# rain would overfill a transfer store have no root: smash's Newton loses the water above
# the clip (`source_solver`, named), the conservative solver spills it (`overflow`). Each
# run's budget must close with the named terms shown beside it (every term as a share of
# the rain).

# %%
storm_closures = {}
if ude:
    storm = report.storm(basin, hybrid.storm_factor)
    storm_runs = {solver: hh.simulate(storm, ude[0], nn_parameters=networks[ude[0]], ode_solver=solver,
                                      ode_substeps=hybrid.substeps, **RUN) for solver in hybrid.solvers}
    storm_balances, storm_closures = report.water_balances(storm_runs, storm)
    storm_table = report.balance_table(storm_balances, storm_closures, relative=True)
    display(storm_table.T)

# %% [markdown]
# ## Training the hybrids
#
# smash's guide trains a hybrid in three steps (spec 10.5):
#
# 1. **pre-calibrate the parent** conceptual model: its network is zero, so it is the parent
#    GR. Here the parent calibrated in stage 03 (`gr4-uniform`) or the regionalisation of
#    stage 04 (`gr4-ann`, ...) is reused when the run has it; otherwise a short uniform SBS
#    (2 iterations, the guide's) or a regionalisation pre-training runs first;
# 2. start the correction network **small**: He-uniform times `hybrid.weight_scale`;
# 3. train the network **jointly** with the conceptual parameters (or with the
#    regionalisation network: two networks, one gradient), on the calibration gauges and period
#    of stage 03.

# %%
split = protocol.Split.load(output_dir / "split.json")  # written by stage 03
trained, train_seconds = protocol.train_models(
    basin, calibration.models, split, directory=models_dir, stage="05_hybrid",
    checkpoints=output_dir / "checkpoints", stale_checkpoints="restart", **protocol.training_options(cfg),
)
protocol.summary(trained, train_seconds)

# %%
if trained:
    save(plotting.plot_histories(trained, title="joint training of the hybrids (the parent's cost: first point)"),
         "training")

# %% [markdown]
# ### The trained networks at work
#
# The trained hybrids against their pre-calibrated parents at the calibration gauges, the
# mean size of each correction, and the balance, whose correction term (gr4_ude's rain
# correction) says how much water the network adds or removes.

# %%
trained_runs = {name: r.simulate(basin, **RUN) for name, r in trained.items()}
saved_parents = [p for p in dict.fromkeys(map(protocol.parent_model, trained))
                 if (models_dir / p / "calibration.json").exists()]
parent_runs = {f"{p} (parent)": r.simulate(basin, **RUN) for p, r in protocol.load_models(models_dir, saved_parents).items()}
if trained:
    save(plotting.plot_simulations({**parent_runs, **trained_runs}, basin, split.calibration_gauges, split=split),
         "trained_hydrographs")
    # over the calibration period: flow-duration curves of hybrids and parents, each hybrid against the observations
    calibration_view = dict(gauges=split.calibration_gauges, period=split.calibration_period)
    save(plotting.plot_flow_duration({**parent_runs, **trained_runs}, basin, **calibration_view), "trained_flow_duration")
    save(plotting.plot_scatter(trained_runs, basin, **calibration_view), "trained_scatter")
    display(report.correction_sizes(trained_runs).round(4))
trained_balances, trained_closures = report.water_balances(trained_runs, basin)
report.balance_table(trained_balances, trained_closures).round(4)

# %% [markdown]
# ## The runs and maps, written for other tools
#
# Every run this stage adds goes to `simulations/<name>.nc` in the run directory (CF-1.10 NetCDF):
# the untrained hybrids (`untrained-<structure>.nc`), their parents with default parameters
# (`forward-<structure>.nc`, unless stage 02 wrote them), the solver comparison
# (`solvers-<structure>-<solver>.nc`, the RK4 reference included), the storm
# (`storm-<structure>-<solver>.nc`) and the trained hybrids (`<model>.nc`; their parents' runs are
# stages 03 and 04's). The trained hybrids' parameter maps go to `models/<model>/parameters.tif`.

# %%
forward_structures = (cfg.forward.structure, cfg.forward.ode_structure)  # stage 02 wrote their default runs
written = {f"untrained-{name}": run for name, run in runs.items()}
written.update({f"forward-{protocol.parent_structure(name)}": run for name, run in parents.items()
                if protocol.parent_structure(name) not in forward_structures})
if ude:
    written.update({f"solvers-{ude[0]}-{solver}": run for solver, run in {**solver_runs, "reference": reference}.items()})
    written.update({f"storm-{ude[0]}-{solver}": run for solver, run in storm_runs.items()})
written.update(trained_runs)
sim_files = [hh.write_simulation(sim, basin, output_dir / "simulations" / f"{name}.nc", overwrite=True)
             for name, sim in written.items()]
map_files = [hh.write_parameter_maps(r.parameter_maps(), models_dir / name / "parameters.tif", crs=basin.rio.crs,
                                     dt=basin.attrs["dt"], overwrite=True) for name, r in trained.items()]
print("\n".join(str(f.relative_to(output_dir)) for f in sim_files + map_files))

# %% [markdown]
# ## What must hold
#
# * zero weights give each parent exactly (smash's default network);
# * every hybrid's discharge is finite;
# * the `*_mlp` balances close without a correction term; gr4_ude's closes once its rain
#   correction and its solver's named source are counted, under every solver, in the storm
#   too, where the conservative solver loses no water;
# * converged Newton steps solve their implicit equation; the explicit RK4 with its sub-steps
#   is at least as close to the reference as smash's Newton and its one implicit step;
# * every trained hybrid ended at a cost strictly below its first (the parent's; or its health
#   check reports that it ended above its start), its balance
#   closes, and the saved model reruns to the same discharge.
# * every written run reopens with plain xarray, and every trained hybrid has its parameter maps.

# %%
assert overview["zero weights = parent"].all(), overview
for name, run in runs.items():
    assert np.isfinite(run["q"].values).all(), f"{name}: non-finite discharge"
    assert hh.closes(closures[name], hybrid.balance_tolerance), f"{name}: {closures[name]}"
    if hh.parse_structure(name).hydrology != "gr4_ude":
        assert float(np.abs(balances[name]["correction"]).max()) == 0.0, f"{name}: a flux correction created water"
if solvers is not None:
    assert (solvers["unexplained / water turned over"] <= hybrid.balance_tolerance).all(), solvers
    implicit = solvers.index.intersection(["newton", "implicit"])
    assert (solvers.loc[implicit, "largest residual of a converged step"] < 1e-4).all(), solvers
    if {"rk4", "newton"} <= set(solvers.index):
        error = solvers["outlet error vs reference, max (m³/s)"]
        assert error["rk4"] <= error["newton"] + 1e-6, solvers
for solver, c in storm_closures.items():
    assert hh.closes(c, hybrid.balance_tolerance), f"storm, {solver}: {c}"
if "conservative" in storm_closures:
    assert abs(storm_table.loc["conservative", "source_solver (% of rain)"]) < 1e-4, storm_table
for name, r in trained.items():
    cost = r.history["cost"]
    assert np.isfinite(cost).all(), f"{name}: a non-finite training cost"
    # a training that ends above its start is a finding, not a crash: its health check reports it
    # (summary table, and the study's acceptance); anything else that does not go down is an error
    unhealthy = {h['check'] for h in (trained[name].options.get('health') or []) if not h['ok']}
    assert cost.iloc[-1] < cost.iloc[0] or 'ended above its start' in unhealthy, (
        f"{name}: joint training ended at {cost.iloc[-1]}, not below {cost.iloc[0]}, and no health check says so")
    # nothing excuses an unexplained residual: solver losses and store rules are named terms
    assert hh.closes(trained_closures[name], hybrid.balance_tolerance), f"{name}: {trained_closures[name]}"
    back = hh.load_calibration(models_dir / name).simulate(basin)["q"].values
    assert np.allclose(back, trained_runs[name]["q"].values, equal_nan=True), f"{name}: the saved model does not rerun"
assert all("q" in xr.load_dataset(f) for f in sim_files) and all(f.is_file() for f in map_files), sim_files + map_files
print(f"05_hybrid: {', '.join(hybrid.structures)} built; {len(trained)} hybrids trained; "
      f"balances close to {hybrid.balance_tolerance:g} of the water turned over")
