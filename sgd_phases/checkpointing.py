"""Orbax checkpoints of a chunk of seeds: train states + everything recorded so far.

A checkpoint is saved after evaluation ``k`` and holds the flattened leaves of the seed-stacked
TrainState (params, optimizer state, batch_stats, step) and the recording buffers (predictions
and metrics of evaluations 0..k). The data cursor and RNG need no saving: both are pure
functions of (seed, seed index, step). Orbax writes into a temporary folder and renames it when
complete, so a run killed mid-write leaves an uncommitted folder that is ignored (with a warning);
on an object store (``gs://``), where there is no rename, Orbax marks a finished checkpoint with a
``commit_success.txt`` object instead and ignores folders without it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from sgd_phases import io_lib

PyTree = Any
VERBOSE_ENV = "SGD_PHASES_ORBAX_LOGS"  # set to 1 to see Orbax's INFO lines again


class _QuietOrbax(logging.Filter):
  """Drops Orbax's INFO/DEBUG records (~80% of a checkpointed run's log: one save is a dozen
  lines); its warnings and errors pass. ``SGD_PHASES_ORBAX_LOGS=1`` keeps everything."""

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.WARNING or os.environ.get(VERBOSE_ENV) == "1"
            or f"{os.sep}orbax{os.sep}" not in record.pathname)


_FILTER = _QuietOrbax()
for _name in ("absl", "orbax"):  # Orbax logs through absl.logging (logger "absl")
  if _FILTER not in logging.getLogger(_name).filters:
    logging.getLogger(_name).addFilter(_FILTER)
_TMP_MARKERS = (".orbax-checkpoint-tmp",)
_COMMIT_MARKER = "commit_success.txt"  # Orbax's marker of a finished checkpoint on GCS


class ChunkCheckpointer:
  """Save/restore (states, buffers, eval index) for one chunk of seeds."""

  def __init__(self, directory: io_lib.PathLike, max_to_keep: int = 2):
    self.directory = io_lib.path(directory)
    self.directory.mkdir(parents=True, exist_ok=True)
    self._warn_partial()
    self._mngr = ocp.CheckpointManager(
        self.directory.resolve() if io_lib.is_local(self.directory) else self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def _warn_partial(self) -> None:
    if not self.directory.exists():  # an object store has no empty folders
      return
    for p in sorted(self.directory.iterdir()):
      partial = any(m in p.name for m in _TMP_MARKERS) or (
          not io_lib.is_local(p) and p.name.isdigit() and not (p / _COMMIT_MARKER).exists())
      if partial and p.is_dir():
        logging.warning("ignoring partial checkpoint %s (interrupted write); resuming from the "
                        "last complete one", p)

  def latest(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, k: int, states: PyTree, buffers: dict[str, jax.Array],
           meta: dict[str, Any]) -> None:
    tree = {"states": jax.tree_util.tree_leaves(states), "buffers": buffers}
    self._mngr.save(k, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                               meta=ocp.args.JsonSave(meta)))

  def restore(self, k: int, states: PyTree, buffers: dict[str, jax.Array]
              ) -> tuple[PyTree, dict[str, jax.Array], dict[str, Any]]:
    """Restores into the structure (and shardings) of ``states`` / ``buffers``."""
    leaves, treedef = jax.tree_util.tree_flatten(states)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                      {"states": leaves, "buffers": buffers})
    out = self._mngr.restore(k, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    states = jax.tree_util.tree_unflatten(treedef, out["state"]["states"])
    return states, out["state"]["buffers"], dict(out["meta"])

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()
