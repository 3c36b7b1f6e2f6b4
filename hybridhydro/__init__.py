"""hybridhydro: spatially distributed hybrid physics-AI hydrological modelling in JAX."""

from .basin import check_basin

__version__ = "0.1.0"

__all__ = ["check_basin", "__version__"]
