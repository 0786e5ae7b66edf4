"""The conditional-independence null: closed forms, a dependent pair, shapes, memory, summaries."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgd_phases import mutual_info as mi
from sgd_phases import scoring, stats


def _h(p: float) -> float:
  return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def _noisy_copies(rng, y, accs):
  """Classifiers that equal y w.p. acc, independently of each other given y (binary)."""
  return [np.where(rng.random(y.shape) < a, y, 1 - y).astype(np.int32) for a in accs]


def test_within_class_permutation_is_a_uniform_permutation_inside_classes():
  y = jnp.asarray(np.array([0, 1, 1, 0, 2, 1, 0, 2, 2, 1] * 3, np.int32))
  counts = np.zeros((y.shape[0], y.shape[0]))
  for k in jax.random.split(jax.random.key(0), 600):
    perm = np.asarray(mi.within_class_permutation(k, y))
    assert sorted(perm) == list(range(y.shape[0]))
    np.testing.assert_array_equal(np.asarray(y)[perm], np.asarray(y))
    counts[np.arange(y.shape[0]), perm] += 1
  # position 0 (class 0, 9 members) lands on each member ~600/9 times
  members = np.flatnonzero(np.asarray(y) == 0)
  freq = counts[0, members]
  assert freq.sum() == 600 and freq.min() > 35 and freq.max() < 100
  # batched: an independent permutation per leading row
  yb = jnp.stack([y, y[::-1]])
  pb = np.asarray(mi.within_class_permutation(jax.random.key(1), yb))
  for row in range(2):
    np.testing.assert_array_equal(np.asarray(yb)[row][pb[row]], np.asarray(yb)[row])


def test_null_draws_the_two_key_sorts_permutations():
  """The null sorts one packed (class, random bits) key below 512 classes: the same stable
  order as sorting by (class, u), so the same permutations (ties in u forced with 40k
  examples: 2^23 values of u)."""
  rng = np.random.default_rng(3)
  for k, n in ((3, 2000), (2, 40_000), (300, 5000)):
    y = jnp.asarray(rng.integers(0, k, (2, n)), jnp.int32)
    for key in jax.random.split(jax.random.key(7), 5):
      np.testing.assert_array_equal(mi._within_class_permutation(key, y, k),
                                    mi._within_class_permutation(key, y))  # (class, u) keys
    u = np.asarray(jax.random.uniform(key, y.shape))
    assert n < 10_000 or len(np.unique(u[0])) < n  # ties in u occurred


def test_stable_argsort_of_uint32_keys_as_two_sorts_equals_numpys():
  """Ties (few distinct keys), keys using all 32 bits, and N = 2^16 (ranks and indices fill
  their 16 bits each); batched rows sorted independently; more keys refused."""
  rng = np.random.default_rng(5)
  for shape, high in (((3, 1000), 7), ((2, 3, 500), 2**32), ((1, 2**16), 40_000)):
    k = rng.integers(0, high, shape, dtype=np.uint64).astype(np.uint32)
    np.testing.assert_array_equal(mi.stable_argsort_u32(jnp.asarray(k)),
                                  np.argsort(k, axis=-1, kind="stable"))
  with pytest.raises(ValueError, match="at most 65536"):
    mi.stable_argsort_u32(jnp.zeros((2**16 + 1,), jnp.uint32))


def test_null_sits_on_the_closed_form_for_conditionally_independent_classifiers():
  """Balanced binary Y, F and L right w.p. a and b, independent given Y: μ = I(F;L) =
  1 − h(ab + (1−a)(1−b)), and the null of a conditionally independent pair has that mean."""
  rng = np.random.default_rng(0)
  n, a, b = 40_000, 0.86, 0.80
  y = np.repeat(np.array([0, 1], np.int32), n // 2)
  f, l = _noisy_copies(rng, y, (a, b))
  # the closed form at the sample's own per-class accuracies (what the permutation keeps)
  agree = np.mean([np.mean(f[y == c] == c) * np.mean(l[y == c] == c)
                   + np.mean(f[y == c] != c) * np.mean(l[y == c] != c) for c in (0, 1)])
  closed = 1.0 - _h(agree)
  null = np.asarray(mi.conditional_null(f, l, y, 2, jax.random.key(0), 64))
  assert null.shape == (64,)
  assert null.mean() == pytest.approx(closed, abs=0.001)
  assert closed == pytest.approx(1.0 - _h(a * b + (1 - a) * (1 - b)), abs=0.01)
  measured = float(mi.information_measures(f, l, y, 2).mu)
  assert measured == pytest.approx(closed, abs=0.01)
  # the pair is conditionally independent: not significant against its null
  p = stats.versus_null(np.array([measured]), null[:, None])["null"]["p_value"]
  assert p > 0.01
  # the permutation keeps acc(L), I(L;Y) and the (F, Y) pairing: only I(F;L|Y) moves
  i_fy = 1.0 - _h(a)
  assert float(mi.information_measures(f, l, y, 2).i_fy) == pytest.approx(i_fy, abs=0.01)
  # μ/I(F;Y) ≈ 0.48 for two 0.86-accurate classifiers (the baseline)
  assert (1.0 - _h(0.86**2 + 0.14**2)) / (1.0 - _h(0.86)) == pytest.approx(0.49, abs=0.01)


def test_null_separates_a_truly_dependent_pair():
  rng = np.random.default_rng(1)
  n = 10_000
  y = rng.integers(0, 2, n).astype(np.int32)
  f, l_ind = _noisy_copies(rng, y, (0.85, 0.85))
  l_dep = np.where(rng.random(n) < 0.7, f, l_ind).astype(np.int32)  # shares F's errors
  null = np.asarray(mi.conditional_null(f, l_dep, y, 2, jax.random.key(0), 99))
  mu = float(mi.information_measures(f, l_dep, y, 2).mu)
  assert mu > null.max() + 0.05
  assert stats.versus_null(np.array([mu]), null[:, None])["null"]["p_value"] == 0.01


def test_null_shapes_broadcasting_and_jit():
  rng = np.random.default_rng(2)
  s, e, n, k = 3, 4, 500, 3
  y = rng.integers(0, k, n).astype(np.int32)
  f = rng.integers(0, k, (s, e, n)).astype(np.int32)
  l = rng.integers(0, k, (s, 1, n)).astype(np.int32)
  out = mi.conditional_null(f, l, y, k, jax.random.key(0), 7)
  assert out.shape == (7, s, e)
  jitted = jax.jit(mi.conditional_null, static_argnames=("num_classes", "num_permutations",
                                                         "bias_correction"))
  np.testing.assert_allclose(jitted(f, l, y, k, jax.random.key(0), 7), out, atol=1e-6)
  # same key, same draws; another key, other draws
  np.testing.assert_array_equal(mi.conditional_null(f, l, y, k, jax.random.key(0), 7), out)
  assert not np.array_equal(mi.conditional_null(f, l, y, k, jax.random.key(1), 7), out)
  # a shared l [N] broadcasts like information_measures
  assert mi.conditional_null(f, l[0, 0], y, k, jax.random.key(0), 2).shape == (2, s, e)
  with pytest.raises(ValueError, match=r"^num_permutations\b"):
    mi.conditional_null(f, l, y, k, jax.random.key(0), 0)
  with pytest.raises(ValueError, match=r"^bias_correction\b"):
    mi.conditional_null(f, l, y, k, jax.random.key(0), 2, bias_correction="jackknife")


def test_null_memory_does_not_grow_with_the_number_of_draws():
  """One draw at a time: the compiled program's temporaries do not scale with P."""
  s, e, n = 4, 8, 20_000
  f = jnp.zeros((s, e, n), jnp.int32)
  l = jnp.zeros((s, 1, n), jnp.int32)
  y = jnp.zeros((n,), jnp.int32)

  def temp_bytes(p):
    compiled = mi._null.lower(f, l, y, jax.random.key(0), num_classes=2,
                                          num_permutations=p, bias_correction=None).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  small, large = temp_bytes(2), temp_bytes(64)
  assert large < small + 64 * s * e * 4 * 4  # grows by the [P, S, E] output at most
  assert large < 64 * s * e * n  # far below a [P, S, E, N] blow-up (int8 would be this)


def test_null_uses_the_same_bias_correction():
  """With every cell of every table non-empty (K = 2), Miller–Madow adds exactly
  (1 + 1 − 3 − 3 − 3 + 7 + 1)/(2N ln 2) = 1/(2N ln 2) bits to μ, so to every null draw."""
  rng = np.random.default_rng(3)
  n = 5000
  y = rng.integers(0, 2, n).astype(np.int32)
  f, l = _noisy_copies(rng, y, (0.7, 0.7))
  key = jax.random.key(4)
  plug = np.asarray(mi.conditional_null(f, l, y, 2, key, 16))
  mm = np.asarray(mi.conditional_null(f, l, y, 2, key, 16, bias_correction="miller_madow"))
  np.testing.assert_allclose(mm - plug, 1.0 / (2 * n * math.log(2)), atol=2e-6)


def test_marginal_shuffle_rejects_any_accurate_reference():
  """The old shuffle null (L ⟂ (F, Y)) is centred near 0, so two conditionally independent
  accurate classifiers 'beat' it: it cannot answer the paper's question."""
  rng = np.random.default_rng(5)
  y = rng.integers(0, 2, 5000).astype(np.int32)
  f, l = _noisy_copies(rng, y, (0.86, 0.86))
  shuffled = np.asarray(mi.permutation_null(f, l, y, 2, jax.random.key(0), 50))
  mu = float(mi.information_measures(f, l, y, 2).mu)
  assert abs(shuffled.mean()) < 0.005 and mu > 0.15


# ----------------------------------------------------------------------------- summaries
def test_versus_null_hand_built():
  obs = np.array([0.9, 0.8, np.nan])  # the third seed has no value (e.g. T_0 not reached)
  den = np.array([1.0, 2.0, 1.0])
  null = np.array([[0.5, 1.0, 0.3], [0.3, 0.6, 0.3], [0.4, 0.8, 0.3], [0.95, 1.8, 0.3]])
  out = stats.ratio_versus_null(obs, null, den)
  assert out["value"]["n"] == 2 and out["value"]["mean"] == pytest.approx(0.65)
  # seed means of the ratios per draw: 0.5, 0.3, 0.4, 0.925; observed mean 0.65
  assert out["null"]["mean"] == pytest.approx((0.5 + 0.3 + 0.4 + 0.925) / 4)
  assert out["null"]["p_value"] == pytest.approx((1 + 1) / (1 + 4))
  # per seed: seed 0 null ratios 0.5, 0.3, 0.4, 0.95 vs 0.9 -> 1 draw >= ; seed 1: 0.5, 0.3,
  # 0.4, 0.9 vs 0.4 -> 3 draws >=
  assert out["null"]["p_values"] == pytest.approx([2 / 5, 4 / 5])
  # excess: (v − v0)/(1 − v0) per seed with v0 = the seed's null mean ratio
  v0 = np.array([(0.5 + 0.3 + 0.4 + 0.95) / 4, (0.5 + 0.3 + 0.4 + 0.9) / 4])
  v = np.array([0.9, 0.4])
  assert out["excess"]["mean"] == pytest.approx(np.mean((v - v0) / (1 - v0)))
  lo, hi = np.percentile([0.5, 0.3, 0.4, 0.925], [2.5, 97.5])
  assert (out["null"]["lo"], out["null"]["hi"]) == pytest.approx((lo, hi))
  # in bits (versus_null) the excess is in the observed units
  raw = stats.versus_null(np.array([1.0]), np.array([[0.25], [0.75]]))
  assert raw["excess"]["mean"] == pytest.approx(0.5) and raw["null"]["p_value"] == 1 / 3
  none = stats.versus_null(np.array([np.nan]), np.array([[0.1]]))
  assert none["value"]["n"] == 0 and math.isnan(none["null"]["p_value"])
  with pytest.raises(ValueError, match=r"\bnull\b"):
    stats.versus_null(np.zeros(3), np.zeros((5, 2)))


def test_at_index_and_null_band():
  x = np.arange(12.0).reshape(3, 4)
  np.testing.assert_array_equal(stats.at_index(x, np.array([0, 3, -1])), [0.0, 7.0, np.nan])
  draws = np.stack([x, x + 1.0])  # [P=2, S=3, E=4]
  np.testing.assert_array_equal(stats.at_index(draws, np.array([1, 2, 0])),
                                [[1.0, 6.0, 8.0], [2.0, 7.0, 9.0]])
  mean, lo, hi = stats.null_band(draws)
  np.testing.assert_allclose(mean, x.mean(axis=0) + 0.5)
  assert (lo <= mean).all() and (mean <= hi).all()
  with pytest.raises(ValueError, match=r"\bindex\b"):
    stats.at_index(x, np.array([0, 1]))


def test_scoring_marks_undefined_reference_rows():
  rng = np.random.default_rng(6)
  y = rng.integers(0, 2, 300).astype(np.int32)
  f = rng.integers(0, 2, (2, 3, 300)).astype(np.int8)
  ref = np.stack([rng.integers(0, 2, 300), np.full(300, -1)]).astype(np.int8)
  m = scoring.measures(f, ref, y, 2)
  direct = mi.information_measures(f[0], ref[0][None], y, 2)
  np.testing.assert_allclose(m["mu"][0], direct.mu, atol=1e-6)
  assert np.isnan(m["mu"][1]).all() and np.isnan(m["acc_l"][1]).all()
  null = scoring.null_mu(f, ref, y, 2, jax.random.key(0), 5)
  assert null.shape == (5, 2, 3) and np.isfinite(null[:, 0]).all() and np.isnan(null[:, 1]).all()
