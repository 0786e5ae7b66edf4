"""Scoring predictions made elsewhere (sgd_phases.score) against an independent computation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import make_figures
from sgd_phases import io_lib, results, score

ROOT = Path(__file__).resolve().parents[1]


def _synthetic(s=2, e=6, n=400, seed=0):
  """F_t copies L on a growing share of examples and is right elsewhere at a rising rate."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n)
  l = np.where(rng.random(n) < 0.85, y, 1 - y)                      # an 85%-accurate L
  f = np.empty((s, e, n), np.int64)
  for i in range(s):
    for t in range(e):
      copy = rng.random(n) < 0.8 * (1 - t / e)
      right = rng.random(n) < 0.6 + 0.07 * t
      f[i, t] = np.where(copy, l, np.where(right, y, 1 - y))
  return f, y, l


def test_score_predictions_matches_an_independent_mu_and_has_a_null():
  from pyitlib import discrete_random_variable as drv
  f, y, l = _synthetic()
  steps = np.array([0, 10, 30, 100, 300, 1000])
  res = score.score_predictions(f, y, {"linear": l, "paired": f[:, ::-1]}, steps,
                                num_permutations=30)
  mu = res.measures("linear")["mu"]
  for i in range(f.shape[0]):
    for t in range(f.shape[1]):
      ref = drv.information_mutual(f[i, t], y, base=2) - drv.information_mutual_conditional(
          f[i, t], y, l, base=2)
      assert mu[i, t] == pytest.approx(ref, abs=1e-5)
      g = f[i, ::-1][t]  # the time-paired reference: its own predictions at each evaluation
      paired = drv.information_mutual(f[i, t], y, base=2) - drv.information_mutual_conditional(
          f[i, t], y, g, base=2)
      assert res.measures("paired")["mu"][i, t] == pytest.approx(paired, abs=1e-5)
  null = res.null("linear")
  assert null.shape == (30, 2, 6) and np.all(null.mean(axis=0)[:, 1] < mu[:, 1])
  acc_f, acc_l = (f == y).mean(-1), (l == y).mean()
  t0 = [int(np.argmax(row >= acc_l)) if (row >= acc_l).any() else -1 for row in acc_f]
  np.testing.assert_array_equal(res.arrays["t0_index"], t0)
  assert str(res.arrays["t0_reference"]) == "linear"
  with pytest.raises(ValueError, match=r"^reference linear: shape"):
    score.score_predictions(f, y, {"linear": l[:10]})
  with pytest.raises(ValueError, match=r"^steps"):
    score.score_predictions(f, y, {"linear": l}, [3, 2, 1, 0, 5, 6])


def test_score_command_writes_what_a_run_writes(tmp_path):
  f, y, l = _synthetic()
  io_lib.write_npz(tmp_path / "F.npz", {"predictions": f, "labels": y,
                                        "steps": np.array([0, 10, 30, 100, 300, 1000])})
  io_lib.write_npz(tmp_path / "L.npz", {"predictions": l})
  out = tmp_path / "out"
  run = subprocess.run([sys.executable, "-m", "sgd_phases.score", f"--predictions={tmp_path}/F.npz",
                        f"--reference=linear={tmp_path}/L.npz", f"--workdir={out}",
                        "--num_permutations=20"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert len(run.stdout.splitlines()) <= 25 and "references[linear]" in run.stdout
  res = results.load(out)
  direct = score.score_predictions(f, y, {"linear": l}, [0, 10, 30, 100, 300, 1000],
                                   num_permutations=20)
  for k in ("mi/linear/mu", "null/linear/mu", "t0_index"):
    np.testing.assert_allclose(res.arrays[k], direct.arrays[k], atol=1e-6)
  summary = io_lib.read_json(out / "summary.json")
  assert summary["experiment"] == "score" and summary["command"].startswith("python -m sgd_phases.score")
  assert "mu_over_i_at_t0_vs_null" in summary["references"]["linear"]
  (out / "figures" / "score_linear.png").unlink()
  assert make_figures.make_all(out) == [str(out / "figures" / "score_linear.png")]


def test_score_input_errors_name_the_argument_before_anything_is_written(tmp_path, capsys):
  f, y, l = _synthetic()
  per_seed = np.stack([l, l])
  per_seed[1, 7] = -1  # would read as "no reference for seed 1": NaN measures
  with pytest.raises(ValueError, match=r"^reference linear: seed 1, predictions hold -1"):
    score.score_predictions(f, y, {"linear": per_seed})
  with pytest.raises(ValueError, match=r"^reference linear: predictions hold -1"):
    score.score_predictions(f, y, {"linear": np.where(np.arange(len(l)) == 3, -1, l)})
  with pytest.raises(ValueError, match=r"^steps: must be integers \(SGD steps\), got 2.5"):
    score.score_predictions(f, y, {"linear": l}, [0, 1, 2.5, 3, 4, 5])
  np.savez(tmp_path / "F.npz", predictions=f, labels=y)
  np.savez(tmp_path / "L.npz", preds=l)
  out = tmp_path / "out"
  for argv, message in [
      ([f"--predictions={tmp_path}/F.npz", f"--reference=linear={tmp_path}/L.npz"],
       (f"--reference linear={tmp_path}/L.npz: no 'predictions' array in the file (it holds "
        "['preds'])")),
      ([f"--predictions={tmp_path}/G.npz", f"--reference=linear={tmp_path}/L.npz"],
       f"--predictions={tmp_path}/G.npz: no such file")]:
    with pytest.raises(SystemExit):
      score.main(argv + [f"--workdir={out}"])
    assert message in capsys.readouterr().err
  assert not out.exists()
