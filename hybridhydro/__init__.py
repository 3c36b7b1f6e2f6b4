"""hybridhydro: spatially distributed hybrid physics-AI hydrological modelling in JAX.

The public API, by stage of the data flow (see README.md):

* basin: :func:`read_smash_dataset`, :func:`read_basin`, :func:`write_basin`,
  :func:`synthetic_basin`, :func:`check_basin`
* mesh: :func:`build_mesh`, :class:`Mesh` (more in :mod:`hybridhydro.mesh`)
* model: :func:`simulate`, :func:`network_weights` (structures in
  :mod:`hybridhydro.structures`), :func:`water_balance`
* hybrid: :class:`FluxCorrectionNet` (and the regionalisation networks in
  :mod:`hybridhydro.networks`), :func:`make_mapping` (descriptors -> parameter maps)
* calibration: :func:`calibrate` (controls -> parameter maps -> simulation -> cost,
  minimised; :func:`load_calibration` reads a saved one), :func:`evaluate` (metrics per gauge of any simulation)
* pipeline: :func:`load_params` (the notebook runner is ``python -m hybridhydro``)
"""

from .balance import BALANCE_TOLERANCE, balance_closure, closes, water_balance
from .basin import check_basin
from .calibration import calibrate, load_calibration
from .cost import evaluate
from .io import read_basin, read_smash_dataset, write_basin
from .mapping import make_mapping
from .mesh import Mesh, build_mesh
from .networks import FluxCorrectionNet
from .pipeline import load_params
from .simulate import network_weights, simulate
from .synthetic import synthetic_basin

__version__ = "0.1.0"

__all__ = [
    "FluxCorrectionNet",
    "Mesh",
    "__version__",
    "build_mesh",
    "calibrate",
    "check_basin",
    "evaluate",
    "load_calibration",
    "load_params",
    "make_mapping",
    "network_weights",
    "read_basin",
    "read_smash_dataset",
    "simulate",
    "synthetic_basin",
    "water_balance",
    "balance_closure",
    "closes",
    "BALANCE_TOLERANCE",
    "write_basin",
]
