"""An installable package: the templates (notebooks, parameter files) found in a checkout or in
the installed package, ``python -m hybridhydro init``, the runner's choice of notebooks, and the
message when hydro-smash (an optional extra) is missing. The slow test builds the sdist and the
wheel, installs the wheel in a fresh virtual environment and runs from it, outside the repository.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import nbformat
import pytest

from hybridhydro import templates
from hybridhydro.__main__ import main
from hybridhydro.pipeline import load_params, runner
from hybridhydro.pipeline.record import PipelineError

ROOT = Path(__file__).resolve().parents[1]


def _fake_templates(root: Path) -> None:
    """A minimal templates folder: one notebook, a base and a case."""
    (root / "notebooks").mkdir(parents=True)
    (root / "params" / "studies").mkdir(parents=True)
    (root / "notebooks" / "01_basin.py").write_text("# %% tags=['parameters']\nparams = None\n")
    (root / "params" / "base.yaml").write_text("seed: 0\n")
    (root / "params" / "studies" / "s.yaml").write_text("extends: ../base.yaml\n")


# --- where the templates are --------------------------------------------------------------------


def test_a_checkout_uses_its_own_notebooks_and_params():
    found = templates.templates()
    assert found == templates.Templates(ROOT, "repository")
    files = {f.as_posix() for f in found.files()}
    committed = {p.relative_to(ROOT).as_posix() for p in [*ROOT.glob("notebooks/*.py"), *ROOT.glob("params/**/*.yaml")]}
    assert files == committed
    assert {"notebooks/01_basin.py", "params/base.yaml", "params/ci.yaml", "params/studies/ci-study.yaml"} <= files
    assert runner.NOTEBOOKS_DIR == ROOT / "notebooks"


def test_an_installed_package_uses_the_packaged_copy(tmp_path, monkeypatch):
    checkout, packaged = tmp_path / "site-packages", tmp_path / "site-packages" / "hybridhydro" / "_templates"
    _fake_templates(packaged)
    monkeypatch.setattr(templates, "repository_root", lambda: checkout)
    monkeypatch.setattr(templates, "packaged_root", lambda: packaged)
    found = templates.templates()
    assert found == templates.Templates(packaged, "package")
    assert [f.as_posix() for f in found.files()] == ["notebooks/01_basin.py", "params/base.yaml", "params/studies/s.yaml"]


def test_an_incomplete_install_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(templates, "repository_root", lambda: tmp_path / "a")
    monkeypatch.setattr(templates, "packaged_root", lambda: tmp_path / "b")
    with pytest.raises(templates.TemplatesNotFound) as error:
        templates.templates()
    message = str(error.value)
    assert str(tmp_path / "a") in message and str(tmp_path / "b") in message
    assert "--force-reinstall" in message and "--notebooks" in message
    assert templates.default_root() == tmp_path / "b"


# --- init ---------------------------------------------------------------------------------------


def test_init_copies_every_template(tmp_path):
    written = templates.init(tmp_path / "work")
    expected = templates.templates().files()
    assert sorted(written) == sorted(tmp_path / "work" / f for f in expected)
    for f in expected:
        assert (tmp_path / "work" / f).read_bytes() == (ROOT / f).read_bytes()


def test_init_refuses_to_overwrite_unless_asked(tmp_path):
    work = tmp_path / "work"
    templates.init(work)
    mine = work / "params" / "ci.yaml"
    mine.write_text("case: mine\n")
    (work / "notebooks" / "01_basin.py").unlink()  # only some files exist: still nothing is written
    with pytest.raises(templates.InitRefused) as error:
        templates.init(work)
    count = len(templates.templates().files())
    assert f"already holds {count - 1} of the {count} template files (notebooks/" in str(error.value)
    assert "nothing was written" in str(error.value) and "--overwrite" in str(error.value)
    assert mine.read_text() == "case: mine\n"
    assert not (work / "notebooks" / "01_basin.py").exists()
    templates.init(work, overwrite=True)
    assert mine.read_bytes() == (ROOT / "params" / "ci.yaml").read_bytes()
    assert (work / "notebooks" / "01_basin.py").is_file()


def test_init_into_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(templates.InitRefused, match="not a folder"):
        templates.init(tmp_path / "file")


def test_copied_params_merge_and_find_the_copied_notebooks(tmp_path):
    work = tmp_path / "work"
    templates.init(work)
    ci = load_params(work / "params" / "ci.yaml")
    assert ci.files == (work / "params" / "base.yaml", work / "params" / "ci.yaml")
    assert runner.find_notebooks(ci) == (work / "notebooks", f"beside the parameter file {work / 'params' / 'ci.yaml'}")
    study = load_params(work / "params" / "studies" / "ci-study.yaml")  # extends ../ci.yaml, then base.yaml
    assert study.files[0] == work / "params" / "base.yaml" and study.files[-1].parent == work / "params" / "studies"
    assert runner.find_notebooks(study)[0] == work / "notebooks"
    stages = runner.stages_to_run(ci)  # the copied notebooks' pipeline, studies left out
    assert "01_basin" in stages and "06_validate" in stages and "07_known_answer" not in stages
    # the repository's own parameter files run the repository's notebooks
    assert runner.find_notebooks(load_params(ROOT / "params" / "ci.yaml"))[0] == ROOT / "notebooks"


def test_a_folder_without_stage_notebooks_is_not_taken(tmp_path):
    work = tmp_path / "work"
    templates.init(work)
    for nb in (work / "notebooks").glob("*.py"):
        nb.rename(nb.with_suffix(".txt"))
    assert runner.find_notebooks(load_params(work / "params" / "ci.yaml")) == (runner.NOTEBOOKS_DIR, "the repository's")


def test_prepare_uses_the_notebooks_beside_the_params(tmp_path):
    work = tmp_path / "work"
    templates.init(work)
    marker = "# a line only the copied notebook has"
    first = work / "notebooks" / "01_basin.py"
    first.write_text(first.read_text() + f"\n# %%\n{marker}\n")
    written = runner.prepare(load_params(work / "params" / "ci.yaml"), tmp_path / "nb", stages=["01"])
    nb = nbformat.read(str(written[0]), as_version=4)
    assert nb.metadata["papermill"]["input_path"] == str(first)
    assert any(marker in cell.source for cell in nb.cells)


def test_cli_init_then_check(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "work"]) == 0
    out = capsys.readouterr().out
    assert f"into {tmp_path / 'work'}" in out and "  params/base.yaml" in out and "  notebooks/01_basin.py" in out
    assert "python -m hybridhydro run work/params/ci.yaml" in out
    assert main(["init", "work"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["check", "work/params/ci.yaml"]) == 0
    out = capsys.readouterr().out
    assert f"# notebooks: {tmp_path / 'work' / 'notebooks'} (beside the parameter file" in out
    assert main(["check", str(ROOT / "params" / "ci.yaml")]) == 0
    assert f"# notebooks: {ROOT / 'notebooks'} (beside the parameter file {ROOT / 'params' / 'ci.yaml'})" in capsys.readouterr().out


# --- hydro-smash missing ----------------------------------------------------------------------


@pytest.fixture
def no_smash(monkeypatch):
    """hydro-smash looks uninstalled (hybridhydro finds it with importlib.util.find_spec only)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "smash" else real(name, *a, **k))


def _says_how_to_install(message: str, dataset: str) -> None:
    assert repr(dataset) in message, message
    assert 'pip install "hybridhydro[smash]"' in message and "basin.source: synthetic" in message


def test_a_smash_dataset_without_smash_is_a_clear_error(no_smash):
    from hybridhydro.io import read_smash_dataset

    with pytest.raises(ModuleNotFoundError) as error:
        read_smash_dataset("Lez")
    _says_how_to_install(str(error.value), "Lez")


def test_the_runner_refuses_a_smash_case_before_running(no_smash, tmp_path, capsys):
    cance = load_params(ROOT / "params" / "cance.yaml")
    with pytest.raises(PipelineError) as error:
        runner.check_basin_available(cance)
    _says_how_to_install(str(error.value), "Cance")
    assert str(ROOT / "params" / "cance.yaml") in str(error.value)
    runner.check_basin_available(load_params(ROOT / "params" / "ci.yaml"))  # synthetic: nothing needed
    assert main(["run", str(ROOT / "params" / "cance.yaml"), "--output-root", str(tmp_path / "runs")]) == 2
    _says_how_to_install(capsys.readouterr().err, "Cance")
    assert not (tmp_path / "runs").exists()
    assert main(["check", str(ROOT / "params" / "known_answer.yaml")]) == 2
    assert "known_answer" in capsys.readouterr().err


# --- the wheel, installed outside the repository ---------------------------------------------------


def _run(command: list, cwd: Path, timeout: float, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"{' '.join(done.args)} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def _source_copy(target: Path) -> Path:
    """The files of the checkout that git would commit (tracked and new, not ignored), copied to ``target``."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    for name in filter(None, listing.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_the_wheel_installs_and_runs_outside_the_repository(tmp_path):
    """sdist -> wheel (python -m build), the wheel in a fresh venv without the smash extra, then
    init, check and stage 01 of the synthetic case from a folder outside the repository. Needs
    PyPI (or a pip mirror) for `build`, setuptools and the dependencies; pip's cache is reused
    (about 8 minutes on 2 busy cores with a warm cache, 20 with a cold one)."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env |= {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "MPLBACKEND": "Agg"}
    source, dist, venv, work = _source_copy(tmp_path / "source"), tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    _ok(_run([sys.executable, "-m", "venv", venv], tmp_path, 120, env))
    python = venv / "bin" / "python"
    _ok(_run([python, "-m", "pip", "install", "-q", "build"], tmp_path, 600, env))
    _ok(_run([python, "-m", "build", "--outdir", dist, source], tmp_path, 900, env))  # the wheel is built from the sdist

    (sdist,), (wheel,) = dist.glob("*.tar.gz"), dist.glob("*.whl")
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    with zipfile.ZipFile(wheel) as whl:
        in_wheel = set(whl.namelist())
    for f in templates.templates().files():
        assert f.as_posix() in in_sdist, f"{f} is not in the sdist (MANIFEST.in)"
        assert f"hybridhydro/_templates/{f.as_posix()}" in in_wheel, f"{f} is not in the wheel (setup.py build_py)"
    assert {"setup.py", "MANIFEST.in", "pyproject.toml", "hybridhydro/templates.py"} <= in_sdist
    assert not any(n.startswith(("notebooks/", "params/", "tests/")) for n in in_wheel), "top-level folders in the wheel"

    _ok(_run([python, "-m", "pip", "install", "-q", wheel], tmp_path, 1800, env))
    hh = [python, "-m", "hybridhydro"]
    where = _ok(_run([python, "-c", "import hybridhydro, hybridhydro.templates as t; print(hybridhydro.__file__); "
                      "print(t.templates().origin); import importlib.util as u; print(u.find_spec('smash'))"], work, 300, env))
    assert where.split() == [str(venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
                                 / "hybridhydro" / "__init__.py"), "package", "None"], where

    out = _ok(_run([*hh, "init", "proj"], work, 300, env))
    assert "python -m hybridhydro run proj/params/ci.yaml" in out
    assert (work / "proj" / "params" / "studies" / "ci-study.yaml").is_file()
    out = _ok(_run([*hh, "check", "proj/params/ci.yaml"], work, 300, env))
    assert f"# notebooks: {work / 'proj' / 'notebooks'} (beside the parameter file" in out, out[:600]
    # a relative parameter file that is not in the current folder is read from the package
    out = _ok(_run([*hh, "check", "params/ci.yaml"], work, 300, env))
    assert "_templates/notebooks (beside the parameter file " in out and "_templates/params/ci.yaml: valid" in out, out[:600]

    _ok(_run([*hh, "run", "proj/params/ci.yaml", "--stages", "01", "--output-root", "runs", "--no-progress"], work, 900, env))
    executed = nbformat.read(str(work / "runs" / "ci" / "01_basin.ipynb"), as_version=4)
    assert executed.metadata["papermill"]["input_path"] == str(work / "proj" / "notebooks" / "01_basin.py")
    assert (work / "runs" / "ci" / "basin.nc").is_file()

    refused = _run([*hh, "run", "proj/params/cance.yaml", "--output-root", "runs-cance"], work, 300, env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    _says_how_to_install(refused.stderr, "Cance")
    assert not (work / "runs-cance").exists()
