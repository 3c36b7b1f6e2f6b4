"""What every benchmark here shares: quiet runs of smash, the machine's description, results.md."""

from __future__ import annotations

import contextlib
import io
import os
import platform
import re
import statistics
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.md"
_HEADER = "# Benchmarks\n\nhybridhydro against hydro-smash, timed in the same run on the same machine.\n"


def quiet(fn):
    """``fn`` wrapped so that its stdout/stderr (smash's progress bars) and warnings are swallowed."""

    def run():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()

    return run


def block(out):
    """``jax.block_until_ready(out)``: a timed JAX call ends when its results exist."""
    import jax

    return jax.block_until_ready(out)


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(first-call seconds, median of ``repeat`` later calls, last result)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), out


def machine() -> str:
    """CPU model, logical CPUs, OS and Python of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def load() -> str:
    """The 1, 5 and 15 minute load averages ("n/a" where unknown)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def run_header(load_before: str, started: float, software: str = "") -> str:
    """The first sentence of a results section: when (UTC), the machine, ``software`` (versions),
    the load average before and after, and the benchmark's wall time since ``started``
    (:func:`time.perf_counter`), e.g. ``"2026-11-30 16:30 UTC; <machine>; jax 0.10 (CPU); load
    average 0.5 0.4 0.3 before, 1.9 1.2 0.7 after; total benchmark time 312 s."``."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = f"{software}; " if software else ""
    return (f"{stamp}; {machine()}; {versions}load average {load_before} before, {load()} after; "
            f"total benchmark time {time.perf_counter() - started:.0f} s.")


def process_notes(load_before: str) -> list[str]:
    """The notes every benchmark ends with: the process's peak memory, and a warning when the
    machine was shared (a load average above its CPU count before or after the run)."""
    notes = []
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        notes.append(f"Peak resident memory of the benchmark process: {peak:.2f} GiB.")
    except ImportError:
        pass
    loads = [float(x.split()[0]) for x in (load_before, load()) if x != "n/a"]
    busy = max(loads, default=0.0)
    if busy > (os.cpu_count() or 1):
        notes.append(
            f"The machine was shared (load average {busy:.1f} on {os.cpu_count()} CPUs): repeated runs here "
            "have moved individual medians by up to ~1.8x; read the ratios as +/- that."
        )
    return notes


def update_results(title: str, section: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section headed ``title`` in ``path``, keeping the other sections."""
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def publish(title: str, header: str, table: list[str], goals: list[str], notes: list[str], path: Path = RESULTS) -> None:
    """Print a benchmark's table, goals and notes, and write them as its section of results.md.

    ``header`` is the paragraph under the title (when, where, how it was timed); ``notes`` are
    written as a bullet list.
    """
    section = "\n".join([title, "", header, "", *table, "", *goals, "", *[f"- {n}" for n in notes], ""])
    print("\n".join(table))
    print("\n".join(goals))
    print("\n".join(notes))
    update_results(title, section, path)
    print(f"updated {path} ({title!r})")
