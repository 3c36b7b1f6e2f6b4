"""Run every benchmark in this folder (bench_*.py), each in its own process.

Each benchmark times hybridhydro against hydro-smash in the same run on this machine, prints
its table and updates its own section of benchmarks/results.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"results: {HERE / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
