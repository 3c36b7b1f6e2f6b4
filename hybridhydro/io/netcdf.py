"""Store a basin Dataset without loss: NetCDF-4 (``.nc``) or zarr (``.zarr``).

Round trip through :func:`write_basin` then :func:`read_basin` keeps dtypes (float32 forcing,
bool ``active_cell``, int8 ``flwdir``, fixed-width string gauge codes even with no gauge),
``NaN``, attributes, units and the CRS (rioxarray's ``spatial_ref``). Times come back as
``datetime64[ns]``.

The file follows the CF conventions (:func:`hybridhydro.io.cf.to_cf`), so that other tools read
it: ``Conventions``, ``axis`` and standard names, ``time_bounds``, ``grid_mapping``, and units
pint reads (``CRS units`` written as the CRS's unit, ``m``). What the CF layer added or changed
is recorded in the file, and :func:`read_basin` takes it back: the basin read is the one written.

Reading checks the file: an empty, truncated or damaged file (an HDF5 error, a missing or
corrupt zarr chunk) is a ``ValueError`` that names the file (and the variable) and says to
write it again; the basin read is checked against the schema (:func:`hybridhydro.check_basin`).
zarr stores are written with every chunk, even those that hold only the fill value, so that a
deleted chunk is found instead of read as NaN.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import xarray as xr

from ..basin import check_basin
from .cf import to_cf

#: attribute that records the NumPy dtype of string variables (the formats do not keep their width)
_STR_DTYPE_ATTR = "_hybridhydro_str_dtype"
#: attribute of a zarr store written with every chunk (a missing chunk is then a damaged store)
_ALL_CHUNKS_ATTR = "_hybridhydro_all_chunks"
#: attribute that records what the CF layer added to or changed in the basin (read_basin undoes it)
_CF_UNDO_ATTR = "_hybridhydro_cf_undo"
_REWRITE = "write it again with hybridhydro.write_basin (in a pipeline run: rerun stage 01_basin)"
_SUFFIXES = {".nc": "netcdf", ".nc4": "netcdf", ".netcdf": "netcdf", ".zarr": "zarr"}


def _format(path: Path) -> str:
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: the suffix must be .nc (NetCDF-4) or .zarr (zarr store), got {path.suffix!r}")
    return fmt


def netcdf_engine() -> str:
    """The engine xarray writes and reads NetCDF-4 with: h5netcdf when installed, else netCDF4."""
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
    if fmt == "zarr":
        out.attrs[_ALL_CHUNKS_ATTR] = 1
    else:  # a Fletcher-32 checksum on every numeric array: damaged data are an error, not wrong numbers
        for var in out.variables.values():
            if var.ndim and var.size and var.dtype.kind in "fiub":
                var.encoding = {**var.encoding, "fletcher32": True}
    return out


def _plain(value):
    """An attribute value JSON can hold (NumPy scalars and arrays as Python ones)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return [_plain(v) for v in value]
    return value


def _with_cf(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` through :func:`~hybridhydro.io.cf.to_cf`, with a record of what that changed."""
    cf = to_cf(ds, where="the basin being written")
    undo = {"variables": [n for n in cf.variables if n not in ds.variables], "attrs": {}}
    pairs = [("", ds.attrs, cf.attrs)] + [(n, ds.variables[n].attrs, v.attrs) for n, v in cf.variables.items()
                                        if n in ds.variables]
    for name, before, after in pairs:
        changes = {k: _plain(before.get(k)) for k in set(before) | set(after)
                   if k not in before or k not in after or not _same(before[k], after[k])}
        if changes:
            undo["attrs"][name] = changes
    cf.attrs[_CF_UNDO_ATTR] = json.dumps(undo)
    return cf


def _same(a, b) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except Exception:
        return a is b


def _undo_cf(ds: xr.Dataset) -> xr.Dataset:
    """Take back what :func:`_with_cf` added or changed (files written before it have no record)."""
    record = ds.attrs.pop(_CF_UNDO_ATTR, None)
    if record is None:
        return ds
    undo = json.loads(record)
    ds = ds.drop_vars([n for n in undo["variables"] if n in ds.variables])
    for var in ds.variables.values():  # xarray kept the reference to the bounds in the encoding
        if var.encoding.get("bounds") in undo["variables"]:
            del var.encoding["bounds"]
    for name, changes in undo["attrs"].items():
        if name and name not in ds.variables:
            continue
        attrs = ds.attrs if name == "" else ds.variables[name].attrs
        for key, value in changes.items():
            if value is None:
                attrs.pop(key, None)
            else:
                attrs[key] = value
    return ds


def _restore(ds: xr.Dataset) -> xr.Dataset:
    """Undo :func:`_for_storage`: string dtypes back, ``time`` in nanoseconds."""
    ds.attrs.pop(_ALL_CHUNKS_ATTR, None)
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
        The basin (see :mod:`hybridhydro.basin` for the schema; any Dataset works whose units
        UDUNITS reads and, with a datetime ``time``, whose ``attrs["dt"]`` gives the step).
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
        The suffix is neither ``.nc`` nor ``.zarr``; a ``units`` attribute no CF tool reads
        (:func:`hybridhydro.io.cf.to_cf`).
    OSError
        ``path`` cannot be written (the message names it).
    """
    path = Path(path).expanduser()
    fmt = _format(path)
    check_target(path, overwrite)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist; create it first")
    ds = _with_cf(ds)
    data = _for_storage(ds.load(), fmt)

    def write(tmp: Path) -> None:
        if fmt == "zarr":
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
                data.to_zarr(tmp, mode="w-", consolidated=False, write_empty_chunks=True)
            return
        data.to_netcdf(tmp, engine=netcdf_engine())
        _seal_attributes(tmp)

    return replace_atomically(path, write)


#: Global attribute of a NetCDF basin file: the sha256 of every attribute as the reader sees
#: them (Fletcher-32 covers the arrays, not the attributes: a damaged units or CRS text would
#: otherwise read back as other text without a word).
_ATTRS_DIGEST = "_hybridhydro_attributes_sha256"


def _attributes_digest(ds: xr.Dataset) -> str:
    """sha256 of the Dataset's attributes (global and per variable, the digest's own left out)."""
    table = {"": {k: v for k, v in ds.attrs.items() if k != _ATTRS_DIGEST}}
    table.update({str(name): dict(var.attrs) for name, var in ds.variables.items()})
    text = json.dumps(table, sort_keys=True, default=lambda v: repr(_plain(v)))
    return hashlib.sha256(text.encode()).hexdigest()


def _seal_attributes(path: Path) -> None:
    """Record :func:`_attributes_digest` of the file as the reader opens it, in the file."""
    with xr.open_dataset(path, engine=netcdf_engine(), decode_coords="all") as opened:
        digest = _attributes_digest(opened)
    import h5py

    with h5py.File(path, "a") as f:
        f.attrs[_ATTRS_DIGEST] = digest


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse to replace ``path`` unless ``overwrite``: a ``FileExistsError`` that says how."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it, or choose another path")


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes, read in blocks of 1 MiB: what a manifest records of a file it lists."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` to a temporary path next to ``path``, then move it onto ``path``: a failed
    write leaves the old file intact. A path that cannot be written is an ``OSError`` naming it."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        try:
            write(tmp)
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            os.replace(tmp, path)
        except OSError as err:  # no permission, a read-only or full disk: say which path
            kind = PermissionError if isinstance(err, PermissionError) else OSError
            raise kind(f"cannot write {path}: {err.strerror or err}; choose a folder you can write to (or fix its "
                       "permissions)") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    return path


def swap_directory(new: Path, directory: Path) -> None:
    """Put the complete directory ``new`` in place of ``directory`` (renames in one folder).

    The old directory is first renamed aside, then ``new`` takes its name, then the old one is
    deleted; if the second rename fails the old one is put back. (POSIX has no atomic exchange
    of two directories: between the renames, ``directory`` is briefly absent, never mixed.)
    """
    if not directory.exists():
        os.replace(new, directory)
        return
    old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old-"))
    os.rmdir(old)
    os.replace(directory, old)
    try:
        os.replace(new, directory)
    except BaseException:
        os.replace(old, directory)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "no message"
    return f"{type(err).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def _damaged(path: Path, what: str, err: BaseException | None = None, variable: str | None = None,
             remedy: str = _REWRITE) -> ValueError:
    var = f" (variable {variable!r})" if variable else ""
    why = f" ({_reason(err)})" if err is not None else ""
    return ValueError(f"{path}{var} cannot be read as a {what}{why}: the file is empty, truncated or damaged; "
                      f"{remedy}")


def write_sealed_netcdf(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` as NetCDF-4 to ``path`` atomically (a failed write leaves the old file), its
    attributes sealed with a sha256 that :func:`open_sealed_netcdf` checks: what every NetCDF
    file hybridhydro reads back (basins, initial states) is written with."""
    def write(tmp: Path) -> None:
        ds.to_netcdf(tmp, engine=netcdf_engine())
        _seal_attributes(tmp)

    return replace_atomically(Path(path), write)


def open_sealed_netcdf(path: Path, what: str, remedy: str, **kwargs) -> xr.Dataset:
    """Open a NetCDF file for reading (lazily): an empty, truncated or damaged file, or one whose
    sealed attributes changed since it was written, is a ``ValueError`` that names it, says what
    it should be (``what``) and how to make it again (``remedy``). A file without a seal (written
    by another tool) opens as it is. Close the result (``with``)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); {remedy}")
    engine = netcdf_engine()
    try:
        with open(path, "rb") as f:
            if f.read(3) == b"CDF":  # NetCDF-3 classic, as some tools write it: xarray picks its reader
                engine = None
    except OSError as err:
        raise _damaged(path, what, err, remedy=remedy) from None
    try:
        opened = xr.open_dataset(path, engine=engine, **kwargs)
    except Exception as err:
        raise _damaged(path, what, err, remedy=remedy) from None
    sealed = opened.attrs.get(_ATTRS_DIGEST)
    if sealed is not None and sealed != _attributes_digest(opened):
        opened.close()
        raise ValueError(f"{path} cannot be read as a {what}: its attributes (units, CRS, names) are not the ones "
                         f"it was written with, the file is damaged; {remedy}")
    return opened


def load_sealed_netcdf(path: Path, what: str, remedy: str, **kwargs) -> xr.Dataset:
    """:func:`open_sealed_netcdf`, loaded into memory (a damaged variable named), the seal dropped."""
    with open_sealed_netcdf(path, what, remedy, **kwargs) as opened:
        ds = _load(opened, Path(path), what, remedy)
    ds.attrs.pop(_ATTRS_DIGEST, None)
    return ds


def _load(opened: xr.Dataset, path: Path, what: str, remedy: str = _REWRITE) -> xr.Dataset:
    """``opened.load()``, a damaged variable named in the error."""
    try:
        return opened.load()
    except MemoryError:
        raise
    except Exception as err:
        for name in opened.variables:
            try:
                np.asarray(opened.variables[name].values)
            except Exception as inner:
                raise _damaged(path, what, inner, name, remedy=remedy) from None
        raise _damaged(path, what, err, remedy=remedy) from None


def _check_zarr_chunks(path: Path) -> None:
    """Every chunk of a store written by :func:`write_basin` is there (a deleted one would read as NaN)."""
    import zarr

    try:
        group = zarr.open_group(path, mode="r")
        if not group.attrs.get(_ALL_CHUNKS_ATTR):
            return  # written by another tool or an older version: chunks of fill values may be absent
        missing = [(name, array.nchunks - array.nchunks_initialized, array.nchunks) for name, array in group.arrays()]
    except Exception as err:
        raise _damaged(path, "zarr store", err) from None
    for name, n, total in missing:
        if n:
            raise ValueError(
                f"{path} (variable {name!r}): {n} of {total} chunk(s) are missing from the zarr store (they would "
                f"read as NaN or 0): the store is incomplete; {_REWRITE}"
            )


def read_basin(path: str | Path, *, check: bool = True) -> xr.Dataset:
    """Read a basin Dataset written by :func:`write_basin` (``.nc`` or ``.zarr``), fully into memory.

    Parameters
    ----------
    path
        The ``.nc`` file or ``.zarr`` store.
    check
        Check the basin against the schema (:func:`hybridhydro.check_basin`); False reads any
        Dataset :func:`write_basin` wrote.

    Returns
    -------
    xarray.Dataset
        The basin, with the dtypes, attributes and CRS it was written with; the file is closed.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        A suffix other than ``.nc``/``.zarr``; an empty, truncated or damaged file or store (a
        missing zarr chunk included), naming the file and the variable; a basin that does not
        follow the schema.
    """
    path = Path(path).expanduser()
    fmt = _format(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; write it with hybridhydro.write_basin(ds, path)")
    if fmt == "zarr":
        what = "zarr store"
        if not path.is_dir() or not any((path / f).is_file() for f in ("zarr.json", ".zgroup")):
            raise ValueError(f"{path} is not a zarr store (no zarr.json in it): it is empty or damaged; {_REWRITE}")
        _check_zarr_chunks(path)
        try:
            opened = xr.open_zarr(path, consolidated=False, decode_coords="all")
        except Exception as err:
            raise _damaged(path, what, err) from None
    else:
        what = "NetCDF-4 basin file"
        opened = open_sealed_netcdf(path, what, _REWRITE, decode_coords="all")
    with opened:
        ds = _load(opened, path, what)
    ds = _undo_cf(_restore(ds))
    ds.attrs.pop(_ATTRS_DIGEST, None)
    if "spatial_ref" in ds.coords:
        import rioxarray  # noqa: F401  (registers the .rio accessor for users of the result)
    if check:
        check_basin(ds, where=str(path))
    return ds
