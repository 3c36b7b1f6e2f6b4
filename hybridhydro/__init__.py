"""hybridhydro: spatially distributed hybrid physics-AI hydrological modelling in JAX.

The public API, by stage of the data flow (docs/architecture.md draws it):

* basin: :func:`read_smash_dataset`, :func:`read_basin`, :func:`write_basin`,
  :func:`synthetic_basin`, :func:`known_answer_basin` (a basin whose discharge hides a process
  GR4 lacks), :func:`check_basin`, :func:`crop_basin` (the cells upstream of a gauge)
* your own basin (:mod:`hybridhydro.newbasin`): :func:`d8_from_dem`, :func:`open_flwdir`,
  :func:`drained_area`, :func:`find_outlets`, :func:`build_basin`, :func:`write_smash_dataset`,
  :func:`write_basin_case` (``basin.nc`` and a parameter file for the pipeline), :func:`write_qobs_csv`;
  stage 00's settings :class:`NewBasinParams` (:func:`new_basin_settings`) and its demo's
  :func:`synthetic_forcing`, :func:`synthetic_descriptors`
* outputs: :func:`write_simulation`, :func:`write_parameter_maps` (NetCDF or GeoTIFF), and
  :func:`to_cf`, the CF conventions every written file follows
* mesh: :func:`build_mesh`, :class:`Mesh` (more in :mod:`hybridhydro.mesh`)
* structure: :func:`parse_structure` (the one parser of ``"<snow>-<hydrology>-<routing>"``),
  :class:`Structure`, :func:`calibrated_parameters`, :func:`get_module` (a module's names),
  the tables :data:`PARAMETER_BOUNDS`, :data:`PARAMETER_UNITS`, :data:`SOURCES`,
  :data:`ODE_SOLVERS`, and :func:`ill_posed_cells`
* run: :func:`prepare_run` (basin + structure -> :class:`RunInputs`, validated once) and
  :func:`run` (the pure, jittable, differentiable run); :func:`simulate` (both, with an
  xarray result), :func:`network_weights`, :func:`water_balance`, :func:`balance_closure`,
  :func:`closes`
* hybrid: :class:`FluxCorrectionNet` (and the regionalisation networks in
  :mod:`hybridhydro.networks`), :func:`make_mapping` (descriptors -> parameter maps),
  :func:`transform_descriptors`
* calibration: :func:`calibrate` (controls -> parameter maps -> run -> cost, minimised;
  :func:`load_calibration` reads a saved one), :func:`evaluate` (metrics per gauge of any
  simulation); periods read ``(start, end]`` everywhere (:mod:`hybridhydro.periods`)
* baseline: :func:`train_lstm` (a regional LSTM, lumped per gauge: the pure-ML reference of
  the comparison), :class:`LSTMConfig`, :class:`LSTMResult`, :func:`load_lstm`
* pipeline: :func:`load_params`, :func:`open_basin` (a case's basin, whatever ``basin.source`` names;
  the notebook runner is ``python -m hybridhydro``); initial states: :func:`final_states` and
  :func:`write_states` (an earlier run's final states, for ``basin.initial_states``)

Public modules besides the top level (:data:`PUBLIC_MODULES`): :mod:`~hybridhydro.protocol`
(the paper's experiment), :mod:`~hybridhydro.report` (tables and figures the notebooks show),
:mod:`~hybridhydro.plotting`, :mod:`~hybridhydro.periods` and :mod:`~hybridhydro.studies` (the referees'
studies: solvers in training, cumulative budgets, data-flow diagrams). The notebooks use nothing else.
"""

from . import periods, plotting, protocol, report, studies  # noqa: F401  (public modules)
from .balance import BALANCE_TOLERANCE, balance_closure, closes, water_balance
from .basin import ForcingWarning, check_basin
from .calibration import calibrate, load_calibration
from .cost import evaluate
from .crop import crop_basin
from .lstm import LSTMConfig, LSTMResult, load_lstm, train_lstm
from .io import read_basin, read_smash_dataset, to_cf, write_basin, write_parameter_maps, write_simulation
from .mapping import make_mapping, transform_descriptors
from .mesh import Mesh, build_mesh
from .newbasin import (NewBasinParams, build_basin, d8_from_dem, drained_area, find_outlets, new_basin_settings,
                       open_flwdir, synthetic_descriptors, synthetic_forcing, write_basin_case, write_qobs_csv,
                       write_smash_dataset)
from .networks import FluxCorrectionNet
from .pipeline import load_params
from .pipeline.sources import open_basin
from .states import final_states, write_states
from .model import RunInputs, prepare_run, run
from .simulate import network_weights, simulate
from .structure_name import Structure, calibrated_parameters, parse_structure
from .structures import ODE_SOLVERS, PARAMETER_BOUNDS, PARAMETER_UNITS, SOURCES, get_module, ill_posed_cells
from .synthetic import synthetic_basin
from .known_answer import known_answer_basin
from .cache import compilation_cache_directory, configure_compilation_cache

configure_compilation_cache()  # JAX's persistent compilation cache (hybridhydro.cache says where it is)

__version__ = "0.1.0"

#: The modules the documentation names as public, besides the package's top level.
PUBLIC_MODULES = ("periods", "plotting", "protocol", "report", "studies")

__all__ = [
    "BALANCE_TOLERANCE",
    "FluxCorrectionNet",
    "ForcingWarning",
    "NewBasinParams",
    "LSTMConfig",
    "LSTMResult",
    "Mesh",
    "ODE_SOLVERS",
    "PARAMETER_BOUNDS",
    "PARAMETER_UNITS",
    "PUBLIC_MODULES",
    "RunInputs",
    "SOURCES",
    "Structure",
    "__version__",
    "balance_closure",
    "build_basin",
    "build_mesh",
    "calibrate",
    "calibrated_parameters",
    "compilation_cache_directory",
    "configure_compilation_cache",
    "check_basin",
    "closes",
    "crop_basin",
    "d8_from_dem",
    "drained_area",
    "evaluate",
    "find_outlets",
    "final_states",
    "get_module",
    "ill_posed_cells",
    "load_calibration",
    "load_lstm",
    "load_params",
    "make_mapping",
    "network_weights",
    "new_basin_settings",
    "open_flwdir",
    "open_basin",
    "parse_structure",
    "prepare_run",
    "read_basin",
    "read_smash_dataset",
    "run",
    "simulate",
    "synthetic_basin",
    "synthetic_descriptors",
    "synthetic_forcing",
    "known_answer_basin",
    "to_cf",
    "train_lstm",
    "transform_descriptors",
    "water_balance",
    "write_basin",
    "write_basin_case",
    "write_parameter_maps",
    "write_qobs_csv",
    "write_simulation",
    "write_smash_dataset",
    "write_states",
]
