"""Signature cost components (spec 9.1): adapters of :mod:`hybridhydro.signatures` to the
component interface of :mod:`hybridhydro.cost.components`.

Owns the segmentation of the *observed* series into flood events, the signature context
(:func:`signature_context`, computed once on the host ahead of a compiled loss) and the
signature components, which importing this module adds to
:data:`~hybridhydro.cost.components.COMPONENTS`: every name of
:data:`hybridhydro.signatures.SIGNATURE_COMPONENTS`, accepting only the ``keep`` transform.
The signatures themselves are computed by :mod:`hybridhydro.signatures`; the ``context``
they read is described in :mod:`hybridhydro.cost`.
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np
import pandas as pd

from .. import signatures as _sig
from .components import COMPONENTS, Component, is_concrete

__all__ = ["signature_context"]


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
    if not (is_concrete(masks) and is_concrete(valid)):
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
        if not (is_concrete(qo) and is_concrete(valid) and is_concrete(rain)):
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
        given to :func:`~hybridhydro.cost.components.observation_cost`.
    rain
        Basin-mean rain at each gauge in m3/s (``P·area·1e-3/dt``), laid out like ``qo``.
    dt
        Time step (s); needed for event signatures.
    warmup_steps
        The warm-up of :func:`~hybridhydro.cost.components.observation_cost`: only checked
        (every gauge needs an event after it). As smash does, the events are segmented from the
        *whole* observed series; the warm-up then clips them.
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
