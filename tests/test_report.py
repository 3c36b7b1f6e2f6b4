"""hybridhydro.report: the tables the notebooks show, checked against known answers and the
budget identity, and the comparison's markdown read back."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

import hybridhydro as hh  # noqa: E402
from hybridhydro import protocol, report  # noqa: E402
from hybridhydro.pipeline.params import FigureParams  # noqa: E402
from hybridhydro.structures import NEWTON_MAX_ITERATIONS, SAFEGUARDED_MAX_ITERATIONS  # noqa: E402

RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)


@pytest.fixture(scope="module")
def basin():
    return hh.synthetic_basin(nrow=8, ncol=8, ntime=48, seed=2, ngauge=2)


@pytest.fixture(scope="module")
def runs(basin):
    return {"gr4-lr": hh.simulate(basin, "gr4-lr", **RUN), "gr4_ode-lr": hh.simulate(basin, "gr4_ode-lr", **RUN)}


@pytest.fixture(scope="module")
def budgets(runs, basin):
    return report.water_balances(runs, basin)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# --- figures -----------------------------------------------------------------------------------


def test_figure_saver_names_files_by_stage_and_takes_the_figures_section(tmp_path):
    fig, _ = plt.subplots()
    save = report.figure_saver(tmp_path, "02_forward", FigureParams(dpi=40, format="svg"))
    path = save(fig, "hydrographs")
    assert path == tmp_path / "figures" / "02_forward_hydrographs.svg"
    assert path.read_text().lstrip().startswith("<?xml")
    assert report.figure_saver(tmp_path, "01_basin", {"format": "pdf"})(fig, "mesh").suffix == ".pdf"
    assert report.figure_saver(tmp_path, "01_basin")(fig, "mesh") == tmp_path / "figures" / "01_basin_mesh.png"


# --- water balance -----------------------------------------------------------------------------


def test_balance_table_of_one_run_has_every_unit_and_named_source(budgets, basin):
    balances, _ = budgets
    table = report.balance_table(balances["gr4-lr"])
    assert list(table.index) == [*map(str, basin["gauge"].values), "domain"]
    assert list(table.columns[:6]) == list(report.BUDGET_TERMS)
    assert {"source_impervious", "source_floor", "source_steady", "overflow", "residual", "relative_residual"} <= set(table)
    b = balances["gr4-lr"].sel(unit="domain")
    assert table.loc["domain", "outflow"] == pytest.approx(float(b["outflow"]))
    assert table.loc["domain", "relative_residual"] == pytest.approx(float(b["residual"] / b["rain"]))


def test_balance_table_of_several_runs_adds_their_closure(budgets):
    balances, closures = budgets
    table = report.balance_table(balances, closures)
    assert list(table.index) == ["gr4-lr", "gr4_ode-lr"]
    # a source only one structure has is blank for the other, not zero
    assert np.isnan(table.loc["gr4-lr", "source_solver"]) and np.isfinite(table.loc["gr4_ode-lr", "source_solver"])
    for name, c in closures.items():
        assert table.loc[name, "unexplained / water turned over"] == c["worst"]
        assert table.loc[name, "without a root (share of cell-steps)"] == c["no_root"]
    every = report.balance_table(balances, unit=None)
    assert every.index.names == ["run", "unit"] and len(every) == 2 * 3
    joined = report.balance_table(balances, closures, unit=None)
    assert (joined.xs("gr4_ode-lr")["unexplained / water turned over"] == closures["gr4_ode-lr"]["worst"]).all()
    with pytest.raises(TypeError, match="several named balances"):
        report.balance_table(balances["gr4-lr"], closures)


def test_relative_balance_table_closes_the_budget_in_shares_of_the_rain(budgets):
    balances, _ = budgets
    shares = report.balance_table(balances, relative=True).fillna(0.0)
    # rain = evaporation + outflow - exchange - correction - sources + storage change + residual
    sources = shares[[c for c in shares if c.startswith("source_")]].sum(axis=1)
    total = (shares["evaporation (% of rain)"] + shares["outflow (% of rain)"] - shares["exchange (% of rain)"]
             - shares["correction (% of rain)"] - sources + shares["storage_change (% of rain)"]
             + shares["residual (% of rain)"])
    np.testing.assert_allclose(total.values, 100.0, rtol=1e-6)
    assert "rain (mm)" in shares and (shares["rain (mm)"] > 0).all()


def test_closure_table_names_its_columns(budgets):
    _, closures = budgets
    table = report.closure_table(closures)
    assert table.columns[0] == "unexplained / water turned over"
    assert set(report.CLOSURE_COLUMNS.values()) <= set(table.columns)
    assert "source_solver / rain (largest)" in table
    assert table.loc["gr4_ode-lr", "unexplained / water turned over"] == closures["gr4_ode-lr"]["worst"]


def test_storm_scales_the_rain_only(basin):
    storm = report.storm(basin, 10.0)
    np.testing.assert_allclose(storm["prcp"].values, 10.0 * basin["prcp"].values)
    xr.testing.assert_identical(storm["pet"], basin["pet"])
    assert float(basin["prcp"].sum()) == pytest.approx(float(storm["prcp"].sum()) / 10, rel=1e-6)


# --- the implicit solver -----------------------------------------------------------------------


def fake_ode_run(solver: str, iterations, residuals) -> xr.Dataset:
    it = np.array(iterations, float)[:, None, :]
    res = np.array(residuals, float)[:, None, :]
    return xr.Dataset({"newton_iterations": (("time", "y", "x"), it), "newton_residual": (("time", "y", "x"), res)},
                      attrs={"structure": "zero-gr4_ode-lr", "ode_solver": solver})


def test_newton_statistics_count_to_the_solvers_own_limit():
    limit = NEWTON_MAX_ITERATIONS
    # one cell off the domain (NaN), one step with missing forcing (0), one step stopped at the limit
    run = fake_ode_run("newton", [[1, 2, np.nan], [0, limit, np.nan]], [[1e-9, 3e-8, np.nan], [0.0, 0.5, np.nan]])
    closure = {"unconverged": 0.25, "no_root": 0.5, "several_roots": 0.0}
    stats = report.newton_statistics(run, closure)
    assert stats.name == "gr4_ode-lr"
    assert stats["cell-steps solved"] == 3
    assert stats["mean updates"] == pytest.approx((1 + 2 + limit) / 3)
    assert stats["max updates"] == limit
    assert stats[f"unconverged after {limit} updates (%)"] == 25.0
    assert stats["steps without a root (%)"] == 50.0
    assert stats["largest residual"] == 0.5
    assert stats["largest residual of a converged step"] == 3e-8  # the step at the limit is not converged
    assert report.iteration_limit(run) == NEWTON_MAX_ITERATIONS
    assert report.iteration_limit(fake_ode_run("conservative", [[1]], [[0.0]])) == SAFEGUARDED_MAX_ITERATIONS
    with pytest.raises(ValueError, match="no implicit solver"):
        report.newton_statistics(xr.Dataset(attrs={"structure": "gr4-lr"}), closure)


def test_newton_statistics_follow_the_solvers_constant(monkeypatch):
    """No hard-coded limit: with a solver limited to 3 updates, a step of 3 is unconverged."""
    import hybridhydro.structures

    monkeypatch.setattr(hybridhydro.structures, "NEWTON_MAX_ITERATIONS", 3)
    run = fake_ode_run("newton", [[1, 3]], [[1e-9, 0.25]])
    stats = report.newton_statistics(run, {"unconverged": 0.5, "no_root": 0.0, "several_roots": 0.0})
    assert "unconverged after 3 updates (%)" in stats.index
    assert stats["largest residual of a converged step"] == 1e-9
    assert report.iteration_limit(run) == 3


def test_newton_statistics_of_a_real_run(runs, budgets):
    _, closures = budgets
    stats = report.newton_statistics(runs["gr4_ode-lr"], closures["gr4_ode-lr"])
    active = runs["gr4_ode-lr"]["newton_iterations"].notnull().any("time").values.sum()
    assert 0 < stats["cell-steps solved"] <= runs["gr4_ode-lr"].sizes["time"] * active
    assert 1 <= stats["mean updates"] <= stats["max updates"] <= NEWTON_MAX_ITERATIONS
    assert stats["largest residual of a converged step"] < 1e-4


def test_solver_comparison_against_the_reference(basin):
    net = hh.FluxCorrectionNet.for_structure("gr4_ude", hidden=4, initializer="he_uniform", scale=0.1, seed=0)
    table, solver_runs, reference = report.solver_comparison(basin, "gr4_ude-lr", net, ["newton", "rk4"], substeps=4,
                                                             reference_substeps=16)
    assert list(table.index) == ["newton", "rk4"] and set(solver_runs) == {"newton", "rk4"}
    assert reference.attrs["ode_solver"] == "rk4" and reference.attrs["ode_substeps"] == 16
    gauge = report.outlet(basin)
    error = np.abs(solver_runs["rk4"]["q"].sel(gauge=gauge).values - reference["q"].sel(gauge=gauge).values).max()
    assert table.loc["rk4", "outlet error vs reference, max (m³/s)"] == pytest.approx(float(error))
    assert table.loc["rk4", "outlet error vs reference, max (m³/s)"] < table.loc["newton", "outlet error vs reference, max (m³/s)"]
    assert (table["unexplained / water turned over"] <= 1e-6).all()
    assert table.loc["newton", "mean Newton updates"] >= 1
    assert (table["run time (s)"] > 0).all()


# --- hybrids -----------------------------------------------------------------------------------


def test_network_table_flux_changes_and_correction_sizes(basin, runs):
    net = hh.FluxCorrectionNet.for_structure("gr4_mlp", hidden=4, initializer="he_uniform", scale=0.1, seed=0)
    hybrid = {"gr4_mlp-lr": hh.simulate(basin, "gr4_mlp-lr", nn_parameters=net, **RUN)}
    parents = {"gr4_mlp-lr": runs["gr4-lr"]}
    table = report.network_table(basin, {"gr4_mlp-lr": net}, parents)
    row = table.loc["gr4_mlp-lr"]
    assert row["parent"] == "gr4-lr" and row["zero weights = parent"]
    assert row["weights"] == 4 * 4 + 4 + 4 * 4 + 4  # 4 inputs -> 4 hidden -> 4 corrections
    assert row["network inputs"] == "hp, ht, pn, en"
    changes = report.flux_changes(hybrid, parents, basin)
    pn = changes.loc[("gr4_mlp-lr", "pn")]
    assert pn["change (mm)"] == pytest.approx(pn["hybrid (mm)"] - pn["parent (mm)"])
    assert pn["change (mm)"] == pytest.approx(0.0, abs=1e-4)  # the network acts after interception
    sizes = report.correction_sizes(hybrid)
    assert set(sizes.columns) == {"correction_ps", "correction_es", "correction_split", "correction_exchange"}
    assert ((sizes > 0) & (sizes < 1)).all(axis=None)


# --- calibrated models -------------------------------------------------------------------------


def test_parameter_names_and_ranges_against_the_bounds(basin):
    active = basin["active_cell"].values.astype(bool)
    lo, hi = hh.PARAMETER_BOUNDS["cp"]
    grid = lambda v: np.where(active, np.float32(v), np.nan)  # noqa: E731
    inside = {n: grid(np.mean(hh.PARAMETER_BOUNDS[n])) for n in ("ci", "cp", "ct", "kexc", "llr")}
    at_bound = dict(inside, cp=grid(lo))  # a value at its bound, rounded to float32, is within it
    outside = dict(inside, ct=grid(hh.PARAMETER_BOUNDS["ct"][1] * 1.01))
    results = {"a": SimpleNamespace(structure="gr4-lr", parameters=at_bound),
               "b": SimpleNamespace(structure="gr4-lr", parameters=outside)}
    assert report.parameter_names(results) == ["cp", "ct", "kexc", "llr"]  # ci is not calibrated
    ranges = report.parameter_ranges(results, basin)
    assert ranges.loc[("a", "cp"), "min"] == pytest.approx(lo) and ranges.loc[("a", "cp"), "lower bound"] == lo
    assert ranges.loc[("a", "cp"), "within bounds"]
    assert not ranges.loc[("b", "ct"), "within bounds"]
    assert ranges["within bounds"].sum() == 7
    assert report.parameter_ranges({}, basin).empty


# --- scores and the comparison -----------------------------------------------------------------


@pytest.fixture
def scores():
    rows = []
    for model, base in (("default parameters", 0.1), ("gr4-uniform", 0.6)):
        for k, (scenario, gauge) in enumerate((("calibration", "A"), ("calibration", "B"), ("temporal", "A"),
                                                ("temporal", "B"), ("spatial", "C"), ("spatio-temporal", "C"))):
            rows.append({"model": model, "scenario": scenario, "gauge": gauge, "nse": base + 0.01234 * k,
                         "kge": np.nan if (model, k) == ("gr4-uniform", 5) else base - 0.5})
    return pd.DataFrame(rows)


def test_scenario_means(scores):
    means = report.scenario_means(scores, ["nse"])
    assert list(means.columns.get_level_values(1)) == list(protocol.SCENARIOS)
    assert means.loc["gr4-uniform", ("nse", "calibration")] == pytest.approx(0.6 + 0.01234 / 2)


def test_comparison_is_written_and_read_back_to_three_decimals(scores, tmp_path):
    split = protocol.Split(("2020-01-01", "2020-01-10"), ("2020-01-10", "2020-01-20"), ("A", "B"), ("C",))
    tables = report.write_comparison(scores, split, tmp_path, ["nse", "kge"], case="tiny")
    text = (tmp_path / "comparison.md").read_text()
    # the format the demo's comparison.md has always had
    expected = "\n".join([
        "# Comparison of the models: tiny", "",
        "Calibration period 2020-01-01 .. 2020-01-10, validation period 2020-01-10 .. 2020-01-20; "
        "calibration gauges A, B; pseudo-ungauged gauges C.", "",
        "## NSE", "", protocol.to_markdown(protocol.comparison_table(scores, "nse")), "",
        "## KGE", "", protocol.to_markdown(protocol.comparison_table(scores, "kge")), ""])
    assert text == expected
    read = report.read_comparison(tmp_path / "comparison.md")
    assert set(read) == {"nse", "kge"}
    for metric, table in tables.items():
        assert list(read[metric].index) == list(table.index)
        assert list(read[metric].columns) == [f"{s} {g}" for s, g in table.columns]
        np.testing.assert_allclose(read[metric].values, table.values.round(3), atol=1e-12)
    assert np.isnan(read["kge"].loc["gr4-uniform", "spatio-temporal C"])
    written = pd.read_csv(tmp_path / "comparison_scores.csv")
    np.testing.assert_allclose(written["nse"].values, scores["nse"].values)


# --- basin, events and signatures --------------------------------------------------------------


def test_the_outlet_is_the_gauge_draining_most_whatever_its_place(basin):
    """Nothing takes the first gauge for the outlet (issue 15): the gauges listed upstream first."""
    outlet = report.outlet(basin)
    reordered = basin.isel(gauge=[1, 0])
    assert str(reordered["gauge"].values[0]) != outlet
    assert report.outlet(reordered) == outlet
    assert report.outlet(reordered.drop_vars("area_dln")) == outlet  # the declared areas when not delineated


def test_basin_tables(basin):
    assert report.outlet(basin) == str(basin["gauge"].values[int(np.argmax(basin["area_dln"].values))])
    summary = report.basin_summary(basin)
    assert summary.iloc[:, 0]["active cells"] == int(basin["active_cell"].sum())
    assert summary.iloc[:, 0]["time steps"] == basin.sizes["time"]
    gauges = report.gauge_summary(basin)
    assert list(gauges.index) == [str(g) for g in basin["gauge"].values]
    np.testing.assert_allclose(gauges["peak discharge (m³ s⁻¹)"], basin["qobs"].max("time").values, rtol=1e-3)
    descriptors = report.descriptor_table(basin)
    assert list(descriptors.index) == [str(d) for d in basin["descriptor"].values]
    assert (descriptors["min"] <= descriptors["mean"]).all() and (descriptors["mean"] <= descriptors["max"]).all()


def test_largest_events_keep_the_highest_peak_per_gauge(basin):
    times = pd.DatetimeIndex(basin["time"].values)
    codes = [str(g) for g in basin["gauge"].values]
    q = basin["qobs"].sel(gauge=codes[0]).values
    events = pd.DataFrame({"code": [codes[0], codes[0]], "start": [times[0], times[24]], "end": [times[23], times[47]]})
    largest = report.largest_events(events, basin)
    assert list(largest.index) == [codes[0]]  # no event at the other gauge
    k = 0 if np.nanmax(q[:24]) >= np.nanmax(q[24:]) else 1
    assert largest.loc[codes[0], "start"] == events["start"][k]
    assert largest.loc[codes[0], "peak (m³ s⁻¹)"] == pytest.approx(float(np.nanmax(q)))
    assert report.largest_events(events.iloc[:0], basin).empty


def test_signature_errors_vanish_for_the_observed_discharge(basin):
    perfect = xr.Dataset({"q": basin["qobs"]})
    errors = report.signature_errors({"perfect": perfect}, basin)
    assert list(errors.index) == ["perfect"] and "Crc" in errors
    np.testing.assert_allclose(errors.loc["perfect"].dropna().values, 0.0, atol=1e-6)


def test_networks_table_lists_every_network_with_units_bounds_and_weights():
    import numpy as np

    import hybridhydro as hh
    from hybridhydro import report

    basin = hh.synthetic_basin(nrow=8, ncol=8, ntime=48, dt=10800)
    net = hh.FluxCorrectionNet.for_structure("gr4_mlp", hidden=(8,), initializer="he_uniform", scale=0.1, seed=0)
    hybrid = hh.calibrate(basin, "gr4_mlp-lr", "distributed", "adam", 1, nn_parameters=net, train_nn=True,
                          learning_rate=0.01, progress=False, nn_input_scaling="hourly")
    ann = hh.calibrate(basin, "gr4-lr", "ann", None, 1, progress=False)
    table = report.networks_table({"gr4_mlp-distributed": hybrid, "gr4-ann": ann, "gr4-uniform":
                                   hh.calibrate(basin, "gr4-lr", "uniform", None, 1, progress=False)})
    assert list(table.index) == ["gr4_mlp-distributed: flux correction", "gr4-ann: regionalisation"]
    flux = table.loc["gr4_mlp-distributed: flux correction"]
    assert flux["inputs"] == ("hp (1: fraction of capacity), ht (1: fraction of capacity), pn (mm h-1, as a rate), "
                              "en (mm h-1, as a rate)")
    assert flux["layers"] == "4 → 8 (silu) → 4 (tanh)" and flux["bounds"] == "(-1, 1)"
    assert flux["weights"] == sum(np.size(v) for v in hybrid.nn_parameters.values()) == 4 * 8 + 8 + 8 * 4 + 4
    regional = table.loc["gr4-ann: regionalisation"]
    assert "kexc (mm / (3 h))" in regional["outputs"] and "cp [1e-06, 1000]" in regional["bounds"]
    assert regional["layers"].endswith("4 (tanh, scaled to the bounds)")
    assert regional["weights"] > 0


def test_sbs_summary_counts_sub_iterations_beside_maxiter(basin):
    """smash's sbs counts maxiter in outer iterations of one sub-iteration per control: the summary
    says sub-iterations, and the stop message how they add up (issue 15: "iterations 40" beside
    "maxiter 10" read as a bug)."""
    from hybridhydro.calibration import calibrate

    result = calibrate(basin, "gr4-lr", "uniform", "sbs", 2, gauges="all", parameters=("cp", "ct", "kexc"),
                       progress=False)
    assert result.message == "maxiter 2 reached (6 sub-iterations: 2 × 3 controls)"
    row = protocol.summary({"m": result}).loc["m"]
    assert row["iterations"] == "6 sub-iterations (at most maxiter × 3 controls)"
