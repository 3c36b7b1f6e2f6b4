"""Checkpoints of a running calibration: controls, optimiser state, iteration and history.

Written every ``checkpoint_every`` iterations and on Ctrl-C, next to each other and atomically
(each file is written under a temporary name, then renamed); a calibration called again with
the same signature resumes from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

def save_checkpoint(path: Path, state: dict, meta: dict) -> None:
    """Write ``state`` (pytrees of arrays) and ``meta`` (JSON) next to each other, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, *[np.asarray(x) for x in leaves])
    meta = {**meta, "treedef": str(treedef), "nleaves": len(leaves)}
    path.with_suffix(".json.tmp").write_text(json.dumps(meta, indent=1, default=float))
    tmp.replace(path.with_suffix(".npz"))
    path.with_suffix(".json.tmp").replace(path.with_suffix(".json"))


def interrupted(checkpoint: Path, where: str) -> KeyboardInterrupt:
    """The Ctrl-C a calibration re-raises once its checkpoint is saved: where it stopped, how to resume."""
    return KeyboardInterrupt(
        f"calibration interrupted at {where}; checkpoint saved to {Path(checkpoint)}.npz: "
        "call calibrate() again with the same arguments to resume"
    )


def _damaged(path: Path, what: str, err: BaseException) -> ValueError:
    text = " ".join(str(err).split()) or "no message"
    return ValueError(
        f"the checkpoint {path} cannot be read as {what} ({type(err).__name__}: {text[:200]}): it is empty, "
        f"truncated or damaged (a calibration killed while writing it?); delete {path.with_suffix('.npz')} and "
        f"{path.with_suffix('.json')} to start over, or give another checkpoint path"
    )


def load_checkpoint(path: Path, like: dict, signature: dict):
    """The saved ``(state, meta)`` at ``path`` (None when there is none), checked against this calibration.

    Raises
    ------
    ValueError
        A checkpoint of another calibration, or one whose files are missing, empty, truncated or
        damaged (the message names the file and says to delete it).
    """
    path = Path(path)
    npz, meta_path = path.with_suffix(".npz"), path.with_suffix(".json")
    if not npz.exists():
        return None
    if not meta_path.exists():
        raise ValueError(
            f"the checkpoint {npz} has no {meta_path.name} beside it (deleted, or the write was cut short); delete "
            f"{npz} to start over, or give another checkpoint path"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise _damaged(meta_path, "JSON", err) from None
    if not isinstance(meta, dict):
        raise _damaged(meta_path, "a checkpoint's JSON (a mapping)", TypeError(f"it holds a {type(meta).__name__}"))
    if meta.get("signature") != signature:
        raise ValueError(
            f"the checkpoint {npz} was written by another calibration "
            f"({meta.get('signature')}); give a new checkpoint path or delete it to start over"
        )
    leaves, treedef = jax.tree_util.tree_flatten(like)
    try:
        with np.load(npz, allow_pickle=False) as data:
            saved = [data[f"arr_{k}"] for k in range(len(data.files))]
    except MemoryError:
        raise
    except Exception as err:
        raise _damaged(npz, "a NumPy .npz archive", err) from None
    if len(saved) != len(leaves) or any(np.shape(s) != np.shape(x) for s, x in zip(saved, leaves)):
        raise ValueError(f"the checkpoint {path} does not match this calibration's controls; delete it to start over")
    state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(s, dtype=jnp.asarray(x).dtype) for s, x in
                                                   zip(saved, leaves)])
    return state, meta
