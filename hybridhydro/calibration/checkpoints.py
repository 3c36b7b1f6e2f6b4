"""Checkpoints of a running calibration: controls, optimiser state, iteration, history, settings.

A checkpoint is ONE file, ``<name>.npz``: the arrays of the state (``arr_0``, ``arr_1``, ... in
the pytree's flattening order) and, inside the same archive, the JSON metadata (``meta``: the
iteration, the history and the signature of the calibration that wrote it). It is written to a
temporary file in the same folder and renamed over the old one (:func:`os.replace`), so the
arrays of one iteration never sit beside the metadata of another, and a calibration killed
while writing leaves the previous checkpoint whole.

The signature (:func:`calibration_signature` in :mod:`hybridhydro.calibration`) records every
setting that shapes the result and fingerprints of the starting point and of the data; a
checkpoint is resumed only by a calibration whose signature is the same, and a mismatch is an
error that lists each differing setting with both values.

A checkpoint path is a stem kept whole: ``ck_0.01`` is ``ck_0.01.npz`` (a name is never cut at
its last dot); a path that ends in ``.npz`` is the file itself (:func:`checkpoint_file`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

#: The archive entry that holds the checkpoint's JSON metadata (UTF-8 bytes as uint8).
META_KEY = "meta"
#: Signature keys that hold a sha256 fingerprint, and what they cover (for the mismatch message).
FINGERPRINTS = {
    "data": "the forcing, observed discharge, mesh, descriptors and dt the cost reads",
    "start": "the starting point: initial controls, fixed parameters, initial states, network weights, warm start",
    "code": "hybridhydro's source code: the checkpoint was written by another version",
}


def checkpoint_file(path: str | Path) -> Path:
    """The file of checkpoint ``path``: ``path`` itself when it ends in ``.npz``, else ``path``
    with ``.npz`` appended to its whole name (``ck_0.01`` -> ``ck_0.01.npz``, never ``ck_0.npz``)."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def canonical(value):
    """``value`` as plain JSON (dicts with string keys, lists, numbers, strings, None), so that a
    signature compares equal after a round trip through a file. Arrays of more than 8 entries
    become ``"sha256:<digest> <dtype><shape>"``; smaller ones, lists."""
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if np.isfinite(v) else str(v)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (np.ndarray, jax.Array)):
        a = np.asarray(value)
        if a.size <= 8 and a.dtype.kind in "biuf":
            return canonical(a.tolist())
        return f"sha256:{fingerprint([a])} {a.dtype}{list(a.shape)}"
    if isinstance(value, np.datetime64):
        return str(value)
    return str(value)


def fingerprint(arrays) -> str:
    """sha256 (hex) over a sequence of arrays: each one's dtype, shape and bytes, in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, state: dict, meta: dict) -> Path:
    """Write ``state`` (a pytree of arrays) and ``meta`` (JSON) as ONE ``.npz`` file, atomically.

    The archive is written to a temporary file in the checkpoint's folder, flushed to disk, then
    renamed over the checkpoint (:func:`os.replace`): a reader sees the old checkpoint or the new
    one, never a mix. Returns the file written.
    """
    target = checkpoint_file(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    meta = {**meta, "treedef": str(treedef), "nleaves": len(leaves)}
    text = json.dumps(meta, indent=1, default=float).encode("utf-8")
    arrays = {f"arr_{k}": np.asarray(x) for k, x in enumerate(leaves)}
    arrays[META_KEY] = np.frombuffer(text, dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def interrupted(checkpoint: str | Path, where: str) -> KeyboardInterrupt:
    """The Ctrl-C a calibration re-raises once its checkpoint is saved: where it stopped, how to resume."""
    return KeyboardInterrupt(
        f"calibration interrupted at {where}; checkpoint saved to {checkpoint_file(checkpoint)}: "
        "call calibrate() again with the same arguments to resume"
    )


def _damaged(path: Path, what: str, err: BaseException) -> ValueError:
    text = " ".join(str(err).split()) or "no message"
    return ValueError(
        f"the checkpoint {path} cannot be read as {what} ({type(err).__name__}: {text[:200]}): it is empty, "
        f"truncated or damaged (a calibration killed while writing it?); delete {path} to start over, or give "
        "another checkpoint path"
    )


def _show(value) -> str:
    """A signature value as the mismatch message shows it (fingerprints shortened)."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"sha256 {value[:12]}…"
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:117] + "..."


def signature_differences(mine: dict, theirs: dict) -> list[str]:
    """One line per setting that differs: ``name: <this call's value> in this call, <value> in the checkpoint``."""
    lines = []
    for key in list(mine) + [k for k in theirs if k not in mine]:
        a, b = mine.get(key, "<absent>"), theirs.get(key, "<absent>")
        if a == b:
            continue
        what = f" ({FINGERPRINTS[key]})" if key in FINGERPRINTS else ""
        lines.append(f"{key}{what}: {_show(a)} in this call, {_show(b)} in the checkpoint")
    return lines


def _read(npz: Path) -> tuple[list[np.ndarray], dict]:
    """The state arrays and the metadata of checkpoint file ``npz`` (a damaged one names itself)."""
    try:
        with np.load(npz, allow_pickle=False) as data:
            files = set(data.files)
            raw = data[META_KEY] if META_KEY in files else None
            saved = [data[f"arr_{k}"] for k in range(len(files - {META_KEY}))]
    except MemoryError:
        raise
    except Exception as err:
        raise _damaged(npz, "a NumPy .npz archive", err) from None
    if raw is None:
        old = npz.with_suffix(".json")
        raise ValueError(
            f"the checkpoint {npz} holds no metadata: it was written by an older hybridhydro (which kept it in "
            f"{old.name} beside it); delete {npz}{' and ' + str(old) if old.exists() else ''} to start over, "
            "or give another checkpoint path"
        )
    try:
        meta = json.loads(np.asarray(raw, np.uint8).tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise _damaged(npz, "a checkpoint (its JSON metadata)", err) from None
    if not isinstance(meta, dict):
        raise _damaged(npz, "a checkpoint's JSON (a mapping)", TypeError(f"it holds a {type(meta).__name__}"))
    return saved, meta


def load_finished(path: str | Path, like: dict, signature: dict):
    """The ``(state, meta)`` of a calibration that ran to its end (``meta["finished"]``), or None.

    :func:`hybridhydro.calibrate` saves its final controls, history, best iteration and message
    under its checkpoint when it ends; called again with the same signature, it returns that
    result instead of iterating further (a converged run would otherwise take more steps, and
    differ). A checkpoint of a run still going is None here: the optimiser resumes it.
    """
    npz = checkpoint_file(path)
    if not npz.exists():
        return None
    saved, meta = _read(npz)
    return _checked(npz, saved, meta, like, signature) if meta.get("finished") else None


def load_checkpoint(path: str | Path, like: dict, signature: dict):
    """The saved ``(state, meta)`` of checkpoint ``path`` (None when there is none), checked
    against this calibration's ``signature`` and against the shapes of ``like``.

    Raises
    ------
    ValueError
        A checkpoint of another calibration (the message lists each differing setting with both
        values), of an older format, or one that is empty, truncated or damaged (the message
        names the file and says to delete it).
    """
    npz = checkpoint_file(path)
    if not npz.exists():
        return None
    saved, meta = _read(npz)
    return _checked(npz, saved, meta, like, signature)


class CheckpointMismatch(ValueError):
    """A checkpoint written by another calibration (other settings, data or code); ``path`` is the file."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def _checked(npz: Path, saved: list, meta: dict, like: dict, signature: dict):
    """``(state, meta)`` of a checkpoint read by :func:`_read`, once its signature and shapes match."""
    mine = canonical(signature)
    theirs = meta.get("signature")
    if theirs != mine:
        theirs = theirs if isinstance(theirs, dict) else {}
        lines = signature_differences(mine, theirs) or ["(the settings differ)"]
        raise CheckpointMismatch(
            f"the checkpoint {npz} was written by another calibration; what differs:\n  - " + "\n  - ".join(lines)
            + f"\nresume with the checkpoint's settings, give another checkpoint path, or delete {npz} to start over",
            npz,
        )
    leaves, treedef = jax.tree_util.tree_flatten(like)
    if len(saved) != len(leaves) or any(np.shape(s) != np.shape(x) for s, x in zip(saved, leaves)):
        raise ValueError(f"the checkpoint {npz} does not match this calibration's controls (other shapes); "
                         f"delete it to start over, or give another checkpoint path")
    state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(s, dtype=jnp.asarray(x).dtype) for s, x in
                                                   zip(saved, leaves)])
    return state, meta
