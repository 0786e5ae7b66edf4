"""End-to-end tests of the synthetic experiments (quick configs, CPU, seconds each).

Covers experiments.synthetic_ball, mi_vs_accuracy, theorem1 and make_figures: every ``run``
writes summary.json and non-empty PNGs, and make_figures regenerates the PNGs from the files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import make_figures, mi_vs_accuracy, synthetic_ball, theorem1

REPO = Path(__file__).resolve().parents[1]


def _check_pngs(paths: list[str], workdir: Path) -> None:
  assert paths, "no figures were written"
  for p in paths:
    assert Path(p).is_file() and Path(p).stat().st_size > 1000, p
    assert Path(p).parent == workdir / "figures"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
  """One quick run of each experiment under a common root (shared by the tests)."""
  root = tmp_path_factory.mktemp("synthetic_experiments")
  out = {}
  for module in (synthetic_ball, mi_vs_accuracy, theorem1):
    wd = root / module.NAME
    out[module.NAME] = (module.run(module.get_config("quick"), str(wd)), wd)
  out["root"] = ({}, root)
  return out


def test_summaries(runs):
  for name in ("synthetic_ball", "mi_vs_accuracy", "theorem1"):
    summary, wd = runs[name]
    on_disk = json.loads((wd / "summary.json").read_text())
    assert on_disk["experiment"] == name == summary["experiment"]
    _check_pngs(summary["figures"], wd)


def test_synthetic_ball(runs):
  summary, wd = runs["synthetic_ball"]
  assert (wd / "figures" / "decision_boundaries.png").stat().st_size > 10_000
  for key in ("t0_step", "mu_over_i_at_t0", "acc_l", "train_acc_end", "test_acc_end",
              "agreement_with_linear", "max_agreement_with_linear"):
    assert key in summary, key
  config = synthetic_ball.get_config("quick")
  assert len(summary["snapshot_steps"]) == config.num_snapshots
  assert summary["snapshot_steps"][0] == 0 and summary["snapshot_steps"][-1] == config.num_steps
  agree = [v["mean"] for v in summary["agreement_with_linear"].values()]
  assert all(0.0 <= a <= 1.0 for a in agree)
  # Even the tiny quick run learns the mostly-linear concept: F agrees with L on most points.
  assert summary["max_agreement_with_linear"]["mean"] > 0.8
  assert summary["test_acc_end"]["mean"] > 0.7


def test_pick_snapshots():
  steps = np.array([0, 1, 2, 5, 10, 30, 100, 300, 1000])
  assert synthetic_ball.pick_snapshots(steps, [0, 9, 290, 5000], 4) == [0, 4, 7, 8]
  auto = synthetic_ball.pick_snapshots(steps, [], 4)
  assert auto[0] == 0 and auto[-1] == len(steps) - 1 and auto == sorted(set(auto))
  with pytest.raises(ValueError, match=r"\bsnapshot_steps\b"):
    synthetic_ball.pick_snapshots(steps, [-1], 4)


def test_mi_vs_accuracy_on_curve(runs):
  summary, wd = runs["mi_vs_accuracy"]
  assert summary["max_abs_error_bits"] < 1e-3
  pts = np.load(wd / mi_vs_accuracy.POINTS_FILE)
  h = mi_vs_accuracy.binary_entropy(pts["accuracies"])
  np.testing.assert_allclose(pts["measured_mi"], 1.0 - h, atol=1e-3)
  np.testing.assert_allclose(pts["measured_acc"], pts["accuracies"], atol=1e-6)
  for row in summary["table"]:  # the paper's Figure-3 values (3 decimals)
    if row["paper"] is not None:
      assert abs(row["measured_mi"] - row["paper"]) < 1e-3, row


def test_exact_predictions_are_balanced():
  f, y = mi_vs_accuracy.exact_predictions(0.9, 1000)
  assert np.bincount(y).tolist() == [500, 500] and np.bincount(f).tolist() == [500, 500]
  assert np.mean(f == y) == pytest.approx(0.9)
  assert mi_vs_accuracy.binary_entropy(np.array([0.5, 1.0])).tolist() == [1.0, 0.0]


def test_theorem1(runs):
  summary, wd = runs["theorem1"]
  by_init = {s["init"]: s for s in summary["settings"]}
  assert set(by_init) == {"small", "large"}
  for s in summary["settings"]:
    assert (wd / s["name"] / "results.npz").is_file()
  small, large = by_init["small"], by_init["large"]
  assert small["conditions"]["satisfied"] and not large["conditions"]["satisfied"]
  # p = 0.2: SGD fits the noisy training labels better than chance would allow without
  # memorising (1 - p = 0.8) while the clean test accuracy stays high for the benign init.
  assert small["train_acc_end"]["mean"] > 0.9
  assert small["train_acc_end"]["mean"] > 1 - small["noise_rate"]
  assert small["test_acc_max"]["mean"] > 0.9
  assert small["test_acc_end"]["mean"] > large["test_acc_end"]["mean"]


def test_theorem1_initial_weights_match_config():
  config = theorem1.get_config("quick")
  tcfg = theorem1.training_config(config, 0.2, "large")
  assert tcfg.dataset.label_noise == 0.2 and "inits" not in tcfg
  d0 = theorem1.initial_weights(tcfg, np.zeros(tcfg.dataset.dim, np.float32))
  assert d0.shape == (config.num_seeds, config.dataset.dim)
  assert np.abs(d0).max() <= 2 * config.inits.large.init_scale
  config.inits.neg = theorem1._init(0.01, init_first=-1000.0)
  d0 = theorem1.initial_weights(theorem1.training_config(config, 0.0, "neg"),
                                np.zeros(config.dataset.dim, np.float32))
  np.testing.assert_allclose(d0[:, 0], -1000.0)
  assert not theorem1.conditions(d0, 100, 0.0, 0.05)["first_ok"]


def test_make_figures_regenerates(runs):
  _, root = runs["root"]
  before = sorted(str(p) for p in root.rglob("figures/*.png"))
  assert len(before) >= 3
  for p in before:
    os.remove(p)
  pngs = make_figures.make_all(root)
  assert sorted(pngs) == before
  assert all(Path(p).stat().st_size > 1000 for p in pngs)
  with pytest.raises(ValueError, match=r"\bworkdir\b"):
    make_figures.make_all(root / "synthetic_ball" / "figures")


def test_cli_quick(tmp_path):
  wd = tmp_path / "fig3"
  cmd = [sys.executable, "-m", "experiments.mi_vs_accuracy", f"--workdir={wd}",
         "--config=experiments/mi_vs_accuracy.py:quick", "--config.num_random_draws=0"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = json.loads((wd / "summary.json").read_text())
  assert summary["experiment"] == "mi_vs_accuracy" and "random_draws" not in summary
  assert (wd / "figures" / "mi_vs_accuracy.png").stat().st_size > 1000


def test_failed_run_on_bad_input_does_not_block_the_corrected_rerun(tmp_path):
  """As a new user would: label_noise=0.7 fails with one clear error, then 0.3 runs."""
  wd = tmp_path / "run"
  bad = synthetic_ball.get_config("quick")
  bad.dataset.label_noise = 0.7
  with pytest.raises(ValueError, match=r"\blabel_noise\b"):
    synthetic_ball.run(bad, str(wd))
  assert not (wd / "config.json").exists()  # validated before anything was written
  good = synthetic_ball.get_config("quick")
  good.dataset.label_noise = 0.3
  summary = synthetic_ball.run(good, str(wd))
  assert json.loads((wd / "config.json").read_text())["dataset"]["label_noise"] == 0.3
  assert summary["experiment"] == "synthetic_ball"
