"""Mappings: controls (what an optimiser changes) -> parameter values on every active cell (spec 8).

A mapping is built once for a basin and a list of parameters, and then is a pure function::

    m = make_mapping("multi-linear", ("cp", "ct", "kexc"), basin)
    controls = m.initial(parameters)          # a pytree (dict of arrays)
    values = m(controls)                      # {"cp": (nac,), "ct": (nac,), "kexc": (nac,)}

``values`` feeds :func:`hybridhydro.simulate.simulate_arrays`; ``jax.grad`` of a cost through
``m(controls)`` gives the gradient with respect to the controls, the weights of a network
included.

Mappings:

* ``uniform``: one value per parameter, the same on every cell.
* ``distributed``: one value per parameter and active cell.
* ``multi-linear``: θ(x) = l + (u − l)·σ(ρ₀ + Σ_d ρ_d·D̃_d(x)), σ the logistic function.
* ``multi-power``: θ(x) = l + (u − l)·σ(ρ₀ + Σ_d ρ_d·D̃_d(x)^β_d), β_d in [0.5, 2] (use
  ``normalize`` descriptors: a negative descriptor to a non-integer power is NaN).
* ``ann``: a per-cell dense network of the descriptors (:class:`~hybridhydro.networks.DescriptorMLP`).
* ``cnn``: convolutions over the descriptor rasters (:class:`~hybridhydro.networks.DescriptorCNN`).

(l, u) are the parameters' bounds (smash's defaults, :data:`hybridhydro.structures.PARAMETER_BOUNDS`,
or the caller's); every mapping but ``uniform`` and ``distributed`` keeps each value strictly
inside them. D̃ are the descriptors transformed by :func:`transform_descriptors`, with the
statistics of the basin the mapping is built on (:class:`DescriptorScaling`, kept in
:attr:`ParameterMapping.scaling`); a trained mapping applied to another basin is built there
with the training basin's statistics (``make_mapping(..., scaling=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from . import networks
from .mesh import Mesh
from .mesh import RoutingPlan, routing_plan
from .structures import PARAMETER_BOUNDS, STATE_BOUNDS

MAPPINGS = ("uniform", "distributed", "multi-linear", "multi-power", "ann", "cnn")
#: The mappings whose controls are a function of the descriptors (regionalisations): they apply
#: to another basin (:meth:`hybridhydro.calibration.CalibrationResult.regionalise`).
REGIONAL_MAPPINGS = MAPPINGS[2:]
DESCRIPTOR_TRANSFORMS = ("normalize", "standardize", "keep")
_POWER_BOUNDS = (0.5, 2.0)


@dataclass(frozen=True, eq=False)
class DescriptorScaling:
    """How descriptors are transformed: ``D̃ = (D − offset) / scale``, per descriptor.

    The statistics are those of the basin a mapping was built (trained) on
    (:func:`descriptor_scaling`). A trained regionalisation applied to another basin
    transforms that basin's descriptors with these same statistics, not with its own: the
    network (or the multi-* coefficients) learnt a function of ``D̃``, and the new basin's own
    minimum and maximum would shift every input (a sub-basin, whose descriptors span less,
    would be stretched back to [0, 1]).

    Attributes
    ----------
    method
        ``normalize`` (offset the minimum, scale max − min), ``standardize`` (the mean, the
        population standard deviation) or ``keep`` (0 and 1).
    names
        The descriptors, in the order the mapping reads them.
    offset, scale
        float64 ``(descriptor,)``, each in its descriptor's unit.
    """

    method: str
    names: tuple[str, ...]
    offset: np.ndarray
    scale: np.ndarray

    def to_json(self) -> dict:
        """A JSON-able dict (:meth:`from_json` reads it back exactly: floats round-trip)."""
        return {"method": self.method, "names": list(self.names), "offset": [float(v) for v in self.offset],
                "scale": [float(v) for v in self.scale]}

    @classmethod
    def from_json(cls, data: Mapping) -> "DescriptorScaling":
        try:
            out = cls(str(data["method"]), tuple(map(str, data["names"])), np.asarray(data["offset"], np.float64),
                      np.asarray(data["scale"], np.float64))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"a descriptor scaling needs method, names, offset and scale ({err})") from None
        if out.method not in DESCRIPTOR_TRANSFORMS or not (len(out.names) == out.offset.size == out.scale.size):
            raise ValueError(f"a descriptor scaling with method {out.method!r}, {len(out.names)} names, "
                             f"{out.offset.size} offsets and {out.scale.size} scales is not one")
        return out


def _descriptor_values(basin: xr.Dataset, names: Sequence[str] | None) -> tuple[tuple[str, ...], np.ndarray]:
    """The descriptor names and their float64 ``(descriptor, y, x)`` rasters, each checked to
    have a value on every active cell."""
    if "descriptors" not in basin or basin.sizes.get("descriptor", 0) == 0:
        raise ValueError(
            "the basin has no descriptors: regionalisation needs basin['descriptors'] (descriptor, y, x); "
            "read a dataset with descriptor rasters (e.g. read_smash_dataset('Lez')) or add them"
        )
    desc = basin["descriptors"]
    if names is not None:
        unknown = [n for n in names if n not in set(map(str, desc["descriptor"].values))]
        if unknown:
            raise ValueError(f"unknown descriptor(s) {unknown}; the basin has {list(map(str, desc['descriptor'].values))}")
        desc = desc.sel(descriptor=list(names))
    values = desc.transpose("descriptor", "y", "x").values.astype(np.float64)
    active = basin["active_cell"].values == 1
    names = tuple(map(str, desc["descriptor"].values))
    for name, v in zip(names, values):
        bad = active & ~np.isfinite(v)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(
                f"descriptor {name!r} is missing on {int(bad.sum())} active cell(s), e.g. (row {r}, col {c}); "
                "fill it there (regionalisation needs a value on every active cell)"
            )
    return names, values


def descriptor_scaling(basin: xr.Dataset, method: str = "normalize", names: Sequence[str] | None = None
                       ) -> DescriptorScaling:
    """The statistics of ``basin``'s descriptors that ``method`` uses (see :class:`DescriptorScaling`).

    They run over every non-missing cell of the grid, active or not, as in smash.

    Raises
    ------
    ValueError
        No descriptors, an unknown method or name, a descriptor missing on an active cell, or a
        constant descriptor (it cannot be normalised); the message names it.
    """
    if method not in DESCRIPTOR_TRANSFORMS:
        raise ValueError(f"unknown descriptor transform {method!r}; choose one of {', '.join(DESCRIPTOR_TRANSFORMS)}")
    names, values = _descriptor_values(basin, names)
    offset, scale = np.zeros(len(names)), np.ones(len(names))
    for k, (name, v) in enumerate(zip(names, values)):
        finite = v[np.isfinite(v)]
        if method == "normalize":
            lo, hi = finite.min(), finite.max()
            if hi == lo:
                raise ValueError(f"descriptor {name!r} is constant ({lo}): it cannot be normalised; drop it")
            offset[k], scale[k] = lo, hi - lo
        elif method == "standardize":
            sd = finite.std()
            if sd == 0:
                raise ValueError(f"descriptor {name!r} is constant ({finite.mean()}): it cannot be standardised; drop it")
            offset[k], scale[k] = finite.mean(), sd
    return DescriptorScaling(method, names, offset, scale)


def transform_descriptors(basin: xr.Dataset, method: str = "normalize", names: Sequence[str] | None = None,
                          *, scaling: DescriptorScaling | None = None) -> np.ndarray:
    """The basin's descriptors as a float32 ``(y, x, descriptor)`` array, transformed.

    ``normalize``: (x − min)/(max − min); ``standardize``: (x − mean)/std (population std);
    ``keep``: unchanged. The statistics run over every non-missing cell of the grid, active or
    not, as in smash; with ``scaling`` (e.g. a trained mapping's, :class:`DescriptorScaling`)
    its statistics, method and descriptor names are used instead of the basin's own (``method``
    and ``names`` are then ignored). Missing values (NaN) off the active cells become 0 after
    the transform.

    Raises
    ------
    ValueError
        No descriptors, an unknown method or name, a descriptor missing on an active cell, or a
        constant descriptor (it cannot be normalised); the message names it.
    """
    if scaling is None:
        scaling = descriptor_scaling(basin, method, names)
    _, values = _descriptor_values(basin, scaling.names)
    t = (values - scaling.offset[:, None, None]) / scaling.scale[:, None, None]
    out = np.where(np.isfinite(t), t, 0.0)
    return np.moveaxis(out, 0, -1).astype(np.float32)


def default_bounds(name: str) -> tuple[float, float]:
    """smash's default optimisation bounds of a parameter or initial state."""
    if name in PARAMETER_BOUNDS:
        return PARAMETER_BOUNDS[name]
    if name in STATE_BOUNDS:
        return STATE_BOUNDS[name]
    raise ValueError(f"no default bounds for {name!r}; give bounds explicitly")


def _logit(p):
    return jnp.log(p) - jnp.log1p(-p)


@dataclass(frozen=True)
class ParameterMapping:
    """A mapping for one basin and one list of parameters (build it with :func:`make_mapping`).

    Call it with controls to get ``{name: (nac,)}``. ``initial(values)`` gives the first
    controls from parameter values (scalars or ``(nac,)``): uniform and distributed take them
    as they are, the multi-* mappings start from the mean (ρ₀ = logit of the scaled mean,
    other coefficients 0, β = 1), the networks from their seeded initialisation.
    """

    kind: str
    names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    nac: int
    descriptors: np.ndarray | None = field(default=None, repr=False)  # (nac, nd) on the active cells
    grid: np.ndarray | None = field(default=None, repr=False)  # (y, x, nd) for the cnn
    cells: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    graph: object = field(default=None, repr=False)  # static half of a network (ann, cnn)
    network_params: object = field(default=None, repr=False)
    scaling: DescriptorScaling | None = field(default=None, repr=False)  # how the descriptors were transformed

    def __call__(self, controls) -> dict[str, jax.Array]:
        lo, hi = jnp.asarray(self.low)[:, None], jnp.asarray(self.high)[:, None]
        if self.kind == "uniform":
            values = jnp.broadcast_to(jnp.asarray(controls["values"])[:, None], (len(self.names), self.nac))
        elif self.kind == "distributed":
            values = jnp.asarray(controls["values"])
        elif self.kind in ("multi-linear", "multi-power"):
            d = jnp.asarray(self.descriptors)  # (nac, nd)
            if self.kind == "multi-power":
                d = d[None, :, :] ** controls["exponents"][:, None, :]  # (np, nac, nd)
                z = controls["intercept"][:, None] + jnp.einsum("pcd,pd->pc", d, controls["coefficients"])
            else:
                z = controls["intercept"][:, None] + controls["coefficients"] @ d.T
            values = lo + (hi - lo) * jax.nn.sigmoid(z)
        elif self.kind == "ann":
            values = networks.apply(self.graph, controls["network"], jnp.asarray(self.descriptors)).T
        else:  # cnn
            maps = networks.apply(self.graph, controls["network"], jnp.asarray(self.grid))
            rows, cols = self.cells
            values = maps[rows, cols, :].T
        return {n: values[k] for k, n in enumerate(self.names)}

    def initial(self, values: Mapping | None = None):
        """First controls (see the class docstring); ``values`` default to the bounds' middle."""
        values = dict(values or {})

        def cells(name):
            v = values.get(name, 0.5 * (self.low[self.names.index(name)] + self.high[self.names.index(name)]))
            return np.broadcast_to(np.asarray(v, np.float32), (self.nac,))

        if self.kind == "uniform":
            return {"values": jnp.asarray([cells(n).mean() for n in self.names], jnp.float32)}
        if self.kind == "distributed":
            return {"values": jnp.asarray(np.stack([cells(n) for n in self.names]), jnp.float32)}
        if self.kind in ("multi-linear", "multi-power"):
            mean = np.array([cells(n).mean() for n in self.names])
            span = self.high - self.low
            scaled = np.clip((mean - self.low) / span, 1e-3, 1 - 1e-3)  # both clamps (smash applies only the upper)
            nd = self.descriptors.shape[1]
            out = {
                "intercept": jnp.asarray(np.log(scaled / (1 - scaled)), jnp.float32),
                "coefficients": jnp.zeros((len(self.names), nd), jnp.float32),
            }
            if self.kind == "multi-power":
                out["exponents"] = jnp.ones((len(self.names), nd), jnp.float32)
            return out
        return {"network": self.network_params}

    def bounds(self, controls) -> tuple[object, object] | None:
        """Box bounds ``(low, high)`` of the controls (same pytree), or None for unbounded controls.

        uniform and distributed: the parameters' bounds; multi-*: unbounded coefficients,
        exponents in [0.5, 2]; networks: unbounded.
        """
        inf = np.float32(np.inf)
        if self.kind == "uniform":
            return {"values": jnp.asarray(self.low)}, {"values": jnp.asarray(self.high)}
        if self.kind == "distributed":
            shape = (len(self.names), self.nac)
            return (
                {"values": jnp.broadcast_to(jnp.asarray(self.low)[:, None], shape)},
                {"values": jnp.broadcast_to(jnp.asarray(self.high)[:, None], shape)},
            )
        if self.kind in ("multi-linear", "multi-power"):
            lo = jax.tree_util.tree_map(lambda x: jnp.full_like(x, -inf), controls)
            hi = jax.tree_util.tree_map(lambda x: jnp.full_like(x, inf), controls)
            if self.kind == "multi-power":
                lo["exponents"] = jnp.full_like(controls["exponents"], _POWER_BOUNDS[0])
                hi["exponents"] = jnp.full_like(controls["exponents"], _POWER_BOUNDS[1])
            return lo, hi
        return None


def make_mapping(
    kind: str,
    names: Sequence[str],
    basin: xr.Dataset,
    *,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    descriptor_transform: str = "normalize",
    descriptors: Sequence[str] | None = None,
    network: object | None = None,
    hidden: Sequence[int] | None = None,
    seed: int = 0,
    plan: RoutingPlan | None = None,
    scaling: DescriptorScaling | None = None,
) -> ParameterMapping:
    """Build a mapping of ``kind`` for the parameters (or initial states) ``names`` on ``basin``.

    Parameters
    ----------
    kind
        One of :data:`MAPPINGS`.
    names
        Parameters (and/or initial states) to map, smash's names.
    basin
        The basin Dataset (its mesh; its ``descriptors`` for the multi-*, ann and cnn mappings).
    bounds
        ``{name: (low, high)}``, default smash's bounds (:func:`default_bounds`).
    descriptor_transform
        ``normalize`` (default, as in the paper), ``standardize`` or ``keep``.
    descriptors
        Descriptor names to use (default all).
    network
        ann/cnn: a :class:`~hybridhydro.networks.DescriptorMLP` or
        :class:`~hybridhydro.networks.DescriptorCNN` to use instead of the default one.
    hidden
        ann: hidden widths; cnn: channels of the convolutions.
    seed
        Seed of the network's initialisation.
    scaling
        The statistics to transform the descriptors with (a trained mapping's
        :attr:`ParameterMapping.scaling`, to apply it to another basin); default: this basin's
        own, computed with ``descriptor_transform`` over ``descriptors``.
    """
    if not isinstance(kind, str) or kind not in MAPPINGS:
        raise ValueError(f"unknown mapping {kind!r}; choose one of {', '.join(MAPPINGS)}")
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names:
        raise ValueError("a mapping needs at least one parameter name")
    if bounds is not None and not isinstance(bounds, Mapping):
        raise ValueError(f"bounds must be a dict {{name: (low, high)}}, got {type(bounds).__name__} {bounds!r:.80}")
    bounds = dict(bounds or {})
    seed = networks.check_seed(seed)
    if hidden is not None and kind in ("ann", "cnn"):
        hidden = networks.check_widths(hidden, "hidden" if kind == "ann" else "hidden (the cnn's channels)")
    pairs = [tuple(map(float, bounds.get(n, default_bounds(n)))) for n in names]
    for n, (lo, hi) in zip(names, pairs):
        if not lo < hi:
            raise ValueError(f"bounds of {n!r} are ({lo}, {hi}): the lower bound must be below the upper; swap them")
    low, high = (np.array(v, np.float32) for v in zip(*pairs))
    plan = plan or routing_plan(Mesh.from_dataset(basin))
    common = dict(kind=kind, names=names, low=low, high=high, nac=plan.nac)
    if kind in ("uniform", "distributed"):
        return ParameterMapping(**common)
    trained = scaling is not None
    scaling = scaling or descriptor_scaling(basin, descriptor_transform, descriptors)
    grid = transform_descriptors(basin, scaling=scaling)
    rows, cols = np.asarray(plan.rows), np.asarray(plan.cols)
    cell_desc = grid[rows, cols, :]
    if kind == "multi-power" and (cell_desc < 0).any():
        if trained:
            k = int(np.flatnonzero((cell_desc < 0).any(axis=0))[0])
            raise ValueError(
                f"multi-power: descriptor {scaling.names[k]!r} of this basin falls below the smallest value of the "
                "basin the mapping was trained on, and a negative descriptor to a non-integer power is NaN; apply "
                "it only where the descriptors lie inside the training range"
            )
        raise ValueError(
            "multi-power raises descriptors to non-integer powers: they must be >= 0; use descriptor_transform='normalize'"
        )
    common.update(descriptors=cell_desc, cells=(rows, cols), scaling=scaling)
    if kind in ("multi-linear", "multi-power"):
        return ParameterMapping(**common)
    nd = grid.shape[-1]
    if kind == "ann":
        net = network or networks.DescriptorMLP(nd, pairs, hidden, ncell=grid.shape[0] * grid.shape[1], seed=seed)
    else:
        net = network or networks.DescriptorCNN(nd, pairs, (16, 16) if hidden is None else hidden, seed=seed)
    graph, params = networks.pure(net)
    return ParameterMapping(**common, grid=grid, graph=graph, network_params=params)
