"""Tests for sgd_phases.stats (scipy only as a test-time oracle)."""

import json

import ml_collections
import numpy as np
import pytest

from sgd_phases import results, scoring, stats

scipy_stats = pytest.importorskip("scipy.stats")


# ----------------------------------------------------------------------------- t quantile / CI
@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 19, 29, 30, 31, 50, 120, 1000, 2.5])
@pytest.mark.parametrize("q", [0.6, 0.9, 0.95, 0.975, 0.995, 0.9995, 0.025])
def test_t_quantile_matches_scipy(df, q):
  np.testing.assert_allclose(stats.t_quantile(q, df), scipy_stats.t.ppf(q, df), rtol=1e-8)


def test_t_quantile_bad_input():
  with pytest.raises(ValueError, match=r"\bq\b"):
    stats.t_quantile(1.0, 3)
  with pytest.raises(ValueError, match=r"\bdf\b"):
    stats.t_quantile(0.9, 0)


@pytest.mark.parametrize("n_seeds", [2, 3, 5, 12])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_mean_ci_matches_scipy_interval(n_seeds, level):
  rng = np.random.default_rng(n_seeds)
  x = rng.normal(1.0, 2.0, size=(n_seeds, 4, 3))
  mean, lo, hi = stats.mean_ci(x, axis=0, level=level)
  assert mean.shape == lo.shape == hi.shape == (4, 3)
  exp_lo, exp_hi = scipy_stats.t.interval(level, n_seeds - 1, loc=x.mean(0),
                                          scale=scipy_stats.sem(x, axis=0))
  np.testing.assert_allclose(mean, x.mean(0), atol=1e-12)
  np.testing.assert_allclose(lo, exp_lo, atol=1e-6)
  np.testing.assert_allclose(hi, exp_hi, atol=1e-6)


def test_mean_ci_other_axis_and_nans():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 6))
  x[1, 2] = np.nan
  mean, lo, hi = stats.mean_ci(x, axis=1)
  assert mean.shape == (3,)
  col = x[1][np.isfinite(x[1])]
  exp = scipy_stats.t.interval(0.95, col.size - 1, loc=col.mean(), scale=scipy_stats.sem(col))
  np.testing.assert_allclose([lo[1], hi[1]], exp, atol=1e-6)
  np.testing.assert_allclose(mean[1], col.mean())


def test_mean_ci_single_seed_and_empty_give_nan_width():
  x = np.array([[1.0, 2.0, np.nan], [np.nan, 3.0, np.nan]])
  mean, lo, hi = stats.mean_ci(x)
  np.testing.assert_allclose(mean[:2], [1.0, 2.5])
  assert np.isnan(mean[2])
  assert np.isnan(lo[0]) and np.isnan(hi[0]) and np.isnan(lo[2])
  assert np.isfinite(lo[1]) and lo[1] < 2.5 < hi[1]


def test_mean_ci_bad_arguments():
  x = np.zeros((3, 2))
  with pytest.raises(ValueError, match=r"\blevel\b"):
    stats.mean_ci(x, level=1.5)
  with pytest.raises(ValueError, match=r"\bmethod\b"):
    stats.mean_ci(x, method="jackknife")
  with pytest.raises(ValueError, match=r"\brng\b"):
    stats.mean_ci(x, method="bootstrap")


def test_bootstrap_reproducible_and_covers():
  data_rng = np.random.default_rng(123)
  trials = data_rng.normal(0.0, 1.0, size=(20, 300))  # 300 independent experiments
  a = stats.mean_ci(trials, method="bootstrap", rng=np.random.default_rng(7), num_resamples=500)
  b = stats.mean_ci(trials, method="bootstrap", rng=np.random.default_rng(7), num_resamples=500)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  _, lo, hi = a
  coverage = np.mean((lo <= 0.0) & (hi >= 0.0))
  assert 0.85 <= coverage <= 0.99, coverage
  # Close to the t interval for n = 20.
  _, tlo, thi = stats.mean_ci(trials)
  assert np.median(np.abs((hi - lo) / (thi - tlo) - 1.0)) < 0.15


def test_bootstrap_ignores_nans():
  x = np.array([[1.0, np.nan], [2.0, 5.0], [3.0, np.nan], [4.0, np.nan]])
  mean, lo, hi = stats.mean_ci(x, method="bootstrap", rng=np.random.default_rng(0),
                               num_resamples=200)
  np.testing.assert_allclose(mean, [2.5, 5.0])
  assert 1.0 <= lo[0] < 2.5 < hi[0] <= 4.0
  assert np.isnan(lo[1]) and np.isnan(hi[1])


def test_summarize_json_friendly():
  out = stats.summarize([1.0, 2.0, 3.0, np.nan])
  assert set(out) == {"mean", "lo", "hi", "std", "n"}
  assert out["n"] == 3 and isinstance(out["n"], int)
  assert all(isinstance(out[k], float) for k in ("mean", "lo", "hi", "std"))
  np.testing.assert_allclose([out["mean"], out["std"]], [2.0, 1.0])
  json.dumps(out)
  assert np.isnan(stats.summarize([4.0])["lo"])


def test_summarize_no_finite_value():
  for values in ([np.nan, np.nan], [], [np.inf, np.nan]):
    out = stats.summarize(values)
    assert out["n"] == 0
    assert all(np.isnan(out[k]) for k in ("mean", "lo", "hi", "std"))


# ----------------------------------------------------------------------------- T_0 and indices
def test_t0_acc_reaches_reference():
  acc_f = np.array([[0.5, 0.6, 0.7, 0.8],
                    [0.5, 0.6, 0.7, 0.8],
                    [0.5, np.nan, 0.9, 0.9]])
  acc_l = np.array([0.7, 0.85, 0.8])
  np.testing.assert_array_equal(stats.t0_index(acc_f, acc_l), [2, -1, 2])
  np.testing.assert_array_equal(stats.t0_index(acc_f, 0.55), [1, 1, 2])
  assert stats.t0_index(acc_f, acc_l).dtype == np.int64


def test_t0_mu_ratio():
  i_fy = np.array([[0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
                   [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],   # never above the floor
                   [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],   # departs at the first valid point
                   [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])  # never departs
  mu = np.array([[0.0, 0.1, 0.19, 0.2, 0.2, 0.2],
                 [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                 [0.0, 0.05, 0.2, 0.3, 0.4, 0.5],
                 [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])
  acc = np.zeros_like(mu)
  t0 = stats.t0_index(acc, 0.0, rule="mu_ratio", mu=mu, i_fy=i_fy, delta=0.1)
  np.testing.assert_array_equal(t0, [2, -1, -1, 5])
  # A looser δ lets seed 0 stay linear until index 3 (0.2 ≥ 0.6·0.3 but 0.2 < 0.6·0.4).
  t0 = stats.t0_index(acc, 0.0, rule="mu_ratio", mu=mu, i_fy=i_fy, delta=0.4)
  assert t0[0] == 3
  # seed 2 is below the ratio at its first valid point and never in the phase: no departure
  np.testing.assert_array_equal(stats.departure_index(mu, i_fy, delta=0.1), [3, -1, -1, -1])
  assert stats.departure_index(mu[0], i_fy[0], delta=0.1) == 3


def test_departure_needs_the_phase_it_departs_from():
  """A 10-class F at initialisation: I(F;Y) above the floor, μ/I small (no phase yet); then
  μ/I ≥ 0.9 for two evaluations; then it falls: the departure is that fall, not step 0."""
  i_fy = np.array([0.02, 0.5, 1.0, 1.5, 2.0, 2.5])
  mu = np.array([0.001, 0.48, 0.95, 1.0, 1.2, 1.3])   # ratios 0.05, 0.96, 0.95, 0.67, ...
  assert stats.departure_index(mu, i_fy, delta=0.1, floor=0.01) == 3
  # below the ratio throughout (never in the phase): no departure at all
  assert stats.departure_index(0.5 * i_fy, i_fy, delta=0.1, floor=0.01) == -1
  # dips that come back before the phase do not count; a NaN point is skipped
  mu2 = np.array([0.001, np.nan, 0.95, 0.5, 1.9, 2.4])
  assert stats.departure_index(mu2, i_fy, delta=0.1, floor=0.01) == 3


def test_selected_null_is_the_selection_on_every_draw():
  rng = np.random.default_rng(0)
  null = rng.normal(size=(50, 3, 20))
  peak = stats.selected_null(null)
  np.testing.assert_array_equal(peak, null.max(axis=2))
  end = np.array([19, 5, 0])
  loss = stats.selected_null(null, "max_minus_end", end)
  expected = null.max(axis=2) - null[:, np.arange(3), end]
  np.testing.assert_allclose(loss, expected)
  assert (loss >= 0).all()
  # the peak's null sits above the null read at any one evaluation (here, the observed argmax)
  assert peak.mean() > null[:, :, 7].mean() + 1.0
  null[:, 1, :] = np.nan
  assert np.isnan(stats.selected_null(null)[:, 1]).all()


@pytest.mark.parametrize("values,lo_bound,hi_bound", [
    ([0.794, 1.0], 0.0, 1.0),                       # acc_end on 2 seeds: t gave [0.794, 1.003]
    ([10.0, 2800.0, 40.0], 0.0, np.inf),            # peak steps: t gave a negative lower end
    ([0.99, 1.0, 1.0, 0.97, 1.0], 0.0, 1.0),
])
def test_bounded_summary_stays_in_range(values, lo_bound, hi_bound):
  t = stats.summarize(values)
  b = stats.summarize(values, bounded=True)
  assert t["lo"] < lo_bound or t["hi"] > hi_bound     # the t interval leaves the range
  assert min(values) <= b["lo"] <= b["mean"] <= b["hi"] <= max(values)
  assert b["mean"] == pytest.approx(np.mean(values)) and b["ci"] == "bootstrap"
  assert stats.summarize(values, bounded=True) == b   # a fixed generator: reproducible
  # the percentile bootstrap of the mean, computed independently
  v = np.asarray(values)
  rng = np.random.default_rng(stats.BOOTSTRAP_SEED)
  u = rng.random((stats.BOOTSTRAP_RESAMPLES, v.size))
  means = np.sort(v)[(u * v.size).astype(int)].mean(axis=1)
  np.testing.assert_allclose([b["lo"], b["hi"]], np.percentile(means, [2.5, 97.5]))


def test_t0_errors():
  acc = np.zeros((2, 3))
  with pytest.raises(ValueError, match=r"\bbogus\b"):
    stats.t0_index(acc, 0.5, rule="bogus")
  with pytest.raises(ValueError, match=r"\bmu\b"):
    stats.t0_index(acc, 0.5, rule="mu_ratio", i_fy=acc)
  with pytest.raises(ValueError, match=r"\bacc_l\b"):
    stats.t0_index(acc, np.zeros(3))


def test_ratio_at():
  mu = np.array([[0.0, 0.2, 0.3], [0.1, 0.2, 0.3], [0.0, 0.0, 0.1]])
  i_fy = np.array([[0.0, 0.4, 0.5], [0.2, 0.2, 0.6], [0.0, 0.0, 0.2]])
  out = stats.ratio_at(mu, i_fy, np.array([1, -1, 0]))
  np.testing.assert_allclose(out[0], 0.5)
  assert np.isnan(out[1]) and np.isnan(out[2])
  with pytest.raises(ValueError, match=r"\bindex\b"):
    stats.ratio_at(mu, i_fy, np.array([3, 0, 0]))


def test_ratio_step_at_and_t0_arrays():
  np.testing.assert_allclose(stats.ratio([0.2, 0.1, 0.3, 0.0], [0.4, 0.05, 0.0, -0.1]),
                             [0.5, 2.0, np.nan, np.nan])
  np.testing.assert_allclose(stats.ratio([0.2, 0.1], [0.4, 0.05], floor=0.1), [0.5, np.nan])
  steps = np.array([0, 10, 20])
  np.testing.assert_allclose(stats.step_at(steps, [2, -1, 0]), [20.0, np.nan, 0.0])
  np.testing.assert_array_equal(stats.step_at(steps, [2, -1, 0], fill=-1), [20, -1, 0])
  t0 = scoring.t0_arrays(ml_collections.ConfigDict({"t0": {"reference": "linear"}}), steps, np.array([1, -1]))
  np.testing.assert_array_equal(t0["t0_step"], [10, -1])
  assert t0["t0_index"].dtype == np.int64 and str(t0["t0_reference"]) == "linear"


def test_ratio_versus_null_stays_in_range_and_excess_is_the_share_above_the_null():
  """Hand-computed: three seeds' ratios near 1, whose Student-t interval leaves [0, 1]."""
  v = np.array([0.99, 0.97, 1.0])
  i_fy = np.array([0.5, 0.4, 0.25])
  null_ratio = np.array([[0.2, 0.3, 0.1], [0.4, 0.1, 0.3], [0.3, 0.2, 0.2]])  # [P=3, S=3]
  _, t_hi = scipy_stats.t.interval(0.95, 2, loc=v.mean(), scale=scipy_stats.sem(v))
  assert t_hi > 1.0  # what a t interval on these ratios claims (the bug this guards)
  for out in (stats.ratio_versus_null(v * i_fy, null_ratio * i_fy, i_fy),  # numerators
              stats.ratio_versus_null(v, null_ratio)):                      # ratios already
    assert out["value"]["mean"] == pytest.approx(v.mean())
    assert v.min() <= out["value"]["lo"] <= out["value"]["hi"] <= 1.0
    assert out["value"]["ci"] == "bootstrap"
    v0 = null_ratio.mean(axis=0)  # per seed: [0.3, 0.2, 0.2]
    assert out["excess"]["mean"] == pytest.approx(np.mean((v - v0) / (1.0 - v0)))
    assert out["excess"]["hi"] <= 1.0
    assert out["null"]["mean"] == pytest.approx(null_ratio.mean())
  # floor: a seed whose denominator is at most the floor has no ratio and is dropped
  floored = stats.ratio_versus_null(v * i_fy, null_ratio * i_fy, i_fy, floor=0.3)
  assert floored["value"]["n"] == 2 and floored["value"]["mean"] == pytest.approx(0.98)
  # bits: Student-t interval and excess v − v₀
  bits = stats.versus_null(v, null_ratio)
  assert bits["value"]["hi"] == pytest.approx(t_hi) and "ci" not in bits["value"]
  assert bits["excess"]["mean"] == pytest.approx(np.mean(v - null_ratio.mean(axis=0)))


def test_plateau_of_saturating_exponential():
  t = np.linspace(0.0, 10.0, 201)
  taus = np.array([0.5, 1.0, 2.0])
  curves = 0.7 * (1.0 - np.exp(-t[None, :] / taus[:, None])) + 0.1
  for tol in (0.05, 0.1):
    idx = stats.plateau_index(curves, tol=tol)
    assert idx.shape == (3,)
    # Rise measured to the finite-horizon max: e^{-t/τ} − e^{-T/τ} = tol·(1 − e^{-T/τ}).
    tail = np.exp(-t[-1] / taus)
    expected = -taus * np.log(tol * (1.0 - tail) + tail)  # ≈ τ·ln(1/tol)
    np.testing.assert_allclose(t[idx], expected, atol=0.06)
  # Simpler curves plateau first; a later decline does not move the plateau.
  declining = np.concatenate([curves[0, :100], curves[0, 99] - 0.01 * np.arange(101)])
  assert stats.plateau_index(declining, tol=0.05) == stats.plateau_index(curves[0], tol=0.05)


def test_plateau_smoothing_resists_spike_and_edge_cases():
  t = np.linspace(0.0, 10.0, 201)
  rng = np.random.default_rng(0)
  curve = 1.0 - np.exp(-t) + 0.002 * rng.normal(size=t.size)
  curve[20] += 2.0  # a single-point spike
  assert stats.plateau_index(curve, tol=0.05) == 20  # raw: fooled by the spike
  smoothed = stats.plateau_index(curve, tol=0.05, smooth=5)
  assert abs(t[smoothed] - np.log(20.0)) < 0.3
  assert stats.plateau_index(np.full(5, 0.3)) == 0
  np.testing.assert_array_equal(stats.plateau_index(np.full((2, 4), np.nan)), [-1, -1])
  with pytest.raises(ValueError, match=r"\btol\b"):
    stats.plateau_index(curve, tol=1.5)


def test_departure_of_synthetic_ladder():
  t = np.linspace(0.0, 10.0, 101)
  i_fy = 1.0 - np.exp(-t / 2.0)
  mu = np.minimum(i_fy, 0.4)  # follows I, then saturates at 0.4
  dep = stats.departure_index(mu, i_fy, delta=0.1)
  assert i_fy[dep] > 0.4 / 0.9 and i_fy[dep - 1] <= 0.4 / 0.9


# ----------------------------------------------------------------------------- results.npz
def _fake_results(s=2, e=4, n=10):
  rng = np.random.default_rng(0)
  out = {
      "steps": np.array([0, 10, 100, 1000], dtype=np.int64)[:e],
      "seed_ids": np.arange(s),
      "y_test": rng.integers(0, 2, n).astype(np.int32),
      "num_classes": np.array(2),
      "predictions": rng.integers(0, 2, (s, e, n)).astype(np.int8),
      "test_acc": rng.random((s, e)).astype(np.float32),
      "reference_names": np.array(["linear", "cnn2"]),
      "t0_reference": np.array("linear"),
  }
  for r in ("linear", "cnn2"):
    out[f"ref/{r}/test_acc"] = rng.random(s).astype(np.float32)
    for f in ("i_fy", "mu", "acc_f"):
      out[f"mi/{r}/{f}"] = rng.random((s, e)).astype(np.float32)
  return out


def test_results_load_round_trip(tmp_path):
  res = _fake_results()
  np.savez(tmp_path / "results.npz", **res)
  for source in (tmp_path, tmp_path / "results.npz", str(tmp_path)):
    loaded = results.load(source)
    assert set(loaded.arrays) == set(res)
    for k, v in res.items():
      np.testing.assert_array_equal(loaded.arrays[k], v)
      assert loaded.arrays[k].dtype == v.dtype
  assert loaded.reference_names == ["linear", "cnn2"]
  assert loaded.null("cnn2") is None


def test_results_name_an_unknown_reference():  # unreadable files: test_bad_inputs
  with pytest.raises(ValueError, match=r"\bresnet\b"):
    results.Results(_fake_results()).measures("resnet")
