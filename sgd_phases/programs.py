"""The compiled programs of a chunk of seeds, and the device inputs they read.

``build(trainer, strategy, mesh)`` returns four programs, jitted once per trainer (``lru_cache``)
and reused by every chunk and call of ``engine.run_seeds``: ``init`` (the seeds' states),
``segment`` (the SGD steps between two evaluations: a ``fori_loop``, or Python-driven steps for
the "unroll" strategy, :class:`StepLoop`), ``record`` (evaluate and write evaluation k into the
recording buffers) and ``predict``. Every program has one signature, ``fn(carry, seeded,
shared)``: pytrees with a leading seed axis (``carry``: what the program updates, donated;
``seeded``: per-seed inputs) and ``shared`` inputs. ``steps.over_seeds`` lifts the per-seed
function over the seed axis (vmap, ``lax.map`` or unrolled) and ``sharding.shard_seeds`` splits
the seeds over devices with prefix specs on those three pytrees. :func:`recording_buffers`,
:func:`training_data` and :func:`first_perm` place a chunk's inputs on the seed mesh.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from sgd_phases import eval_lib, sharding, steps

if TYPE_CHECKING:
  from sgd_phases.engine import EvalData

# The metrics recorded at every evaluation, [S, E] float32 each.
BUFFER_KEYS = ("test_acc", "test_loss", "train_acc", "train_loss", "train_acc_clean")


def compile_logged(fn, *args, what: str):
  """``fn`` (jitted) lowered and compiled for ``args``; logs the compile time."""
  t = time.perf_counter()
  compiled = fn.lower(*args).compile()
  logging.info("compiled %s in %.1f s", what, time.perf_counter() - t)
  return compiled


@dataclasses.dataclass(frozen=True)
class StepLoop:
  """The SGD segment of the "unroll" strategy: steps driven from Python, one call of a jitted
  all-seeds step program each (same signature and results as the ``fori_loop`` segment)."""
  step: Any   # ((state, perm, bad), (data_key, labels), (source, t)) -> (state, perm, bad)
  check: Any  # ((state, bad), (), last step) -> bad: steps.mark_nonfinite over seeds

  def __call__(self, carry, seeded, shared):
    (states, perm), (source, start, stop) = carry, shared
    bad = jnp.full((perm.shape[0],), -1, jnp.int32)
    for t in range(int(start), int(stop)):
      states, perm, bad = self.step((states, perm, bad), seeded, (source, jnp.int32(t)))
    return states, self.check((states, bad), (), jnp.int32(int(stop) - 1)), perm


def _lift(fn, strategy: str, mesh: Any, **jit_kwargs) -> Any:
  """``fn(carry, seeded, shared)`` of one seed -> a jitted program over every seed's."""
  return jax.jit(sharding.shard_seeds(steps.over_seeds(fn, strategy), mesh), **jit_kwargs)


def _source(source: Any, seed_labels: jax.Array | None) -> Any:
  """One seed's training data for ``steps.next_batch``: the sampler's arrays, or
  ``(x_train, labels)`` with this seed's own labels where they are per seed."""
  if isinstance(source, dict):  # a sampler's arrays
    return source
  x_train, shared_labels = source
  return x_train, shared_labels if seed_labels is None else seed_labels


@functools.lru_cache(maxsize=8)
def build(tr: steps.Trainer, strategy: str, mesh: Any) -> tuple[Any, Any, Any, Any]:
  """(init, segment, record, predict) jitted once per trainer: every chunk and call reuses them.

  jit caches compiled executables per function object and input shapes, so building fresh
  closures per chunk would recompile; data enter as arguments, never as closed-over arrays
  (which XLA would embed in the program as constants: slow to compile, a copy in memory).
  """
  # init maps over the seeds where training does ("map"): the same parameters (threefry draws
  # do not depend on batching) at half the compile time of vmapped draws on CPU (ICL
  # transformer: 1.5 vs 3.0 CPU s; benchmarks/sequence_throughput.py)
  init = _lift(lambda key, _, x0: steps.create_state(tr, key, x0),
               "map" if strategy == "map" else "vmap", None)

  if strategy == "unroll":
    def one_step(carry, seeded, shared):
      (data_key, labels), (source, t) = seeded, shared
      return steps.segment_step(tr, t, carry, data_key, _source(source, labels))

    def check(carry, _, last_step):
      return steps.mark_nonfinite(*carry, last_step)

    segment = StepLoop(_lift(one_step, strategy, mesh, donate_argnums=0),
                        _lift(check, "vmap", mesh))
  else:
    def one_segment(carry, seeded, shared):
      (state, perm), (data_key, labels), (source, start, stop) = carry, seeded, shared
      return steps.run_segment(tr, state, data_key, _source(source, labels), start, stop,
                               perm=perm)

    segment = _lift(one_segment, strategy, mesh, donate_argnums=0)

  def one_eval(state, labels_tr, shared):
    return steps.evaluate(tr, state, labels_tr, **shared)

  evaluate = sharding.shard_seeds(steps.over_seeds(one_eval, strategy), mesh)

  @functools.partial(jax.jit, donate_argnums=1)
  def record(states, buffers, k, labels_tr, shared):
    ev = evaluate(states, labels_tr, shared)
    return {name: buf.at[:, k].set(ev[name].astype(buf.dtype)) for name, buf in buffers.items()}

  predict = _lift(lambda state, _, x: steps.predict(tr, state, x), strategy, mesh)
  return init, segment, record, predict


def first_perm(data_keys: jax.Array, start: int, n: int, batch_size: int, mesh: Any
                ) -> jax.Array:
  """[S, n] example order current before step ``start`` (unused zeros at an epoch start)."""
  per_epoch = max(n // batch_size, 1)
  if start % per_epoch == 0:
    return sharding.put_seeded(np.zeros((data_keys.shape[0], n), np.int32), mesh)
  perms = jax.jit(jax.vmap(steps.epoch_permutation, in_axes=(0, None, None)),
                  static_argnums=2)(data_keys, jnp.int32(start // per_epoch), n)
  return sharding.put_seeded(perms, mesh)


def recording_buffers(tr: steps.Trainer, data: EvalData, s: int, e: int, train_predictions: str,
             mesh: Any, probabilities: str = "") -> dict[str, jax.Array]:
  """Zeroed recording buffers [S, E, ...] (metrics, predictions, optional extras), sharded
  (host zeros placed on the devices: nothing to compile)."""
  pdtype = eval_lib.prediction_dtype(tr.num_classes)
  buffers = {k: np.zeros((s, e), np.float32) for k in BUFFER_KEYS}
  buffers["predictions"] = np.zeros((s, e, data.y_test.size), pdtype)  # sequences: M·(T−1)
  if train_predictions == "all":
    buffers["train_predictions"] = np.zeros((s, e, data.x_train.shape[0]), pdtype)
  if data.x_probe is not None:
    buffers["probe_predictions"] = np.zeros((s, e, data.x_probe.shape[0]), pdtype)
  if probabilities:
    buffers["probabilities"] = np.zeros((s, e, data.y_test.size, tr.num_classes), probabilities)
  return sharding.put_seeded(buffers, mesh)


def training_data(tr: steps.Trainer, data: EvalData, labels: np.ndarray, s: int, mesh: Any
                   ) -> tuple[Any, jax.Array | None, jax.Array]:
  """(source, per-seed labels or None, train-evaluation labels [S, m, ...]) of a chunk of ``s``
  seeds. ``source`` is what ``steps.next_batch`` reads, replicated: the sampler's arrays, or
  ``(x_train, labels)`` with the labels shared by every seed (None where they are per seed:
  then they travel with the seeds). Shared labels are never copied per seed."""
  per_seed = np.ndim(labels) > data.y_test.ndim  # [S, n, ...]: every seed's own labels
  m = data.x_tr.shape[0]
  sub = np.asarray(labels[:, :m] if per_seed else labels[:m], np.int32)  # (host arrays are
  labels_tr = sharding.put_seeded(  # placed as they are: nothing compiled for them)
      sub if per_seed else np.broadcast_to(sub, (s, *sub.shape)), mesh)
  if tr.sampler is not None:
    arrays = {k: sharding.to_device(v) for k, v in tr.sampler.arrays().items()}
    return sharding.put_replicated(arrays, mesh), None, labels_tr
  lab = sharding.to_device(labels, np.int32)
  if per_seed:
    return (data.x_train, None), sharding.put_seeded(lab, mesh), labels_tr
  return (data.x_train, sharding.put_replicated(lab, mesh)), None, labels_tr

