"""JAX's persistent compilation cache: on by default, where the environment says, off on request."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, hybridhydro as hh
basin = hh.synthetic_basin(nrow=6, ncol=6, ntime=24)
hh.simulate(basin, "gr4_ode-lr")
print(json.dumps(str(hh.compilation_cache_directory())))
"""


def _probe(tmp_path, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("HYBRIDHYDRO_JAX_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, "XDG_CACHE_HOME": str(tmp_path / "xdg"), **env},
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_cache_defaults_to_the_user_cache_folder_and_fills(tmp_path):
    where = _probe(tmp_path)
    assert where == str(tmp_path / "xdg" / "hybridhydro" / "jax")
    assert any((tmp_path / "xdg" / "hybridhydro" / "jax").iterdir()), "no compiled kernel was stored"


def test_the_environment_chooses_the_folder_or_turns_it_off(tmp_path):
    assert _probe(tmp_path, HYBRIDHYDRO_JAX_CACHE=str(tmp_path / "mine")) == str(tmp_path / "mine")
    assert any((tmp_path / "mine").iterdir())
    assert _probe(tmp_path, HYBRIDHYDRO_JAX_CACHE="off") == "None"
    assert not (tmp_path / "xdg" / "hybridhydro").exists()
    # JAX's own setting is left as the user set it
    assert _probe(tmp_path, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax")) == str(tmp_path / "jax")
