"""Soft measures in runs: the engine records F's probabilities, scoring stores the soft
measures beside μ, re-scoring keeps or recomputes them, score.py takes probabilities."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import common, sequence_phases
from sgd_phases import config_lib, datasets, score, scoring, sequence_references, train_lib

sys.path.insert(0, str(Path(__file__).parent))
import tiny_run  # noqa: E402

LN2 = np.log(2.0)


def _sequence_config():
  c = common.engine_config(sequence_phases.get_config("quick"))
  c.progress, c.num_steps, c.null.num_permutations = False, 40, 0
  c.eval.num_points = 5
  c.dataset.update({"length": 12, "test_size": 16, "train_size": 40 * 32})
  del c.references["bayes"]
  c.soft.mixture = ()  # every reference
  c.eval.store_probabilities = True
  return c


@pytest.fixture(scope="module")
def seq_run(tmp_path_factory):
  wd = tmp_path_factory.mktemp("soft_seq")
  return train_lib.train(_sequence_config(), str(wd)), wd


def _unigram_add_one(tokens: np.ndarray, k: int) -> np.ndarray:
  """The in-context unigram with add-one smoothing, one position at a time (plain Python)."""
  out = []
  for seq in tokens.tolist():
    for t in range(len(seq) - 1):
      seen = seq[: t + 1]
      out.append([(seen.count(b) + 1) / (len(seen) + k) for b in range(k)])
  return np.array(out)


def test_sequence_run_stores_the_soft_measures_of_its_probabilities(seq_run):
  """The bar: soft/unigram/kl_ref_f equals KL recomputed from the stored probabilities and the
  add-one unigram rebuilt from the test sequences (1e-4 bits), per position too; the mixture
  weights are distributions; F's cross-entropy is its test loss in bits."""
  res, _ = seq_run
  a = res.arrays
  c = _sequence_config()
  ds = datasets.get_dataset(config_lib.to_dict(c)["dataset"])
  tokens = sequence_references.tokens_of(ds.x_test, ds.y_test)
  m, p, k = tokens.shape[0], tokens.shape[1] - 1, ds.num_classes
  pf = a["probabilities"]
  assert pf.shape == (2, len(a["steps"]), m * p, k) and pf.dtype == np.float32
  assert int(a["num_positions"]) == p
  uni = _unigram_add_one(tokens, k)
  kl = np.sum(uni[None, None] * (np.log2(uni)[None, None] - np.log2(pf.astype(np.float64))),
              axis=-1)                                                   # [S, E, N]
  np.testing.assert_allclose(a["soft/unigram/kl_ref_f"], kl.mean(-1), atol=1e-4)
  np.testing.assert_allclose(a["position/unigram/kl_ref_f"],
                             kl.reshape(2, -1, m, p).mean(-2), atol=1e-4)
  w = a["soft/mixture/weights"]
  assert w.shape == (2, len(a["steps"]), 3) and (w >= 0).all()
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  assert list(a["soft/mixture/names"]) == [*res.reference_names, "uniform"]
  np.testing.assert_allclose(a["soft/f/ce"], a["test_loss"] / LN2, atol=1e-4)
  assert np.mean(pf.argmax(-1) == a["predictions"]) > 0.999
  # the closed forms' stored distributions are their smoothed ones, argmax = the hard predictor
  np.testing.assert_allclose(a["soft/unigram/probabilities"], uni, rtol=1e-6)
  np.testing.assert_array_equal(a["soft/bigram/probabilities"].argmax(-1),
                                a["ref/bigram/predictions"][0])


def test_rescoring_recomputes_keeps_or_refuses_the_soft_measures(seq_run):
  res, wd = seq_run
  a = res.arrays
  c = _sequence_config()
  c.soft.mixture = ("bigram",)  # a finished run: re-scored from the stored probabilities
  again = train_lib.train(c, str(wd)).arrays
  assert list(again["soft/mixture/names"]) == ["bigram", "uniform"]
  np.testing.assert_array_equal(again["soft/unigram/kl_ref_f"], a["soft/unigram/kl_ref_f"])
  # without F's probabilities: the same options keep the stored measures, others are refused
  stored = {k: v for k, v in again.items() if k != "probabilities"}
  c.bias_correction = "miller_madow"
  kept = scoring.rescore(c, res.__class__(stored)).arrays
  np.testing.assert_array_equal(kept["soft/mixture/weights"], again["soft/mixture/weights"])
  assert not np.array_equal(kept["mi/unigram/mu"], again["mi/unigram/mu"])  # μ was re-scored
  c.soft.mixture = ("unigram",)
  with pytest.raises(ValueError, match=r"^config\.soft: .*eval\.store_probabilities=False"):
    scoring.rescore(c, res.__class__(stored))
  c.soft.enabled = False  # switched off: no soft measures left
  off = scoring.rescore(c, res.__class__(stored)).arrays
  assert not any(k.startswith("soft/mixture") or k.endswith("kl_ref_f") for k in off)


def test_float16_buffer():
  """float16 probabilities on device (half the memory): stored as float16, F's cross-entropy
  within float16 rounding of its loss (the trained references' softmax: test_experiments_paper's
  linear_phase run)."""
  c = tiny_run.config(20)
  c.checkpoint_every, c.null.num_permutations, c.eval.num_points = 0, 0, 4
  c.references, c.t0.reference = {}, ""
  c.eval.store_probabilities, c.eval.probabilities_dtype = True, "float16"
  a = train_lib.train(c, None).arrays
  assert a["probabilities"].dtype == np.float16
  assert a["probabilities"].shape == (3, len(a["steps"]), a["y_test"].size, 2)
  np.testing.assert_allclose(a["soft/f/ce"], a["test_loss"] / LN2, atol=5e-3)


def test_score_predictions_with_probabilities_against_numpy(tmp_path):
  rng = np.random.default_rng(0)
  s, e, n, k = 2, 3, 50, 3
  pf = rng.dirichlet(np.ones(k), (s, e, n)).astype(np.float32)
  pl = rng.dirichlet(np.ones(k), n).astype(np.float32)
  y = rng.integers(0, k, n)
  res = score.score_predictions(pf.argmax(-1), y, {"l": pl.argmax(-1)}, num_permutations=0,
                                probabilities=pf, reference_probabilities={"l": pl})
  a = res.arrays
  kl = np.sum(pf * (np.log2(pf) - np.log2(pl)), -1).mean(-1)
  np.testing.assert_allclose(a["soft/l/kl_f_ref"], kl, rtol=1e-5)
  ce = -np.log2(np.take_along_axis(pf, np.broadcast_to(y[:, None], (s, e, n, 1)), -1)).mean(
      (-2, -1))
  np.testing.assert_allclose(a["soft/f/ce"], ce, rtol=1e-5)
  assert a["soft/mixture/weights"].shape == (s, e, 2)
  summary = score.write(res, tmp_path / "out", 0.0)
  assert set(summary["soft"]["references"]) == {"l"}
  assert any(p.endswith("score_mixture.png") for p in summary["figures"])
  bad = pf.copy()
  bad[0, 0, 0] = [0.5, 0.5, 0.5]
  with pytest.raises(ValueError, match=r"^probabilities: probabilities must be finite"):
    score.score_predictions(pf.argmax(-1), y, {"l": pl.argmax(-1)}, probabilities=bad)
  with pytest.raises(ValueError, match=r"^reference l: probabilities must be a float array"):
    score.score_predictions(pf.argmax(-1), y, {"l": pl.argmax(-1)}, probabilities=pf,
                            reference_probabilities={"l": pl[:10]})


@pytest.mark.parametrize("change,match", [
    (lambda c: setattr(c.soft, "mixture", ("trigram",)), r"^config\.soft\.mixture: must list"),
    (lambda c: setattr(c.references, "f", c.references.unigram),
     r"^config\.references\.f: 'f' is reserved"),
    (lambda c: setattr(c.eval, "probabilities_dtype", "bfloat16"),
     r"^config\.eval\.probabilities_dtype"),
])
def test_soft_config_is_validated(change, match):
  c = _sequence_config()
  change(c)
  with pytest.raises(ValueError, match=match):
    config_lib.validate(c)


def test_a_run_recorded_before_the_probability_fields_is_the_same_run():
  """config.json of a run made before eval.store_probabilities / probabilities_dtype existed
  has the same identity as today's default config (its finished results stay reusable)."""
  c = _sequence_config()
  c.eval.store_probabilities = False
  new = config_lib.to_dict(c)
  old = config_lib.to_dict(c)
  del old["eval"]["store_probabilities"], old["eval"]["probabilities_dtype"]
  assert config_lib.identity(old) == config_lib.identity(new)
  c.eval.probabilities_dtype = "float16"
  assert config_lib.identity(old) != config_lib.identity(config_lib.to_dict(c))


def test_soft_summary_on_hand_built_curves():
  """The summary's steps: where KL(p_ref || p_F) is smallest, where each mixture component
  first has the largest weight, and the KL overtaking step of a ladder pair."""
  from sgd_phases import results, soft_scoring
  steps = np.array([0, 10, 100, 1000])
  kl_a = np.array([[0.3, 0.1, 0.2, 0.3], [0.3, 0.2, 0.1, 0.3]])  # closest at 10 / 100
  kl_b = np.array([[0.5, 0.4, 0.1, 0.05], [0.5, 0.4, 0.3, 0.2]])  # below a from 100 / 1000
  w = np.array([[[0.0, 0.0, 1.0], [0.6, 0.1, 0.3], [0.3, 0.5, 0.2], [0.1, 0.8, 0.1]]] * 2)
  arrays = {"steps": steps, "reference_names": np.array(["a", "b"]),
            "soft/f/ce": np.ones((2, 4)), "soft/mixture/weights": w,
            "soft/mixture/names": np.array(["a", "b", "uniform"]),
            "soft/mixture/residual_kl": np.zeros((2, 4))}
  for name, kl in (("a", kl_a), ("b", kl_b)):
    for field in ("kl_ref_f", "kl_f_ref", "js"):
      arrays[f"soft/{name}/{field}"] = kl
  res = results.Results(arrays)
  s = soft_scoring.summarize(res)
  assert s["references"]["a"]["kl_ref_f_min_step"]["mean"] == 55.0  # steps 10 and 100
  assert s["references"]["a"]["kl_ref_f_min"]["mean"] == pytest.approx(0.1)
  comps = s["mixture"]["components"]
  assert [comps[n]["leads_from_step"]["mean"] for n in ("uniform", "a", "b")] == [0, 10, 100]
  assert comps["b"]["weight_end"]["mean"] == pytest.approx(0.8)
  over = sequence_phases.soft_overtakes(res, [["a", "b"]])
  assert over["a->b"]["mean"] == 550.0  # 100 and 1000
