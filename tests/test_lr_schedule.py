"""Learning-rate schedules of the adaptive optimisers: part of calibrate, the params and the protocol."""

from __future__ import annotations

import numpy as np
import pytest

import hybridhydro as hh
from hybridhydro.calibration.optimizers import LR_SCHEDULES, learning_rate_schedule


def test_every_schedule_starts_at_the_rate_and_ends_at_one_percent():
    for name in LR_SCHEDULES:
        lr = learning_rate_schedule(name, 0.01, 100)
        at = (lambda k: float(lr(k))) if callable(lr) else (lambda k: lr)
        assert at(100) == pytest.approx(0.01 if name == "constant" else 1e-4, rel=1e-3), name
        if name == "warmup_cosine":
            assert at(0) == 0.0 and at(10) == pytest.approx(0.01)
        else:
            assert at(0) == pytest.approx(0.01)


@pytest.fixture(scope="module")
def basin():
    return hh.synthetic_basin(nrow=8, ncol=8, ntime=48)


def test_a_schedule_changes_the_training_not_its_start(basin):
    common = dict(progress=False, learning_rate=0.05, gauges="all")
    constant = hh.calibrate(basin, "gr4-lr", "ann", "adam", 4, **common)
    cosine = hh.calibrate(basin, "gr4-lr", "ann", "adam", 4, lr_schedule="cosine", **common)
    assert constant.history["cost"].iloc[0] == cosine.history["cost"].iloc[0]
    assert not np.allclose(constant.history["cost"].iloc[-1], cosine.history["cost"].iloc[-1])
    assert (constant.options["lr_schedule"], cosine.options["lr_schedule"]) == ("constant", "cosine")


def test_a_schedule_where_it_cannot_apply_is_refused(basin):
    with pytest.raises(ValueError, match=r"lr_schedule='cosin' is not a schedule; did you mean 'cosine'\?"):
        hh.calibrate(basin, "gr4-lr", "ann", "adam", 1, lr_schedule="cosin", progress=False)
    with pytest.raises(ValueError, match="lbfgsb has no learning rate"):
        hh.calibrate(basin, "gr4-lr", "distributed", "lbfgsb", 1, lr_schedule="cosine", progress=False)
    with pytest.raises(ValueError, match="adam_smash follows smash's rule with its constant rate"):
        hh.calibrate(basin, "gr4-lr", "ann", "adam_smash", 1, lr_schedule="cosine", progress=False)


def test_the_schedule_is_a_checkpoint_setting_and_a_params_key(basin, tmp_path):
    common = dict(progress=False, checkpoint=tmp_path / "ck", checkpoint_every=1, gauges="all")
    hh.calibrate(basin, "gr4-lr", "ann", "adam", 2, **common)
    with pytest.raises(ValueError, match="lr_schedule: \"cosine\" in this call, \"constant\" in the checkpoint|"
                                         "lr_schedule: cosine in this call, constant in the checkpoint"):
        hh.calibrate(basin, "gr4-lr", "ann", "adam", 2, lr_schedule="cosine", **common)
    params = hh.load_params({"calibration": {"optimizers": {"ann": {"schedule": "warmup_cosine"}}}})
    assert params.calibration.optimizers["ann"].schedule == "warmup_cosine"
    with pytest.raises(Exception, match="schedule"):
        hh.load_params({"calibration": {"optimizers": {"ann": {"schedule": "linear"}}}})
