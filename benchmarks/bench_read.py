"""Time reading the Cance dataset: hybridhydro against hydro-smash, in the same run.

* ours: ``hybridhydro.io.read_smash_dataset("Cance", progress=False)``: setup, flow directions
  and mesh, 1440 hourly rain rasters, daily interannual PET, qobs, descriptors, basin means;
* smash: ``smash.Model(setup, mesh)`` with ``setup, mesh = smash.factory.load_dataset("Cance")``
  (the mesh comes precomputed from the package; the Model reads the same inputs).

Each is run once to warm the file cache, then ``--repeat`` times (default 5); the table gives
the median and the ratio. The "Reading Cance" section of ``benchmarks/results.md`` is replaced
(other sections are kept).

Usage: ``.venv/bin/python benchmarks/bench_read.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone

from _common import HERE, RESULTS, machine, quiet, update_results

SECTION = "## Reading Cance"


def _timed(fn, repeat: int) -> list[float]:
    fn()  # warm-up: file cache, imports
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times








def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions of each reader (default 5)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE.parent))
    import smash

    from hybridhydro.io import read_smash_dataset

    setup, mesh = smash.factory.load_dataset("Cance")
    ours = _timed(quiet(lambda: read_smash_dataset("Cance", progress=False)), args.repeat)
    theirs = _timed(quiet(lambda: smash.Model(setup, mesh)), args.repeat)
    ds = read_smash_dataset("Cance", progress=False)

    m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
    rows = [
        ("hybridhydro `read_smash_dataset(\"Cance\")`", m_ours, min(ours)),
        ("smash `Model(setup, mesh)`", m_theirs, min(theirs)),
    ]
    table = ["| reader | median (s) | best (s) |", "|---|---:|---:|"]
    table += [f"| {name} | {med:.3f} | {best:.3f} |" for name, med, best in rows]
    table.append(f"| **ratio ours / smash** | **{m_ours / m_theirs:.2f}** | {min(ours) / min(theirs):.2f} |")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join(
        [
            SECTION,
            "",
            f"{stamp}; {machine()}; {args.repeat} timed runs after one warm-up, median.",
            "",
            f"Cance: {ds.sizes['time']} hourly steps, {ds.sizes['y']} x {ds.sizes['x']} cells, {ds.sizes['gauge']} gauges, "
            f"{ds.sizes['descriptor']} descriptors. Ours includes reading the flow directions and building the mesh; "
            "smash gets its mesh precomputed from `load_dataset`.",
            "",
            *table,
            "",
        ]
    )
    print("\n".join(table))
    update_results(SECTION, section)
    print(f"updated {RESULTS} ({SECTION!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
