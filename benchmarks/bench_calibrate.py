"""Time calibrations of gr4-lr on Cance: hybridhydro against hydro-smash, same run, same machine.

Cance (``smash.factory.load_dataset("Cance")``): 2014-09-15 .. 2014-11-14, hourly (1440 steps),
383 active cells, 3 gauges. Both sides minimise smash's default cost, ``1 - NSE`` at the most
downstream gauge (``gauge="dws"``: V3524010) over the whole period, no warm-up, from smash's
default parameters and initial states (``ci`` fitted to the forcing), parameters cp, ct, kexc,
llr within smash's default bounds.

1. Uniform: ``smash.optimize(model, mapping="uniform")`` (its defaults: sbs, maxiter 50)
   against ``hybridhydro.calibrate(basin, "gr4-lr", "uniform")`` (default sbs, maxiter 50);
   ours with L-BFGS-B (``"lbfgsb"``, maxiter 100) for information.
2. Distributed: ``smash.optimize(model, mapping="distributed", optimizer="lbfgsb",
   optimize_options={"termination_crit": {"maxiter": 100}})`` against
   ``hybridhydro.calibrate(basin, "gr4-lr", "distributed", "lbfgsb", maxiter=100)``.

Timed: the calibration call alone (ours: from the call to the returned result, JIT compilation
included; the basin is read once beforehand, timed separately; smash: ``optimize`` on a ``Model``
built beforehand). Ours "excl. compile" takes the compilation out: the first history row's time
(the compilation plus the first value-and-gradient) less one steady iteration (the median gap
between history rows). "time to smash's cost": when our cost first reached smash's final cost,
from the call (the history's seconds since the optimiser started, plus the setup before it and
the wrap-up after it, both taken whole: an upper bound). The NSE of both final models is computed
the same way (float64, observations < 0 or NaN left out) from a simulation of the whole period:
``result.simulate(basin)`` for ours, ``smash.forward_run`` of the optimised model for smash.

Each calibration runs ``--repeat`` times (default 1: smash's distributed calibration takes about a
minute and a half here), alternating smash and ours, with our distributed calibration run before
and after each of smash's (so twice per repeat); the table gives medians. Process CPU times are
reported too for the distributed pair: on a shared machine they do not count the waits for a CPU. The
"Calibration (gr4-lr, Cance)" section of ``benchmarks/results.md`` is replaced (others kept).

Usage: ``.venv/bin/python benchmarks/bench_calibrate.py [--repeat N] [--skip-uniform]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from _common import HERE, load, publish, quiet, run_header

import numpy as np

SECTION = "## Calibration (gr4-lr, Cance)"
STRUCTURE = "gr4-lr"
OUTLET = "V3524010"


def _nse(qs, qo) -> float:
    """Nash-Sutcliffe efficiency in float64, observations < 0 or NaN left out."""
    qs, qo = np.asarray(qs, np.float64), np.asarray(qo, np.float64)
    ok = np.isfinite(qo) & (qo >= 0) & np.isfinite(qs)
    return float(1.0 - np.sum((qs[ok] - qo[ok]) ** 2) / np.sum((qo[ok] - qo[ok].mean()) ** 2))


def _smash_run(model, **kwargs) -> dict:
    import smash

    t0, c0 = time.perf_counter(), time.process_time()
    opt, ret = quiet(lambda: smash.optimize(model, return_options={"cost": True, "n_iter": True},
                                            common_options={"verbose": False}, **kwargs))()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sim = quiet(lambda: smash.forward_run(opt, common_options={"verbose": False}))()
    g = list(sim.mesh.code).index(OUTLET)
    return {"wall": wall, "cpu": cpu, "cost": float(ret.cost), "n_iter": int(ret.n_iter),
            "nse": _nse(sim.response.q[g], sim.response_data.q[g]), "load": load()}


def _ours_run(basin, mapping: str, optimizer: str | None, maxiter: int | None) -> dict:
    from hybridhydro import calibrate

    t0, c0 = time.perf_counter(), time.process_time()
    res = quiet(lambda: calibrate(basin, STRUCTURE, mapping, optimizer, maxiter=maxiter, progress=False))()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    h = res.history
    sim = quiet(lambda: res.simulate(basin))()
    q = sim["q"].sel(gauge=OUTLET).values
    qo = basin["qobs"].sel(gauge=OUTLET).values
    secs = h["seconds"].to_numpy()
    step = float(np.median(np.diff(secs))) if len(secs) > 1 else 0.0
    compile_s = max(float(secs[0]) - step, 0.0)
    return {"wall": wall, "cpu": cpu, "cost": float(h["cost"].min()), "final_cost": float(h["cost"].iloc[-1]),
            "n_iter": int(h.index[-1]), "nse": _nse(q, qo), "compile": compile_s, "step": step,
            "history": h, "message": res.message, "load": load(), "result": res}


def _median(runs: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def _time_to(runs_ours: list[dict], target_cost: float) -> float:
    """Median over our runs of the time from the call until our cost first reached ``target_cost``."""
    times = []
    for r in runs_ours:
        h = r["history"]
        reached = h.index[h["cost"].to_numpy() <= target_cost]
        if len(reached) == 0:
            times.append(np.inf)
            continue
        overhead = r["wall"] - float(h["seconds"].iloc[-1])  # setup before the optimiser + wrap-up
        times.append(float(h.loc[reached[0], "seconds"]) + overhead)
    return float(statistics.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each calibration (default 1)")
    parser.add_argument("--skip-uniform", action="store_true", help="leave the uniform calibrations out")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE.parent))
    import jax
    import smash

    from hybridhydro import read_smash_dataset

    load_before = load()
    t_start = time.perf_counter()
    setup, mesh = smash.factory.load_dataset("Cance")
    t0 = time.perf_counter()
    model = quiet(lambda: smash.Model(setup, mesh))()
    t_model = time.perf_counter() - t0
    t0 = time.perf_counter()
    basin = quiet(lambda: read_smash_dataset("Cance", progress=False))()
    t_read = time.perf_counter() - t0
    assert OUTLET in list(basin["gauge"].values)

    runs: dict[str, list[dict]] = {k: [] for k in ("s_dist", "o_dist", "s_unif", "o_sbs", "o_lbfgsb_u")}
    for _ in range(args.repeat):
        # ours before and after smash's (the long one): a load that drifts weighs on both sides
        runs["o_dist"].append(_ours_run(basin, "distributed", "lbfgsb", 100))
        runs["s_dist"].append(_smash_run(model, mapping="distributed", optimizer="lbfgsb",
                                         optimize_options={"termination_crit": {"maxiter": 100}}))
        runs["o_dist"].append(_ours_run(basin, "distributed", "lbfgsb", 100))
        if not args.skip_uniform:
            runs["s_unif"].append(_smash_run(model, mapping="uniform"))
            runs["o_sbs"].append(_ours_run(basin, "uniform", None, None))
            runs["o_lbfgsb_u"].append(_ours_run(basin, "uniform", "lbfgsb", None))

    rows = []  # (what, smash nse, ours nse, smash s, ours s, ours excl. compile s, iterations smash / ours)

    def row(what, s_key, o_key):
        s, o = runs[s_key], runs[o_key]
        rows.append((what, _median(s, "nse"), _median(o, "nse"), _median(s, "wall"), _median(o, "wall"),
                     _median(o, "wall") - _median(o, "compile"),
                     f"{int(_median(s, 'n_iter'))} / {int(_median(o, 'n_iter'))}"))

    goals, notes = [], []
    if not args.skip_uniform:
        row("uniform: smash sbs vs ours sbs (maxiter 50)", "s_unif", "o_sbs")
        row("uniform: smash sbs vs ours lbfgsb (maxiter 100; information)", "s_unif", "o_lbfgsb_u")
    row("distributed: smash lbfgsb vs ours lbfgsb (maxiter 100)", "s_dist", "o_dist")

    if not args.skip_uniform:
        s_nse, o_nse = _median(runs["s_unif"], "nse"), _median(runs["o_sbs"], "nse")
        goals.append(
            f"- Uniform (sbs) outlet NSE >= smash's: **{'met' if o_nse >= s_nse else 'missed'}** "
            f"(ours {o_nse:.6f}, smash {s_nse:.6f}, difference {o_nse - s_nse:+.1e}); wall time smash / ours "
            f"{_median(runs['s_unif'], 'wall') / _median(runs['o_sbs'], 'wall'):.2f}x."
        )
    s_nse, o_nse = _median(runs["s_dist"], "nse"), _median(runs["o_dist"], "nse")
    s_wall, o_wall = _median(runs["s_dist"], "wall"), _median(runs["o_dist"], "wall")
    o_nocomp = o_wall - _median(runs["o_dist"], "compile")
    t_quality = _time_to(runs["o_dist"], _median(runs["s_dist"], "cost"))
    ok_nse, ok_time = o_nse >= s_nse, o_wall <= s_wall / 5
    goals.append(
        f"- Distributed (lbfgsb, 100 iterations) outlet NSE >= smash's and wall time <= 1/5 of smash's: "
        f"**{'met' if ok_nse and ok_time else 'missed'}**: NSE ours {o_nse:.6f}, smash {s_nse:.6f} "
        f"({o_nse - s_nse:+.1e}, {'met' if ok_nse else 'missed'}); wall time ours {o_wall:.1f} s with compilation "
        f"= smash / {s_wall / o_wall:.2f} ({'met' if ok_time else 'missed'}; the budget was {s_wall / 5:.1f} s), "
        f"{o_nocomp:.1f} s without (smash / {s_wall / o_nocomp:.2f}); our cost reached smash's final cost "
        f"({_median(runs['s_dist'], 'cost'):.6f}) "
        + (f"after {t_quality:.1f} s (smash / {s_wall / t_quality:.2f})." if np.isfinite(t_quality)
           else "never (within the 100 iterations).")
    )
    s_cpu, o_cpu = _median(runs["s_dist"], "cpu"), _median(runs["o_dist"], "cpu")
    goals.append(
        f"- Distributed, process CPU time (less sensitive than wall time to other work on the machine: "
        f"waiting for a CPU is not counted): smash {s_cpu:.1f} s, ours {o_cpu:.1f} s with compilation "
        f"(smash / {s_cpu / o_cpu:.2f})."
    )
    od = runs["o_dist"][-1]
    notes.append(
        f"Distributed, ours: compilation (first history row less one steady iteration) "
        f"{_median(runs['o_dist'], 'compile'):.1f} s, then {_median(runs['o_dist'], 'step') * 1e3:.0f} ms per "
        f"iteration (median; an iteration is one or more value-and-gradient evaluations); final cost "
        f"{od['final_cost']:.6f} (smash {runs['s_dist'][-1]['cost']:.6f}); scipy's message: {od['message']!r}."
    )
    if not args.skip_uniform:
        o = runs["o_sbs"][-1]
        notes.append(
            f"Uniform sbs: cost ours {o['cost']:.6f} after {o['n_iter']} iterations ({o['message']}), smash "
            f"{runs['s_unif'][-1]['cost']:.6f} after {runs['s_unif'][-1]['n_iter']}; ours lbfgsb: "
            f"{runs['o_lbfgsb_u'][-1]['cost']:.6f} after {runs['o_lbfgsb_u'][-1]['n_iter']} iterations "
            f"({runs['o_lbfgsb_u'][-1]['message']}). Our sbs evaluates the cost only (no gradient; one jitted "
            "forward run per evaluation, compiled once); its history counts sweeps over the 4 parameters, "
            "smash's `n_iter` about a quarter of that."
        )
    notes.append(
        f"Not in the calibration times: reading the basin by hybridhydro ({t_read:.2f} s) and building smash's "
        f"`Model` ({t_model:.2f} s). NSE at {OUTLET} over the whole period, from each side's own simulation "
        "of its final parameters."
    )
    notes.append("Load average (1, 5, 15 min) after each calibration: " + "; ".join(
        f"{k} {r['load']}" for k, rs in runs.items() for r in rs))
    busy = max(float(r["load"].split()[0]) for rs in runs.values() for r in rs if r["load"] != "n/a") \
        if load_before != "n/a" else 0.0
    if busy > (os.cpu_count() or 1) * 0.75:
        notes.append(
            f"The machine was shared (load average up to {busy:.1f} on {os.cpu_count()} CPUs): smash's and our "
            "runs were timed one after the other, so a load that changed between them moves the ratios; "
            "read them as +/- ~1.5x."
        )

    table = ["| calibration | smash NSE | ours NSE | smash s | ours s | ours s excl. compile | ratio smash/ours "
             "| iterations smash / ours |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {w} | {sn:.5f} | {on:.5f} | {ss:.2f} | {os_:.2f} | {oc:.2f} | {ss / os_:.2f} | {it} |"
              for w, sn, on, ss, os_, oc, it in rows]

    header = run_header(load_before, t_start, f"jax {jax.__version__} (CPU), hydro-smash {smash.__version__}") + (
        f" {args.repeat} run(s) of each calibration, ours distributed "
        f"{2 * args.repeat} (medians); "
        "cost 1 - NSE at the outlet (V3524010, smash's `gauge=\"dws\"`), whole period, no warm-up. "
        "Our times include JIT compilation except in the \"excl. compile\" column."
    )
    publish(SECTION, header, table, goals, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
