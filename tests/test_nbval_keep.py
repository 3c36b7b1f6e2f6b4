"""hybridhydro.pipeline.nbval_keep: the notebooks nbval executes are kept with their outputs
(the documentation site shows what make test ran), errors included."""

from __future__ import annotations

import subprocess
import sys

import nbformat


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def _nbval(folder, saved):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q", "-p", "no:cacheprovider",
         "-p", "hybridhydro.pipeline.nbval_keep", "--save-executed", str(saved), str(folder)],
        capture_output=True, text=True, timeout=300,
    )


def test_executed_notebooks_are_kept_with_their_outputs_and_errors(tmp_path):
    folder = tmp_path / "nb"
    folder.mkdir()
    _notebook(folder / "good.ipynb", "print('hello')", "1 + 1", "x = 3")
    _notebook(folder / "bad.ipynb", "print('before')", "raise ValueError('a broken stage')")
    saved = tmp_path / "executed"
    done = _nbval(folder, saved)
    assert done.returncode == 1, done.stdout  # nbval still fails on the error
    good = nbformat.read(str(saved / "good.ipynb"), as_version=4)
    nbformat.validate(good)
    outputs = [cell.outputs for cell in good.cells]
    assert outputs[0][0]["output_type"] == "stream" and outputs[0][0]["text"] == "hello\n"
    assert outputs[1][0]["output_type"] == "execute_result" and outputs[1][0]["data"]["text/plain"] == "2"
    assert outputs[2] == []
    bad = nbformat.read(str(saved / "bad.ipynb"), as_version=4)
    error = bad.cells[1].outputs[-1]
    assert error["output_type"] == "error" and error["ename"] == "ValueError"  # the site check reports it


def test_without_the_option_nothing_is_written(tmp_path):
    folder = tmp_path / "nb"
    folder.mkdir()
    _notebook(folder / "good.ipynb", "1 + 1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q", "-p", "no:cacheprovider",
         "-p", "hybridhydro.pipeline.nbval_keep", str(folder)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    assert sorted(p.name for p in tmp_path.rglob("*.ipynb")) == ["good.ipynb"]
