"""The comparison protocol of Huynh et al. (GMD 2026): splits, models, hybrid training, scores.

A model of the comparison is a hydrology and a mapping, named ``<hydrology>-<mapping>``:
``gr4-uniform``, ``gr4-distributed``, ``gr4-ann`` (GR4 with MLP regionalisation),
``gr4-cnn``, ``gr4_mlp-distributed`` (GR4-MLP, flux correction), ``gr4_ode-distributed``,
``gr4_ude-ann`` (the neural ODE with MLP regionalisation), ...; the routing is chosen once for
the whole comparison (``lr`` by default; the paper uses ``kw``).

Each model is calibrated once, on the calibration gauges over the calibration period
(:class:`Split`), and scored in four scenarios (:data:`SCENARIOS`):

=================  =====================  ======================================
scenario           period                 gauges
=================  =====================  ======================================
calibration        calibration period     calibration gauges
temporal           validation period      calibration gauges
spatial            calibration period     validation gauges (pseudo-ungauged)
spatio-temporal    validation period      validation gauges (pseudo-ungauged)
=================  =====================  ======================================

The pseudo-ungauged gauges are never seen in calibration: their parameters are whatever the
mapping gives there, a regionalisation from descriptors (``ann``, ``cnn``, ``multi-*``) or the
calibrated maps themselves (``uniform``, ``distributed``). Every run covers the whole basin
period, so the calibration period is the validation period's warm-up.

Hybrid structures are trained as smash's guide does (spec 10.5, :func:`train_hybrid`):
pre-calibrate the parent conceptual model, start the correction network small, train jointly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from . import structures
from .balance import closes  # noqa: F401  (the closure check, also offered here beside balance_closure)
from .calibration import MAPPINGS, CalibrationResult, calibrate, load_calibration
from .calibration.checkpoints import CheckpointMismatch
from .calibration.health import health_summary, training_health
from .cost import METRICS, evaluate
from .mapping import REGIONAL_MAPPINGS
from .periods import gauge_areas

SCENARIOS = ("calibration", "temporal", "spatial", "spatio-temporal")

#: The mappings that regionalise: parameters as a function of the descriptors (the mapping
#: module's list, :data:`hybridhydro.mapping.REGIONAL_MAPPINGS`).
REGIONALISATIONS = REGIONAL_MAPPINGS

#: The models of the paper's comparison: the four structures (GR4, GR4-MLP, GR4-ODE, GR4-UDE)
#: times the three spatial mappings (distributed, MLP and CNN regionalisation), and GR4 uniform
#: (params/paper.yaml runs them, with the paper's kinematic-wave routing).
PAPER_MODELS = ("gr4-uniform",) + tuple(
    f"{hydrology}-{mapping}" for hydrology in ("gr4", "gr4_mlp", "gr4_ode", "gr4_ude")
    for mapping in ("distributed", "ann", "cnn")
)

#: Readable labels of the hydrologies and mappings, for tables and figures.
LABELS = {"gr4": "GR4", "gr4_mlp": "GR4-MLP", "gr4_ode": "GR4-ODE", "gr4_ude": "GR4-UDE", "uniform": "uniform",
          "distributed": "distributed", "ann": "MLP regionalisation", "cnn": "CNN regionalisation",
          "multi-linear": "multi-linear regionalisation", "multi-power": "multi-power regionalisation"}


# ------------------------------------------------------------------------------------ models


@dataclass(frozen=True)
class ModelName:
    """A model of the comparison: ``hydrology`` (e.g. ``gr4_ude``) and ``mapping`` (e.g. ``ann``)."""

    hydrology: str
    mapping: str

    @classmethod
    def parse(cls, name: str) -> "ModelName":
        hydrology, sep, mapping = str(name).partition("-")
        if not sep or mapping not in MAPPINGS:
            raise ValueError(
                f"model {name!r}: write it <hydrology>-<mapping>, e.g. gr4-distributed or gr4_ude-ann, "
                f"with a mapping among {', '.join(MAPPINGS)}"
            )
        try:
            structures.get_module(hydrology)
        except (KeyError, ValueError):
            raise ValueError(f"model {name!r}: unknown hydrology {hydrology!r} (e.g. gr4, gr4_mlp, gr4_ode, gr4_ude)") from None
        return cls(hydrology, mapping)

    @property
    def hybrid(self) -> bool:
        return bool(getattr(structures.get_module(self.hydrology), "hybrid", False))

    @property
    def label(self) -> str:
        return f"{LABELS.get(self.hydrology, self.hydrology)}, {LABELS.get(self.mapping, self.mapping)}"

    def structure(self, routing: str = "lr") -> str:
        return f"{self.hydrology}-{routing}"

    def __str__(self) -> str:
        return f"{self.hydrology}-{self.mapping}"


def stage_of(model: str) -> str:
    """The pipeline stage that trains ``model``: hybrids in 05, regionalisations in 04, the rest in 03."""
    m = ModelName.parse(model)
    if m.hybrid:
        return "05_hybrid"
    return "04_regionalize" if m.mapping in REGIONALISATIONS else "03_calibrate"


def parent_model(model: str) -> str | None:
    """The conceptual model whose calibration pre-trains a hybrid (spec 10.5), None if not a hybrid.

    ``gr4_mlp-distributed`` -> ``gr4-uniform`` (the guide's uniform pre-calibration);
    ``gr4_ude-ann`` -> ``gr4_ode-ann`` (a regionalisation pre-trains its network).
    """
    m = ModelName.parse(model)
    if not m.hybrid:
        return None
    parent = structures.get_module(m.hydrology).parent
    regionalised = m.mapping in REGIONALISATIONS
    return f"{parent}-{m.mapping if regionalised else 'uniform'}"


def parent_structure(structure: str) -> str:
    """The conceptual structure a hybrid structure corrects, with the same routing: ``gr4_ude-lr`` -> ``gr4_ode-lr``."""
    from .structure_name import parse_structure

    s = parse_structure(structure)
    parent = getattr(structures.get_module(s.hydrology), "parent", None)
    if parent is None:
        raise ValueError(f"{structure!r} is not a hybrid structure: it has no parent")
    snow = "" if s.snow == "zero" else f"{s.snow}-"
    return f"{snow}{parent}-{s.routing}"


# ------------------------------------------------------------------------------------ split


@dataclass(frozen=True)
class Split:
    """Where a model is calibrated and where it is validated.

    Periods are ``(start, end]`` time labels (a label is the end of its step, as in the basin);
    the steps before the calibration period are the warm-up.
    """

    calibration_period: tuple[str, str]
    validation_period: tuple[str, str]
    calibration_gauges: tuple[str, ...]
    validation_gauges: tuple[str, ...] = ()

    def scenario(self, name: str) -> tuple[tuple[str, str], tuple[str, ...]]:
        """``(period, gauges)`` of a scenario of :data:`SCENARIOS`."""
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
        period = self.validation_period if name in ("temporal", "spatio-temporal") else self.calibration_period
        gauges = self.validation_gauges if name in ("spatial", "spatio-temporal") else self.calibration_gauges
        return period, gauges

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON (what :meth:`load` reads), for the stages that follow."""
        path = Path(path)
        path.write_text(json.dumps({k: list(v) for k, v in self.__dict__.items()}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Split":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: stage 03_calibrate writes the split; run it first")
        return cls(**{k: tuple(v) for k, v in json.loads(path.read_text()).items()})

    def describe(self) -> pd.DataFrame:
        """One row per scenario: its period and gauges, to print in a notebook."""
        rows = []
        for name in SCENARIOS:
            period, gauges = self.scenario(name)
            rows.append({"scenario": name, "from (excluded)": period[0], "to": period[1],
                         "gauges": ", ".join(gauges) or "(none)"})
        return pd.DataFrame(rows).set_index("scenario")


def make_split(
    basin: xr.Dataset,
    *,
    calibration_period: Sequence | None = None,
    validation_period: Sequence | None = None,
    warmup_fraction: float = 0.1,
    validation_gauges: Sequence[str] | str | None = "smallest",
    swap_periods: bool = False,
) -> Split:
    """A calibration/validation split of ``basin``.

    Parameters
    ----------
    calibration_period, validation_period
        ``(start, end]`` time labels. By default the run after a warm-up of
        ``warmup_fraction`` of its steps is cut in two halves: calibration then validation.
    swap_periods
        Exchange the two periods (the split-sample test's second half, Klemeš 1986):
        calibrate on the second and validate on the first. The run still covers the whole
        basin period, so the validation period keeps its warm-up and the calibration period
        is preceded by the validation one.
    validation_gauges
        The pseudo-ungauged gauges held out of calibration: codes, ``"smallest"`` (the gauge
        with the smallest drained area, the default; none when the basin has one gauge) or
        None / ``[]`` (no spatial validation). The other gauges calibrate.

    A basin read with a spin-up (``basin.spinup_start``; its attribute ``spinup_end``) keeps
    the steps up to ``spinup_end`` as warm-up: the default halves cut the steps after it
    (``warmup_fraction`` is then unused), and a period that starts inside it is an error.
    """
    times = pd.DatetimeIndex(basin["time"].values)
    codes = [str(c) for c in basin["gauge"].values]
    if times.size < 4:
        raise ValueError(f"the basin has {times.size} time steps: a calibration/validation split needs 4 at least")
    if not 0.0 <= warmup_fraction < 0.5:
        raise ValueError(f"warmup_fraction must be in [0, 0.5), got {warmup_fraction}")
    w = int(round(warmup_fraction * times.size))
    spinup_end = basin.attrs.get("spinup_end")
    if spinup_end is not None:  # the spin-up is the warm-up (hybridhydro.pipeline.sources.SPINUP_ATTR)
        spinup_end = pd.Timestamp(spinup_end)
        w = int(np.searchsorted(times, spinup_end, side="right"))
        if times.size - w < 4:
            raise ValueError(f"{times.size - w} time step(s) after the spin-up (which ends at {spinup_end}): a "
                             "calibration/validation split needs 4 at least; move basin.start earlier or basin.end later")
    mid = w + (times.size - w) // 2
    label = lambda t: str(pd.Timestamp(t))  # noqa: E731
    calibration = tuple(map(label, calibration_period)) if calibration_period is not None else (
        label(times[w - 1] if w > 0 else times[0] - (times[1] - times[0])), label(times[mid - 1]))
    validation = tuple(map(label, validation_period)) if validation_period is not None else (
        label(times[mid - 1]), label(times[-1]))
    if swap_periods:
        calibration, validation = validation, calibration
    for what, (a, b) in (("calibration_period", calibration), ("validation_period", validation)):
        if spinup_end is not None and pd.Timestamp(a) < spinup_end:
            raise ValueError(f"{what} ({a}, {b}] starts inside the spin-up, which ends at basin.start = {spinup_end}: "
                             "its steps would be scored; start it at basin.start or later (or move basin.start)")
        inside = (times > pd.Timestamp(a)) & (times <= pd.Timestamp(b))
        if not inside.any():
            raise ValueError(
                f"{what} ({a}, {b}] holds no step of the basin ({times[0]} .. {times[-1]}); choose dates inside it"
            )
    if isinstance(validation_gauges, str) and validation_gauges == "smallest":
        held = (codes[int(np.nanargmin(gauge_areas(basin)))],) if len(codes) > 1 else ()
    elif validation_gauges is None:
        held = ()
    else:
        held = (validation_gauges,) if isinstance(validation_gauges, str) else tuple(map(str, validation_gauges))
    unknown = [g for g in held if g not in codes]
    if unknown:
        raise ValueError(f"validation gauge(s) {unknown} are not in the basin; its gauges are {codes}")
    calibrating = tuple(c for c in codes if c not in held)
    if not calibrating:
        raise ValueError(f"every gauge {codes} is held out for validation: keep one at least to calibrate on")
    return Split(calibration, validation, calibrating, held)


# ------------------------------------------------------------------------------------ training


def train_hybrid(
    basin: xr.Dataset,
    structure: str,
    mapping: str = "distributed",
    optimizer: str | None = None,
    maxiter: int | None = None,
    *,
    pretrained: CalibrationResult | None = None,
    pre_mapping: str | None = None,
    pre_optimizer: str | None = None,
    pre_maxiter: int | None = None,
    hidden: Sequence[int] = (16,),
    initializer: str = "he_uniform",
    weight_scale: float = 0.1,
    seed: int = 0,
    nn_input_scaling: str = "raw",
    **options,
) -> CalibrationResult:
    """Train a hybrid structure the way smash's guide does (spec 10.5).

    1. **Pre-calibration** of the parent conceptual model (``gr4`` for ``gr4_mlp``, ``gr4_ode``
       for ``gr4_ude``), whose network is zero: ``uniform`` + ``sbs`` with ``pre_maxiter``
       iterations (default 2, the guide's); with a regionalisation mapping (``ann``, ``cnn``)
       it pre-trains the descriptor network instead (default ``maxiter`` iterations, the same
       learning rate). Skipped when ``pretrained`` (a result whose parameters cover the
       structure's) is given.
    2. **A small network**: ``initializer`` (seeded) times ``weight_scale``, so that the hybrid
       starts close to its parent.
    3. **Joint training** of the conceptual parameters (or the regionalisation network) and the
       correction network with ``optimizer`` (default smash's for the mapping).

    ``nn_input_scaling`` (:func:`hybridhydro.calibrate`): with ``"hourly"`` the network trains on
    ``pn`` and ``en`` in mm per hour, and its initial weights are drawn for those inputs, so the
    starting corrections and the learning rate mean the same at any ``dt``.

    ``options`` go to both :func:`hybridhydro.calibrate` calls (``period``, ``gauges``, ``cost``,
    ``learning_rate``, ``progress``, ...). The result's ``options["pre_calibration"]`` records
    the first step.
    """
    from .networks import FluxCorrectionNet
    from .structure_name import parse_structure

    s = parse_structure(structure)
    module = structures.get_module(s.hydrology)
    if not getattr(module, "hybrid", False):
        raise ValueError(f"{structure!r} has no correction network: calibrate it with hybridhydro.calibrate")
    parent = structure.replace(s.hydrology, module.parent, 1)
    regionalised = mapping in REGIONALISATIONS
    if pretrained is None:
        pmap = pre_mapping or (mapping if regionalised else "uniform")
        dropped = ("checkpoint", "early_stopping") + (("learning_rate", "lr_schedule") if pmap == "uniform" else ())
        if pmap not in ("uniform", "distributed"):
            dropped += ("transform",)  # the parent's own mapping trains a network: nothing to transform
        pre_options = {k: v for k, v in options.items() if k not in dropped}
        popt = pre_optimizer  # None: the mapping's default (hybridhydro.calibration.DEFAULT_OPTIMIZER)
        if pre_maxiter is None:
            pre_maxiter = 2 if pmap == "uniform" else maxiter
        pretrained = calibrate(basin, parent, pmap, popt, pre_maxiter, seed=seed, **pre_options)
    missing = [n for n in s.parameters if n not in pretrained.parameters]
    if missing:
        raise ValueError(f"the pre-calibrated model ({pretrained.structure}) lacks {missing} of {structure!r}")
    net = FluxCorrectionNet.for_structure(s.hydrology, hidden=tuple(hidden), initializer=initializer,
                                          scale=weight_scale, seed=seed)
    # The initial weights are drawn for the inputs the network trains on; the run takes raw ones.
    scale = structures.input_scale(module.nn_inputs, float(basin.attrs["dt"]), nn_input_scaling)
    weights = {k: np.asarray(v) for k, v in structures.weights_for_raw_inputs(net.weights(), scale).items()}
    start = {"warm_start": pretrained} if (pretrained.mapping == mapping and pretrained.controls is not None) else {}
    result = calibrate(basin, structure, mapping, optimizer, maxiter, initial_parameters=pretrained.parameters,
                       nn_parameters=weights, train_nn=True, seed=seed, nn_input_scaling=nn_input_scaling,
                       **start, **options)
    result.options["pre_calibration"] = {
        "structure": pretrained.structure, "mapping": pretrained.mapping, "optimizer": pretrained.optimizer,
        "iterations": int(len(pretrained.history)),
        "final_cost": float(pretrained.history["cost"].iloc[-1]) if len(pretrained.history) else float("nan"),
    }
    return result


def train_model(
    basin: xr.Dataset,
    model: str,
    split: Split,
    *,
    routing: str = "lr",
    settings: Mapping[str, Mapping] | None = None,
    hybrid: Mapping | None = None,
    cost="nse",
    pretrained: CalibrationResult | None = None,
    progress: bool = True,
    seed: int = 0,
    health_restarts: int = 0,
    **options,
) -> CalibrationResult:
    """Calibrate one model of the comparison on the split's calibration gauges and period.

    Parameters
    ----------
    model
        ``<hydrology>-<mapping>`` (:class:`ModelName`).
    routing
        The routing module of every model (``lr``, ``kw``, ...).
    settings
        Per mapping, ``optimizer``, ``maxiter``, ``learning_rate`` (a mapping, or the parameters'
        ``calibration.optimizers`` as they are); a missing or None value keeps
        :func:`hybridhydro.calibrate`'s default (smash's: sbs 50 for uniform, lbfgsb 100 for
        distributed and multi-*, adam 200 at 0.003 for ann and cnn).
    hybrid
        Options of :func:`train_hybrid` for hybrid hydrologies (``pre_maxiter``, ``hidden``,
        ``initializer``, ``weight_scale``, ``seed``).
    pretrained
        For a hybrid: the pre-calibrated parent to start from (skips step 1 of
        :func:`train_hybrid`).
    seed
        Seed of the initial weights of a regionalisation network (``ann``, ``cnn``) and of a
        hybrid's correction network (unless ``hybrid`` sets its own ``seed``).
    health_restarts
        The trained model's health (:func:`hybridhydro.calibration.training_health`) is
        recorded in ``result.options["health"]``. When a check fails and the model has a
        network (``ann``, ``cnn``, a hybrid), it is trained again from the next seeds, up to
        this many times; the first healthy training is kept (else the lowest cost), and
        ``result.options["restarts"]`` records each attempt (seed, best cost, verdict).
    """
    m = ModelName.parse(model)
    conf = (settings or {}).get(m.mapping) or {}
    conf = conf.model_dump() if hasattr(conf, "model_dump") else dict(conf)  # the params' section, or a plain dict
    common = dict(period=split.calibration_period, gauges=list(split.calibration_gauges), cost=cost,
                  progress=progress, learning_rate=conf.get("learning_rate"),
                  lr_schedule=conf.get("schedule") or "constant", transform=conf.get("transform") or "normalize",
                  **options)
    structure = m.structure(routing)
    hybrid = {"seed": seed, **{k: v for k, v in dict(hybrid or {}).items() if not (k == "seed" and v is None)}}

    def train(seed_now: int, checkpoint) -> CalibrationResult:
        ck = {} if checkpoint is None else {"checkpoint": checkpoint}
        if m.hybrid:
            return train_hybrid(basin, structure, m.mapping, conf.get("optimizer"), conf.get("maxiter"),
                                pretrained=pretrained, **{**hybrid, "seed": seed_now}, **ck, **common)
        return calibrate(basin, structure, m.mapping, conf.get("optimizer"), conf.get("maxiter"), seed=seed_now,
                         **ck, **common)

    checkpoint = common.pop("checkpoint", None)
    stale = common.pop("stale_checkpoints", "error")
    if stale not in ("error", "restart"):
        raise ValueError(f"stale_checkpoints={stale!r}: choose 'error' (refuse a checkpoint of another calibration) "
                         "or 'restart' (delete it and train from the start)")
    plain_train = train

    def train(seed_now: int, checkpoint) -> CalibrationResult:  # noqa: F811  (the same, with the stale policy)
        for _ in range(8):  # one checkpoint per step of a hybrid (pre-calibration, joint): a few at most
            try:
                return plain_train(seed_now, checkpoint)
            except CheckpointMismatch as mismatch:
                if stale != "restart":
                    raise
                print(f"{model}: {mismatch.path.name} was written by another calibration (another version of "
                      "the code, or other settings); it is deleted and the training starts over")
                mismatch.path.unlink(missing_ok=True)
        return plain_train(seed_now, checkpoint)

    first_seed = hybrid["seed"] if m.hybrid else seed
    attempts = []
    for k in range(int(health_restarts) + 1):
        seed_now = first_seed + k
        ck = None if checkpoint is None else (checkpoint if k == 0 else Path(f"{checkpoint}-seed{seed_now}"))
        result = train(seed_now, ck)
        table = training_health(result, basin)
        attempts.append((result, table, seed_now))
        has_network = m.hybrid or m.mapping in ("ann", "cnn")
        if bool(table["ok"].all()) or not has_network:
            break
    healthy = [a for a in attempts if bool(a[1]["ok"].all())]
    result, table, _ = healthy[0] if healthy else min(attempts, key=lambda a: float(a[0].history["cost"].min()))
    result.options["health"] = [{"check": c, **{k: _plain(v) for k, v in row.items()}}
                                for c, row in table.to_dict("index").items()]
    if len(attempts) > 1:
        result.options["restarts"] = [{"seed": s, "best cost": float(r.history["cost"].min()),
                                       "health": health_summary(t)} for r, t, s in attempts]
    return result


def _plain(value):
    """A table value as plain JSON (numpy scalars to Python)."""
    return value.item() if isinstance(value, np.generic) else value


def training_options(cfg) -> dict:
    """The keyword arguments of :func:`train_models` and :func:`train_model` that a case's
    parameters set (a :class:`hybridhydro.Params`, or any object with its ``calibration`` and
    ``hybrid`` sections, ``seed`` and ``hybrid_seed``): routing, each mapping's optimiser
    settings, cost, seed, health restarts, bounds, and the hybrids' options. Every stage that
    trains a model passes these, so that a model trained in one stage (03-05) or in a study
    (08) is the same model.
    """
    c, h = cfg.calibration, cfg.hybrid
    return dict(routing=c.routing, settings=c.optimizers, cost=c.cost, seed=cfg.seed,
                health_restarts=c.health_restarts, bounds=c.bounds,
                hybrid=dict(hidden=h.hidden, initializer=h.initializer, weight_scale=h.weight_scale,
                            seed=cfg.hybrid_seed, pre_maxiter=c.pre_maxiter, nn_input_scaling=h.input_scaling))


def train_models(
    basin: xr.Dataset,
    models: Sequence[str],
    split: Split,
    *,
    directory: str | Path | None = None,
    stage: str | None = None,
    checkpoints: str | Path | None = None,
    **options,
) -> tuple[dict[str, CalibrationResult], dict[str, float]]:
    """Train several models of the comparison (:func:`train_model`), saving each to ``directory``.

    ``stage`` keeps only the models that stage trains (:func:`stage_of`). A hybrid starts from
    its parent (:func:`parent_model`) when ``directory`` holds it, as smash's guide pre-calibrates;
    ``result.options["pre_calibration"]["reused"]`` says whether it did. The run directory
    belongs to the pipeline: a model saved there before is replaced. Returns the results and
    the wall time of each training (s).

    ``checkpoints``: a folder where each calibration checkpoints (``<folder>/<model>.npz``, see
    :func:`hybridhydro.calibrate`), so that a stage interrupted and run again (``python -m
    hybridhydro run ... --resume``) continues each calibration where it stopped, and a model
    that had finished is read back from its checkpoint instead of being trained again. A
    checkpoint records every setting and a fingerprint of the data and of the code; one written
    with other settings is an error, never a silent mix, unless ``stale_checkpoints="restart"``
    (what the pipeline's stages pass: the run record already guarantees their settings, so a
    mismatch there means another version of the code), which deletes it and trains from the
    start, saying so. The calibrations resume exactly
    (``exact_resume``): a stage interrupted and resumed gives the models, and so the table, of
    a stage never interrupted.
    """
    directory = None if directory is None else Path(directory)
    if checkpoints is not None:
        options.setdefault("checkpoint_every", 1)
        options.setdefault("exact_resume", True)  # a resumed stage gives the same models, to the bit
    results, seconds = {}, {}
    for name in models:
        if stage is not None and stage_of(name) != stage:
            continue
        parent = parent_model(name)
        pretrained = None
        if parent and directory is not None and (directory / parent / "calibration.json").exists():
            pretrained = load_calibration(directory / parent)
        t0 = time.perf_counter()
        checkpoint = {} if checkpoints is None else {"checkpoint": Path(checkpoints) / name}
        results[name] = train_model(basin, name, split, pretrained=pretrained, **checkpoint, **options)
        seconds[name] = time.perf_counter() - t0
        if parent:
            results[name].options["pre_calibration"]["reused"] = parent if pretrained is not None else None
        if directory is not None:
            results[name].save(directory / name, overwrite=True)
    return results, seconds


def summary(results: Mapping[str, CalibrationResult], seconds: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One row per trained model: structure, mapping, optimiser, iterations, costs, time, stop."""
    rows = {}
    for name, r in results.items():
        h = r.history
        iterations = int(h.index.max()) if len(h) else 0
        if r.optimizer == "sbs":  # smash's maxiter counts outer iterations of n sub-iterations, n the controls
            n = len(r.options.get("parameters") or ()) or "n"
            iterations = f"{iterations} sub-iterations (at most maxiter × {n} controls)"
        row = {"structure": r.structure, "mapping": r.mapping, "optimizer": r.optimizer, "iterations": iterations,
               "initial cost": float(h["cost"].iloc[0]), "final cost": float(h["cost"].iloc[-1])}
        pre = r.options.get("pre_calibration")
        if pre is not None:
            row["pre-calibration"] = pre.get("reused") or f"{pre['mapping']} {pre['optimizer']} here"
            row["parent cost"] = pre["final_cost"]
        if seconds is not None and name in seconds:
            row["wall time (s)"] = round(float(seconds[name]), 1)
        row["stopped"] = r.message
        if r.options.get("health") is not None:
            row["health"] = health_summary(r.options["health"])
        if r.options.get("restarts"):
            row["restarts"] = ", ".join(f"seed {a['seed']}: {a['health']}" for a in r.options["restarts"])
        rows[name] = row
    return pd.DataFrame(rows).T


def load_models(directory: str | Path, names: Sequence[str]) -> dict[str, CalibrationResult]:
    """The saved results ``<directory>/<name>`` of ``names`` (written by ``result.save``)."""
    directory = Path(directory)
    out = {}
    for name in names:
        if not (directory / name / "calibration.json").exists():
            raise FileNotFoundError(
                f"no calibrated model {name!r} in {directory}: stage {stage_of(name)} trains it; run that stage first"
            )
        out[name] = load_calibration(directory / name)
    return out


# ------------------------------------------------------------------------------------ scores


def score(
    simulations: Mapping[str, xr.Dataset],
    basin: xr.Dataset,
    split: Split,
    metrics: Sequence[str] = ("nse", "kge"),
) -> pd.DataFrame:
    """Scores of every model in every scenario, one row per (model, scenario, gauge).

    ``simulations`` maps a model name to its :func:`hybridhydro.simulate` result over the
    whole basin period (``result.simulate(basin)``). Scenarios without gauges (no
    pseudo-ungauged gauge) are left out.
    """
    for name in metrics:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; choose among {', '.join(METRICS)}")
    rows = []
    for model, sim in simulations.items():
        for scenario in SCENARIOS:
            period, gauges = split.scenario(scenario)
            if not gauges:
                continue
            table = evaluate(sim["q"].sel(gauge=list(gauges)), basin, metrics, period)
            for g in gauges:
                rows.append({"model": model, "scenario": scenario, "gauge": g,
                             **{k: float(table[k].sel(gauge=g)) for k in metrics}})
    return pd.DataFrame(rows, columns=["model", "scenario", "gauge", *metrics])


def balance_closure(simulation: xr.Dataset, basin: xr.Dataset, balance: xr.Dataset | None = None) -> dict:
    """:func:`hybridhydro.balance.balance_closure` of a run (its balance computed when not given).

    Needs a run with ``return_fluxes=True`` and ``return_discharge_field=True`` (and
    ``return_states=True`` for the above-capacity share).
    """
    from .balance import balance_closure as _closure
    from .balance import water_balance

    if balance is None:
        balance = water_balance(simulation, basin)
    return _closure(balance, simulation)


def comparison_table(scores: pd.DataFrame, metric: str = "nse") -> pd.DataFrame:
    """The paper's table: one row per model, one column per (scenario, gauge), of ``metric``."""
    table = scores.pivot_table(index="model", columns=["scenario", "gauge"], values=metric, sort=False)
    order = [s for s in SCENARIOS if s in table.columns.get_level_values(0)]
    table = table.reindex(columns=order, level=0)
    return table.reindex(list(dict.fromkeys(scores["model"])))


def to_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A (model x (scenario, gauge)) table as GitHub markdown, without extra dependencies."""
    cols = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in table.columns]
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for idx, row in table.iterrows():
        cells = ["" if pd.isna(v) else f"{v:.{digits}f}" for v in row.values]
        lines.append(f"| {idx} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
