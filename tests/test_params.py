"""Parameter files: merge over the base, validation, and errors that say what to fix."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from hybridhydro.pipeline import Params, ParamsError, deep_merge, load_params
from hybridhydro.pipeline.params import SyntheticBasinParams

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params"


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path / "base.yaml", {"basin": {"source": "synthetic", "synthetic": {"nrow": 20}}, "figures": {"dpi": 90}})
    return tmp_path


# --- the repository's files --------------------------------------------------------------------


@pytest.mark.parametrize("case", ["base", "cance", "lez", "ci"])
def test_repository_parameter_files_are_valid(case):
    params = load_params(PARAMS / f"{case}.yaml")
    assert params.case == case
    assert params.files[-1] == (PARAMS / f"{case}.yaml").resolve()


def test_cases_merge_over_base():
    cance = load_params(PARAMS / "cance.yaml")
    assert [f.name for f in cance.files] == ["base.yaml", "cance.yaml"]
    assert cance.basin.source == "Cance"
    assert cance.basin.start == "2014-09-15 00:00:00" and cance.basin.end == "2014-11-14 00:00:00"
    assert cance.figures == load_params(PARAMS / "base.yaml").figures  # from the base


def test_ci_is_a_tiny_synthetic_run():
    ci = load_params(PARAMS / "ci.yaml")
    assert ci.basin.source == "synthetic"
    s = ci.basin.synthetic
    assert s.nrow * s.ncol * s.ntime <= 16 * 16 * 240


# --- merging -----------------------------------------------------------------------------------


def test_case_overrides_base_key_by_key(folder):
    params = load_params(write(folder / "c.yaml", {"basin": {"synthetic": {"ncol": 8}}}))
    assert (params.basin.synthetic.nrow, params.basin.synthetic.ncol) == (20, 8)
    assert params.figures.dpi == 90
    assert params.case == "c"  # defaults to the file's name


def test_lists_replace_rather_than_extend(folder):
    write(folder / "base.yaml", {"stages": ["01_basin", "02_forward"]})
    params = load_params(write(folder / "c.yaml", {"stages": ["01_basin"]}))
    assert params.stages == ["01_basin"]


def test_extends_names_the_base_and_null_means_none(folder):
    write(folder / "other.yaml", {"figures": {"dpi": 300}})
    assert load_params(write(folder / "a.yaml", {"extends": "other.yaml"})).figures.dpi == 300
    assert load_params(write(folder / "b.yaml", {"extends": None})).figures.dpi == Params().figures.dpi


def test_extends_loop_is_an_error(folder):
    write(folder / "a.yaml", {"extends": "b.yaml"})
    write(folder / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ParamsError, match="loop"):
        load_params(folder / "a.yaml")


@given(
    st.dictionaries(st.sampled_from("abc"), st.integers() | st.dictionaries(st.sampled_from("xy"), st.integers())),
    st.dictionaries(st.sampled_from("abc"), st.integers() | st.dictionaries(st.sampled_from("xy"), st.integers())),
)
def test_deep_merge_keeps_base_keys_and_takes_over_values(base, over):
    merged = deep_merge(base, over)
    assert set(merged) == set(base) | set(over)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            assert merged[key] == {**base[key], **value}
        else:
            assert merged[key] == value


# --- errors ------------------------------------------------------------------------------------


def test_unknown_key_names_key_file_and_closest_key(folder):
    case = write(folder / "c.yaml", {"basin": {"synthtic": {"nrow": 8}}})
    with pytest.raises(ParamsError) as error:
        load_params(case)
    message = str(error.value)
    assert "basin.synthtic" in message
    assert str(case) in message
    assert "did you mean 'basin.synthetic'" in message


def test_unknown_key_in_base_names_the_base(folder):
    write(folder / "base.yaml", {"figure": {"dpi": 90}})
    with pytest.raises(ParamsError) as error:
        load_params(write(folder / "c.yaml", {"case": "c"}))
    assert f"{folder / 'base.yaml'}: unknown key 'figure'; did you mean 'figures'?" in str(error.value)


def test_nested_unknown_key_suggests_within_its_section(folder):
    with pytest.raises(ParamsError, match=r"basin\.synthetic\.nrows'; did you mean 'basin\.synthetic\.nrow'"):
        load_params(write(folder / "c.yaml", {"basin": {"synthetic": {"nrows": 8}}}))


def test_wrong_value_names_key_and_file(folder):
    case = write(folder / "c.yaml", {"figures": {"dpi": "high"}})
    with pytest.raises(ParamsError, match=rf"{case}: figures\.dpi: .*integer.*'high'"):
        load_params(case)


def test_key_written_twice_is_an_error(folder):
    case = write(folder / "c.yaml", "figures:\n  dpi: 90\n  dpi: 100\n")
    with pytest.raises(ParamsError, match="'dpi' appears twice"):
        load_params(case)


def test_missing_file_and_bad_yaml(folder):
    with pytest.raises(ParamsError, match="no such parameter file"):
        load_params(folder / "nope.yaml")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(write(folder / "c.yaml", "basin: [unclosed\n"))
    with pytest.raises(ParamsError, match="mapping"):
        load_params(write(folder / "d.yaml", "- a\n- b\n"))


def test_bad_case_name(folder):
    with pytest.raises(ParamsError, match="case"):
        load_params(write(folder / "c.yaml", {"case": "../elsewhere"}))


def test_synthetic_basin_has_no_smash_window(folder):
    with pytest.raises(ParamsError, match="basin.synthetic.start"):
        load_params(write(folder / "c.yaml", {"basin": {"start": "2020-01-01"}}))


def test_window_must_be_ordered(folder):
    with pytest.raises(ParamsError, match="before"):
        load_params(write(folder / "c.yaml", {"basin": {"source": "Lez", "start": "2013-01-01", "end": "2012-01-01"}}))


def test_not_a_date(folder):
    with pytest.raises(ParamsError, match="not a date"):
        load_params(write(folder / "c.yaml", {"basin": {"source": "Lez", "start": "someday"}}))


# --- basin.source ------------------------------------------------------------------------------


def test_smash_names_are_case_insensitive(folder):
    assert load_params(write(folder / "c.yaml", {"basin": {"source": "cance"}})).basin.source == "Cance"


def test_directory_source_is_relative_to_the_file(folder):
    (folder / "data" / "mybasin").mkdir(parents=True)
    sub = folder / "cases"
    sub.mkdir()
    params = load_params(write(sub / "c.yaml", {"extends": None, "basin": {"source": "../data/mybasin"}}))
    assert params.basin.source == str((folder / "data" / "mybasin").resolve())


def test_unknown_source_is_an_error_with_a_suggestion(folder):
    with pytest.raises(ParamsError, match=r"'Cnace' is neither .* did you mean 'Cance'"):
        load_params(write(folder / "c.yaml", {"basin": {"source": "Cnace"}}))


# --- what notebooks receive --------------------------------------------------------------------


def test_notebook_parameters_are_whole_sections_and_json_able(folder, tmp_path):
    params = load_params(write(folder / "c.yaml", {"case": "c"}))
    values = params.notebook_parameters("01_basin", tmp_path / "runs" / "c")
    json.dumps(values)
    sections = values["params"]
    assert sections["case"] == "c"
    assert sections["basin"]["source"] == "synthetic"
    assert sections["basin"]["synthetic"]["nrow"] == 20
    assert sections["figures"]["dpi"] == 90
    assert not any("_" in k and k.split("_")[0] in sections for k in values)  # no flattened copies
    assert values["stage"] == "01_basin"
    assert values["output_dir"] == str((tmp_path / "runs" / "c").resolve())
    assert values["params_file"] == str((folder / "c.yaml").resolve())


def test_dumped_yaml_reloads_to_the_same_parameters(folder):
    params = load_params(write(folder / "c.yaml", {"basin": {"synthetic": {"seed": 3}}}))
    again = load_params(write(folder / "sub.yaml", params.to_yaml()))
    assert again.model_dump() == params.model_dump()


def _fields(model: type[BaseModel], prefix=""):
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _fields(annotation, f"{prefix}{name}.")


def test_every_key_has_a_default_and_a_description():
    for name, field in _fields(Params):
        assert not field.is_required(), f"{name} has no default"
        assert field.description, f"{name} has no description"
    Params()  # the defaults are valid


def test_synthetic_section_mirrors_synthetic_basin():
    from hybridhydro import synthetic

    signature = inspect.signature(synthetic.synthetic_basin)
    assert list(SyntheticBasinParams.model_fields) == list(signature.parameters)
    for name, parameter in signature.parameters.items():
        assert SyntheticBasinParams.model_fields[name].default == parameter.default, name


def test_name_lists_come_from_the_library(folder):
    """The schema accepts exactly the library's optimisers and ODE solvers (one source each): a
    name the library gains is accepted, one it lacks is refused with the choices listed."""
    from hybridhydro.calibration import OPTIMIZERS
    from hybridhydro.pipeline.params import HybridParams, OptimizerSettings
    from hybridhydro.structures import ODE_SOLVERS

    for name in OPTIMIZERS:
        assert OptimizerSettings(optimizer=name).optimizer == name
    assert HybridParams(solvers=list(ODE_SOLVERS)).solvers == list(ODE_SOLVERS)
    case = write(folder / "c.yaml", {"hybrid": {"solvers": ["newton", "euler"]}})
    with pytest.raises(ParamsError, match=r"unknown ODE solver \['euler'\].*conservative"):
        load_params(case)
    case = write(folder / "d.yaml", {"calibration": {"optimizers": {"distributed": {"optimizer": "bfgs"}}}})
    with pytest.raises(ParamsError, match=r"unknown optimizer \['bfgs'\].*adam_smash"):
        load_params(case)
