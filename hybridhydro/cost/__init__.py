"""Cost function (smash's ``J = J_obs + wjreg·J_reg``, spec section 9) and the evaluation table
of a simulation (smash's ``evaluation``, spec 13.4).

All pure JAX, float32 and differentiable (discharge in m3/s throughout). Every public name is
importable from :mod:`hybridhydro.cost`; each submodule owns one concern:

* :mod:`~hybridhydro.cost.metrics`: **metrics** over a ``(time, gauge)`` (or ``(time,)``)
  pair of observed ``qo`` and simulated ``qs`` discharge. :func:`observed_mask`, the scores
  (:func:`nse_score`, :func:`nnse_score`, :func:`kge_score`, :func:`mae_score`,
  :func:`mape_score`, :func:`mse_score`, :func:`rmse_score`, :func:`lgrm_score`),
  :data:`METRICS` (the scores a table reports), :data:`METRIC_INFO` (their definitions and
  units) and :func:`metric`. An observation is missing where ``qo`` is NaN or negative (smash
  marks missing with -99); every metric skips those entries. A score undefined on a gauge's
  observations is NaN, never a number (:data:`UNDEFINED_WHEN`: NSE, NNSE, KGE need two
  different observed values; MAPE, LGRM an observation above zero). The masking is a "double where":
  masked entries are replaced by safe values *before* any division, root or logarithm, so the
  gradient of a cost with gaps has no NaN.
* :mod:`~hybridhydro.cost.components`: **cost components** and the **observation term**.
  :data:`COMPONENTS` (the components to minimise: ``1 - NSE``, ``1 - KGE``, MAE, ...),
  :class:`Component`, :func:`register_component`, :func:`component`, the discharge
  transforms (:data:`TRANSFORMS`, :func:`transform`), the weights (:data:`QUANTILE_WEIGHTS`)
  and :func:`observation_cost`: transforms, warm-up, several components and gauges with
  weights (mean, explicit, or the median/quartiles of the per-gauge sums).
  :func:`check_observation_cost` runs every check of :func:`observation_cost` on the host,
  and :func:`undefined_observations` lists the gauges where a component is undefined (each
  :class:`Component` says when, ``undefined``), so that a compiled loss never meets them.
* :mod:`~hybridhydro.cost.signature_terms`: the **signature components** (adapters over
  :mod:`hybridhydro.signatures`, which computes the signatures), the segmentation of the
  observed series into events and :func:`signature_context`.
* :mod:`~hybridhydro.cost.regularisation`: **regularisation** :data:`REGULARISATIONS`,
  :func:`prior_term`, :func:`smoothing_term` (``hard-smoothing`` without the background) and
  :func:`regularisation_cost`; :func:`total_cost` adds them with ``wjreg``.
* :mod:`~hybridhydro.cost.evaluation`: :func:`evaluate` applies :data:`METRICS` to a
  :func:`~hybridhydro.simulate.simulate` result and the basin's ``qobs`` over a period
  ``(start, end]`` (:mod:`hybridhydro.periods`) and returns an ``xarray.Dataset`` along
  ``gauge``.

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

from .components import (
    COMPONENTS,
    QUANTILE_WEIGHTS,
    TRANSFORMS,
    Component,
    check_observation_cost,
    component,
    observation_cost,
    register_component,
    transform,
    undefined_observations,
)
from .evaluation import evaluate
from .metrics import (
    METRIC_INFO,
    METRICS,
    UNDEFINED_WHEN,
    kge_score,
    lgrm_score,
    mae_score,
    mape_score,
    metric,
    mse_score,
    nnse_score,
    nse_score,
    observed_mask,
    rmse_score,
    undefined_reason,
)
from .regularisation import REGULARISATIONS, prior_term, regularisation_cost, smoothing_term, total_cost
from .signature_terms import signature_context  # also registers the signature components

__all__ = [
    "COMPONENTS",
    "METRICS",
    "METRIC_INFO",
    "QUANTILE_WEIGHTS",
    "REGULARISATIONS",
    "TRANSFORMS",
    "UNDEFINED_WHEN",
    "Component",
    "check_observation_cost",
    "component",
    "evaluate",
    "kge_score",
    "lgrm_score",
    "mae_score",
    "mape_score",
    "metric",
    "mse_score",
    "nnse_score",
    "nse_score",
    "observation_cost",
    "observed_mask",
    "prior_term",
    "register_component",
    "regularisation_cost",
    "rmse_score",
    "signature_context",
    "smoothing_term",
    "total_cost",
    "transform",
    "undefined_observations",
    "undefined_reason",
]
