"""A calibration's result: :class:`CalibrationResult`, written and read back (:func:`load_calibration`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import xarray as xr

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
        The regionalisation network (``ann``/``cnn`` mappings) holding its trained weights.
    controls
        The optimised controls (a pytree, in physical units for uniform/distributed).
    history
        One row per iteration: ``cost``, ``grad_norm`` (infinity norm, as smash's ``|proj g|``),
        ``validation_cost`` (when set), ``seconds`` since the start.
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
    coords: dict = field(default_factory=dict)  # the grid's y and x (m), for maps and files

    def simulate(self, basin: xr.Dataset, **options) -> xr.Dataset:
        """Run the calibrated model on ``basin`` (the same grid), e.g. over a validation period.

        The ODE options it was calibrated with (``ode_solver``, ``ode_substeps``) are the
        defaults; ``options`` are those of :func:`hybridhydro.simulate`.
        """
        from ..simulate import simulate

        solver = {k: self.options[k] for k in ("ode_solver", "ode_substeps") if self.options.get(k) is not None}
        return simulate(basin, self.structure, self.parameters, nn_parameters=self.nn_parameters,
                        **{**solver, **options})

    def parameter_maps(self) -> xr.Dataset:
        """The parameters as an xarray Dataset of (y, x) maps, units as in :mod:`hybridhydro.structures`."""
        from ..structures import PARAMETER_UNITS

        ds = xr.Dataset({n: (("y", "x"), np.asarray(v, np.float32)) for n, v in self.parameters.items()},
                        coords=self.coords)
        for n in ds.data_vars:
            ds[n].attrs["units"] = PARAMETER_UNITS.get(n, "")
        return ds

    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write the result to ``directory``: what :func:`load_calibration` reads back.

        ``parameters.nc`` (the maps), ``nn_parameters.npz`` (a hybrid's network), ``history.csv``
        ``calibration.json`` (structure, mapping, optimiser, message, options) and
        ``mapping_controls.npz`` (the mapping's controls, e.g. a regionalisation network's
        weights, in flattening order: what ``calibrate(..., warm_start=result)`` starts from).
        An existing directory is refused unless ``overwrite=True``.
        """
        directory = Path(directory)
        if (directory / "calibration.json").exists() and not overwrite:
            raise FileExistsError(
                f"{directory} already holds a calibration; pass overwrite=True to replace it or choose another directory"
            )
        directory.mkdir(parents=True, exist_ok=True)
        self.parameter_maps().to_netcdf(directory / "parameters.nc")
        if self.nn_parameters is not None:
            np.savez(directory / "nn_parameters.npz", **self.nn_parameters)
        self.history.to_csv(directory / "history.csv")
        if isinstance(self.controls, dict) and "mapping" in self.controls:
            leaves = jax.tree_util.tree_leaves(self.controls["mapping"])
            np.savez(directory / "mapping_controls.npz", *[np.asarray(x) for x in leaves])
        meta = {"structure": self.structure, "mapping": self.mapping, "optimizer": self.optimizer,
                "best_iteration": int(self.best_iteration), "message": self.message, "options": self.options}
        (directory / "calibration.json").write_text(json.dumps(meta, indent=1, default=_jsonable))
        return directory


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


def load_calibration(directory: str | Path) -> CalibrationResult:
    """Read a :class:`CalibrationResult` written by :meth:`CalibrationResult.save`.

    Raises
    ------
    FileNotFoundError
        ``directory`` holds no ``calibration.json``, or lacks ``parameters.nc`` or ``history.csv``.
    ValueError
        A file that is empty, truncated or damaged (named, with what to do), or a
        ``calibration.json`` that lacks a key.
    """
    directory = Path(directory)
    meta_path = directory / "calibration.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{directory} holds no calibration.json: it was not written by CalibrationResult.save")
    for name in ("parameters.nc", "history.csv"):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory} holds calibration.json but no {name}: the calibration was not saved "
                                    f"completely; {_RESAVE}")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise _damaged(meta_path, "JSON", err) from None
    needed = ("structure", "mapping", "optimizer", "best_iteration", "message", "options")
    lacking = [k for k in needed if not isinstance(meta, dict) or k not in meta]
    if lacking:
        raise ValueError(f"{meta_path} lacks {', '.join(map(repr, lacking))}: it was not written by "
                         f"CalibrationResult.save, or was cut short; {_RESAVE}")
    params_path = directory / "parameters.nc"
    try:
        with xr.open_dataset(params_path) as opened:
            ds = opened.load()
    except MemoryError:
        raise
    except Exception as err:
        raise _damaged(params_path, "a NetCDF file of parameter maps", err) from None
    nn = None
    if (directory / "nn_parameters.npz").exists():
        nn = _read_npz(directory / "nn_parameters.npz")
    history_path = directory / "history.csv"
    try:
        history = pd.read_csv(history_path, index_col="iteration")
    except Exception as err:
        what = "the history CSV (a header with 'iteration', one row per iteration)"
        raise _damaged(history_path, what, err) from None
    controls = None
    if (directory / "mapping_controls.npz").exists():
        arrays = _read_npz(directory / "mapping_controls.npz")
        try:
            controls = {"mapping": [arrays[f"arr_{k}"] for k in range(len(arrays))]}
        except KeyError as err:
            raise _damaged(directory / "mapping_controls.npz", "the mapping's controls", err) from None
    return CalibrationResult(
        structure=meta["structure"], mapping=meta["mapping"], optimizer=meta["optimizer"],
        parameters={n: ds[n].values for n in ds.data_vars}, nn_parameters=nn, network=None, controls=controls,
        history=history, best_iteration=meta["best_iteration"], message=meta["message"], options=meta["options"],
        coords={"y": ds["y"].values, "x": ds["x"].values},
    )
