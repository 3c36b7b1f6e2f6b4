"""Fixtures shared by the test modules, and the rules for tests that need hydro-smash.

hydro-smash is an optional extra (``pip install -e ".[test,smash]"``, which ``make test``
installs): it brings the Cance, Lez and France datasets and is the oracle of the comparisons.
Every test that needs it carries the ``smash`` marker (``pytestmark`` of a module, or one
test's decorator), so that without it ``pytest -m "not smash"`` passes. Without hydro-smash a
marked test is also skipped with the reason, so a plain ``pytest`` passes too; a test that
needs hydro-smash but is not marked fails with hybridhydro's "install hybridhydro[smash]"
message, which is how a missing mark shows.
"""

from __future__ import annotations

import importlib.util

import jax
import pytest

#: hydro-smash is installed (found without importing it, as hybridhydro finds its data).
SMASH_INSTALLED = importlib.util.find_spec("smash") is not None

#: Modules that read hydro-smash's data directory when imported (``DATA = smash_dataset_root()``
#: at module level): without hydro-smash they cannot be collected, so they are left out, their
#: tests that need no smash data with them. Every smash test in them is marked as well.
NEEDS_SMASH_TO_IMPORT: tuple[str, ...] = ()  # every test file imports without hydro-smash

collect_ignore = [] if SMASH_INSTALLED else list(NEEDS_SMASH_TO_IMPORT)

SMASH_MISSING = 'needs hydro-smash, which is not installed: pip install -e ".[test,smash]"'


def pytest_report_header(config):
    if SMASH_INSTALLED:
        return None
    return "hydro-smash: not installed; tests marked smash are skipped"


def pytest_collection_modifyitems(config, items):
    if SMASH_INSTALLED:
        return
    skip = pytest.mark.skip(reason=SMASH_MISSING)
    for item in items:
        if item.get_closest_marker("smash") is not None:
            item.add_marker(skip)


@pytest.fixture
def x64():
    """Run one test in float64 (finite-difference checks), then restore the previous setting."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)
