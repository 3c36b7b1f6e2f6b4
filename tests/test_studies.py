"""The referees' studies (hybridhydro.studies): the solvers in training from one start, the
cumulative budget that closes at every step, and the data-flow diagrams of every configuration."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import hybridhydro as hh  # noqa: E402
from hybridhydro import protocol, studies  # noqa: E402
from hybridhydro.structures import get_module  # noqa: E402

RUN = dict(return_states=True, return_fluxes=True, return_discharge_field=True)


@pytest.fixture(scope="module")
def basin():
    return hh.synthetic_basin(nrow=8, ncol=8, ntime=60, seed=0, ngauge=2)


@pytest.fixture(scope="module")
def network():
    return hh.FluxCorrectionNet.for_structure("gr4_ude", hidden=(8,), initializer="he_uniform", scale=0.3, seed=1)


# --- the solver study ----------------------------------------------------------------------------


def test_solver_study_one_row_per_solver_from_one_start(basin, network):
    split = protocol.make_split(basin)
    start = {"parameters": {"cp": 200.0, "ct": 50.0, "kexc": 0.0, "llr": 30.0}, "nn_parameters": network.weights()}
    start["parameters"] = {k: np.full((basin.sizes["y"], basin.sizes["x"]), v, np.float32)
                           for k, v in {"ci": 1.0, **start["parameters"]}.items()}
    study = studies.solver_training_study(basin, split, solvers=("newton", "rk4:2"), maxiter=2, start=start,
                                          reference=("rk4", 4))
    table, curves = study
    assert list(table.index) == ["newton", "rk4 ×2"]
    assert list(table.columns) == list(studies.STUDY_COLUMNS)
    assert table["start fingerprint"].nunique() == 1
    assert (table["iterations"] == 2).all()
    assert set(curves["solver"]) == set(table.index) and {"iteration", "cost", "validation_cost"} <= set(curves)
    # the first cost of each solver is the cost of the common start under that solver
    for label, (solver, substeps) in zip(table.index, [("newton", 1), ("rk4", 2)]):
        sim = hh.simulate(basin, "gr4_ude-lr", start["parameters"], nn_parameters=start["nn_parameters"],
                          ode_solver=solver, ode_substeps=substeps)
        nse = float(hh.evaluate(sim["q"].sel(gauge=list(split.calibration_gauges)), basin, "nse",
                                split.calibration_period)["nse"].mean())
        assert table.loc[label, "initial cost"] == pytest.approx(1.0 - nse, rel=1e-4, abs=1e-5)
    # ... and the two solvers solve the same ODE: their starting costs differ by discretisation only
    first = table["initial cost"]
    assert abs(first.iloc[0] - first.iloc[1]) <= 0.05 * abs(first.iloc[0])
    assert np.isnan(table.loc["newton", "unstable explicit steps (%)"])
    assert 0.0 <= table.loc["rk4 ×2", "unstable explicit steps (%)"] <= 100.0
    assert table.loc["rk4 ×2", "mean Newton updates"] == 0.0 and table.loc["newton", "mean Newton updates"] >= 1.0
    assert np.isfinite(table[["calibration NSE", "temporal NSE", "temporal NSE, reference solver",
                              "s / iteration (median)", "solver source (mm)"]].to_numpy(float)).all()
    assert set(study.results) == set(study.runs) == set(table.index)
    fig = studies.plot_solver_study(curves, table)
    assert fig.axes[0].get_ylabel().startswith("cost") and fig.axes[0].get_xlabel() == "iteration"
    plt.close(fig)


def test_solvers_are_read_and_refused():
    assert studies.parse_solver("rk4:16") == ("rk4", 16)
    assert studies.parse_solver(("newton", 1)) == ("newton", 1)
    assert studies.parse_solver("implicit") == ("implicit", 1)
    assert studies.solver_label("rk4", 16) == "rk4 ×16" and studies.solver_label("newton", 3) == "newton"
    for bad in ("euler", "rk4:0", "rk4:x", ("rk4",)):
        with pytest.raises(ValueError):
            studies.parse_solver(bad)


# --- the cumulative budget -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ude_run(basin, network):
    return hh.simulate(basin, "gr4_ude-lr", {"kexc": 1.5}, {"ht": 0.6}, nn_parameters=network, **RUN)


def test_cumulative_budget_closes_at_every_step(basin, ude_run):
    b = studies.cumulative_budget(ude_run, basin, points=12)
    assert len(b) == 13 and (b.iloc[0] == 0).all()  # the zero row at the start, then 12 cuts
    assert b.index[-1] == ude_run["time"].values[-1]
    terms = b.drop(columns="residual")
    np.testing.assert_allclose(terms.sum(axis=1), b["residual"], rtol=0, atol=1e-9)
    turnover = terms.abs().max(axis=1)
    assert (b["residual"].abs() <= 1e-6 * turnover.max()).all(), b["residual"]
    # a budget that left a term out would not close: each real term is far above the residual
    for term in ("correction", "exchange", "evaporation", "outflow"):
        assert abs(terms.drop(columns=term).sum(axis=1).iloc[-1]) > 1e3 * abs(b["residual"].iloc[-1]) + 1e-3, term
    # the last row is the budget of the whole run, by the same function, signed
    whole = hh.water_balance(ude_run, basin).sel(unit="domain")
    for term, sign in (("rain", 1), ("evaporation", -1), ("outflow", -1), ("exchange", 1), ("correction", 1),
                       ("storage_change", -1), ("source_solver", 1)):
        assert b[term].iloc[-1] == pytest.approx(sign * float(whole[term]), rel=1e-12, abs=1e-12), term
    assert (np.diff(b["rain"].to_numpy()) >= 0).all() and b["correction"].abs().iloc[-1] > 1e-3
    assert b.attrs["unit"] == "domain" and b.attrs["units"] == "mm"


def test_cumulative_budget_of_a_gauge_and_of_a_conservative_network(basin):
    gauge = str(basin["gauge"].values[1])
    net = hh.FluxCorrectionNet.for_structure("gr4_mlp", hidden=(8,), initializer="he_uniform", scale=0.3, seed=2)
    run = hh.simulate(basin, "gr4_mlp-lr", nn_parameters=net, **RUN)
    b = studies.cumulative_budget(run, basin, gauge=gauge, points=5)
    whole = hh.water_balance(run, basin).sel(unit=gauge)
    assert b["outflow"].iloc[-1] == pytest.approx(-float(whole["outflow"]), rel=1e-12)
    assert (b["correction"] == 0).all()  # the flux corrections move water, they do not create it
    with pytest.raises(ValueError, match="state series"):
        studies.cumulative_budget(hh.simulate(basin, "gr4-lr", return_fluxes=True), basin)
    with pytest.raises(ValueError, match="not one of the run's gauges"):
        studies.cumulative_budget(run, basin, gauge="nowhere")
    fig = studies.plot_cumulative_budgets({"gr4_mlp": b})
    assert "mm" in fig.axes[0].get_ylabel()
    plt.close(fig)


# --- the data-flow diagrams ----------------------------------------------------------------------

HYDROLOGIES = ("gr4", "gr4_mlp", "gr4_ode", "gr4_ude")
MAPPINGS = ("uniform", "distributed", "ann", "cnn")


def _texts(ax) -> str:
    return " ".join(t.get_text() for t in ax.texts) + " " + ax.get_title()


def test_every_configuration_is_drawn_with_its_network():
    fig = studies.dataflow_grid(HYDROLOGIES, MAPPINGS)
    try:
        assert len(fig.axes) == len(HYDROLOGIES) * len(MAPPINGS)
        for k, ax in enumerate(fig.axes):
            hydrology, mapping = HYDROLOGIES[k // len(MAPPINGS)], MAPPINGS[k % len(MAPPINGS)]
            text = _texts(ax)
            module = get_module(hydrology)
            assert f"({hydrology}-lr, {mapping})" in text
            assert len(ax.patches) >= 9  # inputs, mapping, cell, stores, routing, discharge, cost, observations
            if module.hybrid:
                assert "correction network" in text
                assert all(name in text for name in module.nn_inputs + module.nn_outputs), (hydrology, text)
            else:
                assert "correction network" not in text
            assert ("Newton" in text) == (hydrology in ("gr4_ode", "gr4_ude"))
            assert ("not used" in text) == (mapping not in ("ann", "cnn"))
            assert all(p in text for p in hh.calibrated_parameters(f"{hydrology}-lr"))
        fig.canvas.draw()  # lays out every text without error
    finally:
        plt.close(fig)
    ax = studies.dataflow_diagram("gr4_ude", "distributed", routing="kw", hidden=(4, 4))
    assert "routing kw" in _texts(ax) and "MLP 4–4–4–4" in _texts(ax)
    plt.close(ax.figure)
    with pytest.raises(ValueError):
        studies.dataflow_diagram("gr4", "nowhere")


def test_markdown_table():
    import pandas as pd

    text = studies.markdown_table(pd.DataFrame({"a": [1.23456, np.nan], "b": ["x|y", "z"]},
                                               index=pd.Index(["r1", "r2"], name="row")), 2)
    lines = text.splitlines()
    assert lines[0] == "| row | a | b |" and lines[2] == "| r1 | 1.23 | x\\|y |" and lines[3].startswith("| r2 | – |")
