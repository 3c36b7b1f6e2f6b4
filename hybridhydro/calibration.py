"""Calibration: controls -> parameter maps -> simulation -> cost, minimised (spec 8, 9, 10).

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
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import xarray as xr
from jax.flatten_util import ravel_pytree
from tqdm.auto import tqdm

from . import structures
from .cost import observation_cost
from .mapping import MAPPINGS, ParameterMapping, make_mapping
from .mesh import Mesh
from .routing import device_plan, routing_plan
from .simulate import _fitted_interception, _network_weights, parse_structure, simulate_arrays

OPTIMIZERS = ("lbfgsb", "adam", "sgd", "adagrad", "rmsprop", "adam_smash", "adagrad_smash", "sbs")
#: smash's default learning rates (1.1.3 and later, spec 0).
LEARNING_RATES = {"adam": 0.003, "sgd": 0.02, "adagrad": 0.02, "rmsprop": 0.003, "adam_smash": 0.003,
                  "adagrad_smash": 0.02}
#: smash's default maximum iterations (spec 10.2); sbs counts outer iterations.
MAXITER = {"lbfgsb": 100, "adam": 200, "sgd": 200, "adagrad": 200, "rmsprop": 200, "adam_smash": 200,
           "adagrad_smash": 200, "sbs": 50}
_DEFAULT_OPTIMIZER = {"uniform": "sbs", "distributed": "lbfgsb", "multi-linear": "lbfgsb", "multi-power": "lbfgsb",
                      "ann": "adam", "cnn": "adam"}


# ------------------------------------------------------------------------------------ result


@dataclass
class CalibrationResult:
    """What :func:`calibrate` found.

    Attributes
    ----------
    parameters
        Every parameter of the structure as a (y, x) map (NaN off the active cells), the
        calibrated ones and the fixed ones; feed to :func:`hybridhydro.simulate`.
    nn_parameters
        The flux-correction network's weights (smash's layout) for a hybrid structure, else None.
    network
        The regionalisation network (``ann``/``cnn`` mappings) holding its trained weights.
    controls
        The optimised controls (a pytree, in physical units for uniform/distributed).
    history
        One row per iteration: ``cost``, ``grad_norm`` (infinity norm, as smash's ``|proj g|``),
        ``validation_cost`` (when set), ``seconds`` since the start.
    """

    structure: str
    mapping: str
    optimizer: str
    parameters: dict[str, np.ndarray]
    nn_parameters: dict[str, np.ndarray] | None
    network: object | None
    controls: object
    history: pd.DataFrame
    best_iteration: int
    message: str
    options: dict = field(default_factory=dict)
    coords: dict = field(default_factory=dict)  # the grid's y and x (m), for maps and files

    def simulate(self, basin: xr.Dataset, **options) -> xr.Dataset:
        """Run the calibrated model on ``basin`` (the same grid), e.g. over a validation period."""
        from .simulate import simulate

        return simulate(basin, self.structure, self.parameters, nn_parameters=self.nn_parameters, **options)

    def parameter_maps(self) -> xr.Dataset:
        """The parameters as an xarray Dataset of (y, x) maps, units as in :mod:`hybridhydro.structures`."""
        from .structures import PARAMETER_UNITS

        ds = xr.Dataset({n: (("y", "x"), np.asarray(v, np.float32)) for n, v in self.parameters.items()},
                        coords=self.coords)
        for n in ds.data_vars:
            ds[n].attrs["units"] = PARAMETER_UNITS.get(n, "")
        return ds

    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write the result to ``directory``: what :func:`load_calibration` reads back.

        ``parameters.nc`` (the maps), ``nn_parameters.npz`` (a hybrid's network), ``history.csv``
        ``calibration.json`` (structure, mapping, optimiser, message, options) and
        ``mapping_controls.npz`` (the mapping's controls, e.g. a regionalisation network's
        weights, in flattening order: what ``calibrate(..., warm_start=result)`` starts from).
        An existing directory is refused unless ``overwrite=True``.
        """
        directory = Path(directory)
        if (directory / "calibration.json").exists() and not overwrite:
            raise FileExistsError(
                f"{directory} already holds a calibration; pass overwrite=True to replace it or choose another directory"
            )
        directory.mkdir(parents=True, exist_ok=True)
        self.parameter_maps().to_netcdf(directory / "parameters.nc")
        if self.nn_parameters is not None:
            np.savez(directory / "nn_parameters.npz", **self.nn_parameters)
        self.history.to_csv(directory / "history.csv")
        if isinstance(self.controls, dict) and "mapping" in self.controls:
            leaves = jax.tree_util.tree_leaves(self.controls["mapping"])
            np.savez(directory / "mapping_controls.npz", *[np.asarray(x) for x in leaves])
        meta = {"structure": self.structure, "mapping": self.mapping, "optimizer": self.optimizer,
                "best_iteration": int(self.best_iteration), "message": self.message, "options": self.options}
        (directory / "calibration.json").write_text(json.dumps(meta, indent=1, default=_jsonable))
        return directory


def _jsonable(x):
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    return str(x)


def load_calibration(directory: str | Path) -> CalibrationResult:
    """Read a :class:`CalibrationResult` written by :meth:`CalibrationResult.save`."""
    directory = Path(directory)
    if not (directory / "calibration.json").exists():
        raise FileNotFoundError(f"{directory} holds no calibration.json: it was not written by CalibrationResult.save")
    meta = json.loads((directory / "calibration.json").read_text())
    with xr.open_dataset(directory / "parameters.nc") as ds:
        ds = ds.load()
    nn = None
    if (directory / "nn_parameters.npz").exists():
        with np.load(directory / "nn_parameters.npz") as data:
            nn = {k: data[k] for k in data.files}
    history = pd.read_csv(directory / "history.csv", index_col="iteration")
    controls = None
    if (directory / "mapping_controls.npz").exists():
        with np.load(directory / "mapping_controls.npz") as data:
            controls = {"mapping": [data[f"arr_{k}"] for k in range(len(data.files))]}
    return CalibrationResult(
        structure=meta["structure"], mapping=meta["mapping"], optimizer=meta["optimizer"],
        parameters={n: ds[n].values for n in ds.data_vars}, nn_parameters=nn, network=None, controls=controls,
        history=history, best_iteration=meta["best_iteration"], message=meta["message"], options=meta["options"],
        coords={"y": ds["y"].values, "x": ds["x"].values},
    )


# ------------------------------------------------------------------------------------ problem


def _select_gauges(basin: xr.Dataset, gauges) -> np.ndarray:
    codes = [str(c) for c in basin["gauge"].values]
    if not codes:
        raise ValueError("the basin has no gauge: calibration needs observed discharge at one gauge at least")
    if gauges is None or (isinstance(gauges, str) and gauges == "dws"):
        area = basin["area_dln"].values if "area_dln" in basin else basin["area"].values
        return np.array([int(np.nanargmax(area))])
    if isinstance(gauges, str) and gauges == "all":
        return np.arange(len(codes))
    gauges = [gauges] if isinstance(gauges, str) else list(gauges)
    unknown = [g for g in gauges if str(g) not in codes]
    if unknown:
        raise ValueError(f"unknown gauge(s) {unknown}; the basin's gauges are {codes} (or 'dws', 'all')")
    return np.array([codes.index(str(g)) for g in gauges])


def _period_steps(basin: xr.Dataset, period, what: str) -> np.ndarray:
    """Boolean (time,) mask of the steps in ``period`` = (start, end] (None: all)."""
    times = pd.DatetimeIndex(basin["time"].values)
    if period is None:
        return np.ones(times.size, bool)
    start, end = (None if p is None else pd.Timestamp(p) for p in period)
    if start is not None and end is not None and not start < end:
        raise ValueError(f"{what} {period}: the start must be before the end")
    lo, hi = times[0] - (times[1] - times[0] if times.size > 1 else pd.Timedelta(0)), times[-1]
    if (start is not None and start >= hi) or (end is not None and end <= lo):
        raise ValueError(
            f"{what} {period} lies outside the basin's data ({times[0]} .. {times[-1]}); "
            "choose dates inside it or read a longer basin"
        )
    mask = np.ones(times.size, bool)
    if start is not None:
        mask &= times > start
    if end is not None:
        mask &= times <= end
    return mask


@dataclass
class _Problem:
    loss: Callable  # controls -> (cost, aux)
    mapping: ParameterMapping
    train_nn: bool
    initial: dict
    low: dict | None
    high: dict | None


def _build(basin, structure, mapping_kind, names, *, bounds, parameters, initial_states, nn_parameters, train_nn,
           cost, cost_options, calib_steps, calib_gauges, val_steps, val_gauges, descriptor_transform, hidden, seed,
           ode_solver, network, warm_start=None):
    s = parse_structure(structure)
    dt = float(basin.attrs["dt"])
    mesh = Mesh.from_dataset(basin)
    plan = routing_plan(mesh)
    dplan = device_plan(plan)
    shape = (mesh.nrow, mesh.ncol)
    # The run stops at the last step any cost looks at: the later forcing cannot change it.
    nsteps = 1 + max(int(np.max(steps)) for steps in (calib_steps, val_steps) if steps is not None)
    full = {n: plan.to_cells(basin[n].transpose("time", "y", "x").values, dtype=np.float32)
            for n in ("prcp", "pet", "snow", "temp") if n in basin}
    forcing = {n: jnp.asarray(v[:nsteps]) for n, v in full.items()}
    fixed = {}
    for n in s.parameters:
        if n in names:
            continue
        value = (parameters or {}).get(n)
        if value is None:
            if n == "ci" and dt < 86400.0:
                # over the whole run, as simulate() and smash fit it
                value = _fitted_interception(full["prcp"], full["pet"], basin["time"].values, dt)
            else:
                value = structures.parameter_default(n, dt)
        fixed[n] = jnp.broadcast_to(jnp.asarray(_cells(value, plan, shape), jnp.float32), (plan.nac,))
    states = {n: jnp.broadcast_to(jnp.asarray(_cells((initial_states or {}).get(n, structures.STATE_DEFAULTS[n]),
                                                       plan, shape), jnp.float32), (plan.nac,))
              for n in s.states}
    m = make_mapping(mapping_kind, names, basin, bounds=bounds, descriptor_transform=descriptor_transform,
                     network=network, hidden=hidden, seed=seed, plan=plan)
    start_values = {n: _cells(parameters[n], plan, shape) for n in names if parameters and n in parameters}
    for n in names:
        if n not in start_values:
            start_values[n] = np.float32(structures.parameter_default(n, dt))
    weights = _network_weights(s, nn_parameters)
    qobs = basin["qobs"].transpose("time", "gauge").values[:nsteps].astype(np.float32)
    for what, steps, gauges in (("calibration", calib_steps, calib_gauges), ("validation", val_steps, val_gauges)):
        if steps is None:
            continue
        obs = qobs[steps][:, gauges]
        empty = [str(basin["gauge"].values[g]) for g, ok in zip(gauges, np.any(obs >= 0, axis=0)) if not ok]
        if empty:
            raise ValueError(
                f"gauge(s) {empty} have no observed discharge in the {what} period; choose another period or gauges"
            )
    qobs = jnp.asarray(np.where(qobs >= 0, qobs, np.nan))

    # Signature components need the rain (m3/s) and the observed events as constants: segment the
    # basin's whole observed series once on the host (as smash does), then cut, here and not in
    # the traced loss, the context of each cost (calibration, validation) to its steps and gauges.
    from .cost import signature_context
    from .signatures import SIGNATURE_COMPONENTS, gauge_rain_m3s

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

    def cost_on(q, steps, gauges, options):
        return observation_cost(q[steps][:, gauges], qobs[steps][:, gauges], components=cost, **options)

    controls0 = {"mapping": m.initial(start_values)}
    if warm_start is not None:
        controls0["mapping"] = _warm_controls(controls0["mapping"], warm_start, mapping_kind)
    if weights is not None and train_nn:
        controls0["nn"] = {k: jnp.asarray(v) for k, v in weights.items()}
    fixed_nn = None if weights is None else {k: jnp.asarray(v) for k, v in weights.items()}

    def loss(controls):
        params = {**fixed, **m(controls["mapping"])}
        nn = controls.get("nn", fixed_nn)
        out = simulate_arrays(params, states, forcing, dplan, structure=s.name, dt=dt, nn_parameters=nn,
                              ode_solver=ode_solver)
        q = out["q"]
        j = cost_on(q, calib_steps, calib_gauges, calib_options)
        jv = cost_on(q, val_steps, val_gauges, val_options) if val_steps is not None else jnp.nan
        return j, jv

    b = m.bounds(controls0["mapping"])
    low = high = None
    if b is not None:
        low, high = {"mapping": b[0]}, {"mapping": b[1]}
    return _Problem(loss, m, bool(train_nn and weights is not None), controls0, low, high), plan, shape, fixed, s


def _warm_controls(like, warm_start, mapping_kind):
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


def _cells(value, plan, shape) -> np.ndarray:
    arr = np.asarray(value.values if isinstance(value, xr.DataArray) else value, dtype=np.float64)
    if arr.ndim == 0 or arr.shape == (plan.nac,):
        return arr.astype(np.float32)
    if arr.shape != shape:
        raise ValueError(f"a parameter map has shape {arr.shape}; give a scalar or a (y, x) grid of shape {shape}")
    return plan.to_cells(arr).astype(np.float32)


# ------------------------------------------------------------------------------------ normalisation


class _Space:
    """Optimiser coordinates: bounded leaves normalised to [0, 1] (``normalize``), others as they are."""

    def __init__(self, initial, low, high):
        self.low, self.high = low, high
        if low is None:
            self.mask = jax.tree_util.tree_map(lambda x: False, initial)
        else:
            full_low = {**jax.tree_util.tree_map(lambda x: jnp.full_like(x, -jnp.inf), initial), **low}
            full_high = {**jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.inf), initial), **high}
            self.low, self.high = full_low, full_high

    def _safe(self):
        """Bounds with 0 and 1 where a leaf is unbounded (double-where: no inf in any gradient)."""
        bounded = jax.tree_util.tree_map(lambda lo, hi: jnp.isfinite(lo) & jnp.isfinite(hi), self.low, self.high)
        lo = jax.tree_util.tree_map(lambda b, x: jnp.where(b, x, 0.0), bounded, self.low)
        hi = jax.tree_util.tree_map(lambda b, x: jnp.where(b, x, 1.0), bounded, self.high)
        return bounded, lo, hi

    def to_opt(self, controls):
        if self.low is None:
            return controls
        bounded, lo, hi = self._safe()
        return jax.tree_util.tree_map(lambda b, x, l, h: jnp.where(b, (x - l) / (h - l), x), bounded, controls, lo, hi)

    def from_opt(self, z):
        if self.low is None:
            return z
        bounded, lo, hi = self._safe()
        return jax.tree_util.tree_map(lambda b, x, l, h: jnp.where(b, l + (h - l) * x, x), bounded, z, lo, hi)

    def opt_bounds(self, z):
        """(low, high) pytrees in optimiser coordinates: [0, 1] where bounded, else the raw bounds."""
        if self.low is None:
            inf = jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.inf), z)
            return jax.tree_util.tree_map(lambda x: -x, inf), inf
        both = lambda lo, hi: jnp.isfinite(lo) & jnp.isfinite(hi)  # noqa: E731
        lo = jax.tree_util.tree_map(lambda lo, hi: jnp.where(both(lo, hi), 0.0, lo), self.low, self.high)
        hi = jax.tree_util.tree_map(lambda lo, hi: jnp.where(both(lo, hi), 1.0, hi), self.low, self.high)
        return lo, hi


# ------------------------------------------------------------------------------------ checkpoints


def _save_checkpoint(path: Path, state: dict, meta: dict) -> None:
    """Write ``state`` (pytrees of arrays) and ``meta`` (JSON) next to each other, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, *[np.asarray(x) for x in leaves])
    meta = {**meta, "treedef": str(treedef), "nleaves": len(leaves)}
    path.with_suffix(".json.tmp").write_text(json.dumps(meta, indent=1, default=float))
    tmp.replace(path.with_suffix(".npz"))
    path.with_suffix(".json.tmp").replace(path.with_suffix(".json"))


def _interrupted(checkpoint: Path, where: str) -> KeyboardInterrupt:
    """The Ctrl-C a calibration re-raises once its checkpoint is saved: where it stopped, how to resume."""
    return KeyboardInterrupt(
        f"calibration interrupted at {where}; checkpoint saved to {Path(checkpoint)}.npz: "
        "call calibrate() again with the same arguments to resume"
    )


def _load_checkpoint(path: Path, like: dict, signature: dict):
    path = Path(path)
    if not path.with_suffix(".npz").exists():
        return None
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta.get("signature") != signature:
        raise ValueError(
            f"the checkpoint {path.with_suffix('.npz')} was written by another calibration "
            f"({meta.get('signature')}); give a new checkpoint path or delete it to start over"
        )
    leaves, treedef = jax.tree_util.tree_flatten(like)
    with np.load(path.with_suffix(".npz")) as data:
        saved = [data[f"arr_{k}"] for k in range(len(data.files))]
    if len(saved) != len(leaves):
        raise ValueError(f"the checkpoint {path} does not match this calibration's controls; delete it to start over")
    state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(s, dtype=jnp.asarray(x).dtype) for s, x in
                                                   zip(saved, leaves)])
    return state, meta


# ------------------------------------------------------------------------------------ calibrate


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
        ``(start, end]`` of the cost (the steps before are a warm-up); None: the whole run.
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
    ode_solver
        gr4_ode/gr4_ude scheme (:func:`hybridhydro.simulate`).
    checkpoint, checkpoint_every
        File (stem) to save to every ``checkpoint_every`` iterations and on Ctrl-C; an existing
        checkpoint of the same calibration is resumed.
    progress
        Show a tqdm bar with the cost.

    Raises
    ------
    ValueError
        Unknown mapping, optimiser or metric; a mapping/optimiser pair smash does not allow; a
        period outside the data; inverted bounds; a gauge without observations in the period.
    """
    if mapping not in MAPPINGS:
        raise ValueError(f"unknown mapping {mapping!r}; choose one of {', '.join(MAPPINGS)}")
    optimizer = optimizer or _DEFAULT_OPTIMIZER[mapping]
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
    names = tuple(parameters) if parameters is not None else tuple(n for n in s.parameters if n != "ci")
    unknown = sorted(set(names) - set(s.parameters))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {s.name!r}; its parameters are {', '.join(s.parameters)}")
    for n, (lo, hi) in (bounds or {}).items():
        if not float(lo) < float(hi):
            raise ValueError(f"bounds of {n!r} are ({lo}, {hi}): the lower bound must be below the upper; swap them")
    hybrid = getattr(structures.get_module(s.hydrology), "hybrid", False)
    train_nn = hybrid if train_nn is None else bool(train_nn)
    if optimizer == "sbs":
        train_nn = False
    cost = (cost,) if isinstance(cost, str) else tuple(cost)
    calib_steps = _period_steps(basin, period, "period")
    if not calib_steps.any():
        raise ValueError(f"the period {period} holds no time step of the basin; widen it")
    calib_gauges = _select_gauges(basin, gauges)
    validating = validation_period is not None or validation_gauges is not None
    val_steps = _period_steps(basin, validation_period, "validation_period") if validating else None
    if validating and validation_period is None:
        val_steps = calib_steps
    val_gauges = _select_gauges(basin, validation_gauges) if validation_gauges is not None else calib_gauges

    problem, plan, shape, fixed, s = _build(
        basin, s.name, mapping, names, bounds=bounds, parameters=initial_parameters, initial_states=initial_states,
        nn_parameters=nn_parameters, train_nn=train_nn, cost=cost, cost_options=dict(cost_options or {}),
        calib_steps=np.flatnonzero(calib_steps), calib_gauges=calib_gauges,
        val_steps=None if val_steps is None else np.flatnonzero(val_steps), val_gauges=val_gauges,
        descriptor_transform=descriptor_transform, hidden=hidden, seed=seed, ode_solver=ode_solver, network=network,
        warm_start=warm_start,
    )
    signature = {"structure": s.name, "mapping": mapping, "optimizer": optimizer, "names": list(names),
                 "cost": list(cost), "seed": seed, "nac": int(plan.nac)}
    runner = _SBS if optimizer == "sbs" else (_LBFGSB if optimizer == "lbfgsb" else _Adaptive)
    run = runner(problem, optimizer, maxiter, learning_rate, early_stopping, validating)
    controls, history, best, message = run.run(
        checkpoint=None if checkpoint is None else Path(checkpoint), checkpoint_every=checkpoint_every,
        signature=signature, progress=progress,
    )
    values = problem.mapping(controls["mapping"])
    params = {n: plan.to_grid(np.asarray(v, np.float32), *shape) for n, v in {**fixed, **values}.items()}
    nn_out = None
    if hybrid:
        nn_out = {k: np.asarray(v) for k, v in (controls.get("nn") or _network_weights(s, nn_parameters)).items()}
    net = None
    if problem.mapping.graph is not None:
        from .networks import merge

        net = merge(problem.mapping.graph, controls["mapping"]["network"])
    return CalibrationResult(
        structure=s.name.removeprefix("zero-"), mapping=mapping, optimizer=optimizer, parameters=params,
        nn_parameters=nn_out, network=net, controls=controls, history=history, best_iteration=best, message=message,
        options={"period": period, "gauges": [str(basin["gauge"].values[g]) for g in calib_gauges], "cost": cost},
        coords={"y": basin["y"].values, "x": basin["x"].values},
    )


# ------------------------------------------------------------------------------------ optimisers


class _Runner:
    """Common bookkeeping: history, progress bar, early stopping, checkpoints, Ctrl-C."""

    #: max |g| over every leaf of a gradient pytree (smash's ``|proj g|``): one jitted reduction.
    _inf_norm = staticmethod(jax.jit(lambda g: jnp.max(jnp.stack(
        [jnp.max(jnp.abs(x), initial=0.0) for x in jax.tree_util.tree_leaves(g)]))))

    def __init__(self, problem: _Problem, optimizer, maxiter, learning_rate, early_stopping, validating):
        self.problem, self.optimizer, self.maxiter = problem, optimizer, maxiter
        self.learning_rate = learning_rate
        self.early_stopping = int(early_stopping)
        self.validating = validating
        self.space = _Space(problem.initial, problem.low, problem.high)
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
        """(best iteration, best monitored cost) so far."""
        key = "validation_cost" if self.validating else "cost"
        values = [r[key] for r in self.rows]
        k = int(np.nanargmin(values)) if values else 0
        return self.rows[k]["iteration"] if values else 0, values[k] if values else np.inf

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


class _Adaptive(_Runner):
    """optax Adam, SGD, Adagrad, RMSprop, and smash's own Adam and Adagrad rules, with smash's
    learning rates; bounded controls clipped."""

    def make(self):
        lr = self.learning_rate or LEARNING_RATES[self.optimizer]
        return {"adam": optax.adam, "sgd": optax.sgd, "adagrad": optax.adagrad, "rmsprop": optax.rmsprop,
                "adam_smash": adam_smash, "adagrad_smash": adagrad_smash}[self.optimizer](lr)

    def run(self, checkpoint, checkpoint_every, signature, progress):
        opt = self.make()
        z = self.space.to_opt(self.problem.initial)
        lo, hi = self.space.opt_bounds(z)
        state = opt.init(z)
        it0, best_z = 0, z
        if checkpoint is not None:
            loaded = _load_checkpoint(checkpoint, {"z": z, "state": state, "best": z}, signature)
            if loaded is not None:
                saved, meta = loaded
                z, state, best_z, it0 = saved["z"], saved["state"], saved["best"], int(meta["iteration"])
                self.rows = meta["history"]

        @jax.jit
        def update(z, state, g):
            u, state = opt.update(g, state, z)
            z = optax.apply_updates(z, u)
            return jax.tree_util.tree_map(jnp.clip, z, lo, hi), state

        bar = tqdm(total=self.maxiter, initial=it0, disable=not progress, desc=f"calibrate ({self.optimizer})")
        message = f"maxiter {self.maxiter} reached"
        it = it0
        consistent = (z, state, best_z, it0, list(self.rows))
        try:
            for it in range(it0 + 1, self.maxiter + 1):
                (j, jv), g = self.value_and_grad(z)
                if not np.isfinite(float(j)):
                    message = f"the cost is not finite at iteration {it}: stopped (lower the learning rate?)"
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
                    _save_checkpoint(checkpoint, {"z": z, "state": state, "best": best_z},
                                     {"signature": signature, "iteration": it, "history": self.rows})
            else:
                (j, jv), g = self.value_and_grad(z)
                self.record(self.maxiter, j, jv, g)
                if self.monitor()[0] == self.maxiter:
                    best_z = z
        except KeyboardInterrupt:
            if checkpoint is not None:
                cz, cstate, cbest, cit, crows = consistent
                _save_checkpoint(checkpoint, {"z": cz, "state": cstate, "best": cbest},
                                 {"signature": signature, "iteration": cit, "history": crows})
                raise _interrupted(checkpoint, f"iteration {it}") from None
            raise
        finally:
            bar.close()
        best, _ = self.monitor()
        final = best_z if self.early_stopping > 0 else z
        return self.space.from_opt(final), self.history(), best, message


class _LBFGSB(_Runner):
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
            loaded = _load_checkpoint(checkpoint, {"x": flat0}, signature)
            if loaded is not None:
                saved, meta = loaded
                x, it0, self.rows = np.asarray(saved["x"], np.float64), int(meta["iteration"]), meta["history"]
        bar = tqdm(total=self.maxiter, initial=it0, disable=not progress, desc="calibrate (lbfgsb)")
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

        def callback(xk):
            state["it"] += 1
            state["x"] = xk
            self.record(state["it"], last["j"], last["jv"], grad_norm=last["gn"])
            bar.update(1)
            bar.set_postfix(cost=f"{float(last['j']):.5f}")
            if checkpoint is not None and state["it"] % checkpoint_every == 0:
                _save_checkpoint(checkpoint, {"x": jnp.asarray(xk, flat0.dtype)},
                                 {"signature": signature, "iteration": state["it"], "history": self.rows})
            if self.stop_early():
                raise StopIteration

        fun(x)  # the first evaluation, before iteration 1 (recorded as iteration 0)
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
            if checkpoint is not None:
                _save_checkpoint(checkpoint, {"x": jnp.asarray(state["x"], flat0.dtype)},
                                 {"signature": signature, "iteration": state["it"], "history": self.rows})
                raise _interrupted(checkpoint, f"iteration {state['it']}") from None
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


class _SBS(_Runner):
    """smash's step-by-step search (spec 10.3) on the uniform mapping's values, transformed."""

    def run(self, checkpoint, checkpoint_every, signature, progress):
        m = self.problem.mapping
        x_phys = np.asarray(self.problem.initial["mapping"]["values"], np.float64)
        tf = [_sbs_transform(float(a), float(b)) for a, b in zip(m.low, m.high)]
        lo_t = np.array([t[0](float(a)) if np.isfinite(t[0](float(a))) else -np.inf for t, a in zip(tf, m.low)])
        hi_t = np.array([t[0](float(b)) if np.isfinite(t[0](float(b))) else np.inf for t, b in zip(tf, m.high)])
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
            loaded = _load_checkpoint(checkpoint, {"y": jnp.zeros(n)}, signature)
            if loaded is not None:
                _, meta = loaded
                st = {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in meta["sbs"].items()}
                self.rows = meta["history"]
        if st["g"] is None:
            st["z"] = st["y"].copy()
            st["g"], gv = J(st["y"])
            self.record(0, st["g"], gv)
        c = 0.7 ** (1.0 / n)
        total = self.maxiter * n
        bar = tqdm(total=total, initial=st["it"], disable=not progress, desc="calibrate (sbs)")
        message = f"maxiter {self.maxiter} reached"

        def save():
            if checkpoint is not None:
                meta_st = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in st.items()}
                _save_checkpoint(checkpoint, {"y": jnp.asarray(st["y"])},
                                 {"signature": signature, "iteration": st["it"], "history": self.rows, "sbs": meta_st})

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
                bar.update(1)
                bar.set_postfix(cost=f"{st['g']:.5f}")
                if checkpoint is not None and st["it"] % checkpoint_every == 0:
                    save()
                if st["delta"] < 0.01:
                    message = "converged: step below 0.01"
                    break
        except KeyboardInterrupt:
            if checkpoint is not None:
                save()
                raise _interrupted(checkpoint, f"sub-iteration {st['it']}") from None
            raise
        finally:
            bar.close()
        values = jnp.asarray(from_t(st["z"]), jnp.float32)
        best, _ = self.monitor()
        return {**self.problem.initial, "mapping": {"values": values}}, self.history(), best, message
