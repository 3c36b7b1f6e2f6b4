"""JAX's persistent compilation cache, configured when hybridhydro is imported.

Every kernel hybridhydro jits (a run, a loss and its gradient, a Newton solve) is compiled by
XLA the first time it meets a shape; in a fresh process, that is every time. With the cache on
disk, a rerun of the same case (``make demo`` again, a batch rerun, a notebook restarted) loads
the compiled kernels instead of compiling them again (README: "Compilation cache").

Where it goes, in order:

1. ``JAX_COMPILATION_CACHE_DIR`` (JAX's own setting): hybridhydro leaves it as it is;
2. ``HYBRIDHYDRO_JAX_CACHE``: a folder, or ``off`` (also ``0``, ``false``, ``no``) for none;
3. ``$XDG_CACHE_HOME/hybridhydro/jax`` (``~/.cache/hybridhydro/jax``).

Kernels that compile in under :data:`MIN_COMPILE_SECONDS` are not stored (they cost less to
compile than to read back). The cache never changes a result: it holds XLA's executables,
keyed by the program, the shapes, the backend and the versions of jax and jaxlib. Delete the
folder to clear it.
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "HYBRIDHYDRO_JAX_CACHE"
OFF = ("off", "0", "false", "no", "none")

#: Compilations shorter than this (s) are not written to the cache.
MIN_COMPILE_SECONDS = 0.2


def default_directory() -> Path:
    """``$XDG_CACHE_HOME/hybridhydro/jax`` (``~/.cache/hybridhydro/jax`` when it is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hybridhydro" / "jax"


def configure_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Turn JAX's persistent compilation cache on (see the module's text for where it goes).

    Returns the cache folder, or None when it is off. An explicit ``directory`` wins over the
    environment; a folder that cannot be created turns the cache off with no error (a cache is
    an optimisation, never a reason for a run to fail).
    """
    import jax

    if directory is None:
        configured = jax.config.jax_compilation_cache_dir
        if configured:
            return Path(configured)
        setting = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
        if setting.lower() in OFF:
            return None
        directory = setting or default_directory()
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return directory


def compilation_cache_directory() -> Path | None:
    """The folder JAX caches compiled kernels in now (None: no cache)."""
    import jax

    configured = jax.config.jax_compilation_cache_dir
    return Path(configured) if configured else None
