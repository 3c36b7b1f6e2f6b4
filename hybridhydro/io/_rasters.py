"""Read GeoTIFF rasters onto the model grid, the way smash windows and resamples them.

A raster whose extent or resolution differs from the grid is mapped as follows (per axis,
found by comparing with smash 1.3 on rasters of many geometries):

1. the window offset is the distance from the raster's edge to the grid's edge in raster
   cells, rounded half to even (``round(6.5) == 6``, ``round(7.5) == 8``);
2. the window size is the grid's extent in raster cells, rounded half to even;
3. when the resolutions differ, the window is resampled by nearest neighbour (source index
   ``floor((j + 0.5) * size / n_out)``) to ``n_out = min(round(size * raster_res / grid_res),
   n_grid)`` cells; grid cells beyond ``n_out`` get no data;
4. cells that fall outside the raster, and the raster's no-data value, become ``NaN``.

For a raster aligned with the grid at the same resolution this is a plain window read.

Every file is checked on the way in: one that cannot be decoded (truncated, empty, damaged) or
that carries no georeferencing is a ``ValueError`` naming the variable and the file; a raster
whose CRS (EPSG code) differs from the mesh's is an error (hybridhydro does not reproject); a
raster without a CRS is read as if it were in the mesh's. Each :class:`Sampler` remembers the
first file of its geometry, so that warnings about resampled, shifted or partial rasters name one.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# GDAL settings that make opening many small GeoTIFFs cheaper: no sibling-file listing,
# no .aux.xml side-car lookups.
GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_PAM_ENABLED": "NO"}


@dataclass(frozen=True)
class Grid:
    """Geometry of the model grid: north-west corner, resolution (CRS units), shape."""

    xmin: float
    ymax: float
    xres: float
    yres: float
    nrow: int
    ncol: int
    epsg: int = 0  # the mesh's CRS (0: unknown, no CRS check)

    @classmethod
    def of(cls, mesh) -> "Grid":
        """The grid of a :class:`hybridhydro.mesh.Mesh`."""
        return cls(float(mesh.xmin), float(mesh.ymax), float(mesh.xres), float(mesh.yres), mesh.nrow, mesh.ncol,
                   int(getattr(mesh, "epsg", 0) or 0))


def _shift(r_start: float, grid_start: float, r_res: float) -> float:
    """How far (in raster cells, -0.5..0.5) the raster's cell edges lie from the grid's."""
    cells = (r_start - grid_start) / r_res
    return cells - round(cells)


def _axis_index(grid_start: float, grid_res: float, n: int, r_start: float, r_res: float, r_n: int) -> np.ndarray:
    """Raster index taken by each grid cell along one axis (-1 where there is none).

    ``grid_start`` and ``r_start`` are the coordinates of the first edge of each grid, measured
    in the direction of increasing index (``x`` for columns, ``-y`` for rows).
    """
    offset = round((grid_start - r_start) / r_res)
    size = round(n * grid_res / r_res)
    if r_res == grid_res:
        n_out = n
        idx = offset + np.arange(n)
    else:
        n_out = min(round(size * r_res / grid_res), n)
        # GDAL's nearest-neighbour rule; the 1e-10 keeps exact multiples from rounding down
        src = np.floor((np.arange(n_out) + 0.5) * (size / max(n_out, 1)) + 1e-10).astype(np.int64)
        idx = np.full(n, -1, dtype=np.int64)
        idx[:n_out] = offset + src
    idx[(idx < 0) | (idx >= r_n)] = -1
    return idx


class Sampler:
    """How to take the grid's cells from rasters of one geometry (computed once, reused).

    Attributes
    ----------
    window : tuple of slice or None
        The in-bounds raster rows and columns to read (``None``: no overlap at all).
    rio_window : rasterio.windows.Window
        The same window for rasterio (absent when ``window`` is ``None``).
    resampled : bool
        The raster resolution differs from the grid's.
    partial : bool
        Some grid cells fall outside the raster.
    shifted : bool
        The raster's cell edges do not line up with the grid's (by more than 1e-6 of a cell):
        each grid cell takes the raster cell smash's rounding gives.
    where : str
        The first file read with this geometry (for warnings).
    """

    def __init__(self, grid: Grid, transform, shape: tuple[int, int], where: str = "raster"):
        self.where = str(where)
        a, b, c, d, e, f = tuple(transform)[:6]
        self.key = (tuple(float(v) for v in (a, b, c, d, e, f)), tuple(shape))
        if b != 0 or d != 0 or a <= 0 or e >= 0:
            raise ValueError(
                f"{where}: only north-up GeoTIFFs without rotation can be read (transform {tuple(transform)[:6]}); "
                "warp the raster to a north-up grid first (e.g. gdalwarp)"
            )
        rows = _axis_index(-grid.ymax, grid.yres, grid.nrow, -f, -e, shape[0])
        cols = _axis_index(grid.xmin, grid.xres, grid.ncol, c, a, shape[1])
        self.resampled = bool(a != grid.xres or -e != grid.yres)
        self.partial = bool((rows < 0).any() or (cols < 0).any())
        self.outside = int(grid.nrow * grid.ncol - (rows >= 0).sum() * (cols >= 0).sum())
        self.res = (float(a), float(-e))
        self.grid_res = (float(grid.xres), float(grid.yres))
        self.offset = (_shift(c, grid.xmin, a), _shift(f, grid.ymax, -e))  # raster - grid, (x east, y north), cells
        self.shifted = bool(max(abs(self.offset[0]), abs(self.offset[1])) > 1e-6)
        self.shape = (grid.nrow, grid.ncol)
        vr, vc = rows[rows >= 0], cols[cols >= 0]
        if vr.size == 0 or vc.size == 0:
            self.window = None
            return
        r0, r1, c0, c1 = int(vr.min()), int(vr.max()) + 1, int(vc.min()), int(vc.max()) + 1
        self.window = (slice(r0, r1), slice(c0, c1))
        self.rio_window = self.rasterio_window()
        self._rows = np.where(rows >= 0, rows - r0, -1)
        self._cols = np.where(cols >= 0, cols - c0, -1)
        # fast path: the window is exactly the grid (aligned raster covering the grid)
        self._identity = bool(
            np.array_equal(self._rows, np.arange(grid.nrow)) and np.array_equal(self._cols, np.arange(grid.ncol))
        )
        self._rsel = np.flatnonzero(rows >= 0)
        self._csel = np.flatnonzero(cols >= 0)

    def rasterio_window(self):
        from rasterio.windows import Window

        rs, cs = self.window
        return Window(cs.start, rs.start, cs.stop - cs.start, rs.stop - rs.start)

    def place(self, block: np.ndarray) -> np.ndarray:
        """Map the window ``block`` (float) onto the grid; ``NaN`` where the raster has no cell."""
        if self.window is None:
            return np.full(self.shape, np.nan, dtype=block.dtype)
        if self._identity:
            return block
        out = np.full(self.shape, np.nan, dtype=block.dtype)
        out[np.ix_(self._rsel, self._csel)] = block[np.ix_(self._rows[self._rsel], self._cols[self._csel])]
        return out


def gdal_error(err: BaseException) -> bool:
    """Whether ``err`` comes from rasterio/GDAL (``RasterioIOError``, ``CPLE_*``): a file it cannot read."""
    return type(err).__module__.split(".")[0] == "rasterio"


_TIFFFILE_LOG = logging.getLogger("tifffile")


def _quiet(record) -> bool:
    return False


_REPLACE = "replace the file (or delete it: a missing step reads as NaN, with a warning)"


class RasterReader:
    """Read single-band GeoTIFFs onto a grid with rasterio, one :class:`Sampler` per raster geometry.

    Values are returned as float32 (as smash holds them) with ``NaN`` for the raster's no-data
    value and for grid cells outside the raster. Open the reader as a context manager to share one GDAL environment.
    ``what`` names the variable in error messages (``prcp``, ``pet``, a descriptor).
    """

    def __init__(self, grid: Grid, *, fast: bool = True, what: str = "raster"):
        self.grid = grid
        self.fast = fast
        self.what = what
        self._verified: set[tuple] = set()
        self._samplers: dict[tuple, Sampler] = {}
        self._crs_seen: dict = {}
        self._mesh_crs = None
        self._epsg_by_wkt: dict = {}
        self._lock = threading.Lock()
        self._env = None

    def __enter__(self) -> "RasterReader":
        import rasterio

        self._env = rasterio.Env(**GDAL_ENV)
        self._env.__enter__()
        _TIFFFILE_LOG.addFilter(_quiet)  # what tifffile cannot decode, rasterio reads or reports
        return self

    def __exit__(self, *exc) -> None:
        _TIFFFILE_LOG.removeFilter(_quiet)
        self._env.__exit__(*exc)
        self._env = None

    @property
    def samplers(self) -> list[Sampler]:
        return list(self._samplers.values())

    def _sampler(self, transform, height: int, width: int, path) -> Sampler:
        key = (tuple(float(v) for v in tuple(transform)[:6]), (height, width))
        with self._lock:
            sampler = self._samplers.get(key)
            if sampler is None:
                sampler = self._samplers[key] = Sampler(self.grid, transform, (height, width), str(path))
        return sampler

    def _damaged(self, path, err: BaseException | str) -> ValueError:
        why = err if isinstance(err, str) else f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
        return ValueError(f"{self.what}: {path} cannot be read as a GeoTIFF ({why}): the file is truncated, empty or "
                          f"damaged; {_REPLACE}")

    def _check_crs(self, key, path, epsg_of) -> None:
        """Refuse a raster whose CRS differs from the mesh's; ``epsg_of()`` gives its EPSG code
        (None: no CRS; "custom": a CRS with no EPSG code), looked up once per ``key``."""
        if not self.grid.epsg:
            return
        if key not in self._crs_seen:
            self._crs_seen[key] = epsg_of()
            epsg = self._crs_seen[key]
            if epsg == "custom":
                warnings.warn(
                    f"{self.what}: {path} has a CRS that matches no EPSG code; read as if it were the mesh's "
                    f"EPSG:{self.grid.epsg} (hybridhydro does not reproject)", stacklevel=4,
                )
        epsg = self._crs_seen[key]
        if isinstance(epsg, int) and epsg != self.grid.epsg:
            g = self.grid
            raise ValueError(
                f"{self.what}: {path} is in EPSG:{epsg} but the mesh (its flow directions) is in EPSG:{g.epsg}; "
                f"hybridhydro does not reproject: warp the rasters onto the mesh's CRS and grid first, e.g. "
                f"gdalwarp -t_srs EPSG:{g.epsg} -tr {g.xres:g} {g.yres:g} in.tif out.tif"
            )

    def read(self, path: str | Path) -> np.ndarray:
        """The raster at ``path`` on the grid, float32, ``NaN`` for no data, shape ``(nrow, ncol)``.

        Plain GeoTIFFs (one band, georeferenced by pixel scale and tie point) are decoded with
        tifffile, which skips GDAL's per-file CRS parsing and is about three times faster on
        long series of small files; the first file of each raster geometry is also read with
        rasterio, and at the first difference the reader uses rasterio alone from then on.
        """
        if self.fast:
            fast = _read_with_tifffile(path)
            if isinstance(fast, str):
                raise self._damaged(path, fast)
            if fast is not None:
                block, transform, nodata, crs_key, epsg = fast
                self._check_crs(("geokeys", crs_key), path,
                                lambda: epsg if epsg is not None else self._rasterio_epsg(path))
                sampler = self._sampler(transform, block.shape[0], block.shape[1], path)
                out = self._place(block, nodata, sampler)
                if sampler.key not in self._verified:
                    reference = self._read_rasterio(path)
                    if not np.array_equal(out, reference, equal_nan=True):
                        self.fast = False
                        warnings.warn(
                            f"{path}: tifffile and rasterio disagree on this raster; reading with rasterio from now on",
                            stacklevel=2,
                        )
                        return reference
                    with self._lock:
                        self._verified.add(sampler.key)
                return out
        return self._read_rasterio(path)

    def _place(self, block: np.ndarray, nodata, sampler: "Sampler") -> np.ndarray:
        if sampler.window is None:
            return np.full((self.grid.nrow, self.grid.ncol), np.nan, dtype=np.float32)
        rows, cols = sampler.window
        block = block[rows, cols]
        missing = _nodata_mask(block, nodata)
        block = block.astype(np.float32)
        if missing is not None:
            block[missing] = np.nan
        return sampler.place(block)

    def _epsg(self, crs):
        """The EPSG code of a rasterio CRS: the mesh's when they are the same CRS (a quick test; looking
        a code up costs ~0.1 s); None without a CRS; "custom" for a CRS no EPSG code matches."""
        from rasterio.crs import CRS

        if crs is None:
            return None
        wkt = crs.to_wkt()
        if wkt not in self._epsg_by_wkt:
            if self._mesh_crs is None:
                self._mesh_crs = CRS.from_epsg(self.grid.epsg)
            code = self.grid.epsg if crs == self._mesh_crs else crs.to_epsg()
            self._epsg_by_wkt[wkt] = int(code) if code else "custom"
        return self._epsg_by_wkt[wkt]

    def _rasterio_epsg(self, path):
        import rasterio

        try:
            with rasterio.open(path) as src:
                return self._epsg(src.crs)
        except Exception as err:
            if not gdal_error(err):
                raise
            raise self._damaged(path, err) from None

    def _read_rasterio(self, path: str | Path) -> np.ndarray:
        import rasterio

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                src = rasterio.open(path)
        except Exception as err:
            if not gdal_error(err):
                raise
            raise self._damaged(path, err) from None
        with src:
            if src.transform.is_identity and src.crs is None and not src.gcps[0]:
                raise ValueError(
                    f"{self.what}: {path} carries no georeferencing (no transform, no CRS): the file is truncated or "
                    f"damaged, or not a GeoTIFF; {_REPLACE}"
                )
            if src.crs is not None:
                self._check_crs(("crs", src.crs.to_wkt()), path, lambda: self._epsg(src.crs))
            sampler = self._sampler(src.transform, src.height, src.width, path)
            if sampler.window is None:
                return np.full((self.grid.nrow, self.grid.ncol), np.nan, dtype=np.float32)
            try:
                block = src.read(1, window=sampler.rio_window)
            except Exception as err:
                if not gdal_error(err):
                    raise
                raise self._damaged(path, err) from None
            nodata = src.nodata
        missing = _nodata_mask(block, nodata)
        block = block.astype(np.float32)
        if missing is not None:
            block[missing] = np.nan
        return sampler.place(block)

    def read_many(self, paths: Iterable[str | Path]) -> Iterator[np.ndarray]:
        """Read ``paths`` one after the other, yielding the grids in order.

        (A thread pool was measured and is slower: opening a GeoTIFF holds the GIL.)
        """
        for path in paths:
            yield self.read(path)




# GeoTIFF tags: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory, GDAL_NODATA
_SCALE, _TIEPOINT, _TRANSFORMATION, _GEOKEYS, _NODATA = 33550, 33922, 34264, 34735, 42113
_GEO_DOUBLES, _GEO_ASCII = 34736, 34737
_RASTER_TYPE_KEY, _PIXEL_IS_POINT = 1025, 2
_GEOGRAPHIC_KEY, _PROJECTED_KEY, _USER_DEFINED = 2048, 3072, 32767


def _geokey_epsg(keys) -> int | None:
    """The EPSG code a GeoKeyDirectory names (projected, else geographic); None when user-defined or absent."""
    found = {}
    for i in range(4, len(keys) - 3, 4):
        if keys[i + 1] == 0:  # value stored in the key itself
            found[keys[i]] = keys[i + 3]
    code = found.get(_PROJECTED_KEY) or found.get(_GEOGRAPHIC_KEY)
    return None if code in (None, 0, _USER_DEFINED) else int(code)


def _read_with_tifffile(path):
    """``(values, affine (a, b, c, d, e, f), nodata, crs key, EPSG code)`` of a plain GeoTIFF, else ``None``.

    A string instead: why the file is damaged (its data run past the end of the file). The CRS
    key identifies the GeoKeys (``None`` without); the EPSG code is None when the keys give none.
    Pixel-is-point rasters are shifted by half a cell, as GDAL does by default.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) != 1:
                return None
            page = tif.pages[0]
            tags = page.tags
            if page.samplesperpixel != 1 or _TRANSFORMATION in tags or _SCALE not in tags or _TIEPOINT not in tags:
                return None
            ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts)]
            size = os.fstat(tif.filehandle.fileno()).st_size if hasattr(tif.filehandle, "fileno") else None
            if ends and size is not None and max(ends) > size:
                return f"its data end at byte {max(ends)} but the file has {size} bytes"
            sx, sy = tags[_SCALE].value[:2]
            tie = tags[_TIEPOINT].value
            if len(tie) != 6:
                return None
            col0, row0, x0, y0 = tie[0], tie[1], tie[3], tie[4]
            left, top = x0 - col0 * sx, y0 + row0 * sy
            crs_key, epsg = None, None
            if _GEOKEYS in tags:
                keys = tags[_GEOKEYS].value
                for i in range(4, len(keys) - 3, 4):
                    if keys[i] == _RASTER_TYPE_KEY and keys[i + 3] == _PIXEL_IS_POINT:
                        left, top = left - 0.5 * sx, top + 0.5 * sy
                extra = tuple(str(tags[t].value) if t in tags else "" for t in (_GEO_DOUBLES, _GEO_ASCII))
                crs_key, epsg = (tuple(keys), extra), _geokey_epsg(keys)
            nodata = float(str(tags[_NODATA].value).strip("\x00 ")) if _NODATA in tags else None
            values = page.asarray()
    except Exception:  # anything tifffile cannot decode is read by rasterio instead
        return None
    if values.ndim != 2:
        return None
    return values, (sx, 0.0, left, 0.0, -sy, top), nodata, crs_key, epsg


def warn_geometry(samplers: list[Sampler], what: str, directory) -> None:
    """Warn, naming a file, when rasters of ``what`` under ``directory`` had to be resampled,
    were shifted from the mesh's cells, or leave part of the mesh uncovered."""
    from ..basin import user_stacklevel

    stacklevel = user_stacklevel()
    for sampler in samplers:
        if sampler.window is None:
            continue
        name = sampler.where
        if sampler.resampled:
            warnings.warn(
                f"{what}: {name} (and the files of its geometry under {directory}) has cells of {sampler.res[0]:g} x "
                f"{sampler.res[1]:g}, the mesh {sampler.grid_res[0]:g} x {sampler.grid_res[1]:g}; read by "
                "nearest-neighbour resampling, as smash does", stacklevel=stacklevel,
            )
        elif sampler.shifted:
            warnings.warn(
                f"{what}: {name} (and the files of its geometry under {directory}) lies off the mesh's cells by "
                f"({sampler.offset[0]:+.3g}, {sampler.offset[1]:+.3g}) of a cell (x east, y north); each mesh cell "
                "takes the raster cell smash's rounding gives (the nearest, half to even)", stacklevel=stacklevel,
            )
        if sampler.partial:
            warnings.warn(
                f"{what}: {name} (and the files of its geometry under {directory}) does not cover the whole mesh; "
                f"{sampler.outside} of its {sampler.shape[0] * sampler.shape[1]} cells are outside and read as NaN",
                stacklevel=stacklevel,
            )
    for sampler in samplers:
        if sampler.window is None:
            warnings.warn(f"{what}: {sampler.where} does not overlap the mesh at all; read as NaN everywhere",
                          stacklevel=stacklevel)


def _nodata_mask(block: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """Cells equal to the no-data value, compared in the raster's own dtype (None: no such cells)."""
    if nodata is None or np.isnan(nodata):
        return None  # a NaN no-data value stays NaN once cast to float
    if block.dtype.kind in "iu":
        info = np.iinfo(block.dtype)
        if not (info.min <= nodata <= info.max) or nodata != int(nodata):
            return None
    return block == np.asarray(nodata).astype(block.dtype)
