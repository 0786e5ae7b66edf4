"""Token-sequence generators for next-token prediction (numpy only, no download).

The sequence datasets built from them (registry entries, configs, text files) are
:mod:`sgd_phases.datasets.sequences`, which re-exports every public name below.

* :func:`icl_markov` - in-context Markov chains (Edelman et al. 2024, "The Evolution of
  Statistical Induction Heads: In-Context Learning Markov Chains"): every sequence comes from its
  *own* k-state chain whose transition rows are drawn ~ Dirichlet(alpha 1_k); the first token is
  drawn from that chain's stationary distribution (as in the paper).
* :func:`markov_source_transitions` / :func:`markov_source` - one *fixed* order-n Markov source
  shared by all sequences; the first n tokens of a sequence are uniform and independent.
* :func:`text_sequences` / :func:`decode_text` - character-level text chopped into
  non-overlapping windows.

Synopsis::

    tokens, p = icl_markov(1000, 64, k=3, alpha=1.0, rng=0, return_transitions=True)
    table = markov_source_transitions(k=4, order=2, alpha=0.5, rng=0)   # [4, 4, 4]
    tokens = markov_source(1000, 64, table, rng=1)                      # [1000, 64] int32
    tokens, vocab = text_sequences(text, length=128)

Randomness: ``rng`` is either a ``np.random.Generator`` (used as is, draws in a fixed order) or
an integer data seed, in which case every use gets its own named stream
(:func:`sgd_phases.datasets.base.data_rng`), e.g. ``"icl_markov/transitions"`` and
``"icl_markov/tokens"``: with a seed, the transition matrices do not depend on ``length`` and a
longer draw extends a shorter one (same prefix). Tokens are int32 in ``[0, k)``.
"""

from __future__ import annotations

import numbers

import numpy as np

from sgd_phases.datasets import base

RngLike = np.random.Generator | int

# Largest transition table (entries) markov_source_transitions builds: 2**26 float64 = 512 MiB.
_MAX_TABLE = 2**26


def _rng(rng: RngLike, stream: str) -> np.random.Generator:
  """``rng`` itself, or the named stream ``stream`` of the integer data seed ``rng``."""
  if isinstance(rng, np.random.Generator):
    return rng
  if isinstance(rng, bool) or not isinstance(rng, numbers.Integral) or rng < 0:
    raise ValueError(f"rng={rng!r} must be a numpy Generator or a non-negative integer seed")
  return base.data_rng(int(rng), stream)


def check_int(name: str, value: int, minimum: int) -> int:
  """``value`` as an int, or a ValueError naming ``name`` (booleans and ints < ``minimum``)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
  return int(value)


def check_alpha(alpha: float) -> float:
  """A Dirichlet concentration ``alpha`` as a float, or a ValueError naming it."""
  if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not (
      np.isfinite(alpha) and alpha > 0):
    raise ValueError(f"alpha={alpha!r} must be a finite positive number")
  return float(alpha)


def _sample_rows(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
  """Inverse-CDF draw: for each row i, the first j with cdf[i, j] > u[i] (int32)."""
  idx = (u[:, None] >= cdf).sum(axis=-1)
  # Rounding can leave cdf[..., -1] a hair below 1; such a u picks the last token.
  return np.minimum(idx, cdf.shape[-1] - 1).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# In-context Markov chains


def stationary_distribution(transitions: np.ndarray) -> np.ndarray:
  """Stationary distributions pi (pi P = pi, sum 1) of row-stochastic matrices [..., k, k].

  Solves (P^T - I) pi = 0 with one equation replaced by sum(pi) = 1 (batched). A matrix for
  which that system is singular or gives a bad answer (a reducible chain, possible only when
  Dirichlet draws underflow to exact zeros) falls back to powers of the lazy chain (P + I) / 2
  applied to the uniform distribution, which converge to *a* stationary distribution.
  """
  p = np.asarray(transitions, dtype=np.float64)
  if p.ndim < 2 or p.shape[-1] != p.shape[-2]:
    raise ValueError(f"transitions must have shape [..., k, k], got {p.shape}")
  k = p.shape[-1]
  flat = p.reshape(-1, k, k)
  a = np.swapaxes(flat, -1, -2) - np.eye(k)
  a[:, -1, :] = 1.0
  b = np.zeros((flat.shape[0], k, 1))
  b[:, -1] = 1.0
  pi = np.full((flat.shape[0], k), np.nan)
  try:
    pi = np.linalg.solve(a, b)[..., 0]
  except np.linalg.LinAlgError:
    for i in range(flat.shape[0]):  # Batched solve refuses the whole batch; redo one by one.
      try:
        pi[i] = np.linalg.solve(a[i], b[i])[:, 0]
      except np.linalg.LinAlgError:
        pass
  resid = np.abs(np.einsum("bi,bij->bj", pi, flat) - pi).max(axis=-1)
  bad = ~(np.isfinite(pi).all(axis=-1) & (pi.min(axis=-1) > -1e-9) & (resid < 1e-9))
  for i in np.flatnonzero(bad):
    q = 0.5 * (flat[i] + np.eye(k))
    for _ in range(64):  # (P + I)/2 to the power 2**64.
      q = q @ q
      q /= q.sum(axis=-1, keepdims=True)
    pi[i] = q.mean(axis=0)
  pi = np.clip(pi, 0.0, None)
  pi /= pi.sum(axis=-1, keepdims=True)
  return pi.reshape(p.shape[:-1])


def icl_markov(
    num_sequences: int,
    length: int,
    k: int,
    alpha: float = 1.0,
    rng: RngLike = 0,
    return_transitions: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """Sequences each drawn from its own random k-state Markov chain (in-context learning task).

  For sequence m, every row of its transition matrix P_m is drawn ~ Dirichlet(alpha 1_k)
  independently; x_0 ~ pi_m, the stationary distribution of P_m (Edelman et al. 2024 sample the
  first token from the stationary distribution), and x_{t+1} ~ P_m[x_t]. Vectorised over
  sequences, one step of numpy per position.

  Args:
    num_sequences: M.
    length: T, tokens per sequence.
    k: number of states (the vocabulary size).
    alpha: Dirichlet concentration of every transition row (small = sparse, peaked rows).
    rng: a Generator, or an integer seed (streams ``icl_markov/transitions`` and
      ``icl_markov/tokens``).
    return_transitions: also return the matrices P, float64 [M, k, k].

  Returns:
    int32 tokens [M, T], or ``(tokens, transitions)`` if ``return_transitions``.
  """
  m = check_int("num_sequences", num_sequences, 1)
  length = check_int("length", length, 1)
  k = check_int("k", k, 1)
  alpha = check_alpha(alpha)
  p = _rng(rng, "icl_markov/transitions").dirichlet(np.full(k, alpha), size=(m, k))
  p /= p.sum(axis=-1, keepdims=True)
  token_rng = _rng(rng, "icl_markov/tokens")
  cdf = np.cumsum(p, axis=-1)
  tokens = np.empty((m, length), dtype=np.int32)
  tokens[:, 0] = _sample_rows(np.cumsum(stationary_distribution(p), axis=-1), token_rng.random(m))
  rows = np.arange(m)
  for t in range(1, length):
    tokens[:, t] = _sample_rows(cdf[rows, tokens[:, t - 1]], token_rng.random(m))
  return (tokens, p) if return_transitions else tokens


# ---------------------------------------------------------------------------------------------
# A fixed order-n Markov source


def markov_source_transitions(k: int, order: int, alpha: float = 1.0, rng: RngLike = 0
                              ) -> np.ndarray:
  """A random order-n Markov source: float64 array of shape ``[k] * order + [k]``.

  ``table[c_1, ..., c_n]`` is the distribution of the next token given the previous n tokens
  (c_n the most recent), each row drawn ~ Dirichlet(alpha 1_k) independently. ``order=0`` gives
  a single distribution [k] (i.i.d. tokens). Seed stream: ``markov_source/transitions``.
  """
  k = check_int("k", k, 1)
  order = check_int("order", order, 0)
  alpha = check_alpha(alpha)
  if k ** (order + 1) > _MAX_TABLE:
    raise ValueError(f"k={k}, order={order}: the table would have k**(order+1) = "
                     f"{k ** (order + 1)} entries (limit {_MAX_TABLE})")
  table = _rng(rng, "markov_source/transitions").dirichlet(np.full(k, alpha), size=(k,) * order)
  return table / table.sum(axis=-1, keepdims=True)


def markov_source(num_sequences: int, length: int, transitions: np.ndarray, rng: RngLike = 0
                  ) -> np.ndarray:
  """Samples int32 sequences [M, T] from an order-n source (:func:`markov_source_transitions`).

  The first n tokens of every sequence (all of them if T <= n) are uniform on [0, k) and
  independent; token t >= n is drawn from ``transitions[x_{t-n}, ..., x_{t-1}]``. Seed stream:
  ``markov_source/tokens``.
  """
  m = check_int("num_sequences", num_sequences, 1)
  length = check_int("length", length, 1)
  table = np.asarray(transitions, dtype=np.float64)
  k, order = table.shape[-1], table.ndim - 1
  if k < 1 or table.shape != (k,) * (order + 1):
    raise ValueError(f"transitions must have shape [k] * (order + 1), got {table.shape}")
  if not (np.all(table >= 0) and np.allclose(table.sum(axis=-1), 1.0)):
    raise ValueError("transitions: every row must be a probability distribution")
  cdf = np.cumsum(table.reshape(k**order, k), axis=-1)
  gen = _rng(rng, "markov_source/tokens")
  tokens = np.empty((m, length), dtype=np.int32)
  ctx = np.zeros(m, dtype=np.int64)  # Base-k index of the previous n tokens (oldest first).
  for t in range(length):
    u = gen.random(m)
    if t < order:
      tokens[:, t] = np.minimum((u * k).astype(np.int32), k - 1)
    else:
      tokens[:, t] = _sample_rows(cdf[ctx], u)
    if order:
      ctx = (ctx * k + tokens[:, t]) % k**order
  return tokens


# ---------------------------------------------------------------------------------------------
# Character-level text


def _codepoints(s: str) -> np.ndarray:
  return np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32)


def text_sequences(text: str, length: int, vocab: str | None = None) -> tuple[np.ndarray, str]:
  """Character-level tokens of ``text`` in non-overlapping windows of ``length``.

  Args:
    text: the text (any Unicode; one token per code point).
    length: T, characters per window. The ``len(text) % T`` trailing characters are dropped.
    vocab: the vocabulary, a string of distinct characters; token i is ``vocab[i]``. Default:
      the sorted set of the characters of ``text`` (build it on the training text and pass it
      when encoding validation text).

  Returns:
    ``(tokens, vocab)``: int32 tokens [len(text) // T, T] and the vocabulary used.

  Raises:
    ValueError: a character of ``text`` is not in ``vocab`` (the error names it and its
      position; there is no out-of-vocabulary token), ``vocab`` repeats a character, or ``text``
      is shorter than one window.
    TypeError: ``text`` is not a str.
  """
  if not isinstance(text, str):
    raise TypeError(f"text must be a str, got {type(text).__name__}")
  length = check_int("length", length, 1)
  if vocab is None:
    vocab = "".join(sorted(set(text)))
  elif not isinstance(vocab, str) or len(set(vocab)) != len(vocab) or not vocab:
    raise ValueError("vocab must be a non-empty string of distinct characters")
  m = len(text) // length
  if m == 0:
    raise ValueError(f"text has {len(text)} characters, fewer than one window of length={length}")
  codes = _codepoints(text[: m * length])
  vcodes = _codepoints(vocab)
  order = np.argsort(vcodes)
  pos = np.minimum(np.searchsorted(vcodes[order], codes), len(vocab) - 1)
  missing = vcodes[order][pos] != codes
  if missing.any():
    i = int(np.argmax(missing))
    raise ValueError(f"character {text[i]!r} (position {i}) is not in the vocabulary")
  return order[pos].astype(np.int32).reshape(m, length), vocab


def in_vocab(text: str, vocab: str) -> str:
  """``text`` without the characters that are not in ``vocab`` (vectorised over code points)."""
  codes = _codepoints(text)
  return codes[np.isin(codes, _codepoints(vocab))].tobytes().decode("utf-32-le")


def decode_text(tokens: np.ndarray, vocab: str) -> str:
  """The string spelled by ``tokens`` (any shape, read in C order) under ``vocab``."""
  return "".join(vocab[i] for i in np.asarray(tokens).ravel())

