"""Parameter files: merge over the base, validation, and errors that say what to fix."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
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


# --- basin files (.nc, .zarr), spin-up and initial states: keys and the hash ---------------------


@pytest.fixture(scope="module")
def basin_files(tmp_path_factory):
    import hybridhydro as hh

    folder = tmp_path_factory.mktemp("basin_files")
    ds = hh.synthetic_basin(nrow=5, ncol=5, ntime=48)
    (folder / "data").mkdir()
    hh.write_basin(ds, folder / "data" / "b.nc")
    hh.write_basin(ds, folder / "data" / "b.zarr")
    return folder, ds


@pytest.mark.parametrize("name, kind", [("b.nc", "netcdf"), ("b.zarr", "zarr")])
def test_a_basin_file_source_is_relative_to_the_file_and_opens_in_its_window(basin_files, name, kind):
    import xarray as xr

    import hybridhydro as hh

    folder, ds = basin_files
    params = load_params(write(folder / "c.yaml", {"extends": None, "basin": {
        "source": f"data/{name}", "start": "2020-01-01 06:00", "end": "2020-01-02 06:00"}}))
    assert params.basin.source == str((folder / "data" / name).resolve()) and params.basin.kind == kind
    basin = hh.open_basin(params.basin)
    window = ds.isel(time=slice(6, 30))
    xr.testing.assert_equal(basin.drop_vars(["prcp", "pet", "qobs", "mean_prcp", "mean_pet"]),
                            window.drop_vars(["prcp", "pet", "qobs", "mean_prcp", "mean_pet"]).assign_attrs(basin.attrs))
    np.testing.assert_array_equal(basin["prcp"].values, window["prcp"].values)  # the mesh kept, time sliced
    assert (basin.attrs["start_time"], basin.attrs["end_time"]) == ("2020-01-01T06:00:00", "2020-01-02T06:00:00")
    hh.check_basin(basin)


@pytest.mark.parametrize("source, message", [
    ("data/missing.nc", r"basin.source 'data/missing.nc': no NetCDF file .* write the basin there first"),
    ("data/missing.zarr", r"no zarr store \(a directory\)"),
    ("c.yaml", r"is a file with suffix '.yaml' .* as .nc \(NetCDF-4\) or .zarr"),
])
def test_a_basin_file_that_is_not_there_or_not_a_basin_is_refused(basin_files, source, message):
    folder, _ = basin_files
    write(folder / "c.yaml", {"extends": None, "basin": {"source": source}})
    with pytest.raises(ParamsError, match=message) as caught:
        load_params(folder / "c.yaml")
    assert str(folder / "c.yaml") in str(caught.value)  # where: the parameter file


@pytest.mark.parametrize("window, message", [
    ({"start": "2019-12-31"}, r"basin.start = 2019-12-31 00:00:00 lies outside the basin file; the file covers "
                              r"\(2020-01-01 00:00:00, 2020-01-03 00:00:00\]"),
    ({"end": "2020-01-04"}, r"basin.end = 2020-01-04 00:00:00 lies outside"),
    ({"start": "2020-01-01 06:30"}, r"not on the file's step grid"),
])
def test_a_window_outside_the_basin_file_is_refused(basin_files, window, message):
    import hybridhydro as hh

    folder, _ = basin_files
    params = load_params(write(folder / "c.yaml", {"extends": None, "basin": {"source": "data/b.nc", **window}}))
    with pytest.raises(ValueError, match=message):
        hh.open_basin(params.basin)


def test_new_basin_keys_left_null_keep_the_hash():
    """basin.spinup_start and basin.initial_states at their default (null) hash as before they existed:
    runs made earlier stay current. Set, they change it."""
    import hashlib

    from hybridhydro.pipeline.record import BASIN_GENERATORS, params_hash

    params = load_params(PARAMS / "cance.yaml")
    data = params.model_dump(mode="json")
    data.pop("stages")
    for key in ("spinup_start", "initial_states", *BASIN_GENERATORS):
        data["basin"].pop(key)
    data.pop("new_basin")  # stage 00's section, at its defaults, hashes as before it existed too
    assert params_hash(params) == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    spun = params.model_copy(update={"basin": params.basin.model_copy(update={"spinup_start": "2014-09-01 00:00:00"})})
    assert params_hash(spun) != params_hash(params)
    elsewhere = params.model_copy(update={"new_basin": params.new_basin.model_copy(update={"ngauge": 3})})
    assert params_hash(elsewhere) != params_hash(params)


def test_base_yaml_documents_every_basin_key():
    text = (PARAMS / "base.yaml").read_text()
    for key in ("source", "start", "end", "spinup_start", "initial_states"):
        assert f"\n  {key}:" in text, key
