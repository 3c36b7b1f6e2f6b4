"""Calibration: controls -> parameter maps -> run -> cost, minimised (spec 8, 9, 10).

The package, by concern: :func:`calibrate` (here, at the top) checks its arguments and ties
the others together; :mod:`.problem` builds the pure loss on the one run road
(:func:`hybridhydro.prepare_run` / :func:`hybridhydro.run`); :mod:`.space` normalises bounded
controls; :mod:`.optimizers` holds the optimisers and their name lists; :mod:`.checkpoints`
saves and resumes; :mod:`.result` is the :class:`CalibrationResult` and its files.


:func:`calibrate` builds, once, a pure loss over a pytree of controls (the mapping's controls,
and the flux-correction network's weights for a hybrid structure), then runs an optimiser:

* ``"lbfgsb"``: SciPy's L-BFGS-B (bounded quasi-Newton) on the value and gradient from JAX;
* ``"adam_smash"``, ``"adagrad_smash"``: smash's exact update rules (spec 10.4), for results that
  follow smash's iterations (optax's ``"adam"`` and ``"adagrad"`` are the textbook rules; SGD
  without momentum and RMSprop are the same in both);
* ``"adam"``, ``"sgd"``, ``"adagrad"``, ``"rmsprop"``: optax, with smash's default learning
  rates, controls projected into their bounds after each update;
* ``"sbs"``: smash's step-by-step global search (Michel 1989; spec 10.3), gradient-free, for
  the uniform mapping.

Bounded controls (uniform and distributed parameter values) are optimised normalised to
[0, 1] by their bounds (smash's ``normalize`` transform; ``sbs`` uses smash's log / logit /
asinh transform instead). Each iteration records the cost, the infinity norm of the gradient
(smash's ``|proj g|``) and, when a validation is set, the validation cost; ``early_stopping=k``
stops after k iterations without improving the validation (or training) cost and returns the
best controls.

Checkpoints: with ``checkpoint=path`` the controls, the optimiser state, the iteration and the
history are written, as one ``.npz`` file replaced atomically, every ``checkpoint_every``
iterations and when the run is interrupted (Ctrl-C); calling :func:`calibrate` again with the
same arguments resumes where it stopped and gives the same result as an uninterrupted run
(adaptive optimisers and sbs: bit for bit; L-BFGS-B restarts its curvature memory at the
checkpoint, so it continues from the same controls but not along the same path). The
checkpoint records every setting that shapes the result (:func:`calibration_signature`), with
fingerprints of the starting point and of the data; a call that differs in any of them is
refused with the list of differences, never resumed from another calibration's state.

Periods read ``(start, end]`` as everywhere (:mod:`hybridhydro.periods`): the steps labelled
``start < t <= end`` enter the cost; the steps before are a warm-up of the same run.
"""

from __future__ import annotations

import difflib
import functools
import numbers
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import numpy as np
import xarray as xr

from .. import structures
from ..basin import check_run_basin
from ..mapping import MAPPINGS, REGIONAL_MAPPINGS, default_bounds
from ..networks import check_seed, check_widths, merge
from ..periods import period_mask, select_gauges
from ..structure_name import calibrated_parameters, parse_structure
from .space import TRANSFORMS
from .optimizers import (
    DEFAULT_OPTIMIZER,
    LEARNING_RATES,
    LR_SCHEDULES,
    MAXITER,
    OPTIMIZERS,
    SCHEDULED,
    adagrad_smash,
    adam_smash,
    runner_class,
)
from .checkpoints import canonical, checkpoint_file, fingerprint, load_finished, save_checkpoint
from .problem import build_problem, check_regularisation
from .health import training_health
from .result import CalibrationResult, basin_crs, load_calibration

__all__ = [
    "TRANSFORMS",
    "training_health",
    "LR_SCHEDULES",
    "DEFAULT_OPTIMIZER",
    "LEARNING_RATES",
    "MAPPINGS",
    "MAXITER",
    "OPTIMIZERS",
    "CalibrationResult",
    "adagrad_smash",
    "adam_smash",
    "calibrate",
    "check_bounds",
    "load_calibration",
]


#: The keys of ``cost_options`` (the options of :func:`hybridhydro.cost.observation_cost` that
#: :func:`calibrate` does not set itself: it sets the components and the gauges).
COST_OPTIONS = ("component_weights", "gauge_weights", "warmup_steps", "transforms", "mask", "context")

#: Optimisers that take a learning rate (every optimiser of :data:`OPTIMIZERS` but lbfgsb and sbs).
ADAPTIVE = tuple(LEARNING_RATES)

_EXAMPLES = {
    "initial_parameters": "{'cp': 250.0}",
    "initial_states": "{'hp': 0.01}",
    "bounds": "{'cp': (1.0, 2000.0)}",
    "cost_options": "{'warmup_steps': 24}",
    "regularisation": "{'components': ['prior'], 'wjreg': 1e-3}",
}


def as_dict_argument(name: str, value) -> dict:
    """``value`` (a mapping, or None for empty) as a dict, or a ValueError that names the argument."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        example = _EXAMPLES.get(name, "{name: value}")
        raise ValueError(f"{name} must be a dict (a mapping {{name: value}}), got {type(value).__name__} "
                         f"{value!r:.80}; e.g. {name}={example}")
    return dict(value)


def whole_number(name: str, value, minimum: int = 0) -> int:
    """``value`` as an int if it is a whole number (not a bool) ``>= minimum``, else a ValueError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_learning_rate(learning_rate, optimizer: str) -> float | None:
    """None (smash's default, :data:`LEARNING_RATES`) or a finite number > 0; a rate given to an
    optimiser that has none (lbfgsb, sbs) is a warning (it is not used)."""
    if learning_rate is None:
        return None
    if isinstance(learning_rate, (bool, np.bool_)) or not isinstance(learning_rate, numbers.Real):
        raise ValueError(f"learning_rate must be a number > 0 (or None for smash's default), "
                         f"got {type(learning_rate).__name__} {learning_rate!r}")
    lr = float(learning_rate)
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got {lr} (None: smash's default, "
                         f"{LEARNING_RATES.get(optimizer, LEARNING_RATES['adam'])} for {optimizer})")
    if optimizer not in ADAPTIVE:
        warnings.warn(f"learning_rate={lr} is not used by {optimizer} (only {', '.join(ADAPTIVE)} take one)",
                      UserWarning, stacklevel=3)
    return lr


def check_cost_options(cost_options) -> dict:
    """``cost_options`` checked by key (a typo is an error that suggests the key meant)."""
    options = as_dict_argument("cost_options", cost_options)
    for key in options:
        if key == "gauges":
            raise ValueError("cost_options: 'gauges' is set by calibrate's own gauges argument "
                             "(and validation_gauges); remove it from cost_options")
        if key not in COST_OPTIONS:
            close = difflib.get_close_matches(str(key), COST_OPTIONS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"cost_options: unknown key {key!r}; {hint}its keys are {', '.join(COST_OPTIONS)}")
    if "warmup_steps" in options:
        options["warmup_steps"] = whole_number("cost_options['warmup_steps']", options["warmup_steps"])
    return options


def check_bounds(structure, names: Sequence[str], bounds: Mapping | None) -> dict[str, tuple[float, float]]:
    """The bounds of the calibrated ``names``: the user's where given, else smash's.

    Raises
    ------
    ValueError
        A bound on a parameter that is not calibrated (or unknown), a lower bound not below
        the upper one, or bounds reaching outside the parameter's feasible domain (the run
        would refuse the values the optimiser may reach); the message names the parameter.
    """
    s = parse_structure(structure) if isinstance(structure, str) else structure
    bounds = as_dict_argument("bounds", bounds)
    stray = sorted(set(bounds) - set(names))
    if stray:
        where = "is not a parameter of" if not set(stray) & set(s.parameters) else "is not calibrated in"
        raise ValueError(f"bounds given for {stray}, which {where} this calibration of {s.name!r}; "
                         f"the calibrated parameters are {', '.join(names)}")
    out = {}
    for n in names:
        pair = bounds[n] if n in bounds else default_bounds(n)
        try:
            lo, hi = pair
            lo, hi = float(lo), float(hi)
        except (TypeError, ValueError):
            raise ValueError(f"bounds of {n!r} must be two numbers (low, high), got {pair!r}") from None
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"bounds of {n!r} are ({lo}, {hi}): both must be finite numbers")
        if not lo < hi:
            raise ValueError(f"bounds of {n!r} are ({lo}, {hi}): the lower bound must be below the upper; swap them")
        f_lo, f_hi = structures.FEASIBLE[n]
        if not (f_lo < lo and hi < f_hi):
            raise ValueError(
                f"bounds of {n!r} are ({lo}, {hi}), but {n} must stay inside ({f_lo}, {f_hi}) (open interval, "
                f"units {structures.PARAMETER_UNITS.get(n) or 'dimensionless'}); choose bounds inside it"
            )
        out[n] = (lo, hi)
    return out


def calibrate(
    basin: xr.Dataset,
    structure: str,
    mapping: str = "uniform",
    optimizer: str | None = None,
    maxiter: int | None = None,
    cost: str | Sequence[str] = "nse",
    period: tuple | None = None,
    gauges="dws",
    *,
    parameters: Sequence[str] | None = None,
    initial_parameters: Mapping | None = None,
    initial_states: Mapping | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    nn_parameters=None,
    train_nn: bool | None = None,
    learning_rate: float | None = None,
    lr_schedule: str = "constant",
    transform: str = "normalize",
    validation_period: tuple | None = None,
    validation_gauges=None,
    early_stopping: int = 0,
    cost_options: Mapping | None = None,
    descriptor_transform: str = "normalize",
    hidden: Sequence[int] | None = None,
    network: object | None = None,
    warm_start: CalibrationResult | None = None,
    ode_solver: str = "newton",
    ode_substeps: int = 4,
    nn_input_scaling: str = "raw",
    regularisation: Mapping | None = None,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 10,
    exact_resume: bool = False,
    progress: bool = True,
) -> CalibrationResult:
    """Calibrate a structure's parameters (and a hybrid's network) on observed discharge.

    Parameters
    ----------
    basin
        The basin Dataset (forcing over the whole run, ``qobs`` (gauge, time) in m3/s with NaN
        where missing, descriptors for the multi-*, ann and cnn mappings).
    structure
        smash's structure name, e.g. ``"gr4-lr"``, ``"gr4_mlp-lr"``, ``"gr4_ude-lr"``.
    mapping
        ``uniform``, ``distributed``, ``multi-linear``, ``multi-power``, ``ann`` or ``cnn``
        (:mod:`hybridhydro.mapping`).
    optimizer
        ``lbfgsb``, ``adam``, ``sgd``, ``adagrad``, ``rmsprop`` or ``sbs`` (uniform only);
        default smash's: sbs for uniform, lbfgsb for distributed and multi-*, adam for ann/cnn.
    maxiter
        Iterations (default smash's, spec 10.2; sbs: outer iterations).
    cost
        Cost component(s) to minimise (:mod:`hybridhydro.cost`), e.g. ``"nse"``, ``"kge"``.
    period
        ``(start, end]`` of the cost (:mod:`hybridhydro.periods`; the steps before are a
        warm-up); None: the whole run.
    gauges
        ``"dws"`` (the most downstream gauge, smash's default), ``"all"`` or gauge codes.
    parameters
        Names to calibrate (one name may be given as a string); default every parameter of the
        structure except ``ci``.
    initial_parameters, initial_states
        First guesses and fixed values, dicts (smash names -> scalar, (y, x) array, or (y, x)
        DataArray, read by its coordinates); defaults smash's, ``ci`` fitted to the forcing.
    bounds
        ``{name: (low, high)}`` (default smash's bounds).
    nn_parameters, train_nn
        A hybrid's network (any form :func:`hybridhydro.simulate` takes; default zero weights)
        and whether to train it (default: yes for a hybrid structure). With sbs it is kept fixed.
    learning_rate
        Adaptive optimisers' learning rate, a finite number > 0 (None: smash's,
        :data:`LEARNING_RATES`; 0 is refused, never replaced by the default). lbfgsb and sbs have
        none: a rate given to them is a warning.
    validation_period, validation_gauges
        Where the validation cost is measured (the same run): defaults the calibration's.
        Needed for early stopping on validation; set either to enable it.
    early_stopping
        Stop once the iteration minus the best one exceeds this number (smash's rule), the best
        being that of the validation cost (the training cost without a validation), and return
        the best controls; 0: off. A whole number >= 0; sbs does not stop early (an error).
    cost_options
        Extra options of :func:`hybridhydro.cost.observation_cost` (weights, transforms, warm-up).
    descriptor_transform, hidden, network, seed
        Regionalisation options (:func:`hybridhydro.mapping.make_mapping`): ``hidden`` a list
        of layer widths >= 1 (cnn: channels), ``seed`` a whole number. ``hidden`` or
        ``network`` with a mapping that has no network is a warning (they are not used). The
        descriptors are transformed with this basin's statistics (recorded in the result's
        ``descriptor_scaling``), a warm start's excepted.
    warm_start
        A result of the same mapping (e.g. a pre-trained regionalisation network, also one read
        by :func:`load_calibration`) whose controls start this calibration; a regionalisation
        keeps the descriptor statistics it was trained with (its ``descriptor_scaling``), on
        this basin too, so that it continues the same function of the descriptors.
    ode_solver, ode_substeps
        gr4_ode/gr4_ude step scheme and explicit sub-steps (:func:`hybridhydro.prepare_run`);
        recorded in the result, whose :meth:`~CalibrationResult.simulate` reuses them.
    lr_schedule
        The learning rate over the iterations of ``adam``, ``sgd``, ``adagrad``, ``rmsprop``
        (:data:`~hybridhydro.calibration.optimizers.LR_SCHEDULES`): ``constant`` (smash's),
        ``cosine``, ``exponential`` or ``warmup_cosine``, each from ``learning_rate`` down to 1 %
        of it at ``maxiter``. Its step count is in the optimiser's state: a checkpoint resumes it.
    transform
        The coordinates in which ``lbfgsb`` and the adaptive optimisers move the bounded
        parameters of a ``uniform`` or ``distributed`` mapping
        (:data:`~hybridhydro.calibration.space.TRANSFORMS`): ``"normalize"`` (smash's, each
        parameter scaled to [0, 1] by its bounds) or ``"sbs"`` (log for capacities and time
        constants, logit for fractions, asinh for the signed exchange, as smash's sbs does).
        The ``sbs`` optimiser always works in its own (``"sbs"``) coordinates; networks' weights
        are never transformed.
    nn_input_scaling
        How a hybrid's network sees ``pn`` and ``en`` while it trains
        (:data:`hybridhydro.structures.NN_INPUT_SCALINGS`): ``"raw"`` (smash's, mm per time
        step) or ``"hourly"`` (mm per hour, the same numbers at any ``dt``: the initial weights
        and the learning rate then mean the same on a daily and an hourly basin). The result's
        ``nn_parameters`` always act on raw inputs (the layout smash and
        :func:`hybridhydro.simulate` use): only ``weight_1``'s columns differ.
    regularisation
        smash's regularisation term, ``J = J_obs + wjreg · Σ w_c j_c``:
        ``{"components": ["prior", "smoothing"], "weights": [1, 1], "wjreg": 1e-3}``
        (:func:`hybridhydro.cost.regularisation_cost`: ``prior`` over the controls against
        their first guess, ``smoothing``/``hard-smoothing`` over the calibrated parameter
        maps); None or ``wjreg=0``: off (smash's default).
    checkpoint, checkpoint_every
        File to save to every ``checkpoint_every`` iterations and on Ctrl-C: a stem kept whole
        (``ck_0.01`` is ``ck_0.01.npz``), or a path ending in ``.npz``. An existing checkpoint of
        the same calibration is resumed: same settings (every argument that shapes the result,
        ``maxiter`` included), same starting point, same data (sha256 fingerprints); any other
        is an error that lists what differs (:mod:`hybridhydro.calibration.checkpoints`).
    exact_resume
        With a checkpoint: a resumed calibration is bit-identical to one never interrupted.
        sbs and the optax optimisers save their whole state, so nothing changes for them.
        SciPy's L-BFGS-B does not expose its curvature memory: a run resumed from an
        iteration in the middle continues from that point with a fresh memory, and so
        differs from an uninterrupted run in the last digits. With ``exact_resume`` it saves
        only its final state, and an interrupted L-BFGS-B starts again from its first
        iteration (the same result, more time). The pipeline uses it, so that a resumed run
        gives the same table.
    progress
        Show a tqdm bar with the cost (on stderr; off anyhow when the environment variable
        ``HYBRIDHYDRO_PROGRESS`` is 0, as in the pipeline's kernels: :mod:`hybridhydro.progress`).

    Raises
    ------
    ValueError
        Checked before the basin is read, each naming its argument: unknown mapping, optimiser
        or metric; a mapping/optimiser pair smash does not allow; ``maxiter``,
        ``early_stopping``, ``checkpoint_every``, ``seed`` not whole numbers in range; a
        ``learning_rate`` that is not a finite number > 0; ``hidden`` widths < 1; a list where
        a dict is meant (``initial_parameters``, ``initial_states``, ``bounds``,
        ``cost_options``); an unknown ``cost_options`` key; ``train_nn=True`` without a
        network; a period that is not a pair of dates or lies outside the data; an empty,
        repeated or unknown gauge; inverted bounds, bounds outside a parameter's feasible
        domain or on a parameter not calibrated. Then, on the observations, before any
        optimisation: a gauge without observations in the calibration or validation period,
        or one where a cost component is undefined (NSE, KGE on constant, single or all-zero
        observations; MAPE, LGRM without an observation above zero), the message naming the
        period, the gauges and why; and a first guess whose cost is not finite.
    """
    if not isinstance(mapping, str) or mapping not in MAPPINGS:
        raise ValueError(f"unknown mapping {mapping!r}; choose one of {', '.join(MAPPINGS)}")
    optimizer = DEFAULT_OPTIMIZER[mapping] if optimizer is None else optimizer
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if optimizer == "sbs" and mapping != "uniform":
        raise ValueError(f"sbs is a global search for the uniform mapping; with {mapping!r} use lbfgsb or adam")
    if optimizer == "lbfgsb" and mapping in ("ann", "cnn"):
        raise ValueError(f"{mapping!r} trains networks with adaptive optimisers: use adam, sgd, adagrad or rmsprop")
    # Every argument is checked here, before the basin is read: a bad one is named, never replaced,
    # truncated or dropped.
    maxiter = whole_number("maxiter", MAXITER[optimizer] if maxiter is None else maxiter)
    learning_rate = check_learning_rate(learning_rate, optimizer)
    early_stopping = whole_number("early_stopping", early_stopping)
    if early_stopping and optimizer == "sbs":
        raise ValueError(f"early_stopping={early_stopping}: sbs does not stop early (it stops when its step is "
                         "below 0.01); use lbfgsb or an adaptive optimiser, or early_stopping=0")
    checkpoint_every = whole_number("checkpoint_every", checkpoint_every, 1)
    if lr_schedule not in LR_SCHEDULES:
        close = difflib.get_close_matches(str(lr_schedule), LR_SCHEDULES, n=1)
        raise ValueError(f"lr_schedule={lr_schedule!r} is not a schedule"
                         + (f"; did you mean {close[0]!r}?" if close else "") + f" (schedules: {', '.join(LR_SCHEDULES)})")
    if lr_schedule != "constant" and optimizer not in SCHEDULED:
        raise ValueError(f"lr_schedule={lr_schedule!r}: {optimizer} "
                         + ("follows smash's rule with its constant rate" if optimizer in ADAPTIVE else "has no learning rate")
                         + f"; a schedule applies to {', '.join(SCHEDULED)}, or keep lr_schedule='constant'")
    if transform not in TRANSFORMS:
        close = difflib.get_close_matches(str(transform), TRANSFORMS, n=1)
        raise ValueError(f"transform={transform!r} is not a transform" + (f"; did you mean {close[0]!r}?" if close else "")
                         + f" (transforms: {', '.join(TRANSFORMS)}: normalize scales each bounded parameter to [0, 1], "
                         "sbs takes logs, logits and asinh as smash's sbs does)")
    if transform != "normalize" and mapping not in ("uniform", "distributed"):
        raise ValueError(f"transform={transform!r} applies to the bounded parameters of the uniform and distributed "
                         f"mappings; {mapping!r} calibrates network weights or coefficients, which are not "
                         "transformed; keep transform='normalize'")
    if nn_input_scaling not in structures.NN_INPUT_SCALINGS:
        raise ValueError(f"nn_input_scaling={nn_input_scaling!r} is not one of {', '.join(structures.NN_INPUT_SCALINGS)} "
                         "(raw: smash's inputs in mm per step; hourly: rates in mm per hour, the same at any dt)")
    seed = check_seed(seed)
    initial_parameters = as_dict_argument("initial_parameters", initial_parameters)
    initial_states = as_dict_argument("initial_states", initial_states)
    bounds = as_dict_argument("bounds", bounds)
    cost_options = check_cost_options(cost_options)
    regional = mapping in ("ann", "cnn")
    if hidden is not None:
        if regional:
            hidden = check_widths(hidden, "hidden" if mapping == "ann" else "hidden (the cnn's channels)")
        else:
            warnings.warn(f"hidden={hidden!r} is not used by the {mapping!r} mapping (only ann and cnn have "
                          "hidden layers)", UserWarning, stacklevel=2)
    if network is not None and not regional:
        warnings.warn(f"network is not used by the {mapping!r} mapping (only ann and cnn take one)",
                      UserWarning, stacklevel=2)
    s = parse_structure(structure)
    if isinstance(parameters, str):
        parameters = (parameters,)  # one name, not its letters
    names = tuple(parameters) if parameters is not None else calibrated_parameters(s)
    if not names:
        raise ValueError(f"parameters is empty; name at least one of {', '.join(s.parameters)}")
    unknown = sorted(set(map(str, names)) - set(s.parameters))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {s.name!r}; its parameters are {', '.join(s.parameters)}")
    resolved_bounds = check_bounds(s, names, bounds)
    hybrid = getattr(structures.get_module(s.hydrology), "hybrid", False)
    if train_nn is not None and not isinstance(train_nn, (bool, np.bool_)):
        raise ValueError(f"train_nn must be True, False or None (a hybrid's default: True), got {train_nn!r}")
    if train_nn and not hybrid:
        raise ValueError(f"train_nn=True, but {s.name!r} has no network to train; hybrid structures end in "
                         "_mlp or _ude (e.g. gr4_mlp-lr)")
    train_nn = hybrid if train_nn is None else bool(train_nn)
    if optimizer == "sbs" and train_nn:
        warnings.warn("train_nn=True: sbs is gradient-free and keeps the network fixed; use adam (or another "
                      "gradient optimiser) to train it", UserWarning, stacklevel=2)
        train_nn = False
    cost = (cost,) if isinstance(cost, str) else tuple(cost)
    check_run_basin(basin)  # what any run needs (variables, dt, time axis), before periods are read
    if "qobs" not in basin:
        raise ValueError("calibrate: the basin has no 'qobs' (gauge, time) observed discharge (m3 s-1) to calibrate on")
    calib_steps = period_mask(basin["time"].values, period, "period")
    if not calib_steps.any():
        raise ValueError(f"period={period} holds no time step of the basin; widen it")
    calib_gauges = select_gauges(basin, gauges, "gauges")
    validating = validation_period is not None or validation_gauges is not None
    val_steps = period_mask(basin["time"].values, validation_period, "validation_period") if validating else None
    if validating and validation_period is None:
        val_steps = calib_steps
    if val_steps is not None and not val_steps.any():
        raise ValueError(f"validation_period={validation_period} holds no time step of the basin; widen it")
    val_gauges = select_gauges(basin, validation_gauges, "validation_gauges") if validation_gauges is not None else calib_gauges

    problem = build_problem(
        basin, s.name, mapping, names, bounds=bounds, parameters=initial_parameters, initial_states=initial_states,
        nn_parameters=nn_parameters, train_nn=train_nn, cost=cost, cost_options=cost_options,
        calib_steps=np.flatnonzero(calib_steps), calib_gauges=calib_gauges,
        val_steps=None if val_steps is None else np.flatnonzero(val_steps), val_gauges=val_gauges,
        descriptor_transform=descriptor_transform, hidden=hidden, seed=seed, ode_solver=ode_solver,
        ode_substeps=ode_substeps, network=network, warm_start=warm_start, regularisation=regularisation,
        nn_input_scaling=nn_input_scaling,
    )
    inputs = problem.inputs
    signature = None
    if checkpoint is not None:
        times = basin["time"].values
        gauge_codes = [str(c) for c in basin["gauge"].values]
        signature = calibration_signature(
            problem, structure=s.name, mapping=mapping, optimizer=optimizer, parameters=list(names), maxiter=maxiter,
            learning_rate=LEARNING_RATES.get(optimizer) if learning_rate is None and optimizer in ADAPTIVE
            else learning_rate,
            early_stopping=early_stopping, period=_steps_text(times, calib_steps),
            gauges=[gauge_codes[g] for g in calib_gauges],
            validation_period=None if val_steps is None else _steps_text(times, val_steps),
            validation_gauges=[gauge_codes[g] for g in val_gauges] if validating else None,
            bounds=resolved_bounds, cost=list(cost), cost_options=cost_options,
            regularisation=check_regularisation(regularisation), seed=seed, ode_solver=ode_solver,
            ode_substeps=ode_substeps, train_nn=problem.train_nn,
            descriptor_transform=descriptor_transform if mapping in REGIONAL_MAPPINGS else None,
            hidden=list(hidden) if hidden is not None and regional else None,
            exact_resume=bool(exact_resume) if optimizer == "lbfgsb" else None,
            nn_input_scaling=nn_input_scaling if problem.train_nn else None,
            lr_schedule=lr_schedule if optimizer in SCHEDULED else None,
            transform=transform if optimizer != "sbs" else None,
        )
    runner = runner_class(optimizer)(problem, optimizer, maxiter, learning_rate, early_stopping, validating, transform)
    runner.exact_resume = bool(exact_resume)
    runner.lr_schedule = lr_schedule
    finished = None if checkpoint is None else load_finished(checkpoint, {"controls": problem.initial}, signature)
    if finished is not None:  # this very calibration ran to its end before: its result, read back
        state, meta = finished
        runner.rows = meta["history"]
        controls, history, best, message = state["controls"], runner.history(), int(meta["best"]), meta["message"]
    else:
        controls, history, best, message = runner.run(
            checkpoint=None if checkpoint is None else checkpoint_file(checkpoint), checkpoint_every=checkpoint_every,
            signature=signature, progress=progress,
        )
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"controls": controls},
                            {"signature": signature, "finished": True, "iteration": int(history.index.max()),
                             "history": runner.rows, "best": int(best), "message": message})
    values = problem.mapping(controls["mapping"])
    params = {n: inputs.labels.to_grid(np.broadcast_to(np.asarray(v, np.float32), (inputs.nac,)))
              for n, v in {**inputs.parameters, **values}.items()}
    nn_out = None
    if hybrid:
        trained = controls.get("nn")
        nn_out = {k: np.asarray(v) for k, v in (inputs.nn_parameters if trained is None else
                                                 structures.weights_for_raw_inputs(trained, problem.nn_scale)).items()}
    net = None
    if problem.mapping.graph is not None:
        net = merge(problem.mapping.graph, controls["mapping"]["network"])
    return CalibrationResult(
        structure=s.label, mapping=mapping, optimizer=optimizer, parameters=params,
        nn_parameters=nn_out, network=net, controls=controls, history=history, best_iteration=best, message=message,
        options={"period": period, "gauges": [str(basin["gauge"].values[g]) for g in calib_gauges], "cost": cost,
                 "ode_solver": ode_solver, "ode_substeps": int(ode_substeps), "regularisation": regularisation,
                 "parameters": list(names), "bounds": {n: list(b) for n, b in resolved_bounds.items()},
                 "given": sorted(map(str, initial_parameters)), "descriptor_transform": descriptor_transform,
                 "nn_input_scaling": nn_input_scaling if problem.train_nn else None,
                 "lr_schedule": lr_schedule if optimizer in SCHEDULED else None,
                 "transform": transform if optimizer != "sbs" else None,
                 "dt": float(inputs.dt)},
        coords={"y": basin["y"].values, "x": basin["x"].values}, crs=basin_crs(basin),
        descriptor_scaling=problem.mapping.scaling,
    )


def _steps_text(times, steps) -> str:
    """A window of steps (boolean mask) as its first and last labels and its length."""
    k = np.flatnonzero(steps)
    first, last = (np.datetime_as_string(np.asarray(times)[i].astype("datetime64[s]")) for i in (k[0], k[-1]))
    return f"{first} .. {last} ({k.size} steps)"


def calibration_signature(problem, **settings) -> dict:
    """What a checkpoint must match to be resumed: ``settings`` (every argument of
    :func:`calibrate` that shapes the result, resolved: the learning rate a default stands for,
    the period as the steps it selects, the gauges as codes, the bounds in force), the
    regionalisation network's architecture, the number of active cells, and two sha256
    fingerprints: ``start``, the starting point (the first controls, a warm start's or a
    network's weights among them, the fixed parameters and initial states, the hybrid's
    weights), and ``data``, what the loss reads (the forcing on the active cells, the observed
    discharge and its time labels, the routing plan of the mesh, the imperviousness, the
    mapping's transformed descriptors, ``dt``). See :mod:`.checkpoints`.
    """
    from ..networks import architecture, merge

    inputs, m = problem.inputs, problem.mapping
    start = [*jax.tree_util.tree_leaves(problem.initial), *jax.tree_util.tree_leaves(inputs.parameters),
             *jax.tree_util.tree_leaves(inputs.initial_states), *jax.tree_util.tree_leaves(inputs.nn_parameters)]
    observations = problem.observations or {}
    data = [*(inputs.forcing[k] for k in sorted(inputs.forcing)), *jax.tree_util.tree_leaves(inputs.plan),
            inputs.imperviousness, np.float64(inputs.dt), *(observations[k] for k in sorted(observations)),
            *(x for x in (m.descriptors, m.grid) if x is not None)]
    out = dict(settings)
    if m.graph is not None:
        try:
            out["network"] = architecture(merge(m.graph, m.network_params))
        except ValueError:
            out["network"] = f"{type(merge(m.graph, m.network_params)).__name__} (not described)"
    out.update(nac=inputs.nac, start=fingerprint(start), data=fingerprint(data), code=code_fingerprint())
    return canonical(out)


@functools.cache
def code_fingerprint() -> str:
    """sha256 of hybridhydro's own source (every ``.py`` of the package, by relative path).

    Part of a checkpoint's signature: a calibration resumed, or a finished one read back, after
    the code changed (an upgrade, an edit of the loss) is an error that says so, never a result
    of the old code passed off as the new one's.
    """
    import hashlib

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


