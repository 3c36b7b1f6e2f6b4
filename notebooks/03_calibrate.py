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
# # 03 · Calibration of the conceptual models
#
# The models of stage 02 ran with smash's default parameters. Here they are **calibrated** on
# observed discharge: the calibration searches the controls (here the parameter values) that
# minimise a cost, $1 - \mathrm{NSE}$ summed over the calibration gauges, by gradients through
# the whole chain (JAX) or by smash's step-by-step global search:
#
# * `uniform`: one value per parameter for the whole basin, found by **SBS** (smash's
#   step-by-step search, gradient-free);
# * `distributed`: one value per parameter *and per cell*, found by **L-BFGS-B** with the
#   gradient of the cost with respect to every cell's parameters.
#
# The data are split once for every model of the comparison (stages 03–06): the
# **calibration period** and **calibration gauges** are the only observations a model sees;
# the **validation period** and the **pseudo-ungauged gauges** are kept for stage 06. Each
# calibrated model is saved to `models/<name>/` of the run for the next stages.

# %% tags=["parameters"]
# Injected by `python -m hybridhydro run params/<case>.yaml`; these values serve interactive use.
case = "interactive"
output_dir = "runs/interactive"
calibration_models = ["gr4-uniform", "gr4-distributed", "gr4_ode-distributed"]
calibration_routing = "lr"
calibration_cost = ["nse"]
calibration_metrics = ["nse", "kge"]
calibration_calibration_period = None  # [start, end]; None: first half after the warm-up
calibration_validation_period = None
calibration_warmup_fraction = 0.1
calibration_validation_gauges = "smallest"
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
from hybridhydro.structures import PARAMETER_BOUNDS

output_dir = Path(output_dir)
models_dir = output_dir / "models"
RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)


def save(fig, name):
    """Save a figure of this stage into the run's figures/ folder."""
    return plotting.save_figure(fig, output_dir, f"03_calibrate_{name}", dpi=figures_dpi, format=figures_format)


basin = hh.read_basin(output_dir / "basin.nc")
active = basin["active_cell"].values.astype(bool)

# %% [markdown]
# ## The split: where models learn, where they are judged
#
# A warm-up opens the run (the stores forget their initial levels); the rest is cut into a
# calibration and a validation period. The gauge with the smallest drained area is held out
# as **pseudo-ungauged** (unless the parameters name others): no model sees its observations.

# %%
split = protocol.make_split(
    basin,
    calibration_period=calibration_calibration_period,
    validation_period=calibration_validation_period,
    warmup_fraction=calibration_warmup_fraction,
    validation_gauges=calibration_validation_gauges,
)
split.save(output_dir / "split.json")
display(split.describe())
fig = plotting.plot_split(basin, split)
fig.axes[0].set_title("observed discharge, calibration and validation periods")
_ = save(fig, "split")

# %% [markdown]
# ## Calibrate
#
# Each model of this stage (the conceptual ones with a `uniform` or `distributed` mapping) is
# calibrated with its optimiser's settings from the parameters; the bar shows the cost.

# %%
models = [m for m in calibration_models if protocol.stage_of(m) == "03_calibrate"]
results, seconds = protocol.train_models(basin, models, split, directory=models_dir, routing=calibration_routing,
                                         settings=calibration_optimizers, cost=calibration_cost)
protocol.summary(results, seconds)

# %%
if results:
    fig = plotting.plot_histories(results)
    fig.axes[0].set_title("calibration cost per iteration")
    save(fig, "histories")

# %% [markdown]
# ## Calibrated parameters
#
# The uniform model has one value per parameter; the distributed ones a map. Every map is
# drawn with the same colour scale per parameter, so differences between models read directly.

# %%
maps = {name: r.parameter_maps() for name, r in results.items()}
params_table = pd.DataFrame({
    name: {f"{n} ({m[n].attrs.get('units', '')})": float(np.nanmean(m[n].values[active])) for n in m.data_vars}
    for name, m in maps.items()
}).T
print("basin means of the calibrated parameters")
display(params_table.round(3))
calibrated = [n for n in ("cp", "ct", "kexc", "llr", "akw", "bkw") if any(n in m for m in maps.values())]
if maps:
    fig = plotting.plot_parameter_maps(maps, calibrated, basin)
    save(fig, "parameter_maps")

# %% [markdown]
# ## Discharge before and after calibration
#
# The whole run, with smash's default parameters and with each calibrated model, at every
# gauge; the scores are over the calibration period at the calibration gauges (stage 06
# scores the validation scenarios).

# %%
structure = f"gr4-{calibration_routing}"
sims = {"default parameters": hh.simulate(basin, structure, **RUN)}
sims.update({name: r.simulate(basin, **RUN) for name, r in results.items()})
scores = protocol.score(sims, basin, split, calibration_metrics)
calib_scores = scores[scores["scenario"] == "calibration"].set_index(["model", "gauge"])[calibration_metrics]
display(calib_scores.round(3))

fig, axes = plt.subplots(len(split.calibration_gauges), 1, figsize=(10, 3.2 * len(split.calibration_gauges)),
                         layout="constrained", squeeze=False)
for ax, gauge in zip(axes[:, 0], split.calibration_gauges):
    plotting.plot_model_hydrographs(sims, basin, gauge, split=split, ax=ax)
_ = save(fig, "hydrographs")

# %% [markdown]
# ## Water balance of each calibrated model
#
# Rain in, evaporation, outflow and exchange out, and the change of storage, over the whole
# run and each gauge's catchment (mm): calibration moves the terms, not the closure.

# %%
balances = {name: hh.water_balance(sims[name], basin) for name in results}
balance_table = pd.DataFrame({
    name: b.sel(unit="domain")[["rain", "evaporation", "outflow", "exchange", "storage_change"]
                               + [v for v in b.data_vars if str(v).startswith("source_")] + ["residual"]]
    .to_pandas() for name, b in balances.items()
}).T
print("domain water balance (mm over the run)")
display(balance_table.round(2))
closures = {name: protocol.balance_closure(sims[name], basin, balances[name]) for name in results}
closure_table = pd.DataFrame(closures).T.rename(columns={"worst": "unexplained / water turned over"})
closure_table

# %% [markdown]
# ## What must hold

# %%
assert set(results) == set(models)
for name, r in results.items():
    h = r.history
    assert np.isfinite(h["cost"]).all(), f"{name}: a non-finite cost"
    assert h["cost"].min() < h["cost"].iloc[0], f"{name}: calibration never lowered the cost below its first value"
    reloaded = hh.load_calibration(models_dir / name)
    q_back = reloaded.simulate(basin)["q"].values
    assert np.allclose(q_back, sims[name]["q"].values, equal_nan=True), f"{name}: the saved model does not rerun"
    # the named sources stand beside the residual; none of them excuses it
    assert protocol.closes(closures[name], forward_balance_tolerance), f"{name}: {closures[name]}"
    for n, m in maps.items():
        for p in m.data_vars:
            lo, hi = PARAMETER_BOUNDS.get(p, (-np.inf, np.inf))
            v = m[p].values[active]
            assert np.all((v >= lo - 1e-4 * abs(lo)) & (v <= hi + 1e-4 * abs(hi))), f"{n}: {p} outside its bounds"
if results:
    default = calib_scores.xs("default parameters")["nse"]
    best = calib_scores.drop(index="default parameters", level=0)["nse"].groupby(level="gauge").max()
    assert (best >= default.reindex(best.index) - 1e-6).all(), "no calibrated model beats the default parameters"
print(f"{len(results)} models calibrated and saved to {models_dir}")
