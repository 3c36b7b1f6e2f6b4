"""A calibration's result: :class:`CalibrationResult`, written and read back (:func:`load_calibration`).

A saved calibration is a directory whose ``calibration.json`` is the manifest: the settings,
the regionalisation's architecture and descriptor statistics, and every other file of the
directory with its sha256, which :func:`load_calibration` checks. :meth:`CalibrationResult.save`
writes the whole directory beside it first and then swaps it in, so a directory holds one
calibration, whole: never the files of two.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import xarray as xr

from ..io.netcdf import file_sha256, swap_directory
from ..mapping import REGIONAL_MAPPINGS

#: Manifest format written by :meth:`CalibrationResult.save` (1: no file list, before sha256s).
FORMAT = 2


def basin_crs(basin: xr.Dataset) -> str | None:
    """The basin's CRS as WKT (rioxarray's ``spatial_ref`` coordinate), else ``EPSG:<epsg>`` from
    its ``epsg`` attribute, else None (unknown)."""
    if "spatial_ref" in basin.coords:
        wkt = basin["spatial_ref"].attrs.get("crs_wkt") or basin["spatial_ref"].attrs.get("spatial_ref")
        if wkt:
            return str(wkt)
    epsg = int(basin.attrs.get("epsg", 0) or 0)
    return f"EPSG:{epsg}" if epsg else None


@dataclass
class CalibrationResult:
    """What :func:`calibrate` found.

    Attributes
    ----------
    parameters
        Every parameter of the structure as a (y, x) map (NaN off the active cells), the
        calibrated ones and the fixed ones; feed to :func:`hybridhydro.simulate`.
    nn_parameters
        The flux-correction network's weights (smash's layout) for a hybrid structure, else None.
    network
        The regionalisation network (``ann``/``cnn`` mappings) holding its trained weights
        (also after :func:`load_calibration`).
    controls
        The optimised controls (a pytree, in physical units for uniform/distributed).
    history
        One row per iteration: ``cost``, ``grad_norm`` (infinity norm, as smash's ``|proj g|``),
        ``validation_cost`` (when set), ``seconds`` since the start.
    coords
        The calibration basin's ``y`` and ``x`` cell centres (CRS units).
    crs
        The calibration basin's CRS (WKT, or ``EPSG:<code>``; None where unknown); written
        into ``parameters.nc``.
    descriptor_scaling
        The regionalisation mappings' (multi-*, ann, cnn) descriptor statistics, those of the
        basin they were trained on (:class:`hybridhydro.mapping.DescriptorScaling`): what
        :meth:`regionalise` transforms another basin's descriptors with.
    """

    structure: str
    mapping: str
    optimizer: str
    parameters: dict[str, np.ndarray]
    nn_parameters: dict[str, np.ndarray] | None
    network: object | None
    controls: object
    history: pd.DataFrame
    best_iteration: int
    message: str
    options: dict = field(default_factory=dict)
    coords: dict = field(default_factory=dict)  # the grid's y and x (CRS units), for maps and files
    crs: str | None = None
    descriptor_scaling: object | None = None

    # ------------------------------------------------------------------ applying the model

    def _on_own_grid(self, basin: xr.Dataset) -> bool:
        """Whether ``basin`` has the calibration's grid (same y and x cell centres)."""
        if not self.coords:
            return True  # a result that does not know its grid: the caller's responsibility, as before
        for dim in ("y", "x"):
            mine, theirs = np.asarray(self.coords[dim], np.float64), np.asarray(basin[dim].values, np.float64)
            step = np.min(np.abs(np.diff(mine))) if mine.size > 1 else 1.0
            if mine.shape != theirs.shape or not np.allclose(mine, theirs, rtol=0.0, atol=1e-3 * step):
                return False
        return True

    def regionalise(self, basin: xr.Dataset) -> xr.Dataset:
        """The calibrated parameters a regionalisation mapping gives on ``basin``'s grid.

        The trained mapping (a multi-* mapping's coefficients, an ann's or cnn's network) reads
        ``basin``'s descriptors transformed with the statistics of the basin it was trained on
        (:attr:`descriptor_scaling`), so the same descriptors give the same parameters on any
        basin. A cnn also sees each cell's neighbours on ``basin``'s grid (zero padding at its
        edges), so near a new edge its maps differ from the training basin's.

        Returns
        -------
        xarray.Dataset
            One (y, x) map per calibrated parameter (units in ``attrs``, as in
            :mod:`hybridhydro.structures`; NaN off the active cells), with ``basin``'s
            coordinates and CRS.

        Raises
        ------
        ValueError
            A mapping that is not a regionalisation (uniform, distributed), a result that does
            not hold its trained mapping (saved by an older hybridhydro), or a basin without the
            descriptors the mapping reads (named).
        """
        from ..mapping import make_mapping
        from ..mesh import Mesh, routing_plan
        from ..networks import pure
        from ..structures import PARAMETER_UNITS

        if self.mapping not in REGIONAL_MAPPINGS:
            raise ValueError(
                f"a {self.mapping!r} calibration's parameters are maps of its own grid, not a function of the "
                f"descriptors: it cannot be applied to another basin (only {', '.join(REGIONAL_MAPPINGS)} can); "
                "simulate it on its own basin, or calibrate a regionalisation mapping"
            )
        names = self.options.get("parameters")
        if self.descriptor_scaling is None or not names:
            raise ValueError(
                f"this {self.mapping!r} result holds no descriptor statistics or parameter list (it was saved by an "
                "older hybridhydro): calibrate again, and save it again, to apply it to another basin"
            )
        if self.mapping in ("ann", "cnn") and self.network is None:
            raise ValueError(f"this {self.mapping!r} result holds no network (saved by an older hybridhydro): "
                             "calibrate and save it again to apply it to another basin")
        plan = routing_plan(Mesh.from_dataset(basin))
        m = make_mapping(self.mapping, tuple(names), basin, bounds=self.options.get("bounds"), network=self.network,
                         scaling=self.descriptor_scaling, plan=plan)
        controls = {"network": pure(self.network)[1]} if self.network is not None else self.controls["mapping"]
        values = m(controls)
        rows, cols = np.asarray(plan.rows), np.asarray(plan.cols)
        shape = (basin.sizes["y"], basin.sizes["x"])
        data = {}
        for n in names:
            grid = np.full(shape, np.nan, np.float32)
            grid[rows, cols] = np.asarray(values[n], np.float32)
            data[n] = xr.Variable(("y", "x"), grid, {"units": PARAMETER_UNITS.get(n, ""),
                                                      "long_name": f"parameter {n} from the {self.mapping} mapping"})
        coords = {k: basin[k] for k in ("y", "x", "spatial_ref") if k in basin.coords}
        return xr.Dataset(data, coords=coords)

    def _parameters_on(self, basin: xr.Dataset) -> dict:
        """Parameters for a run on ``basin``: the result's maps on its own grid; on another grid
        (a regionalisation only) the mapping's on that grid plus the values the user fixed."""
        if self._on_own_grid(basin):
            return self.parameters
        if self.mapping not in REGIONAL_MAPPINGS:
            raise ValueError(
                f"the basin's grid ({basin.sizes['y']} x {basin.sizes['x']} cells) is not the one this "
                f"{self.mapping!r} calibration ran on ({len(self.coords['y'])} x {len(self.coords['x'])}): its "
                "parameter maps belong to that grid; simulate it on its own basin, or calibrate a regionalisation "
                f"mapping ({', '.join(REGIONAL_MAPPINGS)}) to apply it elsewhere"
            )
        params = {n: maps.values for n, maps in self.regionalise(basin).data_vars.items()}
        calibrated = set(params)
        own = xr.Dataset({n: (("y", "x"), v) for n, v in self.parameters.items()}, coords=self.coords)
        active = basin["active_cell"].values.astype(bool)
        for n in self.options.get("given", ()):
            if n in calibrated or n not in self.parameters:
                continue
            values = self.parameters[n][np.isfinite(self.parameters[n])]
            if values.size and np.all(values == values[0]):
                params[n] = float(values[0])
                continue
            step = float(np.min(np.abs(np.diff(np.asarray(self.coords["x"], np.float64))))) if len(
                self.coords["x"]) > 1 else 1.0
            on = own[n].reindex(y=basin["y"].values, x=basin["x"].values, method="nearest", tolerance=1e-3 * step)
            if not np.isfinite(on.values[active]).all():
                raise ValueError(
                    f"parameter {n!r} was fixed to a map at calibration, and that map does not cover every active "
                    "cell of this basin; simulate it with hybridhydro.simulate(basin, structure, "
                    "{**result.regionalise(basin), ...}) giving its values here"
                )
            params[n] = on.values
        return params

    def simulate(self, basin: xr.Dataset, **options) -> xr.Dataset:
        """Run the calibrated model on ``basin``, e.g. over a validation period.

        On the calibration's own grid, the calibrated maps run. On another basin (another grid:
        a sub-basin, a neighbour) only a regionalisation runs (multi-*, ann, cnn): its
        calibrated parameters are :meth:`regionalise`'s, the parameters the calibration fixed
        (``initial_parameters``) keep their values (a uniform one everywhere, a map read by
        its coordinates), and the others take the structure's defaults there (``ci`` fitted
        to that basin's forcing, as on any basin). The ODE options it was calibrated with
        (``ode_solver``, ``ode_substeps``) are the defaults; ``options`` are those of
        :func:`hybridhydro.simulate`.
        """
        from ..simulate import simulate

        solver = {k: self.options[k] for k in ("ode_solver", "ode_substeps") if self.options.get(k) is not None}
        return simulate(basin, self.structure, self._parameters_on(basin), nn_parameters=self.nn_parameters,
                        **{**solver, **options})

    def parameter_maps(self) -> xr.Dataset:
        """The parameters as an xarray Dataset of (y, x) maps, units as in :mod:`hybridhydro.structures`
        (a unit per time step is stated with the calibration's step: ``kexc`` in ``mm h-1`` at
        3600 s), with the calibration basin's CRS (rioxarray ``spatial_ref``) where known."""
        from ..io import step_units
        from ..structures import PARAMETER_UNITS

        ds = xr.Dataset({n: (("y", "x"), np.asarray(v, np.float32)) for n, v in self.parameters.items()},
                        coords=self.coords)
        dt = self.options.get("dt")
        for n in ds.data_vars:
            units = PARAMETER_UNITS.get(n, "")
            ds[n].attrs["units"] = step_units(units, dt) if dt else units
        if dt:
            ds.attrs["dt"] = float(dt)
        if self.crs:
            import rioxarray  # noqa: F401  (registers the .rio accessor)

            ds = ds.rio.write_crs(self.crs)
        return ds

    def write_parameter_maps(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """The parameter maps as CF NetCDF (``.nc``) or GeoTIFF (``.tif``), with the CRS
        (:func:`hybridhydro.write_parameter_maps`)."""
        from ..io import write_parameter_maps

        return write_parameter_maps(self.parameter_maps(), path, crs=self.crs, dt=self.options.get("dt"),
                                    overwrite=overwrite)

    # ------------------------------------------------------------------ files

    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write the result to ``directory``: what :func:`load_calibration` reads back.

        Files: ``parameters.nc`` (the maps, with the CRS), ``history.csv``, ``nn_parameters.npz``
        (a hybrid's network), ``network.npz`` (a regionalisation network's weights, by path),
        ``mapping_controls.npz`` (another mapping's controls: what
        ``calibrate(..., warm_start=result)`` starts from) and ``calibration.json``, the
        manifest: structure, mapping, optimiser, message, options, CRS, the network's
        architecture, the descriptor statistics, and every other file with its sha256.

        The files are written into a temporary directory beside ``directory``, which then
        replaces it (renames), so ``directory`` holds this calibration whole and nothing of
        the one it replaces (e.g. a conceptual model saved over a hybrid keeps no weights).

        Raises
        ------
        FileExistsError
            ``directory`` holds a calibration and ``overwrite`` is False; or it holds files but no
            calibration (no ``calibration.json``): they are never deleted, overwrite or not.
        ValueError
            A regionalisation network that cannot be described (not a DescriptorMLP or DescriptorCNN).
        """
        from ..networks import architecture, network_arrays

        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise FileExistsError(f"{directory} is a file, not a directory; choose another directory to save into")
        if directory.is_dir() and any(directory.iterdir()):
            if not (directory / "calibration.json").exists():
                raise FileExistsError(
                    f"{directory} holds files but no calibration (no calibration.json): saving would delete them, "
                    "so it is refused even with overwrite=True; choose another directory, or empty this one"
                )
            if not overwrite:
                raise FileExistsError(f"{directory} already holds a calibration; pass overwrite=True to replace it "
                                      "or choose another directory")
        description = architecture(self.network) if self.network is not None else None
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.saving-"))
        try:
            meta = self._write_files(tmp, description, network_arrays)
            (tmp / "calibration.json").write_text(json.dumps(meta, indent=1, default=_jsonable))
            swap_directory(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    def _write_files(self, folder: Path, description, network_arrays) -> dict:
        """Every file but the manifest, into ``folder``; returns the manifest."""
        maps = self.parameter_maps()
        if self.options.get("dt"):  # CF (units pint reads, axes, CRS); a result of an older format as it was
            from ..io import to_cf

            maps = to_cf(maps, crs=self.crs, dt=self.options["dt"], where=f"the parameter maps of {self.structure}")
        maps.to_netcdf(folder / "parameters.nc")
        self.history.to_csv(folder / "history.csv")
        if self.nn_parameters is not None:
            np.savez(folder / "nn_parameters.npz", **{k: np.asarray(v) for k, v in self.nn_parameters.items()})
        keys = None
        if description is not None:
            np.savez(folder / "network.npz", **network_arrays(self.network))
        elif isinstance(self.controls, dict) and "mapping" in self.controls:
            paths = jax.tree_util.tree_flatten_with_path(self.controls["mapping"])[0]
            keys = [jax.tree_util.keystr(p) for p, _ in paths]
            np.savez(folder / "mapping_controls.npz", *[np.asarray(x) for _, x in paths])
        scaling = self.descriptor_scaling
        return {
            "format": FORMAT, "structure": self.structure, "mapping": self.mapping, "optimizer": self.optimizer,
            "best_iteration": int(self.best_iteration), "message": self.message, "options": self.options,
            "crs": self.crs, "network": description, "mapping_controls": keys,
            "descriptor_scaling": None if scaling is None else scaling.to_json(),
            "files": {p.name: file_sha256(p) for p in sorted(folder.iterdir())},
        }




def _jsonable(x):
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    return str(x)


_RESAVE = "save the calibration again (CalibrationResult.save), or rerun it"


def _damaged(path: Path, what: str, err: BaseException) -> ValueError:
    text = " ".join(str(err).split()) or "no message"
    return ValueError(f"{path} cannot be read as {what} ({type(err).__name__}: {text[:200]}): the file is empty, "
                      f"truncated or damaged; {_RESAVE}")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read now (a damaged one is an error that names it)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except MemoryError:
        raise
    except Exception as err:
        raise _damaged(path, "a NumPy .npz archive", err) from None


def _check_files(directory: Path, meta: dict) -> None:
    """Every file the manifest lists is there, with the sha256 it records; a hybrid has its weights."""
    from ..structure_name import parse_structure
    from ..structures import get_module

    listed = meta.get("files")
    if listed is not None and not isinstance(listed, dict):
        raise _damaged(directory / "calibration.json", "a calibration manifest",
                       TypeError(f"'files' is a {type(listed).__name__}, not a mapping name -> sha256"))
    needed = list(listed) if listed is not None else ["parameters.nc", "history.csv"]
    for name in needed:
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory} holds calibration.json but no {name}: the calibration was not "
                                    f"saved completely, or the file was deleted; {_RESAVE}")
    for name, digest in (listed or {}).items():
        found = file_sha256(directory / name)
        if found != digest:
            raise ValueError(
                f"{directory / name} cannot be read as the file that was saved: its sha256 {found[:12]}… is not "
                f"{str(digest)[:12]}…, the one calibration.json records (the file is truncated, damaged or was "
                f"changed after saving); {_RESAVE}"
            )
    try:
        hybrid = getattr(get_module(parse_structure(meta["structure"]).hydrology), "hybrid", False)
    except ValueError:
        hybrid = False  # an unknown structure is the run's error to report, with its own message
    has_weights = "nn_parameters.npz" in listed if listed is not None else (directory / "nn_parameters.npz").exists()
    if hybrid and not has_weights:
        raise FileNotFoundError(
            f"{directory} holds a calibration of the hybrid structure {meta['structure']!r} but no nn_parameters.npz "
            f"(its flux-correction network's weights): without them it would run with zero weights; {_RESAVE}"
        )


def _mapping_controls(path: Path, keys):
    """The saved mapping controls: a dict by name where the manifest lists flat keys (``['cp']``),
    else the list of arrays in flattening order (what ``warm_start`` reads)."""
    arrays = _read_npz(path)
    try:
        leaves = [arrays[f"arr_{k}"] for k in range(len(arrays))]
    except KeyError as err:
        raise _damaged(path, "the mapping's controls", err) from None
    if keys is not None and len(keys) == len(leaves):
        names = [re.fullmatch(r"\['([^'\]]+)'\]", str(k)) for k in keys]
        if all(names):
            return {m.group(1): leaf for m, leaf in zip(names, leaves)}
    return leaves


def load_calibration(directory: str | Path) -> CalibrationResult:
    """Read a :class:`CalibrationResult` written by :meth:`CalibrationResult.save`.

    Each file the manifest (``calibration.json``) lists is checked against its sha256; a
    regionalisation network (ann, cnn) is rebuilt from its architecture and weights, so
    ``result.network`` is the trained network and :meth:`~CalibrationResult.regionalise`
    applies it to another basin.

    Raises
    ------
    FileNotFoundError
        ``directory`` holds no ``calibration.json``; a file it lists is missing (named); a
        hybrid structure without ``nn_parameters.npz``.
    ValueError
        A file that is empty, truncated, damaged or changed since it was saved (named, with what
        to do), or a ``calibration.json`` that lacks a key.
    """
    from ..mapping import DescriptorScaling
    from ..networks import from_architecture, load_network_arrays, pure

    directory = Path(directory)
    meta_path = directory / "calibration.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{directory} holds no calibration.json: it was not written by CalibrationResult.save")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise _damaged(meta_path, "JSON", err) from None
    needed = ("structure", "mapping", "optimizer", "best_iteration", "message", "options")
    lacking = [k for k in needed if not isinstance(meta, dict) or k not in meta]
    if lacking:
        raise ValueError(f"{meta_path} lacks {', '.join(map(repr, lacking))}: it was not written by "
                         f"CalibrationResult.save, or was cut short; {_RESAVE}")
    if isinstance(meta.get("format"), int) and meta["format"] > FORMAT:
        raise ValueError(f"{meta_path} is of format {meta['format']}, written by a newer hybridhydro (this one reads "
                         f"up to format {FORMAT}); update hybridhydro to read it")
    _check_files(directory, meta)
    params_path = directory / "parameters.nc"
    try:
        with xr.open_dataset(params_path) as opened:
            ds = opened.load()
    except MemoryError:
        raise
    except Exception as err:
        raise _damaged(params_path, "a NetCDF file of parameter maps", err) from None
    crs = meta.get("crs")
    if crs is None and "spatial_ref" in ds.coords:
        crs = ds["spatial_ref"].attrs.get("crs_wkt") or None
    nn = _read_npz(directory / "nn_parameters.npz") if (directory / "nn_parameters.npz").exists() else None
    history_path = directory / "history.csv"
    try:
        history = pd.read_csv(history_path, index_col="iteration")
    except Exception as err:
        what = "the history CSV (a header with 'iteration', one row per iteration)"
        raise _damaged(history_path, what, err) from None
    controls, network = None, None
    if meta.get("network"):
        path = directory / "network.npz"
        if not path.exists():
            raise FileNotFoundError(f"{directory} holds a {meta['mapping']} calibration but no network.npz (the "
                                    f"network's weights); {_RESAVE}")
        try:
            network = load_network_arrays(from_architecture(meta["network"]), _read_npz(path), where=str(path))
        except ValueError as err:
            raise ValueError(f"{err}: the network described in {meta_path} cannot be rebuilt; {_RESAVE}") from None
        controls = {"mapping": {"network": pure(network)[1]}}
    elif (directory / "mapping_controls.npz").exists():
        controls = {"mapping": _mapping_controls(directory / "mapping_controls.npz", meta.get("mapping_controls"))}
    scaling = meta.get("descriptor_scaling")
    if scaling is not None:
        try:
            scaling = DescriptorScaling.from_json(scaling)
        except ValueError as err:
            raise ValueError(f"{meta_path}: {err}; {_RESAVE}") from None
    return CalibrationResult(
        structure=meta["structure"], mapping=meta["mapping"], optimizer=meta["optimizer"],
        parameters={n: ds[n].values for n in ds.data_vars if ds[n].dims == ("y", "x")}, nn_parameters=nn,
        network=network, controls=controls, history=history, best_iteration=meta["best_iteration"],
        message=meta["message"], options=meta["options"], coords={"y": ds["y"].values, "x": ds["x"].values},
        crs=crs, descriptor_scaling=scaling,
    )
