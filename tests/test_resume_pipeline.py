"""A run interrupted inside a calibration and resumed gives the same table as one that was not.

The real notebooks on a tiny synthetic case (stages 01, 03, 06): about two minutes, so it is in
``make test-slow``. The same guarantee is checked in seconds at the level of the protocol in
tests/test_protocol_checkpoints.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from hybridhydro.__main__ import main

pytestmark = pytest.mark.slow

CASE = {
    "case": "tiny",
    "basin": {"source": "synthetic", "synthetic": {"nrow": 8, "ncol": 8, "ntime": 48, "seed": 0, "ngauge": 2}},
    "figures": {"dpi": 30},
    "stages": ["01_basin", "03_calibrate", "06_validate"],
    "calibration": {"models": ["gr4-uniform", "gr4-distributed"],
                    "optimizers": {"uniform": {"maxiter": 3}, "distributed": {"maxiter": 8}}},
}


def test_an_interrupted_and_resumed_run_gives_the_same_table(tmp_path):
    case = tmp_path / "tiny.yaml"
    case.write_text(yaml.safe_dump(CASE))
    assert main(["run", str(case), "--output-root", str(tmp_path / "ref"), "--no-progress"]) == 0

    out = tmp_path / "cut" / "tiny"
    command = [sys.executable, "-m", "hybridhydro", "run", str(case), "--output-root", str(tmp_path / "cut"),
               "--no-progress"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        # inside the second calibration, after a few of its iterations were checkpointed
        while not (out / "checkpoints" / "gr4-distributed.npz").exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "interrupted in stage 03_calibrate" in stderr and "--resume" in stderr
    assert not (out / "comparison_scores.csv").exists()

    assert main(["run", str(case), "--output-root", str(tmp_path / "cut"), "--no-progress", "--resume"]) == 0
    ref = pd.read_csv(tmp_path / "ref" / "tiny" / "comparison_scores.csv")
    cut = pd.read_csv(out / "comparison_scores.csv")
    pd.testing.assert_frame_equal(cut, ref, check_exact=True)
    for model in CASE["calibration"]["models"]:
        with xr.open_dataset(tmp_path / "ref" / "tiny" / "models" / model / "parameters.nc") as a, \
                xr.open_dataset(out / "models" / model / "parameters.nc") as b:
            for name in a.data_vars:
                np.testing.assert_array_equal(a[name].values, b[name].values)
