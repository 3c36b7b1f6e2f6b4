"""The layout rules of docs/architecture.md, checked: no module imports another's private names,
and every list of names has one source that the params schema derives from."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

import hybridhydro as hh
from hybridhydro import calibration, mapping, structures
from hybridhydro.pipeline import params as P

PACKAGE = Path(hh.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_imports(path: Path) -> list[str]:
    """``from X import _name`` and imports of another package's private module in one file."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = package.split(".")
        if node.level:
            base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
        if not target.startswith("hybridhydro"):
            continue
        for alias in node.names:
            if alias.name.startswith("_") and alias.name != "__version__":
                found.append(f"{here}: from {target} import {alias.name}")
        # a private module (a part starting with _) may only be imported from its own package
        parts = target.split(".")
        for k, part in enumerate(parts):
            if part.startswith("_") and ".".join(parts[:k]) != package:
                found.append(f"{here}: imports the private module {target}")
                break
    return found


def test_no_module_imports_another_modules_private_names():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _private_imports(path)]
    assert not found, "\n".join(found)


def test_the_private_import_check_can_fail(tmp_path):
    bad = PACKAGE / "_check_probe_tmp.py"
    try:
        bad.write_text("from .simulate import _to_dataset\nfrom .mesh._d8 import topological_levels\n")
        hits = _private_imports(bad)
    finally:
        bad.unlink()
    assert len(hits) == 2, hits


def _accepts(model, field: str, value, **extra) -> bool:
    try:
        model(**{field: value, **extra})
    except ValidationError:
        return False
    return True


def test_the_schema_reads_every_list_from_the_library():
    # optimisers: every one the library offers, and nothing else
    for name in calibration.OPTIMIZERS:
        assert _accepts(P.OptimizerSettings, "optimizer", name), name
    assert not _accepts(P.OptimizerSettings, "optimizer", "bfgs")
    # the default optimiser per mapping: one table, for every mapping
    assert set(calibration.DEFAULT_OPTIMIZER) == set(mapping.MAPPINGS)
    assert set(calibration.DEFAULT_OPTIMIZER.values()) <= set(calibration.OPTIMIZERS)
    for m, opt in calibration.DEFAULT_OPTIMIZER.items():
        assert f"{opt} {m}" in P.OptimizerSettings.model_fields["optimizer"].description
    # solvers
    for name in structures.ODE_SOLVERS:
        assert _accepts(P.HybridParams, "solvers", [name]), name
    assert not _accepts(P.HybridParams, "solvers", ["euler"])
    # initialisers: the Literal is the library's tuple
    enum = P.HybridParams.model_json_schema()["properties"]["initializer"]["enum"]
    assert tuple(enum) == structures.INITIALIZERS
    # mappings (per-mapping optimiser settings)
    for m in mapping.MAPPINGS:
        assert _accepts(P.CalibrationParams, "optimizers", {m: {}}), m
    assert not _accepts(P.CalibrationParams, "optimizers", {"linear": {}})
    # calibrated parameters: one function
    assert hh.calibrated_parameters("gr4-lr") == ("cp", "ct", "kexc", "llr")
    assert hh.calibrated_parameters("ssn-gr4_ode-kw") == tuple(
        n for n in hh.parse_structure("ssn-gr4_ode-kw").parameters if n != "ci")


@pytest.mark.parametrize("name", ["OPTIMIZERS", "ODE_SOLVERS", "MAPPINGS", "DEFAULT_OPTIMIZER", "INITIALIZERS"])
def test_each_list_is_defined_once(name):
    """A list is assigned in one module only (the others import it)."""
    owners = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
              if any(isinstance(n, (ast.Assign, ast.AnnAssign)) and any(
                  isinstance(t, ast.Name) and t.id == name
                  for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))
                  for n in ast.parse(p.read_text()).body)]
    assert len(owners) == 1, owners


def test_structure_names_are_parsed_in_one_place():
    """Only structure_name splits a structure string on '-'."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "structure_name.py":
            continue
        text = path.read_text()
        for pattern in ('structure.split("-")', "structure).strip().split", 'name.split("-")'):
            if pattern in text:
                offenders.append(f"{path.relative_to(PACKAGE)}: {pattern}")
    assert not offenders, offenders
