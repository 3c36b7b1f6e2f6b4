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
# # 00 · Your own basin
#
# A **study stage** (it runs only when the parameters' `stages`, or `--stages 00`, name it):
# it builds a basin the project has never seen, and writes the two files the pipeline's stages
# 01-06 need, `basin.nc` and a parameter file whose `basin.source` points at it:
#
# 1. **flow directions**: a D8 raster (1 = N, 2 = NE, …, 8 = NW, clockwise; 0 = no data), or a
#    DEM directed with pyflwdir (`hh.d8_from_dem`: depressions filled, each cell pointed at its
#    lowest neighbour);
# 2. **outlets**: the cells of a box whose drained area $A$ (km²) lies in a range
#    (`hh.find_outlets`, also `python -m hybridhydro outlets FLWDIR --bbox … --area …`), the
#    table `code, x, y, area` of `gauge_attributes.csv`;
# 3. **forcing**: rain $P$ and potential evapotranspiration $E_p$, depths in mm over each step
#    $(t - \Delta t, t]$, labelled by the step's end; rasters on another grid or in another CRS
#    are reprojected onto the flow directions' grid with *average* resampling (the
#    overlap-weighted mean depth, which keeps the water of an area);
# 4. **discharge** $Q_{obs}$ in m³ s⁻¹ (one CSV per gauge, smash's format) and **descriptors**.
#
# With its default settings (`hh.NewBasinParams`) it needs no data of yours: it crops the
# flow directions of France shipped with hydro-smash, makes up the rain and the PET (written as
# NetCDF files, as yours may be), simulates the discharge with GR4 and known parameters, and
# builds the basin from those files. Put your files in the settings instead (`new_basin` in a
# parameter file, or edit the cell below).

# %% tags=["parameters"]
# The runner (`python -m hybridhydro run params/<case>.yaml`) replaces both: `params` by the
# case's validated parameters, every section whole; `output_dir` by the run directory.
params = "params/ci.yaml"  # a parameter file (a relative path is looked for from the repository too)
output_dir = "runs/interactive"

# %%
# hybridhydro: study stage
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import hybridhydro as hh
from hybridhydro import plotting, report

cfg = hh.load_params(params)
output_dir = Path(output_dir)
output_dir.mkdir(parents=True, exist_ok=True)
save = report.figure_saver(output_dir, "00_new_basin", cfg.figures)
settings = hh.new_basin_settings(cfg)  # the parameters' `new_basin` section, or the demo's defaults
settings

# %% [markdown]
# ## Flow directions
#
# Only the window of the raster around the box is read (the box and a margin, so that the
# catchments of outlets near the box's edge are whole).

# %%
xmin, xmax, ymin, ymax = settings.bbox
window = (xmin - settings.margin, xmax + settings.margin, ymin - settings.margin, ymax + settings.margin)
if settings.dem is not None:
    flwdir = hh.d8_from_dem(settings.dem)
else:
    flwdir = hh.open_flwdir(settings.flwdir, window)
area = hh.drained_area(flwdir)  # km2, the cell included
flwdir

# %% [markdown]
# ## Outlets
#
# Candidate gauges: the cells of the box draining between the two areas, one per stretch of
# river (its most downstream cell in the range), largest first. An outlet whose catchment
# reaches the raster's edge is left out: water from outside the window could drain into it.

# %%
outlets = hh.find_outlets(flwdir, settings.bbox, settings.area_range, n=settings.ngauge)
gauge_file = output_dir / "gauge_attributes.csv"
outlets.to_csv(gauge_file, index=False)
outlets

# %%
fig, ax = plt.subplots(figsize=(6, 5), layout="constrained")
image = ax.pcolormesh(area["x"], area["y"], np.log10(area), shading="nearest", cmap="Blues")
fig.colorbar(image, ax=ax, label="drained area, log10 km²")
ax.add_patch(plt.Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, fill=False, ls="--", color="k"))
ax.scatter(outlets["x"], outlets["y"], marker="v", color="crimson", zorder=3)
for _, row in outlets.iterrows():
    ax.annotate(f"{row['code']} ({row['area']:.0f} km²)", (row["x"], row["y"]), textcoords="offset points",
                xytext=(4, 4), fontsize=8)
x_label, y_label = plotting.xy_labels(flwdir)
ax.set(xlabel=x_label, ylabel=y_label, title="drained area and the outlets found (dashed: the box)", aspect="equal")
ax.tick_params(axis="x", labelrotation=30)
save(fig, "outlets")

# %% [markdown]
# ## Forcing
#
# Yours: `settings.forcing = {"prcp": ..., "pet": ...}` (NetCDF files, or folders of GeoTIFFs
# named with the step-end date), in mm per step; a PET given as a daily interannual
# climatology (mm per day: `%m%d` GeoTIFFs such as `0114_ETPJIA.tif`, or a NetCDF with a
# `dayofyear` dimension) with `settings.daily_interannual_pet: true`. The demo makes them
# up on the window's grid (`hh.synthetic_forcing`: storms on 15 % of the hours, a smooth
# spatial gradient; PET a half-sine over the day times a seasonal cycle, highest in June)
# and writes them as NetCDF files, with the CRS, as yours may come.

# %%
times = pd.date_range(pd.Timestamp(settings.start) + pd.Timedelta(seconds=settings.dt), periods=settings.ntime,
                      freq=pd.Timedelta(seconds=settings.dt))
if settings.forcing is None:
    made_up = hh.synthetic_forcing(flwdir, times, settings.dt, seed=settings.seed)
    forcing = {}
    for name in ("prcp", "pet"):
        forcing[name] = output_dir / f"{name}.nc"
        made_up[[name]].to_netcdf(forcing[name])
else:
    forcing = settings.forcing
descriptors = settings.descriptors or hh.synthetic_descriptors(flwdir, seed=settings.seed)
window_args = dict(dt=settings.dt, start=settings.start, end=str(times[-1]), name=settings.name,
                   daily_interannual_pet=settings.daily_interannual_pet)
forcing

# %% [markdown]
# ## Discharge
#
# Yours: `settings.qobs`, a folder of CSV files `<code>.csv`, the date of the first value
# (`%Y%m%d%H%M`, a step end) on the first line, then one discharge per line in m³ s⁻¹
# (negative: missing). The demo simulates it: the basin is built once without discharge,
# GR4 runs on it with the `truth` parameters, and its discharge is written in that format.

# %%
if settings.qobs is None:
    dry = hh.build_basin(flwdir=flwdir, outlets=gauge_file, forcing=forcing, **window_args)
    truth = hh.simulate(dry, settings.structure, settings.truth)
    qobs_dir = output_dir / "qobs"
    hh.write_qobs_csv(truth["q"], qobs_dir, overwrite=True)
else:
    qobs_dir = settings.qobs
qobs_dir

# %% [markdown]
# ## The basin
#
# Everything onto the flow directions' grid: the outlets snapped to the cell whose drained
# area best matches the declared one, the active cells (their catchments), the forcing, the
# discharge and the descriptors. `hh.check_basin` says what is missing, if anything.

# %%
basin = hh.build_basin(flwdir=flwdir, outlets=gauge_file, forcing=forcing, qobs=qobs_dir, descriptors=descriptors,
                       **window_args)
hh.check_basin(basin)
report.basin_summary(basin)

# %%
save(plotting.plot_mesh(basin), "mesh")

# %%
plotting.gauge_table(basin)

# %%
save(plotting.plot_hydrographs(basin["qobs"], basin["mean_prcp"]), "hydrographs")

# %% [markdown]
# ## The files the pipeline reads
#
# `basin.nc` and `<name>.yaml` (it extends the project's `params/base.yaml`; `basin.source:
# basin.nc`). Run the pipeline on it with `python -m hybridhydro run <output_dir>/<name>.yaml`.
# The same basin in the smash layout (`smash_layout/`: setup YAML, GeoTIFF series, qobs CSVs,
# descriptors, `gauge_attributes.csv`, `flwdir.tif`) reads back with `hh.read_smash_dataset`.

# %%
basin_file, case_file = hh.write_basin_case(basin, output_dir, case=settings.name, overwrite=True)
layout = hh.write_smash_dataset(basin, output_dir / "smash_layout", overwrite=True)
print(case_file.read_text())

# %% [markdown]
# ## What must hold
#
# * the basin passes `check_basin`, and the parameter file loads and points at `basin.nc`;
# * each outlet's delineated area is within 1 % of the one `find_outlets` reported (km²);
# * `basin.nc` and the smash layout read back equal to the basin (forcing, discharge,
#   descriptors, flow directions, gauges, within float32);
# * the demo's discharge is GR4's, to float32 round-off.

# %%
case = hh.load_params(case_file)
assert Path(case.basin.source) == basin_file.resolve(), case.basin.source
declared = outlets.set_index("code")["area"]
delineated = basin["area_dln"].to_series() / 1e6  # m2 -> km2
relative = (delineated - declared.loc[delineated.index]).abs() / declared.loc[delineated.index]
assert (relative <= 0.01).all(), relative
for back in (hh.read_basin(basin_file), hh.read_smash_dataset(layout, progress=False)):
    for name in ("prcp", "pet", "qobs", "descriptors", "flwdir", "active_cell", "area", "gauge_x", "gauge_y"):
        np.testing.assert_allclose(back[name].values.astype(float), basin[name].values.astype(float), rtol=1e-6,
                                   equal_nan=True, err_msg=name)
if settings.qobs is None:
    np.testing.assert_allclose(basin["qobs"].values, truth["q"].values, rtol=1e-6, atol=1e-6)
relative.rename("relative area error").to_frame()
