"""Time hybrid and ODE structures (gr4_mlp, gr4_ode, gr4_ude, lr routing): hybridhydro against hydro-smash, same run.

Cance (1440 hourly steps, 383 active cells), smash's default parameters and initial states
(``ci`` fitted to the forcing, as both do at sub-daily steps), gr4-lr as the conceptual
reference. The hybrid structures (gr4_mlp, gr4_ude) get the same network on both sides: smash's
``model.set_nn_parameters_weight(initializer="glorot_uniform", random_state=0)`` (biases stay
zero), handed to hybridhydro as smash's pair of lists
``(model.get_nn_parameters_weight(), model.get_nn_parameters_bias())``.

1. Forward: ``smash.forward_run(model)`` against ``hybridhydro.run(inputs)`` on
   ``inputs = hybridhydro.prepare_run(basin, structure, nn_parameters=..., ode_solver="newton")``
   (prepared once, as smash's ``Model`` is built once; ``"newton"`` is smash's scheme), with the
   agreement of the gauge discharge.
2. Value and gradient of ``1 - NSE`` at the most downstream gauge (smash's ``gauge="dws"``)
   with respect to cp, ct, kexc, llr (distributed) and, for the hybrids, the network's weights
   and biases: ``smash.backward_run(model, mapping="distributed", return_options={"cost": True,
   "grad": True})`` against ``jax.jit(jax.value_and_grad(loss))`` over (parameters, weights).
   smash's default ``optimize_options["parameters"]`` (``smash.default_optimize_options``) is
   cp, ct, kexc, llr for gr4 and gr4_ode and adds the network's ``weight_k``/``bias_k`` for the
   hybrids; the script passes that list explicitly and reports the control vector's size
   (``smash.optimize_control_info``).
3. gr4_ode and gr4_ude, ours only: one value+gradient (a training iteration) with each
   ``ode_solver`` in newton, conservative, implicit, rk4 (``ode_substeps=4``).
4. The cost of the network next to its conceptual parent: forward and value+gradient seconds
   of each structure divided by gr4's, ours and smash's.

Each timed call is repeated; the tables give medians. JAX outputs are ``block_until_ready``'d.
"compile s" is the first call's time minus the steady median (tracing + XLA compilation). The
"Hybrid and ODE structures (Cance, lr)" section of ``benchmarks/results.md`` is replaced (other
sections are kept).

Usage: ``.venv/bin/python benchmarks/bench_hybrid.py [--repeat N] [--structures gr4 gr4_ode ...]``
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from _common import HERE, load, process_notes, publish, quiet, run_header
from _common import block as _block
from _common import timed as _timed

import numpy as np

SECTION = "## Hybrid and ODE structures (Cance, lr)"
STRUCTURES = ("gr4", "gr4_mlp", "gr4_ode", "gr4_ude")
HYBRIDS = ("gr4_mlp", "gr4_ude")
ODES = ("gr4_ode", "gr4_ude")
ODE_SOLVERS = (("newton", 4), ("conservative", 4), ("implicit", 4), ("rk4", 4))
GRAD_PARAMS = ("cp", "ct", "kexc", "llr")
FORWARD_GOAL, GRADIENT_GOAL = 3.0, 5.0


def _inputs(ds, structure: str, nn=None, **options):
    """``hybridhydro.prepare_run``: smash's defaults, ``ci`` fitted, the plan on the device."""
    import hybridhydro as hh

    return hh.prepare_run(ds, structure, nn_parameters=nn, **options)


def _smash_model(setup, mesh, hydrology: str):
    """smash's Model of ``<hydrology>-lr``; hybrids get Glorot-uniform weights (seed 0), zero biases."""
    import smash

    model = quiet(lambda: smash.Model(dict(setup, hydrological_module=hydrology, routing_module="lr"), mesh))()
    if hydrology in HYBRIDS:
        model.set_nn_parameters_weight(initializer="glorot_uniform", random_state=0)
    return model


def _our_weights(hydrology: str, model):
    """smash's network, converted by hybridhydro (None for a conceptual structure)."""
    import jax.numpy as jnp

    import hybridhydro as hh
    from hybridhydro.model import network_parameters

    if hydrology not in HYBRIDS:
        return None
    pair = (model.get_nn_parameters_weight(), model.get_nn_parameters_bias())
    return {k: jnp.asarray(v) for k, v in network_parameters(hh.parse_structure(f"{hydrology}-lr"), pair).items()}


def _loss_pieces(ds, plan):
    """Outlet index and the masked observations of ``1 - NSE`` there (smash's ``gauge="dws"``)."""
    import jax.numpy as jnp

    gauge_area = ds["flwacc"].values[plan.rows[plan.gauge_index], plan.cols[plan.gauge_index]]
    g = int(np.argmax(gauge_area))
    qobs = np.asarray(ds["qobs"].values[g], dtype=np.float32)
    valid = np.isfinite(qobs) & (qobs >= 0)
    mask = jnp.asarray(valid)
    qo = jnp.asarray(np.where(valid, qobs, 0.0).astype(np.float32))
    mean_o = qo.sum() / valid.sum()
    denom = jnp.sum(jnp.where(mask, (qo - mean_o) ** 2, 0.0))
    return g, mask, qo, denom


def _value_and_grad(ds, hydrology: str, nn, ode_solver="newton", ode_substeps=4):
    """``jax.jit(jax.value_and_grad(loss))`` over (theta, nn) and its arguments."""
    import jax
    import jax.numpy as jnp

    import hybridhydro as hh

    structure = f"{hydrology}-lr"
    inputs = _inputs(ds, structure, nn, ode_solver=ode_solver, ode_substeps=ode_substeps)
    plan = inputs.labels.plan
    g, mask, qo, denom = _loss_pieces(ds, plan)
    theta = {k: inputs.parameters[k] for k in GRAD_PARAMS}

    def loss(theta, nn):
        qs = hh.run(inputs, theta, nn_parameters=nn)["q"][:, g]
        return jnp.sum(jnp.where(mask, (qs - qo) ** 2, 0.0)) / denom  # 1 - NSE

    argnums = (0, 1) if nn is not None else 0
    vg = jax.jit(jax.value_and_grad(loss, argnums=argnums))
    return lambda: _block(vg(theta, nn)), g, plan


def _grad_agreement(info, smash_grad, grad, plan) -> str:
    """Our gradient against smash's, entry by entry, on smash's control vector.

    smash's entries are named ``<param>-<row>-<col>`` (1-based cell) and ``weight_k-<i>-<j>`` /
    ``bias_k-<i>``; with ``control_tfm='normalize'`` a bounded entry is ``(x - l) / (u - l)``, so
    its raw gradient is smash's divided by ``u - l``; the network's entries are unbounded (nbd 0)
    and untransformed.
    """
    theta, nn = grad if isinstance(grad, tuple) else (grad, {})
    cell = {(int(r), int(c)): k for k, (r, c) in enumerate(zip(plan.rows, plan.cols))}
    ours, theirs, is_nn = [], [], []
    for name, gs, nbd, lo, hi in zip(info["name"], np.asarray(smash_grad), info["nbd"], info["l_raw"], info["u_raw"]):
        key, *idx = str(name).split("-")
        idx = [int(i) - 1 for i in idx]
        if key in theta:
            ours.append(float(theta[key][cell[tuple(idx)]]))
        else:
            ours.append(float(np.asarray(nn[key])[tuple(idx)]))
        theirs.append(float(gs) / (hi - lo) if nbd else float(gs))
        is_nn.append(key not in theta)
    ours, theirs, is_nn = np.array(ours), np.array(theirs), np.array(is_nn)

    def rel(sel):
        scale = np.max(np.abs(theirs[sel])) or 1.0
        return np.max(np.abs(ours[sel] - theirs[sel])) / scale

    text = f"max |g_ours - g_smash| / max|g_smash|: parameters {rel(~is_nn):.1e}"
    if is_nn.any():
        text += f", network {rel(is_nn):.1e}"
    return text


def _finite(tree) -> bool:
    import jax

    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(tree))


def _structure(hydrology, ds, setup, mesh, repeat, rows, notes, res):
    """Forward and value+gradient of one structure, smash and ours."""
    import jax
    import smash

    import hybridhydro as hh

    structure = f"{hydrology}-lr"
    model = _smash_model(setup, mesh, hydrology)
    nn = _our_weights(hydrology, model)
    r = res.setdefault(hydrology, {})

    # 1. forward
    s_first, s_med, s_model = _timed(quiet(lambda: smash.forward_run(model)), repeat)
    r["smash_fwd"] = s_med
    inputs = _inputs(ds, structure, nn, ode_solver="newton")
    core = lambda: _block(hh.run(inputs))  # noqa: E731
    try:
        c_first, c_med, c_out = _timed(core, repeat)
    except Exception as exc:  # a failure inside hybridhydro: reported, not hidden
        notes.append(f"{structure} forward (ours) FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        rows.append((structure, "forward: `forward_run` vs `run`", s_med, None, None))
    else:
        r["ours_fwd"] = c_med
        q_smash = np.asarray(s_model.response.q, dtype=np.float64)  # (ng, nt)
        q_ours = np.asarray(c_out["q"], dtype=np.float64).T  # (ng, nt), ds["gauge"] order
        order = [list(ds["gauge"].values).index(c) for c in s_model.mesh.code]
        q_ours = q_ours[order]
        scale = np.nanmax(np.abs(q_smash)) or 1.0
        r["agree"] = float(np.nanmax(np.abs(q_ours - q_smash)) / scale)
        rows.append((structure, "forward: `forward_run` vs `run`", s_med, c_med, c_first - c_med))

    # 2. value + gradient
    names = list(GRAD_PARAMS) + (
        [f"{w}_{k}" for k in range(1, len(model.get_nn_parameters_weight()) + 1) for w in ("weight", "bias")] if nn is not None else []
    )
    options = {"parameters": names}
    info = smash.optimize_control_info(model, mapping="distributed", optimize_options=options)
    default = list(smash.default_optimize_options(model, mapping="distributed")["parameters"])
    r["control"] = (int(info["n"]), [int(x) for x in info["nbk"]], names, default)
    bwd = quiet(
        lambda: smash.backward_run(
            model, mapping="distributed", optimize_options=options, return_options={"cost": True, "grad": True}
        )
    )
    s_first, s_med, (_, ret) = _timed(bwd, repeat)
    r["smash_vg"] = s_med
    r["smash_cost"] = float(ret.cost)
    r["smash_grad_n"] = int(np.size(ret.grad))
    try:
        vg, g, plan = _value_and_grad(ds, hydrology, nn)
        o_first, o_med, out = _timed(vg, repeat)
    except Exception as exc:
        notes.append(f"{structure} value+gradient (ours) FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        rows.append((structure, "value+gradient: `backward_run` vs `jax.value_and_grad`", s_med, None, None))
        return
    cost, grad = out
    r["ours_vg"], r["ours_vg_compile"] = o_med, o_first - o_med
    r["ours_cost"], r["ours_finite"] = float(cost), _finite(grad)
    r["ours_grad_n"] = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(grad))
    r["gauge"] = str(ds["gauge"].values[g])
    try:
        r["grad_agree"] = _grad_agreement(info, ret.grad, grad, plan)
    except Exception as exc:  # the check is information; it must not stop the timings
        r["grad_agree"] = f"gradient comparison not possible ({type(exc).__name__}: {exc})"
    rows.append((structure, "value+gradient: `backward_run` vs `jax.value_and_grad`", s_med, o_med, o_first - o_med))


def _solvers(hydrology, ds, setup, mesh, repeat, res, notes) -> list:
    """Value+gradient seconds of each ODE solver (ours only)."""
    model = _smash_model(setup, mesh, hydrology)
    nn = _our_weights(hydrology, model)
    r = res.setdefault(hydrology, {})
    out = []
    for solver, substeps in ODE_SOLVERS:
        label = f"{solver} ({substeps} sub-steps)" if solver in ("rk4", "heun") else solver
        if solver == "newton" and "ours_vg" in r:  # timed already, in the first table
            out.append((label, r["ours_vg"], r["ours_vg_compile"], r["ours_cost"], r["ours_finite"]))
            continue
        try:
            vg, _, _ = _value_and_grad(ds, hydrology, nn, ode_solver=solver, ode_substeps=substeps)
            first, med, (cost, grad) = _timed(vg, repeat)
        except Exception as exc:
            notes.append(f"{hydrology}-lr value+gradient with ode_solver={solver!r} FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            out.append((label, None, None, None, None))
            continue
        out.append((label, med, first - med, float(cost), _finite(grad)))
    return out


def _fmt(x, spec=".4f"):
    return "failed" if x is None else format(x, spec)


def _ratio(a, b):
    return "n/a" if a is None or b is None else f"{a / b:.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions after a first call (default 3)")
    parser.add_argument(
        "--structures", nargs="+", default=list(STRUCTURES), choices=STRUCTURES,
        help=f"hydrological modules to time, each with lr routing (default: {' '.join(STRUCTURES)})",
    )
    args = parser.parse_args(argv)
    chosen = [s for s in STRUCTURES if s in args.structures]

    sys.path.insert(0, str(HERE.parent))
    import jax
    import smash

    from hybridhydro import read_smash_dataset

    load_before = load()
    t_start = time.perf_counter()
    rows: list = []
    notes: list = []
    res: dict = {}

    setup, mesh = smash.factory.load_dataset("Cance")
    ds = quiet(lambda: read_smash_dataset("Cance", progress=False))()
    for hydrology in chosen:
        t0 = time.perf_counter()
        _structure(hydrology, ds, setup, mesh, args.repeat, rows, notes, res)
        print(f"{hydrology}-lr: {time.perf_counter() - t0:.0f} s", flush=True)
    solver_rows = {}
    for hydrology in (h for h in chosen if h in ODES):
        t0 = time.perf_counter()
        solver_rows[hydrology] = _solvers(hydrology, ds, setup, mesh, args.repeat, res, notes)
        print(f"{hydrology}-lr solvers: {time.perf_counter() - t0:.0f} s", flush=True)

    # Table 1: smash against ours.
    table = [
        "| structure | what | smash s | hybridhydro s | ratio smash/ours | compile s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    table += [
        f"| {s} | {what} | {sm:.4f} | {_fmt(o)} | {_ratio(sm, o)} | {_fmt(c, '.2f')} |" for s, what, sm, o, c in rows
    ]
    # Table 2: ODE solvers, ours only.
    if solver_rows:
        table += [
            "",
            "Value+gradient (one training iteration) per ODE solver, hybridhydro only (smash has only its Newton scheme):",
            "",
            "| structure | ode_solver | value+grad s | compile s | 1 - NSE | gradient finite | s / newton's |",
            "|---|---|---:|---:|---:|---|---:|",
        ]
        for hydrology, srows in solver_rows.items():
            newton = srows[0][1]
            for label, med, comp, cost, fin in srows:
                table.append(
                    f"| {hydrology}-lr | {label} | {_fmt(med)} | {_fmt(comp, '.2f')} | {_fmt(cost, '.6f')} | "
                    f"{'n/a' if fin is None else fin} | {_ratio(med, newton)} |"
                )
    # Table 3: cost of the network next to its conceptual parent.
    ref = res.get("gr4", {})
    if ref and len(chosen) > 1:
        table += [
            "",
            "Cost of each structure next to its conceptual parent gr4-lr (seconds divided by gr4-lr's, same side):",
            "",
            "| structure | ours forward / gr4 | ours value+grad / gr4 | smash forward / gr4 | smash backward / gr4 |",
            "|---|---:|---:|---:|---:|",
        ]
        for hydrology in chosen:
            r = res.get(hydrology, {})
            table.append(
                f"| {hydrology}-lr | {_ratio(r.get('ours_fwd'), ref.get('ours_fwd'))} | "
                f"{_ratio(r.get('ours_vg'), ref.get('ours_vg'))} | {_ratio(r.get('smash_fwd'), ref.get('smash_fwd'))} | "
                f"{_ratio(r.get('smash_vg'), ref.get('smash_vg'))} |"
            )

    goals = []
    for hydrology in (h for h in ("gr4_ode", "gr4_ude", "gr4_mlp") if h in chosen):
        r = res[hydrology]
        tag = "" if hydrology in ODES else " (no target set; same thresholds, for information)"
        for what, key_s, key_o, goal in (
            ("forward", "smash_fwd", "ours_fwd", FORWARD_GOAL),
            ("value+gradient", "smash_vg", "ours_vg", GRADIENT_GOAL),
        ):
            if r.get(key_o) is None:
                goals.append(f"- {hydrology}-lr {what} >= {goal:g}x smash{tag}: **missed** (ours failed).")
                continue
            x = r[key_s] / r[key_o]
            goals.append(f"- {hydrology}-lr {what} >= {goal:g}x smash{tag}: **{'met' if x >= goal else 'missed'}** ({x:.2f}x).")

    nac = int(mesh["nac"])
    for hydrology in chosen:
        r = res.get(hydrology, {})
        n, nbk, names, default = r.get("control", (None, None, None, None))
        parts = [f"{hydrology}-lr:"]
        if "agree" in r:
            parts.append(f"max |q_ours - q_smash| / max|q_smash| at the gauges = {r['agree']:.2e};")
        if "ours_cost" in r:
            parts.append(
                f"1 - NSE at {r['gauge']} smash {r['smash_cost']:.6f}, ours {r['ours_cost']:.6f}; "
                f"our gradient finite: {r['ours_finite']} ({r['ours_grad_n']} values); {r.get('grad_agree')};"
            )
        if n is not None:
            nn_n = n - len(GRAD_PARAMS) * nac
            parts.append(
                f"smash's control vector: {n} values = {len(GRAD_PARAMS)} x {nac} distributed ({', '.join(GRAD_PARAMS)})"
                + (f" + {nn_n} network weights and biases" if nn_n else "")
                + f" (`optimize_control_info` nbk {nbk}); parameters {names}, the same as smash's default "
                f"(`default_optimize_options`): {names == default}; gradient returned: {r.get('smash_grad_n')} values."
            )
        notes.append(" ".join(parts))
    notes.append(
        "Weights: smash `set_nn_parameters_weight(initializer='glorot_uniform', random_state=0)`, biases zero, "
        "the same arrays handed to hybridhydro (`(model.get_nn_parameters_weight(), model.get_nn_parameters_bias())`). "
        "smash's gradient is wrt its normalised control vector (`control_tfm='normalize'`: bounded entries "
        "(x - l) / (u - l); the network's entries are unbounded and untransformed), ours wrt the raw parameters "
        "and weights; the agreement above compares them entry by entry after dividing smash's by (u - l). The work "
        "is one forward and one adjoint sweep on both sides. Ours: `ode_solver='newton'` (smash's scheme) "
        "in the first table; `remat_steps=True` (default), no chunked checkpointing."
    )
    notes += process_notes(load_before)

    header = run_header(load_before, t_start, f"jax {jax.__version__} (CPU), hydro-smash {smash.__version__}") + (
        f" Cance, 1440 hourly steps x 383 active cells, lr routing, "
        f"smash's default parameters and states. Medians of {args.repeat} timed calls after a first call; "
        "compile s = first call minus median. hybridhydro: `hybridhydro.run` on inputs prepared once by `prepare_run`."
    )
    publish(SECTION, header, table, goals, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
