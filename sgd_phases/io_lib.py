"""Workdir conventions and file I/O: config.json, results.npz, metrics.jsonl, TensorBoard.

Every path goes through ``etils.epath`` (:func:`path`), so a workdir may be a local folder or a
URI such as ``gs://bucket/run`` (epath uses fsspec/gcsfs there; install ``gcsfs``). Never turn a
workdir into ``pathlib.Path(str(...))``: that collapses ``gs://b`` into ``gs:/b``.

"Nothing half-written", two ways:

* Local disk: a temporary file in the same folder, flushed to the disk (``fsync``), then
  ``os.replace`` (atomic rename) and an ``fsync`` of the folder, so that a crash of the machine,
  not only of the process, leaves the old file or the new one (as Orbax does for checkpoints).
  Files get the usual mode, ``0666 & ~umask`` (``mkstemp`` alone would make them 0600).
* Object stores (any URI): they have no rename, but an object upload is atomic -- the object
  becomes visible only once the upload completes, and a failed upload leaves the old object (or
  none). So every file is written as one object from bytes built in memory (:func:`write_bytes`),
  never streamed or appended to. Which files exist is the commit protocol: ``results.npz`` is
  written last and marks a finished run (the way Orbax marks a finished checkpoint on GCS with its
  ``commit_success.txt`` object). ``metrics.jsonl`` and TensorBoard event files, which locally
  grow by appends, are buffered and rewritten whole on a remote workdir.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from typing import Any, Mapping

import numpy as np
from etils import epath

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.npz"
METRICS_FILE = "metrics.jsonl"
PathLike = str | os.PathLike


URI_SCHEMES = ("gs",)  # the URI schemes tested here (gs:// through gcsfs)


def check_location(p: PathLike, field: str = "path") -> str:
  """``p`` as a string if it is a local path or a URI of a supported scheme; else one
  ValueError naming ``field``, before anything is created. Catches the usual slips: ``gs:/x``
  (one slash: it would become a local folder ``./gs:/x``), ``gs:///x`` (no bucket) and unknown
  schemes (``gcs://``, ``hdfs://``)."""
  s = os.fspath(p)
  scheme, sep, rest = s.partition("://")
  if sep:
    if scheme not in URI_SCHEMES:
      raise ValueError(f"{field}={s!r}: unsupported URI scheme {scheme!r}; use a local path or "
                       + " or ".join(f"{x}://bucket/..." for x in URI_SCHEMES))
    if not rest or rest.startswith("/") or not rest.split("/")[0]:
      raise ValueError(f"{field}={s!r}: no bucket name after {scheme}://")
    return s
  head = s.split("/")[0]
  if head.endswith(":") and head[:-1].isalpha() and len(head) > 2 and s[len(head):].startswith("/"):
    raise ValueError(f"{field}={s!r} looks like a URI with a missing slash "
                     f"({head}//...); a local folder of that name is not created")
  return s


def path(p: PathLike, field: str = "path") -> epath.Path:
  """``p`` as an ``epath.Path`` (local folder or URI, e.g. ``gs://bucket/x``), checked by
  :func:`check_location`."""
  if isinstance(p, epath.Path):
    return p
  return epath.Path(check_location(p, field))


def is_local(p: PathLike) -> bool:
  """True for a local path, False for a URI (``scheme://...``)."""
  return "://" not in os.fspath(p)


def _umask() -> int:
  """The process's umask: read from /proc on Linux (no race with threads writing files, e.g.
  Orbax's), elsewhere by setting and restoring it."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError):
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _fsync_dir(folder: str) -> None:
  try:
    fd = os.open(folder, os.O_RDONLY)
  except OSError:  # e.g. a platform whose folders cannot be opened
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def is_writer() -> bool:
  """True on the one process that writes host files: process 0 of a multi-process job (every
  process of a single-process run). Reading this never starts a JAX backend."""
  import jax
  return not jax.distributed.is_initialized() or jax.process_index() == 0


def barrier(name: str) -> None:
  """Every process of a multi-process job waits here (after process 0 deleted or wrote what
  the others will read); nothing in a single-process run."""
  import jax
  if jax.distributed.is_initialized() and jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"sgd_phases: {name}")


def write_bytes(p: PathLike, data: bytes) -> None:
  """Writes ``data`` to ``p`` atomically and durably (module doc): fsync + rename + fsync of the
  folder locally, one object upload on a URI. The file's mode is ``0666 & ~umask``. Off
  process 0 of a multi-process job it writes nothing (:func:`is_writer`: one writer)."""
  if is_writer():
    _write(path(p), data)


def _write(p: epath.Path, data: bytes) -> None:
  p.parent.mkdir(parents=True, exist_ok=True)
  if not is_local(p):
    p.write_bytes(data)
    return
  folder = os.fspath(p.parent)
  fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=folder)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fchmod(f.fileno(), 0o666 & ~_umask())
      os.fsync(f.fileno())
    os.replace(tmp, os.fspath(p))
    _fsync_dir(folder)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(p: PathLike, obj: Any) -> None:
  write_bytes(p, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
                  ).encode())


def read_json(p: PathLike) -> Any:
  try:
    return json.loads(path(p).read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"cannot read JSON file {p}: {e}") from e


def _json_default(x: Any) -> Any:
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x)}")


def write_npz(p: PathLike, arrays: Mapping[str, np.ndarray]) -> None:
  """np.savez (uncompressed), written atomically; object arrays are refused."""
  for k, v in arrays.items():
    if np.asarray(v).dtype == object:
      raise ValueError(f"array {k!r} has dtype object; results must load with allow_pickle=False")
  buf = io.BytesIO()
  np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
  write_bytes(p, buf.getvalue())


def read_npz(p: PathLike) -> dict[str, np.ndarray]:
  """Loads every array (allow_pickle=False); a missing or corrupt file is a ValueError."""
  try:
    with np.load(io.BytesIO(path(p).read_bytes()), allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  except Exception as e:  # zipfile.BadZipFile, OSError, ValueError, EOFError ...
    raise ValueError(f"cannot read results file {p}: {e}") from e


def check_writable(workdir: PathLike, min_free_bytes: int = 50 << 20) -> epath.Path:
  """Creates ``workdir`` and checks it is writable (and, on a local disk, has free space)."""
  workdir = path(workdir, "workdir")
  if not is_writer():  # only process 0 writes (the workdir is checked to be shared)
    return workdir
  probe = workdir / f".write_test.{os.getpid()}"
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b"")
    probe.unlink()
  except FileNotFoundError as e:
    if is_local(workdir):
      raise ValueError(f"workdir {os.fspath(workdir)!r} is not writable: {e}") from e
    bucket = os.fspath(workdir).split("://", 1)[1].split("/")[0]
    raise ValueError(f"workdir {os.fspath(workdir)!r}: the bucket {bucket!r} does not exist "
                     "(or these credentials cannot see it)") from e
  except Exception as e:  # OSError locally; fsspec/gcsfs raise their own errors
    raise ValueError(f"workdir {os.fspath(workdir)!r} is not writable: {e}") from e
  if is_local(workdir):
    free = shutil.disk_usage(os.fspath(workdir)).free
    if free < min_free_bytes:
      raise ValueError(f"workdir {os.fspath(workdir)!r} has only {free >> 20} MiB free "
                       f"(need at least {min_free_bytes >> 20} MiB)")
  return workdir


class _ObjectRecordWriter:
  """tensorboardX record writer for a URI: buffers the event file, uploads it whole on flush."""

  def __init__(self, uri: str):
    self._path, self._buf = path(uri), io.BytesIO()

  def write(self, data: bytes) -> None:
    self._buf.write(data)

  def flush(self) -> None:
    write_bytes(self._path, self._buf.getvalue())

  def close(self) -> None:
    self.flush()


class _ObjectRecordWriterFactory:
  def open(self, uri: str) -> _ObjectRecordWriter:
    return _ObjectRecordWriter(uri)

  def directory_check(self, uri: str) -> None:
    pass  # object stores have no folders to create


class MetricWriter:
  """Scalars to ``metrics.jsonl`` (durable) and TensorBoard (live, via tensorboardX).

  CLU's ``metric_writers`` would be the natural choice but it imports TensorFlow, which this
  project does not depend on; tensorboardX writes the same event files without it (on a URI
  workdir through epath: tensorboardX's own ``gs://`` writer needs google-cloud-storage).
  Locally each row is appended at once; on a URI the rows are kept in memory and the object is
  rewritten at most every ``flush_secs`` and on :meth:`close` (GCS allows about one write per
  second to one object).
  """

  def __init__(self, workdir: PathLike | None, enabled: bool = True, tensorboard: bool = True,
               flush_secs: float = 30.0):
    self._enabled = enabled and workdir is not None
    self._path = path(workdir or ".") / METRICS_FILE
    self._local = is_local(self._path)
    self._rows: list[str] = []
    self._flush_secs, self._flushed = flush_secs, time.monotonic()
    self._tb = None
    self._hparams: dict[str, Any] | None = None
    if not self._enabled:
      return
    if not self._local and self._path.exists():
      self._rows = self._path.read_text().splitlines(keepends=True)
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter, record_writer
      except ImportError:  # optional: jsonl is the source of truth
        return
      self._logdir = os.fspath(path(workdir) / "tensorboard")
      if not is_local(self._logdir):
        record_writer.register_writer_factory(self._logdir.split(":")[0],
                                              _ObjectRecordWriterFactory())
      self._new_tb = lambda: SummaryWriter(self._logdir, flush_secs=int(flush_secs))
      self._tb = self._new_tb()

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._enabled:
      return
    row = json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n"
    if self._local:
      with open(self._path, "a") as f:
        f.write(row)
    else:
      self._rows.append(row)
      if time.monotonic() - self._flushed >= self._flush_secs:
        self.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), int(step))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self._hparams = dict(hparams)
    if self._enabled and self._tb is not None:
      self._tb.add_text("config", "```\n" + json.dumps(hparams, indent=2) + "\n```", 0)

  def flush(self) -> None:
    """Uploads the buffered rows (URI workdirs; local rows are already on disk)."""
    if self._enabled and not self._local:
      write_bytes(self._path, "".join(self._rows).encode())
      self._flushed = time.monotonic()

  def reset(self) -> None:
    """Empties metrics.jsonl and the TensorBoard event files (the end of a run rewrites every
    row from its results: one event file, no duplicate curves from a killed attempt's file)."""
    self._rows = []
    if self._enabled and self._path.exists():
      self._path.unlink()
    if self._tb is not None:
      self._tb.close()
      logdir = path(self._logdir)
      for f in (list(logdir.iterdir()) if logdir.exists() else []):
        if f.name.startswith("events.out.tfevents"):
          f.unlink(missing_ok=True)
      self._tb = self._new_tb()
      if self._hparams is not None:
        self.write_hparams(self._hparams)

  def close(self) -> None:
    self.flush()
    if self._tb is not None:
      self._tb.close()
