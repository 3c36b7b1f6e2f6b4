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
# # 02 · The forward run
#
# The conceptual model, run forward with smash's default parameters on the basin of stage 01.
# Each active cell runs the hydrological structure (default **gr4**: interception store
# $h_i$, production store $h_p$, exchange $l_{exc}$, transfer store $h_t$), whose runoff
# $q_t$ the routing (default **lr**, a linear reservoir per cell) carries downstream to the
# gauges:
#
# $$Q(t) = \text{routing}\big(q_t(t)\big), \qquad
#   (h, q_t)(t) = \text{structure}\big(h(t - \Delta t), P(t), E_p(t); \theta\big).$$
#
# Every store is a bucket: over the period and over any catchment, the water that came in
# must have gone out or still be stored,
#
# $$P - (E_i + E_s) - Q + L_{exc} + \textstyle\sum_k S_k - \Delta S = r,$$
#
# where $L_{exc}$ is the exchange the structure creates or removes on purpose, $\Delta S$
# sums the change of every store, the routing reservoirs included, and each $S_k$ is a
# **named non-physical source or sink** (`hybridhydro.structures.SOURCES`): the rain an
# impervious fraction removes, what a transfer store's floor adds, the outflow a store releases
# where the rain is missing, the water an implicit ODE step loses when its equation has no
# root. The unexplained residual $r$ must be round-off: `hybridhydro.closes` accepts a run only
# when $|r|$ is within `forward_balance_tolerance` of the water turned over, whatever the named
# terms say.

# %% tags=["parameters"]
# Injected by `python -m hybridhydro run params/<case>.yaml`; these values serve interactive use.
case = "interactive"
output_dir = "runs/interactive"
forward_structure = "gr4-lr"  # smash's structure name: '<hydrology>-<routing>'
forward_ode_structure = "gr4_ode-lr"  # run beside it for the implicit solver's statistics; None skips
forward_balance_tolerance = 1e-6  # largest unexplained |residual| / rain accepted
forward_storm_factor = 10.0  # the storm scenario multiplies the rain by this factor
figures_dpi = 120
figures_format = "png"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import hybridhydro as hh
from hybridhydro import plotting
from hybridhydro.balance import water_balance
from hybridhydro.simulate import parse_structure, simulate
from hybridhydro.structures import NEWTON_MAX_ITERATIONS, SOURCES

output_dir = Path(output_dir)


def save(fig, name):
    """Save a figure of this stage into the run's figures/ folder."""
    return plotting.save_figure(fig, output_dir, f"02_forward_{name}", dpi=figures_dpi, format=figures_format)


basin = hh.read_basin(output_dir / "basin.nc")
s = parse_structure(forward_structure)
print(f"{s.name}: parameters {', '.join(s.parameters)}; states {', '.join(s.states)}")

# %% [markdown]
# ## The run
#
# Default parameters and initial states (smash's), the interception capacity fitted to the
# forcing at sub-daily steps. The states and fluxes of every step are kept for the maps and
# the balance.

# %%
result = simulate(basin, s.name, return_states=True, return_fluxes=True, return_discharge_field=True)
result

# %% [markdown]
# ## Hydrographs
#
# Simulated against observed discharge at each gauge (m³ s⁻¹); the default parameters are
# not calibrated, so only the shape of the response is expected to follow the observations.

# %%
gauges = [str(g) for g in basin["gauge"].values]
fig, axes = plt.subplots(len(gauges), 1, figsize=(10, 2.4 * len(gauges) + 0.6), sharex=True, squeeze=False,
                         layout="constrained")
for ax, gauge in zip(axes[:, 0], gauges):
    t = basin["time"].values
    ax.plot(t, basin["qobs"].sel(gauge=gauge).values, color="k", lw=1.0, label="observed")
    ax.plot(t, result["q"].sel(gauge=gauge).values, color="tab:blue", lw=1.0, label=f"simulated ({s.name})")
    ax.set_ylabel("discharge (m³ s⁻¹)")
    ax.set_title(gauge, loc="left", fontsize="medium")
axes[0, 0].legend(loc="upper right")
axes[-1, 0].set_xlabel("time (end of step)")
save(fig, "hydrographs")

# %% [markdown]
# ## States
#
# The stores of the structure at a few times, as fractions of their capacities (``he``,
# ``hs`` and the routing reservoir ``hlr`` in mm).

# %%
steps = np.linspace(0, basin.sizes["time"] - 1, 3).round().astype(int)
fig, axes = plt.subplots(len(s.states), len(steps), figsize=(3.2 * len(steps), 2.8 * len(s.states)),
                         squeeze=False, layout="constrained")
for row, name in enumerate(s.states):
    for col, k in enumerate(steps):
        field = result[name].isel(time=k)
        units = field.attrs.get("units", "1")
        plotting.map_field(field, axes[row, col], mask=basin["active_cell"],
                           label=f"{name} ({'mm' if units == 'mm' else 'fraction of capacity'})",
                           title=str(field["time"].values)[:16].replace("T", " "))
save(fig, "states")

# %% [markdown]
# ## Fluxes
#
# The internal fluxes of the structure (mm per step; ``qt`` in m³ s⁻¹ as smash reports it) at
# the step of heaviest basin rain, when every flux is at work, and their totals over the
# period (mm).

# %%
wettest = int(result["pn"].where(basin["active_cell"] == 1).mean(("y", "x")).argmax()) if "pn" in result else 0
flux_names = [n for n in s.fluxes if n in result and n not in ("qup", "qim1j")]
when = str(result["time"].values[wettest])[:16].replace("T", " ")
ncols = min(4, len(flux_names))
nrows = -(-len(flux_names) // ncols)
for which in ("step", "total"):
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.9 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(flux_names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, flux_names):
        field = result[name]
        in_m3s = field.attrs.get("units") == "m3 s-1"
        if which == "step":
            shown, label = field.isel(time=wettest), f"{name} ({'m³ s⁻¹' if in_m3s else 'mm per step'})"
        else:  # depths add up over the period; a discharge is averaged
            shown = (field.mean("time") if in_m3s else field.sum("time")).where(basin["active_cell"] == 1)
            label = f"{name} mean (m³ s⁻¹)" if in_m3s else f"{name} total (mm)"
        plotting.map_field(shown, ax, mask=basin["active_cell"], label=label,
                           title=when if which == "step" else "whole period")
    fig.suptitle(f"{forward_structure} fluxes: " + (f"step of heaviest rain ({when})" if which == "step" else "whole period"))
    save(fig, f"fluxes_{which}")

# %% [markdown]
# ## Water balance
#
# Per gauge catchment and for the whole domain, over the whole period, in mm over the unit's
# area. Every named source stands in its own column beside the unexplained residual.

# %%
BUDGET = ["rain", "evaporation", "outflow", "exchange", "correction", "storage_change"]


def budget_table(balance):
    """The budget's terms, each named source in its own column, and the unexplained residual (mm)."""
    named = [v for v in balance.data_vars if str(v).startswith("source_")]
    columns = [c for c in BUDGET if c in balance] + named + ["overflow", "residual", "relative_residual"]
    return balance[columns].to_dataframe()


balance = water_balance(result, basin)
closure = hh.balance_closure(balance, result)
table = budget_table(balance)
print({name: SOURCES[name] for name in table.columns if name in SOURCES})
table

# %% [markdown]
# ## The implicit solver: gr4_ode
#
# gr4_ode writes GR4 as a continuous state-space model and takes one implicit Euler step per
# time step, solved by Newton–Raphson exactly as smash solves it: analytic Jacobian, iterates
# clipped to (0, 1), at most 10 updates, tolerance 10⁻⁶ on the relative step. We run it with
# the same default parameters and show how hard the solver works: the updates per cell and
# step (the loop stops as soon as every cell has converged), the share of steps that end
# unconverged, and the residual of the implicit equation it leaves (dimensionless).
#
# **Is each step solvable?** The production equation always has exactly one root in
# $[0, 1]$. The transfer equation $G(y) = y + y^5/4 - (k_{exc}/c_t)\,y^{3.5} = c$ has a root
# only when $c = y_0 + 0.9\,p_n x^2 / c_t$ does not exceed the largest $G$ on $[0, 1]$ (with
# $k_{exc} = 0$: $c \le 1.25$), and a single one when $G$ increases there. Each step reports
# both (`ode_root_exists`, `ode_root_unique`); a step without a root loses water under smash's
# Newton, and the balance names that loss (`source_solver`).

# %%
ode = None
if forward_ode_structure:
    ode = simulate(basin, forward_ode_structure, return_states=True, return_fluxes=True, return_discharge_field=True)
    active = basin["active_cell"].values == 1
    iterations = ode["newton_iterations"].values[:, active]
    residual = ode["newton_residual"].values[:, active]
    given = iterations > 0  # 0 where the forcing was missing: no step was solved
    ode_closure = hh.balance_closure(water_balance(ode, basin), ode)
    newton_table = {
        "cell-steps solved": int(given.sum()),
        "mean updates": float(iterations[given].mean()),
        "max updates": int(iterations.max()),
        f"unconverged after {NEWTON_MAX_ITERATIONS} (%)": 100 * ode_closure["unconverged"],
        "steps without a root (%)": 100 * ode_closure["no_root"],
        "steps with possibly several roots (%)": 100 * ode_closure["several_roots"],
        "largest residual": float(residual[given].max()),
        "median residual": float(np.median(residual[given])),
    }
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6), layout="constrained")
    axes[0].hist(iterations[given], bins=np.arange(0.5, NEWTON_MAX_ITERATIONS + 1.5), color="tab:blue")
    axes[0].set_xlabel("Newton updates per cell and step")
    axes[0].set_ylabel("count (cell-steps)")
    axes[1].hist(np.log10(np.maximum(residual[given], 1e-12)), bins=40, color="tab:orange")
    axes[1].set_xlabel("log10 residual of the implicit step (dimensionless)")
    axes[1].set_ylabel("count (cell-steps)")
    plotting.map_field(ode["newton_iterations"].where(ode["newton_iterations"] > 0).mean("time"), axes[2],
                       mask=basin["active_cell"], label="mean Newton updates per step (count)",
                       title=forward_ode_structure)
    no_root = 100 * (1 - ode["ode_root_exists"].where(ode["newton_iterations"] > 0).mean("time"))
    plotting.map_field(no_root, axes[3], mask=basin["active_cell"], label="steps without a root (%)",
                       title="solvability of the implicit step")
    save(fig, "newton")
    print(newton_table)
else:
    print("forward_ode_structure is None: no implicit solver run")

# %% [markdown]
# The algebraic gr4 and its continuous form differ by construction (gr4_ode has no
# percolation, a different transfer-store outflow, no interception term in the ODE): the
# outlet hydrographs of both, with the same default parameters.

# %%
if ode is not None:
    outlet = gauges[0]
    fig, ax = plt.subplots(figsize=(10, 3.2), layout="constrained")
    ax.plot(basin["time"].values, basin["qobs"].sel(gauge=outlet).values, color="k", lw=1.0, label="observed")
    ax.plot(basin["time"].values, result["q"].sel(gauge=outlet).values, lw=1.0, label=s.name)
    ax.plot(basin["time"].values, ode["q"].sel(gauge=outlet).values, lw=1.0, ls="--", label=forward_ode_structure)
    ax.set_xlabel("time (end of step)")
    ax.set_ylabel("discharge (m³ s⁻¹)")
    ax.set_title(outlet, loc="left", fontsize="medium")
    ax.legend(loc="upper right")
    save(fig, "ode_hydrograph")
    ode_balance = water_balance(ode, basin)
    display(budget_table(ode_balance))

# %% [markdown]
# ## A storm: the accounting under heavy rain
#
# The same basin with its rain multiplied by `forward_storm_factor`. Under such rain the
# transfer stores fill, and a step whose rain would lift a store above its capacity has no
# root in $[0, 1]$: smash's Newton clips the level below 1 and the water above it disappears.
# hybridhydro names that loss (`source_solver`, negative), and offers a solver that keeps
# it: `ode_solver="conservative"` finds the root when there is one (bracketed Newton) and
# otherwise fills the store and sends the surplus to the discharge (`overflow`). The
# algebraic gr4 cannot overflow (its transfer store drains as a power law). Every run must
# close: the named terms explain the loss, never the residual.

# %%
storm = basin.copy()
storm["prcp"] = basin["prcp"] * forward_storm_factor
storm_runs = {f"{s.name} (algebraic)": simulate(storm, s.name, return_states=True, return_fluxes=True,
                                                return_discharge_field=True)}
if forward_ode_structure:
    for solver in ("newton", "conservative"):
        storm_runs[f"{forward_ode_structure} {solver}"] = simulate(
            storm, forward_ode_structure, ode_solver=solver, return_states=True, return_fluxes=True,
            return_discharge_field=True)
storm_rows, storm_closures = {}, {}
for name, run in storm_runs.items():
    b = water_balance(run, storm).sel(unit="domain")
    storm_closures[name] = hh.balance_closure(water_balance(run, storm), run)
    row = {"rain (mm)": float(b["rain"]), "outflow (mm)": float(b["outflow"]), "overflow (mm)": float(b["overflow"])}
    row.update({f"{v} (% of rain)": 100 * float(b[v] / b["rain"]) for v in b.data_vars if str(v).startswith("source_")})
    row["unexplained |residual| / water turned over"] = storm_closures[name]["worst"]
    row["steps without a root (%)"] = 100 * storm_closures[name]["no_root"]
    storm_rows[name] = row
storm_table = pd.DataFrame(storm_rows).T
storm_table

# %% [markdown]
# ## What must hold
#
# * the simulated discharge is finite and (to float32 round-off) non-negative;
# * the water balance closes over every catchment and the domain: the unexplained residual
#   within the tolerance, with every named source beside it;
# * gr4_ode: finite discharge, every converged Newton step solves its implicit equation, and
#   its water balance closes too, whatever its solver statistics;
# * the storm: every run closes; smash's Newton loses water there (named), the conservative
#   solver loses none (its `source_solver` is round-off) and spills the surplus instead.

# %%
q = result["q"].values
assert np.isfinite(q).all(), "simulated discharge holds non-finite values"
assert q.min() > -1e-4, f"negative simulated discharge: {q.min()} m3/s"
worst = closure["worst"]
assert hh.closes(closure, forward_balance_tolerance), f"water balance does not close: {closure}\n{table}"
if ode is not None:
    assert np.isfinite(ode["q"].values).all(), f"{forward_ode_structure}: non-finite discharge"
    # Every solved step either converged (residual at round-off) or used all its updates.
    converged = iterations[given] < NEWTON_MAX_ITERATIONS
    assert np.all(residual[given][converged] < 1e-4), "a converged Newton step leaves a large residual"
    assert hh.closes(ode_closure, forward_balance_tolerance), f"{forward_ode_structure}: {ode_closure}"
for name, c in storm_closures.items():
    assert hh.closes(c, forward_balance_tolerance), f"storm, {name}: unexplained residual {c}"
if forward_ode_structure:
    conservative = storm_table.loc[f"{forward_ode_structure} conservative"]
    assert abs(conservative["source_solver (% of rain)"]) < 1e-4, storm_table
    newton = storm_table.loc[f"{forward_ode_structure} newton"]
    if newton["steps without a root (%)"] > 0:  # the storm overflowed some store: Newton lost water there
        assert newton["source_solver (% of rain)"] < 0 and conservative["overflow (mm)"] > 0, storm_table
print(f"02_forward: {s.name}, {len(gauges)} gauges, balance closes to {worst:.1e} of the water turned over")
