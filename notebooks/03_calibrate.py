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
calibration = cfg.calibration
output_dir = Path(output_dir)
models_dir = output_dir / "models"
save = report.figure_saver(output_dir, "03_calibrate", cfg.figures)
RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)

basin = hh.read_basin(output_dir / "basin.nc")

# %% [markdown]
# ## The split: where models learn, where they are judged
#
# A warm-up opens the run (the stores forget their initial levels); the rest is cut into a
# calibration and a validation period. The gauge with the smallest drained area is held out
# as **pseudo-ungauged** (unless the parameters name others): no model sees its observations.

# %%
split = protocol.make_split(
    basin,
    calibration_period=calibration.calibration_period,
    validation_period=calibration.validation_period,
    warmup_fraction=calibration.warmup_fraction,
    validation_gauges=calibration.validation_gauges,
    swap_periods=calibration.swap_periods,
)
split.save(output_dir / "split.json")
display(split.describe())
save(plotting.plot_split(basin, split), "split")

# %% [markdown]
# ## Calibrate
#
# Each model of this stage (the conceptual ones with a `uniform` or `distributed` mapping) is
# calibrated with its optimiser's settings from the parameters; the bar shows the cost.

# %%
models = [m for m in calibration.models if protocol.stage_of(m) == "03_calibrate"]
results, seconds = protocol.train_models(basin, models, split, directory=models_dir,
                                         checkpoints=output_dir / "checkpoints", stale_checkpoints="restart",
                                         **protocol.training_options(cfg))
protocol.summary(results, seconds)

# %%
if results:
    save(plotting.plot_histories(results, title="calibration cost per iteration"), "histories")

# %% [markdown]
# ## Calibrated parameters
#
# The uniform model has one value per parameter; the distributed ones a map. The table gives
# each calibrated parameter's range over the active cells beside its bounds; every map is
# drawn with the same colour scale per parameter, so differences between models read directly.
# The solid line outlines the active cells, the dashed ones each gauge's catchment.

# %%
ranges = report.parameter_ranges(results, basin)
display(ranges.round(3))
if results:
    maps = {name: r.parameter_maps() for name, r in results.items()}
    save(plotting.plot_parameter_maps(maps, report.parameter_names(results), basin), "parameter_maps")

# %% [markdown]
# ## Discharge before and after calibration
#
# The whole run, with smash's default parameters and with each calibrated model, at every
# calibration gauge; the scores are over the calibration period at the calibration gauges
# (stage 06 scores the validation scenarios).

# %%
sims = {"default parameters": hh.simulate(basin, f"gr4-{calibration.routing}", **RUN)}
sims.update({name: r.simulate(basin, **RUN) for name, r in results.items()})
scores = protocol.score(sims, basin, split, calibration.metrics)
calib_scores = scores[scores["scenario"] == "calibration"].set_index(["model", "gauge"])[calibration.metrics]
display(calib_scores.round(3))
save(plotting.plot_simulations(sims, basin, split.calibration_gauges, split=split), "hydrographs")

# %% [markdown]
# Over the calibration period at the calibration gauges: the flow-duration curves (how often
# each discharge is exceeded, observed and simulated over the same steps) and each calibrated
# model's discharge against the observed one, step by step, with its NSE.

# %%
calibration_view = dict(gauges=split.calibration_gauges, period=split.calibration_period)
save(plotting.plot_flow_duration(sims, basin, **calibration_view), "flow_duration")
if results:
    save(plotting.plot_scatter({name: sims[name] for name in results}, basin, **calibration_view), "scatter")

# %% [markdown]
# ## Water balance of each calibrated model
#
# Rain in, evaporation, outflow and exchange out, and the change of storage, over the whole
# run and the whole domain (mm), with the unexplained share of the water turned over:
# calibration moves the terms, not the closure.

# %%
balances, closures = report.water_balances({name: sims[name] for name in results}, basin)
report.balance_table(balances, closures).round(4)

# %% [markdown]
# ## The runs and maps, written for other tools
#
# Each calibrated model's run goes to `simulations/<model>.nc` in the run directory (CF-1.10
# NetCDF: discharge at the gauges, parameters, states, routed discharge, time bounds, CRS; the
# default-parameter run is stage 02's `forward-<structure>.nc`, written here only when stage 02
# ran another structure), and its parameter maps to `models/<model>/parameters.tif`, one GeoTIFF
# band per parameter with its unit, for GIS tools.

# %%
written = {name: sims[name] for name in results}
if f"gr4-{calibration.routing}" != cfg.forward.structure:  # else stage 02 wrote this run
    written[f"forward-gr4-{calibration.routing}"] = sims["default parameters"]
sim_files = [hh.write_simulation(sim, basin, output_dir / "simulations" / f"{name}.nc", overwrite=True)
             for name, sim in written.items()]
map_files = [hh.write_parameter_maps(r.parameter_maps(), models_dir / name / "parameters.tif", crs=basin.rio.crs,
                                     dt=basin.attrs["dt"], overwrite=True) for name, r in results.items()]
print("\n".join(str(f.relative_to(output_dir)) for f in sim_files + map_files))

# %% [markdown]
# ## What must hold
#
# * every model of the stage was calibrated, and ended at a cost strictly below its first (or
#   its health check reports that it ended above its start: a finding the tables show);
# * its parameters stay finite and within their bounds;
# * the saved model reruns to the same discharge;
# * its water balance closes (the named sources stand beside the residual; none excuses it);
# * at each calibration gauge, a calibrated model does at least as well as the default parameters.
# * every written run reopens with plain xarray, and every model has its parameter maps.

# %%
assert set(results) == set(models), f"calibrated {sorted(results)}, expected {sorted(models)}"
for name, r in results.items():
    cost = r.history["cost"]
    assert np.isfinite(cost).all(), f"{name}: a non-finite cost"
    # a training that ends above its start is a finding, not a crash: its health check reports it
    # (summary table, and the study's acceptance); anything else that does not go down is an error
    unhealthy = {h['check'] for h in (results[name].options.get('health') or []) if not h['ok']}
    assert cost.iloc[-1] < cost.iloc[0] or 'ended above its start' in unhealthy, (
        f"{name}: calibration ended at {cost.iloc[-1]}, not below {cost.iloc[0]}, and no health check says so")
    q_back = hh.load_calibration(models_dir / name).simulate(basin)["q"].values
    assert np.allclose(q_back, sims[name]["q"].values, equal_nan=True), f"{name}: the saved model does not rerun"
    assert hh.closes(closures[name], cfg.forward.balance_tolerance), f"{name}: {closures[name]}"
assert ranges["within bounds"].all(), ranges[~ranges["within bounds"]]
if results:
    default = calib_scores.xs("default parameters")["nse"]
    best = calib_scores.drop(index="default parameters", level=0)["nse"].groupby(level="gauge").max()
    assert (best >= default.reindex(best.index) - 1e-6).all(), "no calibrated model beats the default parameters"
assert all("q" in xr.load_dataset(f) for f in sim_files) and all(f.is_file() for f in map_files), sim_files + map_files
print(f"{len(results)} models calibrated and saved to {models_dir}")
