"""Basin input and output: smash-layout datasets, NetCDF and zarr basin files.

* :func:`read_smash_dataset`: a dataset in the smash directory layout (or a bundled one:
  ``"Cance"``, ``"Lez"``, ``"France"``) into a basin Dataset.
* :func:`write_basin` / :func:`read_basin`: lossless storage of a basin Dataset in NetCDF
  (``.nc``) or zarr (``.zarr``).
* :data:`PET_HOURLY_PROFILE`: smash's hourly share of a day's PET (24 weights, step-end hour).
"""

from ._series import PET_HOURLY_PROFILE
from .netcdf import read_basin, write_basin
from .smash_layout import read_smash_dataset

__all__ = ["PET_HOURLY_PROFILE", "read_smash_dataset", "write_basin", "read_basin"]
