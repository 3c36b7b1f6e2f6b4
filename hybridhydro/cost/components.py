"""Cost components and the observation term ``J_obs`` (spec 9.1).

Owns the component registry (:class:`Component`, :data:`COMPONENTS`,
:func:`register_component`, :func:`component`), the discharge transforms (:data:`TRANSFORMS`,
:func:`transform`), the component and gauge weights (:data:`QUANTILE_WEIGHTS`,
:func:`resolve_weights`) and :func:`observation_cost` with its compiled aggregation. The
signature components are added to :data:`COMPONENTS` by
:mod:`hybridhydro.cost.signature_terms`, which the package imports with this module.

Discharge is in m3/s throughout, laid out ``(time, gauge)``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .metrics import (
    apply_compiled,
    as_2d,
    count_valid,
    kge_score,
    lgrm_score,
    lookup,
    mae_score,
    mape_score,
    masked_mean,
    mse_score,
    nse_score,
    UNDEFINED_WHEN,
    observed_mask,
    rmse_score,
    undefined_reason,
    zero_masked,
)

__all__ = [
    "COMPONENTS",
    "QUANTILE_WEIGHTS",
    "TRANSFORMS",
    "Component",
    "check_observation_cost",
    "component",
    "is_concrete",
    "observation_cost",
    "register_component",
    "resolve_weights",
    "transform",
    "undefined_observations",
]

TRANSFORMS = ("keep", "sqrt", "inv")
QUANTILE_WEIGHTS = {"median": 0.5, "lquartile": 0.25, "uquartile": 0.75}


# ------------------------------------------------------------------------------ components


@dataclass(frozen=True)
class Component:
    """A cost component: ``fn(qo, qs, valid, **context) -> (gauge,)`` values to minimise.

    ``transforms``: the discharge transforms it accepts (smash allows only ``keep`` for the
    signature components). ``prepare``: optional hook ``prepare(context, *, qo, valid, gauges,
    warmup_steps, components) -> dict`` run by :func:`observation_cost` before the cost is
    compiled (``components``: all the selected ones); it
    receives the caller's context (laid out like the whole ``qo``, ``(time, gauge)``) and
    returns the entries to update, cut to the selected gauges and the steps after the warm-up
    (the signatures' rain and event masks), ``None`` to drop one (e.g. an option it consumed);
    it raises if something the component needs is missing. Components sharing a hook run it once.
    ``undefined``: when the component is undefined on a gauge's observations (``"constant"``:
    it needs two different observed values; ``"positive"``: an observation above zero; None:
    defined on any observation), checked on the host before a cost is compiled
    (:func:`undefined_observations`).
    """

    fn: Callable
    description: str = ""
    transforms: tuple[str, ...] = TRANSFORMS
    prepare: Callable | None = None
    undefined: str | None = None

    def __call__(self, qo, qs, valid, **context):
        return self.fn(qo, qs, valid, **context)


def _plain(score, form):
    def fn(qo, qs, valid, **_context):
        return form(score(qo, qs, valid))

    return fn


COMPONENTS: dict[str, Component | Callable] = {
    "nse": Component(_plain(nse_score, lambda s: 1.0 - s), "1 - NSE", undefined=UNDEFINED_WHEN["nse"]),
    "nnse": Component(_plain(nse_score, lambda s: 1.0 - 1.0 / (2.0 - s)), "1 - 1/(2 - NSE)",
                      undefined=UNDEFINED_WHEN["nnse"]),
    "kge": Component(_plain(kge_score, lambda s: 1.0 - s), "1 - KGE", undefined=UNDEFINED_WHEN["kge"]),
    "mae": Component(_plain(mae_score, lambda s: s), "MAE (m3/s)"),
    "mape": Component(_plain(mape_score, lambda s: s), "MAPE", undefined=UNDEFINED_WHEN["mape"]),
    "mse": Component(_plain(mse_score, lambda s: s), "MSE (m6/s2)"),
    "rmse": Component(_plain(rmse_score, lambda s: s), "RMSE (m3/s)"),
    "lgrm": Component(_plain(lgrm_score, lambda s: s), "LGRM (m3/s)", undefined=UNDEFINED_WHEN["lgrm"]),
}
"""Cost components (to minimise), ``name -> Component`` (or a plain callable with the same
signature). Add more with :func:`register_component`; :mod:`hybridhydro.cost.signature_terms`
adds the signatures."""


def register_component(name: str, fn: Callable, *, description: str = "", transforms=TRANSFORMS,
                       undefined: str | None = None):
    """Add a cost component to :data:`COMPONENTS` (e.g. a signature from
    :mod:`hybridhydro.signatures`).

    Parameters
    ----------
    name
        The name used in ``components=`` of :func:`observation_cost`.
    fn
        ``fn(qo, qs, valid, **context) -> (gauge,)`` with ``qo``, ``qs`` (time, gauge) in m3/s
        (masked entries hold arbitrary values: use ``valid``) and ``context`` the keyword
        arguments given to :func:`observation_cost` as ``context``.
    transforms
        The discharge transforms the component accepts (``("keep",)`` for signatures).
    undefined
        When it is undefined on a gauge's observations: ``"constant"``, ``"positive"`` or None
        (see :class:`Component`); a calibration refuses such a gauge before it starts.
    """
    bad = set(transforms) - set(TRANSFORMS)
    if bad:
        raise ValueError(f"register_component({name!r}): unknown transforms {sorted(bad)}; use {TRANSFORMS}")
    if undefined not in (None, "constant", "positive"):
        raise ValueError(f"register_component({name!r}): undefined={undefined!r}; use None, 'constant' or 'positive'")
    COMPONENTS[name] = Component(fn, description, tuple(transforms), undefined=undefined)
    return COMPONENTS[name]


def undefined_observations(components, qo, valid) -> list[tuple[str, int, str]]:
    """``(component, gauge column, reason)`` for every component undefined on a gauge's observations.

    Host-side (NumPy), before a cost is compiled: ``qo`` and ``valid`` are concrete ``(time,
    gauge)`` arrays (the steps and gauges the cost reads). A gauge without any observation is
    not listed (callers report that first).
    """
    qo, valid = np.asarray(qo, np.float64), np.asarray(valid, bool)
    out = []
    for name in ((components,) if isinstance(components, str) else components):
        kind = getattr(COMPONENTS.get(name), "undefined", None)
        if kind is None:
            continue
        for g in range(qo.shape[1]):
            reason = undefined_reason(kind, qo[valid[:, g], g])
            if reason is not None:
                out.append((name, g, reason))
    return out


def component(name: str, qo, qs, mask=None, **context):
    """The cost component ``name`` per gauge (see :func:`~hybridhydro.cost.metrics.metric`
    with ``cost=True``); extra keyword arguments are passed to a registered component as its
    ``context``."""
    qo2, squeeze = as_2d(qo, "qo")
    qs2, _ = as_2d(qs, "qs")
    valid = observed_mask(qo2, None if mask is None else jnp.reshape(jnp.asarray(mask), qo2.shape))
    comp = lookup(COMPONENTS, name, "cost component")
    context = _prepared_context((comp,), context, qo2, valid, np.arange(qo2.shape[1]), 0)
    out = apply_compiled(comp, qo2, qs2, valid, context)
    return out[0] if squeeze else out


def _prepared_context(comps, context, qo, valid, gauges, warmup_steps):
    """The caller's context updated by the ``prepare`` hooks of ``comps`` (each hook once)."""
    context = dict(context or {})
    out, seen = dict(context), []
    for comp in comps:
        hook = getattr(comp, "prepare", None)
        if hook is None or any(hook is h for h in seen):
            continue
        seen.append(hook)
        out.update(hook(context, qo=qo, valid=valid, gauges=gauges, warmup_steps=warmup_steps, components=comps))
    return {k: v for k, v in out.items() if v is not None}  # a hook drops an entry with None


# ------------------------------------------------------------------------------ transforms


def transform(name: str, qo, qs, valid):
    """Discharge transform of a cost component (spec 9.1, ``jobs_cmpt_tfm``).

    ``keep``: unchanged; ``sqrt``: ``√(q + ε)``; ``inv``: ``1 / (q + ε)``, with, per gauge,
    ``ε = 0.01·mean(qo)`` over the usable observations of the evaluated period (m3/s). Applied
    to both series; masked entries stay masked. A negative simulated discharge counts as 0 (its
    gradient is 0) so that the transform stays finite.

    Returns
    -------
    (qo, qs)
        The transformed series (units: √(m3/s) or s/m3).
    """
    lookup({t: t for t in TRANSFORMS}, name, "discharge transform")
    if name == "keep":
        return qo, qs
    qo_, qs_ = zero_masked(valid, qo, qs)
    _, n_safe = count_valid(valid)
    eps = 0.01 * masked_mean(qo_, valid, n_safe)
    xo = jnp.where(valid, qo_ + eps[None], 1.0)
    eps_s = jnp.where(eps > 0, eps, 1.0)  # all-zero observations: eps = 0, keep q + ε > 0
    xs = jnp.where(valid, jnp.maximum(qs_, 0.0) + eps_s[None], 1.0)
    xo = jnp.where(xo > 0, xo, 1.0)
    if name == "sqrt":
        return jnp.sqrt(xo), jnp.sqrt(xs)
    return 1.0 / xo, 1.0 / xs


# ------------------------------------------------------------------------------ weights


def resolve_weights(weights, n: int, what: str, allow_quantile: bool):
    """``(weights (n,) float32, None)``, or ``(None, q)`` for a quantile alias of :data:`QUANTILE_WEIGHTS`."""
    if isinstance(weights, str):
        if weights == "mean":
            return jnp.full((n,), 1.0 / n, dtype=jnp.float32), None
        if allow_quantile and weights in QUANTILE_WEIGHTS:
            return None, QUANTILE_WEIGHTS[weights]
        aliases = ["mean"] + (sorted(QUANTILE_WEIGHTS) if allow_quantile else [])
        raise ValueError(f"unknown {what} alias {weights!r}; use one of {aliases} or {n} non-negative weights")
    w = np.asarray(weights, dtype=np.float64) if not isinstance(weights, jax.core.Tracer) else None
    if w is not None:
        if w.shape != (n,):
            raise ValueError(f"{what}: expected {n} weights (one per {what.split('_')[0]}), got shape {w.shape}")
        if np.any(~np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"{what} must be finite and non-negative; got {w.tolist()}")
    return jnp.asarray(weights, dtype=jnp.float32), None


def is_concrete(x):
    """True when ``x`` is not a JAX tracer (its values can be read on the host)."""
    return not isinstance(x, jax.core.Tracer)


# ------------------------------------------------------------------------------ observation term


def observation_cost(
    qs,
    qo,
    components: str | Sequence[str] = ("nse",),
    component_weights="mean",
    *,
    gauges: Sequence[int] | None = None,
    gauge_weights="mean",
    warmup_steps: int = 0,
    transforms: str | Sequence[str] = "keep",
    mask=None,
    context: Mapping[str, Any] | None = None,
):
    """Observation term ``J_obs`` of the cost (spec 9.1), a scalar to minimise.

    ``J_obs = Σ_g Σ_c w_g·w_c·j_{g,c}``, or with a quantile alias for ``gauge_weights`` the
    quantile (linear interpolation, as ``numpy.quantile``) over gauges of ``Σ_c w_c·j_{g,c}``.

    Parameters
    ----------
    qs, qo
        Simulated and observed discharge (m3/s), ``(time, gauge)`` or ``(time,)``. ``qo`` NaN
        or negative = missing (skipped by every component).
    components
        Names in :data:`COMPONENTS`: ``nse``, ``nnse``, ``kge``, ``mae``, ``mape``, ``mse``,
        ``rmse``, ``lgrm``, the signatures ``Crc`` ... ``Cfp90`` and ``Erc`` ... ``Ebf`` (see
        :mod:`hybridhydro.cost`: they need ``context``) and any registered one.
    component_weights
        ``"mean"`` (1/n each) or one non-negative weight per component.
    gauges
        Column indices of the gauges that enter the cost; ``None``: all.
    gauge_weights
        ``"mean"`` (1/n each), one non-negative weight per selected gauge, or ``"median"``,
        ``"lquartile"``, ``"uquartile"``.
    warmup_steps
        Steps at the start that do not enter the cost (smash's ``end_warmup``).
    transforms
        ``"keep"``, ``"sqrt"``, ``"inv"``, one for all or one per component. Unlike smash, the
        transforms do **not** compound: smash transforms the series of a gauge in place, so a
        component listed after a ``sqrt`` one sees the already-transformed series (spec 9.1,
        16.2); here every component transforms the original series.
    mask
        Optional boolean ``(time, gauge)`` mask over the whole period, ``False`` skips an entry.
    context
        Keyword arguments passed to every component; the built-in metrics ignore them.
        Signatures read ``rain`` ((time, gauge) m3/s, laid out like ``qo``) and, for event
        signatures, ``events`` ((gauge, event, time) masks laid out like ``qo``) or ``dt``
        (and ``event_seg``) to segment the whole observed series; both are cut to ``gauges``
        and the warm-up here (see :func:`~hybridhydro.cost.signature_terms.signature_context`).

    Raises
    ------
    ValueError
        Unknown component, transform or weight alias; weights of the wrong length or negative;
        a transform a component does not allow; a warm-up not shorter than the period; a
        selected gauge without any observation after the warm-up (checked when ``qo`` is
        concrete, i.e. not traced by ``jit``); a signature component without the ``context``
        it needs, or a gauge without any flood event for an event signature.
    """
    prepared = _prepare_cost(qs, qo, components, component_weights, gauges, gauge_weights, warmup_steps,
                             transforms, mask, context)
    return _aggregate(*prepared[:7], comps=prepared[7], tfms=prepared[8], by_quantile=prepared[9])


def check_observation_cost(qo, components: str | Sequence[str] = ("nse",), component_weights="mean", *,
                           gauges=None, gauge_weights="mean", warmup_steps: int = 0, transforms="keep", mask=None,
                           context=None) -> None:
    """Check, on the host, the arguments of :func:`observation_cost` against concrete observations
    ``qo`` without computing anything: every error :func:`observation_cost` would raise (arguments
    as its own) is raised here, before a loss is compiled around it."""
    _prepare_cost(qo, qo, components, component_weights, gauges, gauge_weights, warmup_steps, transforms, mask,
                  context)


def _prepare_cost(qs, qo, components, component_weights, gauges, gauge_weights, warmup_steps, transforms, mask,
                  context):
    """The checked arguments of :func:`_aggregate`: ``(qs, qo, valid, wc, wg, quantile, context, comps, tfms,
    by_quantile)``; every check of :func:`observation_cost` (those on values when ``qo`` is concrete)."""
    qs2, _ = as_2d(qs, "qs")
    qo2, _ = as_2d(qo, "qo")
    if qs2.shape != qo2.shape:
        raise ValueError(f"qs {qs2.shape} and qo {qo2.shape} differ in shape; both are (time, gauge)")
    valid = observed_mask(qo2, None if mask is None else jnp.reshape(jnp.asarray(mask), qo2.shape))
    qo_all, valid_all = qo2, valid
    ntime, ngauge = qo2.shape
    if gauges is not None:
        idx = np.asarray(gauges, dtype=int).reshape(-1)
        if idx.size == 0 or np.any(idx < 0) or np.any(idx >= ngauge):
            raise ValueError(f"gauges {idx.tolist()} must be indices in [0, {ngauge}) (columns of qo)")
        qs2, qo2, valid = qs2[:, idx], qo2[:, idx], valid[:, idx]
    else:
        idx = np.arange(ngauge)
    if isinstance(warmup_steps, (bool, np.bool_)) or not isinstance(warmup_steps, numbers.Integral):
        raise ValueError(f"warmup_steps must be a whole number of steps, got {type(warmup_steps).__name__} "
                         f"{warmup_steps!r}")
    warmup_steps = int(warmup_steps)
    if warmup_steps < 0 or warmup_steps >= ntime:
        raise ValueError(f"warmup_steps={warmup_steps} must be in [0, {ntime}) (the period has {ntime} steps)")
    qs2, qo2, valid = qs2[warmup_steps:], qo2[warmup_steps:], valid[warmup_steps:]
    concrete = is_concrete(valid) and is_concrete(qo2)
    if concrete:
        empty = np.flatnonzero(~np.asarray(jnp.any(valid, axis=0)))
        if empty.size:
            raise ValueError(
                f"gauge(s) {idx[empty].tolist()} (columns of qo) have no observation in steps "
                f"[{warmup_steps}, {ntime}) (after the warm-up); deselect them with gauges= or "
                "shorten the warm-up"
            )

    names = (components,) if isinstance(components, str) else tuple(components)
    if not names:
        raise ValueError("components is empty; give at least one, e.g. ('nse',)")
    tfms = (transforms,) * len(names) if isinstance(transforms, str) else tuple(transforms)
    if len(tfms) != len(names):
        raise ValueError(f"transforms: expected {len(names)} (one per component {names}), got {len(tfms)}")
    wc, _ = resolve_weights(component_weights, len(names), "component_weights", allow_quantile=False)
    wg, q = resolve_weights(gauge_weights, qo2.shape[1], "gauge_weights", allow_quantile=True)
    if wg is None:
        wg = jnp.zeros((qo2.shape[1],), jnp.float32)

    comps = []
    for name, tfm in zip(names, tfms):
        comp = lookup(COMPONENTS, name, "cost component")
        allowed = getattr(comp, "transforms", TRANSFORMS)
        lookup({t: t for t in TRANSFORMS}, tfm, "discharge transform")
        if tfm not in allowed:
            raise ValueError(f"component {name!r} accepts only the transforms {allowed}, got {tfm!r}")
        comps.append(comp)
    if concrete:
        undefined = undefined_observations(names, qo2, valid)
        if undefined:
            name, g, reason = undefined[0]
            cols = sorted({idx[c] for n, c, _ in undefined if n == name})
            raise ValueError(
                f"gauge(s) {[int(c) for c in cols]} (columns of qo): {reason} after the warm-up, so the cost "
                f"component {name!r} is undefined there (NaN); deselect them with gauges=, choose other steps, "
                "or a component defined on them (mae, mse, rmse)"
            )
    context = _prepared_context(comps, context, qo_all, valid_all, idx, warmup_steps)
    quantile = jnp.asarray(0.5 if q is None else q, jnp.float32)
    return qs2, qo2, valid, wc, wg, quantile, context, tuple(comps), tfms, q is not None


# ------------------------------------------------------------------------------ aggregation


@partial(jax.jit, static_argnames=("comps", "tfms", "by_quantile"))
def _aggregate(qs, qo, valid, wc, wg, quantile, context, *, comps, tfms, by_quantile):
    """The compiled part of :func:`observation_cost` (one XLA program per configuration)."""
    per_gauge = jnp.zeros((qo.shape[1],), dtype=jnp.float32)
    for c, (comp, tfm) in enumerate(zip(comps, tfms)):
        to, ts = transform(tfm, qo, qs, valid)
        per_gauge = per_gauge + wc[c] * comp(to, ts, valid, **context)
    if by_quantile:
        return jnp.quantile(per_gauge, quantile)
    return jnp.sum(wg * per_gauge)
