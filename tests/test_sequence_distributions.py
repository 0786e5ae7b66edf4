"""sgd_phases.sequence_distributions: every closed-form predictor's distribution against a
brute-force pure-Python loop, and its argmax against the hard predictor (ties included)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from test_sequences import _bf_ngram_fit as _bf_fit  # the brute-force n-gram counts

from sgd_phases import config_lib, datasets
from sgd_phases import sequence_distributions as dist
from sgd_phases import sequence_references as refs
from sgd_phases.datasets import sequences


def _successors(seq: list[int], t: int) -> collections.Counter:
  return collections.Counter(seq[s + 1] for s in range(t) if seq[s] == seq[t])


def _bf_unigram(seq, t, k):
  c = collections.Counter(seq[: t + 1])
  return [(c[b] + 1) / (t + 1 + k) for b in range(k)]


def _bf_bigram(seq, t, k):
  succ = _successors(seq, t)
  n = sum(succ.values())
  return [(succ[b] + 1) / (n + k) for b in range(k)] if n else _bf_unigram(seq, t, k)


def _bf_bayes(seq, t, k, alpha):
  succ = _successors(seq, t)
  return [(succ[b] + alpha) / (sum(succ.values()) + k * alpha) for b in range(k)]


def _bf_source(seq, t, k, table):
  order = table.ndim - 1
  return [1 / k] * k if t + 1 < order else list(table[tuple(seq[t + 1 - order: t + 1])])


def _bf_ngram(seq, t, k, levels):
  for j in range(min(len(levels) - 1, t + 1), -1, -1):
    ctx = tuple(seq[t + 1 - j: t + 1])
    if ctx in levels[j]:
      c = levels[j][ctx]
      return [(c[b] + 1) / (sum(c.values()) + k) for b in range(k)]
  raise AssertionError("the empty context is always seen")


def _brute(fn, tokens: np.ndarray, k: int, *args) -> np.ndarray:
  m, t = tokens.shape
  out = [[fn(seq, i, k, *args) for i in range(t - 1)] for seq in tokens.tolist()]
  return np.array(out, dtype=np.float64).reshape(m, t - 1, k)


def _random_tokens(seed, m, t, k):
  rng = np.random.default_rng(seed)
  return rng.choice(k, size=(m, t), p=rng.dirichlet(np.ones(k))).astype(np.int32)


@pytest.mark.parametrize("seed,m,t,k", [(0, 30, 12, 3), (1, 30, 15, 2), (2, 10, 20, 5),
                                        (3, 5, 2, 3), (4, 4, 3, 1)])
def test_in_context_distributions_match_brute_force(seed, m, t, k):
  x = _random_tokens(seed, m, t, k)
  np.testing.assert_allclose(dist.in_context_unigram(x, k), _brute(_bf_unigram, x, k),
                             rtol=1e-12)
  np.testing.assert_allclose(dist.in_context_bigram(x, k), _brute(_bf_bigram, x, k),
                             rtol=1e-12)
  np.testing.assert_allclose(dist.bayes_icl_markov(x, k, 0.7), _brute(_bf_bayes, x, k, 0.7),
                             rtol=1e-12)


def test_by_hand():
  x = np.array([[2, 1, 1, 2]])
  # unigram at t=1: counts {2: 1, 1: 1} over 2 tokens -> (1, 2, 2) / 5
  np.testing.assert_allclose(dist.in_context_unigram(x, 3)[0, 1], [1 / 5, 2 / 5, 2 / 5])
  # bigram at t=2 (x_t = 1, successor 1 once): (1, 2, 1) / 4; at t=1 no successor of 1 yet:
  # the unigram's (1, 2, 2) / 5; Bayes with alpha = 1 is uniform there
  b = dist.in_context_bigram(x, 3)[0]
  np.testing.assert_allclose(b[2], [1 / 4, 2 / 4, 1 / 4])
  np.testing.assert_allclose(b[1], [1 / 5, 2 / 5, 2 / 5])
  np.testing.assert_allclose(dist.bayes_icl_markov(x, 3)[0, 1], [1 / 3] * 3)


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_source_matches_brute_force(order):
  table = sequences.markov_source_transitions(3, order, alpha=0.5, rng=order)
  x = sequences.markov_source(15, 9, table, rng=0)
  np.testing.assert_allclose(dist.bayes_markov_source(x, table),
                             _brute(_bf_source, x, 3, table), rtol=1e-12)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_matches_brute_force(order, sparse, monkeypatch):
  if sparse:
    monkeypatch.setattr(refs, "DENSE_MAX_CONTEXTS", 1)
  k = 3
  train, test = _random_tokens(30 + order, 4, 8, k), _random_tokens(20 + order, 12, 10, k)
  table = refs.fit_ngram(train, order, k)
  levels = _bf_fit(train, order)
  np.testing.assert_allclose(dist.ngram(table, test), _brute(_bf_ngram, test, k, levels),
                             rtol=1e-12)
  for lower in range(1, order):
    np.testing.assert_allclose(dist.ngram(table, test, lower),
                               _brute(_bf_ngram, test, k, levels[:lower]), rtol=1e-12)


def _first_argmax(p: np.ndarray) -> np.ndarray:
  return np.argmax(p, axis=-1).astype(np.int32)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_argmax_is_the_hard_prediction_on_generated_data(k):
  """On icl_markov and markov_source samples with small k (ties are frequent), the argmax of
  every distribution (first maximiser) equals the hard predictor, and rows sum to 1."""
  x = sequences.icl_markov(200, 30, k, alpha=1.0, rng=k)
  pairs = [(dist.in_context_unigram(x, k), refs.in_context_unigram(x, k)),
           (dist.in_context_bigram(x, k), refs.in_context_bigram(x, k)),
           (dist.bayes_icl_markov(x, k, 0.5), refs.bayes_icl_markov(x, k, 0.5))]
  table = sequences.markov_source_transitions(k, 2, alpha=1.0, rng=k)
  src = sequences.markov_source(200, 30, table, rng=k)
  fitted = refs.fit_ngram(sequences.markov_source(50, 30, table, rng=k + 1), 3, k)
  pairs += [(dist.bayes_markov_source(src, table), refs.bayes_markov_source(src, table))]
  pairs += [(dist.ngram(fitted, src, n), refs.ngram_predict(fitted, src, n)) for n in (1, 2, 3)]
  ties = 0
  for p, hard in pairs:
    np.testing.assert_array_equal(_first_argmax(p), hard)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-12)
    assert (p > 0).all()
    top = p.max(-1, keepdims=True)
    ties += int(((p == top).sum(-1) > 1).sum())
  assert ties > 100  # the tie rule is exercised, not just the clear maxima


def test_closed_form_probabilities_align_with_predictions():
  """``closed_form(..., probabilities=True)`` covers the scored positions (skip_positions) of
  the test set, [N, k] float32, and its argmax is the stored hard prediction."""
  c = config_lib.base_config("icl_markov")
  c.dataset.update({"k": 3, "length": 20, "test_size": 16, "train_size": 64,
                    "skip_positions": 2})
  ds = datasets.get_dataset(config_lib.to_dict(c)["dataset"])
  n = 16 * (20 - 1 - 2)
  for kind, kw in [("in_context_unigram", {}), ("in_context_bigram", {}), ("bayes", {}),
                   ("ngram", {"order": 2})]:
    p = refs.closed_form(kind, kw, ds, probabilities=True)
    hard = refs.closed_form(kind, kw, ds)
    assert p.shape == (n, 3) and p.dtype == np.float32 and hard.shape == (n,)
    np.testing.assert_array_equal(np.argmax(p, -1), hard)
  tokens = refs.tokens_of(ds.x_test, ds.y_test)
  np.testing.assert_allclose(refs.closed_form("in_context_unigram", {}, ds, probabilities=True),
                             dist.in_context_unigram(tokens, 3)[:, 2:].reshape(-1, 3), rtol=1e-6)
