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
# # 06 · Validation and the comparison of the models
#
# Every model of stages 03–05 was calibrated once, on the calibration gauges over the
# calibration period. Here each runs over the whole period and is scored in four scenarios
# (Huynh et al., GMD 2026):
#
# | scenario | period | gauges |
# |---|---|---|
# | calibration | calibration | calibration gauges |
# | temporal | validation | calibration gauges |
# | spatial | calibration | pseudo-ungauged gauges |
# | spatio-temporal | validation | pseudo-ungauged gauges |
#
# with NSE and KGE per gauge, then compared on the flood events of the observed hydrographs
# (smash's hydrograph segmentation), on hydrological signatures, on their parameter maps and
# on their water balances.

# %% tags=["parameters"]
# The runner (`python -m hybridhydro run params/<case>.yaml`) replaces both: `params` by the
# case's validated parameters, every section whole; `output_dir` by the run directory.
params = "params/ci.yaml"  # a parameter file (a relative path is looked for from the repository too)
output_dir = "runs/interactive"

# %%
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

import hybridhydro as hh
from hybridhydro import plotting, protocol, report

cfg = hh.load_params(params)
calibration = cfg.calibration
output_dir = Path(output_dir)
models_dir = output_dir / "models"
save = report.figure_saver(output_dir, "06_validate", cfg.figures)
RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)

basin = hh.read_basin(output_dir / "basin.nc")
split = protocol.Split.load(output_dir / "split.json")  # written by stage 03
display(split.describe())
results = protocol.load_models(models_dir, calibration.models)
protocol.summary(results)

# %% [markdown]
# ## The networks
#
# Every network of the compared models, read back from the saved models: the flux-correction
# networks of the hybrids (states as fractions of their capacities, `pn` and `en` per step or
# as hourly rates, corrections in (−1, 1)) and the regionalisation networks (descriptors
# transformed with the training basin's statistics, parameters inside their bounds), with their
# layers and their number of trained weights.

# %%
networks = report.networks_table(results)
networks

# %% [markdown]
# ## A pure-ML baseline: a regional LSTM
#
# What a model without any hydrology reaches on the same split: an LSTM, lumped per gauge
# (catchment-mean rain and PET in mm per hour, and the catchment means of the descriptors),
# trained on the calibration gauges over the calibration period only, in the style of
# NeuralHydrology's regional LSTM (`hybridhydro.lstm` documents every setting). It reaches the
# pseudo-ungauged gauges through their descriptors, as the regionalisations do.

# %%
baselines = {}
if "lstm" in calibration.baselines:
    lstm_config = hh.LSTMConfig.for_split(basin, split, calibration.lstm)  # its window fitted to the calibration period
    lstm = hh.train_lstm(basin, split, lstm_config, seed=cfg.seed)
    lstm.save(models_dir / "lstm", overwrite=True)
    baselines["lstm"] = lstm.simulate(basin)
    print(f"LSTM: {lstm.n_parameters} weights, {len(lstm.history)} iterations, final loss "
          f"{float(lstm.history['loss'].iloc[-1]):.3f}; settings {lstm_config.to_dict()}")

# %% [markdown]
# ## Scores in every scenario
#
# Every model, the baselines and, for reference, gr4 with smash's default parameters; the
# tables are also written to `comparison.md` (and every score to `comparison_scores.csv`).

# %%
sims = {name: r.simulate(basin, **RUN) for name, r in results.items()}
sims_with_default = {"default parameters": hh.simulate(basin, f"gr4-{calibration.routing}"), **sims, **baselines}
scores = protocol.score(sims_with_default, basin, split, calibration.metrics)
tables = report.write_comparison(scores, split, output_dir, calibration.metrics, case=cfg.case)
for metric, table in tables.items():
    print(metric.upper())
    display(table.round(3))

# %%
for metric, table in tables.items():
    save(plotting.plot_scores(table, metric), f"scores_{metric}")

# %% [markdown]
# ### Over the validation period, at every gauge
#
# The flow-duration curves (how often each discharge is exceeded, observed and simulated over
# the same steps) and each model's discharge against the observed one, step by step, with its
# NSE over the validation period (the temporal and spatio-temporal scenarios).

# %%
save(plotting.plot_flow_duration(sims_with_default, basin, period=split.validation_period), "flow_duration")
save(plotting.plot_scatter(sims_with_default, basin, period=split.validation_period), "scatter")

# %% [markdown]
# ### Mean score per scenario
#
# The mean over the gauges of each scenario: how much a model loses out of its calibration
# period (temporal), away from its gauges (spatial), and both.

# %%
report.scenario_means(scores, calibration.metrics).round(3)

# %% [markdown]
# ## Flood events
#
# The events are segmented from the observed discharge at each gauge (smash's hydrograph
# segmentation: peaks above the 99.5 % quantile, bounded by rain and recession). The largest
# event of each gauge, with every model, shows where the models differ most: peaks and
# recessions.

# %%
events = report.flood_events(basin)
print(f"{len(events)} events over {basin.sizes['gauge']} gauges")
display(events.head(12))
largest = report.largest_events(events, basin)
if len(largest):
    save(plotting.plot_events(sims, basin, largest, split=split), "flood_events")
else:
    print("no event found in the observed series (too short a run, or no peak above the threshold)")

# %% [markdown]
# ## Signatures
#
# Continuous signatures of each model's discharge against the observed ones, over the whole
# run: runoff coefficients (`Crc`, quick flow `Crchf`, base flow `Crclf`) and flow quantiles
# (`Cfp*`); the table gives the relative error (simulated / observed − 1) averaged over gauges.

# %%
report.signature_errors(sims, basin).round(3)

# %% [markdown]
# ## Parameter maps of every model
#
# One colour scale per parameter across the models: uniform, distributed, regionalised and
# hybrid calibrations of the same basin side by side.

# %%
maps = {name: r.parameter_maps() for name, r in results.items()}
save(plotting.plot_parameter_maps(maps, report.parameter_names(results), basin, width=2.6), "parameter_maps")

# %% [markdown]
# ## Water balance of every model
#
# Over the whole run and the whole domain (mm): where each model sends the rain. The hybrids'
# `correction` is the water their network adds or removes (gr4_ude's rain correction); each
# non-physical source (`source_*`: smash's impervious sink, store floor and steady outflow, an
# implicit step's unsolved equation) has its own column, beside the unexplained residual and
# the solver's statistics.

# %%
balances, closures = report.water_balances(sims, basin)
budget_table = report.balance_table(balances, closures)
display(budget_table.style.format("{:.4g}"))
save(plotting.plot_water_balances(budget_table), "water_balances")

# %% [markdown]
# ## The runs, written for other tools
#
# Stages 03–05 wrote each model's run to `simulations/<model>.nc` in the run directory (CF-1.10
# NetCDF) and the default-parameter run is stage 02's; this stage writes only the runs of models
# whose file is missing (a run directory from before, a stage not run).

# %%
sim_dir = output_dir / "simulations"
missing = [name for name in sims if not (sim_dir / f"{name}.nc").exists()]
for name in missing:
    hh.write_simulation(sims[name], basin, sim_dir / f"{name}.nc")
print(f"written here: {', '.join(missing) or 'none'}; every model's run is in {sim_dir}")

# %% [markdown]
# ## What must hold
#
# * every model has a finite score in every scenario at every one of its gauges;
# * over the calibration period, the best calibrated model does at least as well as the
#   default parameters;
# * every model's water balance closes (the hybrids' to their own tolerance);
# * `comparison.md` and `comparison_scores.csv` hold the scores of this table (to the 3
#   decimals the markdown writes).
# * every model's run is written and reopens with plain xarray.
# * every model with a network (a hybrid, an ann or cnn regionalisation) has its row in the
#   networks table, with a positive number of weights.
# * the LSTM baseline, when it runs, is scored like the models and reads back from its saved
#   folder to the same discharge.

# %%
expected = {(m, s, g) for m in sims_with_default for s in protocol.SCENARIOS for g in split.scenario(s)[1]}
assert set(zip(scores["model"], scores["scenario"], scores["gauge"])) == expected, "a score is missing"
assert np.isfinite(scores[calibration.metrics].values).all(), scores
calib = scores[scores["scenario"] == "calibration"].groupby("model")["nse"].mean()
assert calib.drop("default parameters").max() >= calib["default parameters"] - 1e-6, calib
for name, closure in closures.items():
    tolerance = cfg.hybrid.balance_tolerance if protocol.ModelName.parse(name).hybrid else cfg.forward.balance_tolerance
    assert hh.closes(closure, tolerance), f"{name}: the balance leaves {closure['worst']:.2e} of the water turned over, unexplained"
written = report.read_comparison(output_dir / "comparison.md")
for metric, table in tables.items():
    assert list(written[metric].index) == list(table.index), f"comparison.md: the {metric} rows differ"
    assert np.allclose(written[metric].values, table.values, atol=5e-4, equal_nan=True), f"comparison.md: {metric} differs"
csv = pd.read_csv(output_dir / "comparison_scores.csv")
assert np.allclose(csv[calibration.metrics].values, scores[calibration.metrics].values, equal_nan=True), csv
assert all("q" in xr.load_dataset(sim_dir / f"{name}.nc") for name in sims), f"a model's run is missing from {sim_dir}"
with_network = {n for n, r in results.items() if r.nn_parameters is not None or r.network is not None}
assert set(networks["model"]) == with_network and (networks["weights"] > 0).all(), networks
if "lstm" in baselines:
    back = hh.load_lstm(models_dir / "lstm").simulate(basin)["q"].values
    assert np.array_equal(back, baselines["lstm"]["q"].values, equal_nan=True), "the saved LSTM simulates otherwise"
print(f"{len(sims)} models scored in {scores['scenario'].nunique()} scenarios; table in {output_dir / 'comparison.md'}")
