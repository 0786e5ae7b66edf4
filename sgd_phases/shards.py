"""Sweeps over many independent jobs: which of a grid's points this job runs.

    shard = shards.parse_shard("1/4")     # (1, 4): the points at positions ≡ 1 (mod 4)
    shard = shards.parse_shard(None)      # from the scheduler's variables, else None (every point)

A Slurm array, a Kubernetes Indexed Job, Cloud Batch or several TPU VMs run one shard each on
one shared workdir (``sgd_phases.sweep.run_sweep(..., shard=...)``); ``sweep.merge_sweep`` then
writes the summary of the finished points.
"""

from __future__ import annotations

import os
from typing import Mapping

Shard = tuple[int, int]  # (index i, count n): this job runs the points with position ≡ i (mod n)


def parse_shard(spec: str | None, environ: Mapping[str, str] | None = None) -> Shard | None:
  """``"i/n"`` -> (i, n); without ``spec``, the shard a scheduler gives this task (a Slurm
  array's task, :func:`slurm_shard`; Cloud Batch's ``BATCH_TASK_INDEX``/``BATCH_TASK_COUNT``, a
  Kubernetes Indexed Job's ``JOB_COMPLETION_INDEX`` with the count in ``SWEEP_SHARD_COUNT``),
  or None (one job runs every point). One ValueError naming the flag."""
  env = os.environ if environ is None else environ
  if spec:
    i, sep, n = spec.partition("/")
    try:
      shard = (int(i), int(n)) if sep else None
    except ValueError:
      shard = None
    if shard is None or not 0 <= shard[0] < shard[1]:
      raise ValueError(f"shard={spec!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    return shard
  if env.get("SLURM_ARRAY_TASK_ID") is not None and env.get("SLURM_ARRAY_TASK_COUNT") is not None:
    return slurm_shard(env)
  for idx, count in (("BATCH_TASK_INDEX", "BATCH_TASK_COUNT"),
                     ("JOB_COMPLETION_INDEX", "SWEEP_SHARD_COUNT")):
    if env.get(idx) is not None and env.get(count) is not None:
      return parse_shard(f"{env[idx]}/{env[count]}")
  if env.get("JOB_COMPLETION_INDEX") is not None:
    raise ValueError("shard: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but the "
                     "number of shards is not: set SWEEP_SHARD_COUNT or pass --shard=i/n")
  return None


def slurm_shard(env: Mapping[str, str]) -> Shard:
  """The shard of a Slurm array task: the array's task ids (``--array=1-8``, ``0-15:4``, ...)
  in order map onto shards 0 .. n-1, from ``SLURM_ARRAY_TASK_ID``, ``_COUNT``, ``_MIN``,
  ``_MAX`` and ``_STEP`` (an array that does not start at 0 has ``_MIN`` > 0). An array whose
  ids are not evenly spaced (``--array=1,3,7``) is one ValueError: pass ``--shard=i/n``."""
  get = lambda k, default=None: int(env[k]) if env.get(k) is not None else default  # noqa: E731
  try:
    task, count = get("SLURM_ARRAY_TASK_ID"), get("SLURM_ARRAY_TASK_COUNT")
    lo, step = get("SLURM_ARRAY_TASK_MIN", 0), get("SLURM_ARRAY_TASK_STEP", 1)
    hi = get("SLURM_ARRAY_TASK_MAX", lo + (count - 1) * step)
  except ValueError:
    raise ValueError("shard: the SLURM_ARRAY_TASK_* variables are not integers: "
                     f"{ {k: v for k, v in env.items() if k.startswith('SLURM_ARRAY_TASK')} }"
                     ) from None
  index, off = divmod(task - lo, step) if step > 0 else (-1, 0)
  if off or not 0 <= index < count or hi != lo + (count - 1) * step:
    raise ValueError(f"shard: Slurm array task {task} of {count} (ids {lo}..{hi}, step {step}) "
                     "does not map onto shards 0..n-1: the array's ids are not evenly spaced; "
                     "pass --shard=i/n")
  return index, count
