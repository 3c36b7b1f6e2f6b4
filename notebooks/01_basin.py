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
# # 01 · The basin
#
# Every later stage starts from one file: the **basin**, an `xarray.Dataset` that holds, on a
# regular grid of cells,
#
# * the forcing: precipitation $P$ and potential evapotranspiration $E_p$, depths in mm over
#   each time step $(t - \Delta t, t]$;
# * the observed discharge $Q_{obs}$ at the gauges, in m³ s⁻¹, mean over each step;
# * the physical descriptors (slope, drainage density, …) that regionalisation maps to parameters;
# * the D8 flow directions, and the mesh fields derived from them: the **active cells** (the
#   union of the gauges' catchments, the cells the model computes), the flow accumulation
#   (upstream drainage area $A$), the routing partitions.
#
# This stage reads the basin (a dataset shipped with hydro-smash, a directory in the smash
# layout, a basin file, or a generated basin), shows what the model will see, checks what must hold, and
# writes `basin.nc` into the run directory. The schema is documented in `hybridhydro.basin`.

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
output_dir = Path(output_dir)
output_dir.mkdir(parents=True, exist_ok=True)
save = report.figure_saver(output_dir, "01_basin", cfg.figures)

# %% [markdown]
# ## Reading the basin
#
# A smash dataset or directory is read over the window $(t_{start}, t_{end}]$: flow directions,
# gauges (snapped to the grid cell whose drainage area best matches the declared one), forcing,
# observations and descriptors. A basin file (`.nc`, `.zarr`, written by `hh.write_basin`) is
# cut to that window, its mesh kept. The synthetic and known-answer basins are generated from a
# seed. With a spin-up (`basin.spinup_start`), the data start there: the steps up to
# $t_{start}$ warm the stores up and are kept out of every cost and score (attribute
# `spinup_end`); with `basin.initial_states`, the runs start from the states of that file.

# %%
ds = hh.open_basin(cfg.basin)  # known_answer: a truth that GR4 lacks, see hybridhydro.known_answer and stage 07
ds

# %% [markdown]
# ## The mesh
#
# The model computes on active cells only. Routing visits cells partition by partition: a cell
# of partition $k$ has upstream cells in partitions $< k$ only, so each partition is one
# vectorised step.

# %%
report.basin_summary(ds)

# %% [markdown]
# Flow accumulation $A$ (upstream drainage area, the cell included) spans orders of magnitude
# from hillslope cells to the outlet, hence the log scale. Rings mark the declared gauge
# outlets, triangles the cells they were snapped to.

# %%
save(plotting.plot_mesh(ds), "mesh")

# %% [markdown]
# ## Gauges
#
# Snapping moves each outlet to a cell of the D8 network; the delineated area $A_{dln}$ (the
# flow accumulation at that cell) should be close to the declared area $A$. A large difference
# flags a misplaced outlet or a flow-direction grid too coarse for the catchment.
# The `role` column names the basin's outlet (the gauge that drains the largest area, wherever
# it is in the table; later stages take it as the outlet), the gauges nested in another one and
# those with a catchment of their own.

# %%
plotting.gauge_table(ds)

# %% [markdown]
# ## Descriptors
#
# Raw values over the active cells, each on its own scale and in its own unit (regionalisation
# normalises them later).

# %%
fig = plotting.plot_descriptors(ds)
save(fig, "descriptors")

# %% [markdown]
# ## Rain and discharge at each gauge
#
# The basin-mean rain of gauge $g$ is the mean over the cells of its catchment $\Omega_g$
# (found by following the flow directions upstream from the gauge's cell),
# $\bar P_g(t) = \frac{1}{|\Omega_g|} \sum_{i \in \Omega_g} P_i(t)$, leaving out missing cells,
# as smash computes `mean_prcp`. Rain hangs from the top of each panel, discharge rises from the bottom; gaps in
# the discharge are missing observations.

# %%
rain = ds["mean_prcp"] if "mean_prcp" in ds else plotting.catchment_mean(ds, "prcp")
fig = plotting.plot_hydrographs(ds["qobs"], rain)
save(fig, "hydrographs")

# %%
report.gauge_summary(ds, rain)

# %% [markdown]
# ## Writing the basin
#
# `basin.nc` is the input of every later stage of this run.

# %%
basin_file = output_dir / "basin.nc"
hh.write_basin(ds, f"{basin_file}", overwrite=True)
basin_file

# %% [markdown]
# ## What must hold
#
# * the Dataset follows the basin schema;
# * there are active cells, and every gauge sits on one;
# * the flow accumulation at each gauge is its delineated area, and the catchments found by
#   following the flow directions upstream have that area too;
# * forcing is finite and non-negative, or NaN where it is missing;
# * `basin.nc` reads back equal to what was written.

# %%
hh.check_basin(ds, where=f"basin of case {cfg.case!r}")

active = ds["active_cell"].values
rows, cols = ds["gauge_row"].values, ds["gauge_col"].values
assert active.sum() > 0, "no active cell: the gauges' catchments are empty"
assert active[rows, cols].all(), f"gauges off the active cells: {list(ds['gauge'].values[~active[rows, cols]])}"

np.testing.assert_allclose(ds["flwacc"].values[rows, cols], ds["area_dln"].values, rtol=1e-3)
catchment_area = (plotting.upstream_masks(ds) * (ds["dx"] * ds["dy"]).values).sum(axis=(1, 2))
np.testing.assert_allclose(catchment_area, ds["area_dln"].values, rtol=1e-3)

for name in ("prcp", "pet"):
    values = ds[name].values
    assert not np.isinf(values).any(), f"{name} holds infinite values"
    assert (values[np.isfinite(values)] >= 0).all(), f"{name} holds negative depths"

back = hh.read_basin(basin_file)
xr.testing.assert_equal(back, ds)
print(f"01_basin: {int(active.sum())} active cells, {ds.sizes['gauge']} gauges, {ds.sizes['time']} steps -> {basin_file}")
