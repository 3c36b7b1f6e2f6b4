"""A synthetic basin: a few hundred cells with known flow directions, rain, PET and discharge.

It follows the basin schema (:mod:`hybridhydro.basin`) exactly, so every stage that runs on
Cance runs on it too, in seconds: the tiny CI parameter file (``params/ci.yaml``) and the fast
tests use it.

How it is made
--------------
* **Flow directions.** Two drainage trees grow at once, by random frontier growth, over a
  ``nrow x ncol`` grid framed by a one-cell no-data border: the main catchment drains south
  through an outlet on the bottom edge, a neighbouring one drains west. Every cell points to
  the cell it was reached from, so the D8 grid is acyclic by construction and the main
  catchment has an irregular outline (its bounding box contains cells of the other tree, which
  the mesh leaves inactive).
* **Gauges.** Gauge 0 is the main outlet; the others are cells of the main catchment whose
  upstream area lies between 15 % and 60 % of the whole, so they are nested.
* **Forcing.** Rain comes in storms (a few steps long) with a spatial gradient and a moving
  Gaussian core; PET follows the daily profile smash uses to spread daily PET over the hours.
* **Discharge.** ``qobs`` is the upstream effective rain routed through a linear reservoir
  (a hydrologically plausible signal for I/O, metric and plotting tests). Stages that need
  observations consistent with a given model structure make them with the model itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .basin import annotate, check_basin
from .dates import parse_date
from .io import PET_HOURLY_PROFILE
from .mesh import DCOL, DROW, build_mesh, catchment_means, upstream_masks

# D8 offsets (drow, dcol) of the downstream neighbour, smash coding 1..8 (N, NE, E, ..., NW).
_D8_OFFSETS = {code: (int(DROW[code]), int(DCOL[code])) for code in range(1, 9)}
_CODE_OF_OFFSET = {v: k for k, v in _D8_OFFSETS.items()}


def _grow_trees(nrow: int, ncol: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Grow two drainage trees over a bordered grid.

    Returns the D8 codes of the ``(nrow + 2, ncol + 2)`` raster (0 on the border), the tree
    label of each cell (0 main, 1 neighbour, -1 border) and the main tree's cells in the order
    they were reached (outlet first: a topological order from downstream to upstream).
    """
    shape = (nrow + 2, ncol + 2)
    codes = np.zeros(shape, dtype=np.int8)
    label = -np.ones(shape, dtype=np.int8)
    main_outlet = (nrow, 1 + ncol // 2)
    side_outlet = (1 + nrow // 4, 1)
    codes[main_outlet] = 5  # drains south, into the no-data border
    codes[side_outlet] = 7  # drains west
    label[main_outlet], label[side_outlet] = 0, 1
    frontier = [main_outlet, side_outlet]
    order: list[tuple[int, int]] = [main_outlet]
    offsets = list(_D8_OFFSETS.values())
    while frontier:
        # The side tree grows more slowly, so the main catchment takes most of the grid.
        weights = np.array([1.0 if label[c] == 0 else 0.35 for c in frontier])
        i = int(rng.choice(len(frontier), p=weights / weights.sum()))
        r, c = frontier[i]
        grown = False
        for k in rng.permutation(len(offsets)):
            dr, dc = offsets[k]
            rr, cc = r + dr, c + dc
            if 1 <= rr <= nrow and 1 <= cc <= ncol and label[rr, cc] < 0:
                codes[rr, cc] = _CODE_OF_OFFSET[(-dr, -dc)]  # points back to (r, c)
                label[rr, cc] = label[r, c]
                frontier.append((rr, cc))
                if label[r, c] == 0:
                    order.append((rr, cc))
                grown = True
                break
        if not grown:
            frontier.pop(i)
    return codes, label, order


def _upstream_counts(codes: np.ndarray, order: list[tuple[int, int]]) -> np.ndarray:
    """Number of cells draining through each cell of the main tree (the cell included)."""
    counts = np.zeros(codes.shape, dtype=np.int64)
    for r, c in reversed(order):  # upstream cells come later in ``order``
        counts[r, c] += 1
        dr, dc = _D8_OFFSETS[int(codes[r, c])]
        down = (r + dr, c + dc)
        if codes[down] > 0:
            counts[down] += counts[r, c]
    return counts


def _storm_rain(ny: int, nx: int, times: pd.DatetimeIndex, dt: float, rng: np.random.Generator) -> np.ndarray:
    """Rain in mm per step: storms of a few steps, a west-east gradient and a moving core."""
    ntime = len(times)
    rain = np.zeros((ntime, ny, nx), dtype=np.float64)
    yy, xx = np.meshgrid(np.linspace(0, 1, ny), np.linspace(0, 1, nx), indexing="ij")
    steps_per_day = max(1, round(86400 / dt))
    nstorm = max(1, ntime // (2 * steps_per_day) + 1)
    for _ in range(nstorm):
        t0 = int(rng.integers(0, max(1, ntime - 2)))
        duration = int(rng.integers(2, 3 + max(2, steps_per_day // 3)))
        peak = rng.uniform(2.0, 12.0) * min(1.0, dt / 3600.0) ** 0.3  # mm per step at the core
        cy, cx, vx = rng.uniform(0.2, 0.8), rng.uniform(0.0, 0.4), rng.uniform(0.05, 0.2)
        for k in range(duration):
            t = t0 + k
            if t >= ntime:
                break
            core = np.exp(-((yy - cy) ** 2 + (xx - cx - vx * k) ** 2) / 0.08)
            shape = np.sin(np.pi * (k + 0.5) / duration)
            rain[t] += peak * shape * (0.3 + 0.5 * xx + core)
    return rain


def _hourly_pet(times: pd.DatetimeIndex, dt: float, daily_pet_mm: np.ndarray) -> np.ndarray:
    """PET in mm per step from a daily value, spread with the hourly profile (dt <= 1 day)."""
    if dt >= 86400:
        return daily_pet_mm * np.ones(len(times))
    per_hour = PET_HOURLY_PROFILE[np.asarray(times.hour)] * daily_pet_mm  # step-end hour, as smash
    return per_hour * (dt / 3600.0)


def _reservoir_discharge(rain_mm: np.ndarray, area_m2: float, dt: float, k_steps: float, runoff_coef: float) -> np.ndarray:
    """Discharge in m3/s of a linear reservoir fed by ``runoff_coef`` times the basin rain (mm per step)."""
    storage = 0.0  # mm over the basin
    q_mm = np.empty_like(rain_mm)
    decay = np.exp(-1.0 / k_steps)
    for t, p in enumerate(rain_mm):
        storage = storage * decay + runoff_coef * p
        q_mm[t] = storage * (1.0 - decay) + 0.01  # small baseflow, mm per step
    return q_mm * 1e-3 * area_m2 / dt


def synthetic_basin(
    nrow: int = 16,
    ncol: int = 16,
    ntime: int = 240,
    dt: float = 3600,
    seed: int = 0,
    ngauge: int = 2,
    start: str = "2020-01-01",
    qobs: bool = True,
    missing_fraction: float = 0.0,
    resolution: float = 1000.0,
    epsg: int = 2154,
) -> xr.Dataset:
    """Make a synthetic basin Dataset (schema of :mod:`hybridhydro.basin`).

    Parameters
    ----------
    nrow, ncol
        Size of the flow-direction grid in cells (at least 4 x 4). The mesh is cropped to the
        main catchment, so the basin is usually a little smaller.
    ntime
        Number of time steps.
    dt
        Time step in seconds (divides a day, or is one day).
    seed
        Seed of every random choice: the same seed gives the same basin.
    ngauge
        Number of gauges: the outlet plus ``ngauge - 1`` nested gauges.
    start
        Start of the simulation window; the first step ends at ``start + dt``.
    qobs
        Make observed discharge (otherwise ``qobs`` is all NaN).
    missing_fraction
        Share of observed values, in [0, 0.5], replaced by NaN at random (to exercise masking).
    resolution
        Cell size in metres.
    epsg
        EPSG code written as the CRS (a projected CRS in metres; default Lambert-93).

    Returns
    -------
    xarray.Dataset
        prcp, pet (time, y, x) in mm per step, qobs (gauge, time) in m3/s, descriptors
        ``slope`` (degrees) and ``dd`` (drainage density, km-1), and the mesh fields.
    """
    if nrow < 4 or ncol < 4:
        raise ValueError(f"synthetic_basin: nrow and ncol must be at least 4, got nrow={nrow}, ncol={ncol}")
    if ntime < 1:
        raise ValueError(f"synthetic_basin: ntime must be at least 1, got {ntime}")
    if dt <= 0 or (86400 % dt != 0 and dt != 86400):
        raise ValueError(f"synthetic_basin: dt must be a positive divisor of 86400 s, got {dt}")
    if not 0 <= missing_fraction <= 0.5:
        raise ValueError(f"synthetic_basin: missing_fraction must lie in [0, 0.5], got {missing_fraction}")
    if ngauge < 1:
        raise ValueError(f"synthetic_basin: ngauge must be at least 1, got {ngauge}")
    rng = np.random.default_rng(seed)

    codes, label, order = _grow_trees(nrow, ncol, rng)
    counts = _upstream_counts(codes, order)
    total = counts[order[0]]
    candidates = [rc for rc in order[1:] if 0.15 * total <= counts[rc] <= 0.6 * total]
    if len(candidates) < ngauge - 1:
        raise ValueError(
            f"synthetic_basin: a {nrow} x {ncol} grid (seed {seed}) has only {len(candidates)} cells fit for "
            f"{ngauge - 1} nested gauges; ask for fewer gauges or a larger grid"
        )
    picks = [order[0]] + [candidates[i] for i in sorted(rng.choice(len(candidates), ngauge - 1, replace=False))]

    xmin, ymax = 700_000.0, 6_500_000.0  # raster corner, Lambert-93 metres
    rows = np.array([p[0] for p in picks])
    cols = np.array([p[1] for p in picks])
    gx = xmin + (cols + 0.5) * resolution
    gy = ymax - (rows + 0.5) * resolution
    area = np.array([counts[p] for p in picks], dtype=np.float64) * resolution**2
    mesh = build_mesh(
        codes,
        xmin=xmin,
        ymax=ymax,
        xres=resolution,
        yres=resolution,
        epsg=epsg,
        x=gx,
        y=gy,
        area=area,
        code=[f"SYN{i:03d}" for i in range(ngauge)],
    )
    ds = mesh.to_dataset()
    ny, nx = mesh.nrow, mesh.ncol

    start_ts = parse_date(start, f"synthetic_basin: start={start!r}")
    times = pd.DatetimeIndex(start_ts + pd.to_timedelta(np.arange(1, ntime + 1) * dt, unit="s"))
    rain = _storm_rain(ny, nx, times, dt, rng)
    daily_pet = 2.0 + 2.0 * np.sin(2 * np.pi * (times.day_of_year.values - 80) / 365.25)  # mm/day
    pet_t = _hourly_pet(times, dt, np.clip(daily_pet, 0.2, None))
    pet = pet_t[:, None, None] * np.ones((1, ny, nx)) * (1.0 + 0.1 * np.linspace(-1, 1, nx))[None, None, :]

    masks = upstream_masks(mesh.flwdir, mesh.gauge_row, mesh.gauge_col) & mesh.active_cell[None]
    rain32, pet32 = rain.astype(np.float32), pet.astype(np.float32)
    mean_prcp, mean_pet = catchment_means(rain32, masks), catchment_means(pet32, masks)
    q = np.full((ngauge, ntime), np.nan)
    if qobs:
        for g in range(ngauge):
            basin_rain = mean_prcp[g].astype(np.float64)
            q[g] = _reservoir_discharge(basin_rain, float(mesh.area_dln[g]), dt, k_steps=12.0 * 3600 / dt, runoff_coef=0.35)
        if missing_fraction > 0:
            q[rng.random(q.shape) < missing_fraction] = np.nan

    yy, xx = np.meshgrid(np.linspace(0, 1, ny), np.linspace(0, 1, nx), indexing="ij")
    slope = 2.0 + 18.0 * (0.5 + 0.5 * np.sin(3 * xx + 2 * yy + rng.uniform(0, np.pi)))
    dd = 0.5 + 2.5 * (0.5 + 0.5 * np.cos(4 * yy - xx + rng.uniform(0, np.pi)))

    ds["prcp"] = (("time", "y", "x"), rain32)
    ds["pet"] = (("time", "y", "x"), pet32)
    mean_attrs = "basin-mean {} depth over the gauge's upstream active cells"
    ds["mean_prcp"] = (("gauge", "time"), mean_prcp, {"units": "mm", "long_name": mean_attrs.format("precipitation")})
    ds["mean_pet"] = (("gauge", "time"), mean_pet, {"units": "mm", "long_name": mean_attrs.format("potential evapotranspiration")})
    ds["qobs"] = (("gauge", "time"), q.astype(np.float32))
    ds["descriptors"] = (("descriptor", "y", "x"), np.stack([slope, dd]).astype(np.float32))
    ds = ds.assign_coords(time=("time", times.values), descriptor=("descriptor", ["slope", "dd"]))
    ds["descriptors"].attrs["descriptor_units"] = "slope: degree; dd: km-1"
    ds.attrs.update(
        {
            "name": "synthetic",
            "dt": float(dt),
            "start_time": start_ts.isoformat(),
            "end_time": times[-1].isoformat(),
            "source": f"hybridhydro.synthetic_basin(nrow={nrow}, ncol={ncol}, ntime={ntime}, dt={dt}, seed={seed}, ngauge={ngauge})",
        }
    )
    annotate(ds)
    check_basin(ds, where="synthetic_basin")
    return ds

