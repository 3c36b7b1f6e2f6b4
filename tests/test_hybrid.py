"""Hybrid models through the public API: simulate with networks, their balance, and gradients
from the cost through routing, the ODE and the parameter maps into every network's weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import hybridhydro as hh
from hybridhydro.mapping import make_mapping
from hybridhydro.mesh import routing_plan
from hybridhydro.model import automatic_interception, simulate_arrays
from hybridhydro.structure_name import parse_structure
from hybridhydro.structures import HYBRID_MODULES

RUN = dict(return_fluxes=True, return_states=True, return_discharge_field=True)


@pytest.fixture(scope="module")
def basin():
    return hh.synthetic_basin(nrow=8, ncol=8, ntime=48, seed=0)


@pytest.mark.parametrize("name", list(HYBRID_MODULES))
def test_default_zero_network_gives_the_parent(basin, name):
    parent = HYBRID_MODULES[name].parent
    a = hh.simulate(basin, f"{parent}-lr", **RUN)
    b = hh.simulate(basin, f"{name}-lr", **RUN)
    np.testing.assert_array_equal(b["q"].values, a["q"].values)
    for k in HYBRID_MODULES[name].nn_outputs:
        assert float(np.nanmax(np.abs(b[f"correction_{k}"].values))) == 0.0
    assert b["nn_weight_1"].shape == (16, len(HYBRID_MODULES[name].nn_inputs))


def test_network_forms_are_equivalent(basin):
    net = hh.FluxCorrectionNet.for_structure("gr4_mlp", hidden=(6, 5), initializer="glorot_uniform", seed=3)
    runs = [
        hh.simulate(basin, "gr4_mlp-lr", nn_parameters=form)
        for form in (net, net.weights(), net.to_smash(), {k: np.asarray(v) for k, v in net.weights().items()})
    ]
    for r in runs[1:]:
        np.testing.assert_array_equal(r["q"].values, runs[0]["q"].values)
    parent = hh.simulate(basin, "gr4-lr")
    assert float(np.abs(runs[0]["q"] - parent["q"]).max()) > 1e-4  # the network does something
    again = hh.FluxCorrectionNet.from_weights(hh.network_weights(runs[0]), "gr4_mlp")
    np.testing.assert_array_equal(hh.simulate(basin, "gr4_mlp-lr", nn_parameters=again)["q"].values, runs[0]["q"].values)


@pytest.mark.parametrize("name", ["gr4_mlp", "gr6_mlp", "grc_mlp", "loieau_mlp"])
def test_flux_corrections_conserve_water(basin, name):
    """The *_mlp corrections move water between fluxes: the balance closes, correction = 0."""
    net = hh.FluxCorrectionNet.for_structure(name, initializer="he_uniform", scale=0.3, seed=1)
    result = hh.simulate(basin, f"{name}-lr", nn_parameters=net, **RUN)
    balance = hh.water_balance(result, basin)
    assert float(np.abs(balance["relative_residual"]).max()) < 1e-5
    assert float(np.abs(balance["correction"]).max()) == 0.0


@pytest.mark.parametrize("solver", ["newton", "implicit", "rk4"])
def test_gr4_ude_rain_correction_is_named_in_the_balance(basin, solver):
    """gr4_ude's effective rain is (1 + f1)·pn: the balance shows the water it adds or removes
    as ``correction``, and closes once it is counted."""
    net = hh.FluxCorrectionNet.for_structure("gr4_ude", initializer="he_uniform", scale=0.3, seed=1)
    result = hh.simulate(basin, "gr4_ude-lr", nn_parameters=net, ode_solver=solver, **RUN)
    balance = hh.water_balance(result, basin)
    assert float(np.abs(balance["correction"]).max()) > 1e-3 * float(balance["rain"].max())
    assert float(np.abs(balance["relative_residual"]).max()) < 1e-4
    assert result.attrs["ode_solver"] == solver


def test_bad_networks_say_what_to_change(basin):
    w = hh.FluxCorrectionNet.for_structure("gr4_mlp").weights()
    with pytest.raises(ValueError, match=r"weight_1 has shape \(16, 4\).*expected weight_1 \(16, 5\)"):
        hh.simulate(basin, "gr6_mlp-lr", nn_parameters=w)
    bad = {k: np.array(v) for k, v in w.items()}
    bad["bias_2"][0] = np.inf
    with pytest.raises(ValueError, match="bias_2 holds non-finite values"):
        hh.simulate(basin, "gr4_mlp-lr", nn_parameters=bad)
    with pytest.raises(ValueError, match="gr4 has no flux-correction network"):
        hh.simulate(basin, "gr4-lr", nn_parameters=w)
    with pytest.raises(ValueError, match="nn_parameters must be a dict"):
        hh.simulate(basin, "gr4_mlp-lr", nn_parameters=np.zeros(3))
    with pytest.raises(ValueError, match="unknown ode_solver 'euler'"):
        hh.simulate(basin, "gr4_ude-lr", ode_solver="euler")
    with pytest.raises(ValueError, match="unknown hydrology module 'gr4_lstm'"):
        hh.simulate(basin, "gr4_lstm-lr")
    with pytest.raises(ValueError, match="not a hybrid run"):
        hh.network_weights(hh.simulate(basin, "gr4-lr"))


# ------------------------------------------------------------------------------ gradients



@pytest.mark.parametrize(
    "structure, mapping",
    [
        ("gr4_mlp-lr", "ann"),
        ("gr4_ude-lr", "cnn"),
        pytest.param("gr4_ude-kw", "multi-linear", marks=pytest.mark.slow),
        pytest.param("gr6_mlp-lr", "multi-power", marks=pytest.mark.slow),
    ],
)
def test_gradients_reach_every_network_weight(x64, structure, mapping):
    """Cost -> routing -> hydrology (the ODE for gr4_ude) -> parameter maps -> regionalisation
    network, and -> the flux-correction network: jax.grad against central finite differences
    along random directions, in float64, on a small basin with a storm."""
    basin = hh.synthetic_basin(nrow=6, ncol=6, ntime=30, seed=2)
    plan = routing_plan(hh.Mesh.from_dataset(basin))
    parsed = parse_structure(structure)
    names = [n for n in ("cp", "ct", "kexc", "be", "aexc", "llr", "akw", "bkw") if n in parsed.parameters]
    bounds = {"cp": (50.0, 600.0), "ct": (20.0, 300.0), "kexc": (-2.0, 0.5), "llr": (5.0, 120.0), "be": (1.0, 20.0),
              "aexc": (0.1, 0.9), "akw": (1.0, 20.0), "bkw": (0.3, 0.9)}
    m = make_mapping(mapping, names, basin, bounds={n: bounds[n] for n in names}, seed=4)
    nn = {k: jnp.asarray(v, jnp.float64) for k, v in hh.FluxCorrectionNet.for_structure(
        structure, hidden=6, initializer="he_uniform", scale=0.3, seed=5).weights().items()}
    forcing = {k: jnp.asarray(plan.to_cells(basin[k].values), jnp.float64) for k in ("prcp", "pet")}
    p32, e32 = (plan.to_cells(basin[k].values).astype(np.float32) for k in ("prcp", "pet"))
    ci = automatic_interception(p32, e32, basin["time"].values, float(basin.attrs["dt"]))
    fixed = {"ci": jnp.asarray(ci, jnp.float64)}
    states = {n: jnp.full(plan.nac, 0.3, jnp.float64) for n in ("hi", "hp", "ht", "he")}
    states["hlr"] = jnp.full(plan.nac, 1.0, jnp.float64)
    states = {n: v for n, v in states.items() if n in parsed.states}
    controls = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), m.initial())
    target = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (basin.sizes["time"], basin.sizes["gauge"])))

    def loss(flat):
        c, w = unravel(flat)
        params = {**fixed, **m(c)}
        out = simulate_arrays(params, states, forcing, plan, structure=structure, dt=float(basin.attrs["dt"]),
                              nn_parameters=w, remat_steps=False)
        return jnp.mean((out["q"] - target * jnp.mean(out["q"])) ** 2)

    flat, unravel = ravel_pytree((controls, nn))
    g = jax.grad(loss)(flat)
    assert np.all(np.isfinite(np.asarray(g)))
    c_grad, w_grad = unravel(g)
    for leaf in jax.tree_util.tree_leaves(w_grad) + [jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(c_grad)])]:
        assert float(jnp.abs(leaf).max()) > 0.0  # every block of weights receives a gradient
    rng = np.random.default_rng(1)
    for _ in range(2):
        v = jnp.asarray(rng.normal(size=flat.shape))
        eps = 1e-6
        fd = (loss(flat + eps * v) - loss(flat - eps * v)) / (2 * eps)
        np.testing.assert_allclose(float(g @ v), float(fd), rtol=2e-5)
