"""The sequence experiment as a user writes it by hand: the baseline of ``sequence_throughput``.

    from benchmarks import sequence_hand_loop
    out = sequence_hand_loop.run(config)   # config: sequence_phases.get_config("icl_markov")
    out["mu"]["bigram"]                    # [S, E] μ_Y(F_t;L) in bits; out["null"][...]: [P, S, E]

Nothing of the project's training or scoring code: the transformer written directly in jnp
(token + learned position embeddings, attention-only layers of one head without biases, no
LayerNorm, unembedding; N(0, init_scale²) init), ``optax.adam``, one jitted step per seed in a
Python loop (state donated), the test predictions fetched to the host at the evaluation steps,
and μ_Y(F;L) = I(F;Y) − I(F;Y|L) and its conditional null (L permuted within each class of Y,
``num_permutations`` draws per seed and reference) from numpy bincounts of the (f, l, y) codes.

Shared with the experiment, so that both do the same work: the config (settings, evaluation
steps ``eval_lib.eval_steps``), the held-out sequences (``datasets.get_dataset``), the
closed-form references (``sequence_references.closed_form``, numpy) and the on-device batch
sampler (``datasets.sequence_sampling.icl_markov``: both draw their batches at the same cost).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgd_phases import datasets, eval_lib, models, sequence_references
from sgd_phases.datasets import sequence_sampling

# The architecture written here; other model_kwargs are refused, not silently ignored.
ARCHITECTURE = {"num_heads": 1, "mlp": False, "layer_norm": False, "use_bias": False,
                "embedding": "learned"}


def check_config(config: Any) -> None:
  """ValueError naming the field when ``config`` is not what this baseline implements."""
  if config.model != "transformer" or config.dataset.name != "icl_markov":
    raise ValueError("config.model / dataset.name: the baseline is a transformer on icl_markov")
  if config.optimizer.name != "adam" or config.optimizer.schedule != "constant":
    raise ValueError("config.optimizer: the baseline is Adam at a constant learning rate")
  model = models.get_model("transformer", int(config.dataset.k), **config.model_kwargs)
  for name, want in ARCHITECTURE.items():
    if getattr(model, name) != want:
      raise ValueError(f"config.model_kwargs.{name}: the hand-written baseline implements "
                       f"{want!r}, got {getattr(model, name)!r}")


def init_params(key: jax.Array, k: int, d: int, length: int, layers: int, scale: float
                ) -> dict[str, Any]:
  keys = jax.random.split(key, 3 + 4 * layers)
  normal = lambda kk, shape: scale * jax.random.normal(kk, shape)
  return {"tok": normal(keys[0], (k, d)), "pos": normal(keys[1], (length, d)),
          "unembed": normal(keys[2], (d, k)),
          "layers": [{w: normal(keys[3 + 4 * i + j], (d, d)) for j, w in enumerate("qkvo")}
                     for i in range(layers)]}


def init(config: Any, key: jax.Array) -> dict[str, Any]:
  """One seed's parameters for ``config``."""
  kw = config.model_kwargs
  return init_params(key, int(config.dataset.k), int(kw.d_model), int(config.dataset.length),
                     int(kw.num_layers), float(kw.init_scale))


def logits(params: dict[str, Any], x: jax.Array) -> jax.Array:
  """[B, T] tokens -> [B, T, K] next-token logits (causal)."""
  length, d = x.shape[1], params["tok"].shape[1]
  h = params["tok"][x] + params["pos"][:length]
  causal = jnp.tril(jnp.ones((length, length), bool))
  for w in params["layers"]:
    q, k, v = h @ w["q"], h @ w["k"], h @ w["v"]
    scores = jnp.where(causal, jnp.einsum("bqd,bkd->bqk", q, k) / math.sqrt(d), -1e9)
    h = h + jnp.einsum("bqk,bkd->bqd", jax.nn.softmax(scores, -1), v) @ w["o"]
  return h @ params["unembed"]


def make_step(config: Any) -> tuple[optax.GradientTransformation, Any]:
  """(tx, step): ``step(params, opt_state, data_key, t) -> (params, opt_state)`` is one Adam
  step on a fresh batch drawn from ``fold_in(data_key, t)`` (not jitted here)."""
  ds, b = config.dataset, int(config.batch_size)
  tx = optax.adam(float(config.optimizer.learning_rate))

  def step(params, opt_state, data_key, t):
    tokens = sequence_sampling.icl_markov(jax.random.fold_in(data_key, t), b, int(ds.length),
                                          int(ds.k), float(ds.alpha))
    x, y = tokens[:, :-1], tokens[:, 1:]

    def loss(p):
      return optax.softmax_cross_entropy_with_integer_labels(logits(p, x), y).mean()

    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return tx, step


def train(config: Any, x_test: np.ndarray, eval_at: np.ndarray) -> np.ndarray:
  """Per seed in turn, a Python loop of jitted steps; int32 test predictions [S, E, N]."""
  tx, step = make_step(config)
  step = jax.jit(step, donate_argnums=(0, 1))
  predict = jax.jit(lambda p, x: jnp.argmax(logits(p, x), -1).astype(jnp.int32))
  x = jnp.asarray(x_test)
  at = {int(t) for t in eval_at}
  out = []
  for s in range(int(config.num_seeds)):
    init_key, data_key = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), s))
    params = init(config, init_key)
    opt_state, preds = tx.init(params), []
    for t in range(int(eval_at[-1]) + 1):
      if t in at:
        preds.append(np.asarray(predict(params, x)).reshape(-1))  # to the host
      if t < eval_at[-1]:
        params, opt_state = step(params, opt_state, data_key, t)
    out.append(np.stack(preds))
  return np.stack(out)


def _entropy(counts: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
  """Entropy (bits) of the marginal of counts [E, K, K, K] over the kept axes (not ``axes``)."""
  c = counts.sum(axis=axes) if axes else counts
  p = c.reshape(c.shape[0], -1) / counts.reshape(counts.shape[0], -1).sum(-1, keepdims=True)
  return -np.sum(p * np.log2(np.where(p > 0, p, 1.0)), axis=-1)


def mu_from_tables(t: np.ndarray) -> np.ndarray:
  """μ_Y(F;L) = I(F;Y) − I(F;Y|L) in bits from counts [E, K(f), K(l), K(y)]."""
  h = functools.partial(_entropy, t)
  i_fy = h((2, 3)) + h((1, 2)) - h((2,))
  i_fy_given_l = h((3,)) + h((1,)) - h(()) - h((1, 3))
  return i_fy - i_fy_given_l


def score(f: np.ndarray, l: np.ndarray, y: np.ndarray, k: int, num_permutations: int,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(μ [S, E], null [P, S, E]) of predictions f [S, E, N] against one reference l [N]."""
  s_, e, _ = f.shape
  offsets = (np.arange(e) * k**3)[:, None]
  classes = [np.flatnonzero(y == c) for c in range(k)]
  rng = np.random.default_rng(seed)

  def mu(fy: np.ndarray, lab: np.ndarray) -> np.ndarray:
    codes = fy + lab * k + offsets
    return mu_from_tables(np.bincount(codes.ravel(), minlength=e * k**3).reshape(e, k, k, k))

  mus, null = np.empty((s_, e)), np.empty((num_permutations, s_, e))
  for s in range(s_):
    fy = f[s].astype(np.int64) * k * k + y
    mus[s] = mu(fy, l)
    for p in range(num_permutations):
      perm = l.copy()
      for idx in classes:
        perm[idx] = l[rng.permutation(idx)]
      null[p, s] = mu(fy, perm)
  return mus, null


def run(config: Any) -> dict[str, Any]:
  """Trains every seed and scores it against every closed-form reference; predictions, μ,
  the nulls and the wall and CPU seconds spent training (with evaluations) and scoring."""
  check_config(config)
  ds = datasets.get_dataset(config.dataset)
  eval_at = eval_lib.eval_steps(int(config.num_steps), config.eval.schedule,
                                int(config.eval.num_points), int(config.eval.every))
  t0, c0 = time.perf_counter(), time.process_time()
  f = train(config, ds.x_test, eval_at)
  t1, c1 = time.perf_counter(), time.process_time()
  y, k = ds.y_test_flat, ds.num_classes
  mu, null = {}, {}
  for i, (name, ref) in enumerate(config.references.items()):
    l = sequence_references.closed_form(ref.model, dict(ref.model_kwargs), ds)
    mu[name], null[name] = score(f, l.reshape(-1), y, k, int(config.null.num_permutations), i)
  return {"predictions": f, "mu": mu, "null": null, "steps": eval_at,
          "train_s": t1 - t0, "score_s": time.perf_counter() - t1,
          "train_cpu_s": c1 - c0, "score_cpu_s": time.process_time() - c1}
