"""A pure machine-learning baseline: a regional LSTM, lumped per gauge (NeuralHydrology style).

The referees' baseline for the model comparison (:mod:`hybridhydro.protocol`): no
hydrological structure at all, one Long Short-Term Memory network shared by every gauge (a
*regional* model, Kratzert et al. 2019, HESS 23, 5089), trained on the calibration gauges
over the calibration period and scored in the same four scenarios as the conceptual and
hybrid models. It follows NeuralHydrology's regional LSTM (``cudalstm`` + ``regression``
head, NSE* loss) in a form small enough to train on one CPU core in well under a minute.

Public API
----------
:class:`LSTMConfig`        the settings (frozen, validated; table below)
:func:`lumped_inputs`      basin -> per-gauge inputs ``(gauge, time, feature)`` and their names
:func:`train_lstm`         ``train_lstm(basin, split, config=None, *, seed=0, progress=False)`` -> :class:`LSTMResult`
:class:`LSTMResult`        ``.simulate(basin, gauges=None)`` -> Dataset ``q`` (gauge, time) m3/s;
                           ``.history``, ``.config``, ``.seed``, ``.n_parameters``, ``.network``,
                           ``.save(directory, overwrite=False)``
:func:`load_lstm`          the result :meth:`LSTMResult.save` wrote
:class:`RegionalLSTM`      the network, a flax NNX module; :func:`lstm_forward` its pure core

``result.simulate(basin)`` goes into :func:`hybridhydro.protocol.score` unchanged::

    split = make_split(basin)
    result = train_lstm(basin, split)
    table = score({"lstm": result.simulate(basin)}, basin, split)

Inputs (lumped per gauge, :func:`lumped_inputs`)
------------------------------------------------
* **Dynamic**: ``prcp`` and ``pet``, the mean over the gauge's catchment (the active cells
  draining through the gauge cell, :func:`hybridhydro.mesh.upstream_masks`, NaN-aware
  :func:`hybridhydro.mesh.catchment_means`) of the depth over each step, divided by the step's
  duration in hours: **mm per hour**. A rate means the same at any ``dt`` (5 mm in an hourly
  step and 120 mm in a daily one are both 5 mm/h), so the input normalisation and the
  network's weights do not change meaning with the step. Negative forcing is missing (as a
  run reads it); a step missing on the whole catchment is NaN.
* **Static**: with ``use_descriptors`` and when the basin has ``descriptors``, the
  catchment mean of each descriptor in its own unit, repeated at every step (NeuralHydrology
  concatenates its static attributes to the dynamic inputs the same way). They are what
  tells one catchment from another, so they carry the pseudo-ungauged (spatial) scenario:
  a gauge never seen in training is simulated from its forcing and its descriptors.

Every input is normalised by its mean and standard deviation over the **training gauges
and the calibration period** (stored in the result, reused for any basin it simulates);
a NaN input, once normalised, becomes 0 (the training mean). An input constant over the
training data (a descriptor when one gauge trains) is centred, not scaled, with a warning:
the network cannot learn anything from it.

Target and loss
---------------
The target is the **specific discharge**, mm per hour: ``q [m3 s-1] * 3.6e6 / A [m2]``
(3600 s per hour times 1000 mm per m; ``A`` is the gauge's delineated drained area
``area_dln``, else the declared ``area``, as :func:`hybridhydro.periods.gauge_areas`),
so that gauges of very different sizes share one output scale. It is normalised by its mean
and standard deviation over the training gauges and calibration period. The loss is
NeuralHydrology's **NSE*** (Kratzert et al. 2019): the squared error of each step weighted
by ``1 / (s_g + nse_eps)^2``, ``s_g`` the standard deviation of gauge ``g``'s normalised
target over the calibration period, averaged over the steps that count; so each gauge weighs
as in a sum of (1 - NSE) and a flat, small catchment does not swamp the loss
(``nse_eps`` keeps the weight finite). Missing observations (NaN, negative) are masked.

The network's head is linear (no bound on the normalised output, so the loss has gradients
everywhere); :meth:`LSTMResult.simulate` **clips the specific discharge at 0 mm/h** before
turning it into m3/s: discharge is never negative. On Cance the unclipped output dips to
-0.03 mm/h at worst, in dry recessions, and the clip moves NSE by less than 0.001.

Training samples and leakage
----------------------------
Each iteration draws ``batch_size`` windows of ``seq_length`` steps at random (uniformly
among the pairs (training gauge, last step)) whose **last step lies in the calibration
period**; the window's inputs may reach back before the period (forcing history, as a
conceptual model's warm-up), and the window must start at the first step of the basin or
later. The LSTM starts each window from a zero state; the loss counts the steps after the
first ``spinup`` ones that lie in the calibration period and hold an observation (the first
steps of a window have too little history to be judged). Windows with no such step are never
drawn. A step at the very end of the calibration period is therefore in fewer windows than
one in the middle (as in any sequence-to-sequence sampling).

**No leakage**: the targets are read only at the calibration gauges over the calibration
period (every other value is dropped before anything is computed), the normalisation
statistics come from there too, and no window ends after the period, so discharge at other
gauges or other times, and forcing after the period, cannot change the trained weights
(tests/test_lstm.py checks it to the bit).

Training is one jitted step (pure JAX: the module is split into its static graph and its
weights with ``nnx.split`` and merged back inside the trace with ``nnx.merge``): optax Adam
after clipping the gradient's global norm, dropout drawn from the step's key. The seed gives
the initial weights, the windows and the dropout masks: **the same seed on the same data
gives the same weights**, to the bit. The step is compiled once per (config, data shapes);
``result.history`` holds the minibatch loss of each iteration.

Simulation
----------
:meth:`LSTMResult.simulate` runs the LSTM **once over the basin's whole time axis, per gauge,
from a zero state at the first step** (no windows, no dropout): one long ``lax.scan``, the
gauges side by side as a batch. The first steps act as its warm-up, as for a conceptual
model's run (the protocol's calibration period starts after a warm-up). On Cance this long
run and NeuralHydrology's evaluation (each step predicted from its own window of
``seq_length`` steps) differ by less than 0.01 in NSE (six trainings, every scenario). It
runs at the ``dt`` it was trained at only (its recurrence is per step) and needs the
descriptors it was trained with (by name, any order).

Settings (:class:`LSTMConfig`)
------------------------------
=================== ======= ======= ====================================================================
setting             unit    default why
=================== ======= ======= ====================================================================
hidden              cells   32      LSTM cell-state size. NeuralHydrology uses 256 for ~500 basins x 15
                                    years; a protocol basin has a few gauges x weeks to years, so a
                                    small network (4.8 k weights with 4 inputs) suits the data and
                                    trains fast on a CPU.
seq_length          steps   336     Steps of inputs per training window: the hourly sequence length of
                                    NeuralHydrology's multi-timescale LSTM (Gauch et al. 2021, HESS 25,
                                    2045), two weeks of hourly steps. Memory matters: on Cance the
                                    autumn floods follow a month of wetting-up, and one week (168) gave
                                    a validation NSE about 0.1 lower in our trials. At another ``dt``
                                    choose the steps that cover the catchment's memory (e.g. 365 daily).
spinup              steps   168     First steps of each window left out of the loss (NeuralHydrology's
                                    ``seq_length - predict_last_n``, here sequence-to-sequence): every
                                    judged step has at least one week of history. Must be < seq_length.
dropout             1       0.4     Share of the LSTM's outputs zeroed before the head while training
                                    (NeuralHydrology's ``output_dropout`` default); none in simulation.
learning_rate       1       1e-3    Adam's step size (NeuralHydrology's default); the inputs and the
                                    target are normalised, so it is unitless.
iterations          steps   600     Optimiser steps (minibatches). NeuralHydrology counts epochs of all
                                    samples; a protocol basin holds ~1 000 windows that overlap almost
                                    entirely, so a number of steps is the meaningful budget. On Cance,
                                    600 x 16 windows bring NSE* from ~0.55 to ~0.05 (calibration NSE
                                    ~0.97-0.99) in ~8 s of CPU time on one core (compilation included;
                                    17-37 s wall on a core shared with four other jobs).
batch_size          windows 16      Windows per step: 16 x 336 = 5 376 steps per gradient, a cost a CPU
                                    takes in tens of ms, and a gradient noisy enough to regularise on a
                                    few gauges.
clip_norm           1       1.0     Largest global norm of the gradient (NeuralHydrology's
                                    ``clip_gradient_norm``: 1); None disables it. LSTMs on flashy
                                    hydrographs meet exploding gradients at flood peaks.
nse_eps             1       0.1     NSE*'s floor on a gauge's target standard deviation, in units of the
                                    normalised target (NeuralHydrology's ``eps``: 0.1).
initial_forget_bias 1       3.0     Initial bias of the forget gate (NeuralHydrology's
                                    ``initial_forget_bias``): the cell state is kept at first, so long
                                    memory is there from the start instead of discovered.
use_descriptors     bool    True    Add the catchment-mean descriptors as static inputs (the only way
                                    the LSTM can tell catchments apart, hence the spatial scenario).
                                    With two or three training gauges the descriptors are barely more
                                    than gauge labels and extrapolate poorly to a held-out gauge; False
                                    (forcing only) is then the fairer spatial baseline (on Cance:
                                    spatial NSE 0.81-0.86 without, 0.05-0.18 with).
=================== ======= ======= ====================================================================

Weights are initialised as PyTorch's LSTM and Linear layers are (NeuralHydrology's): uniform in
``+-1/sqrt(hidden)``, the forget gate's bias then set to ``initial_forget_bias``. Computations
are float32.
"""

from __future__ import annotations

import json
import math
import numbers
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import xarray as xr
from flax import nnx

from .basin import read_dt
from .mesh import catchment_means, upstream_masks
from .networks import check_seed
from .periods import gauge_areas, period_mask

__all__ = [
    "FORCING_INPUTS",
    "LSTMConfig",
    "LSTMResult",
    "M3S_PER_M2_TO_MM_PER_HOUR",
    "RegionalLSTM",
    "load_lstm",
    "lstm_forward",
    "lumped_inputs",
    "train_lstm",
]

#: The dynamic inputs, in this order, each a catchment mean in mm per hour.
FORCING_INPUTS = ("prcp", "pet")
#: (m3 s-1) / m2 -> mm h-1: 3600 s per hour times 1000 mm per m.
M3S_PER_M2_TO_MM_PER_HOUR = 3.6e6
FORMAT = 1
_META = "lstm.json"
_WEIGHTS = "weights.npz"


# ------------------------------------------------------------------------------ configuration


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


@dataclass(frozen=True)
class LSTMConfig:
    """Settings of the regional LSTM (see the module docstring for each one's reasoning).

    Every setting is checked on construction: a bad one is a ``ValueError`` that names it,
    says what it got and what it takes.
    """

    hidden: int = 32
    seq_length: int = 336
    spinup: int = 168
    dropout: float = 0.4
    learning_rate: float = 1e-3
    iterations: int = 600
    batch_size: int = 16
    clip_norm: float | None = 1.0
    nse_eps: float = 0.1
    initial_forget_bias: float = 3.0
    use_descriptors: bool = True

    def __post_init__(self):
        def bad(name, wanted):
            value = getattr(self, name)
            return ValueError(f"LSTMConfig: {name}={value!r} ({type(value).__name__}); {name} must be {wanted}")

        for name, what in (("hidden", "the LSTM's cell-state size"), ("seq_length", "steps per training window"),
                           ("iterations", "optimiser steps"), ("batch_size", "windows per optimiser step")):
            if not _whole(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, f"a whole number >= 1 ({what})")
        if not _whole(self.spinup) or not 0 <= self.spinup < self.seq_length:
            raise bad("spinup", f"a whole number of steps in [0, seq_length - 1] = [0, {self.seq_length - 1}] "
                                "(the first steps of each window, left out of the loss)")
        if not _real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "a number in [0, 1) (the share of the LSTM's outputs dropped before the head)")
        if not _real(self.learning_rate) or self.learning_rate <= 0:
            raise bad("learning_rate", "a finite number > 0 (Adam's step size)")
        if self.clip_norm is not None and (not _real(self.clip_norm) or self.clip_norm <= 0):
            raise bad("clip_norm", "a finite number > 0 (the largest global gradient norm), or None (no clipping)")
        if not _real(self.nse_eps) or self.nse_eps <= 0:
            raise bad("nse_eps", "a finite number > 0 (NSE*'s floor on a gauge's standard deviation)")
        if not _real(self.initial_forget_bias):
            raise bad("initial_forget_bias", "a finite number (the forget gate's initial bias)")
        if not isinstance(self.use_descriptors, (bool, np.bool_)):
            raise bad("use_descriptors", "True or False")
        # plain Python numbers from here on (numpy scalars pass the checks above): JSON and hashing see one type
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                kind = bool if f.name == "use_descriptors" else int if _whole(value) and f.type == "int" else float
                object.__setattr__(self, f.name, kind(value))

    def to_dict(self) -> dict:
        """The settings as plain JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, settings) -> "LSTMConfig":
        """The config of ``settings`` (a mapping); an unknown key is a ``ValueError`` naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"LSTMConfig: unknown setting(s) {unknown}; the settings are {sorted(known)}")
        return cls(**dict(settings))

    @classmethod
    def for_split(cls, basin: xr.Dataset, split, settings=None) -> "LSTMConfig":
        """The config of ``settings`` (as :meth:`from_dict`), with the window fitted to the data
        when ``seq_length`` is not given: the default 336 steps (14 days at an hourly step, the
        hourly length of Gauch et al., 2021), at most half the calibration period, so that many
        windows fit (a daily year such as the Lez's gives 82-day windows). ``spinup``, when not
        given, is half the window. Given values are kept as they are.
        """
        settings = dict(settings or {})
        if "seq_length" not in settings:
            times = pd.DatetimeIndex(basin["time"].values)
            steps = int(period_mask(times, split.calibration_period, "split.calibration_period").sum())
            settings["seq_length"] = int(min(cls.seq_length, max(4, steps // 2)))
        if "spinup" not in settings and isinstance(settings["seq_length"], int):
            settings["spinup"] = settings["seq_length"] // 2
        return cls.from_dict(settings)


# ------------------------------------------------------------------------------ inputs


def _gauge_indices(basin: xr.Dataset, gauges, what: str = "gauges") -> list[int]:
    codes = [str(g) for g in basin["gauge"].values]
    if gauges is None:
        return list(range(len(codes)))
    wanted = [gauges] if isinstance(gauges, str) else [str(g) for g in gauges]
    if not wanted:
        raise ValueError(f"{what} is empty; name at least one gauge of the basin ({', '.join(codes)})")
    unknown = [g for g in wanted if g not in codes]
    if unknown:
        raise ValueError(f"{what}: {unknown} are not gauges of the basin; its gauges are {codes}")
    return [codes.index(g) for g in wanted]


def _catchment_masks(basin: xr.Dataset, index: list[int]) -> np.ndarray:
    missing = [n for n in ("flwdir", "active_cell", "gauge_row", "gauge_col") if n not in basin]
    if missing:
        raise ValueError(f"lumped_inputs: the basin lacks {missing}, needed to find each gauge's catchment; read it "
                         "with hybridhydro.read_basin or read_smash_dataset, or build it with synthetic_basin")
    rows = np.asarray(basin["gauge_row"].values)[index]
    cols = np.asarray(basin["gauge_col"].values)[index]
    masks = upstream_masks(np.asarray(basin["flwdir"].values), rows, cols)
    return masks & np.asarray(basin["active_cell"].values, bool)[None]


def lumped_inputs(basin: xr.Dataset, gauges=None, *, descriptors: bool = True) -> tuple[np.ndarray, tuple[str, ...]]:
    """The LSTM's inputs per gauge: catchment means of the forcing and of the descriptors.

    Parameters
    ----------
    basin
        A basin Dataset (:mod:`hybridhydro.basin`): ``prcp`` and ``pet`` ``(time, y, x)`` in mm
        per step, the mesh fields, attribute ``dt`` (s), optionally ``descriptors``
        ``(descriptor, y, x)``.
    gauges
        Gauge codes (one code, or a list), or None for every gauge of the basin.
    descriptors
        Add the catchment mean of each descriptor (when the basin has any).

    Returns
    -------
    inputs, names
        ``inputs`` ``(gauge, time, feature)`` float32 and the feature ``names``:
        ``"prcp"`` and ``"pet"``, the mean over the gauge's upstream active cells of the depth
        over each step converted to **mm per hour** (depth / (dt / 3600 s)), so that a value
        means the same at any ``dt``; then each descriptor's name, its mean over the same cells
        in its own unit, static (the same value at every step). Negative forcing counts as
        missing (as in a run); a step with no valid cell is NaN (the LSTM reads NaN as the
        training mean). A descriptor NaN over the whole catchment is an error.
    """
    if not isinstance(basin, xr.Dataset):
        raise TypeError(f"lumped_inputs: a basin is an xarray.Dataset, got {type(basin).__name__}")
    missing = [n for n in (*FORCING_INPUTS, "gauge") if n not in basin.variables]
    if missing or "dt" not in basin.attrs:
        missing += [] if "dt" in basin.attrs else ["attribute dt"]
        raise ValueError(f"lumped_inputs: the basin lacks {missing}; read it with hybridhydro.read_basin or "
                         "read_smash_dataset, or build it with synthetic_basin")
    hours = read_dt(basin.attrs["dt"]) / 3600.0
    index = _gauge_indices(basin, gauges)
    masks = _catchment_masks(basin, index)
    empty = [str(basin["gauge"].values[g]) for g, m in zip(index, masks) if not m.any()]
    if empty:
        raise ValueError(f"lumped_inputs: gauge(s) {empty} drain no active cell; check their rows/cols and flwdir")
    columns, names = [], []
    for name in FORCING_INPUTS:
        depth = np.asarray(basin[name].transpose("time", "y", "x").values, dtype=np.float32)  # mm per step
        depth = np.where(depth >= 0, depth, np.float32(np.nan))  # negative = missing, as a run reads it
        columns.append(catchment_means(depth, masks) / np.float32(hours))  # (gauge, time) mm per hour
        names.append(name)
    ntime = columns[0].shape[1]
    if descriptors and "descriptors" in basin:
        desc = basin["descriptors"].transpose("descriptor", "y", "x")
        means = catchment_means(np.asarray(desc.values, dtype=np.float32), masks)  # (gauge, descriptor)
        dnames = [str(d) for d in desc["descriptor"].values] if "descriptor" in desc.coords else \
            [f"descriptor_{k}" for k in range(desc.shape[0])]
        nan = np.argwhere(np.isnan(means))
        if nan.size:
            g, d = nan[0]
            raise ValueError(f"lumped_inputs: descriptor {dnames[d]!r} is missing (NaN) on every cell of gauge "
                             f"{basin['gauge'].values[index[g]]}'s catchment; fill it, or use_descriptors=False")
        for d, name in enumerate(dnames):
            columns.append(np.repeat(means[:, d : d + 1], ntime, axis=1))
            names.append(name)
    return np.stack(columns, axis=-1).astype(np.float32), tuple(names)


def _specific_discharge(basin: xr.Dataset, index: list[int]) -> np.ndarray:
    """Observed discharge of the gauges ``index`` as mm per hour over the drained area, ``(gauge, time)``
    float64; negative or non-finite values are missing (NaN)."""
    q = np.asarray(basin["qobs"].transpose("gauge", "time").values, dtype=np.float64)[index]
    area = gauge_areas(basin)[index]
    q = np.where(np.isfinite(q) & (q >= 0), q, np.nan)
    return q * M3S_PER_M2_TO_MM_PER_HOUR / area[:, None]


# ------------------------------------------------------------------------------ the network


def lstm_forward(weights, x, dropout: float = 0.0, key=None):
    """The pure LSTM: ``weights`` (a dict of arrays), inputs ``x`` ``(batch, time, n_in)``,
    normalised -> normalised specific discharge ``(batch, time)``.

    Starts from a zero state; gates ordered input, forget, cell, output (PyTorch's). With
    ``dropout > 0`` and a ``key``, a share ``dropout`` of the LSTM's outputs is zeroed (the
    rest scaled by ``1 / (1 - dropout)``) before the linear head.
    """
    w_hidden = weights["w_hidden"]
    batch, hidden = x.shape[0], w_hidden.shape[0]
    xw = jnp.einsum("btf,fg->tbg", x, weights["w_input"]) + weights["bias"][None, None, :]  # (time, batch, 4 hidden)

    def cell(carry, xw_t):
        h, c = carry
        i, f, g, o = jnp.split(xw_t + h @ w_hidden, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zero = jnp.zeros((batch, hidden), xw.dtype)
    _, hs = jax.lax.scan(cell, (zero, zero), xw)  # (time, batch, hidden)
    if dropout > 0 and key is not None:
        keep = jax.random.bernoulli(key, 1.0 - dropout, hs.shape)
        hs = jnp.where(keep, hs / (1.0 - dropout), 0.0)
    return (hs @ weights["head_weight"])[..., 0].T + weights["head_bias"][0]


class RegionalLSTM(nnx.Module):
    """One LSTM layer and a linear head, shared by every gauge (a *regional* model).

    Parameters (``nnx.Param``): ``w_input`` ``(n_in, 4 hidden)``, ``w_hidden`` ``(hidden,
    4 hidden)``, ``bias`` ``(4 hidden,)``, ``head_weight`` ``(hidden, 1)``, ``head_bias``
    ``(1,)``. Initialised as PyTorch's LSTM and Linear (uniform in ``±1/sqrt(hidden)``), with
    the forget gate's bias set to ``initial_forget_bias`` (NeuralHydrology's practice).
    """

    def __init__(self, n_inputs: int, hidden: int = 32, *, dropout: float = 0.0, initial_forget_bias: float = 3.0,
                 seed: int = 0):
        if not _whole(n_inputs) or n_inputs < 1:
            raise ValueError(f"RegionalLSTM: n_inputs must be a whole number >= 1, got {n_inputs!r}")
        if not _whole(hidden) or hidden < 1:
            raise ValueError(f"RegionalLSTM: hidden must be a whole number >= 1, got {hidden!r}")
        keys = jax.random.split(jax.random.key(check_seed(seed)), 5)
        k = 1.0 / math.sqrt(hidden)

        def uniform(key, shape):
            return jax.random.uniform(key, shape, jnp.float32, -k, k)

        bias = uniform(keys[2], (4 * hidden,)).at[hidden : 2 * hidden].set(float(initial_forget_bias))
        self.w_input = nnx.Param(uniform(keys[0], (n_inputs, 4 * hidden)))
        self.w_hidden = nnx.Param(uniform(keys[1], (hidden, 4 * hidden)))
        self.bias = nnx.Param(bias)
        self.head_weight = nnx.Param(uniform(keys[3], (hidden, 1)))
        self.head_bias = nnx.Param(uniform(keys[4], (1,)))
        self.dropout = float(dropout)

    def weights(self) -> dict[str, jax.Array]:
        """The weights as :func:`lstm_forward` takes them."""
        return nnx.to_pure_dict(nnx.state(self, nnx.Param))

    def __call__(self, x, key=None):
        """Normalised specific discharge ``(batch, time)`` for normalised inputs ``(batch, time, n_in)``;
        dropout only when a ``key`` is given (training)."""
        return lstm_forward(self.weights(), x, self.dropout, key)


def _network_from_weights(weights, dropout: float = 0.0) -> RegionalLSTM:
    n_in, four_h = np.shape(weights["w_input"])
    net = RegionalLSTM(int(n_in), four_h // 4, dropout=dropout)
    for name, value in weights.items():
        getattr(net, name)[...] = jnp.asarray(value, jnp.float32)
    return net


# ------------------------------------------------------------------------------ training


def _normaliser(x: np.ndarray, names) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each feature of ``x`` ``(gauge, time, feature)`` (NaN ignored);
    a feature constant over the training data is centred, not scaled (std 1), with a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=(0, 1)).astype(np.float64)
        std = np.nanstd(x, axis=(0, 1)).astype(np.float64)
    bad = [n for n, m in zip(names, mean) if not np.isfinite(m)]
    if bad:
        raise ValueError(f"train_lstm: input(s) {bad} are missing (NaN) at every training step of every training gauge")
    varies = std > 1e-6 * np.maximum(1.0, np.abs(mean))
    constant = [n for n, v in zip(names, varies) if not v]
    if constant:
        warnings.warn(f"train_lstm: input(s) {constant} are constant over the training gauges and period: the network "
                      "cannot learn from them (a descriptor needs two training gauges that differ); they are centred "
                      "but not scaled", UserWarning, stacklevel=3)
    std = np.where(varies, std, 1.0)
    return mean, std


def _windows(valid: np.ndarray, in_period: np.ndarray, seq_length: int, spinup: int) -> np.ndarray:
    """``(n, 2)`` int32 ``(gauge, last step)`` of every training window: its last step in the
    calibration period, its first at step 0 or later, and a valid target after the spin-up."""
    ntime = valid.shape[1]
    counts = np.concatenate([np.zeros((valid.shape[0], 1), np.int64), np.cumsum(valid, axis=1)], axis=1)
    ends = np.arange(ntime)
    ok = in_period & (ends >= seq_length - 1)
    first_loss = np.clip(ends - seq_length + 1 + spinup, 0, None)
    has_target = (counts[:, ends + 1] - counts[:, first_loss]) > 0
    g, t = np.nonzero(ok[None, :] & has_target)
    return np.stack([g, t], axis=1).astype(np.int32)


def _optimizer(config: LSTMConfig):
    """Adam at ``config.learning_rate``, after clipping the global gradient norm at ``config.clip_norm``."""
    chain = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm is not None else []
    return optax.chain(*chain, optax.adam(config.learning_rate))


def _loss(params, key, graph, config: LSTMConfig, x, y, valid, weight, windows):
    """NSE* on one minibatch of ``config.batch_size`` windows drawn with ``key`` from ``windows``."""
    length, nfeat = config.seq_length, x.shape[-1]
    k_pick, k_drop = jax.random.split(key)
    pick = windows[jax.random.randint(k_pick, (config.batch_size,), 0, windows.shape[0])]
    g, start = pick[:, 0], pick[:, 1] - length + 1
    xb = jax.vmap(lambda gi, s: jax.lax.dynamic_slice(x[gi], (s, 0), (length, nfeat)))(g, start)
    yb = jax.vmap(lambda gi, s: jax.lax.dynamic_slice(y[gi], (s,), (length,)))(g, start)
    vb = jax.vmap(lambda gi, s: jax.lax.dynamic_slice(valid[gi], (s,), (length,)))(g, start)
    vb = vb & (jnp.arange(length) >= config.spinup)[None, :]  # the spin-up steps are left out of the loss
    pred = nnx.merge(graph, params)(xb, k_drop)  # back from pure JAX to the module, inside the trace
    err = jnp.where(vb, pred - yb, 0.0)
    return jnp.sum(weight[g][:, None] * err**2) / jnp.maximum(jnp.sum(vb), 1)


@partial(jax.jit, static_argnames=("graph", "config"), donate_argnums=(0, 1))
def _train_step(params, opt_state, key, graph, config: LSTMConfig, x, y, valid, weight, windows):
    """One Adam step: ``(params, opt_state, loss)``. Compiled once per (network, config, data shapes)."""
    loss, grads = jax.value_and_grad(_loss)(params, key, graph, config, x, y, valid, weight, windows)
    updates, opt_state = _optimizer(config).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def train_lstm(basin: xr.Dataset, split, config: LSTMConfig | None = None, *, seed: int = 0,
               progress: bool = False) -> "LSTMResult":
    """Train the regional LSTM on the split's calibration gauges over its calibration period.

    Parameters
    ----------
    basin
        The basin Dataset (forcing, ``qobs`` (gauge, time) m3/s, mesh fields, descriptors).
    split
        A :class:`hybridhydro.protocol.Split`: only ``calibration_gauges`` and
        ``calibration_period`` are read; no observation outside them reaches the training.
    config
        :class:`LSTMConfig` (None: the defaults).
    seed
        Seed of the initial weights, the window sampling and the dropout masks: the same seed
        on the same data gives the same weights.
    progress
        Draw a progress bar (:mod:`hybridhydro.progress`).

    Returns
    -------
    LSTMResult
    """
    from .progress import bar

    if not isinstance(basin, xr.Dataset):
        raise TypeError(f"train_lstm: a basin is an xarray.Dataset, got {type(basin).__name__}")
    if not all(hasattr(split, a) for a in ("calibration_gauges", "calibration_period")):
        raise TypeError(f"train_lstm: split must be a hybridhydro.protocol.Split (make_split(basin)), got "
                        f"{type(split).__name__}")
    config = LSTMConfig() if config is None else config
    if not isinstance(config, LSTMConfig):
        raise TypeError(f"train_lstm: config must be an LSTMConfig (or None for the defaults), got "
                        f"{type(config).__name__}")
    seed = check_seed(seed)
    if "qobs" not in basin:
        raise ValueError("train_lstm: the basin has no 'qobs' (gauge, time) m3/s: the LSTM trains on observations")
    t0 = time.perf_counter()
    gauges = tuple(str(g) for g in split.calibration_gauges)
    index = _gauge_indices(basin, gauges, "split.calibration_gauges")
    times = basin["time"].values
    in_period = period_mask(times, split.calibration_period, "split.calibration_period")
    if not in_period.any():
        raise ValueError(f"train_lstm: split.calibration_period {split.calibration_period} holds no step of the basin")
    x, names = lumped_inputs(basin, gauges, descriptors=config.use_descriptors)
    # Targets: only the calibration gauges over the calibration period; every other value is dropped here.
    q = _specific_discharge(basin, index)
    q[:, ~in_period] = np.nan
    valid = np.isfinite(q)
    if not valid.any():
        raise ValueError(f"train_lstm: no observed discharge at gauges {list(gauges)} in the calibration period "
                         f"{split.calibration_period}; nothing to train on")
    x_mean, x_std = _normaliser(x[:, in_period], names)
    y_mean, y_std = float(np.nanmean(q)), float(np.nanstd(q))
    if not y_std > 0:
        raise ValueError("train_lstm: the observed discharge is constant over the calibration gauges and period; "
                         "an NSE-type loss is undefined")
    xn = np.nan_to_num((x - x_mean) / x_std, nan=0.0).astype(np.float32)
    yn = (q - y_mean) / y_std
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        gauge_std = np.nan_to_num(np.nanstd(yn, axis=1), nan=0.0)  # per gauge, in normalised units
    weight = 1.0 / (gauge_std + config.nse_eps) ** 2
    windows = _windows(valid, in_period, config.seq_length, config.spinup)
    if windows.size == 0:
        first = int(np.argmax(in_period))
        raise ValueError(
            f"train_lstm: no training window fits: a window needs seq_length = {config.seq_length} steps of inputs "
            f"ending in the calibration period (which starts at step {first}) and an observation after its "
            f"spinup = {config.spinup} steps; lower seq_length, or start the calibration period later"
        )

    key = jax.random.key(seed)
    k_init, k_train = jax.random.split(key)
    init_seed = int(jax.random.randint(k_init, (), 0, 2**31 - 1))
    net = RegionalLSTM(len(names), config.hidden, dropout=config.dropout,
                       initial_forget_bias=config.initial_forget_bias, seed=init_seed)
    graph, params = nnx.split(net, nnx.Param)  # the static graph (hashable) and the weights (a pytree)
    opt_state = _optimizer(config).init(params)
    data = (jnp.asarray(xn), jnp.asarray(np.nan_to_num(yn), jnp.float32), jnp.asarray(valid),
            jnp.asarray(weight, jnp.float32), jnp.asarray(windows))
    losses = []
    with bar(total=config.iterations, progress=progress, desc="lstm", unit="it") as pbar:
        for it in range(config.iterations):
            params, opt_state, loss = _train_step(params, opt_state, jax.random.fold_in(k_train, it), graph,
                                                   config, *data)
            losses.append(loss)
            pbar.update(1)
            if progress and (it + 1) % 50 == 0:
                pbar.set_postfix(loss=f"{float(loss):.4f}")
    losses = np.asarray(jax.device_get(losses), dtype=np.float64)
    weights = {k: np.asarray(v, np.float32) for k, v in nnx.to_pure_dict(params).items()}
    history = pd.DataFrame({"loss": losses}, index=pd.RangeIndex(1, len(losses) + 1, name="iteration"))
    training = {
        "gauges": list(gauges), "period": [str(p) for p in split.calibration_period],
        "first_step": str(pd.Timestamp(times[in_period][0])), "last_step": str(pd.Timestamp(times[in_period][-1])),
        "windows": int(windows.shape[0]), "observations": int(valid.sum()),
        "gauge_std": {g: float(s) for g, s in zip(gauges, gauge_std)},
        "wall_time_s": round(time.perf_counter() - t0, 3),
    }
    return LSTMResult(config=config, seed=seed, weights=weights, input_names=names,
                      input_mean=x_mean, input_std=x_std, target_mean=y_mean, target_std=y_std,
                      dt=float(basin.attrs["dt"]), history=history, training=training)


# ------------------------------------------------------------------------------ the result


@jax.jit
def _predict(weights, x):
    return lstm_forward(weights, x)


@dataclass(eq=False)
class LSTMResult:
    """A trained regional LSTM: what :func:`train_lstm` returns and :func:`load_lstm` reads.

    Attributes
    ----------
    config, seed
        The settings and seed it was trained with.
    weights
        ``{name: float32 array}`` (:class:`RegionalLSTM`'s parameters).
    input_names
        The features, in the network's order: ``prcp``, ``pet`` (mm per hour), then the
        descriptors (their own units).
    input_mean, input_std
        ``(feature,)``: each input's normalisation, in its unit, over the training gauges and
        period.
    target_mean, target_std
        The specific discharge's normalisation, mm per hour.
    dt
        The time step it was trained at, s (the recurrence is per step: it runs at this ``dt`` only).
    history
        The loss (NSE*, dimensionless, on each iteration's minibatch) per iteration.
    training
        What it was trained on: gauges, period, windows, observations, wall time (s).
    """

    config: LSTMConfig
    seed: int
    weights: dict
    input_names: tuple
    input_mean: np.ndarray
    input_std: np.ndarray
    target_mean: float
    target_std: float
    dt: float
    history: pd.DataFrame
    training: dict = field(default_factory=dict)

    @property
    def n_parameters(self) -> int:
        """Trainable weights of the network."""
        return int(sum(np.size(v) for v in self.weights.values()))

    @property
    def network(self) -> RegionalLSTM:
        """The trained network as a flax NNX module."""
        return _network_from_weights(self.weights, self.config.dropout)

    @property
    def descriptor_names(self) -> tuple[str, ...]:
        """The descriptors it reads (empty without descriptors)."""
        return tuple(self.input_names[len(FORCING_INPUTS):])

    def simulate(self, basin: xr.Dataset, gauges=None) -> xr.Dataset:
        """Discharge at ``gauges`` (codes; None: every gauge) of ``basin`` over its whole time axis.

        The LSTM runs once over the whole series per gauge, from a zero state at the first step
        (no window, no dropout): the first ``config.spinup`` or so steps are its warm-up, as the
        first steps of a conceptual model's run. Any gauge of any basin with this ``dt`` and the
        descriptors it was trained with (by name, any order) can be simulated: a gauge never
        seen in training (pseudo-ungauged) differs from the others only through its forcing
        and descriptors. The specific discharge is clipped at 0 mm/h, then turned into m3/s
        with the gauge's drained area (``area_dln``, else ``area``).

        Returns
        -------
        xarray.Dataset
            ``q`` ``(gauge, time)`` float32 in m3 s-1, ready for :func:`hybridhydro.evaluate`
            and :func:`hybridhydro.protocol.score`.
        """
        dt = read_dt(basin.attrs.get("dt"), "LSTMResult.simulate: basin attribute")
        if dt != self.dt:
            raise ValueError(f"LSTMResult.simulate: the basin's dt is {dt:g} s but the LSTM was trained at "
                             f"dt = {self.dt:g} s; its recurrence is per step: resample the basin, or train on it")
        index = _gauge_indices(basin, gauges)
        codes = [str(basin["gauge"].values[g]) for g in index]
        x, names = lumped_inputs(basin, codes, descriptors=bool(self.descriptor_names))
        missing = [n for n in self.input_names if n not in names]
        if missing:
            have = [n for n in names if n not in FORCING_INPUTS]
            raise ValueError(f"LSTMResult.simulate: the basin lacks descriptor(s) {missing} that the LSTM was trained "
                             f"with (it has {have or 'none'}); give it the same descriptors")
        x = x[..., [names.index(n) for n in self.input_names]]
        xn = np.nan_to_num((x - self.input_mean) / self.input_std, nan=0.0).astype(np.float32)
        weights = {k: jnp.asarray(v, jnp.float32) for k, v in self.weights.items()}
        yn = np.asarray(_predict(weights, jnp.asarray(xn)), dtype=np.float64)
        q_mm_h = np.maximum(yn * self.target_std + self.target_mean, 0.0)
        area = gauge_areas(basin)[index]
        q = (q_mm_h * area[:, None] / M3S_PER_M2_TO_MM_PER_HOUR).astype(np.float32)
        da = xr.DataArray(q, dims=("gauge", "time"),
                          coords={"gauge": np.asarray(codes), "time": basin["time"].values},
                          attrs={"units": "m3 s-1", "long_name": "discharge simulated by the regional LSTM, mean over "
                                 "the step", "standard_name": "water_volume_transport_in_river_channel",
                                 "cell_methods": "time: mean"})
        return xr.Dataset({"q": da}, attrs={
            "model": "lstm", "dt": float(self.dt), "seed": int(self.seed),
            "inputs": ", ".join(self.input_names),
            "units_note": "discharge in m3 s-1; the LSTM runs on prcp and pet in mm per hour (catchment means) and "
                          "predicts specific discharge in mm per hour, clipped at 0",
        })

    # ------------------------------------------------------------------ files

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write ``lstm.json`` (settings, normalisation, history, what it trained on, the weights
        file's sha256) and ``weights.npz`` into ``directory``; :func:`load_lstm` reads them back.

        The files are written into a temporary directory beside ``directory``, which then takes
        its place, so ``directory`` never holds half a model.

        Raises
        ------
        FileExistsError
            ``directory`` holds a saved LSTM and ``overwrite`` is False; or it holds other files
            (no ``lstm.json``): those are never deleted, overwrite or not.
        """
        from .io.netcdf import file_sha256, swap_directory

        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise FileExistsError(f"{directory} is a file, not a directory; choose another directory to save into")
        if directory.is_dir() and any(directory.iterdir()):
            if not (directory / _META).exists():
                raise FileExistsError(f"{directory} holds files but no saved LSTM ({_META}): saving would delete them, "
                                      "so it is refused even with overwrite=True; choose another directory")
            if not overwrite:
                raise FileExistsError(f"{directory} already holds a saved LSTM; pass overwrite=True to replace it, or "
                                      "choose another directory")
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.saving-"))
        try:
            np.savez(tmp / _WEIGHTS, **{k: np.asarray(v, np.float32) for k, v in self.weights.items()})
            meta = {
                "format": FORMAT, "model": "lstm", "config": self.config.to_dict(), "seed": int(self.seed),
                "input_names": list(self.input_names),
                "input_units": ["mm h-1"] * len(FORCING_INPUTS) + ["descriptor unit"] * len(self.descriptor_names),
                "input_mean": [float(v) for v in self.input_mean], "input_std": [float(v) for v in self.input_std],
                "target_mean": float(self.target_mean), "target_std": float(self.target_std),
                "target_units": "mm h-1", "dt": float(self.dt), "training": self.training,
                "history": [float(v) for v in self.history["loss"].values],
                "files": {_WEIGHTS: file_sha256(tmp / _WEIGHTS)},
            }
            (tmp / _META).write_text(json.dumps(meta, indent=1))
            swap_directory(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory


def load_lstm(directory: str | Path) -> LSTMResult:
    """Read an :class:`LSTMResult` written by :meth:`LSTMResult.save` (the weights checked
    against the sha256 the manifest records)."""
    from .io.netcdf import file_sha256

    directory = Path(directory)
    manifest = directory / _META
    if not manifest.exists():
        raise FileNotFoundError(f"{directory} holds no saved LSTM (no {_META}); save one with LSTMResult.save")
    try:
        meta = json.loads(manifest.read_text())
        config = LSTMConfig.from_dict(meta["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{manifest} cannot be read as a saved LSTM ({type(err).__name__}: {err}); save it again")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{manifest} has format {meta.get('format')!r}; this version reads format {FORMAT}")
    path = directory / _WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"{directory} holds {_META} but no {_WEIGHTS}: the LSTM was not saved completely")
    digest = meta.get("files", {}).get(_WEIGHTS)
    if digest is not None and file_sha256(path) != digest:
        raise ValueError(f"{path}: its sha256 is not the one {_META} records (truncated, damaged or changed after "
                         "saving); save the LSTM again")
    with np.load(path, allow_pickle=False) as data:
        weights = {k: data[k].astype(np.float32) for k in data.files}
    history = pd.DataFrame({"loss": np.asarray(meta["history"], np.float64)},
                           index=pd.RangeIndex(1, len(meta["history"]) + 1, name="iteration"))
    return LSTMResult(config=config, seed=int(meta["seed"]), weights=weights, input_names=tuple(meta["input_names"]),
                      input_mean=np.asarray(meta["input_mean"], np.float64),
                      input_std=np.asarray(meta["input_std"], np.float64),
                      target_mean=float(meta["target_mean"]), target_std=float(meta["target_std"]),
                      dt=float(meta["dt"]), history=history, training=dict(meta.get("training", {})))
