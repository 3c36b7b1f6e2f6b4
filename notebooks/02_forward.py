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
# when $|r|$ is within `forward.balance_tolerance` of the water turned over, whatever the named
# terms say.

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
from hybridhydro import plotting, report

cfg = hh.load_params(params)
forward = cfg.forward
output_dir = Path(output_dir)
save = report.figure_saver(output_dir, "02_forward", cfg.figures)
RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)

basin = hh.read_basin(output_dir / "basin.nc")
outlet = report.outlet(basin)
s = hh.parse_structure(forward.structure)
# the runs carry smash's full name, snow module first: "zero-gr4-lr" is gr4-lr without snow
print(f"{forward.structure} (smash's full name {s.name}): parameters {', '.join(s.parameters)}; "
      f"states {', '.join(s.states)}")

# %% [markdown]
# ## The run
#
# Default parameters and initial states (smash's), the interception capacity fitted to the
# forcing at sub-daily steps. The states and fluxes of every step are kept for the maps and
# the balance. The run's `structure` attribute is smash's full name, snow module first
# (`zero-gr4-lr`: the `zero` snow module, i.e. no snow, then gr4 and lr); the tables and
# figures write the name of the parameters (`gr4-lr`).

# %%
result = hh.simulate(basin, s.name, **RUN)
result

# %% [markdown]
# ## Hydrographs
#
# Simulated against observed discharge at each gauge (m³ s⁻¹); the default parameters are
# not calibrated, so only the shape of the response is expected to follow the observations.

# %%
save(plotting.plot_simulations({f"simulated ({forward.structure})": result}, basin), "hydrographs")

# %% [markdown]
# ## States
#
# The stores of the structure at a few times, as fractions of their capacities (``he``,
# ``hs`` and the routing reservoir ``hlr`` in mm).

# %%
save(plotting.plot_state_maps(result, basin, steps=3), "states")

# %% [markdown]
# ## Fluxes
#
# The internal fluxes of the structure (mm per step; ``qt`` in m³ s⁻¹ as smash reports it) at
# the step of heaviest basin rain, when every flux is at work, and their totals over the
# period (mm).

# %%
for which in ("step", "total"):
    save(plotting.plot_flux_maps(result, basin, which), f"fluxes_{which}")

# %% [markdown]
# ## Water balance
#
# Per gauge catchment and for the whole domain, over the whole period, in mm over the unit's
# area. Every named source stands in its own column beside the unexplained residual; what
# each one is:

# %%
balances, closures = report.water_balances({forward.structure: result}, basin)
table = report.balance_table(balances[forward.structure])
print({name: hh.SOURCES[name] for name in table.columns if name in hh.SOURCES})
table

# %% [markdown]
# ## The implicit solver: gr4_ode
#
# gr4_ode writes GR4 as a continuous state-space model and takes one implicit Euler step per
# time step, solved by Newton–Raphson exactly as smash solves it: analytic Jacobian, iterates
# clipped to (0, 1), at most `NEWTON_MAX_ITERATIONS` updates (the table names the number),
# tolerance 10⁻⁶ on the relative step. We run it with the same default parameters and show
# how hard the solver works: the updates per cell and step (the loop stops as soon as every
# cell has converged), the share of steps that end unconverged, and the residual of the
# implicit equation it leaves (dimensionless).
#
# **Is each step solvable?** The production equation always has exactly one root in
# $[0, 1]$. The transfer equation $G(y) = y + y^5/4 - (k_{exc}/c_t)\,y^{3.5} = c$ has a root
# only when $c = y_0 + 0.9\,p_n x^2 / c_t$ does not exceed the largest $G$ on $[0, 1]$ (with
# $k_{exc} = 0$: $c \le 1.25$), and a single one when $G$ increases there. Each step reports
# both (`ode_root_exists`, `ode_root_unique`); a step without a root loses water under smash's
# Newton, and the balance names that loss (`source_solver`).

# %%
ode = None
if forward.ode_structure:
    ode = hh.simulate(basin, forward.ode_structure, **RUN)
    ode_balances, ode_closures = report.water_balances({forward.ode_structure: ode}, basin)
    newton = report.newton_statistics(ode, ode_closures[forward.ode_structure])
    save(plotting.plot_newton(ode, basin), "newton")
    display(newton.to_frame())
else:
    print("forward.ode_structure is null: no implicit solver run")

# %% [markdown]
# The algebraic gr4 and its continuous form differ by construction (gr4_ode has no
# percolation, a different transfer-store outflow, no interception term in the ODE): the
# outlet hydrographs of both, with the same default parameters, and the budget of gr4_ode.

# %%
if ode is not None:
    save(plotting.plot_simulations({forward.structure: result, forward.ode_structure: ode}, basin, [outlet]), "ode_hydrograph")
    display(report.balance_table(ode_balances[forward.ode_structure]))

# %% [markdown]
# ## A storm: the accounting under heavy rain
#
# The same basin with its rain multiplied by `forward.storm_factor`. Under such rain the
# transfer stores fill, and a step whose rain would lift a store above its capacity has no
# root in $[0, 1]$: smash's Newton clips the level below 1 and the water above it disappears.
# hybridhydro names that loss (`source_solver`, negative), and offers a solver that keeps
# it: `ode_solver="conservative"` finds the root when there is one (bracketed Newton) and
# otherwise fills the store and sends the surplus to the discharge (`overflow`). The
# algebraic gr4 cannot overflow (its transfer store drains as a power law). Every run must
# close: the named terms explain the loss, never the residual. Every term is shown as a
# share of the rain.

# %%
storm = report.storm(basin, forward.storm_factor)
storm_runs = {f"{forward.structure} (algebraic)": hh.simulate(storm, s.name, **RUN)}
if forward.ode_structure:
    for solver in ("newton", "conservative"):
        storm_runs[f"{forward.ode_structure} {solver}"] = hh.simulate(storm, forward.ode_structure, ode_solver=solver, **RUN)
storm_balances, storm_closures = report.water_balances(storm_runs, storm)
storm_table = report.balance_table(storm_balances, storm_closures, relative=True)
storm_table.T

# %% [markdown]
# ## The runs, written for other tools
#
# Every run of this stage goes to `simulations/<name>.nc` in the run directory: the forward runs
# as `forward-<structure>.nc`, the storm as `storm-<structure>[-<solver>].nc`. Each is a CF-1.10
# NetCDF file any CF tool reads (xarray, CDO, QGIS, Panoply): the discharge at the gauges with
# their coordinates and areas, the parameters, the states, the routed discharge of every cell,
# the bounds $(t - \Delta t, t]$ of each step and the CRS (the internal fluxes are left out).

# %%
written = {f"forward-{forward.structure}": result,
           f"storm-{forward.structure}": storm_runs[f"{forward.structure} (algebraic)"]}
if ode is not None:
    written[f"forward-{forward.ode_structure}"] = ode
    written.update({f"storm-{forward.ode_structure}-{solver}": storm_runs[f"{forward.ode_structure} {solver}"]
                    for solver in ("newton", "conservative")})
sim_files = [hh.write_simulation(sim, basin, output_dir / "simulations" / f"{name}.nc", overwrite=True)
             for name, sim in written.items()]
print("\n".join(str(f.relative_to(output_dir)) for f in sim_files))

# %% [markdown]
# ## What must hold
#
# * the simulated discharge is finite and (to float32 round-off) non-negative;
# * the water balance closes over every catchment and the domain: the unexplained residual
#   within the tolerance, with every named source beside it;
# * gr4_ode: finite discharge, every converged Newton step solves its implicit equation, and
#   its water balance closes too, whatever its solver statistics;
# * the storm: every run closes; the conservative solver loses no water (its `source_solver`
#   is round-off); where the storm overfills a transfer store (steps without a root), smash's
#   Newton loses water there (named) and the conservative solver spills it instead.
# * every run's file reopens with plain xarray.

# %%
q = result["q"].values
assert np.isfinite(q).all(), "simulated discharge holds non-finite values"
assert q.min() > -1e-4, f"negative simulated discharge: {q.min()} m3/s"
closure = closures[forward.structure]
assert hh.closes(closure, forward.balance_tolerance), f"water balance does not close: {closure}\n{table}"
if ode is not None:
    assert np.isfinite(ode["q"].values).all(), f"{forward.ode_structure}: non-finite discharge"
    assert newton["largest residual of a converged step"] < 1e-4, f"a converged Newton step leaves a large residual\n{newton}"
    assert hh.closes(ode_closures[forward.ode_structure], forward.balance_tolerance), ode_closures
for name, c in storm_closures.items():
    assert hh.closes(c, forward.balance_tolerance), f"storm, {name}: unexplained residual {c}"
if forward.ode_structure:
    newton_storm = storm_table.loc[f"{forward.ode_structure} newton"]
    conservative = storm_table.loc[f"{forward.ode_structure} conservative"]
    assert abs(conservative["source_solver (% of rain)"]) < 1e-4, f"the conservative solver lost water\n{storm_table}"
    if newton_storm["without a root (share of cell-steps)"] > 0:  # a store overfilled: Newton lost water there
        assert newton_storm["source_solver (% of rain)"] < 0 < conservative["overflow (% of rain)"], storm_table
assert all("q" in xr.load_dataset(f) for f in sim_files), f"a simulation file does not reopen: {sim_files}"
print(f"02_forward: {forward.structure}, {basin.sizes['gauge']} gauges, balance closes to {closure['worst']:.1e} of the water turned over")
