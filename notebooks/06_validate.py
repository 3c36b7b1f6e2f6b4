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
# Injected by `python -m hybridhydro run params/<case>.yaml`; these values serve interactive use.
case = "interactive"
output_dir = "runs/interactive"
calibration_models = ["gr4-uniform", "gr4-distributed"]
calibration_routing = "lr"
calibration_metrics = ["nse", "kge"]
forward_balance_tolerance = 1e-6
hybrid_balance_tolerance = 1e-6
figures_dpi = 120
figures_format = "png"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import hybridhydro as hh
from hybridhydro import plotting, protocol
from hybridhydro.signatures import segment_events, signatures

output_dir = Path(output_dir)
models_dir = output_dir / "models"
RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)


def save(fig, name):
    """Save a figure of this stage into the run's figures/ folder."""
    return plotting.save_figure(fig, output_dir, f"06_validate_{name}", dpi=figures_dpi, format=figures_format)


basin = hh.read_basin(output_dir / "basin.nc")
active = basin["active_cell"].values.astype(bool)
split = protocol.Split.load(output_dir / "split.json")  # written by stage 03
display(split.describe())
results = protocol.load_models(models_dir, calibration_models)
labels = {name: protocol.ModelName.parse(name).label for name in results}
pd.DataFrame({name: {"model": labels[name], "structure": r.structure, "optimizer": r.optimizer,
                     "iterations": int(r.history.index.max()), "final cost": r.history["cost"].iloc[-1]}
              for name, r in results.items()}).T

# %% [markdown]
# ## Scores in every scenario

# %%
sims = {name: r.simulate(basin, **RUN) for name, r in results.items()}
sims_with_default = {"default parameters": hh.simulate(basin, f"gr4-{calibration_routing}"), **sims}
scores = protocol.score(sims_with_default, basin, split, calibration_metrics)
scores.to_csv(output_dir / "comparison_scores.csv", index=False)
tables = {m: protocol.comparison_table(scores, m) for m in calibration_metrics}
report = [f"# Comparison of the models: {case}", "",
          f"Calibration period {split.calibration_period[0]} .. {split.calibration_period[1]}, validation period "
          f"{split.validation_period[0]} .. {split.validation_period[1]}; calibration gauges "
          f"{', '.join(split.calibration_gauges)}; pseudo-ungauged gauges {', '.join(split.validation_gauges) or '(none)'}.",
          ""]
for m, table in tables.items():
    report += [f"## {m.upper()}", "", protocol.to_markdown(table), ""]
(output_dir / "comparison.md").write_text("\n".join(report))
for m, table in tables.items():
    print(m.upper())
    display(table.round(3))

# %%
for m, table in tables.items():
    fig = plotting.plot_scores(table, m, vmin=0.0 if m != "kge" else -0.41, vmax=1.0)
    fig.axes[0].set_title(f"{m.upper()} per model, scenario and gauge")
    _ = save(fig, f"scores_{m}")

# %% [markdown]
# ### Mean score per scenario
#
# The mean over the gauges of each scenario: how much a model loses out of its calibration
# period (temporal), away from its gauges (spatial), and both.

# %%
means = scores.groupby(["model", "scenario"], sort=False)[calibration_metrics].mean().unstack("scenario")
means = means.reindex(columns=[s for s in protocol.SCENARIOS if s in means.columns.get_level_values(1)], level=1)
means.round(3)

# %% [markdown]
# ## Flood events
#
# The events are segmented from the observed discharge at each gauge (smash's hydrograph
# segmentation: peaks above the 99.5 % quantile, bounded by rain and recession). The largest
# events, with every model, show where the models differ most: peaks and recessions.

# %%
dt = float(basin.attrs["dt"])
rain = plotting.catchment_mean(basin, "prcp")
events = segment_events(basin["qobs"].values, rain.values, dt, times=basin["time"].values,
                        codes=[str(g) for g in basin["gauge"].values])
print(f"{len(events)} events over {basin.sizes['gauge']} gauges")
display(events.head(12))

# %%
shown = []
for gauge in [str(g) for g in basin["gauge"].values]:
    ev = events[events["code"] == gauge] if len(events) else events
    if len(ev):
        peak = [float(basin["qobs"].sel(gauge=gauge, time=slice(a, b)).max()) for a, b in zip(ev["start"], ev["end"])]
        shown.append((gauge, ev.iloc[int(np.nanargmax(peak))]))
if shown:
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 3.3 * len(shown)), layout="constrained", squeeze=False)
    for ax, (gauge, ev) in zip(axes[:, 0], shown):
        plotting.plot_model_hydrographs(sims, basin, gauge, start=ev["start"], end=ev["end"], ax=ax)
        where = "pseudo-ungauged" if gauge in split.validation_gauges else "calibration gauge"
        ax.set_title(f"{gauge} ({where}): largest observed event, {ev['start']} .. {ev['end']}", loc="left",
                     fontsize="medium")
    _ = save(fig, "flood_events")
else:
    print("no event found in the observed series (too short a run, or no peak above the threshold)")

# %% [markdown]
# ## Signatures
#
# Continuous signatures of each model's discharge against the observed ones, over the whole
# run: runoff coefficients (`Crc`, quick flow `Crchf`, base flow `Crclf`) and flow quantiles
# (`Cfp*`); the table gives the relative error (simulated / observed − 1) averaged over gauges.

# %%
observed = signatures(basin["qobs"], basin, kinds=("continuous",))["cont"].set_index("code")
errors = {}
for name, sim in sims.items():
    simulated = signatures(sim["q"].sel(gauge=basin["gauge"]), basin, kinds=("continuous",))["cont"].set_index("code")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = simulated / observed.where(observed > 0) - 1.0
    errors[name] = rel.mean()
signature_errors = pd.DataFrame(errors).T
signature_errors.round(3)

# %% [markdown]
# ## Parameter maps of every model
#
# One colour scale per parameter across the models: uniform, distributed, regionalised and
# hybrid calibrations of the same basin side by side.

# %%
maps = {name: r.parameter_maps() for name, r in results.items()}
shown_params = [n for n in ("cp", "ct", "kexc", "llr", "akw", "bkw") if any(n in m for m in maps.values())]
fig = plotting.plot_parameter_maps(maps, shown_params, basin, width=2.6)
_ = save(fig, "parameter_maps")

# %% [markdown]
# ## Water balance of every model
#
# Over the whole run and the whole domain (mm): where each model sends the rain. The hybrids'
# `correction` is the water their network adds or removes (gr4_ude's rain correction); each
# non-physical source (`source_*`: smash's impervious sink, store floor and steady outflow, an
# implicit step's unsolved equation) has its own column, beside the unexplained residual.

# %%
balances = {name: hh.water_balance(sim, basin) for name, sim in sims.items()}
budgets = {name: b.sel(unit="domain") for name, b in balances.items()}
terms = ["rain", "evaporation", "outflow", "exchange", "correction", "storage_change"]
named = sorted({str(v) for b in budgets.values() for v in b.data_vars if str(v).startswith("source_")})
columns = terms + named + ["overflow", "residual"]
budget_table = pd.DataFrame({name: b[[t for t in columns if t in b]].to_pandas() for name, b in budgets.items()}).T
budget_table = budget_table[[c for c in columns if c in budget_table]]
closure = pd.DataFrame({name: protocol.balance_closure(sim, basin, balances[name]) for name, sim in sims.items()}).T
budget_table["unexplained / water turned over"] = closure["worst"]
for key in ("unconverged", "no_root", "several_roots", "above_capacity"):
    budget_table[f"{key.replace('_', ' ')} (share of cell-steps)"] = closure[key]
display(budget_table.style.format("{:.4g}"))
fig, ax = plt.subplots(figsize=(9, 0.45 * len(budgets) + 1.4), layout="constrained")
left = np.zeros(len(budgets))
for term in ("evaporation", "outflow", "storage_change"):
    values = budget_table[term].values
    ax.barh(list(budgets), values, left=left, label=term)
    left = left + values
ax.barh(list(budgets), -budget_table["exchange"].values, left=left, label="exchange (loss > 0)", alpha=0.6)
ax.axvline(float(budget_table["rain"].iloc[0]), color="k", ls="--", label="rain")
ax.set_xlabel("water over the run, domain (mm)")
ax.set_ylabel("model")
ax.legend(fontsize="small", loc="lower right")
_ = save(fig, "water_balances")

# %% [markdown]
# ## What must hold

# %%
expected = {(m, s, g) for m in sims_with_default for s in protocol.SCENARIOS for g in split.scenario(s)[1]}
assert set(zip(scores["model"], scores["scenario"], scores["gauge"])) == expected, "a score is missing"
for metric in calibration_metrics:
    values = scores[metric].values
    assert np.all(np.isfinite(values)), f"non-finite {metric}"
calib = scores[scores["scenario"] == "calibration"].groupby("model")["nse"].mean()
assert calib.drop("default parameters").max() >= calib["default parameters"] - 1e-6, calib
for name, sim in sims.items():
    tol = hybrid_balance_tolerance if protocol.ModelName.parse(name).hybrid else forward_balance_tolerance
    c = closure.loc[name]
    assert protocol.closes(c, tol), f"{name}: the balance leaves {c['worst']:.2e} of the water turned over, unexplained"
# what was written is the table scored here: read back, every score equal
written = pd.read_csv(output_dir / "comparison_scores.csv")
assert len(written) == len(scores) and np.allclose(written[calibration_metrics].values,
                                                    scores[calibration_metrics].values, equal_nan=True), written
assert all(name in (output_dir / "comparison.md").read_text() for name in sims), "a model is missing from comparison.md"
print(f"{len(sims)} models scored in {scores['scenario'].nunique()} scenarios; table in {output_dir / 'comparison.md'}")
