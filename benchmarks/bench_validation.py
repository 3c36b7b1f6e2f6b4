"""What the input checks cost a run: ``hybridhydro.simulate`` on France with and without them.

Every run is prepared by ``hybridhydro.prepare_run``, which checks the basin once: before the
forcing is read (``hybridhydro.basin.check_run_basin``: variables, units, ``dt``, the time axis)
and on the forcing gathered onto the active cells (``hybridhydro.basin.check_forcing_values``:
two reductions per variable, the per-step maximum and minimum). This benchmark times, on the
bundled France (906 044 active cells, 32 hourly steps) and on Cance (383 cells, 1440 steps):

1. the two checks alone, on the basin and on the forcing a prepared run holds;
2. ``simulate(basin, "gr4-lr")`` (prepare + run + result Dataset), as a user calls it, with the
   checks and with them replaced by no-ops, the two alternating so that a change of load on
   the machine hits both alike.

The goal: the checks add less than 2 % to ``simulate``. The "Input checks (prepare_run)"
section of ``benchmarks/results.md`` is replaced (other sections are kept).

Usage: ``.venv/bin/python benchmarks/bench_validation.py [--repeat N] [--skip-france]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

from _common import load, process_notes, publish, run_header

import numpy as np

SECTION = "## Input checks (prepare_run)"
STRUCTURE = "gr4-lr"
GOAL = 0.02


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _case(name: str, ds, repeat: int, rows: list, notes: list) -> float:
    import hybridhydro as hh
    import hybridhydro.model as model
    from hybridhydro.basin import check_forcing_values, check_run_basin

    inputs = hh.prepare_run(ds, STRUCTURE)
    forcing = {k: np.asarray(v) for k, v in inputs.forcing.items()}
    rows_, cols_ = np.asarray(inputs.plan.rows), np.asarray(inputs.plan.cols)
    times, dt = ds["time"].values, float(ds.attrs["dt"])
    t_structure = _median_time(lambda: check_run_basin(ds), max(repeat, 20))
    t_values = _median_time(lambda: check_forcing_values(forcing, times, dt, rows_, cols_), max(repeat, 20))

    checked = (model._check_basin_structure, model._check_forcing)
    unchecked = (lambda basin: float(basin.attrs["dt"]), lambda *args: None)

    def simulate(pair):
        model._check_basin_structure, model._check_forcing = pair
        try:
            return hh.simulate(ds, STRUCTURE)
        finally:
            model._check_basin_structure, model._check_forcing = checked

    simulate(checked)  # compile once
    with_checks, without = [], []
    for _ in range(repeat):
        for pair, out in ((checked, with_checks), (unchecked, without)):
            t0 = time.perf_counter()
            simulate(pair)
            out.append(time.perf_counter() - t0)
    t_with, t_without = statistics.median(with_checks), statistics.median(without)
    share = (t_structure + t_values) / t_with
    rows.append(f"| {name} | {inputs.ntime} x {inputs.nac} | {t_structure * 1e3:.2f} | {t_values * 1e3:.1f} | "
                f"{t_with:.3f} | {t_without:.3f} | {100 * share:.2f} % | {100 * (t_with / t_without - 1):+.1f} % |")
    notes.append(f"{name}: `simulate` with checks, each call (s): {', '.join(f'{t:.3f}' for t in with_checks)}; "
                 f"without: {', '.join(f'{t:.3f}' for t in without)}.")
    return share


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-france", action="store_true")
    args = parser.parse_args(argv)

    import jax

    import hybridhydro as hh

    load_before = load()
    start = time.perf_counter()
    rows = [
        "| basin | steps x cells | structure check ms | value check ms | `simulate` s, checked | `simulate` s, "
        "no checks | checks / `simulate` | A/B difference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes: list[str] = []
    shares = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cance = hh.read_smash_dataset("Cance", progress=False)
    shares["Cance"] = _case("Cance", cance, args.repeat, rows, notes)
    del cance
    if not args.skip_france:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            france = hh.read_smash_dataset("France", progress=False)
        shares["France"] = _case("France", france, args.repeat, rows, notes)
        del france

    worst = max(shares.values())
    key = "France" if "France" in shares else "Cance"
    goals = [
        f"- Checks add less than {100 * GOAL:g} % to `simulate` on {key}: "
        f"**{'met' if shares[key] < GOAL else 'missed'}** ({100 * shares[key]:.2f} %; worst case here "
        f"{100 * worst:.2f} %)."
    ]
    header = run_header(load_before, start, f"jax {jax.__version__} ({jax.default_backend().upper()})") + (
        f" Medians of {args.repeat} calls after a first (compiling) one. \"checks / `simulate`\" is the two checks "
        "timed alone (medians of 20) over `simulate` with checks: the measure to read. \"A/B difference\" is "
        "`simulate` with the checks over `simulate` with them replaced by no-ops, calls alternating: it includes "
        "the machine's noise, larger than the checks on this shared 2-core machine."
    )
    notes.insert(0, "The value check is two passes per forcing variable (`np.fmax.reduce`, `np.fmin.reduce` over "
                    "the steps, NaN ignored) over the forcing already gathered onto the active cells; it looks again "
                    "only at the steps whose extremes are wrong. The structure check reads attributes and the time "
                    "labels, not the forcing.")
    notes += process_notes(load_before)
    publish(SECTION, header, rows, goals, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
