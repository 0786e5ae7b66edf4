"""Large K (vocabulary-size labels): the "sorted" kernel of sgd_phases.mutual_info.

It must give the table methods' measures (with and without Miller–Madow, chunked or not, in the
nulls), a plain numpy plug-in at K = 128, be what ``auto`` picks at K = 128 / N = 10^5 (and only
there: K = 2..10 keep the table kernels), and never allocate a K×K×K table.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgd_phases import mi_counts
from sgd_phases import mutual_info as mi

SHAPES = [((4, 6), (4, 1), ()), ((3, 2), (3, 2), (3, 2)), ((), (), ()),
          ((1, 3, 4), (2, 3, 1), ())]  # (the table methods agree exactly: test_mutual_info.py)
BIAS = (None, "miller_madow")


def _labels(rng, shapes, n, k):
  """f, l, y with structure (l and f often right, f sometimes copies l), leading dims ``shapes``."""
  sf, sl, sy = shapes
  y = rng.integers(0, k, sy + (n,))
  l = np.where(rng.random(sl + (n,)) < 0.6, y, rng.integers(0, k, sl + (n,)))
  f = np.where(rng.random(sf + (n,)) < 0.5, y,
               np.where(rng.random(sf + (n,)) < 0.5, l, rng.integers(0, k, sf + (n,))))
  return f, l, y


def _assert_same(a: mi.InfoMeasures, b: mi.InfoMeasures, atol: float = 1e-5) -> None:
  for name, x, z in zip(mi.InfoMeasures._fields, a, b):
    assert np.shape(x) == np.shape(z), name
    np.testing.assert_allclose(np.asarray(x), np.asarray(z), atol=atol, err_msg=name)


def _np_h(n: int, miller_madow: bool, *cols: np.ndarray) -> float:
  """Plug-in entropy (bits, float64) of the joint of 1-D label arrays (+ Miller–Madow)."""
  _, counts = np.unique(np.stack(cols), axis=1, return_counts=True)
  p = counts / n
  h = float(-(p * np.log2(p)).sum())
  return h + (len(counts) - 1) / (2 * n * math.log(2)) if miller_madow else h


# ----------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("shapes, bias_correction", [
    (SHAPES[0], "miller_madow"), (SHAPES[1], None), (SHAPES[2], "miller_madow"),
    (SHAPES[3], None)])
def test_sorted_equals_table_methods(shapes, bias_correction):
  f, l, y = _labels(np.random.default_rng(len(shapes[0])), shapes, 300, 5)
  got = mi.information_measures(f, l, y, 5, bias_correction=bias_correction, method="sorted")
  method = "onehot" if shapes == SHAPES[0] else "scatter"
  _assert_same(got, mi.information_measures(f, l, y, 5, bias_correction=bias_correction,
                                            method=method))


@pytest.mark.parametrize("k, n, bias_correction", [(5, 300, None), (30, 20, "miller_madow")])
def test_sorted_in_chunks_equals_scatter(monkeypatch, k, n, bias_correction):
  """Leading rows in chunks of 2 (``lax.map``, last chunk padded). K = 5: the 1-D and 2-D
  marginals by dense bincount; K = 30 > N = 20: every marginal through the sort."""
  f, l, y = _labels(np.random.default_rng(k), ((1, 3, 5), (2, 3, 1), ()), n, k)
  monkeypatch.setattr(mi_counts, "SORTED_CHUNK_ELEMENTS", 2 * n)
  mm = bias_correction == "miller_madow"
  got = jax.jit(lambda *a: mi._measures_sorted(*a, k, mm))(
      *(jnp.asarray(x, jnp.int32) for x in (f, l, y)))
  _assert_same(got, mi.information_measures(f, l, y, k, bias_correction=bias_correction,
                                            method="scatter"))


@pytest.mark.parametrize("bias_correction", BIAS)
def test_sorted_equals_numpy_plug_in_at_k128(bias_correction):
  k, n = 128, 3000
  f, l, y = _labels(np.random.default_rng(0), ((2, 3), (2, 1), ()), n, k)
  mm = bias_correction == "miller_madow"
  got = mi.information_measures(f, l, y, k, bias_correction=bias_correction, method="sorted")
  for s in range(2):
    for e in range(3):
      fi, li = f[s, e], l[s, 0]
      h = lambda *cols: _np_h(n, mm, *cols)  # noqa: E731
      i_fy = h(fi) + h(y) - h(fi, y)
      i_fy_l = h(fi, li) + h(li, y) - h(fi, li, y) - h(li)
      ref = dict(i_fy=i_fy, i_fy_given_l=i_fy_l, mu=i_fy - i_fy_l, i_ly=h(li) + h(y) - h(li, y),
                 i_fl=h(fi) + h(li) - h(fi, li),
                 i_fl_given_y=h(fi, y) + h(li, y) - h(fi, li, y) - h(y), h_y=h(y),
                 acc_f=np.mean(fi == y), acc_l=np.mean(li == y))
      for name, value in ref.items():
        assert abs(float(getattr(got, name)[s, e]) - value) < 2e-5, (name, s, e)
  assert float(np.min(got.mu)) > 0.1  # f copies l: a real signal, not all zeros


def test_null_equals_across_methods_at_k128():
  k, n = 128, 1000
  f, l, y = _labels(np.random.default_rng(1), ((2, 3), (2, 1), ()), n, k)
  key = jax.random.key(3)
  ref = mi.conditional_null(f, l, y, k, key, 3, "miller_madow", method="scatter")
  got = mi.conditional_null(f, l, y, k, key, 3, "miller_madow", method="sorted")
  assert got.shape == (3, 2, 3)
  np.testing.assert_allclose(got, ref, atol=1e-5)


# ----------------------------------------------------------------------------- auto
def _temp_bytes(fn, *args) -> int:
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def _specs(lead, n):
  return (jax.ShapeDtypeStruct(lead + (n,), jnp.int32),
          jax.ShapeDtypeStruct(lead[:1] + (1,) * (len(lead) - 1) + (n,), jnp.int32),
          jax.ShapeDtypeStruct((n,), jnp.int32))


def test_auto_picks_sorted_at_vocabulary_size():
  n, lead = 100_000, (5, 25)
  assert mi.resolve_method(128, n, lead, (5, 1, n)) == "sorted"
  assert mi.resolve_method(128, n, lead, (5, 1, n), table=True) == "scatter"
  # ... and the jitted measures really take it: no dense tables (alone 1 GiB; scatter's
  # compiled temp is 2 GiB, test_null_at_k128_allocates_no_dense_table).
  auto = _temp_bytes(lambda *a: mi.information_measures(*a, 128), *_specs(lead, n))
  assert auto < 256 * 2**20 < 4 * 128**3 * math.prod(lead)


@pytest.mark.parametrize("k", range(2, 11))
def test_auto_keeps_the_table_kernels_at_small_k(k):
  for n in (1, 100, 10_000, 100_000, 10**6):
    for lead, ly in (((5, 25), (5, 1)), ((8, 100), (8, 1)), ((), ()), ((3, 4), (3, 4))):
      got = mi.resolve_method(k, n, lead, ly + (n,))
      assert got == mi.resolve_method(k, n, lead, ly + (n,), table=True) != "sorted"


def test_auto_picks_sorted_when_tables_would_exceed_a_gib():
  n = 10**6  # K³ < 8 N: by speed alone scatter, but 5 × 200 dense K=128 tables are 8 GiB
  assert mi.resolve_method(128, n, (5, 25), (5, 1, n)) == "scatter"
  assert mi.resolve_method(128, n, (5, 200), (5, 1, n)) == "sorted"


def test_method_choices():
  f, l, y = _labels(np.random.default_rng(2), ((2,), (2,), ()), 50, 3)
  mi.information_measures(f, l, y, 3, method="sorted")
  with pytest.raises(ValueError, match=r"^method\b"):
    mi.contingency_table(f, l, y, 3, method="sorted")  # it builds no table
  with pytest.raises(ValueError, match=r"^method\b"):
    mi.conditional_null(f, l, y, 3, jax.random.key(0), 2, method="sort")


# ----------------------------------------------------------------------------- memory
def test_null_at_k128_allocates_no_dense_table():
  """[P=20, 5, 25] null at N = 10^5: the dense path compiles to > 2 GiB of temporaries (one
  draw's 125 tables of 8 MiB + their float32 entropy terms); auto stays far below one table set."""
  n, lead = 100_000, (5, 25)
  specs = _specs(lead, n) + (jax.random.key(0),)
  null = lambda method: (  # noqa: E731
      lambda f, l, y, key: mi.conditional_null(f, l, y, 128, key, 20, method=method))
  assert _temp_bytes(null("auto"), *specs) < 256 * 2**20
  assert _temp_bytes(null("scatter"), *specs) > 2 * 2**30


def test_null_at_k128_runs_where_dense_tables_need_gigabytes():
  k, n, lead = 128, 500, (4, 200)  # dense: 800 tables × 8 MiB = 6.25 GiB per draw
  f, l, y = _labels(np.random.default_rng(4), (lead, (4, 1), ()), n, k)
  null = np.asarray(mi.conditional_null(f, l, y, k, jax.random.key(0), 2))
  assert null.shape == (2,) + lead and np.all(np.isfinite(null))
  mu = np.asarray(mi.information_measures(f, l, y, k).mu)
  assert np.mean(mu > null.max(0)) > 0.9  # f copies l beyond Y: μ above its null
