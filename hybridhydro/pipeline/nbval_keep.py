"""A pytest plugin that keeps the notebooks nbval executes: ``pytest --nbval-lax
-p hybridhydro.pipeline.nbval_keep --save-executed DIR NOTEBOOKS``.

nbval runs every cell of a notebook in a kernel and compares (or, with ``--nbval-lax``, only
collects) its outputs, but writes nothing back. ``make test`` checks the stages with nbval and
the documentation site shows the same stages executed: with this plugin one execution serves
both (each notebook is written to ``DIR/<name>.ipynb`` with the outputs nbval collected: text,
tables, figures, and the error of a failing cell, which the site check then reports).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--save-executed", default=None, metavar="DIR",
        help="write each notebook nbval executed, with the outputs it collected, to DIR/<name>.ipynb",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield
    _keep(item)


def _keep(item) -> None:
    outputs = getattr(item, "test_outputs", None)
    cell = getattr(item, "cell", None)
    if outputs is None or cell is None:  # not an nbval cell, or a skipped one
        return
    cell.outputs = [nbformat.from_dict(dict(out)) for out in outputs]
    counts = [out.get("execution_count") for out in outputs if out.get("output_type") == "execute_result"]
    cell.execution_count = counts[0] if counts else getattr(item, "cell_num", 0) + 1
    item.parent._hybridhydro_keep = True


def pytest_sessionfinish(session):
    folder = session.config.getoption("--save-executed")
    if not folder:
        return
    folder = Path(folder)
    files = {id(item.parent): item.parent for item in session.items if getattr(item.parent, "_hybridhydro_keep", False)}
    for parent in files.values():
        folder.mkdir(parents=True, exist_ok=True)
        nb = parent.nb
        for cell in nb.cells:
            if cell.get("cell_type") == "code":
                cell.setdefault("outputs", [])
        path = folder / Path(str(parent.fspath)).name
        tmp = path.with_suffix(".ipynb.tmp")
        nbformat.write(nb, str(tmp))
        tmp.replace(path)
