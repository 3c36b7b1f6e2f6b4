"""Physical descriptors: one raster per descriptor name (``<name>.tif``), raw values."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._rasters import Grid, RasterReader, warn_geometry


def find_descriptor(directory: Path, name: str) -> Path:
    """``<directory>/<name>.tif`` (or ``.tiff``, or the first ``**/<name>.tif*`` below it)."""
    for suffix in (".tif", ".tiff", ".TIF", ".TIFF"):
        if (directory / f"{name}{suffix}").is_file():
            return directory / f"{name}{suffix}"
    matches = sorted(directory.rglob(f"{name}.tif*")) if directory.is_dir() else []
    if matches:
        return matches[0]
    raise FileNotFoundError(
        f"descriptor {name!r}: no raster {directory / (name + '.tif')}; add it, or remove {name!r} from "
        "'descriptor_name' in the setup YAML"
    )


def list_descriptors(directory: Path, where: str) -> list[str]:
    """The names of every ``<name>.tif`` directly in ``directory``, sorted; an error if there is none."""
    names = sorted({p.stem for p in directory.glob("*") if p.suffix.lower() in (".tif", ".tiff")}) \
        if directory.is_dir() else []
    if not names:
        raise FileNotFoundError(
            f"read_descriptor: true in {where} names no descriptor (no descriptor_name key) and {directory} holds no "
            "<name>.tif to read; add the rasters there, list them in descriptor_name, or set read_descriptor: false"
        )
    return names


def check_cover(values: np.ndarray, name: str, source, active_cell: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """Refuse a descriptor map ``(y, x)`` with no value (NaN) on an active cell, naming a cell and the source."""
    bad = np.isnan(values) & active_cell
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"descriptor {name!r} ({source}) has no value on {int(bad.sum())} active cell(s), e.g. row {r}, "
            f"col {c} (x = {x[c]:g}, y = {y[r]:g}); fill the raster there (no-data or outside its extent)"
        )


def read_descriptors(
    directory: Path, names: list[str], grid: Grid, active_cell: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, list[Path]]:
    """Descriptors ``(descriptor, y, x)`` float32, raw values, ``NaN`` for no data off the active cells.

    Raises
    ------
    ValueError
        When a descriptor has no value on an active cell (names the descriptor, the file and a cell).
    """
    if not directory.is_dir():
        raise FileNotFoundError(
            f"descriptors: directory {directory} does not exist; create it or set the 'descriptor_directory' key "
            "of the setup YAML (or read_descriptor: false)"
        )
    out = np.empty((len(names), grid.nrow, grid.ncol), dtype=np.float32)
    paths = []
    with RasterReader(grid) as reader:
        for i, name in enumerate(names):
            path = find_descriptor(directory, name)
            paths.append(path)
            reader.what = f"descriptor {name!r}"
            out[i] = reader.read(path).astype(np.float32)
            check_cover(out[i], name, path, active_cell, x, y)
    warn_geometry(reader.samplers, "descriptors", directory)
    return out, paths
