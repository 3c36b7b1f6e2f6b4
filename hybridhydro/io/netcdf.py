"""Store a basin Dataset without loss: NetCDF-4 (``.nc``) or zarr (``.zarr``).

Round trip through :func:`write_basin` then :func:`read_basin` keeps dtypes (float32 forcing,
bool ``active_cell``, int8 ``flwdir``, fixed-width string gauge codes even with no gauge),
``NaN``, attributes, units and the CRS (rioxarray's ``spatial_ref``). Times come back as
``datetime64[ns]``.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

#: attribute that records the NumPy dtype of string variables (the formats do not keep their width)
_STR_DTYPE_ATTR = "_hybridhydro_str_dtype"
_SUFFIXES = {".nc": "netcdf", ".nc4": "netcdf", ".netcdf": "netcdf", ".zarr": "zarr"}


def _format(path: Path) -> str:
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: the suffix must be .nc (NetCDF-4) or .zarr (zarr store), got {path.suffix!r}")
    return fmt


def _netcdf_engine() -> str:
    import importlib.util

    return "h5netcdf" if importlib.util.find_spec("h5netcdf") else "netcdf4"


def _string_dtype(var: xr.Variable) -> np.dtype | None:
    """The fixed-width unicode dtype of a string variable (``None`` if it holds no strings)."""
    if var.dtype.kind == "U":
        return var.dtype
    if var.dtype.kind == "O" and var.size and all(isinstance(v, str) for v in var.values.flat):
        return np.asarray(var.values.tolist(), dtype=str).dtype
    return None


def _for_storage(ds: xr.Dataset, fmt: str) -> xr.Dataset:
    """A shallow copy whose string variables record their dtype (zarr: stored as variable-length)."""
    out = ds.copy(deep=False)
    for name, var in ds.variables.items():
        dtype = _string_dtype(var)
        if dtype is None:
            continue
        values = var.values.astype(object) if fmt == "zarr" else var.values
        new = xr.Variable(var.dims, values, {**var.attrs, _STR_DTYPE_ATTR: dtype.str}, var.encoding)
        if name in out.coords:
            out = out.assign_coords({name: new})
        else:
            out[name] = new
    return out


def _restore(ds: xr.Dataset) -> xr.Dataset:
    """Undo :func:`_for_storage`: string dtypes back, ``time`` in nanoseconds."""
    for name in list(ds.variables):
        var = ds.variables[name]
        dtype = var.attrs.get(_STR_DTYPE_ATTR)
        if dtype is None:
            continue
        attrs = {k: v for k, v in var.attrs.items() if k != _STR_DTYPE_ATTR}
        values = np.asarray(var.values.tolist() if var.size else [], dtype=np.dtype(str(dtype))).reshape(var.shape)
        new = xr.Variable(var.dims, values, attrs, var.encoding)
        if name in ds.coords:
            ds = ds.assign_coords({name: new})
        else:
            ds[name] = new
    for name in list(ds.variables):
        var = ds.variables[name]
        if var.dtype.kind == "M" and var.dtype != np.dtype("datetime64[ns]"):
            new = var.astype("datetime64[ns]")
            ds = ds.assign_coords({name: new}) if name in ds.coords else ds.assign({name: new})
    return ds


def write_basin(ds: xr.Dataset, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a basin Dataset to ``path``: NetCDF-4 for ``.nc``, a zarr store for ``.zarr``.

    Parameters
    ----------
    ds
        The basin (any Dataset works; see :mod:`hybridhydro.basin` for the schema).
    path
        Destination file (``.nc``) or directory (``.zarr``).
    overwrite
        Replace an existing ``path``. The new content is written next to it first, so a failed
        write leaves the old one intact.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    ValueError
        The suffix is neither ``.nc`` nor ``.zarr``.
    """
    path = Path(path).expanduser()
    fmt = _format(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it, or choose another path")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist; create it first")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    data = _for_storage(ds.load(), fmt)
    try:
        if fmt == "zarr":
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
                data.to_zarr(tmp, mode="w-", consolidated=False)
        else:
            data.to_netcdf(tmp, engine=_netcdf_engine())
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    return path


def read_basin(path: str | Path) -> xr.Dataset:
    """Read a basin Dataset written by :func:`write_basin` (``.nc`` or ``.zarr``), fully into memory.

    Parameters
    ----------
    path
        The ``.nc`` file or ``.zarr`` store.

    Returns
    -------
    xarray.Dataset
        The basin, with the dtypes, attributes and CRS it was written with; the file is closed.
    """
    path = Path(path).expanduser()
    fmt = _format(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; write it with hybridhydro.write_basin(ds, path)")
    if fmt == "zarr":
        with xr.open_zarr(path, consolidated=False, decode_coords="all") as opened:
            ds = opened.load()
    else:
        with xr.open_dataset(path, engine=_netcdf_engine(), decode_coords="all") as opened:
            ds = opened.load()
    ds = _restore(ds)
    if "spatial_ref" in ds.coords:
        import rioxarray  # noqa: F401  (registers the .rio accessor for users of the result)
    return ds
