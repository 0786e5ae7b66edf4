"""Closed-form hard predictors for next-token prediction (the sequence models' references).

Every predictor takes int tokens [M, T] and returns int32 predictions [M, T - 1]: column t is
the prediction of token t + 1 from tokens 0..t (the t + 1 tokens seen so far), exactly what a
causal model's logits at position t are scored against (see :func:`accuracy`).

Tie rule (everywhere): among the tokens that maximise the score (a count, or a probability),
the SMALLEST token id is predicted. In particular a predictor with nothing to go on (all counts
zero, all probabilities equal) predicts token 0.

Predictors:

* :func:`in_context_unigram` - the most frequent token among x_0..x_t.
* :func:`in_context_bigram` - the most frequent successor of x_t among the transitions
  (x_s, x_{s+1}), s + 1 <= t, in the same sequence; falls back to the in-context unigram while
  x_t has no observed successor.
* :func:`bayes_icl_markov` - posterior-predictive argmax under the
  :func:`~sgd_phases.datasets.sequences.icl_markov` prior (Dirichlet(alpha) rows): the same
  counts as the bigram, but token 0 (not the unigram) while x_t has no observed successor.
* :func:`bayes_markov_source` - argmax of the true conditional of a fixed order-n source.
* :func:`fit_ngram` / :func:`ngram_predict` - a count-based n-gram model fitted on a training
  set, backing off to shorter contexts.

Cost: the in-context predictors never materialise an [M, k, k] count table. The count of each
token (or transition) at its own occurrence is found with one stable sort, and the running
argmax is updated incrementally (only one count grows per step), so memory is O(M T + M k) and
time O(M T log(M T)) plus a loop of O(M) numpy steps over t. M=2000, T=256, k=128 takes well
under a second.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# A fitted n-gram level with at most this many possible contexts (k**j) is a dense array.
DENSE_MAX_CONTEXTS = 2**20


def _check_tokens(tokens: np.ndarray, k: int) -> np.ndarray:
  """tokens as int64 [M, T], T >= 1, values in [0, k)."""
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k={k!r} must be a positive integer")
  x = np.asarray(tokens)
  if x.ndim != 2 or x.shape[1] < 1 or not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f"tokens must be an integer array [M, T] with T >= 1, got {x.dtype} "
                     f"{x.shape}")
  if x.size and (x.min() < 0 or x.max() >= k):
    raise ValueError(f"tokens must lie in [0, k={k}), got range [{x.min()}, {x.max()}]")
  return x.astype(np.int64)


def accuracy(pred: np.ndarray, tokens: np.ndarray) -> float:
  """Fraction of positions where ``pred`` [M, T-1] equals the next token ``tokens[:, 1:]``."""
  pred, tokens = np.asarray(pred), np.asarray(tokens)
  if pred.shape != (tokens.shape[0], tokens.shape[1] - 1):
    raise ValueError(f"pred {pred.shape} must be [M, T-1] for tokens {tokens.shape}")
  return float(np.mean(pred == tokens[:, 1:]))


def _occurrences(keys: np.ndarray) -> np.ndarray:
  """For keys [M, L] (non-negative int64): how often keys[m, s] occurs in keys[m, :s + 1]."""
  m, length = keys.shape
  n = m * length
  if n == 0:
    return np.zeros_like(keys)
  span = int(keys.max()) + 1
  flat = (np.arange(m, dtype=np.int64)[:, None] * span + keys).ravel()
  order = np.argsort(flat, kind="stable")  # Stable: equal keys stay in position order.
  sorted_keys = flat[order]
  new = np.ones(n, dtype=bool)
  new[1:] = sorted_keys[1:] != sorted_keys[:-1]
  idx = np.arange(n)
  start = np.maximum.accumulate(np.where(new, idx, 0))
  out = np.empty(n, dtype=np.int64)
  out[order] = idx - start + 1
  return out.reshape(m, length)


def _update_argmax(best: np.ndarray, best_count: np.ndarray, token: np.ndarray,
                   count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Running argmax after the count of ``token`` grew to ``count`` (all other counts fixed).

  ``best`` is the smallest id with the maximal count ``best_count``; the new maximum is either
  the old one or ``token``, and on a tie the smaller id wins.
  """
  take = (count > best_count) | ((count == best_count) & (token < best))
  return np.where(take, token, best), np.where(take, count, best_count)


def _unigram(x: np.ndarray) -> np.ndarray:
  m, length = x.shape
  occ = _occurrences(x)
  best = np.zeros(m, dtype=np.int64)
  best_count = np.zeros(m, dtype=np.int64)
  pred = np.empty((m, length - 1), dtype=np.int32)
  for t in range(length - 1):
    best, best_count = _update_argmax(best, best_count, x[:, t], occ[:, t])
    pred[:, t] = best
  return pred


def _bigram(x: np.ndarray, k: int, fallback: np.ndarray | None) -> np.ndarray:
  """Most frequent observed successor of x_t; ``fallback`` [M, T-1] (None: token 0) if none."""
  m, length = x.shape
  pred = np.empty((m, length - 1), dtype=np.int32)
  if length < 2:
    return pred
  occ = _occurrences(x[:, :-1] * k + x[:, 1:])  # occ[:, s]: count of pair (x_s, x_{s+1}).
  rows = np.arange(m)
  best = np.zeros((m, k), dtype=np.int64)  # Per sequence and current token: best successor...
  best_count = np.zeros((m, k), dtype=np.int64)  # ... and its count (0: none observed yet).
  for t in range(length - 1):
    if t >= 1:  # Transition (x_{t-1}, x_t) is now observed.
      a = x[:, t - 1]
      best[rows, a], best_count[rows, a] = _update_argmax(
          best[rows, a], best_count[rows, a], x[:, t], occ[:, t - 1])
    seen = best_count[rows, x[:, t]] > 0
    other = fallback[:, t] if fallback is not None else 0
    pred[:, t] = np.where(seen, best[rows, x[:, t]], other)
  return pred


def in_context_unigram(tokens: np.ndarray, k: int) -> np.ndarray:
  """int32 [M, T-1]: the most frequent token among x_0..x_t (ties: smallest id)."""
  return _unigram(_check_tokens(tokens, k))


def in_context_bigram(tokens: np.ndarray, k: int) -> np.ndarray:
  """int32 [M, T-1]: the most frequent successor of x_t in the same sequence so far.

  Counts the transitions (x_s, x_{s+1}) with x_s = x_t and s + 1 <= t; ties go to the smallest
  id. While x_t has no observed successor (e.g. at t = 0, or the first visit to a state), the
  prediction is the in-context unigram (:func:`in_context_unigram`).
  """
  x = _check_tokens(tokens, k)
  return _bigram(x, k, _unigram(x))


def bayes_icl_markov(tokens: np.ndarray, k: int, alpha: float = 1.0) -> np.ndarray:
  """int32 [M, T-1]: the posterior-predictive argmax under the ``icl_markov`` prior.

  With every transition row ~ Dirichlet(alpha 1_k) independently, the posterior predictive is
  P(x_{t+1} = j | x_0..x_t) = (n(x_t -> j) + alpha) / (n(x_t ->) + k alpha), n counting the
  transitions observed so far. alpha is the same for every j, so the argmax is the argmax of the
  counts: this equals :func:`in_context_bigram` (same counts, same tie rule) except while x_t
  has no observed successor, where every j ties and the prediction is token 0 (the bigram falls
  back to the unigram). ``alpha`` does not change the prediction (it is checked, not used).

  Caveat: this is the conjugate posterior, which treats x_0 as carrying no information about
  the chain. ``icl_markov`` draws x_0 from the stationary distribution of the chain, which does
  carry some (at t = 0 the exact posterior favours x_1 = x_0, since chains with a large
  P[x_0, x_0] put more stationary mass on x_0: with alpha = 1, P(x_1 = x_0) is about 0.59 for
  k = 2 and 0.40 for k = 3, against 1/k here); the exact Bayes rule can therefore differ from
  this one where counts tie (in particular where none are observed).
  """
  if not (np.isfinite(alpha) and alpha > 0):
    raise ValueError(f"alpha={alpha!r} must be a finite positive number")
  return _bigram(_check_tokens(tokens, k), k, None)


def _contexts(x: np.ndarray, j: int, k: int) -> np.ndarray:
  """Base-k codes of every window of j >= 1 tokens: [M, T-j+1], column s codes x_s..x_{s+j-1}.

  The oldest token is the most significant digit (the same layout as a C-order table
  ``[k] * j``), so column s is the context ending at position s + j - 1.
  """
  length = x.shape[1]
  code = np.zeros((x.shape[0], length - j + 1), dtype=np.int64)
  for i in range(j):
    code = code * k + x[:, i: length - j + 1 + i]
  return code


def bayes_markov_source(tokens: np.ndarray, transitions: np.ndarray) -> np.ndarray:
  """int32 [M, T-1]: argmax of the source's true next-token conditional (Bayes-optimal).

  ``transitions`` is a ``[k] * n + [k]`` table (:func:`~sgd_phases.datasets.sequences.
  markov_source_transitions`); at t >= n - 1 the prediction is
  ``argmax transitions[x_{t-n+1}, ..., x_t]``. At t < n - 1 (fewer than n previous tokens) the
  next token is one of ``markov_source``'s uniform, independent first n tokens, so every token
  ties and the prediction is token 0 - which is again Bayes-optimal for that generator.
  """
  table = np.asarray(transitions)
  k, order = table.shape[-1], table.ndim - 1
  if k < 1 or table.shape != (k,) * (order + 1):
    raise ValueError(f"transitions must have shape [k] * (order + 1), got {table.shape}")
  x = _check_tokens(tokens, k)
  best = np.argmax(table.reshape(k**order, k), axis=-1).astype(np.int32)
  m, length = x.shape
  pred = np.zeros((m, length - 1), dtype=np.int32)
  if order == 0:
    pred[:] = best[0]
  elif length - 1 >= order:  # Some t in [n-1, T-2].
    pred[:, order - 1:] = best[_contexts(x, order, k)[:, : length - order]]
  return pred


# ---------------------------------------------------------------------------------------------
# Fitted n-gram models


@dataclasses.dataclass(frozen=True, eq=False)
class NGramLevel:
  """The argmax next token for every seen context of one length j (base-k codes).

  Dense (``contexts is None``): ``argmax[c]`` for every code c < k**j, -1 for unseen contexts.
  Sparse (k**j > ``DENSE_MAX_CONTEXTS``): ``contexts`` the sorted seen codes and ``argmax``
  theirs; looked up by binary search. ``pairs``/``counts``: the sorted seen (context, next)
  codes ``context * k + next`` and how often each occurred in training (for the smoothed
  distributions of :mod:`sgd_phases.sequence_distributions`).
  """

  argmax: np.ndarray
  contexts: np.ndarray | None = None
  pairs: np.ndarray | None = None
  counts: np.ndarray | None = None

  def lookup(self, codes: np.ndarray) -> np.ndarray:
    """int32 argmax for each code (any shape), -1 where the context was never seen."""
    if self.contexts is None:
      return self.argmax[codes]
    if not self.contexts.size:
      return np.full(codes.shape, -1, dtype=np.int32)
    pos = np.minimum(np.searchsorted(self.contexts, codes), self.contexts.size - 1)
    return np.where(self.contexts[pos] == codes, self.argmax[pos], -1).astype(np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class NGramTable:
  """A fitted n-gram model: ``levels[j]`` holds the contexts of length j, j = 0..order-1."""

  order: int
  k: int
  levels: tuple[NGramLevel, ...]


def fit_ngram(train_tokens: np.ndarray, order: int, k: int) -> NGramTable:
  """Fits a count-based n-gram model of ``order`` n >= 1 on training sequences [M, T].

  Order 1 is the unigram (the most frequent token overall), order 2 the bigram, and so on: the
  context of a prediction is the previous n - 1 tokens. Every shorter context length j < n is
  fitted too (for back-off), each from the (context, next token) pairs that lie inside one
  training sequence. Each level stores only the argmax next token per seen context (ties:
  smallest id), as a dense array over all k**j contexts when k**j <= ``DENSE_MAX_CONTEXTS``
  (2**20), else as sorted seen contexts searched by binary search (memory O(seen contexts)).
  """
  if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
    raise ValueError(f"order={order!r} must be an integer >= 1")
  x = _check_tokens(train_tokens, k)
  if k**order >= 2**62:
    raise ValueError(f"k**order = {k}**{order} is too large for int64 context codes")
  length = x.shape[1]
  levels = []
  for j in range(order):
    if j >= length:
      ctx = nxt = np.zeros(0, dtype=np.int64)
    elif j == 0:
      ctx, nxt = np.zeros(x.size, dtype=np.int64), x.ravel()
    else:
      ctx, nxt = _contexts(x, j, k)[:, : length - j].ravel(), x[:, j:].ravel()
    pairs, counts = np.unique(ctx * k + nxt, return_counts=True)
    c, n = pairs // k, pairs % k
    stats = {"pairs": pairs, "counts": counts.astype(np.int64)}
    srt = np.lexsort((n, -counts, c))  # By context, then count descending, then id ascending.
    c, n = c[srt], n[srt]
    first = np.ones(c.size, dtype=bool)
    first[1:] = c[1:] != c[:-1]
    seen, argmax = c[first], n[first].astype(np.int32)
    if k**j <= DENSE_MAX_CONTEXTS:
      dense = np.full(k**j, -1, dtype=np.int32)
      dense[seen] = argmax
      levels.append(NGramLevel(argmax=dense, **stats))
    else:
      levels.append(NGramLevel(argmax=argmax, contexts=seen, **stats))
  return NGramTable(order=int(order), k=int(k), levels=tuple(levels))


def backoff(table: NGramTable, tokens: np.ndarray, order: int | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Which context a fitted n-gram model uses at each position: int arrays [M, T-1] of the
  context length j, its base-k code, and that context's argmax next token.

  At position t the model uses the longest context x_{t-j+1..t} with j <= n - 1 that both
  exists (j <= t + 1 tokens seen) and was seen in training, down to j = 0 (code 0: the training
  set's token counts). ``order`` (default: the fitted one) may be lower than the fitted order.
  """
  order = table.order if order is None else order
  if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not (
      1 <= order <= table.order):
    raise ValueError(f"order={order!r} must be an integer in [1, {table.order}] (fitted order)")
  x = _check_tokens(tokens, table.k)
  m, length = x.shape
  unigram = table.levels[0].lookup(np.zeros((), dtype=np.int64))
  pred = np.full((m, length - 1), max(int(unigram), 0), dtype=np.int32)
  level = np.zeros((m, length - 1), dtype=np.int64)
  code = np.zeros((m, length - 1), dtype=np.int64)
  for j in range(1, order):
    if length - 1 < j:  # No position t <= T-2 has j tokens x_{t-j+1..t}.
      break
    codes = _contexts(x, j, table.k)[:, : length - j]
    found = table.levels[j].lookup(codes)
    seen = found >= 0
    pred[:, j - 1:] = np.where(seen, found, pred[:, j - 1:])
    level[:, j - 1:] = np.where(seen, j, level[:, j - 1:])
    code[:, j - 1:] = np.where(seen, codes, code[:, j - 1:])
  return level, code, pred


def ngram_predict(table: NGramTable, tokens: np.ndarray, order: int | None = None) -> np.ndarray:
  """int32 [M, T-1]: predictions of a fitted n-gram model, with back-off (:func:`backoff`):
  the argmax next token of the longest context seen in training."""
  return backoff(table, tokens, order)[2]


# ----------------------------------------------------------------------------- as references
# ``config.references.<name> = config_lib.reference_config(KIND, trained_on="closed_form",
# **kwargs)``: the reference's test predictions are computed here, identical for every seed.
CLOSED_FORM = ("in_context_unigram", "in_context_bigram", "bayes", "ngram")
CLOSED_FORM_KWARGS = {"ngram": {"order": 1}}  # kind -> {keyword: default}


def tokens_of(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Whole sequences [M, T] back from a sequence dataset's inputs [M, T - 1] and next-token
  targets (the last columns of tokens[:, 1:])."""
  return np.concatenate([np.asarray(x), np.asarray(y)[:, -1:]], axis=1)


def check_closed_form(kind: str, kwargs: dict, field: str) -> None:
  """Raises one ValueError naming ``field`` for an unknown kind or bad keyword arguments."""
  if kind not in CLOSED_FORM:
    raise ValueError(f"config.{field}.model: {kind!r} is not a closed-form predictor "
                     f"{CLOSED_FORM}")
  allowed = set(CLOSED_FORM_KWARGS.get(kind, {}))
  if set(kwargs) - allowed:
    raise ValueError(f"config.{field}.model_kwargs: {sorted(set(kwargs) - allowed)} not "
                     f"accepted by {kind!r} (accepted: {sorted(allowed)})")
  order = kwargs.get("order", 1)
  if kind == "ngram" and (isinstance(order, bool) or not isinstance(order, int) or order < 1):
    raise ValueError(f"config.{field}.model_kwargs.order: must be an int >= 1, got {order!r}")


def closed_form(kind: str, kwargs: dict, ds, probabilities: bool = False) -> np.ndarray:
  """Test predictions [N] (N = M (T - 1), positions flattened) of closed-form predictor ``kind``
  on sequence dataset ``ds`` (a ``datasets.Dataset`` of ``icl_markov``, ``markov_source`` or
  ``text``); ``ngram`` is fitted on the training sequences (``kwargs["order"]``). With
  ``probabilities``: its predictive distribution instead, float32 [N, k]
  (:mod:`sgd_phases.sequence_distributions`), whose argmax is the prediction."""
  from sgd_phases import sequence_distributions as dist  # pylint: disable=g-import-not-at-top
  if "length" not in ds.meta:
    raise ValueError(f"closed-form reference {kind!r}: dataset {ds.name!r} is not a sequence "
                     "dataset (icl_markov, markov_source, text)")
  k, test = ds.num_classes, tokens_of(ds.x_test, ds.y_test)
  if kind == "in_context_unigram":
    out = (dist.in_context_unigram if probabilities else in_context_unigram)(test, k)
  elif kind == "in_context_bigram":
    out = (dist.in_context_bigram if probabilities else in_context_bigram)(test, k)
  elif kind == "ngram":
    table = fit_ngram(tokens_of(ds.x_train, ds.y_train), int(kwargs.get("order", 1)), k)
    out = (dist.ngram if probabilities else ngram_predict)(table, test)
  elif ds.name == "icl_markov":
    out = (dist.bayes_icl_markov if probabilities else bayes_icl_markov)(test, k,
                                                                          ds.meta["alpha"])
  elif ds.name == "markov_source":
    out = (dist.bayes_markov_source if probabilities else bayes_markov_source)(
        test, ds.meta["transitions"])
  else:
    raise ValueError(f"closed-form reference 'bayes': no known prior for dataset {ds.name!r}")
  skip = ds.meta.get("skip_positions", 0)
  out = np.asarray(out, np.float32 if probabilities else np.int32)[:, skip:]
  return np.ascontiguousarray(out).reshape((-1, k) if probabilities else (-1,))
