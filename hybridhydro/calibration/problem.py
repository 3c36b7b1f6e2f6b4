"""The calibration problem: a pure loss over a pytree of controls, built once.

``controls -> parameter maps (the mapping) -> run (hybridhydro.run, on the inputs that
hybridhydro.prepare_run made) -> cost (hybridhydro.cost) [+ wjreg x regularisation]``. The run
is the one every other caller makes: same defaults, same ``ci`` fit, same feasibility checks,
same imperviousness and ODE options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from .. import structures
from ..cost import (
    REGULARISATIONS,
    check_observation_cost,
    observation_cost,
    regularisation_cost,
    signature_context,
    undefined_observations,
)
from ..mapping import ParameterMapping, make_mapping
from ..model import RunInputs, prepare_run, run
from ..signatures import SIGNATURE_COMPONENTS, gauge_rain_m3s
from ..structure_name import parse_structure


@dataclass
class Problem:
    """What an optimiser minimises.

    Attributes
    ----------
    loss
        ``controls -> (cost, validation cost)``, pure and differentiable (NaN validation cost
        when none is set).
    mapping
        The :class:`~hybridhydro.mapping.ParameterMapping` from controls to parameter values.
    train_nn
        Whether the controls hold a hybrid's network weights (``controls["nn"]``).
    initial
        The first controls (``{"mapping": ..., ["nn": ...]}``).
    low, high
        Box bounds of the controls (pytrees like ``initial``), or None.
    inputs
        The prepared run (:class:`~hybridhydro.model.RunInputs`): fixed parameters, states,
        forcing up to the last step a cost reads, the plan.
    observations
        What the cost reads besides ``inputs`` and the mapping's descriptors, on the host:
        ``qobs`` (time, gauge) observed discharge in m3/s over the run (NaN where missing),
        the step labels ``time``, and for signature costs ``rain`` (time, gauge) in m3/s;
        with those, the fingerprint of a checkpoint's data.
    nn_scale
        When the network trains: the factor per network input from raw to trained-on inputs
        (:func:`hybridhydro.structures.input_scale`); ``controls["nn"]`` acts on scaled inputs,
        :func:`hybridhydro.structures.weights_for_raw_inputs` gives the weights a run uses.
    """

    loss: Callable
    mapping: ParameterMapping
    train_nn: bool
    initial: dict
    low: dict | None
    high: dict | None
    inputs: RunInputs
    observations: dict | None = None
    nn_scale: object = None


def check_regularisation(regularisation: Mapping | None) -> dict | None:
    """Validated ``{"components": (...), "weights": (...) or None, "wjreg": float}`` (None: off).

    ``components`` names in :data:`hybridhydro.cost.REGULARISATIONS` (``prior``, ``smoothing``,
    ``hard-smoothing``; smash's ``jreg_cmpt``), ``weights`` one per component (``wjreg_cmpt``),
    ``wjreg`` the weight of the whole term (smash's ``wjreg``, a number >= 0).
    """
    if regularisation is None:
        return None
    if not isinstance(regularisation, Mapping):
        raise ValueError("regularisation must be a dict {'components': [...], 'weights': [...], 'wjreg': float}")
    unknown = sorted(set(regularisation) - {"components", "weights", "wjreg"})
    if unknown:
        raise ValueError(f"regularisation: unknown key(s) {unknown}; its keys are components, weights, wjreg")
    comps = regularisation.get("components", ("prior",))
    comps = (comps,) if isinstance(comps, str) else tuple(comps)
    bad = [c for c in comps if c not in REGULARISATIONS]
    if bad:
        raise ValueError(f"regularisation: unknown component(s) {bad}; choose among {', '.join(REGULARISATIONS)}")
    wjreg = float(regularisation.get("wjreg", 0.0))
    if not np.isfinite(wjreg) or wjreg < 0:
        raise ValueError(f"regularisation: wjreg must be a finite number >= 0, got {regularisation.get('wjreg')!r}")
    weights = regularisation.get("weights")
    return {"components": comps, "weights": None if weights is None else tuple(map(float, weights)), "wjreg": wjreg}


def build_problem(basin: xr.Dataset, structure: str, mapping_kind: str, names, *, bounds, parameters, initial_states,
                  nn_parameters, train_nn, cost, cost_options, calib_steps, calib_gauges, val_steps, val_gauges,
                  descriptor_transform, hidden, seed, ode_solver, ode_substeps, network, warm_start=None,
                  regularisation=None, nn_input_scaling: str = "raw") -> Problem:
    """Build the :class:`Problem` of a calibration (arguments as :func:`hybridhydro.calibrate`'s;
    ``calib_steps``/``val_steps`` are step indices, ``calib_gauges``/``val_gauges`` gauge indices)."""
    s = parse_structure(structure)
    dt = float(basin.attrs["dt"])
    # The run stops at the last step any cost looks at: the later forcing cannot change it.
    last = max(int(np.max(steps)) for steps in (calib_steps, val_steps) if steps is not None)
    times = basin["time"].values
    inputs = prepare_run(basin, s.name, parameters, initial_states, period=(None, times[last]),
                         nn_parameters=nn_parameters, ode_solver=ode_solver, ode_substeps=ode_substeps)
    plan = inputs.plan
    # A warm start continues the function it learnt of the descriptors transformed with ITS
    # statistics (those of the basin it was trained on), also on another basin.
    scaling = getattr(warm_start, "descriptor_scaling", None) if warm_start is not None else None
    m = make_mapping(mapping_kind, names, basin, bounds=bounds, descriptor_transform=descriptor_transform,
                     network=network, hidden=hidden, seed=seed, plan=plan,
                     scaling=scaling if getattr(warm_start, "mapping", None) == mapping_kind else None)
    # First guesses: the user's (validated by prepare_run; a scalar stays a scalar), else smash's default.
    given = dict(parameters or {})
    start_values = {}
    for n in names:
        if n in given:
            start_values[n] = np.float32(given[n]) if np.ndim(given[n]) == 0 else np.asarray(inputs.parameters[n])
        else:
            start_values[n] = np.float32(structures.parameter_default(n, dt))
    nsteps = last + 1
    qobs = basin["qobs"].transpose("time", "gauge").values[:nsteps].astype(np.float32)
    warmup = int(cost_options.get("warmup_steps", 0))
    for what, steps, gauges in (("calibration", calib_steps, calib_gauges), ("validation", val_steps, val_gauges)):
        if steps is None:
            continue
        obs = qobs[steps][:, gauges]
        empty = [str(basin["gauge"].values[g]) for g, ok in zip(gauges, np.any(obs >= 0, axis=0)) if not ok]
        if empty:
            raise ValueError(
                f"gauge(s) {empty} have no observed discharge in the {what} period; choose another period or gauges"
            )
        check_defined(basin, cost, what, times[steps], obs, gauges, warmup)
    qobs_host = np.where(qobs >= 0, qobs, np.nan)
    qobs = jnp.asarray(qobs_host)

    # Signature components need the rain (m3/s) and the observed events as constants: segment the
    # basin's whole observed series once on the host (as smash does), then cut, here and not in
    # the traced loss, the context of each cost (calibration, validation) to its steps and gauges.
    sig_ctx = None
    if any(c in SIGNATURE_COMPONENTS for c in cost):
        missing = [v for v in ("mean_prcp", "area_dln") if v not in basin]
        if missing:
            raise ValueError(f"signature cost components need the basin's {missing} (the rain at each gauge)")
        options = dict(cost_options.get("context") or {})
        obs_all = basin["qobs"].transpose("time", "gauge").values.astype(np.float64)
        rain_all = gauge_rain_m3s(basin).T
        rain_all = np.where(np.isfinite(rain_all) & (rain_all >= 0), rain_all, 0.0)  # missing rain counts as none
        sig_ctx = signature_context(cost, obs_all, rain_all, dt=dt, event_seg=options.get("event_seg"))

    def options_for(steps, gauges):
        """The cost options of one cost (its signature context cut to its steps and gauges)."""
        if sig_ctx is None:
            return cost_options
        ctx = {"rain": sig_ctx["rain"][steps][:, gauges]}
        if "events" in sig_ctx:
            ctx["events"] = sig_ctx["events"][gauges][:, :, steps]
            w = int(cost_options.get("warmup_steps", 0))
            seen = np.isfinite(obs_all[steps][w:][:, gauges]) & (obs_all[steps][w:][:, gauges] >= 0)
            has = np.any(ctx["events"][:, :, w:] & seen.T[:, None, :], axis=(1, 2))
            if not has.all():
                codes = [str(basin["gauge"].values[g]) for g in np.asarray(gauges)[~has]]
                raise ValueError(f"gauge(s) {codes} have no observed flood event in the cost's period: event "
                                 "signatures are undefined there; lengthen the period or lower event_seg's "
                                 "peak_quant (cost_options={'context': {'event_seg': {...}}})")
        return {**cost_options, "context": {**ctx, **(cost_options.get("context") or {})}}

    calib_options = options_for(calib_steps, calib_gauges)
    val_options = options_for(val_steps, val_gauges) if val_steps is not None else None
    # Every other check of the cost (transforms, weights, warm-up) on the host, before a loss is
    # compiled around it: an error names the option, not a frame inside a JAX trace.
    for what, steps, gauges, options in (("calibration", calib_steps, calib_gauges, calib_options),
                                         ("validation", val_steps, val_gauges, val_options)):
        if steps is not None:
            try:
                check_observation_cost(qobs_host[steps][:, gauges], cost, **options)
            except ValueError as err:
                raise ValueError(f"the {what} cost (cost={list(cost)}, cost_options): {err}") from None

    def cost_on(q, steps, gauges, options):
        return observation_cost(q[steps][:, gauges], qobs[steps][:, gauges], components=cost, **options)

    controls0 = {"mapping": m.initial(start_values)}
    if warm_start is not None:
        controls0["mapping"] = warm_controls(controls0["mapping"], warm_start, mapping_kind)
    weights = inputs.nn_parameters
    # The network trains on its inputs scaled (structures.NN_INPUT_SCALINGS); the run feeds raw
    # inputs, so the loss hands it the equivalent raw weights (weight_1's columns scaled).
    nn_scale = None
    if weights is not None and train_nn:
        nn_scale = jnp.asarray(structures.input_scale(structures.get_module(s.hydrology).nn_inputs, dt,
                                                      nn_input_scaling))
        controls0["nn"] = structures.weights_for_scaled_inputs(dict(weights), nn_scale)
    reg = check_regularisation(regularisation)
    if reg is not None and reg["wjreg"] > 0:
        rows, cols = jnp.asarray(np.asarray(plan.rows)), jnp.asarray(np.asarray(plan.cols))
        shape = inputs.labels.shape
        active = jnp.zeros(shape, bool).at[rows, cols].set(True)
        grids = lambda values: {k: jnp.zeros(shape, v.dtype).at[rows, cols].set(jnp.broadcast_to(v, (plan.rows.shape[0],)))  # noqa: E731
                                for k, v in values.items()}
        background = jax.tree_util.tree_map(jnp.asarray, controls0)
        background_fields = grids(m(controls0["mapping"]))

    def loss(controls):
        values = m(controls["mapping"])
        nn = controls.get("nn")
        out = run(inputs, parameters=values,
                  nn_parameters=None if nn is None else structures.weights_for_raw_inputs(nn, nn_scale))
        q = out["q"]
        j = cost_on(q, calib_steps, calib_gauges, calib_options)
        if reg is not None and reg["wjreg"] > 0:
            j = j + reg["wjreg"] * regularisation_cost(
                reg["components"], reg["weights"], controls=controls, background=background,
                fields=grids(values), background_fields=background_fields, active=active)
        jv = cost_on(q, val_steps, val_gauges, val_options) if val_steps is not None else jnp.nan
        return j, jv

    b = m.bounds(controls0["mapping"])
    low = high = None
    if b is not None:
        low, high = {"mapping": b[0]}, {"mapping": b[1]}
    observations = {"qobs": qobs_host, "time": times[:nsteps].astype("datetime64[ns]").astype(np.int64)}
    if sig_ctx is not None:
        observations["rain"] = rain_all
    return Problem(loss, m, bool(train_nn and weights is not None), controls0, low, high, inputs, observations,
                   nn_scale)


def check_defined(basin: xr.Dataset, cost, what: str, times, obs, gauges, warmup: int) -> None:
    """Refuse, before any optimisation, gauges whose observations leave a cost component undefined.

    ``obs``: the observed discharge (steps of the window, ``gauges``) on the host, NaN or negative
    where missing; ``times`` the window's step labels; the first ``warmup`` steps do not enter
    the cost. The traced loss stays free of such checks (it would return NaN, and an optimiser
    an empty or meaningless history).
    """
    obs = obs[warmup:]
    valid = np.isfinite(obs) & (obs >= 0)
    undefined = undefined_observations(cost, obs, valid)
    if not undefined:
        return
    window = f"{times[min(warmup, len(times) - 1)]} .. {times[-1]}"
    by_reason: dict[str, set] = {}
    components: dict[str, set] = {}
    for name, g, reason in undefined:
        code = str(basin["gauge"].values[gauges[g]])
        by_reason.setdefault(reason, set()).add(code)
        components.setdefault(code, set()).add(name)
    codes = sorted(components)
    why = (next(iter(by_reason)) if len(by_reason) == 1
           else "; ".join(f"{', '.join(sorted(c))}: {reason}" for reason, c in by_reason.items()))
    names = sorted(set().union(*components.values()))
    raise ValueError(
        f"the {what} period ({window}{', after the warm-up' if warmup else ''}) has, at gauge(s) {codes}, "
        f"{why}: the cost component(s) {names} are undefined on such observations (NaN), and an optimiser "
        "cannot lower them; choose another period or gauges, or a cost defined there (mae, mse, rmse)"
    )


def warm_controls(like, warm_start, mapping_kind):
    """The mapping controls of an earlier result, checked against this calibration's."""
    if warm_start.mapping != mapping_kind or warm_start.controls is None:
        raise ValueError(
            f"warm_start was calibrated with the {warm_start.mapping!r} mapping; it can only start a "
            f"{warm_start.mapping!r} calibration (pass its parameters as initial_parameters instead)"
        )
    leaves, treedef = jax.tree_util.tree_flatten(like)
    saved = jax.tree_util.tree_leaves(warm_start.controls["mapping"])
    if [np.shape(a) for a in saved] != [np.shape(a) for a in leaves]:
        raise ValueError(
            "warm_start's controls do not fit this calibration (another set of parameters, descriptors "
            "or network layout); calibrate with the same parameters, descriptors and hidden layers"
        )
    return treedef.unflatten([jnp.asarray(a, dtype=jnp.asarray(x).dtype) for a, x in zip(saved, leaves)])
