"""Metrics of a discharge simulation: the observed-data mask and the scores (spec 9.1, 13.4).

Owns :func:`observed_mask`, the scores ``*_score`` (NSE, NNSE, KGE, MAE, MAPE, MSE, RMSE,
LGRM), :data:`METRICS`, :data:`METRIC_INFO` and :func:`metric`, plus the masking helpers the
other submodules of :mod:`hybridhydro.cost` share (:func:`zero_masked`, :func:`count_valid`,
:func:`masked_mean`, :func:`lookup`, :func:`as_2d`, :func:`apply_compiled`).

Every score takes observed ``qo`` and simulated ``qs`` discharge (m3/s) laid out ``(time,
gauge)`` and the boolean mask ``valid`` of the usable observations, and returns ``(gauge,)``
values. Masked entries are replaced by safe values *before* any division, root or logarithm
(the "double where"), so the gradient of a score with gaps has no NaN.

**Undefined scores are NaN, never a number.** :data:`UNDEFINED_WHEN` says when: NSE, NNSE and
KGE need observations that vary (at least two different observed values: constant observations,
a single observation and all-zero observations leave them undefined, and a perfect 1.0 or a
huge negative number from round-off would be a lie); MAPE and LGRM need an observation above
zero. Constancy is tested exactly (observed maximum equal to the minimum), inside the kernels
(no Python control flow on traced values) and, with :func:`undefined_reason`, on the host where
a caller can say which gauge and why (:func:`hybridhydro.evaluate` warns,
:func:`hybridhydro.calibrate` refuses before optimising). A constant *simulation* is defined:
KGE then takes its correlation r as 0 (documented, and :func:`hybridhydro.evaluate` warns).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "METRICS",
    "METRIC_INFO",
    "UNDEFINED_WHEN",
    "apply_compiled",
    "as_2d",
    "count_valid",
    "kge_score",
    "lgrm_score",
    "lookup",
    "mae_score",
    "mape_score",
    "masked_mean",
    "metric",
    "mse_score",
    "nnse_score",
    "nse_score",
    "observed_mask",
    "rmse_score",
    "undefined_reason",
    "zero_masked",
]


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


def zero_masked(valid, qo, qs):
    """Replace masked entries by 0 in both series (the first ``where`` of the double where)."""
    zero = jnp.zeros((), dtype=jnp.result_type(qo, qs, jnp.float32))
    return jnp.where(valid, qo, zero), jnp.where(valid, qs, zero)


def count_valid(valid):
    """Usable observations per gauge ``n`` and ``max(n, 1)`` (a safe divisor), both float32."""
    n = jnp.sum(valid, axis=0).astype(jnp.float32)
    return n, jnp.maximum(n, 1.0)


def _sqrt(x):
    """sqrt with a finite gradient at 0 (returns 0 there; NaN stays NaN)."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), jnp.where(jnp.isnan(x), jnp.nan, 0.0))


def _varies(qo, valid):
    """Per gauge: the valid observations hold at least two different values (exact test, jittable)."""
    hi = jnp.max(jnp.where(valid, qo, -jnp.inf), axis=0)
    lo = jnp.min(jnp.where(valid, qo, jnp.inf), axis=0)
    return hi > lo


def _empty_to_nan(n, value):
    return jnp.where(n > 0, value, jnp.nan)


# ------------------------------------------------------------------------------ scores


def masked_mean(x, valid, n_safe):
    """Mean over time of ``x`` on the ``valid`` entries, ``n_safe`` from :func:`count_valid` (units of ``x``)."""
    return jnp.sum(jnp.where(valid, x, 0.0), axis=0) / n_safe


def nse_score(qo, qs, valid):
    """Nash-Sutcliffe efficiency ``1 - Σ(qo - qs)² / Σ(qo - mean qo)²`` (dimensionless).

    NaN for a gauge with no observation or constant observations (one observation, all zero).
    """
    qo, qs = zero_masked(valid, qo, qs)
    n, n_safe = count_valid(valid)
    mo = masked_mean(qo, valid, n_safe)
    num = jnp.sum(jnp.where(valid, (qo - qs) ** 2, 0.0), axis=0)
    den = jnp.sum(jnp.where(valid, (qo - mo[None]) ** 2, 0.0), axis=0)
    ok = (den > 0) & _varies(qo, valid)  # round-off leaves den > 0 on some constant series
    return _empty_to_nan(n, jnp.where(ok, 1.0 - num / jnp.where(ok, den, 1.0), jnp.nan))


def nnse_score(qo, qs, valid):
    """Normalised NSE ``1 / (2 - NSE)`` in (0, 1] (dimensionless)."""
    return 1.0 / (2.0 - nse_score(qo, qs, valid))


def _kge_terms(qo, qs, valid):
    """Correlation r, variability ratio α = σs/σo and bias ratio β = μs/μo (population moments).

    A constant *simulation* gives r = 0: no correlation information, and a finite gradient.
    Constant observations (so also a single or all-zero ones) give α and β NaN: the score is
    undefined.
    """
    qo, qs = zero_masked(valid, qo, qs)
    n, n_safe = count_valid(valid)
    mo, ms = masked_mean(qo, valid, n_safe), masked_mean(qs, valid, n_safe)
    do, ds = jnp.where(valid, qo - mo[None], 0.0), jnp.where(valid, qs - ms[None], 0.0)
    var_o, var_s = jnp.sum(do**2, axis=0) / n_safe, jnp.sum(ds**2, axis=0) / n_safe
    cov = jnp.sum(do * ds, axis=0) / n_safe
    so, ss = _sqrt(var_o), _sqrt(var_s)
    prod = so * ss
    r = jnp.where(prod > 0, cov / jnp.where(prod > 0, prod, 1.0), 0.0)
    spread = (so > 0) & _varies(qo, valid)
    alpha = jnp.where(spread, ss / jnp.where(spread, so, 1.0), jnp.nan)
    beta = jnp.where(mo != 0, ms / jnp.where(mo != 0, mo, 1.0), jnp.nan)
    return n, r, alpha, beta


def kge_score(qo, qs, valid):
    """Kling-Gupta efficiency ``1 - √((r-1)² + (α-1)² + (β-1)²)`` (dimensionless).

    NaN where α or β is undefined (constant observations), not 1.0: the square root must not
    read a NaN as 0.
    """
    n, r, alpha, beta = _kge_terms(qo, qs, valid)
    defined = jnp.isfinite(alpha) & jnp.isfinite(beta)
    a, b = jnp.where(defined, alpha, 1.0), jnp.where(defined, beta, 1.0)  # safe values for the gradient
    value = 1.0 - _sqrt((r - 1.0) ** 2 + (a - 1.0) ** 2 + (b - 1.0) ** 2)
    return _empty_to_nan(n, jnp.where(defined, value, jnp.nan))


def mae_score(qo, qs, valid):
    """Mean absolute error ``mean |qo - qs|`` (m3/s)."""
    qo, qs = zero_masked(valid, qo, qs)
    n, n_safe = count_valid(valid)
    return _empty_to_nan(n, masked_mean(jnp.abs(qo - qs), valid, n_safe))


def mape_score(qo, qs, valid):
    """Mean absolute percentage error ``mean |(qo - qs) / qo|`` (dimensionless, a fraction).

    Observations equal to 0 are skipped (smash would divide by zero and return inf).
    """
    valid = valid & (jnp.where(valid, qo, 1.0) != 0)
    qo, qs = zero_masked(valid, qo, qs)
    n, n_safe = count_valid(valid)
    rel = jnp.abs((qo - qs) / jnp.where(valid, qo, 1.0))
    return _empty_to_nan(n, masked_mean(rel, valid, n_safe))


def mse_score(qo, qs, valid):
    """Mean squared error ``mean (qo - qs)²`` (m6/s2)."""
    qo, qs = zero_masked(valid, qo, qs)
    n, n_safe = count_valid(valid)
    return _empty_to_nan(n, masked_mean((qo - qs) ** 2, valid, n_safe))


def rmse_score(qo, qs, valid):
    """Root mean squared error ``√mse`` (m3/s); gradient 0 (not NaN) at a perfect fit."""
    mse = mse_score(qo, qs, valid)
    return jnp.where(jnp.isnan(mse), jnp.nan, _sqrt(jnp.where(jnp.isnan(mse), 0.0, mse)))


def lgrm_score(qo, qs, valid):
    """Logarithmic error ``Σ qo·ln(qs/qo)²`` over entries with qo > 0 and qs > 0 (m3/s).

    A sum, not a mean (smash's definition). Entries with ``qs <= 0`` are skipped, so the
    gradient there is 0.
    """
    qo_, qs_ = zero_masked(valid, qo, qs)
    valid = valid & (qo_ > 0) & (qs_ > 0)
    n, _ = count_valid(valid)
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

UNDEFINED_WHEN: dict[str, str] = {"nse": "constant", "nnse": "constant", "kge": "constant",
                                   "mape": "positive", "lgrm": "positive"}
"""When a score is undefined on a gauge's observations: ``constant`` (needs two different observed
values), ``positive`` (needs an observation above zero). The others are defined on any non-empty
set of observations."""


def undefined_reason(kind: str | None, observed) -> str | None:
    """Why a score of kind ``kind`` (:data:`UNDEFINED_WHEN`) is undefined on ``observed`` (the usable
    observations of one gauge, m3/s, on the host), or None when it is defined (or there is none)."""
    values = np.asarray(observed, dtype=np.float64).ravel()
    if kind is None or values.size == 0:
        return None
    if kind == "positive":
        return None if np.any(values > 0) else "no observation above zero (only zero observations)"
    if values.size == 1:
        return f"one observation only ({values[0]:g} m3/s), which is constant"
    if values.max() > values.min():
        return None
    if values[0] == 0:
        return "only zero observations (constant)"
    return f"constant observations ({values[0]:g} m3/s at each of the {values.size} observed steps)"


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


# ------------------------------------------------------------------------------ metric


def lookup(table: Mapping, name: str, what: str):
    """``table[name]``, or a ValueError naming the unknown ``what`` and the choices."""
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(table)}")
    return table[name]


def as_2d(q, name):
    """``(q as (time, gauge), squeezed)``: a ``(time,)`` series becomes one gauge, ``squeezed`` True."""
    q = jnp.asarray(q)
    if q.ndim == 1:
        return q[:, None], True
    if q.ndim != 2:
        raise ValueError(f"{name} must be (time,) or (time, gauge); got shape {q.shape}")
    return q, False


@partial(jax.jit, static_argnames=("fn",))
def apply_compiled(fn, qo, qs, valid, context):
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
        :data:`~hybridhydro.cost.components.COMPONENTS` to minimise (e.g. 1 - NSE).

    Returns
    -------
    jax.Array
        ``(gauge,)`` values (a scalar for 1-D input); NaN for a gauge with no observation.
    """
    qo2, squeeze = as_2d(qo, "qo")
    qs2, _ = as_2d(qs, "qs")
    if qo2.shape != qs2.shape:
        raise ValueError(f"qo {qo2.shape} and qs {qs2.shape} differ in shape")
    valid = observed_mask(qo2, None if mask is None else jnp.reshape(jnp.asarray(mask), qo2.shape))
    from .components import COMPONENTS  # here: components imports this module

    fn = lookup(COMPONENTS, name, "cost component") if cost else lookup(METRICS, name, "metric")
    out = apply_compiled(fn, qo2, qs2, valid, {})
    return out[0] if squeeze else out
