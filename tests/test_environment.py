"""environment.yml (conda users) must list the same packages, with the same pins, as pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Tools of the conda environment itself, not packages of the project.
CONDA_ONLY = {"python", "pip"}


def _split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name, match.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return dict(_split(r) for r in reqs)


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    reqs: list[str] = []
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            reqs += entry.get("pip", [])
        else:
            reqs.append(entry)
    pairs = dict(_split(r) for r in reqs)
    return {k: v for k, v in pairs.items() if k not in CONDA_ONLY}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    py, env = _pyproject(), _environment()
    assert sorted(set(py) - set(env)) == [], "in pyproject.toml but not in environment.yml"
    assert sorted(set(env) - set(py)) == [], "in environment.yml but not in pyproject.toml"


def test_environment_yml_pins_match_pyproject():
    py, env = _pyproject(), _environment()
    differing = {name: (py[name], env[name]) for name in py if py[name] != env.get(name)}
    assert differing == {}, f"pins differ (pyproject, environment.yml): {differing}"


def test_python_requirement_matches():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert f"python{project['requires-python']}" in env["dependencies"]
