"""Tests for sgd_phases.mutual_info: closed forms, oracles (pyitlib, plain numpy), jit/vmap."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgd_phases import mutual_info as mi

drv = pytest.importorskip("pyitlib.discrete_random_variable")

METHODS = ("scatter", "onehot")


# ----------------------------------------------------------------------------- helpers
def _structured(rng, shape_f, shape_l, n, k, acc_f=0.8, acc_l=0.7):
  """Labels y [N]; l agrees with y w.p. acc_l; f agrees with y w.p. acc_f (else uniform)."""
  y = rng.integers(0, k, n)
  l = np.where(rng.random(shape_l + (n,)) < acc_l, y, rng.integers(0, k, shape_l + (n,)))
  f = np.where(rng.random(shape_f + (n,)) < acc_f, y, rng.integers(0, k, shape_f + (n,)))
  return f, l, y


def _np_entropy(*cols):
  """Plug-in entropy (bits, float64) of the joint of 1-D label arrays, via np.unique."""
  _, counts = np.unique(np.stack(cols), axis=1, return_counts=True)
  p = counts / counts.sum()
  return float(-(p * np.log2(p)).sum())


def _np_mi(a, b):
  return _np_entropy(a) + _np_entropy(b) - _np_entropy(a, b)


def _np_cmi(a, b, c):
  """I(A;B|C) = Σ_c P(c) I(A;B | C=c): a different route than the entropy identity."""
  return sum((c == v).mean() * _np_mi(a[c == v], b[c == v]) for v in np.unique(c))


def _binary_at_accuracy(a, n=1000):
  """Balanced y, exactly a fraction a of each class predicted correctly, errors flip."""
  y = np.repeat([0, 1], n // 2)
  correct = np.concatenate([np.arange(n // 2) < round(a * n / 2)] * 2)
  return np.where(correct, y, 1 - y), y


# ----------------------------------------------------------------------------- closed forms
def test_f_equals_l_gives_mu_equals_i_fy():
  f, _, y = _structured(np.random.default_rng(0), (4,), (4,), 3000, 5)
  m = mi.information_measures(f, f, y, 5)
  np.testing.assert_allclose(m.mu, m.i_fy, atol=1e-6)
  assert np.all(np.asarray(m.i_fy) > 0.3)


def test_independent_f_gives_mu_near_zero():
  # F ⟂ (L, Y) with L = Y w.p. 0.7. The plug-in μ has mean ≈ −(K−1)³/(2N ln 2) = −2.9e-5 bits
  # and sd ≈ sqrt(2·K(K−1)²)/(2N ln 2) ≈ 1.8e-5 here, so 10× the bias (2.9e-4) is > 10 sd.
  rng, k, n = np.random.default_rng(1), 3, 200_000
  y = rng.integers(0, k, n)
  l = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
  f = rng.integers(0, k, (3, n))
  m = mi.information_measures(f, l, y, k)
  tol = 10 * (k - 1) ** 3 / (2 * n * math.log(2))
  assert np.all(np.abs(np.asarray(m.mu)) < tol), m.mu
  dependent = mi.performance_correlation(np.where(rng.random(n) < 0.8, l, 0), l, y, k)
  assert float(dependent) > 100 * tol  # the same check fails when F depends on L


def test_xor_gives_minus_one_bit():
  f = np.repeat([0, 0, 1, 1], 250)
  l = np.repeat([0, 1, 0, 1], 250)
  m = mi.information_measures(f, l, f ^ l, 2)
  assert abs(float(m.mu) + 1.0) < 1e-6
  assert abs(float(m.i_fy)) < 1e-6 and abs(float(m.i_fy_given_l) - 1.0) < 1e-6


@pytest.mark.parametrize("k", [2, 3, 10])
def test_all_equal_gives_mu_equals_h_y(k):
  y = np.tile(np.arange(k), 100)
  m = mi.information_measures(y, y, y, k)
  np.testing.assert_allclose(m.h_y, math.log2(k), atol=1e-5)
  np.testing.assert_allclose(m.mu, m.h_y, atol=1e-5)
  assert float(m.acc_f) == float(m.acc_l) == 1.0


@pytest.mark.parametrize("a, paper", [(0.6, 0.029), (0.7, 0.119), (0.8, 0.278), (0.9, 0.531),
                                      (0.95, 0.714), (0.99, 0.919)])
def test_unbiased_binary_i_fy_is_one_minus_h(a, paper):
  f, y = _binary_at_accuracy(a)
  m = mi.information_measures(f, y, y, 2)
  h = -a * math.log2(a) - (1 - a) * math.log2(1 - a)
  np.testing.assert_allclose(float(m.acc_f), a, atol=1e-7)
  np.testing.assert_allclose(float(m.i_fy), 1 - h, atol=1e-5)
  np.testing.assert_allclose(float(m.i_fy), paper, atol=1e-3)  # Fig. 3 of the paper


# ----------------------------------------------------------------------------- identities
@pytest.mark.parametrize("k", [3, 5, 10])
def test_co_information_identities_and_bound(k):
  f, l, y = _structured(np.random.default_rng(k), (6,), (6,), 2000, k, 0.5, 0.4)
  m = mi.information_measures(f, l, y, k)
  i_ly_given_f = mi.conditional_mutual_information(l, y, f, k)
  np.testing.assert_allclose(m.i_fy - m.i_fy_given_l, m.i_fl - m.i_fl_given_y, atol=1e-5)
  np.testing.assert_allclose(m.i_fy - m.i_fy_given_l, m.i_ly - i_ly_given_f, atol=1e-5)
  np.testing.assert_allclose(m.mu, m.i_fy - m.i_fy_given_l, atol=1e-6)
  assert np.all(np.asarray(m.mu) <= np.minimum(m.i_fy, m.i_ly) + 1e-5)


@pytest.mark.parametrize("k", [3, 5, 10])
def test_matches_pyitlib_and_numpy(k):
  f, l, y = _structured(np.random.default_rng(10 + k), (3,), (3,), 1500, k, 0.6, 0.5)
  m = mi.information_measures(f, l, y, k)
  for i in range(3):
    fi, li = f[i], l[i]
    oracles = {
        "i_fy": (drv.information_mutual(fi, y, base=2), _np_mi(fi, y)),
        "i_ly": (drv.information_mutual(li, y, base=2), _np_mi(li, y)),
        "i_fl": (drv.information_mutual(fi, li, base=2), _np_mi(fi, li)),
        "i_fy_given_l": (drv.information_mutual_conditional(fi, y, li, base=2),
                         _np_cmi(fi, y, li)),
        "i_fl_given_y": (drv.information_mutual_conditional(fi, li, y, base=2),
                         _np_cmi(fi, li, y)),
        "h_y": (drv.entropy(y, base=2), _np_entropy(y)),
    }
    for name, (pyit, ref) in oracles.items():
      got = float(getattr(m, name)[i])
      assert abs(got - pyit) < 1e-5 and abs(got - ref) < 1e-5, (name, got, pyit, ref)
    np.testing.assert_allclose([m.acc_f[i], m.acc_l[i]], [(fi == y).mean(), (li == y).mean()],
                               atol=1e-6)
    mu_ref = _np_mi(fi, y) - _np_cmi(fi, y, li)
    assert abs(float(m.mu[i]) - mu_ref) < 1e-5
    assert abs(float(mi.mutual_information(fi, y, k)) - _np_mi(fi, y)) < 1e-5
    assert abs(float(mi.conditional_mutual_information(fi, y, li, k)) -
               _np_cmi(fi, y, li)) < 1e-5


def test_miller_madow_hand_computation():
  # K = 3 but only 2 values observed: m counts observed cells, so every term gets
  # c = (2 − 1)/(2·4·ln 2); I_MM(F;Y) = (1 + c) + (1 + c) − (1 + c) = 1 + 1/(8 ln 2).
  f, l, y = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])
  m = mi.information_measures(f, l, y, 3, bias_correction="miller_madow")
  plain = mi.information_measures(f, l, y, 3)
  np.testing.assert_allclose(float(plain.i_fy), 1.0, atol=1e-6)
  np.testing.assert_allclose(float(m.i_fy), 1 + 1 / (8 * math.log(2)), atol=1e-6)


def test_miller_madow_matches_numpy_on_random_data():
  k, n = 5, 400
  f, l, y = _structured(np.random.default_rng(3), (), (), n, k, 0.5, 0.5)

  def h(*cols):  # plug-in + (observed cells − 1)/(2 N ln 2)
    m_obs = np.unique(np.stack(cols), axis=1).shape[1]
    return _np_entropy(*cols) + (m_obs - 1) / (2 * n * math.log(2))

  mu_ref = (h(f) + h(y) - h(f, y)) - (h(f, l) + h(l, y) - h(f, l, y) - h(l))
  m = mi.measures_from_table(mi.contingency_table(f, l, y, k), bias_correction="miller_madow")
  np.testing.assert_allclose(float(m.mu), mu_ref, atol=1e-5)
  assert abs(float(m.mu) - float(mi.performance_correlation(f, l, y, k))) > 1e-3


# ----------------------------------------------------------------------------- tables
SHAPES = [((4, 6), (4, 1), ()), ((6,), (4, 1), ()), ((3, 2), (3, 2), (3, 2)), ((), (), ()),
          ((1, 5), (3, 1), (1,)), ((1, 3, 4), (2, 3, 1), ())]  # last: non-involutive axis order


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape_f, shape_l, shape_y", SHAPES)
def test_contingency_table_matches_numpy(method, shape_f, shape_l, shape_y):
  rng, n, k = np.random.default_rng(7), 300, 3
  f = rng.integers(0, k, shape_f + (n,))
  l = rng.integers(0, k, shape_l + (n,))
  y = rng.integers(0, k, shape_y + (n,))
  got = np.asarray(mi.contingency_table(f, l, y, k, method=method))
  lead = np.broadcast_shapes(shape_f, shape_l, shape_y)
  fb, lb, yb = (np.broadcast_to(x, lead + (n,)).reshape(-1, n) for x in (f, l, y))
  ref = np.zeros((fb.shape[0], k, k, k), np.int64)
  for p in range(fb.shape[0]):
    np.add.at(ref[p], (fb[p], lb[p], yb[p]), 1)
    hist, _ = np.histogramdd(np.stack([fb[p], lb[p], yb[p]], 1), bins=[np.arange(k + 1)] * 3)
    np.testing.assert_array_equal(hist, ref[p])
  assert got.dtype == np.int32 and got.shape == lead + (k, k, k)
  np.testing.assert_array_equal(got, ref.reshape(got.shape))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint8])
def test_small_integer_dtypes(dtype):
  f, l, y = _structured(np.random.default_rng(4), (2, 9), (2, 1), 500, 2)  # auto -> onehot
  ref = mi.contingency_table(*(x.astype(np.int32) for x in (f, l, y)), 2, method="scatter")
  got = mi.contingency_table(*(x.astype(dtype) for x in (f, l, y)), 2)
  np.testing.assert_array_equal(got, ref)


# ----------------------------------------------------------------------------- jit / vmap
def test_jit_and_vmap_parity():
  k = 4
  f, l, y = _structured(np.random.default_rng(5), (3, 5), (3, 1), 800, k)
  eager = mi.information_measures(f, l, y, k)
  jitted = jax.jit(mi.information_measures, static_argnames=("num_classes", "bias_correction"))
  for a, b in zip(eager, jitted(jnp.asarray(f), jnp.asarray(l), jnp.asarray(y), k)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  vm = jax.vmap(lambda fs, ls: mi.information_measures(fs, ls, y, k))(f, l)
  for s in range(3):
    loop = mi.information_measures(f[s], l[s], y, k)
    for a, b in zip(loop, vm):
      np.testing.assert_allclose(a, b[s], atol=1e-6)
  # Under jit the label range is not checked (documented); shapes/dtypes still are.
  jax.jit(mi.performance_correlation, static_argnums=3)(f + k, l, y, k)
  with pytest.raises(ValueError, match="^f "):
    jax.jit(mi.performance_correlation, static_argnums=3)(f * 1.0, l, y, k)


# ----------------------------------------------------------------------------- null
def test_permutation_null():
  k, n = 3, 2000
  rng = np.random.default_rng(6)
  y = rng.integers(0, k, n)
  f = np.where(rng.random((2, n)) < 0.9, y, rng.integers(0, k, (2, n)))
  l = np.where(rng.random((2, n)) < 0.9, f, rng.integers(0, k, (2, n)))
  mu = np.asarray(mi.performance_correlation(f, l, y, k))
  null = mi.permutation_null(f, l, y, k, jax.random.key(0), 20)
  assert null.shape == (20, 2)
  assert np.all(np.abs(np.asarray(null).mean(0)) < 0.02 * mu)
  assert np.all(mu > np.asarray(null).max(0))
  np.testing.assert_array_equal(null, mi.permutation_null(f, l, y, k, jax.random.key(0), 20))
  assert not np.array_equal(null, mi.permutation_null(f, l, y, k, jax.random.key(1), 20))


# ----------------------------------------------------------------------------- errors
def _ok():
  return np.array([[0, 1, 1]]), np.array([0, 1, 0]), np.array([1, 1, 0])


@pytest.mark.parametrize("kwargs, name", [
    (dict(f=np.array([[0.0, 1.0, 1.0]])), "f"),
    (dict(l=np.array([True, False, True])), "l"),
    (dict(y=np.array([0, 2, 1])), "y"),
    (dict(l=np.array([0, -1, 1])), "l"),
    (dict(f=np.array([[0, 1, 5]])), "f"),
    (dict(l=jnp.array([0, -1, 1])), "l"),  # device arrays: their range checked on device
    (dict(f=jnp.array([[0, 1, 5]]), l=jnp.array([0, 1, 0])), "f"),
    (dict(y=np.array([0, 1])), "y"),
    (dict(l=np.array([0, 1, 0, 1])), "l"),
    (dict(l=np.zeros((3, 3), int)), None),  # leading (1,) vs (3,) broadcasts: no error
    (dict(f=np.zeros((2, 3), int), l=np.zeros((3, 3), int)), "l"),
    (dict(y=np.zeros((4, 3), int), f=np.zeros((2, 3), int)), "y"),
    (dict(y=np.int32(1)), "y"),
    (dict(num_classes=1), "num_classes"),
    (dict(num_classes=2.0), "num_classes"),
    (dict(num_classes=True), "num_classes"),
    (dict(num_classes=2000), "num_classes"),
    (dict(bias_correction="laplace"), "bias_correction"),
    (dict(method="sort"), "method"),
])
def test_errors_name_the_argument(kwargs, name):
  f, l, y = _ok()
  args = dict(f=f, l=l, y=y, num_classes=2)
  args.update(kwargs)
  if name is None:
    mi.information_measures(**args)
    return
  with pytest.raises(ValueError, match=rf"^{name}\b"):
    mi.information_measures(**args)


def test_wrapper_errors_name_their_arguments():
  f, l, y = _ok()
  with pytest.raises(ValueError, match="^a "):
    mi.mutual_information(f * 0.5, y, 2)
  with pytest.raises(ValueError, match="^b "):
    mi.mutual_information(f, y + 2, 2)
  with pytest.raises(ValueError, match="^c "):
    mi.conditional_mutual_information(f, y, l[:2], 2)
  with pytest.raises(ValueError, match=r"^num_permutations\b"):
    mi.permutation_null(f, l, y, 2, jax.random.key(0), 0)
  with pytest.raises(ValueError, match=r"^table\b"):
    mi.measures_from_table(np.zeros((2, 2, 3), np.int32))
  with pytest.raises(ValueError, match=r"^bias_correction\b"):
    mi.measures_from_table(np.ones((2, 2, 2), np.int32), bias_correction="mm")
