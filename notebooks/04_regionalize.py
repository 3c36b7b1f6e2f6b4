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
# # 04 · Regionalisation: parameter maps from physical descriptors
#
# A distributed calibration (stage 03) fits a value per cell where it sees observations, and
# says nothing trustworthy about a catchment it never saw. **Regionalisation** learns instead
# a function from the physical descriptors of each cell (slope, drainage density, soil, ...)
# to its parameters, $\theta(x) = \phi(D(x); w)$, trained through the hydrological model on
# the calibration gauges; the same function then gives parameters anywhere, in particular at
# the **pseudo-ungauged** gauges held out of calibration.
#
# * `ann` (**MLP regionalisation**): a dense network applied cell by cell to the descriptors;
# * `cnn` (**CNN regionalisation**): convolutions over the descriptor rasters, so that a cell's
#   parameters also depend on its neighbourhood.
#
# Both end in a scaled sigmoid that keeps every parameter inside its bounds; they are trained
# with Adam on the gradient of the cost, which flows back through routing, the hydrological
# model and the parameter maps into the network's weights.

# %% tags=["parameters"]
# Injected by `python -m hybridhydro run params/<case>.yaml`; these values serve interactive use.
case = "interactive"
output_dir = "runs/interactive"
calibration_models = ["gr4-ann", "gr4-cnn"]
calibration_routing = "lr"
calibration_cost = ["nse"]
calibration_metrics = ["nse", "kge"]
calibration_optimizers = {}  # {mapping: {optimizer, maxiter, learning_rate}}
forward_balance_tolerance = 1e-6
figures_dpi = 120
figures_format = "png"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import hybridhydro as hh
from hybridhydro import plotting, protocol
from hybridhydro.mapping import transform_descriptors
from hybridhydro.structures import PARAMETER_BOUNDS

output_dir = Path(output_dir)
models_dir = output_dir / "models"
RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)


def save(fig, name):
    """Save a figure of this stage into the run's figures/ folder."""
    return plotting.save_figure(fig, output_dir, f"04_regionalize_{name}", dpi=figures_dpi, format=figures_format)


basin = hh.read_basin(output_dir / "basin.nc")
active = basin["active_cell"].values.astype(bool)
split = protocol.Split.load(output_dir / "split.json")  # written by stage 03
display(split.describe())

# %% [markdown]
# ## The descriptors
#
# The network sees each descriptor rescaled to [0, 1] over the active cells (smash's
# `normalize`), so that no descriptor dominates by its unit.

# %%
names = [str(d) for d in basin["descriptor"].values]
fig = plotting.plot_descriptors(basin)
_ = save(fig, "descriptors")
raw = basin["descriptors"].values[:, active]
pd.DataFrame({"min": raw.min(axis=1), "mean": raw.mean(axis=1), "max": raw.max(axis=1)}, index=names).round(3)

# %% [markdown]
# ## Train the regionalisation networks

# %%
models = [m for m in calibration_models if protocol.stage_of(m) == "04_regionalize"]
results, seconds = protocol.train_models(basin, models, split, directory=models_dir, routing=calibration_routing,
                                         settings=calibration_optimizers, cost=calibration_cost)
protocol.summary(results, seconds)

# %%
if results:
    fig = plotting.plot_histories(results)
    fig.axes[0].set_title("training cost per iteration (Adam)")
    _ = save(fig, "histories")

# %% [markdown]
# ## Regionalised parameter maps
#
# Beside the distributed calibration of stage 03 (when it ran): the regionalised maps follow
# the descriptors, the distributed ones follow the gradient's reach.

# %%
maps = {name: r.parameter_maps() for name, r in results.items()}
earlier = [m for m in ("gr4-distributed",) if (models_dir / m / "calibration.json").exists()]
maps_shown = {**{m: hh.load_calibration(models_dir / m).parameter_maps() for m in earlier}, **maps}
calibrated = [n for n in ("cp", "ct", "kexc", "llr", "akw", "bkw") if any(n in m for m in maps.values())]
if maps_shown:
    fig = plotting.plot_parameter_maps(maps_shown, calibrated, basin)
    _ = save(fig, "parameter_maps")

# %% [markdown]
# ## What the network learned: parameters against descriptors
#
# Each point is a cell. A regionalisation is a function of the descriptors, so its parameters
# line up along them; how steeply tells which descriptor the network uses.

# %%
if results:
    first = next(iter(results))
    scaled = transform_descriptors(basin, "normalize")[active]  # (cell, descriptor)
    fig, axes = plt.subplots(len(calibrated), len(names), figsize=(2.8 * len(names), 2.3 * len(calibrated)),
                             layout="constrained", squeeze=False)
    for i, p in enumerate(calibrated):
        for j, d in enumerate(names):
            ax = axes[i, j]
            for name, m in maps.items():
                ax.scatter(scaled[:, j], m[p].values[active], s=4, alpha=0.5, label=name)
            ax.set_xlabel(f"{d} (normalised, dimensionless)")
            ax.set_ylabel(f"{p} ({maps[first][p].attrs.get('units', '')})")
    axes[0, 0].legend(fontsize="x-small", markerscale=3)
    _ = save(fig, "parameters_vs_descriptors")

# %% [markdown]
# ## At the pseudo-ungauged gauges
#
# The first look at spatial transfer (stage 06 scores every scenario): discharge over the
# calibration period at the gauges no model saw.

# %%
sims = {name: r.simulate(basin, **RUN) for name, r in results.items()}
sims_earlier = {m: hh.load_calibration(models_dir / m).simulate(basin) for m in earlier}
scores = protocol.score({**sims_earlier, **sims}, basin, split, calibration_metrics)
display(scores.set_index(["scenario", "model", "gauge"]).sort_index().round(3))
if split.validation_gauges:
    gauges = split.validation_gauges
    fig, axes = plt.subplots(len(gauges), 1, figsize=(10, 3.2 * len(gauges)), layout="constrained", squeeze=False)
    for ax, gauge in zip(axes[:, 0], gauges):
        plotting.plot_model_hydrographs({**sims_earlier, **sims}, basin, gauge, split=split, ax=ax)
        ax.set_title(f"{gauge} (pseudo-ungauged)", loc="left", fontsize="medium")
    _ = save(fig, "pseudo_ungauged")

# %% [markdown]
# ## What must hold

# %%
assert set(results) == set(models)
for name, r in results.items():
    h = r.history
    assert np.isfinite(h["cost"]).all(), f"{name}: a non-finite cost"
    assert h["cost"].min() < h["cost"].iloc[0], f"{name}: training never lowered the cost below its first value"
    for p in calibrated:
        lo, hi = PARAMETER_BOUNDS[p]
        v = maps[name][p].values[active]
        assert np.all(np.isfinite(v)) and np.all((v >= lo) & (v <= hi)), f"{name}: {p} outside its bounds"
    assert np.isfinite(sims[name]["q"].values).all(), f"{name}: non-finite discharge"
    closure = protocol.balance_closure(sims[name], basin)  # the unexplained residual, named sources apart
    assert protocol.closes(closure, forward_balance_tolerance), f"{name}: {closure}"
    back = hh.load_calibration(models_dir / name).simulate(basin)["q"].values
    assert np.allclose(back, sims[name]["q"].values, equal_nan=True), f"{name}: the saved model does not rerun"
print(f"{len(results)} regionalisations trained and saved to {models_dir}")
