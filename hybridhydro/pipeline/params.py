"""Parameter files: ``params/base.yaml`` deep-merged with one file per case, validated by pydantic.

A case file (``params/cance.yaml``) names only what differs from the base. It is merged over
the file named by its ``extends`` key (a path relative to the case file); without that key, over
``base.yaml`` in the same folder when there is one; ``extends: null`` merges over nothing but the
defaults written here. Mappings merge key by key; lists and values replace.

Every key has a default and a one-line description (``python -m hybridhydro check FILE``
prints them), and every section forbids unknown keys: a misspelt key is an error that names
the key, the file that set it and the closest valid key.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from ..calibration.optimizers import DEFAULT_OPTIMIZER
from ..structures import INITIALIZERS, NN_INPUT_SCALINGS
from ..newbasin import NewBasinParams
from ..templates import default_root as default_templates_root

#: Basins that hydro-smash ships (``smash.factory.load_dataset``), by their canonical name.
SMASH_DATASETS = ("Cance", "Lez", "France")

#: Suffixes of a basin file written by :func:`hybridhydro.write_basin`, and what each is.
BASIN_FILE_SUFFIXES = {".nc": "netcdf", ".zarr": "zarr"}

#: The key of a case file that names the file it is merged over (not a parameter).
EXTENDS_KEY = "extends"

#: The folder holding ``params/`` and ``notebooks/``: a repository checkout's root (an editable
#: install), else the copy a wheel carries (:mod:`hybridhydro.templates`). A relative parameter
#: file that is not found from the current directory is looked for from here.
REPOSITORY_ROOT = default_templates_root()

#: How error messages name parameters given as a mapping (a relative ``basin.source`` in one
#: is read from the current directory, this name's parent).
MAPPING_SOURCE = Path("<parameters given as a mapping>")


#: A layer width: a whole number >= 1 (a bool or a float is refused, as by the library's networks).
LayerWidth = Annotated[int, Field(ge=1, strict=True)]


class ParamsError(ValueError):
    """A parameter file is unreadable or invalid; the message says which file, which key, and what to do."""


class _Section(BaseModel):
    """A block of parameters: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True, validate_assignment=True)


class SyntheticBasinParams(_Section):
    """Keyword arguments of :func:`hybridhydro.synthetic_basin` (used when ``basin.source`` is ``synthetic``)."""

    nrow: int = Field(16, ge=4, description="rows of the flow-direction grid, in cells")
    ncol: int = Field(16, ge=4, description="columns of the flow-direction grid, in cells")
    ntime: int = Field(240, ge=1, description="number of time steps")
    dt: float = Field(3600, gt=0, le=86400, description="time step in seconds (a divisor of one day)")
    seed: int = Field(0, description="random seed: the same seed gives the same basin")
    ngauge: int = Field(2, ge=1, description="number of gauges: the outlet plus nested gauges")
    start: str = Field("2020-01-01", description="start of the series; the first step ends at start + dt")
    qobs: bool = Field(True, description="make observed discharge (otherwise qobs is all NaN)")
    missing_fraction: float = Field(0.0, ge=0.0, le=0.5, description="share of observed discharge values set to NaN at random")
    resolution: float = Field(1000.0, gt=0, description="cell size in metres")
    epsg: int = Field(2154, ge=0, description="EPSG code of the (projected, metric) CRS")

    @field_validator("start", mode="before")
    @classmethod
    def _iso_start(cls, value: Any) -> str:
        return _timestamp(value)


class KnownAnswerBasinParams(_Section):
    """Keyword arguments of :func:`hybridhydro.known_answer_basin` (used when ``basin.source`` is ``known_answer``)."""

    cells: int = Field(600, ge=50, le=5000, strict=True, description="about how many active cells (1 km2 each)")
    ngauge: int = Field(8, ge=2, le=40, strict=True, description="number of gauges: outlets of separate catchments and nested ones")
    years: float = Field(3.0, ge=0.05, le=30, description="length of the series, in years of 365.25 days")
    dt: float = Field(86400, description="time step in seconds: 86400 (daily) or 10800 (3-hourly)")
    truth: Literal["exchange", "slow_store", "gr4"] = Field(
        "exchange", description="the hidden process: exchange (saturating groundwater loss), slow_store (slow aquifer), gr4 (none)"
    )
    noise: float = Field(0.05, ge=0.0, le=1.0, description="standard deviation of the lognormal error of qobs (0: the clean truth)")
    seed: int = Field(0, strict=True, description="seed of the forcing, descriptors and noise: the same seed gives the same basin")
    start: str = Field("2015-01-01", description="start of the series; the first step ends at start + dt")
    routing: Literal["lr", "kw", "lag0", "zero"] = Field(
        "lr", description="routing of the truth and of q_gr4 (set it to calibration.routing)"
    )
    bbox: list[float] | None = Field(
        None, min_length=4, max_length=4,
        description="(xmin, xmax, ymin, ymax) in Lambert-93 m where outlets are looked for; null: the Languedoc coast",
    )

    @field_validator("dt")
    @classmethod
    def _known_dt(cls, value: float) -> float:
        if value not in (86400, 10800):
            raise ValueError(f"dt must be 86400 (daily) or 10800 (3-hourly) seconds, got {value}")
        return float(value)

    @field_validator("bbox")
    @classmethod
    def _ordered_bbox(cls, value):
        if value is not None and not (value[0] < value[1] and value[2] < value[3]):
            raise ValueError(f"bbox must be (xmin, xmax, ymin, ymax) with xmin < xmax and ymin < ymax, got {value}")
        return value

    @field_validator("start", mode="before")
    @classmethod
    def _iso_start(cls, value: Any) -> str:
        return _timestamp(value)


class BasinParams(_Section):
    """Where the basin comes from, and the simulation window."""

    source: str = Field(
        "synthetic",
        description="'Cance', 'Lez' or 'France' (hydro-smash datasets), 'synthetic', 'known_answer', a directory in the smash "
        "layout, or a basin file written by hybridhydro.write_basin (.nc or .zarr); paths relative to the parameter file "
        "that sets them",
    )
    start: str | None = Field(None, description="start of the simulation window, e.g. '2014-09-15 00:00'; null: the dataset's own")
    end: str | None = Field(None, description="end of the simulation window (the last step ends here); null: the dataset's own")
    spinup_start: str | None = Field(
        None,
        description="start of a spin-up before basin.start: the data are read and every model runs from here, and the "
        "steps up to basin.start are warm-up only (in no cost, no score; calibration.warmup_fraction then unused); "
        "null: no spin-up",
    )
    initial_states: str | None = Field(
        None,
        description="NetCDF of initial states on the basin's grid (variables hp, ht, ... as the structures name them: "
        "normalised levels in (0, 1), hlr in mm; hybridhydro.write_states writes one from a run's final states), "
        "relative to the parameter file; null: smash's defaults",
    )
    synthetic: SyntheticBasinParams = Field(
        default_factory=SyntheticBasinParams, description="the synthetic basin, when source is 'synthetic'"
    )
    known_answer: KnownAnswerBasinParams = Field(
        default_factory=KnownAnswerBasinParams,
        description="the known-answer basin (true maps, a hidden process), when source is 'known_answer'",
    )

    @field_validator("start", "end", "spinup_start", mode="before")
    @classmethod
    def _iso_time(cls, value: Any) -> str | None:
        return None if value is None else _timestamp(value)

    @field_validator("source")
    @classmethod
    def _canonical_source(cls, value: str) -> str:
        known = {name.lower(): name for name in (*SMASH_DATASETS, "synthetic", "known_answer")}
        return known.get(value.strip().lower(), value)

    @model_validator(mode="after")
    def _window(self) -> "BasinParams":
        if self.source in ("synthetic", "known_answer") and (self.start is not None or self.end is not None):
            length = "ntime" if self.source == "synthetic" else "years"
            raise ValueError(
                f"basin.start and basin.end select a window of a smash dataset; for a {self.source} basin set "
                f"basin.{self.source}.start and basin.{self.source}.{length} instead"
            )
        if self.start is not None and self.end is not None and pd.Timestamp(self.start) >= pd.Timestamp(self.end):
            raise ValueError(f"basin.start ({self.start}) must come before basin.end ({self.end})")
        if self.spinup_start is not None:
            if self.source in ("synthetic", "known_answer"):
                raise ValueError(
                    f"basin.spinup_start: a {self.source} basin is generated from basin.{self.source}.start and has no "
                    "basin.start to spin up to; use calibration.warmup_fraction, or write the basin to a file "
                    "(hybridhydro.write_basin) and set basin.source to it with basin.spinup_start and basin.start"
                )
            if self.start is None:
                raise ValueError(
                    f"basin.spinup_start ({self.spinup_start}) needs basin.start: the spin-up runs from spinup_start to "
                    "basin.start, where scoring begins; set basin.start, or remove basin.spinup_start"
                )
            if pd.Timestamp(self.spinup_start) >= pd.Timestamp(self.start):
                raise ValueError(f"basin.spinup_start ({self.spinup_start}) must come before basin.start ({self.start})")
        return self

    @property
    def is_smash_dataset(self) -> bool:
        """True when ``source`` names a dataset shipped with hydro-smash."""
        return self.source in SMASH_DATASETS

    @property
    def kind(self) -> str:
        """What ``source`` is: ``smash_dataset``, ``synthetic``, ``known_answer``, ``directory`` (smash
        layout), ``netcdf`` (a ``.nc`` basin file) or ``zarr`` (a ``.zarr`` store)."""
        if self.is_smash_dataset:
            return "smash_dataset"
        if self.source in ("synthetic", "known_answer"):
            return self.source
        return BASIN_FILE_SUFFIXES.get(Path(self.source).suffix.lower(), "directory")

    @property
    def read_start(self) -> str | None:
        """Where the data are read from: ``spinup_start`` when set, else ``start``."""
        return self.spinup_start if self.spinup_start is not None else self.start


class ForwardParams(_Section):
    """The forward run of stage 02 (default parameters of a conceptual structure)."""

    structure: str = Field(
        "gr4-lr",
        pattern=r"^[a-z0-9_]+(-[a-z0-9_]+){1,2}$",
        description="smash structure '<hydrology>-<routing>' or '<snow>-<hydrology>-<routing>', e.g. gr4-lr, gr4_ode-kw",
    )
    ode_structure: str | None = Field(
        "gr4_ode-lr",
        description=(
            "a continuous state-space structure run beside `structure` to show the implicit solver "
            "(Newton iterations, residuals); null skips it"
        ),
    )
    balance_tolerance: float = Field(
        1e-6,
        gt=0,
        lt=1,
        description=(
            "largest unexplained water-balance residual accepted over each catchment, as a share of the water "
            "turned over (the rain in a rain-driven run); named sources never count against it"
        ),
    )
    storm_factor: float = Field(
        10.0,
        gt=1,
        description="the storm scenario multiplies the basin's rain by this factor (accounting under heavy rain)",
    )

    @field_validator("structure", "ode_structure")
    @classmethod
    def _known_structure(cls, value):
        if value is None:
            return value
        from ..structure_name import parse_structure  # the library's own parser: one list of names

        return parse_structure(value).label

    @field_validator("ode_structure")
    @classmethod
    def _implicit(cls, value):
        from .. import structures
        from ..structure_name import parse_structure

        if value is not None and not structures.get_module(parse_structure(value).hydrology).diagnostics:
            raise ValueError(f"{value!r} has no implicit solver; give a gr4_ode structure (e.g. gr4_ode-lr) or null")
        return value


class HybridParams(_Section):
    """The hybrid models of stage 05: flux-correction networks, the UDE and its solvers."""

    structures: list[str] = Field(
        ["gr4_mlp-lr", "gr4_ude-lr"],
        min_length=1,
        description="hybrid structures to build, e.g. gr4_mlp-lr, gr6_mlp-kw, gr4_ude-lr (a *_mlp or gr4_ude hydrology)",
    )
    hidden: list[LayerWidth] = Field(
        [16], min_length=1, max_length=2, description="hidden layer widths of the network (one or two, each >= 1)"
    )
    initializer: Literal[INITIALIZERS] = Field(  # type: ignore[valid-type]  (the library's one list)
        "he_uniform", description="initial weights (smash's initialisers; zeros: the hybrid equals its parent)"
    )
    weight_scale: float = Field(
        0.1, ge=0, description="factor on the initial weights (smash's training guide: He-uniform times 0.1)"
    )
    input_scaling: Literal[NN_INPUT_SCALINGS] = Field(  # type: ignore[valid-type]  (the library's one list)
        "raw",
        description="how the networks see pn and en while they train: raw (smash's, mm per step) or hourly "
        "(mm per hour: the same initial corrections and learning rate at any dt)",
    )
    seed: int | None = Field(
        None, strict=True, description="seed of the correction networks' initial weights (a whole number); null: the run's `seed`"
    )
    solvers: list[str] = Field(
        ["newton", "conservative", "implicit", "heun", "rk4"],
        min_length=1,
        description=(
            "gr4_ude step schemes compared: newton (smash's), conservative (always a feasible root, overflow to "
            "runoff), implicit (fully implicit), heun, rk4 (explicit)"
        ),
    )
    substeps: int = Field(4, ge=1, le=256, description="sub-steps per time step of the explicit schemes")
    reference_substeps: int = Field(
        64, ge=1, le=4096, description="sub-steps of the RK4 run that serves as the accurate reference"
    )
    balance_tolerance: float = Field(
        1e-6,
        gt=0,
        lt=1,
        description="largest unexplained |residual| accepted, as a share of the water turned over (named terms apart)",
    )
    storm_factor: float = Field(10.0, gt=1, description="the storm scenario multiplies the basin's rain by this factor")

    @field_validator("solvers")
    @classmethod
    def _known_solvers(cls, value):
        from ..structures import ODE_SOLVERS  # the library's one list of solvers

        return _known(value, ODE_SOLVERS, "ODE solver")

    @field_validator("structures")
    @classmethod
    def _hybrid_structures(cls, value):
        from .. import structures
        from ..structure_name import parse_structure

        out = []
        for name in value:
            s = parse_structure(name)
            if not getattr(structures.get_module(s.hydrology), "hybrid", False):
                raise ValueError(
                    f"{name!r} is not a hybrid structure; use one of {', '.join(structures.HYBRID_MODULES)} "
                    "as its hydrology (e.g. gr4_mlp-lr)"
                )
            out.append(s.label)
        return out


class OptimizerSettings(_Section):
    """How the models of one mapping are calibrated (any key left out keeps smash's default)."""

    optimizer: str | None = Field(
        None, description="optimiser (null: smash's for the mapping: "
        + ", ".join(f"{opt} {mapping}" for mapping, opt in DEFAULT_OPTIMIZER.items()) + ")"
    )
    maxiter: int | None = Field(
        None, ge=0, strict=True, description="iterations (sbs: outer iterations); null: smash's default for the optimiser"
    )
    learning_rate: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="adaptive optimisers' learning rate (finite, > 0); null: smash's"
    )
    schedule: str = Field(
        "constant",
        description="learning-rate schedule of adam, sgd, adagrad, rmsprop: constant (smash's), cosine, exponential, "
        "warmup_cosine (down to 1 % of the rate at maxiter)",
    )

    transform: str = Field(
        "normalize",
        description="coordinates of the bounded parameters of uniform/distributed under lbfgsb or adam: normalize "
        "(smash's, [0, 1] by the bounds) or sbs (log, logit, asinh as smash's sbs); the sbs optimiser always uses sbs",
    )

    @field_validator("transform")
    @classmethod
    def _known_transform(cls, value):
        from ..calibration import TRANSFORMS  # the library's one list of transforms

        return _known([value], TRANSFORMS, "transform")[0]

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, value):
        from ..calibration import LR_SCHEDULES  # the library's one list of schedules

        return _known([value], LR_SCHEDULES, "schedule")[0]

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, value):
        from ..calibration import OPTIMIZERS  # the library's one list of optimisers

        return value if value is None else _known([value], OPTIMIZERS, "optimizer")[0]


def _known(names, table, what: str, where: str = ""):
    """``names`` unchanged when each is a key of ``table``, else the error that lists the choices."""
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}{where}; choose among {', '.join(table)}")
    return names


class CalibrationParams(_Section):
    """The comparison of stages 03-06: which models, where they calibrate, where they validate."""

    models: list[str] = Field(
        ["gr4-uniform", "gr4-distributed", "gr4-ann", "gr4-cnn", "gr4_mlp-distributed", "gr4_mlp-ann",
         "gr4_ode-distributed", "gr4_ode-ann", "gr4_ude-distributed", "gr4_ude-ann"],
        min_length=1,
        description=(
            "models '<hydrology>-<mapping>': 03 calibrates uniform/distributed conceptual models, 04 the "
            "regionalisations (ann, cnn, multi-*), 05 the hybrids; 06 compares them all"
        ),
    )
    routing: str = Field("lr", description="routing of every model: lag0, lr or kw (the paper uses kw)")
    cost: list[str] = Field(["nse"], min_length=1, description="cost components, summed over the calibration gauges")
    metrics: list[str] = Field(["nse", "kge"], min_length=1, description="scores of the comparison table")
    calibration_period: list[str] | None = Field(
        None, min_length=2, max_length=2,
        description="(start, end] of calibration; null: the first half of the run after the warm-up",
    )
    validation_period: list[str] | None = Field(
        None, min_length=2, max_length=2, description="(start, end] of temporal validation; null: the second half"
    )
    warmup_fraction: float = Field(0.1, ge=0, lt=0.5, description="share of the run kept as warm-up when periods are null")
    swap_periods: bool = Field(
        False, description="exchange the calibration and validation periods (the split-sample test's other half)"
    )
    validation_gauges: list[str] | Literal["smallest"] | None = Field(
        "smallest",
        description="gauges held out as pseudo-ungauged: codes, 'smallest' (smallest drained area) or null (none)",
    )
    optimizers: dict[str, OptimizerSettings] = Field(
        default_factory=dict,
        description="per mapping (uniform, distributed, ann, cnn, ...): optimizer, maxiter, learning_rate",
    )
    pre_maxiter: int | None = Field(
        None, ge=0, strict=True,
        description="hybrids' pre-calibration iterations when no pre-calibrated parent is at hand (null: the guide's)",
    )
    bounds: dict[str, list[float]] | None = Field(
        None,
        description="calibration bounds that replace smash's for some parameters, e.g. {cp: [10, 1000]} (a "
        "remedy for parameters that run to a bound); null: smash's bounds",
    )
    baselines: list[Literal["lstm"]] = Field(
        ["lstm"],
        description="pure-ML baselines trained on the same split and scored beside the models in stage 06: lstm (a "
        "regional LSTM, lumped per gauge, hybridhydro.lstm); [] for none",
    )
    lstm: dict[str, Any] = Field(
        default_factory=dict,
        description="settings of the LSTM baseline that differ from hybridhydro.LSTMConfig's defaults (hidden, "
        "seq_length, spinup, dropout, learning_rate, iterations, batch_size, clip_norm, ...)",
    )
    health_restarts: int = Field(
        0, ge=0, strict=True,
        description="a network training whose health checks fail (saturation, vanishing gradient, plateau above "
        "the parent, unconverged ODE steps) starts again from the next seeds, up to this many times; 0: only recorded",
    )

    @field_validator("models")
    @classmethod
    def _known_models(cls, value):
        from ..protocol import ModelName

        return [str(ModelName.parse(v)) for v in value]

    @field_validator("bounds")
    @classmethod
    def _bounds_pairs(cls, value):
        for name, pair in (value or {}).items():
            if len(pair) != 2 or not pair[0] < pair[1]:
                raise ValueError(f"bounds.{name}: {pair} is not [low, high] with low < high")
        return value

    @field_validator("lstm")
    @classmethod
    def _lstm_settings(cls, value):
        from ..lstm import LSTMConfig  # the library's one check of the settings

        LSTMConfig.from_dict(value)
        return value

    @field_validator("routing")
    @classmethod
    def _known_routing(cls, value):
        from ..structure_name import parse_structure

        parse_structure(f"gr4-{value}")
        return value

    @field_validator("cost")
    @classmethod
    def _known_components(cls, value):
        from ..cost import COMPONENTS

        return _known(value, COMPONENTS, "cost component(s)")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value):
        from ..cost import METRICS

        return _known(value, METRICS, "metric(s)")

    @field_validator("optimizers")
    @classmethod
    def _known_mappings(cls, value):
        from ..mapping import MAPPINGS

        _known(value, MAPPINGS, "mapping(s)", where=" in optimizers")
        for mapping, settings in value.items():
            if getattr(settings, "transform", "normalize") != "normalize" and mapping not in ("uniform", "distributed"):
                raise ValueError(f"optimizers.{mapping}.transform: {settings.transform!r} transforms bounded "
                                 f"parameters, and {mapping} calibrates network weights or coefficients; remove it "
                                 "(transforms apply to uniform and distributed)")
        return value

    @field_validator("calibration_period", "validation_period")
    @classmethod
    def _iso_period(cls, value):
        if value is None:
            return None
        start, end = (_timestamp(v) for v in value)
        if not pd.Timestamp(start) < pd.Timestamp(end):
            raise ValueError(f"the start {start} must be before the end {end} (a period is (start, end])")
        return [start, end]


class RefereeStudyParams(_Section):
    """The referees' studies of stage 08_referees (a study stage: it runs only when listed in ``stages``)."""

    mapping: str = Field(
        "distributed",
        description="mapping of the gr4_ude (gr4_ude-<calibration.routing>) trained once per solver, from one start",
    )
    solvers: list[str] = Field(
        ["newton", "conservative", "implicit", "rk4:4", "rk4:16"],
        min_length=1,
        description="solvers compared in training, '<solver>' or '<solver>:<sub-steps>' (sub-steps matter for heun, rk4)",
    )
    optimizer: str | None = Field(None, description="optimiser of the solver study (null: the mapping's, lbfgsb for distributed)")
    maxiter: int = Field(10, ge=1, strict=True, description="iterations of each solver's training")
    learning_rate: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="adaptive optimisers' learning rate (null: smash's)"
    )
    reference_substeps: int | None = Field(
        64, ge=1, le=4096,
        description="each trained model is also scored by RK4 with this many sub-steps (an accurate solver); null: skip",
    )
    budget_models: list[str] = Field(
        ["gr4-distributed", "gr4_mlp-distributed", "gr4_ude-distributed"],
        min_length=1,
        description="models whose cumulative water budget is drawn (read from the run's models/, trained if absent)",
    )
    budget_points: int = Field(150, ge=2, le=100000, description="steps at which the cumulative budget is evaluated")
    diagram_hydrologies: list[str] = Field(
        ["gr4", "gr4_mlp", "gr4_ode", "gr4_ude"], min_length=1, description="rows of the data-flow diagram grid"
    )
    diagram_mappings: list[str] = Field(
        ["uniform", "distributed", "ann", "cnn"], min_length=1, description="columns of the data-flow diagram grid"
    )

    @field_validator("solvers")
    @classmethod
    def _known_study_solvers(cls, value):
        from ..studies import parse_solver  # the library's one reading of a solver

        for spec in value:
            parse_solver(spec)
        return value

    @field_validator("mapping")
    @classmethod
    def _known_study_mapping(cls, value):
        from ..mapping import MAPPINGS

        return _known([value], MAPPINGS, "mapping")[0]

    @field_validator("diagram_mappings")
    @classmethod
    def _known_diagram_mappings(cls, value):
        from ..mapping import MAPPINGS

        return _known(value, MAPPINGS, "mapping(s)")

    @field_validator("optimizer")
    @classmethod
    def _known_study_optimizer(cls, value):
        from ..calibration import OPTIMIZERS

        return value if value is None else _known([value], OPTIMIZERS, "optimizer")[0]

    @field_validator("budget_models")
    @classmethod
    def _known_budget_models(cls, value):
        from ..protocol import ModelName

        return [str(ModelName.parse(v)) for v in value]

    @field_validator("diagram_hydrologies")
    @classmethod
    def _known_hydrologies(cls, value):
        from .. import structures

        for name in value:
            structures.get_module(name)
        return value


class FigureParams(_Section):
    """How the notebooks save their figures (they also show them inline)."""

    dpi: int = Field(120, ge=30, le=600, description="resolution of saved raster figures, in dots per inch")
    format: Literal["png", "svg", "pdf"] = Field("png", description="file format of saved figures, in <output_dir>/figures/")


class Params(_Section):
    """All the parameters of one case: what the runner runs, and what each notebook receives.

    Notebooks receive every section whole (:meth:`notebook_parameters`): ``params``, the
    validated parameters as one JSON-able dictionary, which a notebook reads back with
    ``cfg = hybridhydro.load_params(params)`` and uses as ``cfg.forward.structure``,
    ``cfg.calibration.optimizers``, ...; no value is renamed or copied.
    """

    case: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="name of the run: outputs go to <output-root>/<case>/ (default: the parameter file's name)",
    )
    basin: BasinParams = Field(default_factory=BasinParams, description="the basin and the simulation window")
    stages: list[str] | None = Field(
        None,
        description="notebook stems to run (e.g. [01_basin]); they always run in name order; null: every notebook in "
        "notebooks/ except the study stages (07_known_answer, 08_referees), which run only when listed",
    )
    forward: ForwardParams = Field(default_factory=ForwardParams, description="the forward run (stage 02)")
    hybrid: HybridParams = Field(default_factory=HybridParams, description="the hybrid models (stage 05)")
    calibration: CalibrationParams = Field(
        default_factory=CalibrationParams, description="the calibrations, validations and comparison (stages 03-06)"
    )
    figures: FigureParams = Field(default_factory=FigureParams, description="saved figures")
    referees: RefereeStudyParams = Field(
        default_factory=RefereeStudyParams, description="the referees' studies (stage 08_referees, run only when listed)"
    )
    new_basin: NewBasinParams = Field(
        default_factory=NewBasinParams,
        description="stage 00_new_basin (your own basin; run only when listed): where the new basin's data are; "
        "the defaults build the demo crop of France",
    )
    seed: int = Field(
        0,
        strict=True,
        description="seed of every network's initial weights (regionalisation and correction networks; "
        "`python -m hybridhydro batch --seeds` sets it); hybrid.seed, when set, overrides it for the hybrids",
    )

    @property
    def hybrid_seed(self) -> int:
        """The seed of the correction networks: ``hybrid.seed``, or the run's ``seed`` when it is null."""
        return self.seed if self.hybrid.seed is None else self.hybrid.seed

    _files: tuple[Path, ...] = PrivateAttr(default=())

    @property
    def files(self) -> tuple[Path, ...]:
        """The parameter files merged into these parameters, base first (empty when built in code)."""
        return self._files

    @property
    def params_file(self) -> Path | None:
        """The case file these parameters were loaded from (the last one merged)."""
        return self._files[-1] if self._files else None

    def notebook_parameters(self, stage: str, output_dir: str | Path) -> dict[str, Any]:
        """The values injected into a notebook's ``parameters`` cell.

        Parameters
        ----------
        stage
            The notebook stem (``01_basin``), passed on as ``stage``.
        output_dir
            Where the stage writes its results, passed on as an absolute path ``output_dir``.

        Returns
        -------
        dict
            Plain JSON-able values: ``params``, every section whole as validated
            (``model_dump(mode="json")``: the executed notebook shows every value, and
            :func:`load_params` reads it back to these parameters), plus ``stage``,
            ``output_dir`` and ``params_file`` (absolute path, or None).
        """
        return {
            "params": self.model_dump(mode="json"),
            "stage": stage,
            "output_dir": str(Path(output_dir).resolve()),
            "params_file": None if self.params_file is None else str(self.params_file.resolve()),
        }

    def to_yaml(self, *, comments: bool = True) -> str:
        """The parameters as YAML, each key followed by its description as a comment."""
        data = self.model_dump(mode="json")
        data[EXTENDS_KEY] = None  # the dump is complete: merging it over a base would change nothing
        if not comments:
            return yaml.safe_dump(data, sort_keys=False)
        lines = [f"{EXTENDS_KEY}: null  # complete parameters: merged over nothing"]
        lines += _yaml_lines(type(self), data, indent=0)
        return "\n".join(lines) + "\n"


def load_params(path: str | Path | Mapping[str, Any] | Params) -> Params:
    """Read a case file, merge it over its base and validate the result.

    Parameters
    ----------
    path
        The case file (``params/cance.yaml``). Relative paths inside it (``basin.source``)
        are relative to the file that sets them. A relative path that names no file from the
        current directory is looked for from the repository's root, so that a notebook opened
        in ``notebooks/`` finds ``params/ci.yaml``. Or the parameters themselves: a mapping
        (what :meth:`Params.notebook_parameters` injects as ``params``; merged over the
        defaults only, a directory ``basin.source`` relative to the current directory), or
        a :class:`Params`, returned as it is.

    Returns
    -------
    Params
        The validated parameters; ``params.files`` lists the files merged, base first (empty
        for a mapping).

    Raises
    ------
    ParamsError
        When a file is missing or not valid YAML, or a key is unknown or has a wrong value;
        the message names the file and the key, and suggests the closest valid key.
    """
    if isinstance(path, Params):
        return path
    if isinstance(path, Mapping):
        return _params_from_mapping(path)
    path = Path(path).expanduser()
    if not path.is_absolute() and not path.exists() and (REPOSITORY_ROOT / path).is_file():
        path = REPOSITORY_ROOT / path
    layers = _read_layers(path)
    merged: dict[str, Any] = {}
    for _, data in layers:
        merged = deep_merge(merged, data)
    merged.setdefault("case", layers[-1][0].stem)
    _resolve_source(merged, layers)
    try:
        params = Params.model_validate(merged)
    except ValidationError as error:
        raise ParamsError(_explain(error, layers)) from None
    params._files = tuple(file for file, _ in layers)
    return params


def _params_from_mapping(values: Mapping[str, Any]) -> Params:
    """:func:`load_params` of parameters given as a mapping (complete, or over the defaults)."""
    data = deep_merge({}, values)
    if data.pop(EXTENDS_KEY, None) is not None:
        raise ParamsError(f"parameters given as a mapping are merged over the defaults only: drop {EXTENDS_KEY!r}, "
                          "or write them to a file and load that")
    layers = [(MAPPING_SOURCE, data)]
    _resolve_source(data, layers)
    try:
        return Params.model_validate(data)
    except ValidationError as error:
        raise ParamsError(_explain(error, layers)) from None


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: mappings key by key (recursively), anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# --- reading -----------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader for which a key written twice in one mapping is an error (not a silent override)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in the same mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ParamsError(f"{path}: no such parameter file")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML:\n{error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of keys to values at the top, found {type(data).__name__}")
    return data


def _read_layers(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The files to merge, base first, each with its contents (``extends`` removed)."""
    layers: list[tuple[Path, dict[str, Any]]] = []
    seen: set[Path] = set()
    current: Path | None = path.resolve() if path.exists() else path
    while current is not None:
        if current in seen:
            chain = " -> ".join(str(f) for f, _ in reversed(layers))
            raise ParamsError(f"{current}: 'extends' makes a loop ({chain} -> {current})")
        seen.add(current)
        data = _read_yaml(current)
        if EXTENDS_KEY in data:
            parent = data.pop(EXTENDS_KEY)
            if parent is not None and not isinstance(parent, str):
                raise ParamsError(f"{current}: 'extends' must be a file path or null, got {parent!r}")
            nxt = None if parent is None else (current.parent / parent).resolve()
        else:
            sibling = current.parent / "base.yaml"
            nxt = sibling.resolve() if sibling.is_file() and sibling.resolve() != current else None
        layers.append((current, data))
        current = nxt
    return layers[::-1]


def _resolve_source(merged: dict[str, Any], layers: list[tuple[Path, dict[str, Any]]]) -> None:
    """Make a path ``basin.source`` (a smash-layout directory, a ``.nc`` file, a ``.zarr`` store)
    and ``basin.initial_states`` absolute, relative to the file that sets them; check they exist."""
    basin = merged.get("basin")
    if not isinstance(basin, dict):
        return
    if isinstance(basin.get("initial_states"), str):
        basin["initial_states"] = str(_existing_path(("basin", "initial_states"), basin["initial_states"], layers))
    if not isinstance(basin.get("source"), str):
        return
    source = basin["source"]
    if source.strip().lower() in {name.lower() for name in (*SMASH_DATASETS, "synthetic", "known_answer")}:
        return
    file = _file_setting(("basin", "source"), layers)
    path = (file.parent / Path(source).expanduser()).resolve()
    suffix = path.suffix.lower()
    if suffix in BASIN_FILE_SUFFIXES:
        is_store = path.is_dir() if suffix == ".zarr" else path.is_file()
        if not is_store:
            what = "zarr store (a directory)" if suffix == ".zarr" else "NetCDF file"
            raise ParamsError(
                f"{file}: basin.source {source!r}: no {what} {path}; write the basin there first "
                "(hybridhydro.write_basin, or stage 01 of an earlier run writes <run>/basin.nc), or correct the path "
                "(relative to the parameter file)"
            )
    elif path.is_file():
        raise ParamsError(
            f"{file}: basin.source {source!r} is a file with suffix {path.suffix!r} ({path}); a basin file must be "
            "written by hybridhydro.write_basin as .nc (NetCDF-4) or .zarr (zarr store), or give a directory in the "
            "smash layout"
        )
    elif not path.is_dir():
        close = difflib.get_close_matches(source, [*SMASH_DATASETS, "synthetic", "known_answer"], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ParamsError(
            f"{file}: basin.source {source!r} is neither a hydro-smash dataset ({', '.join(SMASH_DATASETS)}), "
            f"'synthetic', 'known_answer', a basin file (.nc, .zarr) nor an existing directory (looked for {path}){hint}"
        )
    basin["source"] = str(path)


def _existing_path(loc: tuple[str, ...], value: str, layers: list[tuple[Path, dict[str, Any]]]) -> Path:
    """``value``, a path relative to the file that sets ``loc``, made absolute; an error if no file is there."""
    file = _file_setting(loc, layers)
    path = (file.parent / Path(value).expanduser()).resolve()
    if not path.exists():
        raise ParamsError(f"{file}: {'.'.join(loc)} {value!r}: no file {path}; correct the path (relative to the "
                          "parameter file) or set it to null")
    return path


# --- error messages ----------------------------------------------------------------------------


def _file_setting(loc: tuple, layers: list[tuple[Path, dict[str, Any]]]) -> Path:
    """The last file (in merge order) whose contents hold the key path ``loc``; the case file otherwise."""
    for file, data in reversed(layers):
        node: Any = data
        for part in loc:
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                break
        else:
            return file
    return layers[-1][0]


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The section model found by following ``loc`` (field names) down from :class:`Params`."""
    model: type[BaseModel] | None = Params
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = _section_type(model.model_fields[part].annotation)
    return model


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            found = _section_type(arg)
            if found is not None:
                return found
    return None


def _explain(error: ValidationError, layers: list[tuple[Path, dict[str, Any]]]) -> str:
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        file = _file_setting(loc, layers)
        if item["type"] == "extra_forbidden":
            section = _model_at(loc[:-1])
            valid = list(section.model_fields) if section is not None else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            parent = ".".join(map(str, loc[:-1]))
            hint = f"; did you mean {'.'.join(filter(None, [parent, close[0]]))!r}?" if close else ""
            problems.append(f"{file}: unknown key {dotted!r}{hint} (valid keys in {parent or 'the top level'}: {', '.join(valid)})")
        else:
            got = "" if item["type"] == "missing" else f" (got {item.get('input')!r})"
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{file}: {dotted}: {message}{got}")
    names = " <- ".join(str(file) for file, _ in layers)
    return f"invalid parameters ({names}):\n  - " + "\n  - ".join(problems)


# --- helpers -----------------------------------------------------------------------------------


def _timestamp(value: Any) -> str:
    """A date or date-time (a YAML date, ISO text, compact digits year first) as 'YYYY-MM-DD HH:MM:SS',
    read by :func:`hybridhydro.dates.parse_date` (day-first text, time zones and bare numbers refused)."""
    from ..dates import parse_date

    return str(parse_date(value, repr(value), fix="write e.g. '2014-09-15 00:00'"))


def _yaml_lines(model: type[BaseModel], data: dict[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines = []
    for name, field in model.model_fields.items():
        value = data[name]
        section = _section_type(field.annotation)
        comment = f"  # {field.description}" if field.description else ""
        if section is not None and isinstance(value, dict):
            lines.append(f"{pad}{name}:{comment}")
            lines += _yaml_lines(section, value, indent + 2)
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
            text = text.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{pad}{name}: {text}{comment}")
    return lines
