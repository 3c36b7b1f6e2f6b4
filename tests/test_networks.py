"""Networks (flax NNX) and mappings: layouts, bounds, the pure crossing, and bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hybridhydro as hh
from hybridhydro import networks
from hybridhydro.mapping import MAPPINGS, make_mapping, transform_descriptors
from hybridhydro.structures import HYBRID_MODULES, check_weights, get_module, initial_weights, mlp


@pytest.fixture(scope="module")
def basin():
    return hh.synthetic_basin(nrow=8, ncol=8, ntime=24, seed=0)


@pytest.mark.parametrize("name", list(HYBRID_MODULES))
def test_flux_correction_net_has_smash_layout(name):
    module = get_module(name)
    net = networks.FluxCorrectionNet.for_structure(name, hidden=(8, 5), initializer="he_uniform", seed=2)
    w = net.weights()
    n_in, n_out = len(module.nn_inputs), len(module.nn_outputs)
    assert {k: v.shape for k, v in w.items()} == {
        "weight_1": (8, n_in), "bias_1": (8,), "weight_2": (5, 8), "bias_2": (5,), "weight_3": (n_out, 5),
        "bias_3": (n_out,),
    }
    z = jax.random.uniform(jax.random.key(0), (7, n_in))
    # the NNX module and the pure core compute the same thing, by hand too
    h = jax.nn.silu(z @ w["weight_1"].T + w["bias_1"])
    h = jax.nn.silu(h @ w["weight_2"].T + w["bias_2"])
    expected = jnp.tanh(h @ w["weight_3"].T + w["bias_3"])
    np.testing.assert_allclose(net(z), expected, rtol=1e-6)
    np.testing.assert_allclose(mlp(w, z), expected, rtol=1e-6)
    # to smash's lists and back
    weights, biases = net.to_smash()
    again = networks.FluxCorrectionNet.from_smash(weights, biases, name)
    for k in w:
        np.testing.assert_array_equal(again.weights()[k], w[k])


def test_zero_initialisation_and_scale():
    net = networks.FluxCorrectionNet.for_structure("gr4_mlp")
    assert all(float(jnp.abs(v).max()) == 0.0 for v in net.weights().values())
    small = networks.FluxCorrectionNet.for_structure("gr4_mlp", initializer="he_uniform", scale=0.1, seed=1)
    big = networks.FluxCorrectionNet.for_structure("gr4_mlp", initializer="he_uniform", seed=1)
    np.testing.assert_allclose(small.weights()["weight_1"], 0.1 * big.weights()["weight_1"], rtol=1e-6)
    assert float(jnp.abs(big.weights()["weight_1"]).max()) <= np.sqrt(6 / 4) + 1e-6  # He-uniform bound


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"weight_1": np.zeros((16, 5)), "bias_1": np.zeros(16), "weight_2": np.zeros((4, 16)), "bias_2": np.zeros(4)},
         r"weight_1 has shape \(16, 5\).*expected weight_1 \(16, 4\)"),
        ({"weight_1": np.zeros((16, 4)), "bias_1": np.zeros(16), "weight_2": np.zeros((3, 16)), "bias_2": np.zeros(3)},
         r"expected weight_2 \(4, 16\).*4 corrections"),
        ({"weight_1": np.full((16, 4), np.nan), "bias_1": np.zeros(16), "weight_2": np.zeros((4, 16)),
          "bias_2": np.zeros(4)}, "non-finite"),
        ({"weight_1": np.zeros((16, 4)), "bias_1": np.zeros(16)}, "at least weight_1, bias_1, weight_2, bias_2"),
        ({"weight_1": np.zeros((16, 4)), "bias_1": np.zeros(16), "weight_2": np.zeros((4, 16)), "bias_2": np.zeros(4),
          "kernel": np.zeros(3)}, "unknown network block"),
        ({"weight_1": np.zeros((16, 4)), "weight_2": np.zeros((4, 16)), "bias_2": np.zeros(4)}, "bias_1 is missing"),
    ],
)
def test_bad_weights_say_what_to_change(weights, match):
    with pytest.raises(ValueError, match=match):
        check_weights(weights, 4, 4, "gr4_mlp")


def test_smash_empty_third_layer_is_dropped():
    w = initial_weights(4, 4, 16)
    w["weight_3"], w["bias_3"] = np.zeros((0,)), np.zeros((0,))
    assert set(check_weights(w, 4, 4, "gr4_mlp")) == {"weight_1", "bias_1", "weight_2", "bias_2"}


def test_unknown_initializer_and_hidden():
    with pytest.raises(ValueError, match="unknown initializer"):
        initial_weights(4, 4, 16, "xavier")
    with pytest.raises(ValueError, match="one or two positive layer widths"):
        initial_weights(4, 4, (8, 8, 8))
    with pytest.raises(ValueError, match="no flux-correction network"):
        networks.FluxCorrectionNet.for_structure("gr4-lr")


# ---------------------------------------------------------------------------------- mappings


def test_descriptor_transforms(basin):
    norm = transform_descriptors(basin, "normalize")
    assert norm.shape == (8, 8, basin.sizes["descriptor"])
    finite = basin["descriptors"].notnull().transpose("y", "x", "descriptor").values
    assert np.allclose(norm[finite].reshape(-1).min(), 0.0) and np.isclose(norm.max(), 1.0)
    std = transform_descriptors(basin, "standardize")
    for k in range(std.shape[-1]):
        values = std[..., k][finite[..., k]]
        assert abs(values.mean()) < 1e-5 and abs(values.std() - 1) < 1e-5
    with pytest.raises(ValueError, match="unknown descriptor transform"):
        transform_descriptors(basin, "minmax")


def test_descriptor_missing_on_an_active_cell_is_an_error(basin):
    bad = basin.copy(deep=True)
    rows, cols = np.nonzero(bad["active_cell"].values == 1)
    bad["descriptors"][0, rows[3], cols[3]] = np.nan
    with pytest.raises(ValueError, match=rf"missing on 1 active cell\(s\), e.g. \(row {rows[3]}, col {cols[3]}\)"):
        make_mapping("multi-linear", ("cp",), bad)
    with pytest.raises(ValueError, match="no descriptors"):
        make_mapping("ann", ("cp",), bad.drop_vars("descriptors"))


@pytest.mark.parametrize("kind", MAPPINGS)
def test_every_mapping_stays_in_bounds_and_has_gradients(basin, kind):
    names = ("cp", "ct", "kexc", "llr")
    m = make_mapping(kind, names, basin, seed=1)
    controls = m.initial({"cp": 300.0, "ct": 80.0, "kexc": -1.0, "llr": 30.0})
    values = m(controls)
    for k, n in enumerate(names):
        v = np.asarray(values[n])
        assert v.shape == (m.nac,)
        assert np.all((v >= m.low[k]) & (v <= m.high[k])), n
    if kind in ("uniform", "distributed", "multi-linear", "multi-power"):  # first guess = the given values
        np.testing.assert_allclose(np.asarray(values["cp"]), 300.0, rtol=1e-4)
    grads = jax.grad(lambda c: sum(jnp.sum(v**2) for v in m(c).values()))(controls)
    leaves = jax.tree_util.tree_leaves(grads)
    assert leaves and all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


def test_unknown_mapping_and_inverted_bounds(basin):
    with pytest.raises(ValueError, match="unknown mapping 'linear'"):
        make_mapping("linear", ("cp",), basin)
    with pytest.raises(ValueError, match=r"bounds of 'cp' are \(1000.0, 1.0\).*swap"):
        make_mapping("uniform", ("cp",), basin, bounds={"cp": (1000.0, 1.0)})


def test_multi_power_needs_non_negative_descriptors(basin):
    with pytest.raises(ValueError, match="descriptor_transform='normalize'"):
        make_mapping("multi-power", ("cp",), basin, descriptor_transform="standardize")


def test_cnn_sees_neighbours(basin):
    """A cell's cnn output changes when a neighbour's descriptor changes; an ann's does not."""
    for kind, expect in (("cnn", True), ("ann", False)):
        m = make_mapping(kind, ("cp",), basin, seed=0)
        base = np.asarray(m(m.initial())["cp"])
        grid = np.array(m.grid)
        r, c = m.cells[0][0], m.cells[1][0]
        neighbour = next((rr, cc) for rr, cc in zip(*m.cells) if abs(rr - r) + abs(cc - c) == 1)
        grid[neighbour[0], neighbour[1], :] += 0.5
        desc = grid[m.cells[0], m.cells[1], :]
        moved = type(m)(**{**m.__dict__, "grid": grid, "descriptors": desc})
        changed = np.asarray(moved(m.initial())["cp"])[0] != base[0]
        assert changed == expect, kind


@pytest.mark.parametrize("kind", ["ann", "cnn"])
def test_regionalisation_outputs_span_each_parameters_bounds(kind):
    """The tanh output is scaled onto [low, high] of each parameter: 0 gives the middle, ±1 the
    bounds. (A span written high + low would pin kexc, bounds (-50, 50), at -50 and still stay
    inside its bounds: staying in bounds is not enough.)"""
    bounds = [(1.0, 1000.0), (-50.0, 50.0), (5.0, 10.0)]
    rng = np.random.default_rng(0)
    if kind == "ann":
        net = networks.DescriptorMLP(2, bounds, hidden=(6,), seed=1)
        head = net.layers[-1]
        inputs = jnp.asarray(rng.normal(size=(7, 2)), jnp.float32)
    else:
        net = networks.DescriptorCNN(2, bounds, seed=1)
        head = net.head
        inputs = jnp.asarray(rng.normal(size=(5, 6, 2)), jnp.float32)
    head.kernel.value = jnp.zeros_like(head.kernel.value)
    low, high = np.array(bounds, np.float32).T
    for bias, want in ((0.0, 0.5 * (low + high)), (30.0, high), (-30.0, low)):
        head.bias.value = jnp.full_like(head.bias.value, bias)
        out = np.asarray(net(inputs)).reshape(-1, 3)
        np.testing.assert_allclose(out, np.broadcast_to(want, out.shape), rtol=1e-5, atol=1e-4)
