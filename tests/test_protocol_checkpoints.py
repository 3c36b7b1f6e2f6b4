"""The pipeline's calibrations checkpoint: a stage interrupted inside any calibration and run
again gives, to the bit, the models of a stage never interrupted (tests/test_resume_pipeline.py
checks the same through the notebooks, in make test-slow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hybridhydro as hh
from hybridhydro import protocol
from hybridhydro.calibration import optimizers

MODELS = ["gr4-uniform", "gr4-distributed", "gr4-ann"]  # sbs, L-BFGS-B, Adam
SETTINGS = {"uniform": {"maxiter": 2}, "distributed": {"maxiter": 5}, "ann": {"maxiter": 4, "learning_rate": 0.01}}


@pytest.fixture(scope="module")
def case():
    basin = hh.synthetic_basin(nrow=8, ncol=8, ntime=48, seed=1)
    return basin, protocol.make_split(basin)


@pytest.fixture(scope="module")
def reference(case, tmp_path_factory):
    basin, split = case
    results, _ = protocol.train_models(basin, MODELS, split, settings=SETTINGS, progress=False,
                                       directory=tmp_path_factory.mktemp("ref"))
    return results


def _same(a, b):
    for name in a.parameters:
        np.testing.assert_array_equal(a.parameters[name], b.parameters[name], err_msg=name)
    pd.testing.assert_frame_equal(a.history.drop(columns="seconds"), b.history.drop(columns="seconds"),
                                  check_dtype=False)
    assert a.best_iteration == b.best_iteration


@pytest.mark.parametrize("model, at", [("gr4-uniform", 5), ("gr4-distributed", 3), ("gr4-ann", 2)])
def test_an_interrupted_stage_resumes_to_the_same_models(case, reference, tmp_path, monkeypatch, model, at):
    basin, split = case
    record = optimizers.Runner.record
    calls = {"n": 0, "model": None}

    def interrupting(self, *args, **kwargs):
        record(self, *args, **kwargs)
        if calls["model"] == model:
            calls["n"] += 1
            if calls["n"] == at:
                raise KeyboardInterrupt  # Ctrl-C inside this calibration, after `at` iterations

    train = protocol.train_model

    def tracking(basin, name, *args, **kwargs):
        calls["model"] = name
        return train(basin, name, *args, **kwargs)

    monkeypatch.setattr(optimizers.Runner, "record", interrupting)
    monkeypatch.setattr(protocol, "train_model", tracking)
    options = dict(settings=SETTINGS, progress=False, directory=tmp_path / "models", checkpoints=tmp_path / "ck")
    with pytest.raises(KeyboardInterrupt):
        protocol.train_models(basin, MODELS, split, **options)
    assert (tmp_path / "ck" / f"{MODELS[0]}.npz").exists()  # the models before it finished and were kept
    monkeypatch.setattr(optimizers.Runner, "record", record)
    calls["model"] = None
    resumed, _ = protocol.train_models(basin, MODELS, split, **options)
    for name in MODELS:
        _same(resumed[name], reference[name])


def test_a_finished_calibration_is_read_back_not_run_again(case, reference, tmp_path, monkeypatch):
    basin, split = case
    options = dict(settings=SETTINGS, progress=False, checkpoints=tmp_path / "ck")
    protocol.train_models(basin, MODELS[:2], split, **options)

    def never(*args, **kwargs):
        raise AssertionError("a finished calibration ran again")

    monkeypatch.setattr(optimizers.Runner, "record", never)
    again, _ = protocol.train_models(basin, MODELS[:2], split, **options)
    for name in MODELS[:2]:
        _same(again[name], reference[name])
    # another setting is not a finished run of this calibration: a clear error, never its result
    with pytest.raises(ValueError, match="maxiter: 6 in this call, 5 in the checkpoint"):
        protocol.train_models(basin, ["gr4-distributed"], split, **{**options, "settings": {"distributed": {"maxiter": 6}}})


def test_a_stale_checkpoint_is_refused_or_restarted_as_asked(case, tmp_path, capsys):
    """A checkpoint of another calibration (here another maxiter; in a pipeline, another version
    of the code) is an error by default; the pipeline's stages restart it, and say so."""
    from hybridhydro.calibration.checkpoints import CheckpointMismatch

    basin, split = case
    ck = tmp_path / "ck"
    protocol.train_models(basin, ["gr4-distributed"], split, settings={"distributed": {"maxiter": 2}},
                          checkpoints=ck, progress=False)
    other = {"distributed": {"maxiter": 3}}
    with pytest.raises(CheckpointMismatch, match="maxiter"):
        protocol.train_models(basin, ["gr4-distributed"], split, settings=other, checkpoints=ck, progress=False)
    results, _ = protocol.train_models(basin, ["gr4-distributed"], split, settings=other, checkpoints=ck,
                                       progress=False, stale_checkpoints="restart")
    assert int(results["gr4-distributed"].history.index.max()) == 3
    assert "is deleted and the training starts over" in capsys.readouterr().out
    with pytest.raises(ValueError, match="stale_checkpoints='ask'"):
        protocol.train_models(basin, ["gr4-distributed"], split, settings=other, checkpoints=ck, progress=False,
                              stale_checkpoints="ask")
