"""The runner and the CLI, on throw-away notebooks: order, parameters, overwrite refusal, failures, nbval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import yaml

from hybridhydro.__main__ import main
from hybridhydro.pipeline import (
    NOTEBOOKS_DIR,
    OutputExistsError,
    PipelineError,
    StageFailed,
    declared_parameters,
    discover_stages,
    load_params,
    prepare,
    run,
    select_stages,
)
from hybridhydro.pipeline.params import REPOSITORY_ROOT, Params, ParamsError
from hybridhydro.pipeline.runner import load_stage

ROOT = Path(__file__).resolve().parents[1]

WRITER = '''\
# %% [markdown]
# # Writes a file

# %% tags=["parameters"]
params = {"case": "default", "figures": {"dpi": 1}}
output_dir = "out"

# %%
from pathlib import Path
Path(output_dir).mkdir(parents=True, exist_ok=True)
(Path(output_dir) / "first.txt").write_text(f"{params['case']} {params['figures']['dpi']}")
'''

READER = '''\
# %% tags=["parameters"]
output_dir = "out"

# %%
from pathlib import Path
text = (Path(output_dir) / "first.txt").read_text()
(Path(output_dir) / "second.txt").write_text(text + " seen")
'''

FAILING = '''\
# %% [markdown]
# # Fails in its third cell

# %% tags=["parameters"]
output_dir = "out"

# %%
x = 1

# %%
y = x + 1
raise RuntimeError(f"broken on purpose {y}")

# %%
(Path(output_dir) / "never.txt").write_text("never")
'''


def notebooks(folder: Path, **stages: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, text in stages.items():
        (folder / f"{stem}.py").write_text(textwrap.dedent(text))
    return folder


@pytest.fixture
def case(tmp_path: Path) -> Path:
    path = tmp_path / "params" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"extends": None, "case": "tiny", "figures": {"dpi": 42}}))
    return path


@pytest.fixture
def two_stages(tmp_path: Path) -> Path:
    # written in reverse on purpose: the order comes from the names, not from the file system
    return notebooks(tmp_path / "nb", **{"02_reader": READER, "01_writer": WRITER, "helpers": "x = 1\n"})


# --- stages ------------------------------------------------------------------------------------


def test_stages_are_numbered_notebooks_in_name_order(two_stages):
    assert discover_stages(two_stages) == ["01_writer", "02_reader"]


def test_study_stages_run_only_when_named(tmp_path, case, two_stages):
    from hybridhydro.pipeline import stages_to_run, study_stages
    from hybridhydro.pipeline.runner import STUDY_MARK

    study = "# %% [markdown]\n# A study\n" + STUDY_MARK + "\n\n# %% tags=[\"parameters\"]\noutput_dir = 'out'\n"
    notebooks(two_stages, **{"09_study": study})
    assert discover_stages(two_stages) == ["01_writer", "02_reader", "09_study"]
    assert study_stages(two_stages) == ["09_study"]
    params = load_params(case)
    assert stages_to_run(params, None, two_stages) == ["01_writer", "02_reader"]  # the default leaves it out
    assert stages_to_run(params, ["09"], two_stages) == ["09_study"]
    named = params.model_copy(update={"stages": ["01_writer", "09_study"]})
    assert stages_to_run(named, None, two_stages) == ["01_writer", "09_study"]
    # the mark is a whole line: a notebook that only quotes it in a sentence is a pipeline stage
    notebooks(two_stages, **{"09_study": study.replace(STUDY_MARK, "# see " + STUDY_MARK)})
    assert study_stages(two_stages) == []


def test_select_stages_keeps_pipeline_order_and_accepts_prefixes():
    available = ["01_basin", "02_forward", "03_calibrate"]
    assert select_stages(available, None) == available
    assert select_stages(available, ["03_calibrate", "01"]) == ["01_basin", "03_calibrate"]
    with pytest.raises(PipelineError, match="'02_froward' is not a stage; did you mean '02_forward'"):
        select_stages(available, ["02_froward"])
    with pytest.raises(PipelineError, match="names several"):
        select_stages(available, ["0"])


def test_notebook_without_parameters_cell_is_refused(tmp_path, case):
    folder = notebooks(tmp_path / "nb", **{"01_bare": "x = 1\n"})
    with pytest.raises(PipelineError, match='no cell tagged "parameters"'):
        run(load_params(case), notebooks_dir=folder, output_root=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()  # nothing half-made


# --- running -----------------------------------------------------------------------------------


def test_run_executes_stages_in_order_with_the_case_parameters(tmp_path, case, two_stages):
    result = run(load_params(case), notebooks_dir=two_stages, output_root=tmp_path / "runs", progress=False)
    out = tmp_path / "runs" / "tiny"
    assert result.output_dir == out
    assert [s.stage for s in result.stages] == ["01_writer", "02_reader"]
    assert (out / "second.txt").read_text() == "tiny 42 seen"  # stage 2 read what stage 1 wrote
    for stage in ("01_writer", "02_reader"):
        nb = nbformat.read(out / f"{stage}.ipynb", as_version=4)
        assert nb.metadata.papermill.input_path == str(two_stages / f"{stage}.py")
    # only the names a notebook declares are injected
    nb = nbformat.read(out / "02_reader.ipynb", as_version=4)
    assert set(nb.metadata.papermill.parameters) == {"output_dir"}
    manifest = json.loads((out / "run.json").read_text())
    assert {s: v["status"] for s, v in manifest["stages"].items()} == {"01_writer": "done", "02_reader": "done"}
    assert load_params(out / "params.yaml").model_dump() == load_params(case).model_dump()
    assert "01_writer" in result.summary()


def test_executed_notebooks_keep_their_figures_under_a_headless_shell(tmp_path, case, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as `make` and CI export it
    plot = '# %% tags=["parameters"]\noutput_dir = "out"\n\n# %%\nimport matplotlib.pyplot as plt\nplt.plot([0, 1])\n'
    folder = notebooks(tmp_path / "nb", **{"01_plot": plot})
    run(load_params(case), notebooks_dir=folder, output_root=tmp_path / "runs", progress=False)
    nb = nbformat.read(tmp_path / "runs" / "tiny" / "01_plot.ipynb", as_version=4)
    assert any("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))
    assert os.environ["MPLBACKEND"] == "Agg"  # restored


def test_existing_results_are_never_overwritten_silently(tmp_path, case, two_stages):
    params = load_params(case)
    run(params, notebooks_dir=two_stages, output_root=tmp_path / "runs", progress=False)
    before = (tmp_path / "runs" / "tiny" / "01_writer.ipynb").read_bytes()
    with pytest.raises(OutputExistsError) as error:
        run(params, notebooks_dir=two_stages, output_root=tmp_path / "runs", progress=False)
    message = str(error.value)
    assert "01_writer.ipynb" in message and "--overwrite" in message
    assert (tmp_path / "runs" / "tiny" / "01_writer.ipynb").read_bytes() == before
    result = run(params, notebooks_dir=two_stages, output_root=tmp_path / "runs", overwrite=True, progress=False, stages=["02"])
    assert [s.stage for s in result.stages] == ["02_reader"]


def test_failure_names_notebook_cell_and_exception(tmp_path, case, two_stages):
    notebooks(two_stages, **{"02_reader": FAILING, "03_after": READER})
    with pytest.raises(StageFailed) as caught:
        run(load_params(case), notebooks_dir=two_stages, output_root=tmp_path / "runs", progress=False)
    failure = caught.value
    assert failure.stage == "02_reader"
    assert failure.notebook == two_stages / "02_reader.py"
    assert failure.cell_index == 3  # markdown, parameters, x = 1, then this one
    assert failure.line == 11
    assert failure.first_line == "y = x + 1"
    assert (failure.ename, failure.evalue) == ("RuntimeError", "broken on purpose 2")
    message = str(failure)
    assert "02_reader.py, cell 4 of 5 (line 11): y = x + 1" in message
    # the statement that raised, not only where its cell starts
    assert failure.raising_line == (12, 'raise RuntimeError(f"broken on purpose {y}")')
    assert '\n  at line 12: raise RuntimeError(f"broken on purpose {y}")\n' in message
    assert "RuntimeError: broken on purpose 2" in message
    out = tmp_path / "runs" / "tiny"
    assert failure.output == out / "02_reader.ipynb" and failure.output.is_file()
    assert not (out / "03_after.ipynb").exists() and not (out / "never.txt").exists()
    assert json.loads((out / "run.json").read_text())["stages"]["02_reader"]["status"] == "failed"


# --- what a notebook receives ------------------------------------------------------------------


def test_notebooks_receive_every_section_whole(case, tmp_path):
    params = load_params(case)
    values = params.notebook_parameters("01_writer", tmp_path / "runs" / "tiny")
    json.dumps(values)  # plain values: papermill writes them into the notebook
    assert set(values) == {"params", "stage", "output_dir", "params_file"}
    assert values["params"] == params.model_dump(mode="json")
    assert set(values["params"]) == set(Params.model_fields)  # every section, under its own name
    assert values["params"]["calibration"]["calibration_period"] is None  # not calibration_calibration_period
    assert values["params"]["figures"]["dpi"] == 42
    assert (values["stage"], values["output_dir"]) == ("01_writer", str((tmp_path / "runs" / "tiny").resolve()))
    assert values["params_file"] == str(case.resolve())
    again = load_params(values["params"])  # what a notebook does with it
    assert again.model_dump() == params.model_dump() and again.files == ()


def test_repository_case_round_trips_through_the_injected_dictionary():
    params = load_params(ROOT / "params" / "cance.yaml")
    injected = params.notebook_parameters("03_calibrate", "runs/cance")["params"]
    assert load_params(injected).model_dump() == params.model_dump()
    assert load_params(params) is params


def test_load_params_of_a_mapping_checks_it_as_a_file(tmp_path, monkeypatch):
    with pytest.raises(ParamsError, match="did you mean 'figures.dpi'"):
        load_params({"figures": {"dpis": 3}})
    with pytest.raises(ParamsError, match="'extends'"):
        load_params({"extends": "base.yaml"})
    assert load_params({"extends": None, "case": "x"}).case == "x"
    (tmp_path / "mine").mkdir()
    monkeypatch.chdir(tmp_path)  # a directory source in a mapping is read from the current directory
    assert load_params({"basin": {"source": "mine"}}).basin.source == str(tmp_path / "mine")
    with pytest.raises(ParamsError, match="neither a hydro-smash dataset"):
        load_params({"basin": {"source": "nowhere"}})


def test_a_relative_parameter_file_is_also_looked_for_from_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_params("params/ci.yaml").params_file == REPOSITORY_ROOT / "params" / "ci.yaml"
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "ci.yaml").write_text("extends: null\ncase: here\n")
    assert load_params("params/ci.yaml").case == "here"  # the current directory first
    with pytest.raises(ParamsError, match="no such parameter file"):
        load_params("params/none.yaml")


def test_a_notebook_reads_its_parameters_back(tmp_path, case):
    reader = '''\
# %% tags=["parameters"]
params = "params/ci.yaml"
output_dir = "out"

# %%
from pathlib import Path
from hybridhydro.pipeline import load_params
cfg = load_params(params)
(Path(output_dir) / "read.txt").write_text(f"{cfg.case} {cfg.figures.dpi} {cfg.calibration.models[0]}")
'''
    folder = notebooks(tmp_path / "nb", **{"01_reader": reader})
    result = run(load_params(case), notebooks_dir=folder, output_root=tmp_path / "runs", progress=False)
    assert (result.output_dir / "read.txt").read_text() == "tiny 42 gr4-uniform"
    nb = nbformat.read(result.output_dir / "01_reader.ipynb", as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "'calibration': {" in injected.source or '"calibration": {' in injected.source  # every value shown


# --- the command line --------------------------------------------------------------------------


def test_cli_failure_exit_code_and_message(tmp_path, case, capsys):
    folder = notebooks(tmp_path / "nb", **{"01_fails": FAILING})
    code = main(["run", str(case), "--notebooks", str(folder), "--output-root", str(tmp_path / "runs"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "stage 01_fails failed" in err and "cell 4 of 5 (line 11)" in err and "RuntimeError" in err


def test_cli_check_prints_merged_parameters(case, two_stages, capsys):
    assert main(["check", str(case), "--notebooks", str(two_stages)]) == 0
    out = capsys.readouterr().out
    assert "stages: 01_writer, 02_reader" in out
    assert "dpi: 42  # resolution" in out


def test_cli_bad_parameters_exit_2_and_name_the_key(tmp_path, two_stages, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: null\nbasin:\n  sorce: Cance\n")
    assert main(["check", str(bad), "--notebooks", str(two_stages)]) == 2
    assert "did you mean 'basin.source'" in capsys.readouterr().err


def test_cli_refuses_to_overwrite(tmp_path, case, two_stages, capsys):
    args = ["run", str(case), "--notebooks", str(two_stages), "--output-root", str(tmp_path / "runs"), "--no-progress"]
    assert main(args) == 0
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err


# --- prepare for nbval -------------------------------------------------------------------------


def test_prepared_notebooks_run_under_nbval_in_order(tmp_path, case, two_stages):
    out = tmp_path / "nbval"
    out.mkdir()
    (out / "09_stale.ipynb").write_text("{}")  # from an earlier prepare: removed with overwrite
    with pytest.raises(OutputExistsError):
        prepare(load_params(case), out, notebooks_dir=two_stages)
    written = prepare(load_params(case), out, notebooks_dir=two_stages, overwrite=True)
    assert [p.name for p in written] == ["01_writer.ipynb", "02_reader.ipynb"]
    assert sorted(p.name for p in out.glob("*.ipynb")) == ["01_writer.ipynb", "02_reader.ipynb"]
    nb = nbformat.read(written[0], as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")  # not executed
    assert "injected-parameters" in nb.cells[2].metadata.tags  # right after the parameters cell
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q", "-p", "no:cacheprovider", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "second.txt").read_text() == "tiny 42 seen"


# --- the repository's notebooks ----------------------------------------------------------------


@pytest.mark.parametrize("stage", discover_stages(NOTEBOOKS_DIR))
def test_repository_notebooks_declare_only_known_parameters(stage):
    nb = load_stage(NOTEBOOKS_DIR / f"{stage}.py")
    known = load_params(ROOT / "params" / "ci.yaml").notebook_parameters(stage, "runs/ci")
    declared = declared_parameters(nb)
    assert "output_dir" in declared
    assert set(declared) <= set(known), f"{stage} declares parameters no parameter file sets: {set(declared) - set(known)}"
