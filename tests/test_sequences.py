"""Tests for sgd_phases.datasets.sequences (generators) and sgd_phases.sequence_references.

Generators are checked statistically against the law they claim (z-scores against the true
tables, each paired with a wrong table the same check must reject); the reference predictors
against brute-force pure-Python loops over ``collections.Counter`` on small random inputs (with
many ties), and against each other on samples from a known source.
"""

from __future__ import annotations

import collections
import time

import numpy as np
import pytest

from sgd_phases import sequence_references as refs
from sgd_phases.datasets import sequences

# ---------------------------------------------------------------------------------------------
# Brute-force references (obviously correct, slow)


def _argmax_smallest(counter: collections.Counter) -> int:
  top = max(counter.values())
  return min(j for j, c in counter.items() if c == top)


def _bf_unigram(seq: list[int], t: int) -> int:
  return _argmax_smallest(collections.Counter(seq[: t + 1]))


def _bf_successors(seq: list[int], t: int) -> collections.Counter:
  return collections.Counter(seq[s + 1] for s in range(t) if seq[s] == seq[t])


def _bf_bigram(seq: list[int], t: int) -> int:
  succ = _bf_successors(seq, t)
  return _argmax_smallest(succ) if succ else _bf_unigram(seq, t)


def _bf_bayes_icl(seq: list[int], t: int, k: int, alpha: float) -> int:
  succ = _bf_successors(seq, t)
  n = sum(succ.values())
  post = [(succ[j] + alpha) / (n + k * alpha) for j in range(k)]
  return post.index(max(post))  # list.index: the first (smallest) maximiser.


def _bf_bayes_source(seq: list[int], t: int, table: np.ndarray) -> int:
  order = table.ndim - 1
  if t + 1 < order:
    return 0
  row = table[tuple(seq[t + 1 - order: t + 1])] if order else table
  return list(row).index(max(row))


def _bf_ngram_fit(train: np.ndarray, order: int) -> list[dict]:
  levels = []
  for j in range(order):
    level = collections.defaultdict(collections.Counter)
    for seq in train.tolist():
      for s in range(j, len(seq)):
        level[tuple(seq[s - j: s])][seq[s]] += 1
    levels.append(level)
  return levels


def _bf_ngram(levels: list[dict], seq: list[int], t: int) -> int:
  for j in range(min(len(levels) - 1, t + 1), -1, -1):
    ctx = tuple(seq[t + 1 - j: t + 1])
    if ctx in levels[j]:
      return _argmax_smallest(levels[j][ctx])
  raise AssertionError("the empty context is always seen")


def _brute(fn, tokens: np.ndarray, *args) -> np.ndarray:
  return np.array([[fn(seq, t, *args) for t in range(len(seq) - 1)] for seq in tokens.tolist()],
                  dtype=np.int32).reshape(tokens.shape[0], tokens.shape[1] - 1)


def _random_tokens(seed: int, m: int, t: int, k: int) -> np.ndarray:
  """Small random inputs; a skewed law over few tokens gives many repeats and ties."""
  rng = np.random.default_rng(seed)
  p = rng.dirichlet(np.ones(k))
  return rng.choice(k, size=(m, t), p=p).astype(np.int32)


SMALL_CASES = [(0, 40, 12, 3), (1, 40, 15, 2), (2, 20, 20, 5), (3, 5, 1, 3), (4, 5, 2, 1),
               (5, 30, 9, 4)]


def _z(counts: np.ndarray, p: np.ndarray) -> np.ndarray:
  """z-scores of multinomial cell counts [..., k] against row laws p [..., k]."""
  n = counts.sum(axis=-1, keepdims=True)
  return (counts - n * p) / np.sqrt(n * p * (1 - p) + 1e-12)


# ---------------------------------------------------------------------------------------------
# Generators


def test_icl_markov_shapes_range_determinism():
  x, p = sequences.icl_markov(50, 30, 4, alpha=0.5, rng=3, return_transitions=True)
  assert x.shape == (50, 30) and x.dtype == np.int32
  assert x.min() >= 0 and x.max() < 4
  assert p.shape == (50, 4, 4)
  y, q = sequences.icl_markov(50, 30, 4, alpha=0.5, rng=3, return_transitions=True)
  np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(p, q)
  assert not np.array_equal(x, sequences.icl_markov(50, 30, 4, alpha=0.5, rng=4))
  # Named streams: the matrices do not depend on the length and a longer draw extends it.
  z, r = sequences.icl_markov(50, 60, 4, alpha=0.5, rng=3, return_transitions=True)
  np.testing.assert_array_equal(r, p)
  np.testing.assert_array_equal(z[:, :30], x)
  # A Generator works too and is deterministic in its own state.
  a = sequences.icl_markov(5, 7, 3, rng=np.random.default_rng(1))
  np.testing.assert_array_equal(a, sequences.icl_markov(5, 7, 3, rng=np.random.default_rng(1)))
  # Every sequence has its own chain.
  assert not np.allclose(p[0], p[1])


def test_dirichlet_rows():
  alpha, k = 0.3, 5
  _, p = sequences.icl_markov(4000, 1, k, alpha=alpha, rng=0, return_transitions=True)
  table = sequences.markov_source_transitions(k, 3, alpha, rng=0)
  assert table.shape == (k, k, k, k)
  for rows in (p.reshape(-1, k), table.reshape(-1, k)):
    assert rows.min() >= 0
    np.testing.assert_allclose(rows.sum(axis=-1), 1.0, atol=1e-12)
  # Dirichlet(alpha 1_k) moments: mean 1/k, variance (1/k)(1 - 1/k)/(k alpha + 1).
  rows = p.reshape(-1, k)
  var = (1 / k) * (1 - 1 / k) / (k * alpha + 1)
  np.testing.assert_allclose(rows.mean(axis=0), 1 / k, atol=5 * np.sqrt(var / len(rows)))
  np.testing.assert_allclose(rows.var(axis=0), var, rtol=0.05)
  assert abs(var - (1 / k) * (1 - 1 / k) / (k * 1.0 + 1)) > 0.2 * var  # alpha=1 would fail.


def test_icl_markov_single_chain_frequencies():
  k = 4
  x, p = sequences.icl_markov(1, 20000, k, alpha=1.0, rng=7, return_transitions=True)
  counts = np.zeros((k, k))
  np.add.at(counts, (x[0, :-1], x[0, 1:]), 1)
  assert counts.sum(axis=1).min() > 500  # Every state visited often enough to test its row.
  assert np.abs(_z(counts, p[0])).max() < 5
  # The same check rejects another chain's matrix.
  _, other = sequences.icl_markov(1, 1, k, alpha=1.0, rng=8, return_transitions=True)
  assert np.abs(_z(counts, other[0])).max() > 10


def test_icl_markov_each_sequence_follows_its_own_chain():
  m, k = 300, 3
  x, p = sequences.icl_markov(m, 300, k, alpha=1.0, rng=1, return_transitions=True)
  counts = np.zeros((m, k, k))
  np.add.at(counts, (np.arange(m)[:, None], x[:, :-1], x[:, 1:]), 1)

  def pearson(q: np.ndarray) -> float:
    """Pearson X^2 over every visited (sequence, state) row, standardised by its dof."""
    n = counts.sum(axis=-1, keepdims=True)
    visited = np.broadcast_to(n > 0, counts.shape)
    x2 = ((counts - n * q) ** 2 / np.maximum(n * q, 1e-12))[visited].sum()
    dof = (n > 0).sum() * (k - 1)
    return float((x2 - dof) / np.sqrt(2 * dof))

  assert abs(pearson(p)) < 5
  assert pearson(np.roll(p, 1, axis=0)) > 100  # Another sequence's chain is rejected.


def test_stationary_distribution():
  _, p = sequences.icl_markov(200, 1, 6, alpha=0.2, rng=0, return_transitions=True)
  pi = sequences.stationary_distribution(p)
  np.testing.assert_allclose(pi.sum(axis=-1), 1.0, atol=1e-12)
  np.testing.assert_allclose(np.einsum("mi,mij->mj", pi, p), pi, atol=1e-9)
  a, b = 0.2, 0.7  # Two states: pi = (b, a) / (a + b).
  two = np.array([[1 - a, a], [b, 1 - b]])
  np.testing.assert_allclose(sequences.stationary_distribution(two), [b / (a + b), a / (a + b)])
  # A reducible chain (two closed classes) still gets a stationary distribution.
  red = np.array([[1.0, 0, 0], [0, 0.5, 0.5], [0, 0.5, 0.5]])
  pi = sequences.stationary_distribution(red)
  np.testing.assert_allclose(pi @ red, pi, atol=1e-9)
  np.testing.assert_allclose(pi.sum(), 1.0)


def test_icl_markov_first_token_is_stationary():
  m, k = 20000, 3
  x, p = sequences.icl_markov(m, 1, k, alpha=0.3, rng=11, return_transitions=True)
  pi = sequences.stationary_distribution(p)

  def z_score(first: np.ndarray) -> float:
    """S = sum_m pi_m[x0_m] against its law when x0_m ~ pi_m."""
    s = pi[np.arange(m), first].sum()
    mean = (pi**2).sum()
    var = ((pi**3).sum(axis=1) - (pi**2).sum(axis=1) ** 2).sum()
    return float((s - mean) / np.sqrt(var))

  assert abs(z_score(x[:, 0])) < 4
  # A uniform first token (ignoring the chain) is rejected by the same statistic.
  assert abs(z_score(np.random.default_rng(0).integers(0, k, m))) > 8


def test_markov_source_order_and_first_tokens():
  k, order = 3, 2
  table = sequences.markov_source_transitions(k, order, alpha=1.0, rng=5)
  assert table.shape == (k, k, k)
  x = sequences.markov_source(2000, 200, table, rng=6)
  assert x.shape == (2000, 200) and x.dtype == np.int32 and 0 <= x.min() and x.max() < k
  np.testing.assert_array_equal(x, sequences.markov_source(2000, 200, table, rng=6))
  assert not np.array_equal(x, sequences.markov_source(2000, 200, table, rng=7))
  counts = np.zeros((k, k, k))
  np.add.at(counts, (x[:, :-2], x[:, 1:-1], x[:, 2:]), 1)
  assert np.abs(_z(counts, table)).max() < 5
  # The same check rejects the table read in the wrong context order, and a first-order law.
  assert np.abs(_z(counts, table.transpose(1, 0, 2))).max() > 10
  first_order = table.mean(axis=0, keepdims=True).repeat(k, axis=0)
  assert np.abs(_z(counts, first_order)).max() > 10
  # The first n tokens are uniform and independent.
  first = np.zeros((k, k))
  np.add.at(first, (x[:, 0], x[:, 1]), 1)
  assert np.abs(_z(first.ravel(), np.full(k * k, 1 / k**2))).max() < 5
  # Order 0 (i.i.d.) and sequences shorter than the order.
  iid = sequences.markov_source_transitions(4, 0, rng=0)
  assert iid.shape == (4,)
  assert sequences.markov_source(3, 5, iid, rng=0).shape == (3, 5)
  assert sequences.markov_source(3, 1, table, rng=0).shape == (3, 1)


def test_text_round_trip():
  text = "the cat sat on the mat; the dog ate the hat. \u00e9\u4e2d\n" * 3
  tokens, vocab = sequences.text_sequences(text, 16)
  assert vocab == "".join(sorted(set(text)))
  assert tokens.shape == (len(text) // 16, 16) and tokens.dtype == np.int32
  assert sequences.decode_text(tokens, vocab) == text[: tokens.size]
  # Encoding other text with a training vocabulary, which need not be sorted.
  shuffled = vocab[::-1]
  val, same = sequences.text_sequences("the hat sat", 5, vocab=shuffled)
  assert same == shuffled and val.shape == (2, 5)
  assert sequences.decode_text(val, shuffled) == "the hat sa"
  np.testing.assert_array_equal(val, len(vocab) - 1 - sequences.text_sequences(
      "the hat sa", 5, vocab=vocab)[0])
  with pytest.raises(ValueError, match="'z'"):
    sequences.text_sequences("the zoo", 3, vocab=vocab)
  with pytest.raises(ValueError, match="fewer than one window"):
    sequences.text_sequences("ab", 3)
  with pytest.raises(ValueError, match="distinct"):
    sequences.text_sequences("abab", 2, vocab="aab")


def test_generator_argument_errors():
  with pytest.raises(ValueError, match="alpha"):
    sequences.icl_markov(2, 3, 3, alpha=0.0)
  with pytest.raises(ValueError, match="k="):
    sequences.icl_markov(2, 3, 0)
  with pytest.raises(ValueError, match="rng"):
    sequences.icl_markov(2, 3, 3, rng=-1)
  with pytest.raises(ValueError, match="probability"):
    sequences.markov_source(2, 3, np.ones((3, 3)))


# ---------------------------------------------------------------------------------------------
# Reference predictors against brute force


@pytest.mark.parametrize("seed,m,t,k", SMALL_CASES)
def test_in_context_predictors_match_brute_force(seed, m, t, k):
  x = _random_tokens(seed, m, t, k)
  uni = refs.in_context_unigram(x, k)
  big = refs.in_context_bigram(x, k)
  bayes = refs.bayes_icl_markov(x, k, alpha=0.7)
  for pred in (uni, big, bayes):
    assert pred.shape == (m, t - 1) and pred.dtype == np.int32
  np.testing.assert_array_equal(uni, _brute(_bf_unigram, x))
  np.testing.assert_array_equal(big, _brute(_bf_bigram, x))
  np.testing.assert_array_equal(bayes, _brute(_bf_bayes_icl, x, k, 0.7))


def test_ties_and_fallback_by_hand():
  x = np.array([[2, 1, 1, 2, 0, 2, 2, 1]])
  # Unigram counts after x_0..x_t: {2}, {2,1} tie -> 1, 1, {1:2,2:2} tie -> 1, 1, 2, 2, 2.
  np.testing.assert_array_equal(refs.in_context_unigram(x, 3), [[2, 1, 1, 1, 1, 2, 2]])
  # Bigram: t=0 no successor of 2 -> unigram 2; t=1 no successor of 1 yet -> unigram 1;
  # t=2 successors of 1: {1} -> 1; t=3 successors of 2: {1} -> 1; t=4 of 0: none -> unigram 1;
  # t=5 of 2: {1, 0} tie -> 0; t=6 of 2: {1, 0, 2} tie -> 0.
  np.testing.assert_array_equal(refs.in_context_bigram(x, 3), [[2, 1, 1, 1, 1, 0, 0]])
  # Bayes: where there is no successor every token ties -> 0.
  np.testing.assert_array_equal(refs.bayes_icl_markov(x, 3), [[0, 0, 1, 1, 0, 0, 0]])


def test_bayes_icl_markov_is_bigram_with_observed_successors():
  x = sequences.icl_markov(300, 40, 4, alpha=0.5, rng=2)
  big, bayes = refs.in_context_bigram(x, 4), refs.bayes_icl_markov(x, 4, alpha=0.5)
  observed = np.array([[bool(_bf_successors(seq, t)) for t in range(39)] for seq in x.tolist()])
  assert observed.mean() > 0.8 and (~observed).any()
  np.testing.assert_array_equal(bayes[observed], big[observed])
  np.testing.assert_array_equal(bayes[~observed], 0)
  assert (big[~observed] != 0).any()  # The unigram fallback does differ from token 0.


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_bayes_markov_source_matches_brute_force(order):
  table = sequences.markov_source_transitions(3, order, alpha=0.5, rng=order)
  x = sequences.markov_source(20, 10, table, rng=0)
  np.testing.assert_array_equal(refs.bayes_markov_source(x, table),
                                _brute(_bf_bayes_source, x, table))
  short = x[:, :2]
  np.testing.assert_array_equal(refs.bayes_markov_source(short, table),
                                _brute(_bf_bayes_source, short, table))


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_matches_brute_force(order, sparse, monkeypatch):
  if sparse:  # Every level with more than one context is stored sparsely.
    monkeypatch.setattr(refs, "DENSE_MAX_CONTEXTS", 1)
  k = 3
  train = _random_tokens(30 + order, 4, 8, k)  # Small: many contexts stay unseen.
  test = _random_tokens(20 + order, 15, 10, k)
  table = refs.fit_ngram(train, order, k)
  assert (table.levels[-1].contexts is not None) == (sparse and order > 1)
  levels = _bf_ngram_fit(train, order)
  if order >= 3:  # Back-off on unseen contexts is exercised.
    assert any(len(levels[j]) < k**j for j in range(order))
  np.testing.assert_array_equal(refs.ngram_predict(table, test),
                                _brute(lambda s, t: _bf_ngram(levels, s, t), test))
  for lower in range(1, order):  # Predicting with a lower order from the same table.
    np.testing.assert_array_equal(
        refs.ngram_predict(table, test, lower),
        _brute(lambda s, t, lv=levels[:lower]: _bf_ngram(lv, s, t), test))


def test_ngram_backoff_by_hand():
  train = np.array([[0, 1, 1, 0, 1, 2]])  # 2 is never followed: its context backs off.
  table = refs.fit_ngram(train, 2, 3)  # Unigram: 1 (3 times); after 0: 1; after 1: {1, 0, 2}.
  np.testing.assert_array_equal(refs.ngram_predict(table, np.array([[2, 0, 1, 2]])),
                                [[1, 1, 0]])
  table = refs.fit_ngram(train, 3, 3)  # Context (0, 1) -> {1, 2} tie -> 1; (1, 0) -> 1.
  np.testing.assert_array_equal(refs.ngram_predict(table, np.array([[0, 1, 0, 2, 2]])),
                                [[1, 1, 1, 1]])


def test_ngram_order1_is_global_unigram():
  train = np.array([[0, 1, 1], [2, 2, 0]])  # Counts 0:2, 1:2, 2:2 -> tie -> 0.
  table = refs.fit_ngram(train, 1, 3)
  np.testing.assert_array_equal(refs.ngram_predict(table, np.array([[2, 2, 2]])), [[0, 0]])
  table = refs.fit_ngram(np.array([[2, 2, 1]]), 1, 3)
  np.testing.assert_array_equal(refs.ngram_predict(table, np.array([[0, 1, 0, 1]])), [[2, 2, 2]])


# ---------------------------------------------------------------------------------------------
# Reference predictors on samples from a known source


def test_bayes_source_is_best_and_ngram_recovers_it():
  k, order = 4, 2
  table = sequences.markov_source_transitions(k, order, alpha=0.5, rng=1)
  train = sequences.markov_source(4000, 64, table, rng=2)
  test = sequences.markov_source(2000, 64, table, rng=3)
  bayes = refs.bayes_markov_source(test, table)
  ngram = refs.fit_ngram(train, order + 1, k)
  others = {
      "in_context_unigram": refs.in_context_unigram(test, k),
      "in_context_bigram": refs.in_context_bigram(test, k),
      "bayes_icl_markov": refs.bayes_icl_markov(test, k),
      **{f"ngram{n}": refs.ngram_predict(ngram, test, n) for n in range(1, order + 2)},
  }
  acc = refs.accuracy(bayes, test)
  for name, pred in others.items():
    assert acc >= refs.accuracy(pred, test), name
  assert acc > refs.accuracy(others["ngram1"], test) + 0.05
  agree = np.mean(others[f"ngram{order + 1}"] == bayes)
  assert agree > 0.95, agree


def test_accuracy():
  x = np.array([[0, 1, 2], [1, 1, 1]])
  assert refs.accuracy(np.array([[1, 0], [1, 1]]), x) == 0.75
  with pytest.raises(ValueError):
    refs.accuracy(np.zeros((2, 3)), x)


def test_reference_argument_errors():
  with pytest.raises(ValueError, match="range"):
    refs.in_context_unigram(np.array([[0, 3]]), 3)
  with pytest.raises(ValueError, match="integer array"):
    refs.in_context_bigram(np.zeros((2, 3), dtype=np.float32), 3)
  with pytest.raises(ValueError, match="order"):
    refs.fit_ngram(np.zeros((2, 3), dtype=np.int32), 0, 3)
  table = refs.fit_ngram(np.zeros((2, 3), dtype=np.int32), 2, 3)
  with pytest.raises(ValueError, match="order"):
    refs.ngram_predict(table, np.zeros((2, 3), dtype=np.int32), 3)


def test_speed_smoke_large_vocab():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 128, size=(1000, 128)).astype(np.int32)
  start = time.perf_counter()
  uni = refs.in_context_unigram(x, 128)
  big = refs.in_context_bigram(x, 128)
  elapsed = time.perf_counter() - start
  assert uni.shape == big.shape == (1000, 127)
  assert elapsed < 5.0, elapsed
  # Spot-check a few rows against brute force.
  np.testing.assert_array_equal(big[:3], _brute(_bf_bigram, x[:3]))
