"""The notebook pipeline: parameter files (pydantic), the papermill runner, and the CLI behind it.

    python -m hybridhydro check   params/cance.yaml            # validate, print the merged parameters
    python -m hybridhydro run     params/cance.yaml            # execute the stages into runs/cance/
    python -m hybridhydro prepare params/ci.yaml --out DIR     # parameterised notebooks for nbval

The pipeline knows nothing of hydrology: it reads parameters, and runs notebooks.
"""

from .params import ParamsError, Params, deep_merge, load_params
from .record import PipelineError, RunInterrupted, RunLocked, StaleInputs
from .runner import (
    NOTEBOOKS_DIR,
    OutputExistsError,
    RunResult,
    StageFailed,
    StageResult,
    declared_parameters,
    discover_stages,
    prepare,
    run,
    run_plan,
    run_status,
    select_stages,
    stages_to_run,
    study_stages,
)

__all__ = [
    "NOTEBOOKS_DIR",
    "OutputExistsError",
    "Params",
    "ParamsError",
    "PipelineError",
    "RunInterrupted",
    "RunLocked",
    "RunResult",
    "StageFailed",
    "StaleInputs",
    "StageResult",
    "declared_parameters",
    "deep_merge",
    "discover_stages",
    "load_params",
    "prepare",
    "run",
    "run_plan",
    "run_status",
    "select_stages",
    "stages_to_run",
    "study_stages",
]
