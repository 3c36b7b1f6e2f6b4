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
history are written every ``checkpoint_every`` iterations and when the run is interrupted
(Ctrl-C); calling :func:`calibrate` again with the same arguments resumes where it stopped and
gives the same result as an uninterrupted run (adaptive optimisers and sbs: bit for bit;
L-BFGS-B restarts its curvature memory at the checkpoint, so it continues from the same
controls but not along the same path).

Periods read ``(start, end]`` as everywhere (:mod:`hybridhydro.periods`): the steps labelled
``start < t <= end`` enter the cost; the steps before are a warm-up of the same run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .. import structures
from ..mapping import MAPPINGS, default_bounds
from ..networks import merge
from ..periods import period_mask, select_gauges
from ..structure_name import calibrated_parameters, parse_structure
from .optimizers import (
    DEFAULT_OPTIMIZER,
    LEARNING_RATES,
    MAXITER,
    OPTIMIZERS,
    adagrad_smash,
    adam_smash,
    runner_class,
)
from .problem import build_problem
from .result import CalibrationResult, load_calibration

__all__ = [
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
    bounds = dict(bounds or {})
    stray = sorted(set(bounds) - set(names))
    if stray:
        where = "is not a parameter of" if not set(stray) & set(s.parameters) else "is not calibrated in"
        raise ValueError(f"bounds given for {stray}, which {where} this calibration of {s.name!r}; "
                         f"the calibrated parameters are {', '.join(names)}")
    out = {}
    for n in names:
        lo, hi = bounds.get(n, default_bounds(n))
        try:
            lo, hi = float(lo), float(hi)
        except (TypeError, ValueError):
            raise ValueError(f"bounds of {n!r} must be two numbers (low, high), got {bounds[n]!r}") from None
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
    regularisation: Mapping | None = None,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 10,
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
        Names to calibrate; default every parameter of the structure except ``ci``.
    initial_parameters, initial_states
        First guesses and fixed values (smash names -> scalar or (y, x) map); defaults smash's,
        ``ci`` fitted to the forcing.
    bounds
        ``{name: (low, high)}`` (default smash's bounds).
    nn_parameters, train_nn
        A hybrid's network (any form :func:`hybridhydro.simulate` takes; default zero weights)
        and whether to train it (default: yes for a hybrid structure). With sbs it is kept fixed.
    learning_rate
        Adaptive optimisers' learning rate (default smash's, :data:`LEARNING_RATES`).
    validation_period, validation_gauges
        Where the validation cost is measured (the same run): defaults the calibration's.
        Needed for early stopping on validation; set either to enable it.
    early_stopping
        Stop once the iteration minus the best one exceeds this number (smash's rule), the best
        being that of the validation cost (the training cost without a validation), and return
        the best controls; 0: off.
    cost_options
        Extra options of :func:`hybridhydro.cost.observation_cost` (weights, transforms, warm-up).
    descriptor_transform, hidden, network, seed
        Regionalisation options (:func:`hybridhydro.mapping.make_mapping`).
    warm_start
        A result of the same mapping (e.g. a pre-trained regionalisation network, also one read
        by :func:`load_calibration`) whose controls start this calibration.
    ode_solver, ode_substeps
        gr4_ode/gr4_ude step scheme and explicit sub-steps (:func:`hybridhydro.prepare_run`);
        recorded in the result, whose :meth:`~CalibrationResult.simulate` reuses them.
    regularisation
        smash's regularisation term, ``J = J_obs + wjreg · Σ w_c j_c``:
        ``{"components": ["prior", "smoothing"], "weights": [1, 1], "wjreg": 1e-3}``
        (:func:`hybridhydro.cost.regularisation_cost`: ``prior`` over the controls against
        their first guess, ``smoothing``/``hard-smoothing`` over the calibrated parameter
        maps); None or ``wjreg=0``: off (smash's default).
    checkpoint, checkpoint_every
        File (stem) to save to every ``checkpoint_every`` iterations and on Ctrl-C; an existing
        checkpoint of the same calibration is resumed.
    progress
        Show a tqdm bar with the cost.

    Raises
    ------
    ValueError
        Unknown mapping, optimiser or metric; a mapping/optimiser pair smash does not allow; a
        period outside the data; inverted bounds, bounds outside a parameter's feasible domain
        or on a parameter not calibrated; a gauge without observations in the period.
    """
    if mapping not in MAPPINGS:
        raise ValueError(f"unknown mapping {mapping!r}; choose one of {', '.join(MAPPINGS)}")
    optimizer = optimizer or DEFAULT_OPTIMIZER[mapping]
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if optimizer == "sbs" and mapping != "uniform":
        raise ValueError(f"sbs is a global search for the uniform mapping; with {mapping!r} use lbfgsb or adam")
    if optimizer == "lbfgsb" and mapping in ("ann", "cnn"):
        raise ValueError(f"{mapping!r} trains networks with adaptive optimisers: use adam, sgd, adagrad or rmsprop")
    maxiter = int(MAXITER[optimizer] if maxiter is None else maxiter)
    if maxiter < 0:
        raise ValueError(f"maxiter must be >= 0, got {maxiter}")
    s = parse_structure(structure)
    names = tuple(parameters) if parameters is not None else calibrated_parameters(s)
    unknown = sorted(set(names) - set(s.parameters))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {s.name!r}; its parameters are {', '.join(s.parameters)}")
    check_bounds(s, names, bounds)
    hybrid = getattr(structures.get_module(s.hydrology), "hybrid", False)
    train_nn = hybrid if train_nn is None else bool(train_nn)
    if optimizer == "sbs":
        train_nn = False
    cost = (cost,) if isinstance(cost, str) else tuple(cost)
    calib_steps = period_mask(basin["time"].values, period, "period")
    if not calib_steps.any():
        raise ValueError(f"the period {period} holds no time step of the basin; widen it")
    calib_gauges = select_gauges(basin, gauges)
    validating = validation_period is not None or validation_gauges is not None
    val_steps = period_mask(basin["time"].values, validation_period, "validation_period") if validating else None
    if validating and validation_period is None:
        val_steps = calib_steps
    val_gauges = select_gauges(basin, validation_gauges) if validation_gauges is not None else calib_gauges

    problem = build_problem(
        basin, s.name, mapping, names, bounds=bounds, parameters=initial_parameters, initial_states=initial_states,
        nn_parameters=nn_parameters, train_nn=train_nn, cost=cost, cost_options=dict(cost_options or {}),
        calib_steps=np.flatnonzero(calib_steps), calib_gauges=calib_gauges,
        val_steps=None if val_steps is None else np.flatnonzero(val_steps), val_gauges=val_gauges,
        descriptor_transform=descriptor_transform, hidden=hidden, seed=seed, ode_solver=ode_solver,
        ode_substeps=ode_substeps, network=network, warm_start=warm_start, regularisation=regularisation,
    )
    inputs = problem.inputs
    signature = {"structure": s.name, "mapping": mapping, "optimizer": optimizer, "names": list(names),
                 "cost": list(cost), "seed": seed, "nac": inputs.nac}
    runner = runner_class(optimizer)(problem, optimizer, maxiter, learning_rate, early_stopping, validating)
    controls, history, best, message = runner.run(
        checkpoint=None if checkpoint is None else Path(checkpoint), checkpoint_every=checkpoint_every,
        signature=signature, progress=progress,
    )
    values = problem.mapping(controls["mapping"])
    params = {n: inputs.labels.to_grid(np.broadcast_to(np.asarray(v, np.float32), (inputs.nac,)))
              for n, v in {**inputs.parameters, **values}.items()}
    nn_out = None
    if hybrid:
        nn_out = {k: np.asarray(v) for k, v in (controls.get("nn") or inputs.nn_parameters).items()}
    net = None
    if problem.mapping.graph is not None:
        net = merge(problem.mapping.graph, controls["mapping"]["network"])
    return CalibrationResult(
        structure=s.name.removeprefix("zero-"), mapping=mapping, optimizer=optimizer, parameters=params,
        nn_parameters=nn_out, network=net, controls=controls, history=history, best_iteration=best, message=message,
        options={"period": period, "gauges": [str(basin["gauge"].values[g]) for g in calib_gauges], "cost": cost,
                 "ode_solver": ode_solver, "ode_substeps": int(ode_substeps), "regularisation": regularisation},
        coords={"y": basin["y"].values, "x": basin["x"].values},
    )


