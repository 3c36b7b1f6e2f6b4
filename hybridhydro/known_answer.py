"""A known-answer basin: real flow directions, stochastic forcing, and a truth that GR4 lacks.

:func:`known_answer_basin` builds a basin (schema of :mod:`hybridhydro.basin`) whose discharge
is made by a model that is known exactly: GR4 with *true* parameter maps that are smooth
functions of the basin's descriptors, plus (by default) one process GR4 does not have. A
calibration or a hybrid trained on it can then be judged against the answer: do the
calibrated maps find the true maps, does the network's correction follow the hidden flux?

How it is made
--------------
* **Grid.** hydro-smash's 1 km D8 flow directions of France (``France_flwdir.tif``, smash's
  coding, read with :func:`hybridhydro.mesh.read_flwdir`). In ``bbox`` (Lambert-93 metres; by
  default :data:`DEFAULT_BBOX`, the Languedoc coast around Montpellier) the outlets to the sea
  (cells that drain into no-data or off the raster) whose catchment holds between 5 % and 75 %
  of ``cells`` are taken, nearest to the box's centre first, as long as the total stays under
  1.25 ``cells``, until it reaches 0.8 ``cells``: two or more separate catchments. Each
  outlet is a gauge; the other gauges sit just above confluences inside those catchments
  (upstream area from 10 km² to 60 % of their catchment's), shared among the catchments in
  proportion to their areas, largest first, skipping a cell that nests in (or holds) a gauge
  already chosen with more than 70 % of its area, or lies within 2 cells of one. So some
  gauges are nested and some are not.
  Codes ``KA01``, ``KA02``, ... in decreasing drained area. Everything is deterministic (no
  random choice): the same arguments give the same grid.
* **Rain** (mm per step). A daily two-state Markov chain for the domain's wet and dry days,
  with seasonal transition probabilities, ``p01 = 0.20 + 0.08 s`` (dry to wet),
  ``p11 = 0.50 + 0.15 s`` (wet to wet), ``s = cos(2 pi (doy - 300) / 365.25)`` (wettest in late
  October, the Cevenol season; driest in late April); a wet day's domain amount is gamma
  distributed (shape 0.75, mean ``8.5 + 5 s`` mm); it is spread over the cells by a
  spatially correlated lognormal field ``exp(0.6 Z - 0.18)``, ``Z`` a standard Gaussian random
  field of correlation length 12 km (white noise smoothed by a Gaussian kernel, drawn afresh
  each wet day), times a static south-north gradient from 0.85 (coast) to 1.15 (inland). About
  1 000 to 1 250 mm a year (it varies from one seed to another, as years do). At sub-daily
  steps a day's rain is shared among its steps by Dirichlet(0.4) weights drawn once per day
  for the whole domain.
* **PET** (mm per step). A seasonal cycle ``2.4 + 1.95 sin(2 pi (doy - 105) / 365.25)`` mm per
  day (0.45 mm in January, 4.35 mm in July), times ``(1 + 0.06 a)`` with ``a`` a daily AR(1)
  noise of unit variance (lag-one correlation 0.7), times 0.75 on wet days, times a gradient
  from 1.05 (coast) to 0.95 (inland). About 800 mm a year. At sub-daily steps a day's PET is
  spread with smash's hourly profile (:data:`hybridhydro.io.PET_HOURLY_PROFILE`).
* **Descriptors** (:data:`DESCRIPTOR_UNITS`): ``slope`` (degree, 2 to 25) and ``soil_depth``
  (m, 0.3 to 2.0), each a Gaussian random field (correlation length 15 km), standardised over
  the active cells, through the normal CDF: ``slope = 2 + 23 Phi(Z1)``,
  ``soil_depth = 0.3 + 1.7 Phi(Z2)``.
* **True parameters** (:func:`true_parameter_maps`), smooth functions of ``u = (slope - 2) / 23``
  and ``v = (soil_depth - 0.3) / 1.7`` (both in [0, 1]), inside the calibration bounds:
  ``cp = 120 + 480 v`` mm, ``ct = 40 + 260 (1 - u)`` mm, ``kexc = -(1 + 3 (1 - v)) dt/86400``
  mm per step (a losing basin: shallow soils lose most), and the routing's:
  ``llr = 60 + 540 (1 - u)`` min (lr), ``akw = 2 + 6 (1 - u)``, ``bkw = 0.6`` (kw).
  ``ci`` keeps smash's default (fitted to the forcing at sub-daily steps, as any run does).
  Initial states are smash's defaults.

The truth (``truth=``)
----------------------
GR4 on every cell and step as :mod:`hybridhydro.structures` computes it (interception,
production with percolation, exchange ``l = kexc ht^3.5``, 90/10 split, power-5 transfer
store: the same operators, ``interception``, ``production``, ``exchange_power``, ``power_store``
of :mod:`hybridhydro.structures`), with one hidden process added, then the basin's routing
(:func:`hybridhydro.routing.route_series`):

* ``"gr4"``: nothing hidden; the discharge is :func:`hybridhydro.simulate` of ``gr4-<routing>``
  with the true maps, exactly.
* ``"exchange"`` (default): **a saturating groundwater loss** (a karst aquifer under the
  river). Besides GR4's exchange, each step loses ``g = -a ht / (ht + 0.25)`` mm, with ``ht``
  the transfer store's level at the start of the step and ``a = (0.8 + 0.8 (1 - v))
  dt/86400`` mm per step (:func:`hidden_parameter_map`, stored as ``hidden_loss_rate``): it
  grows almost linearly at low levels and saturates at high ones, the opposite of GR4's
  ``kexc ht^3.5``, which vanishes at low levels and keeps growing. It enters where GR4's
  exchange does: ``prr = 0.9 R + l + g`` into the transfer store, ``qd = max(0, 0.1 R + l + g)``.
  It dries the recessions and low flows, which no value of ``kexc`` can do without cutting the
  floods. In the hybrids' terms: gr4_mlp's exchange correction ``(1 + f_4) l`` (``f_4`` a
  function of its inputs ``hp, ht, pn, en``) represents it where ``2 |kexc| ht^3.5 >= |g|``
  (the transfer store high enough, with a calibrated ``kexc`` more negative than the true
  one), and its evaporation correction ``(1 + f_2) es`` removes water at any level, up to the
  PET; gr4_ude's exchange and rain corrections act alike. An approximation, not an identity.
* ``"slow_store"``: **a slow aquifer.** A share ``phi = 0.15 + 0.3 v`` (stored as
  ``hidden_slow_share``) of the water bound for the transfer store (``0.9 R``, ``R`` the
  effective rain plus percolation) goes into a linear store ``S`` (mm, 40 mm at the start),
  which releases ``k S`` each step, ``k = 1 - exp(-dt / 120 days)``, into the direct branch:
  baseflow over months, which GR4's power-5 store cannot hold. gr4_mlp's split correction
  moves water between branches within a step only; gr4_ude's outflow correction can slow the
  transfer store: both approximate it.

``hidden_flux`` (time, y, x) is the net water the hidden process adds to the cell's runoff in
each step (mm per step, signed: negative removes water): for ``"exchange"``,
``g + max(0, 0.1 R + l + g) - max(0, 0.1 R + l)`` (the loss into the transfer store and what
it takes from the direct branch); for ``"slow_store"``, the release minus the intake
(``k S - phi 0.9 R``); zero for ``"gr4"``. ``q_gr4`` (gauge, time) is the discharge of GR4
with the true maps and no hidden process (:func:`hybridhydro.simulate`), ``q_true`` the clean
truth (its float32 round-off below zero, where a river runs dry, set to 0), and
``qobs = q_true exp(noise eps)`` with ``eps`` standard normal per gauge and step
(lognormal(0, noise); ``noise = 0`` gives the clean truth). Every variable and the true maps
(``true_<parameter>``, (y, x)) travel in the basin and survive :func:`hybridhydro.write_basin`
/ :func:`hybridhydro.read_basin`.

Intermittent rivers: the default initial states are smash's (nearly empty stores), and the
exchange truth's loss keeps a low transfer store low, so in the first months (and in dry
spells) small rivers may run dry; the pipeline's warm-up (``calibration.warmup_fraction``)
absorbs the first.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from .basin import annotate, check_basin
from .dates import parse_date
from .io import PET_HOURLY_PROFILE
from .mesh import accumulate, build_mesh, catchment_means, downstream, read_flwdir, topological_levels, upstream_masks

__all__ = [
    "DEFAULT_BBOX",
    "DESCRIPTOR_UNITS",
    "HIDDEN_PROCESSES",
    "TRUTHS",
    "hidden_loss",
    "hidden_parameter_map",
    "nse",
    "known_answer_basin",
    "true_parameter_maps",
]

#: The truths :func:`known_answer_basin` can make.
TRUTHS = ("exchange", "slow_store", "gr4")

#: One sentence per truth: what the hidden process is (written into the basin's attributes).
HIDDEN_PROCESSES = {
    "exchange": (
        "saturating groundwater loss: besides GR4's exchange kexc ht^3.5, each step loses a ht / (ht + 0.25) mm "
        "(a = hidden_loss_rate, mm per step; ht the transfer-store level), entering where GR4's exchange does "
        "(transfer store and direct branch): it dries low flows and recessions, which GR4's power law cannot"
    ),
    "slow_store": (
        "slow aquifer: a share phi (hidden_slow_share) of the water bound for the transfer store fills a linear store "
        "that releases 1 - exp(-dt / 120 days) of its content each step into the direct branch (baseflow over months)"
    ),
    "gr4": "none: the discharge is GR4 with the true parameter maps",
}

#: Search box (xmin, xmax, ymin, ymax), Lambert-93 metres, of the outlets: the Languedoc coast
#: around Montpellier (small coastal rivers, several separate catchments).
DEFAULT_BBOX = (720_000.0, 840_000.0, 6_230_000.0, 6_320_000.0)

#: Units of the descriptors.
DESCRIPTOR_UNITS = {"slope": "degree", "soil_depth": "m"}

_ROUTINGS = ("lr", "kw", "lag0", "zero")
_MIN_GAUGE_CELLS = 10  # smallest gauge catchment, cells
_MIN_GAUGE_SPACING = 3  # gauges lie at least this many cells apart (rows or columns)
_LOSS_HALF = 0.25  # transfer-store level at which the hidden loss reaches half its rate
_SLOW_DAYS, _SLOW_START_MM = 120.0, 40.0


# --------------------------------------------------------------------------- the grid


@functools.lru_cache(maxsize=2)
def _france(path: str) -> tuple[np.ndarray, dict, np.ndarray, np.ndarray]:
    """France's D8 codes, georeference, downstream index and upstream cell counts (cached)."""
    codes, georef = read_flwdir(path)
    down = downstream(codes)
    acc, _ = accumulate(down, topological_levels(down), np.ones(codes.size))
    for a in (codes, down, acc):
        a.setflags(write=False)
    return codes, georef, down, acc.reshape(codes.shape)


def _flwdir_file() -> Path:
    from .io.smash_layout import france_flwdir

    return france_flwdir("the known-answer basin (cut from France's flow directions)")


def _select_gauges(cells: int, ngauge: int, bbox):
    """The gauges on a window of the France raster: ``(codes, georef)`` of the window, the
    gauges' rows and columns in it and their upstream cell counts (largest first)."""
    codes, georef, down, acc = _france(str(_flwdir_file()))
    nrow, ncol = codes.shape
    xmin, ymax, res = georef["xmin"], georef["ymax"], georef["xres"]
    flat_codes = codes.ravel()
    to_sea = (flat_codes > 0) & ((down < 0) | (flat_codes[np.maximum(down, 0)] == 0))
    rows, cols = np.divmod(np.flatnonzero(to_sea), ncol)
    x = xmin + (cols + 0.5) * res
    y = ymax - (rows + 0.5) * georef["yres"]
    a = acc[rows, cols]
    inside = (x >= bbox[0]) & (x <= bbox[1]) & (y >= bbox[2]) & (y <= bbox[3])
    fits = inside & (a >= max(_MIN_GAUGE_CELLS, 0.05 * cells)) & (a <= 0.75 * cells)
    cx, cy = 0.5 * (bbox[0] + bbox[1]), 0.5 * (bbox[2] + bbox[3])
    outlets, total = [], 0.0
    for k in np.lexsort((rows * ncol + cols, np.hypot(x - cx, y - cy))):  # nearest the centre first
        if not fits[k] or total + a[k] > 1.25 * cells:
            continue
        outlets.append(k)
        total += a[k]
        if total >= 0.8 * cells:
            break
    if len(outlets) < 2 or total < 0.5 * cells:
        raise ValueError(
            f"known_answer_basin: bbox {tuple(bbox)} holds no two separate catchments of about {cells} cells in all "
            f"(found {len(outlets)} outlet(s), {int(total)} cells); enlarge or move the bbox, or change cells"
        )
    if ngauge < len(outlets):
        raise ValueError(f"known_answer_basin: ngauge = {ngauge} is fewer than the {len(outlets)} separate "
                         "catchments found; ask for more gauges or fewer cells")
    # a window around the catchments (one cell of margin): everything below works on it
    o_rows, o_cols, o_area = rows[outlets], cols[outlets], a[outlets]
    domain = upstream_masks(codes, o_rows, o_cols)
    union = domain.any(axis=0)
    r_idx, c_idx = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    r0, r1 = max(0, r_idx[0] - 1), min(nrow, r_idx[-1] + 2)
    c0, c1 = max(0, c_idx[0] - 1), min(ncol, c_idx[-1] + 2)
    w_codes = np.array(codes[r0:r1, c0:c1])
    w_acc = np.where(union, acc, 0.0)[r0:r1, c0:c1]  # counts of the chosen catchments' cells only
    w_masks = domain[:, r0:r1, c0:c1]
    w_ncol = c1 - c0
    w_down = downstream(w_codes)
    w_outlets = (o_rows - r0) * w_ncol + (o_cols - c0)

    # candidates: cells just above a confluence (another stream of >= 20 % of theirs joins below)
    flat_acc = w_acc.ravel()
    candidates = []
    for g, mask in enumerate(w_masks):
        cells_g = np.flatnonzero(mask.ravel())
        cells_g = cells_g[w_down[cells_g] >= 0]
        a_g, a_below = flat_acc[cells_g], flat_acc[w_down[cells_g]]
        ok = ((a_below - a_g) >= np.maximum(3.0, 0.2 * a_g)) & (a_g >= _MIN_GAUGE_CELLS) & (a_g <= 0.6 * o_area[g])
        cand = cells_g[ok]
        candidates.append(list(cand[np.lexsort((cand, -flat_acc[cand]))]))  # largest first

    # the interior gauges, shared among the catchments in proportion to their areas
    extra = ngauge - len(outlets)
    share = o_area / o_area.sum() * extra
    quota = np.floor(share).astype(int)
    for k in np.argsort(-(share - quota), kind="stable")[: extra - int(quota.sum())]:
        quota[k] += 1
    picked = [(int(f), g) for g, f in enumerate(w_outlets)]
    upstream = {}

    def up(f: int) -> np.ndarray:
        if f not in upstream:
            upstream[f] = upstream_masks(w_codes, [f // w_ncol], [f % w_ncol])[0].ravel()
        return upstream[f]

    def acceptable(f: int, g: int) -> bool:
        for p, gp in picked:
            if max(abs(p // w_ncol - f // w_ncol), abs(p % w_ncol - f % w_ncol)) < _MIN_GAUGE_SPACING:
                return False
            similar = min(flat_acc[f], flat_acc[p]) / max(flat_acc[f], flat_acc[p]) > 0.7
            if gp == g and similar and (up(p)[f] or up(f)[p]):
                return False  # nested in (or holding) a gauge of almost the same area
        return True

    by_size = np.argsort(-o_area, kind="stable")
    for rounds in (quota, np.full(len(outlets), ngauge)):  # the quotas, then whatever is short, largest first
        for g in by_size:
            taken = 0
            for f in candidates[g]:
                if len(picked) >= ngauge or taken >= rounds[g]:
                    break
                if acceptable(int(f), int(g)):
                    picked.append((int(f), int(g)))
                    taken += 1
    if len(picked) < ngauge:
        raise ValueError(f"known_answer_basin: only {len(picked)} gauge sites of at least {_MIN_GAUGE_CELLS} km2 in the "
                         f"{len(outlets)} catchments found; ask for fewer than {ngauge} gauges or more cells")
    flat = np.array([p for p, _ in picked])
    flat = flat[np.lexsort((flat, -flat_acc[flat]))]
    window_georef = dict(georef, xmin=xmin + c0 * res, ymax=ymax - r0 * georef["yres"])
    return w_codes, window_georef, flat // w_ncol, flat % w_ncol, flat_acc[flat]


def _mesh(cells: int, ngauge: int, bbox):
    """The model mesh of the known-answer basin (gauges ``KA01``... by decreasing area)."""
    codes, georef, rows, cols, counts = _select_gauges(cells, ngauge, bbox)
    res, yres = georef["xres"], georef["yres"]
    return build_mesh(
        codes, xmin=georef["xmin"], ymax=georef["ymax"], xres=res, yres=yres, epsg=georef["epsg"],
        crs_wkt=georef["crs_wkt"], x=georef["xmin"] + (cols + 0.5) * res, y=georef["ymax"] - (rows + 0.5) * yres,
        area=counts * res * yres, code=[f"KA{i + 1:02d}" for i in range(len(rows))], max_depth=0,
    )


# --------------------------------------------------------------------------- random fields


def _gaussian_fields(rng: np.random.Generator, n: int, shape: tuple[int, int], length: float) -> np.ndarray:
    """``n`` standard Gaussian random fields on ``shape`` (float32): white noise smoothed by a
    Gaussian kernel of standard deviation ``length`` cells (FFT on a padded grid), scaled to unit variance."""
    ny, nx = shape
    pad = int(math.ceil(2.5 * length))
    big = (ny + 2 * pad, nx + 2 * pad)
    ky = np.fft.fftfreq(big[0])[:, None]
    kx = np.fft.rfftfreq(big[1])[None, :]
    kernel = np.exp(-2.0 * (math.pi * length) ** 2 * (kx**2 + ky**2))
    full = np.exp(-2.0 * (math.pi * length) ** 2 * (np.fft.fftfreq(big[1])[None, :] ** 2 + ky**2))
    std = math.sqrt(float(np.mean(full**2)))
    out = np.empty((n, ny, nx), dtype=np.float32)
    for start in range(0, n, 64):
        stop = min(n, start + 64)
        noise = rng.standard_normal((stop - start, *big))
        field = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=big)
        out[start:stop] = field[:, pad : pad + ny, pad : pad + nx] / std
    return out


def _phi(z):
    """The standard normal CDF."""
    from scipy.special import ndtr

    return ndtr(z)


# --------------------------------------------------------------------------- forcing


def _season(doy) -> np.ndarray:
    return np.cos(2.0 * np.pi * (np.asarray(doy, dtype=np.float64) - 300.0) / 365.25)


def _daily_forcing(days: pd.DatetimeIndex, shape, ynorm: np.ndarray, rng: np.random.Generator):
    """Daily rain and PET (mm per day), ``(nday, y, x)`` float64, and the wet-day flags."""
    nday = len(days)
    s = _season(days.day_of_year)
    p01, p11 = 0.20 + 0.08 * s, 0.50 + 0.15 * s
    u = rng.random(nday)
    wet = np.zeros(nday, dtype=bool)
    state = False
    for t in range(nday):
        state = u[t] < (p11[t] if state else p01[t])
        wet[t] = state
    shape_k = 0.75
    amount = rng.gamma(shape_k, (8.5 + 5.0 * s) / shape_k)
    fields = _gaussian_fields(rng, int(wet.sum()), shape, 12.0)
    orography = 0.85 + 0.30 * ynorm  # coast 0.85, inland 1.15
    rain = np.zeros((nday, *shape))
    sigma = 0.6
    rain[wet] = amount[wet, None, None] * np.exp(sigma * fields - 0.5 * sigma**2) * orography[None]
    noise = np.empty(nday)
    noise[0] = rng.standard_normal()
    innovations = rng.standard_normal(nday)
    for t in range(1, nday):
        noise[t] = 0.7 * noise[t - 1] + math.sqrt(1 - 0.49) * innovations[t]
    pet_day = (2.4 + 1.95 * np.sin(2.0 * np.pi * (days.day_of_year.values - 105.0) / 365.25)) * (1.0 + 0.06 * noise)
    pet_day = np.clip(pet_day * np.where(wet, 0.75, 1.0), 0.05, None)
    pet = pet_day[:, None, None] * (1.05 - 0.10 * ynorm)[None]
    return rain, pet, wet


def _to_steps(daily: np.ndarray, times: pd.DatetimeIndex, days: pd.DatetimeIndex, dt: float, weights: np.ndarray):
    """Spread daily depths over the steps of each day: ``daily[day] * weights[step]``."""
    if dt >= 86400:
        return daily
    day_of_step = (times - pd.Timedelta(seconds=dt)).floor("D")
    index = days.get_indexer(day_of_step)
    return daily[index] * weights[:, None, None]


def _pet_weights(times: pd.DatetimeIndex, dt: float) -> np.ndarray:
    """Share of its day's PET in each step: smash's hourly profile summed over the step's hours."""
    hours = int(round(dt / 3600.0))
    end = np.asarray(times.hour)
    return np.array([sum(float(PET_HOURLY_PROFILE[(h - k) % 24]) for k in range(hours)) for h in end])


def _rain_weights(times: pd.DatetimeIndex, days: pd.DatetimeIndex, dt: float, rng: np.random.Generator) -> np.ndarray:
    """Share of its day's rain in each step: Dirichlet(0.4) weights drawn once per day."""
    per_day = int(round(86400 / dt))
    w = rng.dirichlet(np.full(per_day, 0.4), size=len(days))
    day_of_step = (times - pd.Timedelta(seconds=dt)).floor("D")
    index = days.get_indexer(day_of_step)
    position = ((times - pd.Timedelta(seconds=dt)) - day_of_step) // pd.Timedelta(seconds=dt)
    return w[index, np.asarray(position, dtype=int)]


# --------------------------------------------------------------------------- parameters


def true_parameter_maps(slope, soil_depth, dt: float, routing: str = "lr") -> dict[str, np.ndarray]:
    """The true GR4 (and routing) parameter maps from the descriptors (see the module docstring).

    Parameters
    ----------
    slope, soil_depth
        Descriptor maps, degree and m (any shape).
    dt
        Time step, s (``kexc`` is per step).
    routing
        ``lr``, ``kw``, ``lag0`` or ``zero``: which routing parameters to add.

    Returns
    -------
    dict
        ``cp``, ``ct`` (mm), ``kexc`` (mm per step), and ``llr`` (min) or ``akw``, ``bkw`` (1),
        float64 arrays of the descriptors' shape.
    """
    u = np.clip((np.asarray(slope, dtype=np.float64) - 2.0) / 23.0, 0.0, 1.0)
    v = np.clip((np.asarray(soil_depth, dtype=np.float64) - 0.3) / 1.7, 0.0, 1.0)
    maps = {
        "cp": 120.0 + 480.0 * v,
        "ct": 40.0 + 260.0 * (1.0 - u),
        "kexc": -(1.0 + 3.0 * (1.0 - v)) * dt / 86400.0,
    }
    if routing == "lr":
        maps["llr"] = 60.0 + 540.0 * (1.0 - u)
    elif routing == "kw":
        maps["akw"] = 2.0 + 6.0 * (1.0 - u)
        maps["bkw"] = np.full_like(u, 0.6)
    return maps


def hidden_parameter_map(truth: str, soil_depth, dt: float) -> np.ndarray | None:
    """The hidden process's own map (see the module docstring): for ``"exchange"`` the loss rate
    ``a = (0.8 + 0.8 (1 - v)) dt/86400`` mm per step, for ``"slow_store"`` the share
    ``phi = 0.15 + 0.3 v`` of the water bound for the transfer store that the slow store takes
    (``v = (soil_depth - 0.3) / 1.7``); None for ``"gr4"``."""
    v = np.clip((np.asarray(soil_depth, dtype=np.float64) - 0.3) / 1.7, 0.0, 1.0)
    if truth == "exchange":
        return (0.8 + 0.8 * (1.0 - v)) * dt / 86400.0
    if truth == "slow_store":
        return 0.15 + 0.3 * v
    return None


def hidden_loss(rate, ht):
    """The truth ``"exchange"``'s groundwater loss ``-a ht / (ht + 0.25)`` (mm per step, ``a`` in mm per step)."""
    ht = jnp.asarray(ht)
    return -rate * ht / (ht + _LOSS_HALF)


# --------------------------------------------------------------------------- the truth model


@functools.partial(jax.jit, static_argnames=("routing", "dt"))
def _truth_arrays(params, states, forcing, plan, hidden, *, routing: str, dt: float):
    """GR4 with the hidden processes on every active cell (``lax.scan`` over time), then the routing.

    ``hidden`` holds ``(nac,)`` maps: ``loss_rate`` (mm per step; the exchange truth's ``a``),
    ``slow_share`` (the slow store's ``phi``) and ``slow0`` (its initial content, mm). The
    truth ``"exchange"`` has ``slow_share = slow0 = 0``, ``"slow_store"`` has ``loss_rate = 0``,
    and all three zero give GR4 itself (the same values as :func:`hybridhydro.simulate`): one
    compiled function for every truth. Returns the gauge discharge (time, ng) m3/s and the
    hidden flux (time, nac) mm per step.
    """
    from .routing import ROUTING_PARAMETERS, initial_routing_state, route_series
    from .structures import clean_forcing, exchange_power, interception, percolation_constant, power_store, production

    beta = percolation_constant(dt)
    cell_area = jnp.asarray(plan.cell_area)
    decay = 1.0 - math.exp(-dt / (_SLOW_DAYS * 86400.0))

    def step(carry, x):
        h, slow = carry
        missing, p, e = clean_forcing(x["prcp"], x["pet"])
        ei, pn, en, hi = interception(p, e, params["ci"], h["hi"])
        pr, perc, ps, es, hp, _ = production(pn, en, params["cp"], h["hp"], beta)
        zero = jnp.zeros_like(pr)
        pr, perc = jnp.where(missing, zero, pr), jnp.where(missing, zero, perc)
        hp = jnp.where(missing, h["hp"], hp)
        lexc = jnp.where(missing, zero, exchange_power(params["kexc"], h["ht"]))
        runoff = pr + perc
        # the slow aquifer: a share of the water bound for the transfer store, released over months
        intake = hidden["slow_share"] * 0.9 * runoff
        stored = slow + intake
        release = decay * stored
        # the saturating groundwater loss, where GR4's exchange enters
        loss = jnp.where(missing, zero, hidden_loss(hidden["loss_rate"], h["ht"]))
        prr, prd = 0.9 * runoff - intake + lexc + loss, 0.1 * runoff
        direct = jnp.maximum(0.0, prd + lexc + loss)
        qd = direct + release
        moved = loss + (direct - jnp.maximum(0.0, prd + lexc)) + release - intake
        rain_missing = ~(jnp.asarray(x["prcp"]) >= 0.0)
        qr, ht, _, _ = power_store(prr, params["ct"], h["ht"], 5.0, rain_missing)
        qt = (qr + qd) * 1e-3 * cell_area / dt
        return ({"hi": hi, "hp": hp, "ht": ht}, stored - release), (qt, moved)

    h0 = {k: states[k] for k in ("hi", "hp", "ht")}
    (_, _), (qt, moved) = jax.lax.scan(step, (h0, hidden["slow0"]), {"prcp": forcing["prcp"], "pet": forcing["pet"]})
    r_state = initial_routing_state(routing, plan.nac, hlr=states.get("hlr"), dtype=qt.dtype)
    routing_params = {k: params[k] for k in ROUTING_PARAMETERS[routing]}
    discharge, _ = route_series(routing, plan, routing_params, qt, r_state, dt)
    return discharge[:, jnp.asarray(plan.gauge_index)], moved


def _run_truth(basin: xr.Dataset, structure: str, maps: dict, truth: str, hidden_map: np.ndarray | None):
    """The truth's gauge discharge (gauge, time) m3/s and hidden flux (time, y, x) mm per step.
    ``truth``: ``"exchange"``, ``"slow_store"``, or ``"none"`` (GR4 assembled here, no process)."""
    from .model import prepare_run

    inputs = prepare_run(basin, structure, maps)
    plan = inputs.labels.plan
    shape = (basin.sizes["y"], basin.sizes["x"])
    zero = np.zeros(inputs.nac, np.float32)
    cells = zero if hidden_map is None else plan.to_cells(np.broadcast_to(hidden_map, shape)).astype(np.float32)
    hidden = {
        "loss_rate": cells if truth == "exchange" else zero,
        "slow_share": cells if truth == "slow_store" else zero,
        "slow0": np.full(inputs.nac, _SLOW_START_MM if truth == "slow_store" else 0.0, np.float32),
    }
    q, moved = _truth_arrays(
        inputs.parameters, inputs.initial_states, inputs.forcing, inputs.plan,
        {k: jnp.asarray(v) for k, v in hidden.items()}, routing=structure.rsplit("-", 1)[1], dt=float(inputs.dt),
    )
    return np.asarray(q, dtype=np.float64).T, inputs.labels.to_grid(np.asarray(moved), fill=np.nan)


# --------------------------------------------------------------------------- the basin


def nse(simulated, observed) -> np.ndarray:
    """Nash-Sutcliffe efficiency along the last axis (NaN-aware)."""
    sim, obs = np.asarray(simulated, dtype=np.float64), np.asarray(observed, dtype=np.float64)
    ok = np.isfinite(sim) & np.isfinite(obs)
    sim, obs = np.where(ok, sim, np.nan), np.where(ok, obs, np.nan)
    mean = np.nanmean(obs, axis=-1, keepdims=True)
    return 1.0 - np.nansum((sim - obs) ** 2, axis=-1) / np.nansum((obs - mean) ** 2, axis=-1)


def _check_arguments(cells, ngauge, years, dt, truth, noise, routing, bbox):
    if isinstance(cells, bool) or int(cells) != cells or not 50 <= cells <= 5000:
        raise ValueError(f"known_answer_basin: cells must be a whole number of cells in [50, 5000], got {cells!r}")
    if isinstance(ngauge, bool) or int(ngauge) != ngauge or not 2 <= ngauge <= 40:
        raise ValueError(f"known_answer_basin: ngauge must be a whole number in [2, 40], got {ngauge!r}")
    if not (isinstance(years, (int, float)) and not isinstance(years, bool) and 0.05 <= years <= 30):
        raise ValueError(f"known_answer_basin: years must lie in [0.05, 30], got {years!r}")
    if dt not in (86400, 10800, 86400.0, 10800.0):
        raise ValueError(f"known_answer_basin: dt must be 86400 (daily) or 10800 (3-hourly) s, got {dt!r}")
    if truth not in TRUTHS:
        raise ValueError(f"known_answer_basin: truth {truth!r} is not one of {', '.join(TRUTHS)}")
    if not (isinstance(noise, (int, float)) and not isinstance(noise, bool) and 0.0 <= noise <= 1.0):
        raise ValueError(f"known_answer_basin: noise (the lognormal sigma of qobs) must lie in [0, 1], got {noise!r}")
    if routing not in _ROUTINGS:
        raise ValueError(f"known_answer_basin: routing {routing!r} is not one of {', '.join(_ROUTINGS)}")
    if bbox is not None:
        box = tuple(float(b) for b in bbox)
        if len(box) != 4 or not (box[0] < box[1] and box[2] < box[3]):
            raise ValueError(f"known_answer_basin: bbox must be (xmin, xmax, ymin, ymax) in Lambert-93 m, got {bbox!r}")


def known_answer_basin(
    *,
    cells: int = 600,
    ngauge: int = 8,
    years: float = 3,
    dt: float = 86400,
    truth: str = "exchange",
    noise: float = 0.05,
    seed: int = 0,
    start: str = "2015-01-01",
    routing: str = "lr",
    bbox=None,
) -> xr.Dataset:
    """A basin whose discharge comes from a known model: GR4 with true maps plus a hidden process.

    See the module docstring (:mod:`hybridhydro.known_answer`) for every equation.

    Parameters
    ----------
    cells
        About how many active cells (1 km² each): the catchments found hold 0.8 to 1.25 times it.
    ngauge
        Number of gauges: the outlets of the separate catchments, and gauges nested in them.
    years
        Length of the series, years of 365.25 days.
    dt
        Time step, s: 86400 (daily) or 10800 (3-hourly).
    truth
        ``"exchange"`` (a saturating groundwater loss), ``"slow_store"`` (a slow aquifer)
        or ``"gr4"`` (GR4 itself, nothing hidden).
    noise
        Standard deviation of the lognormal observation error: ``qobs = q_true exp(noise eps)``.
    seed
        Seed of the forcing, descriptors and noise (the grid does not depend on it).
    start
        Start of the series; the first step ends at ``start + dt``.
    routing
        The routing of the truth and of ``q_gr4``: ``lr``, ``kw``, ``lag0`` or ``zero``.
    bbox
        ``(xmin, xmax, ymin, ymax)``, Lambert-93 metres: where the outlets are looked for;
        default :data:`DEFAULT_BBOX`.

    Returns
    -------
    xarray.Dataset
        A basin (:func:`hybridhydro.check_basin`): ``prcp``, ``pet`` (time, y, x) mm per step,
        ``qobs`` (gauge, time) m3/s, ``descriptors`` (slope in degree, soil_depth in m), the
        mesh; and the answer: ``q_true`` and ``q_gr4`` (gauge, time) m3/s, ``hidden_flux``
        (time, y, x) mm per step, ``true_<parameter>`` (y, x). Attributes
        ``known_answer_truth``, ``known_answer_process`` (a sentence), ``noise``, ``seed``,
        ``known_answer_routing``, ``known_answer_nse_gr4`` (mean over the gauges of the NSE of
        ``q_gr4`` against ``q_true``).

    Raises
    ------
    ValueError
        An argument out of its range (the message names it), or a bbox without two separate
        catchments of the size asked for.
    """
    _check_arguments(cells, ngauge, years, dt, truth, noise, routing, bbox)
    from .simulate import simulate

    dt = float(dt)
    bbox = DEFAULT_BBOX if bbox is None else tuple(float(b) for b in bbox)
    mesh = _mesh(int(cells), int(ngauge), bbox)
    ds = mesh.to_dataset()
    ny, nx = mesh.nrow, mesh.ncol
    rng = np.random.default_rng(seed)

    start_ts = parse_date(start, f"known_answer_basin: start={start!r}")
    ntime = int(round(years * 365.25 * 86400.0 / dt))
    times = pd.DatetimeIndex(start_ts + pd.to_timedelta(np.arange(1, ntime + 1) * dt, unit="s"))
    step = pd.Timedelta(seconds=dt)
    days = pd.date_range((times[0] - step).floor("D"), (times[-1] - step).floor("D"), freq="D")  # the steps' days
    yc = ds["y"].values
    ynorm = np.broadcast_to(((yc - yc.min()) / max(np.ptp(yc), 1.0))[:, None], (ny, nx))
    rain_d, pet_d, _ = _daily_forcing(days, (ny, nx), ynorm, rng)
    if dt < 86400:
        rain = _to_steps(rain_d, times, days, dt, _rain_weights(times, days, dt, rng))
        pet = _to_steps(pet_d, times, days, dt, _pet_weights(times, dt))
    else:
        rain, pet = rain_d, pet_d
    z = _gaussian_fields(rng, 2, (ny, nx), 15.0)
    on = mesh.active_cell
    z = (z - z[:, on].mean(axis=1)[:, None, None]) / z[:, on].std(axis=1)[:, None, None]  # standard over the domain
    slope = (2.0 + 23.0 * _phi(z[0])).astype(np.float32)
    soil = (0.3 + 1.7 * _phi(z[1])).astype(np.float32)

    active = mesh.active_cell
    ds["prcp"] = (("time", "y", "x"), rain.astype(np.float32), {"units": "mm"})
    ds["pet"] = (("time", "y", "x"), pet.astype(np.float32), {"units": "mm"})
    ds["descriptors"] = (("descriptor", "y", "x"), np.stack([slope, soil]))
    ds = ds.assign_coords(time=("time", times.values), descriptor=("descriptor", list(DESCRIPTOR_UNITS)))
    ds["descriptors"].attrs["descriptor_units"] = "; ".join(f"{k}: {v}" for k, v in DESCRIPTOR_UNITS.items())
    masks = upstream_masks(mesh.flwdir, mesh.gauge_row, mesh.gauge_col) & active[None]
    mean_attrs = "basin-mean {} depth over the gauge's upstream active cells"
    ds["mean_prcp"] = (("gauge", "time"), catchment_means(ds["prcp"].values, masks),
                       {"units": "mm", "long_name": mean_attrs.format("precipitation")})
    ds["mean_pet"] = (("gauge", "time"), catchment_means(ds["pet"].values, masks),
                      {"units": "mm", "long_name": mean_attrs.format("potential evapotranspiration")})
    ds["qobs"] = (("gauge", "time"), np.full((mesh.ng, ntime), np.nan, np.float32))
    ds.attrs.update(name="known_answer", dt=dt, start_time=start_ts.isoformat(), end_time=times[-1].isoformat())
    annotate(ds)

    maps = true_parameter_maps(slope, soil, dt, routing)
    structure = f"gr4-{routing}"
    q_gr4 = simulate(ds, structure, maps)["q"].values.astype(np.float64)
    hidden_map = hidden_parameter_map(truth, soil, dt)
    if truth == "gr4":
        q_true, hidden = q_gr4.copy(), np.where(active[None], 0.0, np.nan) * np.ones((ntime, 1, 1))
    else:
        q_true, hidden = _run_truth(ds, structure, maps, truth, hidden_map)
        q_true = np.maximum(q_true, 0.0)  # float32 round-off of the routing where a river runs dry
    eps = rng.standard_normal(q_true.shape)
    qobs = q_true * np.exp(noise * eps)

    ds["qobs"] = (("gauge", "time"), qobs.astype(np.float32), dict(ds["qobs"].attrs))
    q_attrs = dict(units="m3 s-1", cell_methods="time: mean")
    ds["q_true"] = (("gauge", "time"), q_true.astype(np.float32),
                    {**q_attrs, "long_name": f"true discharge (truth {truth!r}) before observation noise"})
    ds["q_gr4"] = (("gauge", "time"), q_gr4.astype(np.float32),
                   {**q_attrs, "long_name": f"discharge of {structure} with the true maps, no hidden process"})
    ds["hidden_flux"] = (("time", "y", "x"), hidden.astype(np.float32),
                         {"units": "mm", "cell_methods": "time: sum",
                          "long_name": "net water the hidden process adds to the cell's runoff (mm over the step, "
                                       "negative removes water)"})
    from .io import step_units
    from .structures import PARAMETER_UNITS

    for name, value in maps.items():
        ds[f"true_{name}"] = (("y", "x"), np.where(active, value, np.nan).astype(np.float32),
                              {"units": step_units(PARAMETER_UNITS[name], dt), "long_name": f"true parameter {name}"})
    if hidden_map is not None:
        name, units, what = {
            "exchange": ("hidden_loss_rate", step_units("mm dt-1", dt),
                         "rate a of the hidden groundwater loss -a ht / (ht + 0.25)"),
            "slow_store": ("hidden_slow_share", "1", "share of the routed runoff the hidden slow store takes"),
        }[truth]
        ds[name] = (("y", "x"), np.where(active, hidden_map, np.nan).astype(np.float32),
                    {"units": units, "long_name": f"true {what}"})
    score = nse(q_gr4, q_true)
    ds.attrs.update(
        known_answer_truth=truth,
        known_answer_process=HIDDEN_PROCESSES[truth],
        known_answer_routing=routing,
        known_answer_nse_gr4=float(np.mean(score)),
        noise=float(noise),
        seed=int(seed),
        source=(f"hybridhydro.known_answer_basin(cells={cells}, ngauge={ngauge}, years={years}, dt={dt:g}, "
                f"truth={truth!r}, noise={noise}, seed={seed}, start={start!r}, routing={routing!r}, bbox={bbox})"),
        flwdir_file="France_flwdir.tif (hydro-smash)",
    )
    check_basin(ds, where="known_answer_basin")
    return ds
