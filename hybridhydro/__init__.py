"""hybridhydro: spatially distributed hybrid physics-AI hydrological modelling in JAX.

The public API, by stage of the data flow (see README.md):

* basin: :func:`read_smash_dataset`, :func:`read_basin`, :func:`write_basin`,
  :func:`synthetic_basin`, :func:`check_basin`
* mesh: :func:`build_mesh`, :class:`Mesh` (more in :mod:`hybridhydro.mesh`)
* model: :func:`simulate` (structures in :mod:`hybridhydro.structures`)
* pipeline: :func:`load_params` (the notebook runner is ``python -m hybridhydro``)
"""

from .basin import check_basin
from .io import read_basin, read_smash_dataset, write_basin
from .mesh import Mesh, build_mesh
from .pipeline import load_params
from .simulate import simulate
from .synthetic import synthetic_basin

__version__ = "0.1.0"

__all__ = [
    "Mesh",
    "__version__",
    "build_mesh",
    "check_basin",
    "load_params",
    "read_basin",
    "read_smash_dataset",
    "simulate",
    "synthetic_basin",
    "write_basin",
]
