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


def load_checkpoint(path: Path, like: dict, signature: dict):
    path = Path(path)
    if not path.with_suffix(".npz").exists():
        return None
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta.get("signature") != signature:
        raise ValueError(
            f"the checkpoint {path.with_suffix('.npz')} was written by another calibration "
            f"({meta.get('signature')}); give a new checkpoint path or delete it to start over"
        )
    leaves, treedef = jax.tree_util.tree_flatten(like)
    with np.load(path.with_suffix(".npz")) as data:
        saved = [data[f"arr_{k}"] for k in range(len(data.files))]
    if len(saved) != len(leaves):
        raise ValueError(f"the checkpoint {path} does not match this calibration's controls; delete it to start over")
    state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(s, dtype=jnp.asarray(x).dtype) for s, x in
                                                   zip(saved, leaves)])
    return state, meta


