"""Catchments of gauges on a D8 grid, and catchment means of gridded fields over them."""

from __future__ import annotations

import numpy as np

from ._d8 import downstream

def upstream_masks(flwdir: np.ndarray, rows, cols) -> np.ndarray:
    """Cells draining through each gauge cell (the cell included), ``(ngauge, nrow, ncol)`` bool.

    A breadth-first walk up the D8 tree from each gauge, vectorised per level with a CSR table
    of upstream neighbours; the cost is the size of the masks. Cycles cannot trap it.
    """
    nrow, ncol = flwdir.shape
    n = nrow * ncol
    down = downstream(np.asarray(flwdir))
    src = np.flatnonzero(down >= 0)
    order = np.argsort(down[src], kind="stable")
    src = src[order]  # upstream cells grouped by their downstream cell
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(down[src], minlength=n), out=indptr[1:])
    masks = np.zeros((len(rows), n), dtype=bool)
    for g, (r, c) in enumerate(zip(rows, cols)):
        seen = masks[g]
        front = np.array([int(r) * ncol + int(c)])
        seen[front] = True
        while front.size:
            starts, stops = indptr[front], indptr[front + 1]
            counts = stops - starts
            if not counts.sum():
                break
            # concatenate the ranges [starts[i], stops[i]) without a Python loop
            pos = np.repeat(stops - counts.cumsum(), counts) + np.arange(counts.sum())
            up = src[pos]
            up = up[~seen[up]]
            seen[up] = True
            front = up
    return masks.reshape(len(rows), nrow, ncol)


def catchment_means(field: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """NaN-aware mean of ``field`` ``(time, y, x)`` over each mask: ``(ngauge, time)`` float32.

    As smash computes it: a float32 running sum over the valid cells taken in column-major
    order, divided by their count (``NaN`` where a gauge has no valid cell at a step).
    """
    ntime, ng, ncell = field.shape[0], masks.shape[0], field.shape[1] * field.shape[2]
    out = np.full((ng, ntime), np.nan, dtype=np.float32)
    if ng == 0:
        return out
    flat = np.ascontiguousarray(field.transpose(0, 2, 1)).reshape(ntime, ncell)  # column-major cell order
    for g, mask in enumerate(masks.transpose(0, 2, 1).reshape(ng, ncell)):
        sub = flat[:, mask].astype(np.float32)
        valid = ~np.isnan(sub)
        if not sub.size:
            continue
        total = np.cumsum(np.where(valid, sub, np.float32(0)), axis=1, dtype=np.float32)[:, -1]
        count = valid.sum(axis=1).astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[g] = np.where(count > 0, total / count, np.nan)
    return out
