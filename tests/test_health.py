"""Training health checks: each one passes on a healthy training and fails where it must."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

import hybridhydro as hh
from hybridhydro import protocol
from hybridhydro.calibration import training_health
from hybridhydro.calibration.health import health_summary


@pytest.fixture(scope="module")
def basin():
    return hh.synthetic_basin(nrow=8, ncol=8, ntime=48)


@pytest.fixture(scope="module")
def distributed(basin):
    return hh.calibrate(basin, "gr4-lr", "distributed", None, 3, progress=False)


@pytest.fixture(scope="module")
def hybrid(basin):
    net = hh.FluxCorrectionNet.for_structure("gr4_mlp", hidden=(8,), initializer="he_uniform", scale=0.1, seed=0)
    return hh.calibrate(basin, "gr4_mlp-lr", "distributed", "adam", 3, nn_parameters=net, train_nn=True,
                        learning_rate=0.01, progress=False)


def test_a_healthy_training_passes_every_check(basin, distributed):
    table = training_health(distributed, basin)
    assert set(table.index) == {"saturated parameters", "vanishing gradient", "ended above its start"}
    assert table["ok"].all(), table
    assert health_summary(table) == "ok"


def test_parameters_pinned_at_a_bound_fail(basin, distributed):
    pinned = copy.copy(distributed)
    low = distributed.options["bounds"]["cp"][0]
    pinned.parameters = {**distributed.parameters, "cp": np.where(np.isfinite(distributed.parameters["cp"]), low, np.nan)}
    table = training_health(pinned, basin)
    row = table.loc["saturated parameters"]
    assert (row["ok"], row["where"], row["value"]) == (False, "cp", 1.0)
    assert "tighter bounds" in row["remedy"]
    assert health_summary(table) == "saturated parameters (cp)"


def test_a_vanishing_gradient_fails_only_when_the_cost_did_not_fall(basin, distributed):
    stuck = copy.copy(distributed)
    stuck.history = pd.DataFrame({"cost": [0.8, 0.8, 0.7999], "grad_norm": [1.0, 1e-5, 1e-7]},
                                 index=pd.Index([0, 1, 2], name="iteration"))
    assert not training_health(stuck, basin).loc["vanishing gradient", "ok"]
    converged = copy.copy(stuck)
    converged.history = stuck.history.assign(cost=[0.8, 0.3, 0.2])  # the gradient fell because it converged
    assert training_health(converged, basin).loc["vanishing gradient", "ok"]


def test_a_hybrid_above_its_parent_fails(basin, hybrid):
    table = training_health(hybrid, basin)
    assert "saturated corrections" in table.index and table.loc["saturated corrections", "ok"]
    worse = copy.copy(hybrid)
    best = float(hybrid.history["cost"].min())
    worse.options = {**hybrid.options, "pre_calibration": {"structure": "gr4-lr", "final_cost": best / 2}}
    row = training_health(worse, basin).loc["plateau above the parent"]
    assert not row["ok"] and row["value"] == pytest.approx(2.0)


def test_a_training_that_ends_above_its_start_fails(basin, distributed):
    worse = copy.copy(distributed)
    worse.history = pd.DataFrame({"cost": [0.5, 0.3, 0.6], "grad_norm": [1.0, 0.5, 0.5]},
                                 index=pd.Index([0, 1, 2], name="iteration"))
    worse.best_iteration, worse.message = 1, "maxiter 2 reached"
    row = training_health(worse, basin).loc["ended above its start"]
    assert not row["ok"] and row["value"] == pytest.approx(1.2) and "schedule" in row["remedy"]
    # after early stopping the calibration returns its best iterate: that one is judged
    worse.message = "early stopping: no improvement for 1 iterations"
    assert training_health(worse, basin).loc["ended above its start", "value"] == pytest.approx(0.6)


def test_saturated_corrections_fail(basin, hybrid):
    loud = copy.copy(hybrid)
    loud.nn_parameters = {k: np.asarray(v) * (200.0 if k.startswith("weight") or k.startswith("bias") else 1.0)
                          for k, v in hybrid.nn_parameters.items()}
    row = training_health(loud, basin).loc["saturated corrections"]
    assert not row["ok"] and row["value"] > 0.25, row


def test_unconverged_ode_steps_fail(basin):
    result = hh.calibrate(basin, "gr4_ode-lr", "uniform", None, 1, progress=False)
    sim = result.simulate(basin, return_fluxes=True)
    assert training_health(result, basin, sim).loc["unconverged ODE steps", "ok"]
    broken = sim.copy()
    broken["ode_root_exists"] = xr_zeros_like(sim["newton_iterations"])
    row = training_health(result, basin, broken).loc["unconverged ODE steps"]
    assert not row["ok"] and row["where"] == "no_root" and "conservative" in row["remedy"]


def xr_zeros_like(da):
    return da.copy(data=np.where(np.isfinite(da.values), 0.0, np.nan))


def test_the_protocol_restarts_a_failed_network_training_from_the_next_seed(basin, monkeypatch):
    split = protocol.make_split(basin)
    real = protocol.training_health
    verdicts = []

    def first_seed_fails(result, b, simulation=None):
        table = real(result, b, simulation)
        if not verdicts:  # the first training: declare it saturated
            table.loc["saturated parameters", ["ok", "where"]] = [False, "cp"]
        verdicts.append(bool(table["ok"].all()))
        return table

    monkeypatch.setattr(protocol, "training_health", first_seed_fails)
    settings = {"ann": {"maxiter": 2, "learning_rate": 0.01}}
    result = protocol.train_model(basin, "gr4-ann", split, settings=settings, progress=False, seed=3, health_restarts=2)
    assert [a["seed"] for a in result.options["restarts"]] == [3, 4]
    assert result.options["restarts"][0]["health"] == "saturated parameters (cp)"
    assert all(row["ok"] for row in result.options["health"])
    again = protocol.train_model(basin, "gr4-ann", split, settings=settings, progress=False, seed=4)
    np.testing.assert_array_equal(again.parameters["cp"], result.parameters["cp"])  # the kept one is seed 4's
    # a model without a network is not restarted: its seed changes nothing
    verdicts.clear()
    plain = protocol.train_model(basin, "gr4-distributed", split, settings={"distributed": {"maxiter": 2}},
                                 progress=False, health_restarts=2)
    assert "restarts" not in plain.options and not plain.options["health"][0]["ok"]
    summary = protocol.summary({"gr4-ann": result, "gr4-distributed": plain})
    assert summary.loc["gr4-ann", "health"] == "ok" and summary.loc["gr4-distributed", "health"].startswith("saturated")
    # uniform sbs (no map, no gradient): only the end-above-start check applies, and passes
    uniform = protocol.train_model(basin, "gr4-uniform", split, settings={"uniform": {"maxiter": 1}}, progress=False)
    assert [h["check"] for h in uniform.options["health"]] == ["ended above its start"]
    assert protocol.summary({"u": uniform}).loc["u", "health"] == "ok"
