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
save = report.figure_saver(output_dir, "04_regionalize", cfg.figures)
RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)

basin = hh.read_basin(output_dir / "basin.nc")
split = protocol.Split.load(output_dir / "split.json")  # written by stage 03
display(split.describe())

# %% [markdown]
# ## The descriptors
#
# The network sees each descriptor rescaled by its minimum and maximum over every cell of the
# grid that has a value, active or not (smash's `normalize`, whose statistics the trained
# mapping keeps), so that no descriptor dominates by its unit: over the active cells alone the
# scaled values may span less than [0, 1]. The maps outline the active cells and each gauge's
# catchment; the table gives each descriptor's range over the active cells.

# %%
save(plotting.plot_descriptors(basin), "descriptors")
report.descriptor_table(basin)

# %% [markdown]
# ## Train the regionalisation networks

# %%
models = [m for m in calibration.models if protocol.stage_of(m) == "04_regionalize"]
results, seconds = protocol.train_models(basin, models, split, directory=models_dir,
                                         checkpoints=output_dir / "checkpoints", stale_checkpoints="restart",
                                         **protocol.training_options(cfg))
protocol.summary(results, seconds)

# %%
if results:
    save(plotting.plot_histories(results, title="training cost per iteration (Adam)"), "histories")

# %% [markdown]
# ## Regionalised parameter maps
#
# Beside the distributed calibration of stage 03 (when it ran): the regionalised maps follow
# the descriptors, the distributed ones follow the gradient's reach. The table gives each
# parameter's range beside its bounds.

# %%
earlier = [m for m in ("gr4-distributed",) if (models_dir / m / "calibration.json").exists()]  # from stage 03
earlier = protocol.load_models(models_dir, earlier)
names = report.parameter_names(results)
ranges = report.parameter_ranges(results, basin)
display(ranges.round(3))
maps = {name: r.parameter_maps() for name, r in {**earlier, **results}.items()}
if maps:
    save(plotting.plot_parameter_maps(maps, names, basin), "parameter_maps")

# %% [markdown]
# ## What the network learned: parameters against descriptors
#
# Each point is a cell. A regionalisation is a function of the descriptors, so its parameters
# line up along them; how steeply tells which descriptor the network uses.

# %%
if results:
    regionalised = {name: maps[name] for name in results}
    save(plotting.plot_parameters_vs_descriptors(regionalised, basin, names), "parameters_vs_descriptors")

# %% [markdown]
# ## At the pseudo-ungauged gauges
#
# The first look at spatial transfer (stage 06 scores every scenario): discharge over the
# whole run at the gauges no model saw.

# %%
sims = {name: r.simulate(basin, **RUN) for name, r in {**earlier, **results}.items()}
scores = protocol.score(sims, basin, split, calibration.metrics)
display(scores.set_index(["scenario", "model", "gauge"]).sort_index().round(3))
if split.validation_gauges:
    save(plotting.plot_simulations(sims, basin, split.validation_gauges, split=split), "pseudo_ungauged")

# %% [markdown]
# ## The runs and maps, written for other tools
#
# Each regionalisation's run goes to `simulations/<model>.nc` in the run directory (CF-1.10
# NetCDF; the distributed calibration's run is stage 03's), and its parameter maps to
# `models/<model>/parameters.tif`, one GeoTIFF band per parameter with its unit.

# %%
sim_files = [hh.write_simulation(sims[name], basin, output_dir / "simulations" / f"{name}.nc", overwrite=True)
             for name in results]
map_files = [hh.write_parameter_maps(r.parameter_maps(), models_dir / name / "parameters.tif", crs=basin.rio.crs,
                                     dt=basin.attrs["dt"], overwrite=True) for name, r in results.items()]
print("\n".join(str(f.relative_to(output_dir)) for f in sim_files + map_files))

# %% [markdown]
# ## What must hold
#
# * every regionalisation of the stage was trained, and ended at a cost strictly below its first
#   (or its health check reports that it ended above its start: a finding the tables show);
# * its parameter maps are finite and within their bounds everywhere, the cells no gauge saw
#   included;
# * its discharge is finite and its water balance closes;
# * the saved model reruns to the same discharge.
# * every written run reopens with plain xarray, and every model has its parameter maps.

# %%
assert set(results) == set(models), f"trained {sorted(results)}, expected {sorted(models)}"
assert ranges["within bounds"].all(), ranges[~ranges["within bounds"]]
for name, r in results.items():
    cost = r.history["cost"]
    assert np.isfinite(cost).all(), f"{name}: a non-finite cost"
    # a training that ends above its start is a finding, not a crash: its health check reports it
    # (summary table, and the study's acceptance); anything else that does not go down is an error
    unhealthy = {h['check'] for h in (results[name].options.get('health') or []) if not h['ok']}
    assert cost.iloc[-1] < cost.iloc[0] or 'ended above its start' in unhealthy, (
        f"{name}: training ended at {cost.iloc[-1]}, not below {cost.iloc[0]}, and no health check says so")
    assert np.isfinite(sims[name]["q"].values).all(), f"{name}: non-finite discharge"
    closure = hh.balance_closure(hh.water_balance(sims[name], basin), sims[name])
    assert hh.closes(closure, cfg.forward.balance_tolerance), f"{name}: {closure}"
    back = hh.load_calibration(models_dir / name).simulate(basin)["q"].values
    assert np.allclose(back, sims[name]["q"].values, equal_nan=True), f"{name}: the saved model does not rerun"
assert all("q" in xr.load_dataset(f) for f in sim_files) and all(f.is_file() for f in map_files), sim_files + map_files
print(f"{len(results)} regionalisations trained and saved to {models_dir}")
