"""Multi-process jobs: joining one, and failing fast, saying why, when it cannot work.

    cluster.join(config)                  # jax.distributed.initialize, bounded in time
    cluster.check_same_run(config)        # every process runs the same run (fields named)
    cluster.check_shared_workdir(workdir) # every process sees the same workdir

Each check is collective (every process calls it, in the same order) and, when it fails, every
process raises the same ``ValueError`` within seconds, instead of hanging at the first
checkpoint (an unshared workdir: Orbax waits 600 s at its barrier) or printing raw hashes.
A peer that never comes is JAX's to detect: it aborts the process after
``distributed.initialization_timeout_s`` (default 120 s); a line logged just before names the
coordinator, the number of processes expected and the timeout.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid

import jax
import ml_collections
import numpy as np
from etils import epath

from sgd_phases import config_lib, io_lib
from sgd_phases import workdir as workdir_lib

_NONCE = ".workdir_check"


def join(config: ml_collections.ConfigDict) -> None:
  """Joins the multi-process job of ``config.distributed`` (once per process). CPU collectives
  go through gloo (set before the backend starts)."""
  d = config.distributed
  if not d.enabled or jax.distributed.is_initialized():
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {k: d[k] for k in ("coordinator_address", "num_processes", "process_id")
            if d[k] is not None}
  timeout = int(d.get("initialization_timeout_s", 120))
  where = (f"coordinator {d.coordinator_address or '(auto-detected)'}, "
           f"{d.num_processes or '(auto-detected)'} processes, this is process "
           f"{d.process_id if d.process_id is not None else '(auto-detected)'}")

  def too_late() -> None:  # JAX aborts the process right after this (a C++ fatal error)
    logging.error("distributed: not every process joined within initialization_timeout_s = "
                  "%d s (%s); check that all were started, with the same coordinator address "
                  "and num_processes, and that the coordinator's port is reachable", timeout,
                  where)

  logging.info("distributed: joining the job (%s), waiting up to %d s", where, timeout)
  timer = threading.Timer(max(timeout - 1.0, 0.5), too_late)
  timer.daemon = True
  timer.start()
  try:
    jax.distributed.initialize(**kwargs, heartbeat_timeout_seconds=d.heartbeat_timeout_s,
                               initialization_timeout=timeout)
  finally:
    timer.cancel()


def _allgather_bytes(data: bytes) -> list[bytes]:
  """Every process's ``data`` (any lengths), in process order."""
  from jax.experimental import multihost_utils
  sizes = multihost_utils.process_allgather(np.array([len(data)], np.int32))
  width = int(np.max(sizes))
  buf = np.zeros(width, np.uint8)
  buf[:len(data)] = np.frombuffer(data, np.uint8)
  rows = np.asarray(multihost_utils.process_allgather(buf)).reshape(-1, width)
  return [bytes(r[:int(n)]) for r, n in zip(rows, np.asarray(sizes).ravel())]


def check_same_run(config: ml_collections.ConfigDict) -> None:
  """Every process was started with the same run (``workdir.run_identity``): the identities
  themselves are exchanged, so a mismatch names the differing fields and which processes
  differ from process 0."""
  if jax.process_count() == 1:
    return
  mine = json.dumps(workdir_lib.run_identity(config), sort_keys=True).encode()
  everyone = _allgather_bytes(mine)
  ref = json.loads(everyone[0])
  bad = {i: config_lib.diff(ref, json.loads(b)) for i, b in enumerate(everyone) if b != everyone[0]}
  if bad:
    lines = [f"process {i} differs from process 0: " + "; ".join(d[:5]) for i, d in bad.items()]
    raise ValueError("config: the processes of this job were started with different run "
                     "configs (every process must run the same command):\n  " + "\n  ".join(lines))


def check_shared_workdir(workdir: epath.Path) -> None:
  """Every process sees the same ``workdir`` (a shared filesystem or an object store): process 0
  writes a fresh token there, every process reads it back; otherwise every process raises,
  naming the workdir and the processes that could not see it."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  token = _allgather_bytes(uuid.uuid4().hex.encode() if io_lib.is_writer() else b"")[0]
  probe = workdir / _NONCE
  io_lib.write_bytes(probe, token)  # process 0 only (the one writer)
  io_lib.barrier("workdir token written")
  try:
    seen = probe.exists() and probe.read_bytes() == token
  except OSError:
    seen = False
  flags = np.asarray(multihost_utils.process_allgather(np.array([int(seen)], np.int32))).ravel()
  io_lib.barrier("workdir token read")
  if io_lib.is_writer():
    probe.unlink(missing_ok=True)
  blind = [i for i, f in enumerate(flags) if not f]
  if blind:
    raise ValueError(f"workdir {os.fspath(workdir)!r} is not shared by the processes of this "
                     f"job: processes {blind} do not see what process 0 wrote there. A "
                     "multi-process job needs one workdir on shared storage (a shared "
                     "filesystem or gs://...)")
