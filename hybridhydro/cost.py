"""Cost function (smash's ``J = J_obs + wjreg·J_reg``, spec section 9) and the evaluation table
of a simulation (smash's ``evaluation``, spec 13.4).

Three layers, all pure JAX, float32 and differentiable (discharge in m3/s throughout):

* **Metrics** over a ``(time, gauge)`` (or ``(time,)``) pair of observed ``qo`` and simulated
  ``qs`` discharge. :data:`METRICS` holds the scores a table reports (NSE, KGE, MAE, ...);
  :data:`COMPONENTS` the cost components to minimise (``1 - NSE``, ``1 - KGE``, MAE, ...).
  An observation is missing where ``qo`` is NaN or negative (smash marks missing with -99);
  every metric skips those entries. The masking is a "double where": masked entries are
  replaced by safe values *before* any division, root or logarithm, so the gradient of a cost
  with gaps has no NaN.
* **Observation term** :func:`observation_cost`: transforms, warm-up, several components and
  gauges with weights (mean, explicit, or the median/quartiles of the per-gauge sums).
* **Regularisation** :func:`prior_term`, :func:`smoothing_term` (``hard-smoothing`` without the
  background) and :func:`regularisation_cost`; :func:`total_cost` adds them with ``wjreg``.

:func:`evaluate` applies :data:`METRICS` to a :func:`~hybridhydro.simulate.simulate` result
and the basin's ``qobs`` and returns an ``xarray.Dataset`` along ``gauge``.

Extending the cost: :data:`COMPONENTS` is a registry ``name -> component``. A component is a
function ``fn(qo, qs, valid, **context) -> (gauge,)`` costs, where ``valid`` is the boolean
mask of usable observations and ``context`` the keyword arguments given to
:func:`observation_cost` as ``context=`` (e.g. the basin-mean rain for signatures). Register
one with :func:`register_component`; ``transforms=("keep",)`` restricts it as smash restricts
its signature components.

Signature components (spec 9.1): every name of :data:`hybridhydro.signatures.CONTINUOUS`
(``Crc``, ``Crchf``, ``Crclf``, ``Crch2r``, ``Cfp2``, ``Cfp10``, ``Cfp50``, ``Cfp90``) and
:data:`~hybridhydro.signatures.EVENT` (``Erc``, ``Erchf``, ``Erclf``, ``Erch2r``, ``Elt``,
``Epf``, ``Eff``, ``Ebf``) is a component, an adapter over
:data:`hybridhydro.signatures.SIGNATURE_COMPONENTS`. They accept only the ``keep`` transform
and read from ``context``:

* ``rain``: the basin-mean rain at each gauge in m3/s, ``P·area·1e-3/dt``, laid out like
  ``qo`` (``(time, gauge)`` over the same steps and gauges as the ``qo`` given);
* event signatures also ``events``: boolean masks ``(gauge, event, time)`` over the same steps
  and gauges (:func:`~hybridhydro.signatures.event_masks`, or a
  :func:`~hybridhydro.signatures.segment_events` table), or else ``dt`` (s) and optionally
  ``event_seg`` (``peak_quant``, ``peak_value``, ``max_duration``) to segment the *observed*
  series automatically (needs a concrete ``qo``, i.e. not under ``jit``;
  :func:`signature_context` does it ahead of a compiled loss). As smash does (checked on
  Cance), the whole observed series of ``qo`` is segmented and the warm-up clips the events.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from . import signatures as _sig

__all__ = [
    "COMPONENTS",
    "METRICS",
    "METRIC_INFO",
    "QUANTILE_WEIGHTS",
    "REGULARISATIONS",
    "TRANSFORMS",
    "Component",
    "component",
    "evaluate",
    "metric",
    "observation_cost",
    "observed_mask",
    "prior_term",
    "register_component",
    "regularisation_cost",
    "signature_context",
    "smoothing_term",
    "total_cost",
    "transform",
]

TRANSFORMS = ("keep", "sqrt", "inv")
QUANTILE_WEIGHTS = {"median": 0.5, "lquartile": 0.25, "uquartile": 0.75}
REGULARISATIONS = ("prior", "smoothing", "hard-smoothing")


# ------------------------------------------------------------------------------ masking


def observed_mask(qo, mask=None):
    """Boolean mask of the usable observations: ``qo`` finite and ``>= 0`` (and ``mask``).

    Parameters
    ----------
    qo
        Observed discharge (m3/s), NaN or negative where missing.
    mask
        Optional extra boolean mask of the same shape (``False`` drops an entry).
    """
    qo = jnp.asarray(qo)
    valid = jnp.isfinite(qo) & (qo >= 0)
    if mask is not None:
        valid = valid & jnp.asarray(mask, dtype=bool)
    return valid


def _safe(valid, qo, qs):
    """Replace masked entries by 0 in both series (the first ``where`` of the double where)."""
    zero = jnp.zeros((), dtype=jnp.result_type(qo, qs, jnp.float32))
    return jnp.where(valid, qo, zero), jnp.where(valid, qs, zero)


def _count(valid):
    n = jnp.sum(valid, axis=0).astype(jnp.float32)
    return n, jnp.maximum(n, 1.0)


def _sqrt(x):
    """sqrt with a finite gradient at 0 (returns 0 there)."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _empty_to_nan(n, value):
    return jnp.where(n > 0, value, jnp.nan)


# ------------------------------------------------------------------------------ scores


def _mean(x, valid, n_safe):
    return jnp.sum(jnp.where(valid, x, 0.0), axis=0) / n_safe


def nse_score(qo, qs, valid):
    """Nash-Sutcliffe efficiency ``1 - Σ(qo - qs)² / Σ(qo - mean qo)²`` (dimensionless).

    NaN for a gauge with no observation or constant observations.
    """
    qo, qs = _safe(valid, qo, qs)
    n, n_safe = _count(valid)
    mo = _mean(qo, valid, n_safe)
    num = jnp.sum(jnp.where(valid, (qo - qs) ** 2, 0.0), axis=0)
    den = jnp.sum(jnp.where(valid, (qo - mo[None]) ** 2, 0.0), axis=0)
    ok = den > 0
    return _empty_to_nan(n, jnp.where(ok, 1.0 - num / jnp.where(ok, den, 1.0), jnp.nan))


def nnse_score(qo, qs, valid):
    """Normalised NSE ``1 / (2 - NSE)`` in (0, 1] (dimensionless)."""
    return 1.0 / (2.0 - nse_score(qo, qs, valid))


def _kge_terms(qo, qs, valid):
    """Correlation r, variability ratio α = σs/σo and bias ratio β = μs/μo (population moments).

    A zero standard deviation (constant series) gives r = 0: no correlation information, and a
    finite gradient. A zero observed mean or spread gives NaN (the score is undefined).
    """
    qo, qs = _safe(valid, qo, qs)
    n, n_safe = _count(valid)
    mo, ms = _mean(qo, valid, n_safe), _mean(qs, valid, n_safe)
    do, ds = jnp.where(valid, qo - mo[None], 0.0), jnp.where(valid, qs - ms[None], 0.0)
    var_o, var_s = jnp.sum(do**2, axis=0) / n_safe, jnp.sum(ds**2, axis=0) / n_safe
    cov = jnp.sum(do * ds, axis=0) / n_safe
    so, ss = _sqrt(var_o), _sqrt(var_s)
    prod = so * ss
    r = jnp.where(prod > 0, cov / jnp.where(prod > 0, prod, 1.0), 0.0)
    alpha = jnp.where(so > 0, ss / jnp.where(so > 0, so, 1.0), jnp.nan)
    beta = jnp.where(mo != 0, ms / jnp.where(mo != 0, mo, 1.0), jnp.nan)
    return n, r, alpha, beta


def kge_score(qo, qs, valid):
    """Kling-Gupta efficiency ``1 - √((r-1)² + (α-1)² + (β-1)²)`` (dimensionless)."""
    n, r, alpha, beta = _kge_terms(qo, qs, valid)
    return _empty_to_nan(n, 1.0 - _sqrt((r - 1.0) ** 2 + (alpha - 1.0) ** 2 + (beta - 1.0) ** 2))


def mae_score(qo, qs, valid):
    """Mean absolute error ``mean |qo - qs|`` (m3/s)."""
    qo, qs = _safe(valid, qo, qs)
    n, n_safe = _count(valid)
    return _empty_to_nan(n, _mean(jnp.abs(qo - qs), valid, n_safe))


def mape_score(qo, qs, valid):
    """Mean absolute percentage error ``mean |(qo - qs) / qo|`` (dimensionless, a fraction).

    Observations equal to 0 are skipped (smash would divide by zero and return inf).
    """
    valid = valid & (jnp.where(valid, qo, 1.0) != 0)
    qo, qs = _safe(valid, qo, qs)
    n, n_safe = _count(valid)
    rel = jnp.abs((qo - qs) / jnp.where(valid, qo, 1.0))
    return _empty_to_nan(n, _mean(rel, valid, n_safe))


def mse_score(qo, qs, valid):
    """Mean squared error ``mean (qo - qs)²`` (m6/s2)."""
    qo, qs = _safe(valid, qo, qs)
    n, n_safe = _count(valid)
    return _empty_to_nan(n, _mean((qo - qs) ** 2, valid, n_safe))


def rmse_score(qo, qs, valid):
    """Root mean squared error ``√mse`` (m3/s); gradient 0 (not NaN) at a perfect fit."""
    mse = mse_score(qo, qs, valid)
    return jnp.where(jnp.isnan(mse), jnp.nan, _sqrt(jnp.where(jnp.isnan(mse), 0.0, mse)))


def lgrm_score(qo, qs, valid):
    """Logarithmic error ``Σ qo·ln(qs/qo)²`` over entries with qo > 0 and qs > 0 (m3/s).

    A sum, not a mean (smash's definition). Entries with ``qs <= 0`` are skipped, so the
    gradient there is 0.
    """
    qo_, qs_ = _safe(valid, qo, qs)
    valid = valid & (qo_ > 0) & (qs_ > 0)
    n, _ = _count(valid)
    ratio = jnp.where(valid, qs_, 1.0) / jnp.where(valid, qo_, 1.0)
    term = jnp.where(valid, qo_ * jnp.log(ratio) ** 2, 0.0)
    return _empty_to_nan(n, jnp.sum(term, axis=0))


METRICS: dict[str, Callable] = {
    "nse": nse_score,
    "nnse": nnse_score,
    "kge": kge_score,
    "mae": mae_score,
    "mape": mape_score,
    "mse": mse_score,
    "rmse": rmse_score,
    "lgrm": lgrm_score,
}
"""Scores for evaluation tables, ``name -> fn(qo, qs, valid) -> (gauge,)`` (smash's
``evaluation`` metrics, not turned into losses)."""

METRIC_INFO: dict[str, tuple[str, str]] = {
    "nse": ("Nash-Sutcliffe efficiency, 1 - sum (qo-qs)^2 / sum (qo-mean qo)^2", "1"),
    "nnse": ("normalised Nash-Sutcliffe efficiency, 1 / (2 - NSE)", "1"),
    "kge": ("Kling-Gupta efficiency, 1 - sqrt((r-1)^2 + (alpha-1)^2 + (beta-1)^2)", "1"),
    "mae": ("mean absolute error, mean |qo - qs|", "m3 s-1"),
    "mape": ("mean absolute percentage error, mean |(qo - qs) / qo| (fraction)", "1"),
    "mse": ("mean squared error, mean (qo - qs)^2", "m6 s-2"),
    "rmse": ("root mean squared error, sqrt(mse)", "m3 s-1"),
    "lgrm": ("logarithmic error, sum qo * ln(qs/qo)^2 over qo, qs > 0", "m3 s-1"),
}


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
    """

    fn: Callable
    description: str = ""
    transforms: tuple[str, ...] = TRANSFORMS
    prepare: Callable | None = None

    def __call__(self, qo, qs, valid, **context):
        return self.fn(qo, qs, valid, **context)


def _plain(score, form):
    def fn(qo, qs, valid, **_context):
        return form(score(qo, qs, valid))

    return fn


COMPONENTS: dict[str, Component | Callable] = {
    "nse": Component(_plain(nse_score, lambda s: 1.0 - s), "1 - NSE"),
    "nnse": Component(_plain(nse_score, lambda s: 1.0 - 1.0 / (2.0 - s)), "1 - 1/(2 - NSE)"),
    "kge": Component(_plain(kge_score, lambda s: 1.0 - s), "1 - KGE"),
    "mae": Component(_plain(mae_score, lambda s: s), "MAE (m3/s)"),
    "mape": Component(_plain(mape_score, lambda s: s), "MAPE"),
    "mse": Component(_plain(mse_score, lambda s: s), "MSE (m6/s2)"),
    "rmse": Component(_plain(rmse_score, lambda s: s), "RMSE (m3/s)"),
    "lgrm": Component(_plain(lgrm_score, lambda s: s), "LGRM (m3/s)"),
}
"""Cost components (to minimise), ``name -> Component`` (or a plain callable with the same
signature). Add more with :func:`register_component`."""


def register_component(name: str, fn: Callable, *, description: str = "", transforms=TRANSFORMS):
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
    """
    bad = set(transforms) - set(TRANSFORMS)
    if bad:
        raise ValueError(f"register_component({name!r}): unknown transforms {sorted(bad)}; use {TRANSFORMS}")
    COMPONENTS[name] = Component(fn, description, tuple(transforms))
    return COMPONENTS[name]


def _lookup(table: Mapping, name: str, what: str):
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(table)}")
    return table[name]


def _as_2d(q, name):
    q = jnp.asarray(q)
    if q.ndim == 1:
        return q[:, None], True
    if q.ndim != 2:
        raise ValueError(f"{name} must be (time,) or (time, gauge); got shape {q.shape}")
    return q, False


@partial(jax.jit, static_argnames=("fn",))
def _apply(fn, qo, qs, valid, context):
    """One metric or component, compiled (eager dispatch of its many small ops is slow)."""
    return fn(qo, qs, valid, **context) if context else fn(qo, qs, valid)


def metric(name: str, qo, qs, mask=None, *, cost: bool = False):
    """One metric per gauge.

    Parameters
    ----------
    name
        ``nse``, ``nnse``, ``kge``, ``mae``, ``mape``, ``mse``, ``rmse``, ``lgrm``.
    qo, qs
        Observed and simulated discharge (m3/s), ``(time, gauge)`` or ``(time,)``. ``qo`` NaN
        or negative = missing (skipped).
    mask
        Optional boolean mask, ``False`` also skips an entry.
    cost
        ``False``: the score of :data:`METRICS` (e.g. NSE); ``True``: the component of
        :data:`COMPONENTS` to minimise (e.g. 1 - NSE).

    Returns
    -------
    jax.Array
        ``(gauge,)`` values (a scalar for 1-D input); NaN for a gauge with no observation.
    """
    qo2, squeeze = _as_2d(qo, "qo")
    qs2, _ = _as_2d(qs, "qs")
    if qo2.shape != qs2.shape:
        raise ValueError(f"qo {qo2.shape} and qs {qs2.shape} differ in shape")
    valid = observed_mask(qo2, None if mask is None else jnp.reshape(jnp.asarray(mask), qo2.shape))
    fn = _lookup(COMPONENTS, name, "cost component") if cost else _lookup(METRICS, name, "metric")
    out = _apply(fn, qo2, qs2, valid, {})
    return out[0] if squeeze else out


def component(name: str, qo, qs, mask=None, **context):
    """The cost component ``name`` per gauge (see :func:`metric` with ``cost=True``); extra
    keyword arguments are passed to a registered component as its ``context``."""
    qo2, squeeze = _as_2d(qo, "qo")
    qs2, _ = _as_2d(qs, "qs")
    valid = observed_mask(qo2, None if mask is None else jnp.reshape(jnp.asarray(mask), qo2.shape))
    comp = _lookup(COMPONENTS, name, "cost component")
    context = _prepared_context((comp,), context, qo2, valid, np.arange(qo2.shape[1]), 0)
    out = _apply(comp, qo2, qs2, valid, context)
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


# ------------------------------------------------------------------------------ signatures

_EVENT_SEG = ("peak_quant", "peak_value", "max_duration")


def _rain_of(context, qo):
    """``context["rain"]`` as a (time, gauge) array laid out like ``qo``, or a clear error."""
    rain = context.get("rain")
    if rain is None:
        raise ValueError(
            "signature cost components need context['rain']: the basin-mean rain at each gauge in m3/s "
            f"(P·area·1e-3/dt), laid out like qo {tuple(qo.shape)} (time, gauge); e.g. "
            "observation_cost(..., context=signature_context(components, qo, rain, dt=dt))"
        )
    rain = jnp.asarray(rain)
    if rain.ndim == 1 and qo.shape[1] == 1:
        rain = rain[:, None]
    if rain.shape != qo.shape:
        raise ValueError(f"context['rain'] has shape {rain.shape}; it must be laid out like qo {tuple(qo.shape)} (time, gauge)")
    return rain


def _segment_observed(qo, valid, rain, dt, event_seg) -> np.ndarray:
    """Event masks (gauge, event, time) of the observed (time, gauge) series, on the host."""
    event_seg = dict(event_seg or {})
    unknown = sorted(set(event_seg) - set(_EVENT_SEG))
    if unknown:
        raise ValueError(f"unknown event_seg option(s) {unknown}; use {list(_EVENT_SEG)}")
    q = np.where(np.asarray(valid), np.asarray(qo, np.float64), np.nan).T
    events = _sig.segment_events(q, np.asarray(rain, np.float64).T, float(dt), **event_seg)
    return _sig.event_masks(events, q.shape[0], q.shape[1])


def _check_events(masks, valid, gauges, warmup_steps):
    """Every selected gauge needs one event with an observation (else smash divides by 0)."""
    if not (_is_concrete(masks) and _is_concrete(valid)):
        return
    has = np.any(np.asarray(masks) & np.asarray(valid).T[:, None, :], axis=(1, 2))
    if not has.all():
        raise ValueError(
            f"gauge(s) {np.asarray(gauges)[~has].tolist()} (columns of qo) have no flood event with observations "
            f"after step {warmup_steps}: their event signatures are undefined (smash divides by zero: NaN; here 0); lower "
            "event_seg's peak_quant, lengthen the period or drop the event components for them"
        )


def _prepare_signatures(context, *, qo, valid, gauges, warmup_steps, components):
    """Signature context: the rain, and the observed events when an event signature is asked."""
    rain = _rain_of(context, qo)
    consumed = {"dt": None, "event_seg": None}
    if not any(getattr(c, "fn", None) in _EVENT_FNS for c in components):
        return {"rain": rain[warmup_steps:][:, gauges], "events": None, **consumed}
    events = context.get("events")
    if events is None:
        if context.get("dt") is None:
            raise ValueError(
                "event signature cost components need context['events'] (boolean masks (gauge, event, time) "
                "laid out like qo, from hybridhydro.signatures.event_masks) or context['dt'] (the time step "
                "in s) to segment the observed series"
            )
        if not (_is_concrete(qo) and _is_concrete(valid) and _is_concrete(rain)):
            raise ValueError(
                "event signature cost components cannot segment a traced qo (under jit): segment the observed "
                "series ahead with hybridhydro.cost.signature_context(...) and pass its 'events'"
            )
        # like smash: segment the whole observed series, then the warm-up clips the events
        masks = jnp.asarray(_segment_observed(qo[:, gauges], valid[:, gauges], rain[:, gauges], context["dt"],
                                              context.get("event_seg")))
    else:
        ntime, ngauge = qo.shape
        if isinstance(events, pd.DataFrame):
            events = _sig.event_masks(events, ngauge, ntime)
        events = jnp.asarray(events)
        if events.ndim != 3 or events.shape[0] != ngauge or events.shape[2] != ntime or events.dtype != bool:
            raise ValueError(
                f"context['events'] must be boolean masks (gauge, event, time) = ({ngauge}, n_event, {ntime}) laid "
                f"out like qo; got {events.dtype} {tuple(events.shape)}"
            )
        masks = events[gauges]
    masks = masks[:, :, warmup_steps:]
    _check_events(masks, valid[warmup_steps:][:, gauges], gauges, warmup_steps)
    return {"rain": rain[warmup_steps:][:, gauges], "events": masks, **consumed}


def _signature_component(name: str) -> Component:
    """Adapter of :data:`hybridhydro.signatures.SIGNATURE_COMPONENTS` ``[name]`` (gauge-major,
    observations masked by their own sign) to a component (time-major, ``valid``)."""
    sig = _sig.SIGNATURE_COMPONENTS[name]
    event = name in _sig.EVENT

    def fn(qo, qs, valid, *, rain=None, events=None, **_context):
        if rain is None or (event and events is None):
            raise ValueError(f"cost component {name!r} needs context['rain']" + (" and context['events']" if event else ""))
        qo = jnp.where(valid, qo, jnp.nan)  # the signatures skip NaN observations
        return sig(qo.T, qs.T, jnp.asarray(rain, qs.dtype).T, events)

    fn.__name__ = fn.__qualname__ = name
    kind = "event" if event else "continuous"
    if event:
        _EVENT_FNS.add(fn)
    return Component(fn, f"{kind} signature {name}: (S_sim/S_obs - 1)^2", ("keep",), _prepare_signatures)


_EVENT_FNS: set = set()


def signature_context(components, qo, rain, *, dt: float | None = None, warmup_steps: int = 0, mask=None,
                      event_seg: Mapping[str, float] | None = None) -> dict:
    """The ``context`` signature components need, computed once on the host (e.g. before a
    compiled loss, where the observed series cannot be segmented).

    Parameters
    ----------
    components
        The cost's component names; nothing is computed when none is a signature.
    qo
        Observed discharge (time, gauge) in m3/s (NaN or negative = missing), as it will be
        given to :func:`observation_cost`.
    rain
        Basin-mean rain at each gauge in m3/s (``P·area·1e-3/dt``), laid out like ``qo``.
    dt
        Time step (s); needed for event signatures.
    warmup_steps
        The warm-up of :func:`observation_cost`: only checked (every gauge needs an event after
        it). As smash does, the events are segmented from the *whole* observed series; the
        warm-up then clips them.
    mask
        Optional boolean (time, gauge) mask, ``False`` treats an observation as missing.
    event_seg
        Segmentation options (``peak_quant``, ``peak_value``, ``max_duration``; smash's
        ``event_seg``), see :func:`hybridhydro.signatures.segment_events`.

    Returns
    -------
    dict
        ``{}``, ``{"rain"}`` or ``{"rain", "events"}`` (NumPy arrays), ``events`` boolean
        masks (gauge, event, time) over the steps of ``qo``.
    """
    names = (components,) if isinstance(components, str) else tuple(components)
    sigs = [n for n in names if n in _sig.SIGNATURE_COMPONENTS]
    if not sigs:
        return {}
    qo2 = np.asarray(qo, np.float64)
    qo2 = qo2[:, None] if qo2.ndim == 1 else qo2
    ctx = {"rain": np.asarray(_rain_of({"rain": np.asarray(rain, np.float32)}, qo2))}
    if any(n in _sig.EVENT for n in sigs):
        if dt is None:
            raise ValueError("signature_context: event signature components need dt (the time step in s)")
        valid = np.isfinite(qo2) & (qo2 >= 0)
        if mask is not None:
            valid &= np.reshape(np.asarray(mask, bool), qo2.shape)
        ctx["events"] = _segment_observed(qo2, valid, ctx["rain"], dt, event_seg)
        w = int(warmup_steps)
        _check_events(ctx["events"][:, :, w:], valid[w:], np.arange(qo2.shape[1]), w)
    return ctx


for _name in _sig.SIGNATURE_COMPONENTS:
    COMPONENTS[_name] = _signature_component(_name)
del _name


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
    _lookup({t: t for t in TRANSFORMS}, name, "discharge transform")
    if name == "keep":
        return qo, qs
    qo_, qs_ = _safe(valid, qo, qs)
    _, n_safe = _count(valid)
    eps = 0.01 * _mean(qo_, valid, n_safe)
    xo = jnp.where(valid, qo_ + eps[None], 1.0)
    eps_s = jnp.where(eps > 0, eps, 1.0)  # all-zero observations: eps = 0, keep q + ε > 0
    xs = jnp.where(valid, jnp.maximum(qs_, 0.0) + eps_s[None], 1.0)
    xo = jnp.where(xo > 0, xo, 1.0)
    if name == "sqrt":
        return jnp.sqrt(xo), jnp.sqrt(xs)
    return 1.0 / xo, 1.0 / xs


# ------------------------------------------------------------------------------ observation term


def _weights(weights, n: int, what: str, allow_quantile: bool):
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


def _is_concrete(x):
    return not isinstance(x, jax.core.Tracer)


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
        the module docstring: they need ``context``) and any registered one.
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
        and the warm-up here (see :func:`signature_context`).

    Raises
    ------
    ValueError
        Unknown component, transform or weight alias; weights of the wrong length or negative;
        a transform a component does not allow; a warm-up not shorter than the period; a
        selected gauge without any observation after the warm-up (checked when ``qo`` is
        concrete, i.e. not traced by ``jit``); a signature component without the ``context``
        it needs, or a gauge without any flood event for an event signature.
    """
    qs2, _ = _as_2d(qs, "qs")
    qo2, _ = _as_2d(qo, "qo")
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
    warmup_steps = int(warmup_steps)
    if warmup_steps < 0 or warmup_steps >= ntime:
        raise ValueError(f"warmup_steps={warmup_steps} must be in [0, {ntime}) (the period has {ntime} steps)")
    qs2, qo2, valid = qs2[warmup_steps:], qo2[warmup_steps:], valid[warmup_steps:]
    if _is_concrete(valid):
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
    wc, _ = _weights(component_weights, len(names), "component_weights", allow_quantile=False)
    wg, q = _weights(gauge_weights, qo2.shape[1], "gauge_weights", allow_quantile=True)
    if wg is None:
        wg = jnp.zeros((qo2.shape[1],), jnp.float32)

    comps = []
    for name, tfm in zip(names, tfms):
        comp = _lookup(COMPONENTS, name, "cost component")
        allowed = getattr(comp, "transforms", TRANSFORMS)
        _lookup({t: t for t in TRANSFORMS}, tfm, "discharge transform")
        if tfm not in allowed:
            raise ValueError(f"component {name!r} accepts only the transforms {allowed}, got {tfm!r}")
        comps.append(comp)
    context = _prepared_context(comps, context, qo_all, valid_all, idx, warmup_steps)
    quantile = jnp.asarray(0.5 if q is None else q, jnp.float32)
    return _aggregate(
        qs2, qo2, valid, wc, wg, quantile, context, comps=tuple(comps), tfms=tfms, by_quantile=q is not None
    )


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


# ------------------------------------------------------------------------------ regularisation


def prior_term(controls, background):
    """``prior`` regularisation: ``Σ_i (x_i - x_i^bkg)²`` over every leaf of a pytree.

    ``controls`` and ``background`` have the same tree structure (e.g. the raw control
    parameters and their first guess); units are those of the controls.
    """
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, b: jnp.sum((x - b) ** 2), controls, background))
    return sum(leaves, jnp.zeros((), jnp.float32))


def smoothing_term(field, background=None, active=None):
    """``smoothing`` (``hard-smoothing`` when ``background`` is None) regularisation of one map.

    With ``m = field - background`` on the 2-D grid (physical units, no normalisation)::

        Σ_active (m[r+1,c] - 2m[r,c] + m[r-1,c])² + (m[r,c+1] - 2m[r,c] + m[r,c-1])²

    A neighbour outside the grid or inactive is replaced by the centre cell. Inactive cells may
    hold NaN: they are masked before any arithmetic.

    Parameters
    ----------
    field, background
        ``(y, x)`` maps, or ``(..., y, x)`` stacks (summed over the leading axes).
    active
        ``(y, x)`` boolean active-cell mask; ``None``: every cell.
    """
    field = jnp.asarray(field)
    if field.ndim < 2:
        raise ValueError(f"smoothing_term needs a (y, x) map, got shape {field.shape}")
    active = jnp.ones(field.shape[-2:], bool) if active is None else jnp.asarray(active, bool)
    if active.shape != field.shape[-2:]:
        raise ValueError(f"active {active.shape} does not match the map {field.shape[-2:]}")
    return _smoothing(field, None if background is None else jnp.asarray(background), active)


@jax.jit
def _smoothing(field, background, active):
    m = field if background is None else field - background
    m = jnp.where(active, m, 0.0)
    lead = [(0, 0)] * (m.ndim - 2)
    mp = jnp.pad(m, lead + [(1, 1), (1, 1)])
    ap = jnp.pad(active, [(1, 1), (1, 1)])
    ny, nx = active.shape

    def neighbour(dr, dc):
        val = mp[..., 1 + dr : 1 + dr + ny, 1 + dc : 1 + dc + nx]
        act = ap[1 + dr : 1 + dr + ny, 1 + dc : 1 + dc + nx]
        return jnp.where(act, val, m)

    d_row = neighbour(1, 0) - 2.0 * m + neighbour(-1, 0)
    d_col = neighbour(0, 1) - 2.0 * m + neighbour(0, -1)
    return jnp.sum(jnp.where(active, d_row**2 + d_col**2, 0.0))


def regularisation_cost(
    components: str | Sequence[str] = ("prior",),
    component_weights=None,
    *,
    controls=None,
    background=None,
    fields: Mapping[str, Any] | None = None,
    background_fields: Mapping[str, Any] | None = None,
    active=None,
):
    """``J_reg = Σ_c w_c·j_c`` over ``prior``, ``smoothing``, ``hard-smoothing`` (spec 9.2).

    Parameters
    ----------
    components
        Names in :data:`REGULARISATIONS`.
    component_weights
        One non-negative weight per component; ``None``: 1 each.
    controls, background
        Pytrees for ``prior`` (:func:`prior_term`).
    fields, background_fields
        ``name -> (y, x)`` maps of the optimised parameters/states and their first guess, for
        ``smoothing`` (both) and ``hard-smoothing`` (``fields`` only); summed over the names.
    active
        ``(y, x)`` active-cell mask.
    """
    names = (components,) if isinstance(components, str) else tuple(components)
    for name in names:
        _lookup({r: r for r in REGULARISATIONS}, name, "regularisation")
    if component_weights is None:
        w = jnp.ones((len(names),), jnp.float32)
    else:
        w, _ = _weights(component_weights, len(names), "regularisation_weights", allow_quantile=False)
    total = jnp.zeros((), jnp.float32)
    for c, name in enumerate(names):
        if name == "prior":
            if controls is None or background is None:
                raise ValueError("regularisation 'prior' needs controls= and background=")
            j = prior_term(controls, background)
        else:
            if not fields:
                raise ValueError(f"regularisation {name!r} needs fields= (name -> (y, x) map)")
            if name == "smoothing":
                missing = sorted(set(fields) - set(background_fields or {}))
                if missing:
                    raise ValueError(f"regularisation 'smoothing' needs background_fields for {missing}")
                j = sum(smoothing_term(fields[k], background_fields[k], active) for k in fields)
            else:
                j = sum(smoothing_term(fields[k], None, active) for k in fields)
        total = total + w[c] * j
    return total


def total_cost(j_obs, j_reg=0.0, wjreg: float = 0.0):
    """``J = J_obs + wjreg·J_reg`` (spec 9)."""
    return j_obs + wjreg * j_reg


# ------------------------------------------------------------------------------ evaluation


def evaluate(result, basin: xr.Dataset, metrics: str | Sequence[str] = ("nse", "kge"), start=None, end=None):
    """Evaluation table of a simulation per gauge (smash's ``evaluation``, spec 13.4).

    Parameters
    ----------
    result
        A :func:`~hybridhydro.simulate.simulate` result (its ``q`` (gauge, time) in m3/s) or
        that DataArray itself.
    basin
        The basin Dataset whose ``qobs`` (gauge, time) m3/s (NaN = missing) is the reference;
        matched to the simulation by ``gauge`` and ``time`` labels.
    metrics
        Names in :data:`METRICS` (the scores, not turned into losses).
    start, end
        Inclusive time labels bounding the evaluated period (anything ``.sel`` accepts, e.g.
        ``"2014-10-01"``); a label is the end of its time step, as in ``simulate``'s result.

    Returns
    -------
    xarray.Dataset
        One variable per metric along ``gauge`` (attrs ``long_name``, ``units``); coordinate
        ``n_obs`` (the observations used); attrs ``metric`` (each metric's definition),
        ``start``, ``end``. A gauge without observation in the period gets NaN and a warning.
    """
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for name in names:
        _lookup(METRICS, name, "metric")
    qs = result["q"] if isinstance(result, xr.Dataset) else result
    if "qobs" not in basin:
        raise ValueError("evaluate: the basin has no 'qobs' (gauge, time) observed discharge")
    qs = qs.transpose("gauge", "time")
    try:
        qo = basin["qobs"].transpose("gauge", "time").sel(gauge=qs["gauge"], time=qs["time"])
    except KeyError as err:
        raise ValueError(
            f"evaluate: the basin's qobs does not cover the simulation's gauges/times ({err}); "
            "evaluate a result with the basin it was simulated on"
        ) from None
    full = f"{qs['time'].values[0]} to {qs['time'].values[-1]}"
    qs = qs.sel(time=slice(start, end))
    qo = qo.sel(time=slice(start, end))
    if qs.sizes["time"] == 0:
        raise ValueError(
            f"evaluate: no time step between start={start!r} and end={end!r}; the simulation covers {full}"
        )
    qo_t = jnp.asarray(np.asarray(qo.values, np.float32).T)
    qs_t = jnp.asarray(np.asarray(qs.values, np.float32).T)
    valid = observed_mask(qo_t)
    n_obs = np.asarray(jnp.sum(valid, axis=0))
    period = f"{qs['time'].values[0]} to {qs['time'].values[-1]}"
    if np.any(n_obs == 0):
        codes = [str(c) for c in np.asarray(qs["gauge"].values)[n_obs == 0]]
        warnings.warn(
            f"evaluate: gauge(s) {codes} have no observation in {period}; their metrics are NaN", stacklevel=2
        )
    data = {}
    for name in names:
        vals = np.asarray(_apply(METRICS[name], qo_t, qs_t, valid, {}), dtype=np.float32)
        info, units = METRIC_INFO.get(name, ("", ""))
        data[name] = xr.DataArray(vals, dims=("gauge",), attrs={"long_name": info, "units": units})
    out = xr.Dataset(data, coords={"gauge": qs["gauge"].values, "n_obs": ("gauge", n_obs.astype(np.int64))})
    out.attrs = {
        "metric": "; ".join(f"{n}: {METRIC_INFO.get(n, ('',))[0]}" for n in names),
        "start": str(qs["time"].values[0]),
        "end": str(qs["time"].values[-1]),
    }
    return out
