"""Parameter transforms of the gradient optimisers: calibrate, the params and the protocol."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import hybridhydro as hh
from hybridhydro import protocol
from hybridhydro.calibration.space import SearchSpace
from hybridhydro.pipeline import ParamsError, load_params


def test_sbs_coordinates_are_log_logit_asinh_and_invert():
    low = {"v": jnp.array([1e-6, 0.0, -50.0, 1.0])}
    high = {"v": jnp.array([1000.0, 1.0, 50.0, 1000.0])}
    x = {"v": jnp.array([200.0, 0.3, -2.0, 5.0])}
    space = SearchSpace(x, low, high, "sbs")
    z = space.to_opt(x)["v"]
    np.testing.assert_allclose(z, [np.log(200.0), np.log(0.3 / 0.7), np.arcsinh(-2.0), np.log(5.0)], rtol=1e-6)
    np.testing.assert_allclose(space.from_opt({"v": z})["v"], x["v"], rtol=1e-5)
    lo, hi = space.opt_bounds({"v": z})
    np.testing.assert_allclose(lo["v"], [np.log(1e-6), np.log(1e-6 / (1 - 1e-6)), np.arcsinh(-50.0), 0.0], rtol=1e-4, atol=1e-6)
    # beyond the bounds, values come back clipped to them (never outside the model's range)
    np.testing.assert_allclose(space.from_opt({"v": jnp.array([20.0, 30.0, 10.0, -5.0])})["v"], [1000.0, 1.0, 50.0, 1.0],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="not one of normalize, sbs"):
        SearchSpace(x, low, high, "log")


@pytest.fixture(scope="module")
def basin():
    return hh.synthetic_basin(nrow=8, ncol=8, ntime=48)


def test_the_transform_changes_the_path_not_the_start(basin):
    common = dict(progress=False, gauges="all")
    normal = hh.calibrate(basin, "gr4-lr", "distributed", "lbfgsb", 4, **common)
    logs = hh.calibrate(basin, "gr4-lr", "distributed", "lbfgsb", 4, transform="sbs", **common)
    assert normal.history["cost"].iloc[0] == pytest.approx(logs.history["cost"].iloc[0], rel=1e-6)
    assert logs.history["cost"].iloc[-1] < logs.history["cost"].iloc[0]
    assert not np.allclose(normal.parameters["cp"], logs.parameters["cp"], equal_nan=True)
    for name, (lo, hi) in logs.options["bounds"].items():
        values = np.asarray(logs.parameters[name])
        values = values[np.isfinite(values)]
        assert values.min() >= lo - 1e-6 * abs(lo) and values.max() <= hi + 1e-6 * abs(hi), name
    assert (normal.options["transform"], logs.options["transform"]) == ("normalize", "sbs")


def test_a_transform_where_it_cannot_apply_is_refused(basin):
    with pytest.raises(ValueError, match=r"transform='sb' is not a transform; did you mean 'sbs'\?"):
        hh.calibrate(basin, "gr4-lr", "distributed", "lbfgsb", 1, transform="sb", progress=False)
    with pytest.raises(ValueError, match="'ann' calibrates network weights"):
        hh.calibrate(basin, "gr4-lr", "ann", "adam", 1, transform="sbs", progress=False)
    with pytest.raises(ParamsError, match="optimizers.ann.transform"):
        load_params({"calibration": {"optimizers": {"ann": {"transform": "sbs"}}}})
    with pytest.raises(ParamsError, match="transform"):
        load_params({"calibration": {"optimizers": {"distributed": {"transform": "logs"}}}})


def test_the_protocol_takes_the_transform_from_the_params(basin):
    split = protocol.make_split(basin)
    opt = load_params({"calibration": {"optimizers": {"distributed": {"maxiter": 2, "transform": "sbs"}}}}).calibration.optimizers
    r = protocol.train_model(basin, "gr4-distributed", split, settings=opt, progress=False)
    assert r.options["transform"] == "sbs"
    # a hybrid pre-calibrates its parent with sbs (uniform), then trains in the transform asked for
    h = protocol.train_model(basin, "gr4_mlp-distributed", split, settings=opt, hybrid={"hidden": (4,)}, progress=False)
    assert h.options["transform"] == "sbs"


def test_sbs_takes_a_bound_at_one_in_its_stride(basin):
    """kw's bkw lies in (0.001, 1]: its logit bound is infinite, which sbs must take (it once raised
    ZeroDivisionError, so params/paper.yaml could not calibrate gr4-uniform)."""
    r = hh.calibrate(basin, "gr4-kw", "uniform", "sbs", 1, progress=False, gauges="all")
    assert np.isfinite(r.history["cost"]).all() and 1e-3 <= float(np.nanmax(r.parameters["bkw"])) <= 1.0
