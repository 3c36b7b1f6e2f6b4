"""Is a trained model healthy? Six checks of a calibration's result, each with its diagnosis.

A training can end without an error and still be broken: on Lez, a regionalisation network's
bounded outputs saturate (cp pinned at its bound over the whole basin), its gradient vanishes,
and the cost sits far above what the conceptual parent reached. :func:`training_health` looks
for that after the fact, from the result, its history and one run of the trained model:

``saturated parameters``
    the largest share, over the calibrated parameters, of active cells whose value lies within
    0.1 % of the span from a bound (a regionalisation's sigmoid, or a distributed map, pinned);
``saturated corrections``
    a hybrid's network: the share of (cell, step, output) corrections with ``|f| > 0.99`` (its
    tanh saturated: the correction no longer responds, its gradient is ~0);
``vanishing gradient``
    the last |gradient|_inf over the first, when the cost improved by less than 1 % (a
    converged run also ends with a small gradient, after the cost fell: that passes);
``plateau above the parent``
    a hybrid: its best cost over the cost its pre-calibrated parent reached (it starts from the
    parent, so it should never end above it);
``ended above its start``
    the cost of the model the calibration returns (its last iterate, smash's rule for the
    adaptive optimisers; the best one after early stopping or a divergence) over its first
    cost: above 1, the training made the model worse than where it started (a learning rate
    too large for the end of the run);
``unconverged ODE steps``
    gr4_ode / gr4_ude: the share of solved cell-steps whose implicit equation has no root or
    whose Newton stopped unconverged (:func:`hybridhydro.balance.solver_statistics`).

Each row says the value, the limit, whether it passes, and what to try. :func:`hybridhydro.
protocol.train_model` records the table in ``result.options["health"]`` and, when allowed,
restarts a failed network training from another seed (recorded too).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

#: Limits of the checks (see the module's text).
LIMITS = {
    "saturated parameters": 0.9,
    "saturated corrections": 0.25,
    "vanishing gradient": 1e-3,
    "plateau above the parent": 1.05,
    "ended above its start": 1.0,
    "unconverged ODE steps": 0.01,
}

REMEDIES = {
    "saturated parameters": "tighter bounds on that parameter, a smaller learning rate, or another seed",
    "saturated corrections": "a smaller weight_scale or learning rate, or hybrid.input_scaling: hourly",
    "vanishing gradient": "another seed, a larger learning rate, or inputs scaled (hybrid.input_scaling: hourly)",
    "plateau above the parent": "a smaller learning rate, a smaller weight_scale, or more pre-calibration",
    "ended above its start": "a smaller learning rate, a decaying schedule (optimizers.<mapping>.schedule), or early stopping",
    "unconverged ODE steps": "ode_solver='conservative' (it names what it clips), or bounds that keep the stores feasible",
}


def training_health(result, basin: xr.Dataset, simulation: xr.Dataset | None = None) -> pd.DataFrame:
    """The health checks of a :class:`~hybridhydro.calibration.CalibrationResult` on ``basin``.

    ``simulation``: a run of the result with its fluxes (``result.simulate(basin,
    return_fluxes=True)``), made here when not given. Returns one row per check that applies:
    ``value``, ``limit``, ``ok`` (bool), ``where`` (the parameter or output concerned) and
    ``remedy``; ``table["ok"].all()`` is the verdict.
    """
    if simulation is None:
        simulation = result.simulate(basin, return_fluxes=True)
    rows: dict[str, dict] = {}
    rows["saturated parameters"] = _saturated_parameters(result, basin)
    corrections = [v for v in simulation.data_vars if str(v).startswith("correction_")]
    if corrections:
        shares = {v: float(np.nanmean(np.abs(simulation[v].values) > 0.99)) for v in corrections}
        worst = max(shares, key=shares.get)
        rows["saturated corrections"] = {"value": shares[worst], "where": worst.removeprefix("correction_")}
    h = result.history
    if len(h) > 1 and "grad_norm" in h and np.isfinite(h["grad_norm"]).all() and h["grad_norm"].iloc[0] > 0:
        drop = float(h["grad_norm"].iloc[-1] / h["grad_norm"].iloc[0])
        gain = float((h["cost"].iloc[0] - h["cost"].min()) / max(abs(h["cost"].iloc[0]), 1e-12))
        rows["vanishing gradient"] = {"value": drop, "where": f"cost improved {100 * gain:.2f} %",
                                      "fails": drop < LIMITS["vanishing gradient"] and gain < 0.01}
    pre = result.options.get("pre_calibration")
    if pre is not None and np.isfinite(pre.get("final_cost", np.nan)) and pre["final_cost"] > 0:
        ratio = float(h["cost"].min() / pre["final_cost"])
        rows["plateau above the parent"] = {"value": ratio, "where": pre.get("structure", "")}
    if len(h) > 1 and np.isfinite(h["cost"].iloc[0]) and h["cost"].iloc[0] > 0:
        returns_best = "early stopping" in str(result.message) or "returned the controls" in str(result.message)
        returned = float(h["cost"].loc[result.best_iteration] if returns_best else h["cost"].iloc[-1])
        rows["ended above its start"] = {"value": returned / float(h["cost"].iloc[0]),
                                         "where": f"iteration {result.best_iteration if returns_best else h.index[-1]}"}
    if "newton_iterations" in simulation or "ode_root_exists" in simulation:
        from ..balance import solver_statistics

        stats = solver_statistics(simulation)
        worst = max(("no_root", "unconverged"), key=lambda k: stats[k])
        rows["unconverged ODE steps"] = {"value": stats["no_root"] + stats["unconverged"], "where": worst}
    table = {}
    for check, row in rows.items():
        if row is None:
            continue
        limit = LIMITS[check]
        fails = row.pop("fails") if "fails" in row else (row["value"] > limit)
        table[check] = {"value": row["value"], "limit": limit, "ok": not bool(fails), "where": row["where"],
                        "remedy": "" if not fails else REMEDIES[check]}
    columns = ["value", "limit", "ok", "where", "remedy"]  # also when no check applies (an empty table passes)
    return pd.DataFrame([[row[c] for c in columns] for row in table.values()],
                        index=pd.Index(list(table), name="check"), columns=columns).astype({"ok": bool})


def _saturated_parameters(result, basin: xr.Dataset) -> dict | None:
    """The calibrated parameter with the largest share of active cells at a bound."""
    bounds: Mapping = result.options.get("bounds") or {}
    names = [n for n in result.options.get("parameters", []) if n in bounds and n in result.parameters]
    if not names or result.mapping == "uniform":  # one value per parameter: no map to saturate
        return None
    active = basin["active_cell"].transpose("y", "x").values.astype(bool) if "active_cell" in basin else None
    shares = {}
    for n in names:
        lo, hi = map(float, bounds[n])
        v = np.asarray(result.parameters[n], np.float64)
        v = v[active] if active is not None and v.shape == active.shape else v[np.isfinite(v)]
        tol = 1e-3 * (hi - lo)
        shares[n] = float(np.mean((v <= lo + tol) | (v >= hi - tol))) if v.size else 0.0
    worst = max(shares, key=shares.get)
    return {"value": shares[worst], "where": worst}


def health_summary(table) -> str:
    """``"ok"``, or the failed checks with where: ``"saturated parameters (cp)"``.

    ``table``: :func:`training_health`'s table, or its rows as ``result.options["health"]``
    records them (a list of dicts with ``check``); no check at all is ``"ok"``."""
    if isinstance(table, pd.DataFrame):
        rows = [{"check": c, **row} for c, row in table.to_dict("index").items()]
    else:
        rows = list(table or [])
    failed = [f"{row['check']} ({row['where']})" for row in rows if not row["ok"]]
    return "ok" if not failed else "; ".join(failed)
