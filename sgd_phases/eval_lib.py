"""Evaluation schedule and on-device evaluation of a batch of seeds.

    steps = eval_lib.eval_steps(num_steps=10_000, schedule="log", num_points=100)
    # -> int64 [E]: 0, 1, 2, ..., ~log-spaced ..., 10_000
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def eval_steps(num_steps: int, schedule: str = "log", num_points: int = 100,
               every: int = 0) -> np.ndarray:
  """Steps at which F is evaluated: always includes 0 and ``num_steps``.

  ``log``: about ``num_points`` distinct integer steps, log-spaced between 1 and num_steps (the
  early ones are dense: every step is kept while the log grid is finer than 1).
  ``every``: 0, every, 2·every, ..., num_steps.
  """
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  if schedule == "every":
    if every < 1:
      raise ValueError(f"eval.every must be >= 1, got {every}")
    steps = np.arange(0, num_steps + 1, every)
  elif schedule == "log":
    if num_points < 2:
      raise ValueError(f"eval.num_points must be >= 2, got {num_points}")
    target = min(num_points, num_steps + 1)
    m = target
    while True:  # rounding merges early points: grow the grid until enough distinct steps
      grid = np.unique(np.round(np.geomspace(1, num_steps, m)).astype(np.int64))
      if len(grid) + 1 >= target or m > 50 * target:
        break
      m += max(1, (target - len(grid) - 1))
    steps = grid
  else:
    raise ValueError(f"eval.schedule={schedule!r} is not one of ('log', 'every')")
  return np.unique(np.concatenate([[0], steps, [num_steps]])).astype(np.int64)


def batched_apply(apply: Callable[[jax.Array], jax.Array], x: jax.Array,
                  batch_size: int, unroll: bool = False) -> jax.Array:
  """``apply`` over ``x`` in batches (lax.map, or with ``unroll`` one traced call per batch: no
  loop in the program), padding the last batch; static shapes."""
  n = x.shape[0]
  bs = min(batch_size, n)
  num_batches = -(-n // bs)
  pad = num_batches * bs - n
  xp = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
  batches = xp.reshape((num_batches, bs) + x.shape[1:])
  out = (jnp.stack([apply(batches[i]) for i in range(num_batches)]) if unroll else
         jax.lax.map(apply, batches))
  return out.reshape((num_batches * bs,) + out.shape[2:])[:n]


def prediction_dtype(num_classes: int) -> Any:
  """Smallest signed integer type holding class ids (int8 up to 127 classes)."""
  return jnp.int8 if num_classes <= 127 else jnp.int16
