"""Workdir conventions: config.json, results.npz, metrics.jsonl, TensorBoard scalars.

Everything is written atomically (temporary file in the same folder, then ``os.replace``), so a
killed run never leaves a half-written results file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.npz"
METRICS_FILE = "metrics.jsonl"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
  """Yields a temporary path next to ``path``; renames it over ``path`` on success."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
  os.close(fd)
  try:
    yield Path(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
  with atomic_path(path) as tmp:
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
  try:
    return json.loads(Path(path).read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"cannot read JSON file {path}: {e}") from e


def _json_default(x: Any) -> Any:
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x)}")


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
  """np.savez (uncompressed) through a temporary file; object arrays are refused."""
  for k, v in arrays.items():
    if np.asarray(v).dtype == object:
      raise ValueError(f"array {k!r} has dtype object; results must load with allow_pickle=False")
  with atomic_path(path, suffix=".npz") as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Loads every array (allow_pickle=False); a missing or corrupt file is a ValueError."""
  try:
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  except Exception as e:  # zipfile.BadZipFile, OSError, ValueError, EOFError ...
    raise ValueError(f"cannot read results file {path}: {e}") from e


def check_writable(workdir: str | os.PathLike[str], min_free_bytes: int = 50 << 20) -> Path:
  """Creates ``workdir`` and checks it is writable with some free space, before training."""
  workdir = Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test."):
      pass
  except OSError as e:
    raise ValueError(f"workdir {str(workdir)!r} is not writable: {e}") from e
  free = shutil.disk_usage(workdir).free
  if free < min_free_bytes:
    raise ValueError(f"workdir {str(workdir)!r} has only {free >> 20} MiB free "
                     f"(need at least {min_free_bytes >> 20} MiB)")
  return workdir


class MetricWriter:
  """Scalars to ``metrics.jsonl`` (durable) and TensorBoard (live, via tensorboardX).

  CLU's ``metric_writers`` would be the natural choice but it imports TensorFlow, which this
  project does not depend on; tensorboardX writes the same event files without it.
  """

  def __init__(self, workdir: str | os.PathLike[str] | None, enabled: bool = True,
               tensorboard: bool = True):
    self._enabled = enabled and workdir is not None
    self._path = Path(workdir or ".") / METRICS_FILE
    self._tb = None
    if self._enabled and tensorboard:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))
      except ImportError:  # optional: jsonl is the source of truth
        self._tb = None

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self._path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), int(step))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    if self._enabled and self._tb is not None:
      self._tb.add_text("config", "```\n" + json.dumps(hparams, indent=2) + "\n```", 0)

  def reset(self) -> None:
    """Truncates metrics.jsonl (a resumed run rewrites the rows it replays)."""
    if self._enabled and self._path.exists():
      self._path.unlink()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
