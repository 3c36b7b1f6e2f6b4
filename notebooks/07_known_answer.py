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
# # 07 · The known answer: do the hybrids find what GR4 lacks?
#
# A **study stage**: it runs only when the parameters' `stages` (or `--stages`) name it, after
# stages 01 (the basin), 03 (the split, GR4), 04 (the regionalisations) and 05 (the hybrids),
# and only on a **known-answer basin** (`basin.source: known_answer`,
# `hybridhydro.known_answer_basin`), whose discharge was made by a model we know: GR4 with true
# parameter maps (smooth functions of the descriptors) plus one hidden process GR4 does not
# have (a saturating groundwater loss, a slow aquifer, or nothing). The basin carries the
# answer: the hidden flux $g$ of every cell and step (mm per step, negative removes water),
# the clean discharge $Q_{true}$, the discharge of GR4 with the true maps and no hidden process
# $Q_{GR4}$, and the true maps. So we can ask, where the answer is known:
#
# 1. **what GR4 misses**: $Q_{GR4}$ against $Q_{true}$ (the best GR4 can do without the
#    process, with the right parameters);
# 2. **do the scores see it**: every trained model against the clean truth, in each scenario;
# 3. **do the hybrids' corrections follow the hidden flux**: the networks' corrections
#    $f_k$ and the water they add or remove, correlated with $g$ per gauge and scenario;
# 4. **do the calibrations find the true maps**: each calibrated map against the true one.

# %% tags=["parameters"]
# The runner (`python -m hybridhydro run params/<case>.yaml`) replaces both: `params` by the
# case's validated parameters, every section whole; `output_dir` by the run directory.
params = "params/ci-known-answer.yaml"  # a parameter file (a relative path is looked for from the repository too)
output_dir = "runs/interactive"

# %%
# hybridhydro: study stage
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

import hybridhydro as hh
from hybridhydro import plotting, protocol, report
from hybridhydro.periods import period_mask

cfg = hh.load_params(params)
calibration, hybrid = cfg.calibration, cfg.hybrid
output_dir = Path(output_dir)
models_dir = output_dir / "models"
save = report.figure_saver(output_dir, "07_known_answer", cfg.figures)
RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)

basin = hh.read_basin(output_dir / "basin.nc")  # stage 01
ANSWER = ("hidden_flux", "q_true", "q_gr4")
if any(name not in basin for name in ANSWER) or "known_answer_truth" not in basin.attrs:
    raise ValueError(
        f"07_known_answer compares the trained models with a known answer, and the basin of this run "
        f"({basin.attrs.get('name') or '?'!r}, {output_dir / 'basin.nc'}) carries none (no {', '.join(ANSWER)}): "
        "run it on a known-answer basin, basin.source: known_answer (e.g. params/known_answer.yaml)"
    )
split = protocol.Split.load(output_dir / "split.json")  # stage 03
truth = basin.attrs["known_answer_truth"]
outlet = report.outlet(basin)
active = basin["active_cell"].values.astype(bool)
truth_basin = basin.assign(qobs=basin["q_true"])  # scores against the clean truth, not the noisy qobs
print(f"truth {truth!r}: {basin.attrs['known_answer_process']}")
print(f"observation noise: lognormal sigma {basin.attrs['noise']}, seed {basin.attrs['seed']}")
split.describe()

# %% [markdown]
# ## 1 · What GR4 misses
#
# $Q_{GR4}$ is GR4 with the true maps, every process but the hidden one: the gap to
# $Q_{true}$ is the hidden process's whole effect on the discharge. The hydrograph of the
# outlet (m³ s⁻¹, log scale: the process acts on low flows and recessions too), the hidden
# flux averaged over its catchment (mm per step), then the scores of $Q_{GR4}$ against
# $Q_{true}$ at every gauge over the whole run.

# %%
masks = plotting.upstream_masks(basin)
gauges = [str(g) for g in basin["gauge"].values]
fields = basin[["flwdir", "gauge_row", "gauge_col", "hidden_flux"]]
hidden_mean = plotting.catchment_mean(fields, "hidden_flux")  # (gauge, time), mm per step
times = pd.DatetimeIndex(basin["time"].values)

fig, (ax_q, ax_g) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, layout="constrained",
                                 gridspec_kw={"height_ratios": [3, 1]})
for name, colour in (("qobs", "0.6"), ("q_true", "k"), ("q_gr4", "tab:red")):
    label = {"qobs": "observed (truth × noise)", "q_true": "truth", "q_gr4": "GR4, true parameters"}[name]
    ax_q.plot(times, basin[name].sel(gauge=outlet).values, color=colour, lw=0.9, label=label)
ax_q.set_yscale("log")
ax_q.set_ylim(bottom=1e-3 * float(basin["q_true"].sel(gauge=outlet).mean()))  # dry spells: down to 1/1000 of the mean
ax_q.set_ylabel("discharge (m³ s⁻¹)")
ax_q.set_title(f"gauge {outlet} (outlet, {float(basin['area_dln'].sel(gauge=outlet)) / 1e6:.0f} km²), truth {truth!r}")
ax_q.legend(loc="upper right")
ax_g.plot(times, hidden_mean.sel(gauge=outlet).values, color="tab:blue", lw=0.8)
ax_g.axhline(0.0, color="0.5", lw=0.5)
ax_g.set_ylabel("hidden flux g\n(mm per step)")
ax_g.set_xlabel("time (end of step)")
save(fig, "what_gr4_misses")

# %%
scored = list(dict.fromkeys(["nse", *calibration.metrics]))
missed = hh.evaluate(basin["q_gr4"], truth_basin, scored).to_dataframe()[scored]
dt_days = float(basin.attrs["dt"]) / 86400.0
years = len(times) * dt_days / 365.25
volume = lambda q: (q * float(basin.attrs["dt"]) * 1e3 / basin["area_dln"]).sum("time") / years  # noqa: E731  mm a year
missed["Q_true (mm/yr)"] = volume(basin["q_true"]).values
missed["Q_GR4 (mm/yr)"] = volume(basin["q_gr4"]).values
missed["hidden flux (mm/yr)"] = hidden_mean.sum("time").values / years
missed["nested in"] = [", ".join(h for j, h in enumerate(gauges) if j != i and masks[j, r, c])
                       for i, (r, c) in enumerate(zip(basin["gauge_row"].values, basin["gauge_col"].values))]
missed.round(3)

# %% [markdown]
# ## 2 · The trained models against the truth
#
# Every model of stages 03–05 (`calibration.models`) and the true-parameter GR4, scored
# against the **clean** truth $Q_{true}$ in the four scenarios: a model that learned the
# hidden process beats $Q_{GR4}$; one that only fits the noise does not.

# %%
results = protocol.load_models(models_dir, calibration.models)
sims = {name: r.simulate(basin, **RUN) for name, r in results.items()}
reference = {"gr4, true parameters": xr.Dataset({"q": basin["q_gr4"]})}
scores = protocol.score({**reference, **sims}, truth_basin, split, calibration.metrics)
scores.to_csv(output_dir / "known_answer_scores.csv", index=False)  # pooled over seeds by `python -m hybridhydro study`
means = report.scenario_means(scores, calibration.metrics)
means.round(3)

# %% [markdown]
# ## 3 · The hybrids' corrections against the hidden flux
#
# Each hybrid's network outputs corrections $f_k \in (-1, 1)$ (dimensionless). Besides them,
# the water the corrections add (mm per step, negative removes), estimated from the fluxes:
#
# * gr4_mlp: the extra exchange $l\,f_4/(1 + f_4)$ (its exchange is $(1 + f_4)\,l$) minus the
#   extra soil evaporation $e_s\,f_2/(1 + f_2)$;
# * gr4_ude: the rain correction $f_1\,p_n$, plus the extra exchange $l\,f_3/(1 + f_3)$, minus
#   the extra evaporation $e_s\,f_2/(1 + f_2)$.
#
# Each series is averaged over the catchment of a gauge, and correlated (Pearson $r$) with the
# catchment's hidden flux over the steps of a scenario's period, at each gauge of the
# scenario. $r$ is NaN where a series is constant (a network that learned nothing).

# %%
def correction_water(run: xr.Dataset) -> xr.DataArray:
    """Water the network's corrections add, mm per step (time, y, x): see the text above."""
    hydrology = hh.parse_structure(run.attrs["structure"]).hydrology
    exchange = "correction_exchange"
    water = run["lexc"] * run[exchange] / (1.0 + run[exchange])
    water = water - run["es"] * run["correction_evaporation" if hydrology == "gr4_ude" else "correction_es"] / (
        1.0 + run["correction_evaporation" if hydrology == "gr4_ude" else "correction_es"])
    if "rain_correction" in run:
        water = water + run["rain_correction"]
    return water.assign_attrs(units="mm", long_name="water the corrections add (mm per step)")


hybrids = {name: sim for name, sim in sims.items() if protocol.ModelName.parse(name).hybrid}
series = {}  # (model, variable) -> (gauge, time) catchment means
for name, run in hybrids.items():
    wanted = report.correction_names(run)
    grid = fields.assign({v: run[v] for v in wanted}).assign(correction_water=correction_water(run))
    for v in [*wanted, "correction_water"]:
        series[name, v] = plotting.catchment_mean(grid, v)

rows = []
for scenario in protocol.SCENARIOS:
    period, scenario_gauges = split.scenario(scenario)
    steps = period_mask(basin["time"].values, period)
    for g in scenario_gauges:
        g_series = hidden_mean.sel(gauge=g).values[steps]
        for (name, v), s in series.items():
            x = s.sel(gauge=g).values[steps]
            ok = np.isfinite(x) & np.isfinite(g_series)
            varies = ok.sum() > 2 and np.std(x[ok]) > 0 and np.std(g_series[ok]) > 0
            r = np.corrcoef(x[ok], g_series[ok])[0, 1] if varies else np.nan
            rows.append({"model": name, "correction": v.removeprefix("correction_"), "scenario": scenario,
                         "gauge": g, "r": r})
correlations = pd.DataFrame(rows, columns=["model", "correction", "scenario", "gauge", "r"])
correlations.to_csv(output_dir / "known_answer_correlations.csv", index=False)
if len(correlations):
    by_scenario = correlations.pivot_table(index=["model", "correction"], columns="scenario", values="r", aggfunc="mean")
    display(by_scenario.round(3))
    display(correlations.pivot_table(index=["model", "correction"], columns="gauge", values="r").round(3))
else:
    print("no hybrid among calibration.models: nothing to correlate with the hidden flux")

# %% [markdown]
# The hidden flux and each hybrid's correction water at the outlet (catchment means, mm per
# step) over time, and every cell-step of the outlet's catchment as a scatter (a correction
# that learned the process lies along a line: the hidden process removes water where the
# network removes it).

# %%
if hybrids:
    fig, axes = plt.subplots(1 + len(hybrids), 1, figsize=(11, 2.6 * (1 + len(hybrids))), layout="constrained",
                             sharex=True, squeeze=False)
    axes = axes[:, 0]
    axes[0].plot(times, hidden_mean.sel(gauge=outlet).values, color="k", lw=0.8)
    axes[0].set_ylabel("hidden flux g\n(mm per step)")
    axes[0].set_title(f"catchment of {outlet}: the hidden flux and the water the corrections add")
    for ax, name in zip(axes[1:], hybrids):
        ax.plot(times, series[name, "correction_water"].sel(gauge=outlet).values, color="tab:purple", lw=0.8)
        ax.set_ylabel(f"{name}\ncorrection water\n(mm per step)")
    axes[-1].set_xlabel("time (end of step)")
    save(fig, "corrections_time")

    in_outlet = masks[gauges.index(outlet)] & active
    fig, axes = plt.subplots(1, len(hybrids), figsize=(4.2 * len(hybrids), 3.8), layout="constrained", squeeze=False)
    g_cells = basin["hidden_flux"].values[:, in_outlet].ravel()
    pick = np.random.default_rng(0).permutation(g_cells.size)[:20000]  # a readable scatter
    for ax, name in zip(axes[0], hybrids):
        c_cells = correction_water(hybrids[name]).values[:, in_outlet].ravel()
        ax.scatter(g_cells[pick], c_cells[pick], s=2, alpha=0.3, color="tab:purple")
        ax.axhline(0.0, color="0.5", lw=0.5)
        ax.axvline(0.0, color="0.5", lw=0.5)
        ax.set_xlabel("hidden flux g (mm per step)")
        ax.set_ylabel("correction water (mm per step)")
        ax.set_title(name)
    save(fig, "corrections_scatter")

# %% [markdown]
# ## 4 · Calibrated maps against the true maps
#
# Every calibrated parameter map beside the true one (one colour scale per parameter), then
# the Pearson correlation over the active cells and the ratio of the means (calibrated / true).
# A uniform calibration has no spatial pattern: its correlation is NaN. gr4_ode and gr4_ude
# share GR4's parameter names in a continuous model: their maps need not match the algebraic
# GR4's.

# %%
names = [p for p in report.parameter_names(results) if f"true_{p}" in basin]
true_maps = xr.Dataset({p: basin[f"true_{p}"] for p in names})
maps = {name: r.parameter_maps() for name, r in results.items()}
save(plotting.plot_parameter_maps({"truth": true_maps, **maps}, names, basin, width=2.6), "parameter_maps")

rows = []
for name, m in maps.items():
    for p in names:
        if p not in m:
            continue
        calibrated, true = m[p].values[active].astype(float), true_maps[p].values[active].astype(float)
        varies = np.std(calibrated) > 0 and np.std(true) > 0
        rows.append({"model": name, "parameter": p, "r": np.corrcoef(calibrated, true)[0, 1] if varies else np.nan,
                     "mean ratio": float(np.mean(calibrated) / np.mean(true))})
map_scores = pd.DataFrame(rows, columns=["model", "parameter", "r", "mean ratio"])
map_scores.pivot_table(index="model", columns="parameter", values=["r", "mean ratio"]).round(3)

# %% [markdown]
# ## What must hold
#
# * the hidden flux is non-trivial for a hidden process (it moves water, and $Q_{GR4}$ differs
#   from $Q_{true}$), and exactly zero with $Q_{GR4} = Q_{true}$ for the truth `gr4`;
# * the truth is finite and non-negative (to float32 round-off); the observations scatter around it as the noise says;
# * every correlation of a correction that varies with a hidden flux that varies is finite, and so is every correlation of a
#   calibrated map that varies;
# * every trained hybrid's water balance closes, its corrections named.

# %%
hidden = basin["hidden_flux"].values[:, active]
q_true = basin["q_true"].values  # non-negative but for float32 round-off (GR4's own run for the truth gr4)
assert np.isfinite(q_true).all() and (q_true >= -1e-6 * np.nanmax(q_true)).all(), "the truth is not a discharge"
if truth == "gr4":
    assert np.all(hidden == 0.0), "the truth gr4 hides nothing"
    assert np.array_equal(basin["q_gr4"].values, basin["q_true"].values), "the truth gr4 is GR4 with the true maps"
else:
    assert np.isfinite(hidden).all() and np.abs(hidden).mean() > 1e-3, f"the hidden flux of {truth!r} is trivial"
    assert (missed["nse"] < 0.999).all(), f"GR4 without the process reproduces the truth: {missed['nse'].to_dict()}"
noise = float(basin.attrs["noise"])
flowing = basin["q_true"].values > 0  # where a river ran dry, the observation is 0 too
spread = np.log(basin["qobs"].values[flowing] / basin["q_true"].values[flowing])
if noise > 0:
    assert abs(np.std(spread) - noise) < 0.2 * noise + 1e-3, f"qobs spreads by {np.std(spread):.4f}, not {noise}"
else:
    assert np.allclose(spread, 0.0, atol=1e-6), "noise 0: qobs must be the truth"
hidden_varies = np.nanstd(hidden_mean.values) > 0  # the truth gr4 hides nothing: no correlation is defined
for (name, v), s in series.items():
    varies = np.nanstd(s.values) > 0 and hidden_varies
    got = correlations["r"][(correlations["model"] == name) & (correlations["correction"] == v.removeprefix("correction_"))]
    assert not varies or np.isfinite(got).all(), f"{name} {v}: a correlation is not finite: {got.tolist()}"
varying_maps = map_scores.dropna(subset=["r"])
assert np.isfinite(varying_maps["r"]).all() and np.isfinite(map_scores["mean ratio"]).all(), map_scores
balances, closures = report.water_balances(hybrids, basin)
for name in hybrids:
    assert hh.closes(closures[name], hybrid.balance_tolerance), f"{name}: {closures[name]}"
print(f"07_known_answer: truth {truth!r}; GR4 with the true maps reaches NSE {missed['nse'].mean():.3f} on the truth "
      f"(mean over {len(gauges)} gauges); {len(hybrids)} hybrids correlated with the hidden flux; "
      f"{len(map_scores)} calibrated maps compared with the true ones")
