"""The optimisers of a calibration, each a :class:`Runner` over a :class:`~.problem.Problem`.

* ``"lbfgsb"``: SciPy's L-BFGS-B (bounded quasi-Newton) on the value and gradient from JAX;
* ``"adam_smash"``, ``"adagrad_smash"``: smash's exact update rules (spec 10.4), for results that
  follow smash's iterations (optax's ``"adam"`` and ``"adagrad"`` are the textbook rules; SGD
  without momentum and RMSprop are the same in both);
* ``"adam"``, ``"sgd"``, ``"adagrad"``, ``"rmsprop"``: optax, with smash's default learning
  rates, controls projected into their bounds after each update;
* ``"sbs"``: smash's step-by-step global search (Michel 1989; spec 10.3), gradient-free, for
  the uniform mapping.

Every runner records one history row per iteration, stops early on the monitored cost, and
saves and resumes checkpoints (:mod:`.checkpoints`). :data:`OPTIMIZERS`, :data:`LEARNING_RATES`,
:data:`MAXITER` and :data:`DEFAULT_OPTIMIZER` are the one source of these names and defaults.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from jax.flatten_util import ravel_pytree

from ..progress import bar as progress_bar
from .checkpoints import interrupted, load_checkpoint, save_checkpoint
from .problem import Problem
from .space import SearchSpace

#: Every optimiser :func:`hybridhydro.calibrate` offers (the params schema reads this list).
OPTIMIZERS = ("lbfgsb", "adam", "sgd", "adagrad", "rmsprop", "adam_smash", "adagrad_smash", "sbs")
#: smash's default learning rates (1.1.3 and later, spec 0).
LEARNING_RATES = {"adam": 0.003, "sgd": 0.02, "adagrad": 0.02, "rmsprop": 0.003, "adam_smash": 0.003,
                  "adagrad_smash": 0.02}
#: smash's default maximum iterations (spec 10.2); sbs counts outer iterations.
MAXITER = {"lbfgsb": 100, "adam": 200, "sgd": 200, "adagrad": 200, "rmsprop": 200, "adam_smash": 200,
           "adagrad_smash": 200, "sbs": 50}
#: Learning-rate schedules of the optax optimisers over ``maxiter`` iterations: ``constant``
#: (smash's), ``cosine`` (from the rate down to 1 % of it), ``exponential`` (×0.01 over the run),
#: ``warmup_cosine`` (up from 0 over the first 10 % of the iterations, then cosine down to 1 %).
LR_SCHEDULES = ("constant", "cosine", "exponential", "warmup_cosine")
#: The optimisers a schedule applies to (smash's own rules keep their constant rate).
SCHEDULED = ("adam", "sgd", "adagrad", "rmsprop")


def learning_rate_schedule(name: str, learning_rate: float, maxiter: int):
    """The learning rate per iteration: a float (``constant``) or an optax schedule over ``maxiter``."""
    steps = max(int(maxiter), 1)
    if name == "constant":
        return float(learning_rate)
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, decay_steps=steps, alpha=0.01)
    if name == "exponential":
        return optax.exponential_decay(learning_rate, transition_steps=steps, decay_rate=0.01)
    if name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps=max(steps // 10, 1),
                                                  decay_steps=steps, end_value=0.01 * learning_rate)
    raise ValueError(f"unknown learning-rate schedule {name!r}; choose one of {', '.join(LR_SCHEDULES)}")


#: smash's default optimiser per mapping (every mapping of :data:`hybridhydro.mapping.MAPPINGS`).
DEFAULT_OPTIMIZER = {"uniform": "sbs", "distributed": "lbfgsb", "multi-linear": "lbfgsb", "multi-power": "lbfgsb",
                      "ann": "adam", "cnn": "adam"}


def runner_class(optimizer: str) -> type["Runner"]:
    """The :class:`Runner` subclass that runs ``optimizer``."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    return SBS if optimizer == "sbs" else (LBFGSB if optimizer == "lbfgsb" else Adaptive)


class Runner:
    """Common bookkeeping: history, progress bar, early stopping, checkpoints, Ctrl-C."""

    #: Only checkpoints a resumed run continues bit-identically (calibrate(exact_resume=)).
    exact_resume = False
    #: The adaptive optimisers' learning-rate schedule (:data:`LR_SCHEDULES`).
    lr_schedule = "constant"

    #: max |g| over every leaf of a gradient pytree (smash's ``|proj g|``): one jitted reduction.
    _inf_norm = staticmethod(jax.jit(lambda g: jnp.max(jnp.stack(
        [jnp.max(jnp.abs(x), initial=0.0) for x in jax.tree_util.tree_leaves(g)]))))

    def __init__(self, problem: Problem, optimizer, maxiter, learning_rate, early_stopping, validating,
                 transform: str = "normalize"):
        self.problem, self.optimizer, self.maxiter = problem, optimizer, maxiter
        self.learning_rate = learning_rate
        self.early_stopping = int(early_stopping)
        self.validating = validating
        self.space = SearchSpace(problem.initial, problem.low, problem.high, transform)
        self.value_and_grad = jax.jit(jax.value_and_grad(lambda z: problem.loss(self.space.from_opt(z)), has_aux=True))
        self.value = jax.jit(lambda z: problem.loss(self.space.from_opt(z)))
        self.rows: list[dict] = []
        self.t0 = time.perf_counter()

    def record(self, it, j, jv, g=None, grad_norm=None):
        """One history row; ``g`` a gradient pytree (its inf norm taken in one jitted reduction and
        one transfer), or ``grad_norm`` already computed (as a float)."""
        if grad_norm is None:
            grad_norm = float(self._inf_norm(g)) if g is not None and jax.tree_util.tree_leaves(g) else np.nan
        self.rows.append({"iteration": it, "cost": float(j), "grad_norm": float(grad_norm),
                          "validation_cost": float(jv), "seconds": time.perf_counter() - self.t0})

    def history(self) -> pd.DataFrame:
        h = pd.DataFrame(self.rows).set_index("iteration") if self.rows else pd.DataFrame()
        if not self.validating and "validation_cost" in h:
            h = h.drop(columns="validation_cost")
        return h

    def monitor(self) -> tuple[int, float]:
        """(best iteration, best monitored cost) so far; non-finite costs never count as best (when
        every one is, the first iteration is returned with NaN)."""
        key = "validation_cost" if self.validating else "cost"
        values = np.array([r.get(key, np.nan) for r in self.rows], dtype=np.float64)
        if not values.size:
            return 0, np.inf
        finite = np.isfinite(values)
        if not finite.any():
            return self.rows[0]["iteration"], np.nan
        k = int(np.argmin(np.where(finite, values, np.inf)))
        return self.rows[k]["iteration"], float(values[k])

    def check_first(self, j, jv) -> None:
        """A first guess whose cost is not finite stops the calibration before it starts, with why.

        The observations were checked on the host (:func:`~.problem.build_problem`: no gauge without
        observations, none where a cost component is undefined), so what is left is the simulation.
        """
        for what, value in (("cost", j), ("validation cost", jv if self.validating else 0.0)):
            if not np.isfinite(float(value)):
                raise ValueError(
                    f"calibrate: the {what} of the first guess is {float(value)}, not a number an optimiser can "
                    "lower: the simulated discharge is not finite, or a cost component is undefined on it (e.g. "
                    "lgrm where no simulated discharge is above zero); check initial_parameters, initial_states, "
                    "nn_parameters and the cost"
                )

    def stop_early(self) -> bool:
        if self.early_stopping <= 0 or not self.rows:
            return False
        best, _ = self.monitor()
        return self.rows[-1]["iteration"] - best > self.early_stopping


def adam_smash(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """smash's Adam (spec 10.4): moments bias-corrected by the *constant* 1 - b1 and 1 - b2.

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``, step
    ``lr (m / (1 - b1)) / (sqrt(v / (1 - b2)) + eps)``: lr sign(g) at the first step, about
    0.316 lr m / sqrt(v) later (textbook Adam divides by 1 - b^t instead; that is ``"adam"``).
    """

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return {"m": zeros, "v": zeros}

    def update(g, state, params=None):
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1.0 - b1) * g, state["m"], g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state["v"], g)
        step = jax.tree_util.tree_map(
            lambda m, v: -learning_rate * (m / (1.0 - b1)) / (jnp.sqrt(v / (1.0 - b2)) + eps), m, v)
        return step, {"m": m, "v": v}

    return optax.GradientTransformation(init, update)


def adagrad_smash(learning_rate: float, eps: float = 1e-8):
    """smash's Adagrad (spec 10.4): ``G <- G + g^2`` from 0, step ``lr g / sqrt(G + eps)``
    (optax's ``adagrad``, ``"adagrad"`` here, starts its accumulator at 0.1)."""

    def init(params):
        return {"G": jax.tree_util.tree_map(jnp.zeros_like, params)}

    def update(g, state, params=None):
        acc = jax.tree_util.tree_map(lambda a, g: a + g * g, state["G"], g)
        step = jax.tree_util.tree_map(lambda g, a: -learning_rate * g / jnp.sqrt(a + eps), g, acc)
        return step, {"G": acc}

    return optax.GradientTransformation(init, update)


class Adaptive(Runner):
    """optax Adam, SGD, Adagrad, RMSprop, and smash's own Adam and Adagrad rules, with smash's
    learning rates; bounded controls clipped."""

    def make(self):
        lr = LEARNING_RATES[self.optimizer] if self.learning_rate is None else float(self.learning_rate)
        if self.lr_schedule != "constant":
            lr = learning_rate_schedule(self.lr_schedule, lr, self.maxiter)
        return {"adam": optax.adam, "sgd": optax.sgd, "adagrad": optax.adagrad, "rmsprop": optax.rmsprop,
                "adam_smash": adam_smash, "adagrad_smash": adagrad_smash}[self.optimizer](lr)

    def run(self, checkpoint, checkpoint_every, signature, progress):
        opt = self.make()
        z = self.space.to_opt(self.problem.initial)
        lo, hi = self.space.opt_bounds(z)
        state = opt.init(z)
        it0, best_z = 0, z
        if checkpoint is not None:
            loaded = load_checkpoint(checkpoint, {"z": z, "state": state, "best": z}, signature)
            if loaded is not None:
                saved, meta = loaded
                z, state, best_z, it0 = saved["z"], saved["state"], saved["best"], int(meta["iteration"])
                self.rows = meta["history"]

        @jax.jit
        def update(z, state, g):
            u, state = opt.update(g, state, z)
            z = optax.apply_updates(z, u)
            return jax.tree_util.tree_map(jnp.clip, z, lo, hi), state

        bar = progress_bar(total=self.maxiter, initial=it0, progress=progress, desc=f"calibrate ({self.optimizer})")
        message = f"maxiter {self.maxiter} reached"
        it = it0
        consistent = (z, state, best_z, it0, list(self.rows))
        diverged = False
        try:
            for it in range(it0 + 1, self.maxiter + 1):
                (j, jv), g = self.value_and_grad(z)
                if it == it0 + 1:
                    self.check_first(j, jv)
                if not np.isfinite(float(j)):
                    self.record(it - 1, j, jv, g)  # the history shows where it went
                    best, _ = self.monitor()
                    message = (f"the cost is not finite at iteration {it - 1}: stopped, and returned the controls "
                               f"of iteration {best}, the best (lower the learning rate?)")
                    diverged = True
                    break
                self.record(it - 1, j, jv, g)
                if self.monitor()[0] == it - 1:
                    best_z = z
                if self.stop_early():
                    message = f"early stopping: no improvement for {self.early_stopping} iterations"
                    break
                z, state = update(z, state, g)
                consistent = (z, state, best_z, it, list(self.rows))  # what a Ctrl-C checkpoint holds
                bar.update(1)
                bar.set_postfix(cost=f"{float(j):.5f}")
                if checkpoint is not None and it % checkpoint_every == 0:
                    save_checkpoint(checkpoint, {"z": z, "state": state, "best": best_z},
                                     {"signature": signature, "iteration": it, "history": self.rows})
            else:
                (j, jv), g = self.value_and_grad(z)
                if it0 >= self.maxiter:
                    self.check_first(j, jv)
                self.record(self.maxiter, j, jv, g)
                if self.monitor()[0] == self.maxiter:
                    best_z = z
        except KeyboardInterrupt:
            if checkpoint is not None:
                cz, cstate, cbest, cit, crows = consistent
                save_checkpoint(checkpoint, {"z": cz, "state": cstate, "best": cbest},
                                 {"signature": signature, "iteration": cit, "history": crows})
                raise interrupted(checkpoint, f"iteration {it}") from None
            raise
        finally:
            bar.close()
        best, _ = self.monitor()
        final = best_z if (self.early_stopping > 0 or diverged) else z
        return self.space.from_opt(final), self.history(), best, message


class LBFGSB(Runner):
    """SciPy L-BFGS-B on float64 copies of the normalised controls (smash's factr and pgtol)."""

    def run(self, checkpoint, checkpoint_every, signature, progress):
        from scipy.optimize import minimize

        z0 = self.space.to_opt(self.problem.initial)
        flat0, unravel = ravel_pytree(z0)
        lo, hi = self.space.opt_bounds(z0)
        lo_flat, hi_flat = ravel_pytree(lo)[0], ravel_pytree(hi)[0]
        bounds = [(None if not np.isfinite(a) else float(a), None if not np.isfinite(b) else float(b))
                  for a, b in zip(np.asarray(lo_flat), np.asarray(hi_flat))]
        it0 = 0
        x = np.asarray(flat0, np.float64)
        if checkpoint is not None:
            loaded = load_checkpoint(checkpoint, {"x": flat0}, signature)
            if loaded is not None:
                saved, meta = loaded
                x, it0, self.rows = np.asarray(saved["x"], np.float64), int(meta["iteration"]), meta["history"]
        bar = progress_bar(total=self.maxiter, initial=it0, progress=progress, desc="calibrate (lbfgsb)")
        last = {}
        dtype = np.dtype(flat0.dtype)

        @jax.jit
        def packed_value_and_grad(xf):
            """[cost, validation cost, |g|_inf, gradient with non-finite entries zeroed]: the value
            and gradient over the flat vector, unravelled inside the jit, back in one transfer."""
            (j, jv), g = jax.value_and_grad(lambda v: self.problem.loss(self.space.from_opt(unravel(v))),
                                            has_aux=True)(xf)
            head = jnp.stack([j, jv, jnp.max(jnp.abs(g), initial=0.0)]).astype(g.dtype)
            return jnp.concatenate([head, jnp.where(jnp.isfinite(g), g, 0.0)])

        def fun(x):
            if last.get("x") is None or not np.array_equal(last["x"], x):
                # (scipy's first evaluation repeats the one recorded as iteration 0: reuse it)
                out = np.asarray(packed_value_and_grad(np.asarray(x, dtype)), np.float64)
                last.update(x=np.array(x, np.float64), j=out[0], jv=out[1], gn=out[2], g=out[3:])
            return float(last["j"]), last["g"].copy()

        state = {"it": it0, "x": x}
        consistent = {"saved": (x, it0, list(self.rows))}  # what a Ctrl-C checkpoint holds

        def callback(xk):
            state["it"] += 1
            state["x"] = xk
            self.record(state["it"], last["j"], last["jv"], grad_norm=last["gn"])
            consistent["saved"] = (np.array(xk), state["it"], list(self.rows))
            bar.update(1)
            bar.set_postfix(cost=f"{float(last['j']):.5f}")
            if checkpoint is not None and state["it"] % checkpoint_every == 0 and not self.exact_resume:
                save_checkpoint(checkpoint, {"x": jnp.asarray(xk, flat0.dtype)},
                                 {"signature": signature, "iteration": state["it"], "history": self.rows})
            if self.stop_early():
                raise StopIteration

        fun(x)  # the first evaluation, before iteration 1 (recorded as iteration 0)
        try:
            self.check_first(last["j"], last["jv"])
        except ValueError:
            bar.close()
            raise
        if it0 == 0:
            self.record(0, last["j"], last["jv"], grad_norm=last["gn"])
        message = "maxiter reached"
        if self.maxiter - it0 <= 0:  # SciPy's L-BFGS-B takes a step even with maxiter=0
            bar.close()
            best, _ = self.monitor()
            return self.space.from_opt(unravel(jnp.asarray(x, flat0.dtype))), self.history(), best, message
        try:
            res = minimize(fun, x, jac=True, method="L-BFGS-B", bounds=bounds, callback=callback,
                           options={"maxiter": max(self.maxiter - it0, 0), "ftol": 2.22e-16 * 1e6, "gtol": 1e-12})
            x, message = res.x, str(res.message)
        except StopIteration:
            x, message = state["x"], f"early stopping: no improvement for {self.early_stopping} iterations"
        except KeyboardInterrupt:
            if checkpoint is not None and self.exact_resume:
                raise KeyboardInterrupt(
                    f"calibration (L-BFGS-B) interrupted at iteration {consistent['saved'][1]}; with exact_resume it "
                    "keeps only finished runs, so calling calibrate() again starts it from its first iteration"
                ) from None
            if checkpoint is not None:
                cx, cit, crows = consistent["saved"]
                save_checkpoint(checkpoint, {"x": jnp.asarray(cx, flat0.dtype)},
                                 {"signature": signature, "iteration": cit, "history": crows})
                raise interrupted(checkpoint, f"iteration {cit}") from None
            raise
        finally:
            bar.close()
        best, _ = self.monitor()
        return self.space.from_opt(unravel(jnp.asarray(x, flat0.dtype))), self.history(), best, message


def _sbs_transform(lo, hi):
    """smash's sbs control transform per bound pair (spec 8.3): asinh, logit or log."""
    if lo < 0:
        return np.arcsinh, np.sinh
    if lo >= 0 and hi <= 1:
        return (lambda x: np.log(x / (1 - x))), (lambda y: 1 / (1 + np.exp(-y)))
    return np.log, np.exp


class SBS(Runner):
    """smash's step-by-step search (spec 10.3) on the uniform mapping's values, transformed."""

    def run(self, checkpoint, checkpoint_every, signature, progress):
        m = self.problem.mapping
        x_phys = np.asarray(self.problem.initial["mapping"]["values"], np.float64)
        tf = [_sbs_transform(float(a), float(b)) for a, b in zip(m.low, m.high)]
        with np.errstate(divide="ignore"):  # a bound at 0 (log) or at 0 or 1 (logit) is infinite in sbs coordinates
            lo_t = np.array([t[0](np.float64(a)) for t, a in zip(tf, m.low)])
            hi_t = np.array([t[0](np.float64(b)) for t, b in zip(tf, m.high)])
        lo_t = np.where(np.isfinite(lo_t), lo_t, -np.inf)
        hi_t = np.where(np.isfinite(hi_t), hi_t, np.inf)
        clip_phys = lambda v: np.clip(v, m.low.astype(np.float64), m.high.astype(np.float64))  # noqa: E731

        def to_t(v):
            return np.array([t[0](a) for t, a in zip(tf, clip_phys(v))])

        def from_t(y):
            return clip_phys(np.array([t[1](a) for t, a in zip(tf, y)]))

        loss = jax.jit(lambda values: self.problem.loss({**self.problem.initial, "mapping": {"values": values}}))

        def J(y):
            j, jv = loss(jnp.asarray(from_t(y), jnp.float32))
            self.evals += 1
            return float(j), float(jv)

        n = x_phys.size
        self.evals = 0
        st = dict(y=to_t(x_phys), z=None, g=None, delta=0.64, dmin=0.64, sdx=np.zeros(n), ia=-1, iaa=-1, iam=-1,
                  jfa=0, jfaa=0, it=0, done=False)
        if checkpoint is not None:
            loaded = load_checkpoint(checkpoint, {"y": jnp.zeros(n)}, signature)
            if loaded is not None:
                _, meta = loaded
                st = {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in meta["sbs"].items()}
                self.rows = meta["history"]
        if st["g"] is None:
            st["z"] = st["y"].copy()
            st["g"], gv = J(st["y"])
            self.check_first(st["g"], gv)
            self.record(0, st["g"], gv)
        c = 0.7 ** (1.0 / n)
        total = self.maxiter * n
        bar = progress_bar(total=total, initial=st["it"], progress=progress, desc="calibrate (sbs)")
        message = f"maxiter {self.maxiter} reached ({total} sub-iterations: {self.maxiter} × {n} controls)"

        def snapshot():
            """The search state and history between two iterations, as a checkpoint holds them."""
            return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in st.items()}, list(self.rows)

        def save(saved):
            meta_st, rows = saved
            save_checkpoint(checkpoint, {"y": jnp.asarray(meta_st["y"])},
                             {"signature": signature, "iteration": meta_st["it"], "history": rows, "sbs": meta_st})

        # A Ctrl-C may land mid-iteration, with ``st`` half updated: it saves the last whole one.
        consistent = snapshot()

        try:
            while st["it"] < total:
                st["it"] += 1
                st["dmin"] = min(st["dmin"], st["delta"])
                if st["delta"] > 2:
                    st["delta"] = st["dmin"]
                y, delta = st["y"], st["delta"]
                jv_best = np.nan
                for i in range(n):
                    for sgn in (-1, 1):
                        if i == st["iaa"] and sgn == -st["jfaa"]:
                            continue
                        if (sgn < 0 and y[i] <= lo_t[i]) or (sgn > 0 and y[i] >= hi_t[i]):
                            continue
                        x = y.copy()
                        x[i] = np.clip(y[i] + sgn * delta, lo_t[i], hi_t[i])
                        j, jv = J(x)
                        if j < st["g"]:
                            st["z"], st["g"], st["ia"], st["jfa"], jv_best = x, j, i, sgn, jv
                st["iaa"], st["jfaa"] = st["ia"], st["jfa"]
                if st["ia"] >= 0:
                    st["y"] = st["z"].copy()
                    st["sdx"] = c * st["sdx"]
                    st["sdx"][st["ia"]] = (1 - c) * st["jfa"] * delta + c * st["sdx"][st["ia"]]
                    st["iam"] += 1
                    if st["iam"] + 1 > 2 * n:
                        st["delta"] *= 2
                        st["iam"] = 0
                else:
                    st["delta"] /= 2
                    st["iam"] = -1
                if st["it"] > 4 * n:
                    x = np.clip(st["y"] + st["sdx"], lo_t, hi_t)
                    j, jv = J(x)
                    if j < st["g"]:
                        st["y"], st["z"], st["g"], st["jfaa"], jv_best = x, x.copy(), j, 0, jv
                st["ia"] = -1
                self.record(st["it"], st["g"], jv_best)
                consistent = snapshot()
                bar.update(1)
                bar.set_postfix(cost=f"{st['g']:.5f}")
                if checkpoint is not None and st["it"] % checkpoint_every == 0:
                    save(consistent)
                if st["delta"] < 0.01:
                    message = "converged: step below 0.01"
                    break
        except KeyboardInterrupt:
            if checkpoint is not None:
                save(consistent)
                raise interrupted(checkpoint, f"sub-iteration {consistent[0]['it']}") from None
            raise
        finally:
            bar.close()
        values = jnp.asarray(from_t(st["z"]), jnp.float32)
        best, _ = self.monitor()
        return {**self.problem.initial, "mapping": {"values": values}}, self.history(), best, message
