"""The notebooks use only the documented public API, and take their parameters whole.

Documented public API: the package's top level (``hybridhydro.__all__``) and the modules of
``hybridhydro.PUBLIC_MODULES``; besides those, a notebook imports the standard library and the
few third-party packages of :data:`THIRD_PARTY`. A notebook may not reach a private module
through an attribute either (``hh.simulate.parse_structure``, ``hh.structures.SOURCES``,
``plotting.np``).

Parameters: each notebook's ``parameters`` cell declares ``params`` (a parameter file, for
interactive use) and ``output_dir``, nothing else; the runner injects every section whole and
the notebook reads them with ``hh.load_params(params)``. No notebook re-declares a value the
schema already has a default for, under its own name or a flattened one (``hybrid_seed = 0``).
"""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest
from pydantic import BaseModel

import hybridhydro as hh
from hybridhydro.pipeline import NOTEBOOKS_DIR, declared_parameters, discover_stages, load_params
from hybridhydro.pipeline.params import REPOSITORY_ROOT, Params
from hybridhydro.pipeline.runner import load_stage

#: Third-party packages a notebook may import (the standard library is allowed, importlib aside).
THIRD_PARTY = frozenset({"numpy", "pandas", "xarray", "matplotlib", "scipy"})
FORBIDDEN_STDLIB = frozenset({"importlib", "builtins"})

STAGES = discover_stages(NOTEBOOKS_DIR)


# --- the checker -------------------------------------------------------------------------------


def _public_module(name: str) -> types.ModuleType:
    return getattr(hh, name)


def public_names(module: types.ModuleType) -> set[str]:
    """What a notebook may take from ``module``: the package's ``__all__`` and public modules; for a
    public module its ``__all__``, else the names it defines itself (not those it imports)."""
    if module is hh:
        return set(hh.__all__) | set(hh.PUBLIC_MODULES)
    if hasattr(module, "__all__"):
        return set(module.__all__)
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        owner = getattr(value, "__module__", None)
        if owner is None or owner == module.__name__ or not callable(value):
            names.add(name)  # defined here, or a constant
    return names


def _allowed(module: types.ModuleType) -> bool:
    return module is hh or module.__name__ in {f"hybridhydro.{m}" for m in hh.PUBLIC_MODULES}


class Checker(ast.NodeVisitor):
    """Collects every use of hybridhydro outside its documented public API in a script."""

    def __init__(self) -> None:
        self.bound: dict[str, object] = {}  # names bound to hybridhydro objects
        self.problems: list[str] = []

    def problem(self, node: ast.AST, text: str) -> None:
        self.problems.append(f"line {getattr(node, 'lineno', '?')}: {text}")

    def check_library(self, node: ast.AST, name: str) -> None:
        root = name.split(".")[0]
        if root == "hybridhydro":
            return
        if root in FORBIDDEN_STDLIB or (root not in THIRD_PARTY and root not in sys.stdlib_module_names):
            self.problem(node, f"imports {name!r}: not the standard library nor one of {sorted(THIRD_PARTY)}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] != "hybridhydro":
                self.check_library(node, alias.name)
                continue
            if len(parts) > 2 or (len(parts) == 2 and parts[1] not in hh.PUBLIC_MODULES):
                self.problem(node, f"imports {alias.name!r}, a private module (public: {', '.join(hh.PUBLIC_MODULES)})")
                continue
            if alias.asname:
                self.bound[alias.asname] = _public_module(parts[1]) if len(parts) == 2 else hh
            else:
                self.bound["hybridhydro"] = hh

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        parts = module.split(".")
        if node.level:
            self.problem(node, "a relative import")
            return
        if parts[0] != "hybridhydro":
            self.check_library(node, module)
            return
        if len(parts) > 2 or (len(parts) == 2 and parts[1] not in hh.PUBLIC_MODULES):
            self.problem(node, f"imports from {module!r}, a private module (public: {', '.join(hh.PUBLIC_MODULES)})")
            return
        source = _public_module(parts[1]) if len(parts) == 2 else hh
        allowed = public_names(source)
        for alias in node.names:
            if alias.name not in allowed:
                self.problem(node, f"imports {alias.name!r} from {module}: not in its public API")
            else:
                self.bound[alias.asname or alias.name] = getattr(source, alias.name)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain, base = [], node
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        chain.reverse()
        if not (isinstance(base, ast.Name) and base.id in self.bound):
            self.visit(base)
            return
        obj, path = self.bound[base.id], base.id
        for attr in chain:
            if isinstance(obj, types.ModuleType) and attr not in public_names(obj):
                self.problem(node, f"{path}.{attr}: not in the public API of {obj.__name__}")
                return
            if not hasattr(obj, attr):
                self.problem(node, f"{path}.{attr} does not exist (a private module reached through a name?)")
                return
            obj, path = getattr(obj, attr), f"{path}.{attr}"
            if isinstance(obj, types.ModuleType) and not _allowed(obj):
                self.problem(node, f"{path} is the private module {obj.__name__}")
                return

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in {"getattr", "__import__"} and node.args:
            first = node.args[0]
            if node.func.id == "__import__" or (isinstance(first, ast.Name) and first.id in self.bound):
                self.problem(node, f"{node.func.id}(...) on hybridhydro: name what you use")
        self.generic_visit(node)


def api_problems(source: str) -> list[str]:
    checker = Checker()
    checker.visit(ast.parse(source))
    return checker.problems


# --- the schema --------------------------------------------------------------------------------


def schema_defaults() -> tuple[dict[str, list[tuple[str, object]]], set[str]]:
    """Each key name of the schema -> [(its dotted name, its default), ...] (a name may recur in
    several sections), and the flattened ``<section>_<key>`` names the runner used to inject."""
    defaults: dict[str, list[tuple[str, object]]] = {}
    flattened: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            dotted = f"{prefix}.{name}" if prefix else name
            if prefix:
                flattened.add(dotted.replace(".", "_"))
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, dotted)
                continue
            defaults.setdefault(name, []).append((dotted, field.get_default(call_default_factory=True)))

    walk(Params, "")
    return defaults, flattened


def _literal(node: ast.AST):
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _plain(value):
    """Tuples as lists, so that ``(16,)`` and the schema's ``[16]`` compare equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def redeclared_defaults(source: str) -> list[str]:
    """Assignments and keyword arguments that restate a schema default (None apart: that is an
    initialisation), flattened copies of schema keys, and ``.get(key, default)`` on a schema key."""
    defaults, flattened = schema_defaults()
    problems = []

    def check(node: ast.AST, name: str, value: ast.AST) -> None:
        if name in flattened:
            problems.append(f"line {node.lineno}: {name!r} is a flattened copy of a schema key: read it from cfg")
            return
        is_literal, literal = _literal(value)
        if not is_literal or literal is None:
            return
        for dotted, default in defaults.get(name, ()):
            if _plain(literal) == _plain(default):
                problems.append(f"line {node.lineno}: {name} = {literal!r} restates the default of {dotted}")
                return

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    check(node, target.id, node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            check(node, node.target.id, node.value)
        elif isinstance(node, ast.keyword) and node.arg:
            check(node.value, node.arg, node.value)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and len(node.args) == 2 and isinstance(node.args[0], ast.Constant) and node.args[0].value in defaults):
            problems.append(f"line {node.lineno}: .get({node.args[0].value!r}, ...) supplies a default the schema has")
    return problems


# --- the repository's notebooks ----------------------------------------------------------------


def source_of(stage: str) -> str:
    return (NOTEBOOKS_DIR / f"{stage}.py").read_text()


def test_there_are_notebooks():
    from hybridhydro.pipeline import study_stages

    studies = study_stages(NOTEBOOKS_DIR)
    assert [s for s in STAGES if s not in studies][:6] == ["01_basin", "02_forward", "03_calibrate", "04_regionalize",
                                                           "05_hybrid", "06_validate"], STAGES
    assert set(studies) >= {"07_known_answer", "08_referees"}, studies


@pytest.mark.parametrize("stage", STAGES)
def test_notebook_uses_only_the_public_api(stage):
    assert api_problems(source_of(stage)) == []


@pytest.mark.parametrize("stage", STAGES)
def test_notebook_declares_params_and_output_dir_only(stage):
    nb = load_stage(NOTEBOOKS_DIR / f"{stage}.py")
    assert declared_parameters(nb) == ["params", "output_dir"]
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)  # noqa: S102  (the notebook's own literal assignments)
    assert isinstance(namespace["params"], str) and load_params(namespace["params"]).files
    assert "hh.load_params(params)" in source_of(stage)


@pytest.mark.parametrize("stage", STAGES)
def test_notebook_restates_no_schema_default(stage):
    assert redeclared_defaults(source_of(stage)) == []


def test_the_interactive_parameter_file_is_found_from_the_notebooks_folder(monkeypatch):
    monkeypatch.chdir(NOTEBOOKS_DIR)
    assert load_params("params/ci.yaml").params_file == REPOSITORY_ROOT / "params" / "ci.yaml"


# --- the checks themselves ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("from hybridhydro.simulate import simulate", "private module"),
        ("from hybridhydro.structures import SOURCES", "private module"),
        ("import hybridhydro.balance", "private module"),
        ("import hybridhydro.structures as st", "private module"),
        ("from hybridhydro import structures", "not in its public API"),
        ("from hybridhydro import balance_closure, water_balance as wb, _version", "'_version'"),
        ("import hybridhydro as hh\nhh.simulate.parse_structure('gr4-lr')", "does not exist"),
        ("import hybridhydro as hh\nx = hh.structures.NEWTON_MAX_ITERATIONS", "hh.structures: not in the public API"),
        ("import hybridhydro\nhybridhydro.cost.METRICS", "not in the public API"),
        ("from hybridhydro import plotting\nplotting.np.zeros(3)", "plotting.np"),
        ("from hybridhydro import protocol\nprotocol.structures.get_module('gr4')", "protocol.structures"),
        ("from hybridhydro import protocol\nprotocol.calibrate", "protocol.calibrate"),
        ("import hybridhydro as hh\nhh.report.np", "report.np"),
        ("import hybridhydro as hh\ngetattr(hh, 'structures')", "getattr"),
        ("import jax", "'jax'"),
        ("import importlib\nimportlib.import_module('hybridhydro.simulate')", "'importlib'"),
        ("from . import simulate", "relative import"),
    ],
)
def test_api_checker_catches_private_use(source, fragment):
    problems = api_problems(source)
    assert problems and any(fragment in p for p in problems), problems


def test_api_checker_accepts_the_public_api():
    source = """
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import hybridhydro as hh
from hybridhydro import plotting, protocol, report
from hybridhydro.periods import period_mask
from hybridhydro import simulate, PARAMETER_BOUNDS

net = hh.FluxCorrectionNet.for_structure("gr4_mlp")
hh.report.figure_saver(Path("."), "01_basin")
report.balance_table
plotting.plot_simulations
protocol.make_split
protocol.SCENARIOS
hh.periods.select_gauges
hh.parse_structure("gr4-lr").parameters
cfg = hh.load_params("params/ci.yaml")
cfg.calibration.optimizers
"""
    assert api_problems(source) == []


def test_every_documented_name_exists():
    for name in hh.__all__:
        assert hasattr(hh, name), name
    for name in hh.PUBLIC_MODULES:
        assert isinstance(getattr(hh, name), types.ModuleType), name


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("hybrid_seed = 0", "'hybrid_seed' is a flattened copy"),
        ("calibration_calibration_period = None", "flattened copy"),
        ("basin_synthetic = {'nrow': 16}", "flattened copy"),
        ("net = f(hidden=(16,))", "restates the default of hybrid.hidden"),
        ("balance_tolerance = 1e-6", "restates the default of forward.balance_tolerance"),
        ("x = f(storm_factor=10.0)", "restates the default"),
        ("dpi = 120", "figures.dpi"),
        ("tol = params.get('balance_tolerance', 1e-6)", ".get('balance_tolerance'"),
    ],
)
def test_default_checker_catches_restated_defaults(source, fragment):
    problems = redeclared_defaults(source)
    assert problems and any(fragment in p for p in problems), problems


def test_default_checker_accepts_reads_of_the_parameters():
    source = """
cfg = hh.load_params(params)
hybrid = cfg.hybrid
storm = report.storm(basin, hybrid.storm_factor)
models = [m for m in cfg.calibration.models if m]
seed = hybrid.seed
run = hh.simulate(basin, "gr4-lr", ode_substeps=hybrid.substeps)
"""
    assert redeclared_defaults(source) == []
