"""Basin input and output: smash-layout datasets, NetCDF and zarr basin files; results as CF files.

* :func:`read_smash_dataset`: a dataset in the smash directory layout (or a bundled one:
  ``"Cance"``, ``"Lez"``, ``"France"``) into a basin Dataset.
* :func:`write_basin` / :func:`read_basin`: lossless storage of a basin Dataset in NetCDF
  (``.nc``) or zarr (``.zarr``), CF-1.10 on disk.
* :func:`write_simulation`: a simulation as CF NetCDF; :func:`write_parameter_maps`: (y, x)
  maps as CF NetCDF or GeoTIFF (:mod:`hybridhydro.io.outputs`).
* :func:`to_cf`: the CF layer every written Dataset goes through (:mod:`hybridhydro.io.cf`:
  ``Conventions``, axes, standard names, ``time_bounds``, CRS, units pint reads), and
  :func:`step_units`, the unit of a quantity per time step (``"mm dt-1"`` -> ``"mm h-1"``).
* :data:`PET_HOURLY_PROFILE`: smash's hourly share of a day's PET (24 weights, step-end hour).
"""

from ._series import PET_HOURLY_PROFILE
from .cf import CONVENTIONS, step_units, to_cf
from .netcdf import read_basin, write_basin
from .outputs import write_parameter_maps, write_simulation
from .smash_layout import read_smash_dataset

__all__ = [
    "CONVENTIONS",
    "PET_HOURLY_PROFILE",
    "read_smash_dataset",
    "write_basin",
    "read_basin",
    "write_simulation",
    "write_parameter_maps",
    "to_cf",
    "step_units",
]
