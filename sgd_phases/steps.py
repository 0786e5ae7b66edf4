"""Pure per-seed functions of the engine: state creation, SGD step, training segment, evaluation.

Everything here works on ONE seed; ``over_seeds`` lifts a function to a leading seed axis with
either ``jax.vmap`` (one batched program) or ``jax.lax.map`` (a sequential loop inside the same
compiled program). The driver (``sgd_phases.train_lib``) jits the lifted functions once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from sgd_phases import eval_lib

PyTree = Any


class TrainState(train_state.TrainState):
  """flax TrainState plus BatchNorm statistics (None for models without BatchNorm)."""
  batch_stats: PyTree = None


@dataclasses.dataclass(frozen=True)
class Trainer:
  """Static description of what is trained and how (hashable: closed over by jit).

  Two trainers are equal when they train the same way, so that a second run in the same
  process (a sweep's cells, a notebook, a rerun) reuses the compiled programs of the first
  (``programs.build`` is cached on the trainer): the optimizer is compared by
  ``optimizer_key`` (``engine.make_trainer``: the optimizer config and the number of steps),
  or by the identity of ``tx`` where none is given (a ``tx`` replaced by
  ``dataclasses.replace`` is a new optimizer)."""
  model: nn.Module
  tx: optax.GradientTransformation = dataclasses.field(compare=False)
  loss: str
  batch_size: int
  num_classes: int
  has_batch_stats: bool
  eval_batch_size: int = 2000
  unroll: bool = False  # seed strategy "unroll": no loops in the programs (see over_seeds)
  # fresh training batches drawn inside the step (datasets.sequence_sampling.Sampler) instead
  # of a stored training set
  sampler: Any = None
  optimizer_key: dataclasses.InitVar[Any] = None
  _optimizer: Any = dataclasses.field(init=False, repr=False)

  def __post_init__(self, optimizer_key: Any) -> None:
    object.__setattr__(self, "_optimizer", self.tx if optimizer_key is None else optimizer_key)


def create_state(tr: Trainer, key: jax.Array, x_example: jax.Array) -> TrainState:
  """Initial state of one seed (``x_example``: one example, no batch axis)."""
  variables = tr.model.init(key, x_example[None], train=False)
  return TrainState.create(apply_fn=tr.model.apply, params=variables["params"], tx=tr.tx,
                           batch_stats=variables.get("batch_stats"))


def _variables(state: TrainState, params: PyTree) -> dict[str, PyTree]:
  v = {"params": params}
  if state.batch_stats is not None:
    v["batch_stats"] = state.batch_stats
  return v


def loss_from_logits(loss: str, logits: jax.Array, y: jax.Array) -> jax.Array:
  """Per-example loss: cross-entropy, or 0.5·||logits − onehot(y)||² ("squared")."""
  if loss == "cross_entropy":
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)
  onehot = jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
  return 0.5 * jnp.sum((logits - onehot) ** 2, axis=-1)


def train_step(tr: Trainer, state: TrainState, x: jax.Array,
               y: jax.Array) -> tuple[TrainState, jax.Array]:
  """One SGD step on a batch; returns the new state and the batch loss."""

  def loss_fn(params):
    if tr.has_batch_stats:
      logits, upd = state.apply_fn(_variables(state, params), x, train=True,
                                   mutable=["batch_stats"])
      new_stats = upd["batch_stats"]
    else:
      logits, new_stats = state.apply_fn({"params": params}, x, train=True), None
    return loss_from_logits(tr.loss, logits, y).mean(), new_stats

  (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads)
  if tr.has_batch_stats:
    state = state.replace(batch_stats=new_stats)
  return state, loss


def epoch_permutation(data_key: jax.Array, epoch: jax.Array, n: int) -> jax.Array:
  """This seed's example order in ``epoch`` (depends only on the seed's key and the epoch)."""
  return jax.random.permutation(jax.random.fold_in(data_key, epoch), n).astype(jnp.int32)


def next_batch(tr: Trainer, t: jax.Array, perm: jax.Array, data_key: jax.Array, source: Any
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(x, y, epoch order) of SGD step ``t`` of one seed.

  ``source``: ``(x_train, labels)``, a stored training set: the batch is the step's slice of
  the epoch's permutation, refreshed at every epoch start (the incomplete last batch is
  dropped); or, with ``tr.sampler``, the sampler's arrays: a fresh batch drawn from
  ``fold_in(data_key, t)`` (``perm`` is unused and returned as is).
  """
  if tr.sampler is not None:
    x, y = tr.sampler.batch(jax.random.fold_in(data_key, t), tr.batch_size, source)
    return x, y, perm
  x_train, labels = source
  n = x_train.shape[0]
  bs = tr.batch_size
  per_epoch = n // bs
  # ``t`` is not batched over seeds, so this stays a real conditional under vmap.
  perm = jax.lax.cond(t % per_epoch == 0,
                      lambda: epoch_permutation(data_key, t // per_epoch, n), lambda: perm)
  idx = jax.lax.dynamic_slice(perm, ((t % per_epoch) * bs,), (bs,))
  return x_train[idx], labels[idx], perm


def segment_step(tr: Trainer, t: jax.Array, carry: tuple[Any, ...], data_key: jax.Array,
                 source: Any) -> tuple[Any, ...]:
  """SGD step ``t`` of one seed: ``carry`` = (state, epoch order, first non-finite step or -1);
  ``source``: the training data (:func:`next_batch`)."""
  state, perm, bad = carry
  x, y, perm = next_batch(tr, t, perm, data_key, source)
  state, loss = train_step(tr, state, x, y)
  bad = jnp.where((bad < 0) & ~jnp.isfinite(loss), t, bad)
  return state, perm, bad


def run_segment(tr: Trainer, state: TrainState, data_key: jax.Array, source: Any,
                start: jax.Array, stop: jax.Array, perm: jax.Array | None = None
                ) -> tuple[Any, ...]:
  """SGD steps ``start..stop-1`` of one seed; returns (state, first non-finite step or -1).

  ``source``: ``(x_train, labels)`` or, with ``tr.sampler``, the sampler's arrays
  (:func:`next_batch`). ``start``/``stop`` are traced scalars, so one compiled program serves
  every segment.

  ``perm``: optional int32 [n] example order of the epoch of step ``start - 1`` (as returned by
  the previous segment; any value when ``start`` begins an epoch; [0] with a sampler). With it
  the order is carried instead of re-sorted at every segment start (a sort of n keys per
  seed, which dominated short segments between evaluations), and ``(state, bad, perm)`` is
  returned. Same steps either way.
  """
  def body(t, carry):
    return segment_step(tr, t, carry, data_key, source)

  if perm is not None:  # the cond in ``next_batch`` refreshes it when ``start`` begins an epoch
    state, perm, bad = jax.lax.fori_loop(start, stop, body, (state, perm.astype(jnp.int32),
                                                             jnp.int32(-1)))
    return state, mark_nonfinite(state, bad, stop - 1), perm
  if tr.sampler is not None:
    perm0 = jnp.zeros((0,), jnp.int32)
  else:
    n = source[0].shape[0]
    perm0 = epoch_permutation(data_key, start // (n // tr.batch_size), n)
  state, _, bad = jax.lax.fori_loop(start, stop, body, (state, perm0, jnp.int32(-1)))
  return state, mark_nonfinite(state, bad, stop - 1)


def mark_nonfinite(state: TrainState, bad: jax.Array, last_step: jax.Array) -> jax.Array:
  """``bad`` (first step with a non-finite loss, or −1), set to ``last_step`` when the state
  left by the segment's last update is non-finite although every loss was finite.

  The loss of step t is computed *before* its update, so a non-finite update at a segment's
  last step shows in no loss of that segment; checking the state once per segment (not per
  step: a reduction over every parameter) makes sure no such state is recorded or saved.
  """
  leaves = [x for x in jax.tree.leaves((state.params, state.opt_state, state.batch_stats))
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True
  return jnp.where((bad < 0) & ~finite, jnp.asarray(last_step, jnp.int32), bad)


def predict_logits(tr: Trainer, state: TrainState, x: jax.Array) -> jax.Array:
  """Eval-mode logits on ``x`` in batches of ``tr.eval_batch_size``."""
  apply = lambda xb: state.apply_fn(_variables(state, state.params), xb, train=False)
  return eval_lib.batched_apply(apply, x, tr.eval_batch_size, unroll=tr.unroll)


def evaluate(tr: Trainer, state: TrainState, y_tr: jax.Array, x_test: jax.Array,
             y_test: jax.Array, x_tr: jax.Array, y_tr_clean: jax.Array,
             x_train_full: jax.Array | None = None,
             x_probe: jax.Array | None = None) -> dict[str, jax.Array]:
  """Hard test predictions, probabilities [N, K] (the softmax of the logits; dropped by XLA
  unless recorded) and test/train accuracy and loss of one seed.

  ``y_tr`` are this seed's training labels on the train-evaluation subset ``x_tr``; with
  ``x_train_full`` the hard predictions on the whole train set are returned too, with
  ``x_probe`` those on extra probe inputs (e.g. a grid, for decision-boundary pictures).
  Sequence models (logits [B, T, V] against targets [B, T]) score every position: their
  predictions come back flattened to [B·T], the (sequence, position) test examples.
  """
  dtype = eval_lib.prediction_dtype(tr.num_classes)
  logits = predict_logits(tr, state, x_test)
  if logits.ndim == 3:  # sequences: the scored positions are the last y_test.shape[1]
    logits = logits[:, logits.shape[1] - y_test.shape[1]:]
  pred = jnp.argmax(logits, -1)
  tr_logits = predict_logits(tr, state, x_tr)
  tr_pred = jnp.argmax(tr_logits, -1)
  out = {} if x_train_full is None else {"train_predictions": predict(tr, state, x_train_full)}
  if x_probe is not None:
    out["probe_predictions"] = predict(tr, state, x_probe)
  return dict(
      out,
      predictions=pred.reshape(-1).astype(dtype),
      probabilities=jax.nn.softmax(logits, axis=-1).reshape(-1, logits.shape[-1]),
      test_acc=jnp.mean(pred == y_test),
      test_loss=loss_from_logits(tr.loss, logits, y_test).mean(),
      train_acc=jnp.mean(tr_pred == y_tr),
      train_loss=loss_from_logits(tr.loss, tr_logits, y_tr).mean(),
      train_acc_clean=jnp.mean(tr_pred == y_tr_clean),
  )


def predict(tr: Trainer, state: TrainState, x: jax.Array) -> jax.Array:
  """Hard predictions of one seed on ``x``."""
  pred = jnp.argmax(predict_logits(tr, state, x), -1)
  return pred.reshape(-1).astype(eval_lib.prediction_dtype(tr.num_classes))


SEED_STRATEGIES = ("vmap", "map", "unroll")


def over_seeds(fn: Callable[[Any, Any, Any], Any], strategy: str) -> Callable[[Any, Any, Any], Any]:
  """Lifts ``fn(carry, seeded, shared)`` of one seed to ``carry`` and ``seeded`` pytrees with a
  leading seed axis (``shared`` is the same for every seed).

  ``vmap``: one batched program; ``map``: ``lax.map``, seeds one after another inside the same
  compiled program (faster for convolutions on CPU, where vmap turns them into grouped convs);
  ``unroll``: one traced copy of ``fn`` per seed, stacked: no loop in the program (XLA:CPU's
  native convolutions are 5-6x slower inside while loops), at the price of S copies to compile.
  """
  if strategy not in SEED_STRATEGIES:
    raise ValueError(f"seed_strategy must be one of {SEED_STRATEGIES}, got {strategy!r}")

  def lifted(carry, seeded, shared):
    one = lambda cs: fn(cs[0], cs[1], shared)  # noqa: E731
    if strategy == "vmap":
      return jax.vmap(one)((carry, seeded))
    if strategy == "unroll":
      num = jax.tree.leaves(carry)[0].shape[0]
      outs = [one(jax.tree.map(lambda a, i=i: a[i], (carry, seeded))) for i in range(num)]
      return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
    return jax.lax.map(one, (carry, seeded))

  return lifted
