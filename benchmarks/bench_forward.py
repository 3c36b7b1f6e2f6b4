"""Time forward runs and the cost gradient of gr4-lr: hybridhydro against hydro-smash, same run.

1. Cance (1440 hourly steps, 383 active cells): ``smash.forward_run(model)`` against
   ``hybridhydro.simulate(inputs)`` (the run with its xarray result) and ``hybridhydro.run(inputs)``
   (the pure run alone), on ``inputs = hybridhydro.prepare_run(basin, "gr4-lr")``: the
   preparation (mesh, routing plan, forcing on the active cells, ``ci`` fit) is made once, as
   smash makes it once when it builds its ``Model``; neither is timed in the rows, both are
   reported in the notes.
2. France (906 044 active cells, the bundled 32 hourly steps): the same, with the throughput
   in cells x steps per second.
3. Cance, value and gradient of the cost with respect to the distributed parameters
   (cp, ct, kexc, llr): ``smash.backward_run(model, mapping="distributed",
   return_options={"cost": True, "grad": True})`` against ``jax.jit(jax.value_and_grad(loss))``
   of a loss on ``hybridhydro.run(inputs, theta)``. smash's default cost (its ``backward_run`` docstring): ``jobs_cmpt="nse"``
   at ``gauge="dws"`` (the most downstream gauge), no warm-up, i.e. ``1 - NSE`` at the outlet.

Both sides use smash's default parameters and initial states (with ``ci`` fitted to the forcing,
as both do at sub-daily steps). Each timed call is repeated; the table gives medians. JAX
outputs are ``block_until_ready``'d. "compile s" is the first call's time minus the steady
median (tracing + XLA compilation). The "Forward and gradient (gr4-lr)" section of
``benchmarks/results.md`` is replaced (other sections are kept).

Usage: ``.venv/bin/python benchmarks/bench_forward.py [--repeat N] [--skip-france]``
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import HERE, load, process_notes, publish, quiet, run_header
from _common import block as _block
from _common import timed as _timed

import numpy as np

SECTION = "## Forward and gradient (gr4-lr)"
STRUCTURE = "gr4-lr"
GRAD_PARAMS = ("cp", "ct", "kexc", "llr")




def _forward(name: str, ds, setup, mesh, repeat: int, rows: list, notes: list) -> dict:
    import smash

    import hybridhydro as hh

    t0 = time.perf_counter()
    model = quiet(lambda: smash.Model(setup, mesh))()
    s_build = time.perf_counter() - t0
    s_first, s_med, s_model = _timed(quiet(lambda: smash.forward_run(model)), repeat)

    t0 = time.perf_counter()
    inputs = hh.prepare_run(ds, STRUCTURE)
    o_prepare = time.perf_counter() - t0
    o_first, o_med, o_ds = _timed(lambda: hh.simulate(inputs), repeat)
    core = lambda: _block(hh.run(inputs))  # noqa: E731
    c_first, c_med, c_out = _timed(core, repeat)

    nt, nac = inputs.ntime, inputs.nac
    work = nt * nac
    # Agreement check: gauge discharge against smash's (same parameters).
    q_smash = np.asarray(s_model.response.q, dtype=np.float64)  # (ng, nt)
    q_ours = np.asarray(o_ds["q"].values, dtype=np.float64)
    order = [list(ds["gauge"].values).index(c) for c in s_model.mesh.code] if "gauge" in ds.coords else range(len(q_ours))
    q_ours = q_ours[list(order)]
    if q_smash.size and q_smash.shape == q_ours.shape:
        scale = np.nanmax(np.abs(q_smash)) or 1.0
        agree = f"max |q_ours - q_smash| / max|q_smash| at the gauges = {np.nanmax(np.abs(q_ours - q_smash)) / scale:.2e}"
    else:
        agree = f"no gauge discharge to compare (smash q {q_smash.shape}, ours {q_ours.shape})"
    notes.append(
        f"{name}: {nt} steps x {nac} cells; {agree}; throughput smash {work / s_med:.3g}, "
        f"`simulate` {work / o_med:.3g}, `run` {work / c_med:.3g} cells x steps / s; set-up once: "
        f"smash `Model` {s_build:.2f} s, `prepare_run` {o_prepare:.2f} s."
    )
    rows.append((f"{name} forward: smash `forward_run` vs `simulate(inputs)`", s_med, o_med, o_first - o_med))
    rows.append((f"{name} forward: smash `forward_run` vs `run(inputs)`", s_med, c_med, c_first - c_med))
    return {"smash": s_med, "simulate": o_med, "core": c_med, "work": work, "model": model}


def _gradient(ds, model, repeat: int, rows: list, notes: list) -> dict:
    import jax
    import jax.numpy as jnp
    import smash

    import hybridhydro as hh

    inputs = hh.prepare_run(ds, STRUCTURE)
    plan = inputs.labels.plan
    # smash's "dws": the most downstream gauge(s): the one with the largest drainage area.
    gauge_area = ds["flwacc"].values[plan.rows[plan.gauge_index], plan.cols[plan.gauge_index]]
    g = int(np.argmax(gauge_area))
    qobs = np.asarray(ds["qobs"].values[g], dtype=np.float32)
    valid = np.isfinite(qobs) & (qobs >= 0)
    mask = jnp.asarray(valid)
    qo = jnp.asarray(np.where(valid, qobs, 0.0).astype(np.float32))
    n = valid.sum()
    mean_o = qo.sum() / n
    denom = jnp.sum(jnp.where(mask, (qo - mean_o) ** 2, 0.0))
    theta = {k: inputs.parameters[k] for k in GRAD_PARAMS}

    def loss(theta):
        qs = hh.run(inputs, theta)["q"][:, g]
        return jnp.sum(jnp.where(mask, (qs - qo) ** 2, 0.0)) / denom  # 1 - NSE

    vg = jax.jit(jax.value_and_grad(loss))
    o_first, o_med, (cost, grad) = _timed(lambda: _block(vg(theta)), repeat)

    bwd = quiet(
        lambda: smash.backward_run(model, mapping="distributed", return_options={"cost": True, "grad": True})
    )
    s_first, s_med, (_, ret) = _timed(bwd, repeat)
    finite = all(bool(jnp.all(jnp.isfinite(v))) for v in grad.values())
    notes.append(
        f"Gradient: cost 1 - NSE at gauge {ds['gauge'].values[g]} (smash `gauge='dws'`); smash cost "
        f"{float(ret.cost):.6f}, ours {float(cost):.6f}; our gradient wrt {', '.join(GRAD_PARAMS)} "
        f"({len(GRAD_PARAMS)} x {plan.nac} values) finite: {finite}. smash's gradient is wrt its "
        "normalised control vector (`control_tfm='normalize'`), so values differ by the bound scaling; "
        "the work is the same (one forward + one adjoint sweep). Ours rematerialises each hydrology "
        "step in the backward pass (`simulate_arrays(remat_steps=True)`, the default) and differentiates lr "
        "routing with its hand-written adjoint (`hybridhydro.routing._lr_series`, a custom VJP); no chunked checkpointing."
    )
    rows.append(("Cance value+gradient: smash `backward_run` vs `jax.value_and_grad`", s_med, o_med, o_first - o_med))
    return {"smash": s_med, "ours": o_med}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions on Cance (default 5)")
    parser.add_argument("--france-repeat", type=int, default=3, help="timed repetitions on France (default 3)")
    parser.add_argument("--skip-france", action="store_true", help="leave France out")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE.parent))
    import jax
    import smash

    from hybridhydro import read_smash_dataset

    load_before = load()
    t_start = time.perf_counter()
    rows: list = []
    notes: list = []

    setup, mesh = smash.factory.load_dataset("Cance")
    ds = quiet(lambda: read_smash_dataset("Cance", progress=False))()
    cance = _forward("Cance", ds, setup, mesh, args.repeat, rows, notes)
    grad = _gradient(ds, cance["model"], args.repeat, rows, notes)

    france = None
    if not args.skip_france:
        setup_f, mesh_f = smash.factory.load_dataset("France")
        t0 = time.perf_counter()
        ds_f = quiet(lambda: read_smash_dataset("France", progress=False))()
        notes.append(f"France read by hybridhydro in {time.perf_counter() - t0:.1f} s (not timed in the table).")
        france = _forward("France", ds_f, setup_f, mesh_f, args.france_repeat, rows, notes)
        del ds_f

    notes += process_notes(load_before)

    table = ["| what | smash s | hybridhydro s | ratio smash/ours | compile s |", "|---|---:|---:|---:|---:|"]
    table += [f"| {what} | {s:.4f} | {o:.4f} | {s / o:.2f} | {c:.2f} |" for what, s, o, c in rows]

    goals = []
    if france is not None:
        r = france["smash"] / france["simulate"]
        rc = france["smash"] / france["core"]
        goals.append(
            f"- Forward throughput >= 3x smash on France: **{'met' if r >= 3 else 'missed'}** with `simulate` "
            f"({r:.2f}x); jitted core alone {rc:.2f}x."
        )
    rg = grad["smash"] / grad["ours"]
    goals.append(f"- Gradient >= 5x faster than smash `backward_run` on Cance: **{'met' if rg >= 5 else 'missed'}** ({rg:.2f}x).")

    header = run_header(load_before, t_start, f"jax {jax.__version__} (CPU), hydro-smash {smash.__version__}") + (
        f" Medians of {args.repeat} (Cance) / {args.france_repeat} (France) "
        "timed calls after a first call; compile s = first call minus median."
    )
    publish(SECTION, header, table, goals, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
