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
# $$P - (E_i + E_s) - Q + L_{exc} - \Delta S = 0,$$
#
# where $L_{exc}$ is the exchange the structure creates or removes on purpose, and $\Delta S$
# sums the change of every store, the routing reservoirs included (`hybridhydro.balance`).

# %% tags=["parameters"]
# Injected by `python -m hybridhydro run params/<case>.yaml`; these values serve interactive use.
case = "interactive"
output_dir = "runs/interactive"
forward_structure = "gr4-lr"  # smash's structure name: '<hydrology>-<routing>'
forward_balance_tolerance = 1e-4  # largest |residual| / rain accepted
figures_dpi = 120
figures_format = "png"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import hybridhydro as hh
from hybridhydro import plotting
from hybridhydro.balance import water_balance
from hybridhydro.simulate import parse_structure, simulate

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
# ## Water balance
#
# Per gauge catchment and for the whole domain, over the whole period, in mm over the unit's
# area.

# %%
balance = water_balance(result, basin)
table = balance[["rain", "evaporation", "outflow", "exchange", "storage_change", "residual",
                 "relative_residual"]].to_dataframe()
table

# %% [markdown]
# ## Newton iterations (gr4_ode only)
#
# gr4_ode solves one implicit Euler step per time step by Newton–Raphson (at most 10 updates,
# tolerance 1e-6 on the relative step); this is how many updates it took.

# %%
if "newton_iterations" in result:
    iterations = result["newton_iterations"].values
    iterations = iterations[np.isfinite(iterations)]
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    ax.hist(iterations, bins=np.arange(0.5, 11.5), color="tab:blue")
    ax.set_xlabel("Newton updates per cell and step")
    ax.set_ylabel("count (cell-steps)")
    save(fig, "newton_iterations")
    print(f"Newton updates: mean {iterations.mean():.2f}, max {iterations.max():.0f}")
else:
    print(f"{s.hydrology} is algebraic: no Newton iterations")

# %% [markdown]
# ## What must hold
#
# * the simulated discharge is finite and (to float32 round-off) non-negative;
# * the water balance closes over every catchment and the domain: $|\text{residual}| / P$
#   below the tolerance.

# %%
q = result["q"].values
assert np.isfinite(q).all(), "simulated discharge holds non-finite values"
assert q.min() > -1e-4, f"negative simulated discharge: {q.min()} m3/s"
worst = float(np.abs(balance["relative_residual"]).max())
assert worst < forward_balance_tolerance, f"water balance does not close: |residual| / rain = {worst:.2e}\n{table}"
print(f"02_forward: {s.name}, {len(gauges)} gauges, balance closes to {worst:.1e} of the rain")
