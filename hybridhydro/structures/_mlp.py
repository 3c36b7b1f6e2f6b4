"""The flux-correction network of the hybrid structures, as a pure function of its weights (spec 4.4).

One small multilayer perceptron, shared by every cell of the domain, maps a cell's states and
neutralised forcing to corrections in (−1, 1):

    f = tanh(W_k · silu( … silu(W_1 · z + b_1) … ) + b_k)

Weights are a dict in smash's layout, so that a network trained in smash loads as it is:
``weight_1`` (h1, n_in), ``bias_1`` (h1,), ``weight_2`` (h2 or n_out, h1), ``bias_2``, and with
two hidden layers ``weight_3`` (n_out, h2), ``bias_3``. Dense layers compute ``W·z + b``. The
inputs are not scaled (the states are in [0, 1], pn and en in mm per step, as in smash).

:mod:`hybridhydro.networks` wraps the same weights in a flax NNX module for training; the core
only ever sees this dict (``nnx.split`` of that module gives exactly this dict).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

#: Hidden layers a flux-correction network may have (smash's limit).
MAX_HIDDEN_LAYERS = 2

#: How a flux-correction network sees its forcing inputs (``pn``, ``en``) while it trains:
#: ``"raw"``, in mm per time step as smash feeds them (the default: smash's networks and
#: results); ``"hourly"``, as rates in mm per hour, the same numbers at any ``dt``, so that the
#: initial weights, the learning rate and the trained corrections mean the same on a daily and
#: an hourly basin. The states (fractions of their capacities) are never scaled.
NN_INPUT_SCALINGS = ("raw", "hourly")

#: The network inputs that are forcing amounts per time step (mm per dt).
FORCING_INPUTS = ("pn", "en")


def input_scale(nn_inputs, dt: float, scaling: str = "raw") -> np.ndarray:
    """Factor per network input from what the run feeds (smash's raw inputs) to what the
    network is trained on: 1 for every input with ``"raw"``; ``3600 / dt`` for ``pn`` and ``en``
    (mm per step to mm per hour) with ``"hourly"``, 1 for the states. float32, ``(n_in,)``."""
    if scaling not in NN_INPUT_SCALINGS:
        raise ValueError(f"nn_input_scaling {scaling!r} is not one of {', '.join(NN_INPUT_SCALINGS)} "
                         "(raw: smash's inputs in mm per step; hourly: rates in mm per hour, the same at any dt)")
    factor = 3600.0 / float(dt) if scaling == "hourly" else 1.0
    return np.asarray([factor if name in FORCING_INPUTS else 1.0 for name in nn_inputs], np.float32)


def weights_for_raw_inputs(weights: Mapping, scale) -> dict:
    """The weights that act on raw inputs as ``weights`` act on scaled ones: ``W1 · (s ⊙ z)``
    is ``(W1 diag s) · z``, so only ``weight_1``'s columns change. The run (and smash) always
    feeds raw inputs; a network trained on scaled inputs is saved this way."""
    out = dict(weights)
    out["weight_1"] = weights["weight_1"] * jnp.asarray(scale, jnp.asarray(weights["weight_1"]).dtype)[None, :]
    return out


def weights_for_scaled_inputs(weights: Mapping, scale) -> dict:
    """The inverse of :func:`weights_for_raw_inputs`: the weights a training on scaled inputs starts from."""
    out = dict(weights)
    out["weight_1"] = weights["weight_1"] / jnp.asarray(scale, jnp.asarray(weights["weight_1"]).dtype)[None, :]
    return out


def layer_count(weights: Mapping) -> int:
    """Number of dense layers of a weight dict (2 or 3: one or two hidden layers)."""
    n = 0
    while f"weight_{n + 1}" in weights:
        n += 1
    return n


def mlp(weights: Mapping[str, jax.Array], z):
    """Apply the network to inputs ``z`` of shape ``(..., n_in)``; returns ``(..., n_out)`` in (−1, 1)."""
    n = layer_count(weights)
    for k in range(1, n + 1):
        z = z @ weights[f"weight_{k}"].T + weights[f"bias_{k}"]
        z = jax.nn.silu(z) if k < n else jnp.tanh(z)
    return z


def mlp_with_input_derivatives(weights: Mapping[str, jax.Array], z, columns=(0, 1)):
    """The network's outputs and their derivatives with respect to some of its inputs, in one pass.

    ``z``: inputs ``(..., n_in)``; ``columns``: the inputs to differentiate along. Returns ``f``
    ``(..., n_out)`` and, per column j, ``∂f/∂z_j`` ``(..., n_out)``: forward-mode tangents carried
    through the layers beside the values (the first layer's tangent is the weight column
    itself; the activations' derivatives are silu'(x) = s(x)·(1 + x·(1 − s(x))) and 1 − tanh²).
    The same quantities as ``jax.jvp`` along each column, with the network evaluated once.
    """
    n = layer_count(weights)
    tangents = None
    for k in range(1, n + 1):
        w = weights[f"weight_{k}"]
        pre = z @ w.T + weights[f"bias_{k}"]
        if tangents is None:  # d(z @ w.T)/dz_j is the weight column, the same for every cell
            t_pre = [w[:, j] for j in columns]
        else:
            t_pre = [t @ w.T for t in tangents]
        if k < n:
            sig = jax.nn.sigmoid(pre)
            z = pre * sig
            slope = sig * (1.0 + pre * (1.0 - sig))
        else:
            z = jnp.tanh(pre)
            slope = 1.0 - z * z
        tangents = [t * slope for t in t_pre]
    return z, tuple(tangents)


def check_weights(weights: Mapping, n_in: int, n_out: int, structure: str) -> dict[str, np.ndarray]:
    """Validate a weight dict for a structure with ``n_in`` inputs and ``n_out`` corrections.

    Returns the weights as float32 NumPy arrays (empty smash blocks such as ``weight_3`` of a
    one-hidden-layer network are dropped).

    Raises
    ------
    ValueError
        Unknown or missing blocks, shapes that do not chain from ``n_in`` to ``n_out``, or
        non-finite values; the message names the block and the expected shape.
    """
    given = {k: np.asarray(v, dtype=np.float32) for k, v in dict(weights).items()}
    # smash stores weight_3/bias_3 as empty arrays when there is one hidden layer.
    given = {k: v for k, v in given.items() if v.size > 0 or not k.endswith("_3")}
    valid = {f"{kind}_{k}" for kind in ("weight", "bias") for k in range(1, MAX_HIDDEN_LAYERS + 2)}
    unknown = sorted(set(given) - valid)
    if unknown:
        raise ValueError(
            f"{structure}: unknown network block(s) {unknown}; a flux-correction network has "
            "weight_1, bias_1, weight_2, bias_2 and, with two hidden layers, weight_3, bias_3"
        )
    n = layer_count(given)
    if n < 2:
        raise ValueError(
            f"{structure}: the network needs at least weight_1, bias_1, weight_2, bias_2 (one hidden layer); "
            f"got {sorted(given)}"
        )
    width = n_in
    for k in range(1, n + 1):
        w, b = given.get(f"weight_{k}"), given.get(f"bias_{k}")
        if b is None:
            raise ValueError(f"{structure}: weight_{k} is given but bias_{k} is missing")
        rows = n_out if k == n or w.ndim != 2 else w.shape[0]
        if w.ndim != 2 or w.shape != (rows, width) or b.shape != (rows,):
            raise ValueError(
                f"{structure}: weight_{k} has shape {w.shape} and bias_{k} {b.shape}; layer {k} of this "
                f"structure's network takes {width} input(s) and must give {rows} output(s): expected "
                f"weight_{k} ({rows}, {width}) and bias_{k} ({rows},)"
                + (f" (the structure has {n_out} corrections)" if k == n else "")
            )
        for name, v in ((f"weight_{k}", w), (f"bias_{k}", b)):
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{structure}: {name} holds non-finite values (NaN or inf); give finite weights")
        width = rows
    extra = sorted(set(given) - {f"{kind}_{k}" for kind in ("weight", "bias") for k in range(1, n + 1)})
    if extra:
        raise ValueError(f"{structure}: block(s) {extra} do not belong to a {n - 1}-hidden-layer network")
    return given


#: smash's initialisers of a network's weights (spec 4.4), the one list of them.
INITIALIZERS = ("zeros", "uniform", "glorot_uniform", "he_uniform", "normal", "glorot_normal", "he_normal")


def initial_weights(
    n_in: int,
    n_out: int,
    hidden: int | tuple[int, ...] = 16,
    initializer: str = "zeros",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Weights of a new network, smash's initialisers (spec 4.4); biases start at zero.

    ``initializer``: ``zeros`` (smash's default: the hybrid equals its parent), ``uniform``
    U(±1/√n_in), ``glorot_uniform``, ``he_uniform``, ``normal`` N(0, 0.01), ``glorot_normal``,
    ``he_normal``.
    """
    if initializer not in INITIALIZERS:
        raise ValueError(f"unknown initializer {initializer!r}; choose one of {', '.join(INITIALIZERS)}")
    hidden = (hidden,) if np.ndim(hidden) == 0 else tuple(hidden)
    if not 1 <= len(hidden) <= MAX_HIDDEN_LAYERS or any(int(h) < 1 for h in hidden):
        raise ValueError(f"hidden must be one or two positive layer widths, got {hidden}")
    sizes = (n_in, *map(int, hidden), n_out)
    rng = np.random.default_rng(seed)
    out = {}
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        shape = (fan_out, fan_in)
        if initializer == "zeros":
            w = np.zeros(shape)
        elif initializer == "uniform":
            w = rng.uniform(-1, 1, shape) / np.sqrt(fan_in)
        elif initializer == "glorot_uniform":
            w = rng.uniform(-1, 1, shape) * np.sqrt(6.0 / (fan_in + fan_out))
        elif initializer == "he_uniform":
            w = rng.uniform(-1, 1, shape) * np.sqrt(6.0 / fan_in)
        elif initializer == "normal":
            w = rng.normal(0.0, 0.01, shape)
        elif initializer == "glorot_normal":
            w = rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), shape)
        else:  # he_normal
            w = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        out[f"weight_{k}"] = w.astype(np.float32)
        out[f"bias_{k}"] = np.zeros(fan_out, np.float32)
    return out
