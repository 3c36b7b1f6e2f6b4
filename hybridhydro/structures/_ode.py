"""gr4_ode: GR4 as a continuous state-space model, one implicit Euler step per time step (spec 4.5).

With x = hp and y = ht (normalised levels) and time in steps:

    dx/dt = [ (1 − x²)·pn − x·(2 − x)·en ] / cp
    dy/dt = [ 0.9·pn·x² − (ct/4)·y⁵ + kexc·y^3.5 ] / ct

(gr4_ude multiplies the rain terms by 1 + f1, the evaporation by 1 + f2, the exchange by
1 + f3 and the outflow by 1 + f4, f ∈ (−1, 1) from its network.)

**Solvers** (``StepContext.ode_solver``, :data:`ODE_SOLVERS`):

* ``"newton"``: smash's scheme, value for value: analytic Jacobian (gr4_ude's network frozen at
  the start of the step, with smash's inexact Jacobian), Cramer's rule, clipping of each
  iterate to [1e-6, 1 − 1e-6], convergence when ‖(δx/x, δy/y)‖ < 1e-6, at most 10 updates.
  The loop exits as soon as every cell has converged (a converged cell is frozen, so the
  values equal those of smash's fixed 10-iteration loop). Gradients: the implicit function
  theorem at the converged root (one 2×2 solve per cell); on cells that did not converge
  (clipped to a bound, wandering on a stiff store, or without a root) Newton's last iterate
  is an artefact, and the gradient is taken through the safeguarded solve of the same
  equations (the ``"conservative"`` solution) instead.
* ``"conservative"`` (beyond smash): the same semi-implicit equations, solved so that the step
  always returns a root in the feasible set. The production equation is a quadratic in x with
  exactly one root in [0, 1] (solved in closed form); the transfer equation is solved by
  Newton safeguarded by bisection inside a bracket that is known to hold a root. When no root
  exists in [0, 1] (the store would overflow), the level is 1 and the surplus leaves as
  ``overflow``, a part of ``qt``. The budget closes with no numerical source at any rain
  intensity; gradients are exact (implicit function theorem at the root, and the overflow's
  own formula).
* ``"implicit"`` (beyond smash): fully implicit, gr4_ude's network evaluated at the new state
  inside the residual, exact Jacobian, implicit-function-theorem gradients at converged roots
  (zero elsewhere).
* ``"heun"``, ``"rk4"``: explicit Runge–Kutta with ``ode_substeps`` sub-steps.

**Solvability** (:func:`transfer_solvability`). The production equation always has exactly
one root in [0, 1] (it is increasing in x, negative at 0 and positive at 1, for any
corrections in (−1, 1)). With x known, the transfer equation reads G(y) = c with

    G(y) = y + a4·y⁵/4 − a3·(kexc/ct)·y^3.5,   c = y0 + 0.9·a1·pn·x²/ct ≥ 0,

(a_k = 1 + f_k, all 1 for gr4_ode). G(0) = 0 ≤ c, so a root exists in [0, 1] **if and only if
c ≤ max G on [0, 1]**, and it is unique when G increases on [0, 1]. Two ways to fail:

* **No root** (overflow): heavy rain on a full store, c > max G. For gr4_ode with kexc = 0 that
  is y0 + 0.9·pn·x²/ct > 1.25. Newton then clips y to 1 − 1e-6 and water disappears (smash does
  the same); the ``"conservative"`` solver spills the surplus instead.
* **Several roots**: G turns down before y = 1 when the exchange gain outgrows the outflow,
  a3·kexc/ct above about 9/14 for a4 = 1 (:data:`WELL_POSED_KEXC_OVER_CT`). That bound only
  guarantees uniqueness; it says nothing of existence, and the corrections move it.

Each step reports ``ode_root_exists`` and ``ode_root_unique`` (1 or 0, with the corrections the
step used) beside the Newton statistics, and the water its solver did not account for as
``source_solver`` (mm per step, see :data:`~hybridhydro.structures.SOURCES`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ._mlp import mlp, mlp_with_input_derivatives
from ._module import StepContext, clean_forcing
from ._operators import interception

NEWTON_MAX_ITERATIONS = 10
NEWTON_TOLERANCE = 1e-6
_LOW, _HIGH = 1e-6, 1.0 - 1e-6
#: For gr4_ode (no corrections) below ``kexc / ct = 9/14`` the transfer equation of the implicit
#: step increases strictly in y on [0, 1]: its root, when it exists, is unique. It does not
#: say that a root exists (see the module docstring and :func:`transfer_solvability`).
WELL_POSED_KEXC_OVER_CT = 9.0 / 14.0
#: Most updates of the ``"conservative"`` solver's safeguarded Newton (it exits when every cell
#: has converged, usually after 3 to 6; bisection alone would need about 30 in float32).
SAFEGUARDED_MAX_ITERATIONS = 60

#: Step solvers of gr4_ode / gr4_ude (``StepContext.ode_solver``).
ODE_SOLVERS = ("newton", "conservative", "implicit", "heun", "rk4")


def ill_posed_cells(ct, kexc):
    """Cells whose transfer equation may have several roots (gr4_ode, no corrections):
    ``kexc ≥ 9/14·ct`` (bool array; ``ct``, ``kexc`` in mm).

    This is about uniqueness only. Whether a step has a root at all depends on the rain and
    the levels: see the per-step diagnostic ``ode_root_exists`` and :func:`transfer_solvability`.
    """
    return jnp.asarray(kexc) >= WELL_POSED_KEXC_OVER_CT * jnp.asarray(ct)


def _p25(y):
    """y^2.5 as y²·√y: XLA's float32 ``pow`` costs several times a square root, and these powers
    dominate a step. Zero (with a zero derivative) at y ≤ 0, through a double where."""
    pos = y > 0.0
    safe = jnp.where(pos, y, 1.0)
    return jnp.where(pos, safe * safe * jnp.sqrt(safe), 0.0)


def _p35(y):
    """y^3.5 as y³·√y (see :func:`_p25`)."""
    pos = y > 0.0
    safe = jnp.where(pos, y, 1.0)
    return jnp.where(pos, safe * safe * safe * jnp.sqrt(safe), 0.0)


def _clip(z):
    """smash's clipping of a Newton iterate: z ≤ 0 → 1e-6, z ≥ 1 → 1 − 1e-6."""
    return jnp.where(z <= 0.0, _LOW, jnp.where(z >= 1.0, _HIGH, z))


def _ones4(like):
    one = jnp.ones_like(like)
    return (one, one, one, one)


def ode_rates(x, y, pn, en, cp, ct, kexc, f=None):
    """Right-hand side of the (corrected) GR4 ODE at (x, y), split into its fluxes.

    Returns ``dx, dy`` (per step) and the flux rates in mm per step: ``infiltration``
    (1 − x²)·pn·(1 + f1), ``evaporation`` x·(2 − x)·en·(1 + f2), ``runoff`` pn·x²·(1 + f1)
    (the rain not infiltrated: 90 % to the transfer store, 10 % direct), ``outflow``
    (ct/4)·y⁵·(1 + f4) and ``exchange`` kexc·y^3.5·(1 + f3). f = None: no corrections.
    """
    f1, f2, f3, f4 = f if f is not None else (0.0, 0.0, 0.0, 0.0)
    rates = {
        "infiltration": (1.0 - x**2) * pn * (1.0 + f1),
        "evaporation": x * (2.0 - x) * en * (1.0 + f2),
        "runoff": pn * x**2 * (1.0 + f1),
        "outflow": 0.25 * (1.0 + f4) * ct * y**5,
        "exchange": (1.0 + f3) * kexc * _p35(y),
    }
    dx = (rates["infiltration"] - rates["evaporation"]) / cp
    dy = (0.9 * rates["runoff"] - rates["outflow"] + rates["exchange"]) / ct
    return dx, dy, rates


def _residual(x, y, x0, y0, pn, en, cp, ct, kexc, f=None):
    """Implicit Euler residual R(x, y) of the normalised GR4 ODE (dimensionless).

    ``f``: gr4_ude's frozen corrections (f1, f2, f3, f4), or None. They enter as terms added
    to the physics (algebraically the right-hand sides of spec 4.6), so that zero corrections
    give gr4_ode's float values exactly.
    """
    fp = ((1.0 - x**2) * pn - x * (2.0 - x) * en) / cp
    ft = (0.9 * pn * x**2 - 0.25 * ct * y**5 + kexc * _p35(y)) / ct
    r1, r2 = x - x0 - fp, y - y0 - ft
    if f is not None:
        f1, f2, f3, f4 = f
        r1 = r1 - ((1.0 - x**2) * pn * f1 - x * (2.0 - x) * en * f2) / cp
        r2 = r2 - (0.9 * f1 * pn * x**2 - 0.25 * f4 * ct * y**5 + f3 * kexc * _p35(y)) / ct
    return r1, r2


def _newton_matrix(x, y, pn, en, cp, ct, kexc, f=None, g1=None, g2=None):
    """smash's Newton matrix A = ∂R/∂(x, y): analytic physics, plus gr4_ude's terms.

    With ``f``, ``g1 = ∂f/∂hp`` and ``g2 = ∂f/∂ht`` (all frozen at the start of the step), the
    matrix is built as though f followed the iterate (spec 4.6), the inexact Jacobian smash
    uses. Zero corrections give gr4_ode's matrix exactly (a12 = 0).
    """
    a11 = 1.0 + 2.0 * (x * (pn - en) + en) / cp
    a21 = -1.8 * pn * x / ct
    a22 = 1.0 - (3.5 * kexc * _p25(y) - 1.25 * ct * y**4) / ct
    if f is None:
        return a11, jnp.zeros_like(a11), a21, a22
    f1, f2, f3, f4 = f
    a11 = a11 + (
        2.0 * x * pn * f1 + 2.0 * (1.0 - x) * en * f2 - pn * g1[0] * (1.0 - x**2) + en * g1[1] * x * (2.0 - x)
    ) / cp
    a12 = -(pn * g2[0] * (1.0 - x**2) - en * g2[1] * x * (2.0 - x)) / cp
    a21 = a21 - (
        1.8 * pn * x * f1 + 0.9 * pn * x**2 * g1[0] - 0.25 * g1[3] * ct * y**5 + g1[2] * kexc * _p35(y)
    ) / ct
    a22 = a22 - (
        3.5 * f3 * kexc * _p25(y)
        + g2[2] * kexc * _p35(y)
        + 0.9 * g2[0] * pn * x**2
        - 1.25 * f4 * ct * y**4
        - 0.25 * g2[3] * ct * y**5
    ) / ct
    return a11, a12, a21, a22


def _solve_2x2(a11, a12, a21, a22, b1, b2):
    """Cell-wise Cramer's rule for [[a11, a12], [a21, a22]]·v = b (a zero determinant gives 0)."""
    det = a11 * a22 - a12 * a21
    singular = det == 0.0
    safe = jnp.where(singular, 1.0, det)
    v1 = jnp.where(singular, 0.0, (b1 * a22 - a12 * b2) / safe)
    v2 = jnp.where(singular, 0.0, (a11 * b2 - a21 * b1) / safe)
    return v1, v2


# ------------------------------------------------- roots with gradients only where they are roots


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _root(residual, solve, p):
    """``z, converged, iterations = solve(p)``, where ``residual(z, p) = 0`` on converged cells.

    ``z`` stacks the unknowns on axis 0 (one 2x2 or 1x1 block per cell); ``converged`` has the
    shape of ``z``, one flag per unknown. Reverse mode applies the implicit function theorem,
    dz/dp = −(∂R/∂z)⁻¹·∂R/∂p, where every unknown of the cell converged. Where only the first
    did (2x2 blocks whose first equation does not involve the second unknown: the production
    store of the semi-implicit step, while the transfer store sits clipped at its bound), the
    second is held constant, as it is, and the first takes the theorem on its own equation.
    Elsewhere the returned point is not a root and its cotangent is zero. ``residual`` and
    ``solve`` are module-level functions of ``p`` alone (no closures), so every
    differentiable input travels in ``p``.
    """
    return solve(p)


def _root_fwd(residual, solve, p):
    z, converged, iterations = solve(p)
    return (z, converged, iterations), (z, converged, p)


def _jacobian_blocks(residual, z, p):
    """∂R/∂z as its per-cell blocks: ``cols[j][i] = ∂R_i/∂z_j`` (forward mode, one pass per unknown)."""
    n = z.shape[0]
    cols = []
    for j in range(n):
        e = jnp.zeros_like(z).at[j].set(1.0)
        cols.append(jax.jvp(lambda v: residual(v, p), (z,), (e,))[1])
    return cols


def _root_bwd(residual, solve, res, cotangents):
    z, converged, p = res
    return (_ift_cotangent(residual, z, converged, p, cotangents[0]),)


def _ift_cotangent(residual, z, converged, p, gz):
    """The cotangent of ``p`` by the implicit function theorem at ``z`` (see :func:`_root`)."""
    cols = _jacobian_blocks(residual, z, p)
    a = cols[0][0]
    safe = jnp.where(a == 0.0, 1.0, a)
    first_alone = jnp.where(a == 0.0, 0.0, gz[0] / safe)
    if z.shape[0] == 1:
        lam = jnp.where(converged, first_alone[None], 0.0)
    else:  # Aᵀ·λ = g: the transpose of the block [[c0[0], c1[0]], [c0[1], c1[1]]]
        l1, l2 = _solve_2x2(cols[0][0], cols[0][1], cols[1][0], cols[1][1], gz[0], gz[1])
        both = converged[0] & converged[1]
        zero = jnp.zeros_like(l1)
        l1 = jnp.where(both, l1, jnp.where(converged[0], first_alone, zero))
        l2 = jnp.where(both, l2, zero)
        lam = jnp.stack([l1, l2])
    _, vjp = jax.vjp(lambda q: residual(z, q), p)
    (gp,) = vjp(-lam)
    return gp


_root.defvjp(_root_fwd, _root_bwd)


def _shape_of(*arrays):
    return jnp.broadcast_shapes(*(jnp.shape(a) for a in arrays))


# ------------------------------------------------------------------ smash's Newton ("newton")


def _semi_residual(z, p):
    r1, r2 = _residual(z[0], z[1], p["x0"], p["y0"], p["pn"], p["en"], p["cp"], p["ct"], p["kexc"], p.get("f"))
    return jnp.stack([r1, r2])


def _smash_newton(p):
    """smash's iteration, exiting once every cell has converged (a converged cell is frozen)."""
    f, g1, g2 = p.get("f"), p.get("g1"), p.get("g2")
    args = (p["pn"], p["en"], p["cp"], p["ct"], p["kexc"])

    def cond(carry):
        done, k = carry[2], carry[-1]
        return (k < NEWTON_MAX_ITERATIONS) & ~jnp.all(done)

    def body(carry):
        x, y, done, x_done, iterations, k = carry
        r1, r2 = _residual(x, y, p["x0"], p["y0"], *args, f)
        a11, a12, a21, a22 = _newton_matrix(x, y, *args, f, g1, g2)
        if f is None:  # gr4_ode: a12 = 0, the production store does not see the transfer store
            det, dx_num = a11 * a22, r1 * a22
        else:
            det, dx_num = a11 * a22 - a12 * a21, r1 * a22 - a12 * r2
        singular = det == 0.0
        safe_det = jnp.where(singular, 1.0, det)  # double-where: no 1/0 in the discarded branch
        dx = jnp.where(singular, 0.0, -dx_num / safe_det)
        dy = jnp.where(singular, 0.0, -(a11 * r2 - a21 * r1) / safe_det)
        x_new = _clip(x + dx)
        y_new = _clip(y + dy)
        converged = jnp.sqrt((dx / x_new) ** 2 + (dy / y_new) ** 2) < NEWTON_TOLERANCE
        # gr4_ode: x's update does not involve y, so x can converge while y sits clipped
        x_converged = jnp.abs(dx / x_new) < NEWTON_TOLERANCE if f is None else converged
        x_done = jnp.where(done, x_done, x_converged)
        x = jnp.where(done, x, x_new)
        y = jnp.where(done, y, y_new)
        iterations = iterations + jnp.where(done, 0, 1).astype(jnp.int32)
        return x, y, done | converged, x_done | converged, iterations, k + 1

    shape = p["x0"].shape
    false = jnp.zeros(shape, bool)
    carry = (p["x0"], p["y0"], false, false, jnp.zeros(shape, jnp.int32), 0)
    # Most cells converge in one to three updates: the first two are written out, where XLA
    # fuses them with the step around them; a loop takes the rest, exiting once every cell has
    # converged. (A converged cell is frozen, so the values are those of smash's fixed loop.)
    for _ in range(2):
        carry = body(carry)
    x, y, done, x_done, iterations, _ = jax.lax.while_loop(cond, body, carry)
    return jnp.stack([x, y]), jnp.stack([x_done | done, done]), iterations


def _broadcast_inputs(x0, y0, pn, en, cp, ct, kexc):
    shape = _shape_of(x0, y0, pn, en, cp, ct, kexc)
    dtype = jnp.result_type(x0, y0, pn, en, cp, ct, kexc)
    names = ("x0", "y0", "pn", "en", "cp", "ct", "kexc")
    return {k: jnp.broadcast_to(jnp.asarray(v, dtype), shape) for k, v in zip(names, (x0, y0, pn, en, cp, ct, kexc))}


def newton_implicit_euler(x0, y0, pn, en, cp, ct, kexc, corrections=None):
    """Solve one implicit Euler step of the GR4 ODE by smash's Newton–Raphson.

    Parameters
    ----------
    x0, y0
        Production and transfer levels at the start of the step (normalised).
    pn, en
        Neutralised rain and PET, held constant over the step (mm per step).
    cp, ct
        Production and transfer capacities (mm).
    kexc
        Exchange coefficient (mm per step).
    corrections
        gr4_ude only: ``(f, g1, g2)``, the network's four corrections and their derivatives
        with respect to hp and ht, each a 4-tuple of arrays, evaluated once at the start of
        the step (smash's semi-implicit scheme, spec 4.6). None for gr4_ode.

    Returns
    -------
    x, y
        Levels at the end of the step (normalised).
    iterations
        Newton updates made on each cell (int32, 1 to 10); 10 without convergence too.
    residual
        Euclidean norm of R(x, y) at the returned levels (dimensionless; no gradient).

    Gradients: implicit function theorem at converged cells, zero at the others (module
    docstring).
    """
    p = _broadcast_inputs(x0, y0, pn, en, cp, ct, kexc)
    if corrections is not None:
        f, g1, g2 = corrections
        p.update(f=tuple(f), g1=tuple(g1), g2=tuple(jax.lax.stop_gradient(g2)))
        p["g1"] = tuple(jax.lax.stop_gradient(g1))  # they shape the iterates, not the root
    z, _, iterations = _newton_root(p)
    r = jax.lax.stop_gradient(_semi_residual(z, p))
    return z[0], z[1], iterations, jnp.sqrt(r[0] ** 2 + r[1] ** 2)


@jax.custom_vjp
def _newton_root(p):
    """smash's Newton (:func:`_smash_newton`) with gradients that are true where it is not a root.

    Where a cell converged, the implicit function theorem at its root (:func:`_ift_cotangent`).
    Where it did not (clipped to a bound, wandering on a stiff store such as cp near 0, or no
    root at all), Newton's last iterate is an artefact of the iteration: the gradient is taken
    through the safeguarded solve of the same equations instead (:func:`_conservative_levels`:
    the exact production root, the transfer root or the full store), the solution Newton was
    after. Computed only when some cell needs it.
    """
    return _smash_newton(p)


def _newton_root_fwd(p):
    z, converged, iterations = _smash_newton(p)
    return (z, converged, iterations), (z, converged, p)


def _newton_root_bwd(res, cotangents):
    z, converged, p = res
    gz = cotangents[0]
    solved = converged[0] & converged[1]
    gp = _ift_cotangent(_semi_residual, z, jnp.stack([solved, solved]), p, jnp.where(solved, gz, 0.0))

    def through_safeguarded(gp):
        _, vjp = jax.vjp(_conservative_levels, p)
        (g_safe,) = vjp(jnp.where(solved, 0.0, gz))
        return jax.tree_util.tree_map(jnp.add, gp, g_safe)

    gp = jax.lax.cond(jnp.all(solved), lambda gp: gp, through_safeguarded, gp)
    return (gp,)


_newton_root.defvjp(_newton_root_fwd, _newton_root_bwd)


def _conservative_levels(p):
    """The levels (x, y) of :func:`conservative_implicit_euler` for Newton's inputs ``p``."""
    x, y, *_ = conservative_implicit_euler(p["x0"], p["y0"], p["pn"], p["en"], p["cp"], p["ct"], p["kexc"], p.get("f"))
    return jnp.stack([x, y])


# ------------------------------------------------- solvability, and the conservative solver


def _transfer_g(y, a3k, a4):
    """G(y) = y + a4·y⁵/4 − a3k·y^3.5 and G'(y) (dimensionless)."""
    return y + 0.25 * a4 * y**5 - a3k * _p35(y), 1.0 + 1.25 * a4 * y**4 - 3.5 * a3k * _p25(y)


def transfer_solvability(c, a3k, a4, bisections: int = 40):
    """Whether the transfer equation G(y) = c of an implicit step has a root in [0, 1], and one only.

    ``c = y0 + 0.9·(1 + f1)·pn·x²/ct`` (≥ 0), ``a3k = (1 + f3)·kexc/ct``, ``a4 = 1 + f4 > 0``.
    G' decreases on [0, y_m] and increases after, y_m = (1.75·a3k/a4)^(2/3) (a3k > 0; G' ≥ 1
    otherwise). So G increases on [0, 1] iff G'(min(y_m, 1)) > 0 (unique root); otherwise G
    has a local maximum at y1, the zero of G' in (0, y_m), found by bisection, and
    max G = max(G(y1), G(1)). A root exists iff c ≤ max G.

    Returns ``exists, unique`` (bool), ``y_top`` (a level in [0, 1] where G is largest; G(0) = 0
    ≤ c ≤ G(y_top) brackets a root when one exists) and ``g_top = G(y_top)``.
    """
    positive = a3k > 0.0
    ym = jnp.where(positive, (1.75 * jnp.where(positive, a3k, 1.0) / a4) ** (2.0 / 3.0), 1.0)
    ym = jnp.minimum(ym, 1.0)
    unique = ~positive | (_transfer_g(ym, a3k, a4)[1] > 0.0)
    g1 = _transfer_g(jnp.ones_like(c), a3k, a4)[0]

    def local_max(_):
        def bisect(_, bracket):
            lo, hi = bracket
            mid = 0.5 * (lo + hi)
            up = _transfer_g(mid, a3k, a4)[1] > 0.0
            return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

        lo, _ = jax.lax.fori_loop(0, bisections, bisect, (jnp.zeros_like(ym), ym))
        return lo

    # Only pay for the bisection when some cell has a turning G (rare: large kexc/ct).
    y1 = jax.lax.cond(jnp.all(unique), lambda _: jnp.ones_like(ym), local_max, None)
    g_y1 = _transfer_g(y1, a3k, a4)[0]
    top_is_y1 = ~unique & (g_y1 > g1)
    y_top = jnp.where(top_is_y1, y1, 1.0)
    g_top = jnp.where(top_is_y1, g_y1, g1)
    return c <= g_top, unique, y_top, g_top


def production_root(x0, pn, en, cp, a1=1.0, a2=1.0):
    """The production store's implicit Euler level, in closed form (normalised, in [0, 1]).

    x − x0 = [(1 − x²)·a1·pn − x·(2 − x)·a2·en]/cp is the quadratic (a − b)·x² + (1 + 2b)·x −
    (x0 + a) = 0 with a = a1·pn/cp ≥ 0, b = a2·en/cp ≥ 0; it increases on [0, 1], so its root
    there is unique: x = 2·(x0 + a)/((1 + 2b) + √D), D = (1 + 2b)² + 4·(a − b)·(x0 + a), the
    form without cancellation.
    """
    a = a1 * pn / cp
    b = a2 * en / cp
    big_b = 1.0 + 2.0 * b
    disc = jnp.maximum(big_b**2 + 4.0 * (a - b) * (x0 + a), 0.0)
    return jnp.clip(2.0 * (x0 + a) / (big_b + jnp.sqrt(disc)), 0.0, 1.0)


def _transfer_residual(z, p):
    g, _ = _transfer_g(z[0], p["a3k"], p["a4"])
    return (g - p["c"])[None]


def _safeguarded_transfer(p):
    """Newton on G(y) = c inside the bracket [0, y_top], bisecting when Newton leaves it."""
    c, a3k, a4 = p["c"], p["a3k"], p["a4"]
    tol = 4.0 * jnp.finfo(c.dtype).eps

    def cond(carry):
        _, _, _, done, _, k = carry
        return (k < SAFEGUARDED_MAX_ITERATIONS) & ~jnp.all(done)

    def body(carry):
        y, lo, hi, done, iterations, k = carry
        g, dg = _transfer_g(y, a3k, a4)
        r = g - c
        lo = jnp.where(r <= 0.0, y, lo)
        hi = jnp.where(r >= 0.0, y, hi)
        safe = jnp.where(dg > 0.0, dg, 1.0)
        newton = y - r / safe
        inside = (dg > 0.0) & (newton > lo) & (newton < hi)
        y_new = jnp.where(inside, newton, 0.5 * (lo + hi))
        converged = (r == 0.0) | (jnp.abs(y_new - y) <= tol * jnp.maximum(y_new, tol)) | (hi - lo <= tol * hi)
        y = jnp.where(done, y, y_new)
        iterations = iterations + jnp.where(done, 0, 1).astype(jnp.int32)
        return y, lo, hi, done | converged, iterations, k + 1

    shape = c.shape
    lo, hi = jnp.zeros(shape, c.dtype), p["y_top"]
    y = jnp.clip(p["y0"], lo, hi)
    init = (y, lo, hi, ~p["solve"], jnp.zeros(shape, jnp.int32), 0)
    y, _, _, done, iterations, _ = jax.lax.while_loop(cond, body, init)
    return y[None], (done & p["solve"])[None], iterations


def conservative_implicit_euler(x0, y0, pn, en, cp, ct, kexc, f=None):
    """One semi-implicit Euler step that always returns a root in the feasible set.

    The equations are those of :func:`newton_implicit_euler` (gr4_ude's corrections ``f``
    frozen at the start of the step). x: :func:`production_root`; y: Newton safeguarded by
    bisection in [0, y_top] (:func:`transfer_solvability`). Where no root exists in [0, 1],
    y = 1 and the surplus ``overflow = ct·(c − G(1))`` (mm) leaves the store to the discharge.

    Returns ``x, y, iterations, overflow, exists, unique``.
    """
    p = _broadcast_inputs(x0, y0, pn, en, cp, ct, kexc)
    a1, a2, a3, a4 = f if f is not None else _ones4(p["x0"])
    if f is not None:
        a1, a2, a3, a4 = 1.0 + a1, 1.0 + a2, 1.0 + a3, 1.0 + a4
    x = production_root(p["x0"], p["pn"], p["en"], p["cp"], a1, a2)
    ct = p["ct"]
    c = p["y0"] + 0.9 * a1 * p["pn"] * x**2 / ct
    a3k = a3 * p["kexc"] / ct
    exists, unique, y_top, _ = transfer_solvability(*jax.lax.stop_gradient((c, a3k, a4)))
    q = {"c": c, "a3k": a3k, "a4": jnp.broadcast_to(a4, c.shape), "y0": jax.lax.stop_gradient(p["y0"])}
    q.update(y_top=y_top, solve=exists)
    z, _, iterations = _root(_transfer_residual, _safeguarded_transfer, q)
    y = jnp.where(exists, z[0], 1.0)
    g1 = 1.0 + 0.25 * a4 - a3k
    overflow = jnp.where(exists, 0.0, ct * (c - g1))
    return x, y, iterations, overflow, exists, unique


# ------------------------------------------------------------ the fully implicit UDE ("implicit")


def _network_corrections(x, y, p):
    """gr4_ude's corrections at a state (x, y): 4-tuple, zero where ``p['keep']`` is False."""
    z = jnp.stack(jnp.broadcast_arrays(x, y, p["nn_pn"], p["en"]), axis=-1)
    f = jnp.where(p["keep"][..., None], mlp(p["nn"], z), 0.0)
    return tuple(f[..., k] for k in range(4))


def _full_residual(z, p):
    f = _network_corrections(z[0], z[1], p) if "nn" in p else None
    dx, dy, _ = ode_rates(z[0], z[1], p["pn"], p["en"], p["cp"], p["ct"], p["kexc"], f)
    return jnp.stack([z[0] - p["x0"] - dx, z[1] - p["y0"] - dy])


def _exact_newton(p):
    """Newton with the exact Jacobian of the fully implicit residual, smash's clipping and test."""

    def cond(carry):
        done, k = carry[1], carry[3]
        return (k < p["max_iterations"]) & ~jnp.all(done)

    def body(carry):
        z, done, x_done, k, n = carry
        r = _full_residual(z, p)
        cx, cy = _jacobian_blocks(_full_residual, z, p)
        dx, dy = _solve_2x2(cx[0], cy[0], cx[1], cy[1], -r[0], -r[1])
        z_new = _clip(z + jnp.stack([dx, dy]))
        converged = jnp.sqrt((dx / z_new[0]) ** 2 + (dy / z_new[1]) ** 2) < NEWTON_TOLERANCE
        # without a network x's equation does not involve y (see _smash_newton)
        x_converged = jnp.abs(dx / z_new[0]) < NEWTON_TOLERANCE if "nn" not in p else converged
        x_done = jnp.where(done, x_done, x_converged)
        n = n + jnp.where(done, 0, 1).astype(jnp.int32)
        return jnp.where(done, z, z_new), done | converged, x_done | converged, k + 1, n

    shape = p["x0"].shape
    false = jnp.zeros(shape, bool)
    init = (jnp.stack([p["x0"], p["y0"]]), false, false, 0, jnp.zeros(shape, jnp.int32))
    z, done, x_done, _, n = jax.lax.while_loop(cond, body, init)
    return z, jnp.stack([x_done | done, done]), n


def fully_implicit_euler(
    x0, y0, pn, en, cp, ct, kexc, nn_parameters=None, *, nn_pn=None, keep=None, max_iterations=NEWTON_MAX_ITERATIONS
):
    """One fully implicit Euler step, gr4_ude's corrections evaluated at the new state.

    Solves x = x0 + F_x(x, y; f(x, y)), y = y0 + F_y(x, y; f(x, y)) by Newton with the exact
    Jacobian (forward-mode derivatives of the residual, the network included), smash's
    clipping and tolerance, at most ``max_iterations`` updates. Gradients do not go through the
    iterations: the implicit function theorem at converged roots (one 2x2 solve per cell),
    zero on cells that did not converge.

    ``nn_parameters``: the network's weights (None: gr4_ode); it is fed (x, y, ``nn_pn``, en),
    ``nn_pn`` defaulting to ``pn``; ``keep``: where the corrections apply (default: every cell).
    Returns ``x, y, iterations, residual`` as :func:`newton_implicit_euler`.
    """
    p = _broadcast_inputs(x0, y0, pn, en, cp, ct, kexc)
    p["max_iterations"] = jnp.asarray(max_iterations, jnp.int32)
    if nn_parameters is not None:
        p["nn"] = dict(nn_parameters)
        p["nn_pn"] = jnp.broadcast_to(pn if nn_pn is None else nn_pn, p["x0"].shape)
        p["keep"] = jnp.ones(p["x0"].shape, bool) if keep is None else jnp.broadcast_to(keep, p["x0"].shape)
    z, _, iterations = _root(_full_residual, _exact_newton, p)
    r = jax.lax.stop_gradient(_full_residual(z, p))
    return z[0], z[1], iterations, jnp.sqrt(r[0] ** 2 + r[1] ** 2)


# ------------------------------------------------------------------------- explicit schemes

_TABLEAUS = {
    # (stage coefficients a_i on the previous stage's slope, weights b_i)
    "heun": ((0.0, 1.0), (0.5, 0.5)),
    "rk4": ((0.0, 0.5, 0.5, 1.0), (1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0)),
}


def _discharge(rates):
    """qt and lexc (mm per step) from the flux rates."""
    return rates["outflow"] + 0.1 * rates["runoff"] + rates["exchange"], rates["exchange"]


def explicit_step(x0, y0, pn, en, cp, ct, kexc, corrections_at=None, scheme="rk4", substeps=4):
    """One time step of the (corrected) GR4 ODE by an explicit Runge–Kutta scheme.

    ``scheme``: ``"heun"`` (2 stages, order 2) or ``"rk4"`` (4 stages, order 4), ``substeps``
    equal sub-steps; the network is evaluated at every stage. Every flux is accumulated with
    the scheme's own weights, so the stores' change equals the fluxes exactly (to round-off).
    Stage states are clipped to [0, 1] before evaluating the rates (powers of a negative level
    are undefined); an unstable step (too few sub-steps) ends with a level outside [0, 1], which
    is clipped: the water that clipping creates or removes is returned as ``clip`` (mm).

    Returns ``x, y`` and the flux depths over the step (mm): ``qt``, ``lexc``, ``clip`` and the
    rates of :func:`ode_rates` integrated.
    """
    if scheme not in _TABLEAUS:
        raise ValueError(f"unknown explicit scheme {scheme!r}; choose heun or rk4")
    a, b = _TABLEAUS[scheme]
    h = 1.0 / int(substeps)

    def rates_at(x, y):
        x, y = jnp.clip(x, 0.0, 1.0), jnp.clip(y, 0.0, 1.0)
        f = corrections_at(x, y) if corrections_at is not None else None
        return ode_rates(x, y, pn, en, cp, ct, kexc, f)

    def substep(_, carry):
        x, y, totals = carry
        kx = ky = None
        sx = jnp.zeros_like(x)
        sy = jnp.zeros_like(y)
        acc = {k: jnp.zeros_like(x) for k in totals if k != "clip"}
        for ai, bi in zip(a, b):
            xi = x if kx is None else x + ai * h * kx
            yi = y if ky is None else y + ai * h * ky
            kx, ky, rates = rates_at(xi, yi)
            sx, sy = sx + bi * kx, sy + bi * ky
            acc = {k: acc[k] + bi * rates[k] for k in acc}
        totals = {k: totals[k] + h * acc[k] if k in acc else totals[k] for k in totals}
        x_raw, y_raw = x + h * sx, y + h * sy
        x_new, y_new = jnp.clip(x_raw, 0.0, 1.0), jnp.clip(y_raw, 0.0, 1.0)
        totals["clip"] = totals["clip"] + (x_new - x_raw) * cp + (y_new - y_raw) * ct
        return x_new, y_new, totals

    shape = _shape_of(x0, y0, pn, en, cp, ct, kexc)
    zeros = jnp.zeros(shape, jnp.result_type(x0, pn))
    names = ("infiltration", "evaporation", "runoff", "outflow", "exchange", "clip")
    x, y, totals = jax.lax.fori_loop(
        0, int(substeps), substep, (jnp.broadcast_to(x0, shape), jnp.broadcast_to(y0, shape), {k: zeros for k in names})
    )
    qt, lexc = _discharge(totals)
    return x, y, {**totals, "qt": qt, "lexc": lexc}


# ----------------------------------------------------------------------------------- the step


def ude_corrections(ctx: StepContext, hp, ht, pn, en, missing):
    """gr4_ude's network outputs f and their derivatives g1 = ∂f/∂hp, g2 = ∂f/∂ht at the start
    of the step (one forward pass carrying the tangents along hp and along ht:
    :func:`~._mlp.mlp_with_input_derivatives`, ``jax.jacfwd`` restricted to the two state inputs). Each a 4-tuple of ``(nac,)`` arrays,
    zero where the forcing is missing. ``pn`` is taken before imperviousness, as in smash."""
    if ctx.nn_parameters is None:
        raise ValueError("gr4_ude is a hybrid structure: give the weights of its network (nn_parameters)")
    z = jnp.stack(jnp.broadcast_arrays(hp, ht, pn, en), axis=-1)
    f, (g1, g2) = mlp_with_input_derivatives(ctx.nn_parameters, z, (0, 1))
    keep = ~missing[..., None]
    f, g1, g2 = (jnp.where(keep, a, 0.0) for a in (f, g1, g2))
    split = lambda a: tuple(a[..., k] for k in range(4))  # noqa: E731
    return split(f), split(g1), split(g2)


def _step_diagnostics(x, y, y0, pn, en, cp, ct, kexc, f):
    """``ode_root_exists``, ``ode_root_unique`` of the step's transfer equation at the returned x,
    with the corrections ``f`` the step used (None: gr4_ode)."""
    a1, _, a3, a4 = (1.0 + fk for fk in f) if f is not None else _ones4(x)
    c = y0 + 0.9 * a1 * pn * x**2 / ct
    exists, unique, _, _ = transfer_solvability(*jax.lax.stop_gradient((c, a3 * kexc / ct, jnp.broadcast_to(a4, c.shape))))
    return exists, unique


def gr4_ode_step(theta, h, p, e, ctx: StepContext, hybrid: tuple[str, ...] = ()):
    """gr4_ode (spec 4.5): interception store, then one step of the GR4 ODE.

    Imperviousness scales pn only (not en, unlike the algebraic production store); the
    removed share is reported as ``source_impervious``. There is no percolation and no floor
    on the direct branch: with kexc < 0, qt may be negative. Missing forcing: every state is
    kept and qt = lexc = 0.

    With ``hybrid`` (the network's output names) this is gr4_ude (spec 4.6): the network of
    ``ctx.nn_parameters``, fed (hp, ht, pn, en), corrects the rain (f1, every pn term), the
    evaporation (f2), the exchange (f3) and the transfer-store outflow (f4) of the ODE. The
    rain correction does not conserve water: the effective rain is (1 + f1)·pn.

    ``ctx.ode_solver`` chooses the scheme (module docstring): ``"newton"`` (smash's),
    ``"conservative"``, ``"implicit"``, ``"heun"``, ``"rk4"``.

    Besides the smash fluxes ``pn, en, lexc, qt`` (mm per step), the fluxes dict holds ``es``
    (soil evaporation, mm per step: the rate at the end-of-step level for the implicit
    schemes, integrated for the explicit ones), ``overflow`` (mm per step, the surplus the
    conservative solver sends to ``qt``; 0 for the others), the sources ``source_impervious``,
    ``source_solver`` (the water the step's unsolved implicit equation creates, cp·R1 + ct·R2
    at the returned levels; for the explicit schemes what their clipping creates), for gr4_ude
    ``rain_correction`` (mm per step: f1·pn, the water the rain correction adds) and the
    corrections ``correction_<output>`` (at the start of the step for ``newton`` and
    ``conservative``, at its end otherwise), and the diagnostics ``newton_iterations`` (int32,
    updates made; 0 where forcing is missing and with the explicit schemes),
    ``newton_residual`` (norm of the implicit Euler residual at the returned state,
    dimensionless), ``ode_root_exists`` and ``ode_root_unique`` (int32, 1 or 0; 1 where forcing
    is missing).
    """
    missing, p, e = clean_forcing(p, e)
    ei, pn, en, hi = interception(p, e, theta["ci"], h["hi"])
    pn_raw = pn  # the network sees pn before imperviousness, as in smash
    pn = (1.0 - ctx.imperviousness) * pn
    impervious = pn - pn_raw
    cp, ct, kexc = theta["cp"], theta["ct"], theta["kexc"]
    solver = ctx.ode_solver
    if solver not in ODE_SOLVERS:
        raise ValueError(f"unknown ode_solver {solver!r}; choose one of {', '.join(ODE_SOLVERS)}")
    if hybrid and ctx.nn_parameters is None:
        raise ValueError("gr4_ude is a hybrid structure: give the weights of its network (nn_parameters)")
    x0, y0 = h["hp"], h["ht"]

    def corrections_at(x, y):
        z = jnp.stack(jnp.broadcast_arrays(x, y, pn_raw, en), axis=-1)
        f = jnp.where(missing[..., None], 0.0, mlp(ctx.nn_parameters, z))
        return tuple(f[..., k] for k in range(4))

    net = corrections_at if hybrid else None
    overflow = jnp.zeros_like(pn)
    if solver == "newton":  # smash's Newton also needs the network's state derivatives
        corrections = ude_corrections(ctx, x0, y0, pn_raw, en, missing) if hybrid else None
        f_used = corrections[0] if hybrid else None
        x, y, iterations, residual = newton_implicit_euler(x0, y0, pn, en, cp, ct, kexc, corrections)
        exists, unique = _step_diagnostics(x, y, y0, pn, en, cp, ct, kexc, f_used)
        rates = ode_rates(x, y, pn, en, cp, ct, kexc, f_used)[2]
    elif solver == "conservative":
        f_used = net(x0, y0) if hybrid else None
        x, y, iterations, overflow, exists, unique = conservative_implicit_euler(x0, y0, pn, en, cp, ct, kexc, f_used)
        rates = ode_rates(x, y, pn, en, cp, ct, kexc, f_used)[2]
    elif solver == "implicit":
        x, y, iterations, residual = fully_implicit_euler(
            x0, y0, pn, en, cp, ct, kexc, ctx.nn_parameters if hybrid else None, nn_pn=pn_raw, keep=~missing
        )
        f_used = net(x, y) if hybrid else None
        rates = ode_rates(x, y, pn, en, cp, ct, kexc, f_used)[2]
        exists, unique = _step_diagnostics(x, y, y0, pn, en, cp, ct, kexc, jax.lax.stop_gradient(f_used))
    else:
        x, y, totals = explicit_step(x0, y0, pn, en, cp, ct, kexc, net, solver, ctx.ode_substeps)
        rates = totals
        iterations = jnp.zeros(jnp.shape(x), jnp.int32)
        sx, sy = jax.lax.stop_gradient((x, y))
        f_used = net(sx, sy) if hybrid else None
        exists, unique = _step_diagnostics(sx, sy, y0, pn, en, cp, ct, kexc, f_used)
    qt, lexc = _discharge(rates)
    qt = qt + overflow
    es = rates["evaporation"]
    rain_correction = rates["infiltration"] + rates["runoff"] - pn
    # What the stores gained beyond what the fluxes brought: zero for an exact root.
    store_in = rates["infiltration"] - es + 0.9 * rates["runoff"] - rates["outflow"] + rates["exchange"] - overflow
    if solver in ("heun", "rk4"):
        source = totals["clip"]
    else:
        source = jax.lax.stop_gradient((x - x0) * cp + (y - y0) * ct - store_in)
    if solver in ("conservative", "heun", "rk4"):
        # the implicit Euler residual at the returned levels (the overflow left the store)
        sx, sy, f_end, spill = jax.lax.stop_gradient((x, y, f_used, overflow))
        dx, dy, _ = ode_rates(sx, sy, *jax.lax.stop_gradient((pn, en, cp, ct, kexc)), f_end)
        residual = jnp.sqrt((sx - x0 - dx) ** 2 + (sy - y0 - dy + spill / ct) ** 2)
    zero = jnp.zeros_like(qt)
    h_new = {
        "hi": jnp.where(missing, h["hi"], hi),
        "hp": jnp.where(missing, x0, x),
        "ht": jnp.where(missing, y0, y),
    }
    fluxes_extra = {}
    if hybrid:
        fluxes_extra = {f"correction_{n}": jnp.where(missing, zero, fk) for n, fk in zip(hybrid, f_used)}
        fluxes_extra["rain_correction"] = jnp.where(missing, zero, rain_correction)
    one = jnp.ones(jnp.shape(qt), jnp.int32)
    fluxes = {
        **fluxes_extra,
        "pn": pn,  # zero where missing: the store was fed zero forcing there
        "en": en,
        "es": jnp.where(missing, zero, es),
        "lexc": jnp.where(missing, zero, lexc),
        "qt": jnp.where(missing, zero, qt),
        "overflow": jnp.where(missing, zero, overflow),
        "source_impervious": jnp.where(missing, zero, impervious),
        "source_solver": jnp.where(missing, zero, source),
        "newton_iterations": jnp.where(missing, 0, iterations),
        "newton_residual": jnp.where(missing, zero, jax.lax.stop_gradient(residual)),
        "ode_root_exists": jnp.where(missing | exists, one, 0),
        "ode_root_unique": jnp.where(missing | unique, one, 0),
    }
    return h_new, fluxes
