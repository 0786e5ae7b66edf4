"""Surrogate test sets (sgd_phases.surrogates), their recording in the engine, and the quick
experiments/low_order_statistics run, checked against independent recomputations."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import low_order_statistics as los
from sgd_phases import analysis, surrogates, sweep, train_lib


def _two_gaussians(n: int = 20_000):
  """Class c: N(m_c, C_c) in 3-d (samples beyond the data's range, clipped, are ~1e-4)."""
  rng = np.random.default_rng(0)
  m = [np.array([1.0, -2.0, 0.5]), np.array([-1.0, 0.0, 3.0])]
  a = [np.array([[1.0, 0, 0], [0.5, 0.8, 0], [0.2, -0.3, 0.4]]), np.eye(3) * 0.5]
  x = np.concatenate([rng.standard_normal((n, 3)) @ a[c].T + m[c] for c in (0, 1)])
  y = np.concatenate([np.zeros(n, np.int32), np.ones(n, np.int32)])
  return x.astype(np.float32), y, m, [ai @ ai.T for ai in a]


def test_gaussian_surrogate_matches_class_moments():
  x, y, means, covs = _two_gaussians()
  xs, ys = surrogates.sample("gaussian", x, y, 2, 40_000, seed=1)
  assert xs.shape == (40_000, 3) and xs.dtype == np.float32
  assert np.bincount(ys).tolist() == [20_000] * 2
  for c in (0, 1):
    np.testing.assert_allclose(xs[ys == c].mean(0), means[c], atol=0.06)
    np.testing.assert_allclose(np.cov(xs[ys == c], rowvar=False), covs[c], atol=0.12)
  again, _ = surrogates.sample("gaussian", x, y, 2, 40_000, seed=1)
  np.testing.assert_array_equal(again, xs)  # a fixed set per seed


def test_first_moment_surrogate_is_isotropic_with_the_class_variance():
  x, y, means, covs = _two_gaussians()
  xs, ys = surrogates.sample("first_moment", x, y, 2, 40_000, seed=2)
  for c in (0, 1):
    np.testing.assert_allclose(xs[ys == c].mean(0), means[c], atol=0.06)
    cov = np.cov(xs[ys == c], rowvar=False)
    var = np.trace(covs[c]) / 3
    np.testing.assert_allclose(cov, var * np.eye(3), atol=0.12)
  clipped, _ = surrogates.sample("first_moment", np.clip(x, -1, 1), y, 2, 1000, seed=2)
  assert clipped.min() >= -1 and clipped.max() <= 1
  with pytest.raises(ValueError, match=r"\beval\.surrogates\.kinds\b"):
    surrogates.sample("third_moment", x, y, 2, 10, seed=0)


def test_quick_run_records_surrogates_and_summarises_them(tmp_path):
  from pyitlib import discrete_random_variable as drv
  c = los.get_config("quick")
  c.progress = False
  s = los.run(c, str(tmp_path))
  res = analysis.load(tmp_path)
  a = res.arrays
  n = int(c.eval.surrogates.size)
  for kind in ("gaussian", "first_moment"):
    pre = f"surrogate/{kind}"
    f, y = a[f"{pre}/predictions"], a[f"{pre}/labels"]
    assert f.shape == (c.num_seeds, len(a["steps"]), n) and a[f"{pre}/inputs"].shape[0] == n
    acc = (f == y).mean(-1)
    np.testing.assert_allclose(a[f"{pre}/acc"], acc)
    peak = acc.argmax(1)
    assert s[kind]["acc_peak"]["mean"] == pytest.approx(acc.max(1).mean())
    assert s[kind]["peak_step"]["mean"] == pytest.approx(a["steps"][peak].mean())
    assert s[kind]["drop_from_peak"]["mean"] == pytest.approx((acc.max(1) - acc[:, -1]).mean())
    l_acc = (a[f"{pre}/ref/linear/predictions"] == y).mean(-1)
    assert s[kind]["acc_l"]["mean"] == pytest.approx(l_acc.mean())
    # μ on the surrogate against L's predictions there, recomputed with pyitlib
    l_sur = a[f"{pre}/ref/linear/predictions"][0]
    i_fy = drv.information_mutual(f[0, -1], y, base=2)
    mu = i_fy - drv.information_mutual_conditional(f[0, -1], y, l_sur, base=2)
    assert a[f"{pre}/mi/linear/mu"][0, -1] == pytest.approx(mu, abs=1e-5)
  assert (tmp_path / "figures" / "low_order_statistics.png").stat().st_size > 1000
  # a scoring option changes the surrogate measures too: re-scored from the stored predictions
  c.bias_correction = "miller_madow"
  rescored = train_lib.train(c, tmp_path).arrays
  np.testing.assert_array_equal(rescored["surrogate/gaussian/predictions"],
                                a["surrogate/gaussian/predictions"])
  assert not np.allclose(rescored["surrogate/gaussian/mi/linear/i_fy"],
                         a["surrogate/gaussian/mi/linear/i_fy"])


def test_runs_with_surrogates_are_never_nested_by_the_sweep():
  """The sweep's nested (point × seed) programs record no surrogate sets: such points train
  on their own."""
  a, b = los.get_config("quick"), los.get_config("quick")
  b.dataset.label_noise = 0.1
  assert sweep.f_key(a) is None and sweep.nested_groups([a, b]) == []
  del a.eval["surrogates"], b.eval["surrogates"]
  assert sweep.nested_groups([a, b]) == [[0, 1]]
