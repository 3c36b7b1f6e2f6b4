"""Gradients of the forward model: reverse mode against central finite differences, in float64.

What is checked, on a small synthetic basin (8 x 8 grid, 48 hourly steps with one storm) and
the pure core :func:`~hybridhydro.simulate.simulate_arrays`:

* ``jax.grad`` of a scalar loss of the gauge discharge with respect to every distributed
  parameter field and every initial-state field, for every hydrological structure (lr routing,
  and kw for some): finite, nonzero on the cells, and equal to central finite differences along
  random directions (one per field and one through all fields at once) and for single cells;
* ``jax.vjp`` of the whole routed discharge field (time, cell) with a random cotangent;
* checkpointed scans (``checkpoint_every``) give the same gradient as plain ones, and on a long
  run they keep the memory of the compiled gradient small.

Finite differences need float64 (float32 round-off ``~1e-7 / h`` swamps any useful ``h``), so
the module switches ``jax_enable_x64`` on and restores it afterwards; silent rank promotion is
an error here, as in the style guide. Parameter values are away from the kinks of the model
(stores neither empty nor full, ``kexc`` small so that gr4_ode's Newton converges): a central
difference across a ``max``/``min`` switch would not be a derivative.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hybridhydro
from hybridhydro.mesh import routing_plan
from hybridhydro.model import simulate_arrays
from hybridhydro.structure_name import parse_structure

DT = 3600.0
ROUTING_FIELDS = ("llr", "akw", "bkw", "hlr")  # act on the inflow from upstream cells
HYDROLOGY = ("gr4", "gr5", "gr6", "grc", "grd", "loieau", "gr4_ode")
FD_RTOL = 1e-5
# Central-difference step relative to each field's scale. Round-off in the difference is
# ~1e-16·L/h, large against weak directions (ci moves L by ~1e-5 of itself): h = 1e-6 is too
# small (errors ~2e-5). A larger h crosses kinks: with h = 1e-4 a few cells flip a branch
# (gr5, gr6 with kw), which biases the difference by up to 0.5 %. h = 1e-5 gives ≲ 2e-6
# (measured on these cases with h from 1e-3 to 1e-7).
FD_STEP = 1e-5

# Typical value (centre of the random per-cell draw) and scale of every field. Levels sit mid
# store; kexc is small (|kexc| << ct / 4: gr4_ode's implicit step is well posed).
CENTRE = {
    "ci": 2.0, "cp": 300.0, "ct": 150.0, "kexc": -0.5, "aexc": 0.3, "be": 10.0, "cl": 300.0,
    "ca": 300.0, "cc": 200.0, "kb": 1.0, "llr": 30.0, "akw": 5.0, "bkw": 0.6,
    "hi": 0.5, "hp": 0.4, "ht": 0.3, "hl": 0.3, "ha": 0.4, "hc": 0.3, "he": -20.0, "hlr": 5.0,
}
# Half-width of the uniform per-cell draw, as a fraction of the centre's magnitude.
SPREAD = 0.2


@pytest.fixture(scope="module", autouse=True)
def float64():
    """float64 and strict rank promotion for this module only; the previous settings return."""
    old = jax.config.jax_enable_x64, jax.config.jax_numpy_rank_promotion
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    yield
    jax.config.update("jax_enable_x64", old[0])
    jax.config.update("jax_numpy_rank_promotion", old[1])


def make_case(nrow=8, ncol=8, ntime=48, seed=3):
    """Routing plan and float64 forcing (time, nac) of a synthetic basin."""
    basin = hybridhydro.synthetic_basin(nrow=nrow, ncol=ncol, ntime=ntime, seed=seed)
    plan = routing_plan(hybridhydro.Mesh.from_dataset(basin))
    forcing = {k: jnp.asarray(plan.to_cells(basin[k].values), jnp.float64) for k in ("prcp", "pet")}
    return plan, forcing


@pytest.fixture(scope="module")
def case(float64):
    plan, forcing = make_case()
    assert float(forcing["prcp"].sum()) > 0  # a storm, so that every store moves
    return plan, forcing


def fields(structure: str, nac: int, seed: int) -> tuple[dict, dict]:
    """Per-cell parameters and initial states of ``structure``: centre x (1 ± SPREAD), float64."""
    s = parse_structure(structure)
    rng = np.random.default_rng(seed)

    def draw(name):
        c = CENTRE[name]
        return jnp.asarray(c + abs(c) * rng.uniform(-SPREAD, SPREAD, nac), jnp.float64)

    return {n: draw(n) for n in s.parameters}, {n: draw(n) for n in s.states}


def scale(name: str) -> float:
    return abs(CENTRE[name])


def gauge_loss(plan, forcing, structure, checkpoint_every=None, reference_seed=None):
    """A function of (parameters, initial states): 1 − NSE of the gauge discharge against the
    discharge of the same structure with other fields (seed ``reference_seed``), summed over
    the gauges; without a reference, the mean squared gauge discharge (m3/s)².

    A calibration-like misfit also keeps the finite differences accurate: its round-off is
    ~eps·|q − q_ref|·|q| rather than ~eps·|q|².
    """

    def run(params, states):
        out = simulate_arrays(
            params, states, forcing, plan, structure=structure, dt=DT, checkpoint_every=checkpoint_every
        )
        return out["q"]

    if reference_seed is None:
        return lambda params, states: jnp.mean(run(params, states) ** 2)
    q_ref = run(*fields(structure, plan.nac, reference_seed))
    spread = jnp.sum((q_ref - q_ref.mean(axis=0, keepdims=True)) ** 2, axis=0)

    def loss(params, states):
        return jnp.sum(jnp.sum((run(params, states) - q_ref) ** 2, axis=0) / spread)

    return loss


def central_difference(f, x: dict, v: dict, h: float) -> float:
    """(f(x + h v) − f(x − h v)) / 2h for pytrees ``x`` and ``v`` (v may omit keys: zero there)."""
    plus = {k: x[k] + h * v[k] if k in v else x[k] for k in x}
    minus = {k: x[k] - h * v[k] if k in v else x[k] for k in x}
    return (float(f(plus)) - float(f(minus))) / (2 * h)


def directional(g: dict, v: dict) -> float:
    return float(sum(jnp.vdot(g[k], v[k]) for k in v))


@pytest.mark.parametrize("structure", [f"{h}-lr" for h in HYDROLOGY] + ["gr4-kw", "gr6-kw"])
def test_gradient_matches_finite_differences(case, structure):
    """jax.grad of a calibration loss (1 − NSE at the gauges) w.r.t. every parameter and
    initial-state field (one value per cell): finite everywhere, nonzero on most cells, and
    equal (rtol 1e-5) to central finite differences along one random direction per field, one
    through all fields at once, and for single cells (the most sensitive one and a random one
    per field)."""
    plan, forcing = case
    seed = zlib.crc32(structure.encode())
    params, states = fields(structure, plan.nac, seed)
    x = {**params, **states}
    names_p = tuple(params)
    loss = gauge_loss(plan, forcing, structure, reference_seed=seed + 1)

    def f(x):
        return loss({k: x[k] for k in names_p}, {k: x[k] for k in x if k not in names_p})

    f = jax.jit(f)
    g = jax.jit(jax.grad(f))(x)
    has_upstream = np.isin(np.arange(plan.nac), np.asarray(plan.downstream))
    rng = np.random.default_rng(0)
    for name in x:
        gk = np.asarray(g[name])
        assert gk.shape == (plan.nac,) and np.all(np.isfinite(gk)), name
        # Every cell drains to the outlet gauge within the run, so every field moves the loss
        # from (nearly) every cell where it acts: routing parameters act on the inflow from
        # upstream, so not on source cells.
        cells = has_upstream if name in ROUTING_FIELDS else np.ones(plan.nac, bool)
        assert np.mean(gk[cells] != 0) > 0.9, (name, np.mean(gk[cells] != 0))

        v = {name: jnp.asarray(scale(name) * rng.standard_normal(plan.nac))}
        ad, fd = directional(g, v), central_difference(f, x, v, FD_STEP)
        assert ad != 0 and abs(ad - fd) <= FD_RTOL * abs(fd), (name, ad, fd)

        for k in (int(np.argmax(np.abs(gk))), int(rng.integers(plan.nac))):
            e = np.zeros(plan.nac)
            e[k] = scale(name)
            v = {name: jnp.asarray(e)}
            ad, fd = directional(g, v), central_difference(f, x, v, FD_STEP)
            # A random cell may barely move the loss (or not at all: a source cell's routing
            # parameter); there the tolerance is relative to the field's strongest cell.
            tol = FD_RTOL * max(abs(fd), 1e-3 * np.abs(gk).max() * scale(name))
            assert abs(ad - fd) <= tol, (name, k, ad, fd)

    v = {name: jnp.asarray(scale(name) * rng.standard_normal(plan.nac)) for name in x}
    ad, fd = directional(g, v), central_difference(f, x, v, FD_STEP)
    assert abs(ad - fd) <= FD_RTOL * abs(fd), ("all fields", ad, fd)


@pytest.mark.parametrize("structure", ["gr4-lr", "gr6-kw", "gr4_ode-lr"])
def test_vjp_of_discharge_field_matches_finite_differences(case, structure):
    """jax.vjp of the routed discharge of every cell and step, (time, nac), with a random
    cotangent c: <vjp(c), v> equals the central difference of <c, discharge> along a random
    direction v through every parameter and initial state (rtol 1e-5). This checks the whole
    Jacobian's action, not only the gauge rows."""
    plan, forcing = case
    params, states = fields(structure, plan.nac, seed=7)

    def discharge(params, states):
        return simulate_arrays(params, states, forcing, plan, structure=structure, dt=DT)["discharge"]

    field, pullback = jax.vjp(discharge, params, states)
    assert field.shape == (forcing["prcp"].shape[0], plan.nac)
    rng = np.random.default_rng(1)
    c = jnp.asarray(rng.standard_normal(field.shape))
    gp, gs = pullback(c)
    for name, gk in {**gp, **gs}.items():
        assert np.all(np.isfinite(np.asarray(gk))) and np.any(np.asarray(gk) != 0), name

    x = {**params, **states}
    v = {name: jnp.asarray(scale(name) * rng.standard_normal(plan.nac)) for name in x}

    @jax.jit
    def projected(x):
        return jnp.vdot(c, discharge({k: x[k] for k in params}, {k: x[k] for k in states}))

    ad = directional({**gp, **gs}, v)
    fd = central_difference(projected, x, v, FD_STEP)
    assert abs(ad - fd) <= FD_RTOL * abs(fd), (ad, fd)


def test_checkpointed_gradient_equals_plain():
    """checkpoint_every only changes what reverse mode stores, not what it computes: the
    gradient w.r.t. every parameter and initial state equals the plain scan's to 1e-10
    (float64), on 240 steps, for gr4_ode (Newton inside the checkpointed hydrology scan) with
    kw (the routing's own checkpointed scan), with chunks of 25 steps that leave a partial last
    chunk (the long-run test below uses chunks that divide the run)."""
    structure, every = "gr4_ode-kw", 25
    plan, forcing = make_case(nrow=6, ncol=6, ntime=240, seed=5)
    params, states = fields(structure, plan.nac, seed=11)
    plain = jax.grad(gauge_loss(plan, forcing, structure), argnums=(0, 1))(params, states)
    chunked = jax.grad(gauge_loss(plan, forcing, structure, every), argnums=(0, 1))(params, states)
    for a, b in zip(plain, chunked):
        for name in a:
            assert np.all(np.isfinite(np.asarray(a[name]))), name
            np.testing.assert_allclose(np.asarray(b[name]), np.asarray(a[name]), rtol=1e-10, atol=0, err_msg=name)


def test_long_run_checkpointed_gradient_is_finite_and_lean():
    """A 2000-step gradient with checkpoint_every ≈ √T runs and is finite and nonzero, and the
    checkpoints drop the time loop's stored intermediates from the compiled gradient.

    XLA's memory analysis of the compiled gradient measures it. Any reverse pass keeps a few
    (time, cell) series whatever the checkpointing: the runoff, the routed discharge and their
    cotangents (4 float64 series, ``T·nac·8`` bytes each). The plain scan stores on top of
    them the intermediates of every step (about 5 more series for gr4-lr); the checkpointed one
    only one carry per chunk, so its temporary memory must stay within 5 such series (floor
    plus headroom) and below the plain scan's by at least 1.5x.
    """
    ntime, every = 2000, 40  # 40 divides 2000, ≈ √2000
    plan, forcing = make_case(nrow=4, ncol=4, ntime=ntime, seed=2)
    params, states = fields("gr4-lr", plan.nac, seed=3)

    def grad_fn(every):
        return jax.jit(jax.grad(gauge_loss(plan, forcing, "gr4-lr", every), argnums=(0, 1)))

    compiled = {k: grad_fn(k).lower(params, states).compile() for k in (None, every)}
    gp, gs = compiled[every](params, states)
    for name, gk in {**gp, **gs}.items():
        gk = np.asarray(gk)
        assert np.all(np.isfinite(gk)) and np.any(gk != 0), name

    analyses = {k: c.memory_analysis() for k, c in compiled.items()}
    if any(a is None for a in analyses.values()):
        pytest.skip("this backend gives no memory analysis")
    series = ntime * plan.nac * 8  # bytes of one float64 (time, cell) series
    plain, chunked = analyses[None].temp_size_in_bytes, analyses[every].temp_size_in_bytes
    assert chunked <= 5 * series < plain, (chunked / series, plain / series)
    assert chunked < plain / 1.5, (chunked, plain)
