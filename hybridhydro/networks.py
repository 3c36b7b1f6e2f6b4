"""Neural networks of the hybrid models, as flax NNX modules (spec 4.4, 8.4).

* :class:`FluxCorrectionNet`: the process-parameterisation network inside a hybrid structure
  (gr4_mlp ... loieau_mlp, gr4_ude). Its parameters are named and shaped as smash stores them
  (``weight_1`` (h1, n_in), ``bias_1`` (h1,), ...), so ``nnx.split`` gives exactly the weight
  dict the pure core (:mod:`hybridhydro.structures._mlp`) takes, and a network trained in
  smash loads as it is (:meth:`FluxCorrectionNet.from_smash`), and goes back
  (:meth:`FluxCorrectionNet.to_smash`).
* :class:`DescriptorMLP` ("ann" regionalisation): a per-cell dense network, physical
  descriptors -> parameter values, bounded to each parameter's bounds.
* :class:`DescriptorCNN` ("cnn" regionalisation): convolutions over the descriptor rasters,
  so that a cell's parameters see its neighbourhood; same bounded output.

The core never holds a module: code that differentiates splits a module into its static graph
and its parameter state (``graphdef, state = nnx.split(net)``), passes ``state`` through
``jax.grad``/``jit`` as a plain pytree, and merges inside (``nnx.merge(graphdef, state)``).
:func:`pure` and :func:`apply` are those two halves.

A regionalisation network is saved as its :func:`architecture` (plain JSON) and its weights
(:func:`network_arrays`, by path), and rebuilt by :func:`from_architecture` and
:func:`load_network_arrays` (what :func:`hybridhydro.load_calibration` does).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .structures import get_module
from .structures import check_weights, initial_weights, mlp

_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "elu": lambda x: jax.nn.elu(x, 0.1),  # smash's alpha
    "leakyrelu": lambda x: jax.nn.leaky_relu(x, 0.01),
    "selu": jax.nn.selu,
}


def _is_whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_seed(seed, what: str = "seed") -> int:
    """``seed`` as an int: a whole number (not a bool, a float or a string), else a ValueError naming it."""
    if not _is_whole(seed):
        raise ValueError(f"{what} must be a whole number (the seed of the initial weights), "
                         f"got {type(seed).__name__} {seed!r}")
    return int(seed)


def check_widths(widths, what: str = "hidden", max_layers: int | None = None, scalar: bool = False) -> tuple[int, ...]:
    """Layer widths (or channels) as a tuple of ints >= 1, else a ValueError naming ``what``.

    ``scalar``: a single whole number is one layer (the flux-correction network's ``hidden``);
    otherwise a sequence is needed, so that ``hidden=16`` is not mistaken for something else.
    """
    if _is_whole(widths) and scalar:
        widths = (widths,)
    if isinstance(widths, (str, bytes, Mapping)) or not isinstance(widths, Sequence):
        form = "a whole number or a list of them" if scalar else "a list of whole numbers"
        raise ValueError(f"{what} must be {form} >= 1 (layer widths), got {type(widths).__name__} {widths!r}; "
                         f"e.g. {what.split()[0]}=[32, 16]")
    bad = [w for w in widths if not _is_whole(w) or w < 1]
    if bad or not widths:
        raise ValueError(f"{what} must be layer widths, whole numbers >= 1; got {list(widths)!r}"
                         + (f" ({bad[0]!r} is not)" if bad else " (empty)"))
    if max_layers is not None and len(widths) > max_layers:
        raise ValueError(f"{what} has {len(widths)} layers; at most {max_layers} (smash's limit)")
    return tuple(int(w) for w in widths)


def _count(value, what: str) -> int:
    if not _is_whole(value) or value < 1:
        raise ValueError(f"{what} must be a whole number >= 1, got {value!r}")
    return int(value)


def _activation(name: str):
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(_ACTIVATIONS)}") from None


# ------------------------------------------------------------------------ flux correction


class FluxCorrectionNet(nnx.Module):
    """The flux-correction network of a hybrid structure (SiLU hidden layers, tanh outputs).

    Parameters
    ----------
    n_in, n_out
        Inputs (states, then pn and en) and corrections.
    hidden
        Width of the hidden layer, or two widths for two hidden layers (smash: at most 2;
        default 16).
    initializer
        smash's weight initialisers (``zeros`` by default: the hybrid equals its parent);
        biases start at zero.
    scale
        Factor applied to the initial weights (smash's training guide: He-uniform times 0.1).
    seed
        Seed of the initialiser.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        hidden: int | Sequence[int] = 16,
        *,
        initializer: str = "zeros",
        scale: float = 1.0,
        seed: int = 0,
    ):
        self.n_in, self.n_out = _count(n_in, "n_in"), _count(n_out, "n_out")
        hidden = check_widths(hidden, "hidden", max_layers=2, scalar=True)
        seed = check_seed(seed)
        if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real) or not np.isfinite(scale):
            raise ValueError(f"scale must be a finite number (the factor on the initial weights), got {scale!r}")
        for name, value in initial_weights(n_in, n_out, hidden, initializer, seed).items():
            value = value * np.float32(scale) if name.startswith("weight") else value
            setattr(self, name, nnx.Param(jnp.asarray(value, jnp.float32)))

    @classmethod
    def for_structure(cls, structure: str, hidden: int | Sequence[int] = 16, **options) -> "FluxCorrectionNet":
        """The network a hybrid structure needs (``"gr4_mlp"``, or a full name like ``"gr4_ude-lr"``)."""
        module = get_module(_hydrology(structure))
        if not getattr(module, "hybrid", False):
            raise ValueError(f"{structure!r} has no flux-correction network; hybrid structures end in _mlp or _ude")
        return cls(len(module.nn_inputs), len(module.nn_outputs), hidden, **options)

    @classmethod
    def from_weights(cls, weights: Mapping, structure: str | None = None) -> "FluxCorrectionNet":
        """A network holding ``weights`` (smash's layout dict), checked against ``structure`` if given."""
        w = dict(weights)
        n_in, n_out = np.shape(w["weight_1"])[1], np.shape(w[f"bias_{_layers(w)}"])[0]
        if structure is not None:
            module = get_module(_hydrology(structure))
            n_in, n_out = len(module.nn_inputs), len(module.nn_outputs)
        w = check_weights(w, n_in, n_out, structure or "network")
        hidden = tuple(w[f"bias_{k}"].shape[0] for k in range(1, _layers(w)))
        net = cls(n_in, n_out, hidden)
        for name, value in w.items():
            getattr(net, name)[...] = jnp.asarray(value)
        return net

    @classmethod
    def from_smash(cls, weights: Sequence, biases: Sequence, structure: str | None = None) -> "FluxCorrectionNet":
        """From smash's ``model.get_nn_parameters_weight()`` and ``get_nn_parameters_bias()`` lists."""
        w = {}
        for k, (wk, bk) in enumerate(zip(weights, biases), start=1):
            w[f"weight_{k}"], w[f"bias_{k}"] = np.asarray(wk), np.asarray(bk)
        return cls.from_weights(w, structure)

    def weights(self) -> dict[str, jax.Array]:
        """The weights as the pure core takes them: ``{"weight_1": ..., "bias_1": ..., ...}``."""
        return nnx.to_pure_dict(nnx.state(self, nnx.Param))

    def to_smash(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(weights, biases)`` lists for smash's ``set_nn_parameters_weight``/``bias``."""
        w = self.weights()
        n = _layers(w)
        return [np.asarray(w[f"weight_{k}"]) for k in range(1, n + 1)], [np.asarray(w[f"bias_{k}"]) for k in range(1, n + 1)]

    def __call__(self, z):
        """Corrections in (−1, 1) for inputs ``z`` of shape ``(..., n_in)``."""
        return mlp(self.weights(), z)


def _layers(weights: Mapping) -> int:
    n = 0
    while f"weight_{n + 1}" in weights:
        n += 1
    return n


def _hydrology(structure: str) -> str:
    """The hydrological part of a structure name (``"ssn-gr4_mlp-lr"`` -> ``"gr4_mlp"``)."""
    parts = str(structure).split("-")
    return parts[-2] if len(parts) >= 2 else parts[0]


# ------------------------------------------------------------------------ regionalisation


def _bounds_array(bounds: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    pairs = list(bounds) if isinstance(bounds, Sequence) or isinstance(bounds, np.ndarray) else None
    if not pairs or any(np.shape(b) != (2,) for b in pairs):
        raise ValueError(f"bounds must be one (low, high) pair per output parameter, got {bounds!r}")
    lo, hi = (np.asarray(b, np.float32) for b in zip(*pairs))
    bad = np.flatnonzero(~(lo < hi))
    if bad.size:
        raise ValueError(f"bounds[{bad[0]}] = ({lo[bad[0]]}, {hi[bad[0]]}): the lower bound must be below the upper")
    return lo, hi


class DescriptorMLP(nnx.Module):
    """"ann" regionalisation: descriptors of a cell -> its parameters, one dense network for all cells.

    The default layers follow smash's default Net: Dense(3·nd, relu) → Dense(round(√(nd·np)·
    ln(ncell)), relu) → Dense(3·np, relu) → Dense(np, tanh), then a min–max scale of the tanh
    output to each parameter's bounds, so every output lies inside its bounds.

    Parameters
    ----------
    n_descriptors
        Descriptors per cell (transformed, see :func:`hybridhydro.mapping.transform_descriptors`).
    bounds
        ``(low, high)`` of each output parameter, in the parameter's unit.
    hidden
        Hidden layer widths; default smash's, which needs ``ncell``.
    ncell
        Cells of the grid (only for the default widths).
    activation
        Hidden activation.
    """

    def __init__(
        self,
        n_descriptors: int,
        bounds: Sequence[tuple[float, float]],
        hidden: Sequence[int] | None = None,
        *,
        ncell: int | None = None,
        activation: str = "relu",
        seed: int = 0,
    ):
        n_descriptors = _count(n_descriptors, "n_descriptors")
        lo, hi = _bounds_array(bounds)
        n_out = lo.size
        seed = check_seed(seed)
        if hidden is None:
            ncell = _count(ncell, "ncell") if ncell is not None else 100
            hidden = (3 * n_descriptors, max(1, round(math.sqrt(n_descriptors * n_out) * math.log(ncell))),
                      3 * n_out)
        hidden = check_widths(hidden, "hidden")
        _activation(activation)
        rngs = nnx.Rngs(seed)
        sizes = (n_descriptors, *hidden, n_out)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.activation = activation
        _activation(activation)
        self.low, self.high = nnx.Variable(jnp.asarray(lo)), nnx.Variable(jnp.asarray(hi))

    def __call__(self, d):
        """Parameters ``(..., n_out)`` for descriptors ``(..., n_descriptors)``."""
        act = _activation(self.activation)
        for layer in self.layers[:-1]:
            d = act(layer(d))
        out = jnp.tanh(self.layers[-1](d))
        return self.low[...] + (self.high[...] - self.low[...]) * (out + 1.0) / 2.0


class DescriptorCNN(nnx.Module):
    """"cnn" regionalisation: convolutions over the descriptor rasters -> parameter maps.

    Two ``kernel × kernel`` convolutions with "same" zero padding (each cell sees its
    neighbours within ``kernel − 1`` cells), then a per-cell dense layer and a tanh scaled to
    each parameter's bounds.

    Parameters
    ----------
    n_descriptors
        Descriptor rasters (channels).
    bounds
        ``(low, high)`` of each output parameter, in its unit.
    channels
        Feature maps of each convolution.
    kernel
        Convolution window, cells.
    """

    def __init__(
        self,
        n_descriptors: int,
        bounds: Sequence[tuple[float, float]],
        channels: Sequence[int] = (16, 16),
        *,
        kernel: int = 3,
        activation: str = "relu",
        seed: int = 0,
    ):
        n_descriptors = _count(n_descriptors, "n_descriptors")
        lo, hi = _bounds_array(bounds)
        channels = check_widths(channels, "channels")
        kernel = _count(kernel, "kernel")
        seed = check_seed(seed)
        _activation(activation)
        rngs = nnx.Rngs(seed)
        sizes = (n_descriptors, *channels)
        self.convs = nnx.List(
            [nnx.Conv(a, b, kernel_size=(kernel, kernel), padding="SAME", rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
        )
        self.head = nnx.Linear(sizes[-1], lo.size, rngs=rngs)
        self.activation = activation
        _activation(activation)
        self.low, self.high = nnx.Variable(jnp.asarray(lo)), nnx.Variable(jnp.asarray(hi))

    def __call__(self, grid):
        """Parameter maps ``(nrow, ncol, n_out)`` for descriptor rasters ``(nrow, ncol, n_descriptors)``."""
        act = _activation(self.activation)
        z = grid[None]
        for conv in self.convs:
            z = act(conv(z))
        out = jnp.tanh(self.head(z[0]))
        return self.low[...] + (self.high[...] - self.low[...]) * (out + 1.0) / 2.0


# ------------------------------------------------------------------------ the pure crossing


def pure(net: nnx.Module):
    """``(graphdef, params)``: the static structure and the trainable parameters (a pytree).

    ``params`` goes through ``jax.grad``/``jit``/optax; :func:`apply` merges it back.
    """
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    return (graphdef, rest), params


def apply(graph, params, *inputs):
    """Call the network described by ``graph`` (from :func:`pure`) with ``params`` on ``inputs``."""
    graphdef, rest = graph
    return nnx.merge(graphdef, params, rest)(*inputs)


def merge(graph, params) -> nnx.Module:
    """The module again, holding ``params`` (e.g. after training)."""
    graphdef, rest = graph
    return nnx.merge(graphdef, params, rest)


# ------------------------------------------------------------------------ saving and rebuilding


def architecture(net: nnx.Module) -> dict:
    """What rebuilds a regionalisation network (weights apart), as plain JSON.

    ``{"class": "DescriptorMLP", "n_descriptors", "hidden": [...], "activation", "bounds":
    [[low, high], ...]}``, or for a :class:`DescriptorCNN` ``"channels"`` and ``"kernel"`` (cells)
    instead of ``"hidden"``. Bounds are in each output parameter's unit. :func:`from_architecture`
    builds the network back; :func:`network_arrays` and :func:`load_network_arrays` carry its weights.

    Raises
    ------
    ValueError
        ``net`` is not a :class:`DescriptorMLP` or :class:`DescriptorCNN` (another module cannot
        be described, so it cannot be saved and rebuilt).
    """
    bounds = [[float(a), float(b)] for a, b in zip(np.asarray(net.low[...]), np.asarray(net.high[...]))] \
        if isinstance(net, (DescriptorMLP, DescriptorCNN)) else None
    if isinstance(net, DescriptorMLP):
        sizes = [int(layer.kernel.shape[0]) for layer in net.layers]
        return {"class": "DescriptorMLP", "n_descriptors": sizes[0], "hidden": sizes[1:], "activation": net.activation,
                "bounds": bounds}
    if isinstance(net, DescriptorCNN):
        shapes = [tuple(int(n) for n in conv.kernel.shape) for conv in net.convs]
        return {"class": "DescriptorCNN", "n_descriptors": shapes[0][2], "channels": [s[3] for s in shapes],
                "kernel": shapes[0][0], "activation": net.activation, "bounds": bounds}
    raise ValueError(f"a {type(net).__name__} cannot be saved and rebuilt: only DescriptorMLP (ann) and "
                     "DescriptorCNN (cnn) regionalisation networks are described by hybridhydro.networks.architecture")


def from_architecture(description: Mapping) -> nnx.Module:
    """The network :func:`architecture` describes, with freshly initialised weights (seed 0);
    :func:`load_network_arrays` then puts the trained weights in.

    Raises
    ------
    ValueError
        An unknown class, or a description that lacks a key or holds a bad value (named).
    """
    try:
        kind = description["class"]
        common = dict(activation=str(description["activation"]))
        if kind == "DescriptorMLP":
            return DescriptorMLP(description["n_descriptors"], description["bounds"], description["hidden"], **common)
        if kind == "DescriptorCNN":
            return DescriptorCNN(description["n_descriptors"], description["bounds"], description["channels"],
                                 kernel=description["kernel"], **common)
    except KeyError as err:
        raise ValueError(f"the network's description lacks {err}; it was not written by "
                         "hybridhydro.networks.architecture") from None
    raise ValueError(f"unknown network class {kind!r} in the description; DescriptorMLP or DescriptorCNN")


def network_arrays(net: nnx.Module) -> dict[str, np.ndarray]:
    """The trainable weights of ``net`` as ``{path: array}`` (paths like ``['layers'][0]['kernel']``)."""
    _, params = pure(net)
    return {jax.tree_util.keystr(path).removesuffix(".value"): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def load_network_arrays(net: nnx.Module, arrays: Mapping[str, np.ndarray], where: str = "the weights") -> nnx.Module:
    """``net`` (from :func:`from_architecture`) holding ``arrays`` (from :func:`network_arrays`).

    Raises
    ------
    ValueError
        A weight missing from ``arrays``, one too many, or one of another shape (each named,
        with ``where`` the file or object they came from).
    """
    graph, params = pure(net)
    paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = [jax.tree_util.keystr(path).removesuffix(".value") for path, _ in paths]
    missing = [k for k in keys if k not in arrays]
    extra = sorted(set(arrays) - set(keys))
    if missing or extra:
        raise ValueError(f"{where} do not fit the network: "
                         + "; ".join(p for p in (f"missing {missing}" if missing else "",
                                                 f"unexpected {extra}" if extra else "") if p))
    leaves = []
    for key, (_, like) in zip(keys, paths):
        value = np.asarray(arrays[key])
        if value.shape != np.shape(like):
            raise ValueError(f"{where}: weight {key} has shape {value.shape}, the network needs {np.shape(like)}")
        leaves.append(jnp.asarray(value, dtype=jnp.asarray(like).dtype))
    return merge(graph, jax.tree_util.tree_unflatten(treedef, leaves))
