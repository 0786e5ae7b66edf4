"""Seed lanes: a chunk's seeds split into groups whose SGD segments run side by side on CPU.

A small model's compiled step (the ICL transformer, a CNN on MNIST) keeps about 1.5 of 2 CPU
cores busy, however many seeds ``lax.map`` walks through inside the program. The same compiled
segment called on two halves of the seeds from two threads runs both halves at once (JAX
releases the GIL while a program runs; each thread waits for its own program). On 2 cores: the
sequence experiment at 2 seeds 1.30x faster end to end
(``benchmarks/results/sequence_lanes_cpu.json``), the MNIST CNNs 1.10-1.13x at 4 seeds
(``train_throughput_lanes_cpu.json``). Under the "map" strategy each seed's computation is the
same program body whatever the other seeds are, so lanes change no result
(``tests/test_lanes.py``: bit-identical predictions, probabilities and metrics). vmap batches
the seeds into one computation, so lanes are only used with "map"; and only on CPU.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def usable_cores() -> int:
  """CPU cores this process may run on (its affinity mask where the OS has one)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # macOS, Windows
    return os.cpu_count() or 1


def resolve(lanes: int, strategy: str, num_seeds: int, mesh: Any) -> int:
  """Lanes a chunk of ``num_seeds`` seeds runs on.

  ``lanes`` is a cap (``config.seed_lanes``): 0 = one lane per usable core, 1 = none. Lanes
  apply only where they change no result and can run side by side: the "map" strategy on a
  single-device, single-process CPU run; elsewhere the chunk runs as one program (1).
  """
  if (strategy != "map" or mesh is not None or jax.process_count() > 1
      or jax.default_backend() != "cpu"):
    return 1
  return max(1, min(lanes or usable_cores(), num_seeds))


def bounds(num_seeds: int, lanes: int) -> tuple[tuple[int, int], ...]:
  """(lo, hi) seed rows of each lane: contiguous, sizes differing by at most one."""
  edges = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(num_seeds), lanes)])
  return tuple((int(a), int(b)) for a, b in itertools.pairwise(edges))


@functools.partial(jax.jit, static_argnums=1)
def _split(tree: Any, rows: tuple[tuple[int, int], ...]) -> list[Any]:
  return [jax.tree.map(lambda a, lo=lo, hi=hi: a[lo:hi], tree) for lo, hi in rows]


@jax.jit
def _concat(parts: list[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def _pool() -> concurrent.futures.ThreadPoolExecutor:
  global _POOL
  if _POOL is None:
    _POOL = concurrent.futures.ThreadPoolExecutor(max(usable_cores(), 2),
                                                  thread_name_prefix="seed-lane")
  return _POOL


def _run(fn: Callable[..., Any], *args: Any) -> Any:
  # Waits in the lane's thread: a program dispatched asynchronously and left running would
  # queue behind the other lane's instead of running beside it (measured: no speedup).
  return jax.block_until_ready(fn(*args))


@dataclasses.dataclass(frozen=True)
class LanedSegment:
  """``segment(carry, seeded, shared)`` on lanes of seeds at once; the same signature and
  results as ``segment`` itself (carry and seeded split on their seed axis, shared as is)."""
  compiled: dict[int, Callable[..., Any]]  # lane size -> the segment compiled for it
  rows: tuple[tuple[int, int], ...]

  def __call__(self, carry: Any, seeded: Any, shared: Any) -> Any:
    futures = [_pool().submit(_run, self.compiled[hi - lo], c, s, shared)
               for (lo, hi), (c, s) in zip(self.rows, _split((carry, seeded), self.rows))]
    return _concat([f.result() for f in futures])


def compile_segment(segment: Any, carry: Any, seeded: Any, shared: Any, lanes: int,
                    compile_fn: Callable[..., Any]) -> Callable[..., Any]:
  """``segment`` (jitted) compiled with ``compile_fn(fn, *args)`` for ``lanes`` lanes (as
  :func:`resolve` gives): one lane, the program itself; several, a :class:`LanedSegment` of it
  compiled once per distinct lane size. ``carry``/``seeded``/``shared``: example arguments of
  the whole chunk."""
  if lanes == 1:
    return compile_fn(segment, carry, seeded, shared)
  rows = bounds(jax.tree.leaves(carry)[0].shape[0], lanes)
  compiled = {}
  for (lo, hi), (c, s) in zip(rows, _split((carry, seeded), rows)):
    if hi - lo not in compiled:
      compiled[hi - lo] = compile_fn(segment, c, s, shared)
  return LanedSegment(compiled, rows)
