"""Predictive distributions of the closed-form next-token predictors (the soft references).

Every function takes int tokens [M, T] and returns float64 probabilities [M, T - 1, k]: row t
is the predictor's distribution of token t + 1 given tokens 0..t, aligned with the hard
predictions of :mod:`sgd_phases.sequence_references` (same columns). The smoothing is the
literature's (Edelman et al. 2024 for the in-context predictors); n_t = t + 1 is the number of
tokens seen at position t, c(.) counts within the sequence so far:

* :func:`in_context_unigram`: p(b) = (c(b) + 1) / (n_t + k), add-one over x_0..x_t.
* :func:`in_context_bigram`: p(b) = (c(x_t -> b) + 1) / (c(x_t -> .) + k), add-one over the
  transitions (x_s, x_{s+1}) with s + 1 <= t; while x_t has no observed successor it backs off
  to the in-context unigram's distribution (the hard bigram falls back to the unigram there, so
  the argmax stays the hard prediction; without the back-off it would be uniform).
* :func:`bayes_icl_markov`: the posterior predictive under the ``icl_markov`` prior
  (Dirichlet(alpha) rows, conjugate, x_0 treated as uninformative):
  p(b) = (c(x_t -> b) + alpha) / (c(x_t -> .) + k alpha); uniform while x_t has no successor.
* :func:`bayes_markov_source`: the known source's row ``transitions[x_{t-n+1}, ..., x_t]``;
  uniform at t < n - 1 (the generator's first n tokens are uniform and independent).
* :func:`ngram`: a fitted n-gram model, add-one (Laplace) smoothing on the context it backs
  off to: the longest context of at most n - 1 tokens seen in training (the same context as the
  hard prediction, :func:`sgd_phases.sequence_references.backoff`),
  p(b) = (C(ctx, b) + 1) / (C(ctx) + k) with training counts C. Not Kneser-Ney: interpolated
  or discounted smoothing can move the argmax away from the hard n-gram prediction, and μ must
  stay the hard predictor's.

Argmax: every distribution is a monotone function of the counts (or the true row) the hard
predictor maximises, with equal counts giving bit-identical probabilities, so ``np.argmax``
(the first, i.e. smallest, maximiser) is exactly the hard prediction, ties included
(tests/test_sequence_distributions.py checks it on generated data).

Cost: O(M T k) memory (the output's size; no [M, k, k] count table), one stable sort.
"""

from __future__ import annotations

import numpy as np

from sgd_phases import sequence_references as refs


def _one_hot(x: np.ndarray, k: int) -> np.ndarray:
  out = np.zeros(x.shape + (k,), dtype=np.int32)
  np.put_along_axis(out, x[..., None], 1, axis=-1)
  return out


def _token_counts(x: np.ndarray, k: int) -> np.ndarray:
  """int32 [M, T-1, k]: counts of each token among x_0..x_t."""
  return np.cumsum(_one_hot(x[:, :-1], k), axis=1, dtype=np.int32)


def _successor_counts(x: np.ndarray, k: int) -> np.ndarray:
  """int32 [M, T-1, k]: at t, counts of each b among the transitions x_s -> x_{s+1} = b with
  x_s = x_t and s < t (observed by time t), within the sequence.

  One stable sort groups the sources (sequence, x_s) in position order; an exclusive running
  sum of the successors' one-hots within each group is the count before each position.
  """
  m, length = x.shape
  n = m * (length - 1)
  if n == 0:
    return np.zeros((m, 0, k), dtype=np.int32)
  keys = (np.arange(m, dtype=np.int64)[:, None] * k + x[:, :-1]).ravel()
  order = np.argsort(keys, kind="stable")
  hot = _one_hot(x[:, 1:].ravel()[order], k)
  before = np.cumsum(hot, axis=0, dtype=np.int64) - hot  # exclusive running sum
  sorted_keys = keys[order]
  new = np.ones(n, dtype=bool)
  new[1:] = sorted_keys[1:] != sorted_keys[:-1]
  start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
  out = np.empty((n, k), dtype=np.int32)
  out[order] = before - before[start]
  return out.reshape(m, length - 1, k)


def in_context_unigram(tokens: np.ndarray, k: int) -> np.ndarray:
  """float64 [M, T-1, k]: (c(b) + 1) / (t + 1 + k), c counting b among x_0..x_t."""
  x = refs._check_tokens(tokens, k)  # pylint: disable=protected-access
  seen = np.arange(1, x.shape[1], dtype=np.float64)[None, :, None]  # n_t = t + 1
  return (_token_counts(x, k) + 1.0) / (seen + k)


def in_context_bigram(tokens: np.ndarray, k: int) -> np.ndarray:
  """float64 [M, T-1, k]: add-one over x_t's observed successors; the in-context unigram's
  distribution while x_t has none (module doc)."""
  x = refs._check_tokens(tokens, k)  # pylint: disable=protected-access
  c = _successor_counts(x, k)
  total = c.sum(-1, keepdims=True)
  return np.where(total > 0, (c + 1.0) / (total + k), in_context_unigram(x, k))


def bayes_icl_markov(tokens: np.ndarray, k: int, alpha: float = 1.0) -> np.ndarray:
  """float64 [M, T-1, k]: the posterior predictive (c(x_t -> b) + alpha) / (c(x_t -> .) +
  k alpha) under Dirichlet(alpha) rows (see ``sequence_references.bayes_icl_markov`` for the
  caveat on x_0)."""
  if not (np.isfinite(alpha) and alpha > 0):
    raise ValueError(f"alpha={alpha!r} must be a finite positive number")
  x = refs._check_tokens(tokens, k)  # pylint: disable=protected-access
  c = _successor_counts(x, k)
  return (c + alpha) / (c.sum(-1, keepdims=True) + k * alpha)


def bayes_markov_source(tokens: np.ndarray, transitions: np.ndarray) -> np.ndarray:
  """float64 [M, T-1, k]: the source's true conditional; uniform at t < n - 1."""
  table = np.asarray(transitions, dtype=np.float64)
  k, order = table.shape[-1], table.ndim - 1
  if k < 1 or table.shape != (k,) * (order + 1):
    raise ValueError(f"transitions must have shape [k] * (order + 1), got {table.shape}")
  x = refs._check_tokens(tokens, k)  # pylint: disable=protected-access
  m, length = x.shape
  rows = table.reshape(k**order, k)
  out = np.full((m, length - 1, k), 1.0 / k)
  if order == 0:
    out[:] = rows[0]
  elif length - 1 >= order:
    ctx = refs._contexts(x, order, k)[:, : length - order]  # pylint: disable=protected-access
    out[:, order - 1:] = rows[ctx]
  return out


def ngram(table: refs.NGramTable, tokens: np.ndarray, order: int | None = None) -> np.ndarray:
  """float64 [M, T-1, k]: add-one smoothing on the longest context seen in training (module
  doc); ``order`` as in ``sequence_references.ngram_predict``."""
  level, code, _ = refs.backoff(table, tokens, order)
  k = table.k
  counts = np.zeros(level.shape + (k,), dtype=np.float64)
  for j in np.unique(level):
    lv = table.levels[int(j)]
    at = level == j
    if lv.pairs is None or not lv.pairs.size:
      continue
    query = code[at][:, None] * k + np.arange(k)[None, :]
    pos = np.minimum(np.searchsorted(lv.pairs, query), lv.pairs.size - 1)
    counts[at] = np.where(lv.pairs[pos] == query, lv.counts[pos], 0)
  return (counts + 1.0) / (counts.sum(-1, keepdims=True) + k)
