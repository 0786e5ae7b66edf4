"""experiments.sequence_phases: a transformer scored against closed-form next-token predictors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import sequence_phases
from sgd_phases import analysis, config_lib, datasets, sequence_references


def test_overtake_index_on_hand_built_curves():
  lo = np.array([[1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0], [0, 0, 0, 0, 0]])
  hi = np.array([[0.0, 2.0, 0.5, 2.0, 3.0],   # ahead at 1, behind at 2, ahead for good from 3
                 [0.0, 0.0, 0.0, 0.0, 0.5],   # never ahead
                 [1.0, 1.0, 1.0, 1.0, 1.0]])  # ahead from the start
  np.testing.assert_array_equal(sequence_phases.overtake_index(lo, hi), [3, -1, 0])


def test_summary_reports_ratios_with_the_ratio_helper():
  """Hand-built curves: μ/I(F;Y) near 1 at the end in 3 seeds. The summary's ratio beside its
  null stays in [0, 1] (a t interval would leave it) and its excess is (v − v₀)/(1 − v₀)."""
  from sgd_phases import mutual_info, results, stats
  v = np.array([0.99, 0.97, 1.0])                                 # μ/I at the end per seed
  i_fy = np.full((3, 2), 0.5)
  mu = np.stack([0.5 * v - 0.2, 0.5 * v], axis=1)                 # [S, E]
  null = np.stack([np.full((3, 2), 0.5 * q) for q in (0.2, 0.4, 0.3)])  # [P, S, E]
  arrays = {"steps": np.array([0, 10]), "reference_names": np.array(["bigram"]),
            "predictions": np.zeros((3, 2, 4), np.int32), "test_acc": np.full((3, 2), 0.5),
            "ref/bigram/predictions": np.zeros((3, 4), np.int32),
            "ref/bigram/test_acc": np.full(3, 0.5), "null/bigram/mu": null}
  for f in mutual_info.InfoMeasures._fields:
    arrays[f"mi/bigram/{f}"] = {"mu": mu, "i_fy": i_fy}.get(f, np.zeros((3, 2)))
  out = sequence_phases.summarize(results.Results(arrays), [], 0.01)["references"]["bigram"]
  end = out["ratio_end_vs_null"]
  assert end["value"]["mean"] == pytest.approx(v.mean()) and end["value"]["hi"] <= 1.0
  assert end["excess"]["mean"] == pytest.approx(np.mean((v - 0.3) / (1 - 0.3)))
  assert end == stats.ratio_versus_null(mu[:, -1], null[:, :, -1], i_fy[:, -1], floor=0.01)
  peak = out["peak_ratio_vs_null"]  # the peak is the end here; its null: per-draw max
  assert peak["value"]["hi"] <= 1.0 and peak["null"]["mean"] == pytest.approx(0.3)
  assert peak["excess"]["mean"] == pytest.approx(np.mean((v - 0.3) / (1 - 0.3)))


# Runs ``cli.main`` on sequence_phases with a ``run`` that prints the engine config it gets.
_CLI_DRIVER = """
import json
from experiments import common
from sgd_phases import cli
def run(config, workdir):
  c = common.engine_config(config)
  print("CONFIG", json.dumps({k: c[k] for k in ("num_steps", "batch_size")} | {
      "train_size": c.dataset.train_size, "dataset": c.dataset.name}))
  return {}
cli.main("experiments/sequence_phases.py", run)
"""


def test_train_size_follows_num_steps_and_batch_size_on_the_command_line(tmp_path):
  """Fresh sequences every step: train_size = num_steps × batch_size after the flags (also when
  the flags switch the dataset), unless train_size itself is set."""
  cases = {("--config.num_steps=70",): 70 * 64,  # icl_markov: batch 64 (published settings)
           ("--config.num_steps=70", "--config.batch_size=8"): 70 * 8,
           ("--config.dataset.name=text", "--config.num_steps=70"): 70 * 64,
           ("--config.num_steps=70", "--config.dataset.train_size=100"): 100}
  root = Path(__file__).resolve().parents[1]
  procs = {args: subprocess.Popen(
      [sys.executable, "-c", _CLI_DRIVER, f"--workdir={tmp_path}", *args], cwd=root,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in cases}
  for args, p in procs.items():
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, (args, err[-2000:])
    got = json.loads(next(ln for ln in out.splitlines() if ln.startswith("CONFIG"))[7:])
    assert got["num_steps"] == 70 and got["train_size"] == cases[args], (args, got)
    assert got["dataset"] == ("text" if "--config.dataset.name=text" in args else "icl_markov")


def _plugin_mi(u: np.ndarray, v: np.ndarray, k: int = 3) -> float:
  """I(U;V) in bits from the numpy contingency table of two label arrays."""
  joint = np.zeros((k, k))
  np.add.at(joint, (u, v), 1)
  joint /= joint.sum()
  pu, pv = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
  nz = joint > 0
  return float((joint[nz] * np.log2(joint[nz] / (pu @ pv)[nz])).sum())


def _plugin_cond_mi(u: np.ndarray, v: np.ndarray, w: np.ndarray, k: int = 3) -> float:
  """I(U;V|W) = Σ_c P(W=c) I(U;V|W=c) (plug-in)."""
  return sum(np.mean(w == c) * _plugin_mi(u[w == c], v[w == c], k) for c in range(k)
             if np.any(w == c))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  wd = tmp_path_factory.mktemp("seq")
  c = sequence_phases.get_config("quick")
  c.progress = False
  return sequence_phases.run(c, str(wd)), wd


def test_quick_run_stores_positions_references_nulls_and_the_figure(quick_run):
  summary, wd = quick_run
  res = analysis.load(wd)
  a = res.arrays
  cfg = sequence_phases.get_config("quick")
  m, t = cfg.dataset.test_size, cfg.dataset.length
  assert a["predictions"].shape == (2, len(a["steps"]), m * (t - 1))  # every position scored
  assert set(res.reference_names) == {"unigram", "bigram", "bayes"}
  # the stored references are the closed forms on the same held-out sequences
  ds = datasets.get_dataset(config_lib.to_dict(cfg)["dataset"])
  tokens = sequence_references.tokens_of(ds.x_test, ds.y_test)
  np.testing.assert_array_equal(res.reference("bigram")[0],
                                sequence_references.in_context_bigram(tokens, 3).ravel())
  np.testing.assert_array_equal(a["y_test"], tokens[:, 1:].ravel())
  # μ recomputed independently (plug-in MI from a numpy contingency table) at the end
  f, l, y = a["predictions"][0, -1], res.reference("unigram")[0], a["y_test"]
  mu = _plugin_mi(f, y) - _plugin_cond_mi(f, y, l)
  assert res.measures("unigram")["mu"][0, -1] == pytest.approx(mu, abs=1e-5)
  assert res.null("bigram").shape[1:] == (2, len(a["steps"]))
  for name in ("unigram", "bigram", "bayes"):
    entry = summary["references"][name]
    assert {"peak_ratio_vs_null", "ratio_end_vs_null", "peak_step"} <= set(entry)
    assert 0 < entry["acc"] < 1
  assert "unigram->bigram" in summary["overtakes"]
  assert (wd / "figures" / "sequence_phases.png").exists()


def test_per_position_curves_match_a_numpy_plug_in_estimate(quick_run):
  """position/<ref>/{mu,i_fy} [S, E, T−1]: μ and I(F_t;Y) over the test sequences at one
  position t, recomputed here from the stored flat predictions (sequence-major)."""
  _, wd = quick_run
  res = analysis.load(wd)
  a = res.arrays
  s, e, n = a["predictions"].shape
  p = sequence_phases.get_config("quick").dataset.length - 1
  assert int(a["num_positions"]) == p
  f, y = a["predictions"].reshape(s, e, n // p, p), a["y_test"].reshape(n // p, p)
  for name in ("unigram", "bigram"):
    pos = res.by_position(name)
    assert pos["mu"].shape == pos["i_fy"].shape == (s, e, p)
    ref = res.reference(name).reshape(s, n // p, p)
    for si, ei, t in [(0, e - 1, 0), (1, e - 1, 1), (1, e // 2, p // 2), (0, e - 1, p - 1)]:
      u, v, w = f[si, ei, :, t], y[:, t], ref[si, :, t]
      assert pos["i_fy"][si, ei, t] == pytest.approx(_plugin_mi(u, v), abs=1e-5)
      assert pos["mu"][si, ei, t] == pytest.approx(
          _plugin_mi(u, v) - _plugin_cond_mi(u, v, w), abs=1e-5)
  assert (wd / "figures" / "sequence_phases_positions.png").exists()


def test_closed_form_reference_fields_are_validated():
  c = sequence_phases.get_config("quick")
  c.references.bad = config_lib.reference_config("trigram", trained_on="closed_form")
  with pytest.raises(ValueError, match=r"^config\.references\.bad\.model: 'trigram'"):
    config_lib.validate(c)
  c.references.bad = config_lib.reference_config("ngram", trained_on="closed_form", order=0)
  with pytest.raises(ValueError, match=r"^config\.references\.bad\.model_kwargs\.order"):
    config_lib.validate(c)


def test_closed_form_reference_refuses_a_non_sequence_dataset():
  ds = datasets.get_dataset({"name": "ball2d_sinusoid"})
  with pytest.raises(ValueError, match=r"not a sequence dataset"):
    sequence_references.closed_form("bayes", {}, ds)
  with pytest.raises(ValueError, match=r"^label_noise=0.1: sequence datasets have no label"):
    datasets.get_dataset({"name": "icl_markov", "label_noise": 0.1})


def test_text_task_with_skipped_first_positions(tmp_path):
  """A user's text file, character level; the first 3 positions of each test sequence are not
  scored, so predictions, labels and every reference cover the last T - 1 - 3 positions."""
  rng = np.random.default_rng(0)
  words = ["the ", "cat ", "sat ", "on ", "a ", "mat. "]
  (tmp_path / "t.txt").write_text("".join(rng.choice(words, 4000)))
  c = sequence_phases.get_config("text,quick")
  c.dataset.path = str(tmp_path / "t.txt")
  c.dataset.skip_positions = 3
  c.dataset.train_size, c.num_steps, c.progress = 400, 60, False
  # the references and shapes are what this test is about: few null draws, no soft measures
  c.null.num_permutations, c.soft.enabled = 5, False
  summary = sequence_phases.run(c, str(tmp_path / "run"))
  res = analysis.load(tmp_path / "run")
  ds = datasets.get_dataset(config_lib.to_dict(c)["dataset"])
  assert ds.num_classes == len(set("".join(words)))  # vocabulary of the training text
  m, t = ds.x_test.shape[0], c.dataset.length
  assert res.arrays["predictions"].shape[-1] == m * (t - 1 - 3)
  tokens = sequence_references.tokens_of(ds.x_test, ds.y_test)
  np.testing.assert_array_equal(res.arrays["y_test"], tokens[:, 4:].ravel())
  table = sequence_references.fit_ngram(sequence_references.tokens_of(ds.x_train, ds.y_train),
                                        2, ds.num_classes)
  np.testing.assert_array_equal(res.reference("ngram2")[0],
                                sequence_references.ngram_predict(table, tokens)[:, 3:].ravel())
  assert set(summary["overtakes"]) == {"ngram2->ngram3", "unigram->bigram"}
  assert summary["references"]["ngram3"]["acc"] > summary["references"]["ngram1"]["acc"]


def test_t0_against_a_closed_form_reference_and_f_at_t0(tmp_path):
  """T_0 may be defined by a closed-form predictor's accuracy; "F at T_0" then works as for
  images; references that learn F's train predictions are refused for sequences."""
  from sgd_phases import train_lib
  from experiments import common
  # the small settings (Adam 3e-3) pass the unigram's accuracy within 80 steps
  c = common.engine_config(sequence_phases.get_config("icl_markov_small,quick"))
  c.progress, c.num_steps, c.null.num_permutations = False, 80, 0
  c.t0.reference = "unigram"
  c.references.f_t0 = config_lib.reference_config("linear", trained_on="snapshot_at_T0")
  res = train_lib.train(c, None)
  a = res.arrays
  acc_l = float(a["ref/unigram/test_acc"][0])
  assert (a["t0_index"] >= 0).all()  # F passes the unigram's accuracy within 80 steps
  for s in range(2):  # T_0: the first evaluation where F is as accurate as the unigram
    reached = np.flatnonzero(a["test_acc"][s] >= acc_l)
    assert a["t0_index"][s] == (reached[0] if reached.size else -1)
    if reached.size:
      np.testing.assert_array_equal(res.reference("f_t0")[s], a["predictions"][s, reached[0]])
  c.references.f_t0 = config_lib.reference_config("linear", trained_on="final_predictions")
  with pytest.raises(ValueError, match=r"^config\.references\.f_t0\.trained_on: 'final_pred"):
    train_lib.train(c, None)
