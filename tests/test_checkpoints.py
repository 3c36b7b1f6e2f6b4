"""Checkpoints of a calibration: names kept whole, one file written atomically, and a checkpoint
resumed only by the calibration that wrote it (every setting, the starting point and the data)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import hybridhydro as hh
from hybridhydro.calibration import calibrate
from hybridhydro.calibration import checkpoints
from hybridhydro.calibration.checkpoints import checkpoint_file, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def basin():
    b = hh.synthetic_basin(nrow=6, ncol=6, ntime=48, seed=0)
    b["qobs"] = hh.simulate(b, "gr4-lr", {"cp": 300.0, "ct": 60.0})["q"].copy()
    return b


BASE = dict(structure="gr4-lr", mapping="uniform", optimizer="adam", maxiter=2, gauges="all",
            parameters=("cp", "ct"), learning_rate=0.05, progress=False)


def _run(basin, checkpoint, **changes):
    kwargs = {**BASE, **changes}
    return calibrate(basin, checkpoint=checkpoint, checkpoint_every=1, **kwargs)


def test_checkpoint_file_keeps_the_name_whole(tmp_path):
    assert checkpoint_file(tmp_path / "ck_0.01") == tmp_path / "ck_0.01.npz"
    assert checkpoint_file(tmp_path / "ck_0.05") == tmp_path / "ck_0.05.npz"
    assert checkpoint_file(tmp_path / "run.v2.npz") == tmp_path / "run.v2.npz"
    assert checkpoint_file(str(tmp_path / "run")) == tmp_path / "run.npz"


def test_two_checkpoints_with_dotted_names_stay_apart(basin, tmp_path):
    """ck_0.01 and ck_0.05 in one folder: two files, two different results (the second is not
    the first one's checkpoint resumed), and each resumes to its own result."""
    first = _run(basin, tmp_path / "ck_0.01", learning_rate=0.01)
    second = _run(basin, tmp_path / "ck_0.05", learning_rate=0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck_0.01.npz", "ck_0.05.npz"]
    assert not np.array_equal(first.parameters["cp"], second.parameters["cp"], equal_nan=True)
    again = _run(basin, tmp_path / "ck_0.01", learning_rate=0.01)
    np.testing.assert_array_equal(again.parameters["cp"], first.parameters["cp"])
    np.testing.assert_array_equal(again.history["cost"].values, first.history["cost"].values)


def test_an_identical_call_resumes_the_finished_checkpoint(basin, tmp_path):
    done = _run(basin, tmp_path / "ck")
    again = _run(basin, tmp_path / "ck")
    np.testing.assert_array_equal(again.parameters["ct"], done.parameters["ct"])
    assert list(again.history.index) == list(done.history.index)


@pytest.fixture(scope="module")
def written(basin, tmp_path_factory):
    """A checkpoint of the BASE calibration (mismatching calls fail before they write)."""
    path = tmp_path_factory.mktemp("ck") / "ck"
    _run(basin, path)
    return path


def _changed_data(basin):
    b = basin.copy(deep=True)
    b["prcp"][5, 2, 2] = b["prcp"][5, 2, 2] + 1.0
    return b


def _changed_observations(basin):
    b = basin.copy(deep=True)
    b["qobs"][0, 10] = b["qobs"][0, 10] + 0.5
    return b


@pytest.mark.parametrize("changes,line,keys", [
    ({"learning_rate": 0.01}, "learning_rate: 0.01 in this call, 0.05 in the checkpoint", {"learning_rate"}),
    ({"maxiter": 5}, "maxiter: 5 in this call, 2 in the checkpoint", {"maxiter"}),
    ({"period": ("2020-01-01 06:00", "2020-01-02 12:00")},
     r"period: 2020-01-01T07:00:00 .. 2020-01-02T12:00:00 \(30 steps\) in this call, "
     r"2020-01-01T01:00:00 .. 2020-01-03T00:00:00 \(48 steps\) in the checkpoint",
     {"period", "data"}),  # the run stops at the period's end: it reads less forcing
    ({"bounds": {"cp": (10.0, 900.0)}}, r'bounds: .*"cp": \[10.0, 900.0\].* in this call, .*"cp": \[1e-06, 1000.0\]',
     {"bounds"}),
    ({"early_stopping": 3}, "early_stopping: 3 in this call, 0 in the checkpoint", {"early_stopping"}),
    ({"optimizer": "sgd"}, "optimizer: sgd in this call, adam in the checkpoint", {"optimizer"}),
    ({"cost": "kge"}, r'cost: \["kge"\] in this call, \["nse"\] in the checkpoint', {"cost"}),
    ({"cost_options": {"warmup_steps": 6}}, r'cost_options: \{"warmup_steps": 6\} in this call, \{\} in the checkpoint',
     {"cost_options"}),
    ({"regularisation": {"components": ["prior"], "wjreg": 0.1}}, r"regularisation: .*prior.* in this call, null ",
     {"regularisation"}),
    ({"seed": 3}, "seed: 3 in this call, 0 in the checkpoint", {"seed"}),
    ({"ode_substeps": 2}, "ode_substeps: 2 in this call, 4 in the checkpoint", {"ode_substeps"}),
    ({"gauges": "dws"}, r'gauges: \["SYN000"\] in this call, \["SYN000", "SYN001"\] in the checkpoint', {"gauges"}),
    ({"validation_gauges": ["SYN001"]}, r'validation_gauges: \["SYN001"\] in this call, null in the checkpoint',
     {"validation_gauges", "validation_period"}),
    ({"parameters": ("cp",)}, r'parameters: \["cp"\] in this call, \["cp", "ct"\] in the checkpoint',
     {"parameters", "bounds", "start"}),
    ({"initial_parameters": {"cp": 250.0}}, r"start \(the starting point.*\): sha256 \w+… in this call, sha256 \w+… "
                                            "in the checkpoint", {"start"}),
    ({"initial_states": {"hp": 0.3}}, r"start \(the starting point", {"start"}),
])
def test_a_checkpoint_of_other_settings_lists_what_differs(basin, written, changes, line, keys):
    with pytest.raises(ValueError) as err:
        _run(basin, written, **changes)
    text = str(err.value)
    assert f"the checkpoint {written}.npz was written by another calibration" in text
    assert re.search(line, text), text
    assert f"give another checkpoint path, or delete {written}.npz to start over" in text
    listed = {m.group(1) for m in re.finditer(r"\n  - (\w+)", text)}
    assert listed == keys, text  # what changed, and nothing else


@pytest.mark.parametrize("change", [_changed_data, _changed_observations])
def test_a_checkpoint_of_other_data_is_refused(basin, written, change):
    with pytest.raises(ValueError, match=r"(?s)written by another calibration.*- data \(the forcing, observed "
                                         r"discharge.*\): sha256 \w+… in this call, sha256 \w+… in the checkpoint"):
        _run(change(basin), written)


def test_the_checkpoint_is_one_file_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / "ck.v1"
    like = {"x": np.arange(4.0, dtype=np.float32)}
    assert save_checkpoint(path, like, {"signature": {"a": 1}, "iteration": 1}) == tmp_path / "ck.v1.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.v1.npz"]
    # a write that fails half-way leaves the previous checkpoint whole, and no temporary file
    real = np.savez

    def broken(file, **arrays):
        real(file, **{k: v for k, v in list(arrays.items())[:1]})
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"x": like["x"] + 1}, {"signature": {"a": 1}, "iteration": 2})
    monkeypatch.setattr(checkpoints.np, "savez", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.v1.npz"]
    state, meta = load_checkpoint(path, like, {"a": 1})
    np.testing.assert_array_equal(state["x"], like["x"])
    assert meta["iteration"] == 1
    # the arrays and the metadata live in the same archive
    with np.load(tmp_path / "ck.v1.npz") as data:
        assert set(data.files) == {"arr_0", "meta"}
        assert json.loads(data["meta"].tobytes())["iteration"] == 1


def test_a_checkpoint_of_the_older_two_file_format_is_named(tmp_path):
    np.savez(tmp_path / "ck.npz", np.zeros(3))
    (tmp_path / "ck.json").write_text(json.dumps({"signature": {}, "iteration": 1}))
    with pytest.raises(ValueError, match=r"ck.npz holds no metadata: it was written by an older hybridhydro.*delete "
                                         r".*ck.npz and .*ck.json to start over"):
        load_checkpoint(tmp_path / "ck", {"x": np.zeros(3)}, {"a": 1})


def test_a_checkpoint_of_other_code_is_refused_not_read_back(basin, written, monkeypatch):
    """After an upgrade or an edit of the loss, a finished checkpoint is not passed off as this code's result."""
    import hybridhydro.calibration as calibration

    assert re.fullmatch(r"[0-9a-f]{64}", calibration.code_fingerprint())
    monkeypatch.setattr(calibration, "code_fingerprint", lambda: "0" * 64)
    with pytest.raises(ValueError, match=r"- code \(hybridhydro's source code: the checkpoint was written by another "
                                         r"version\): sha256 000000000000… in this call"):
        _run(basin, written)
