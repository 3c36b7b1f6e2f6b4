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


def load_calibration(directory: str | Path) -> CalibrationResult:
    """Read a :class:`CalibrationResult` written by :meth:`CalibrationResult.save`."""
    directory = Path(directory)
    if not (directory / "calibration.json").exists():
        raise FileNotFoundError(f"{directory} holds no calibration.json: it was not written by CalibrationResult.save")
    meta = json.loads((directory / "calibration.json").read_text())
    with xr.open_dataset(directory / "parameters.nc") as ds:
        ds = ds.load()
    nn = None
    if (directory / "nn_parameters.npz").exists():
        with np.load(directory / "nn_parameters.npz") as data:
            nn = {k: data[k] for k in data.files}
    history = pd.read_csv(directory / "history.csv", index_col="iteration")
    controls = None
    if (directory / "mapping_controls.npz").exists():
        with np.load(directory / "mapping_controls.npz") as data:
            controls = {"mapping": [data[f"arr_{k}"] for k in range(len(data.files))]}
    return CalibrationResult(
        structure=meta["structure"], mapping=meta["mapping"], optimizer=meta["optimizer"],
        parameters={n: ds[n].values for n in ds.data_vars}, nn_parameters=nn, network=None, controls=controls,
        history=history, best_iteration=meta["best_iteration"], message=meta["message"], options=meta["options"],
        coords={"y": ds["y"].values, "x": ds["x"].values},
    )


