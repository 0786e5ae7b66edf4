"""End-to-end tests of experiments.linear_phase, complexity_ladder and retention (quick configs).

Synthetic data always; real MNIST when ``datasets.shared_data_dir()`` exists (else skipped);
CIFAR-10 configs under ``tfds.testing.mock_data`` with a few SGD steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import complexity_ladder, linear_phase, retention
from sgd_phases import analysis, datasets, io_lib, stats
from sgd_phases.datasets import tfds_images

REPO = Path(__file__).resolve().parents[1]
CI_KEYS = {"mean", "lo", "hi", "std", "n"}


def _quick(module, arg: str):
  c = module.get_config(arg)
  c.progress = False
  return c


def _check_figures(module, workdir: Path, summary: dict) -> None:
  """PNGs exist, and make_figures redraws them after they are deleted."""
  pngs = [Path(p) for p in summary["figures"]]
  assert pngs and all(p.is_file() and p.stat().st_size > 1000 for p in pngs)
  for p in pngs:
    p.unlink()
  again = module.make_figures(str(workdir))
  assert sorted(again) == sorted(map(str, pngs))
  assert all(p.is_file() for p in pngs)
  on_disk = io_lib.read_json(workdir / "summary.json")
  assert on_disk["experiment"] == module.NAME


# ----------------------------------------------------------------------------- synthetic
@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("linear_phase")
  return workdir, linear_phase.run(_quick(linear_phase, "quick"), str(workdir))


def test_linear_phase_quick(linear_run):
  workdir, s = linear_run
  assert s["task"] == "sinusoid_hd" and s["quick"] is True
  for key in ("t0_step", "mu_over_i_at_t0", "i_ly", "mu_end", "acc_l", "test_acc_end",
              "train_acc_end", "departure_step", "mu_over_i_min_before_t0"):
    assert set(s[key]) == CI_KEYS, key
  res = analysis.load(workdir)
  a = res.arrays
  t0 = a["t0_index"]
  assert s["t0_found"] == int((t0 >= 0).sum()) and s["t0_found"] >= 1  # F beats L in 600 steps
  ok = t0 >= 0
  # T_0 is the first evaluation where acc(F_t) >= acc(L), per seed.
  for i in np.flatnonzero(ok):
    acc = a["test_acc"][i]
    assert acc[t0[i]] >= a["ref/linear/test_acc"][i] > acc[: t0[i]].max()
  m = res.measures("linear")
  ratio = m["mu"][ok, t0[ok]] / m["i_fy"][ok, t0[ok]]
  assert s["mu_over_i_at_t0"]["mean"] == pytest.approx(ratio.mean(), rel=1e-6)
  assert -0.01 <= s["mu_over_i_at_t0"]["mean"] <= 1.0 + 1e-6  # μ ≤ I(F;Y)
  assert s["mu_end"]["mean"] <= s["i_ly"]["mean"] + 1e-6      # μ ≤ I(L;Y)
  _check_figures(linear_phase, workdir, s)


def test_linear_phase_rerun_loads_and_config_errors(linear_run):
  workdir, s = linear_run
  again = linear_phase.run(_quick(linear_phase, "quick"), str(workdir))  # loaded, not retrained
  assert again["mu_end"] == s["mu_end"]
  with pytest.raises(ValueError, match="task must be one of"):
    linear_phase.get_config("mnist_transformer")
  with pytest.raises(ValueError, match="task must be one of"):
    linear_phase.get_config("mnist_mlp,fashion_mlp")


def test_complexity_ladder_quick(tmp_path):
  c = _quick(complexity_ladder, "sinusoid_hd,quick")
  s = complexity_ladder.run(c, str(tmp_path))
  names = [r["name"] for r in s["rungs"]]
  assert names == ["linear", "mlp1", "mlp2"]
  res = analysis.load(tmp_path)
  a = res.arrays
  steps = a["steps"]
  for r in s["rungs"]:
    idx = stats.plateau_index(res.measures(r["name"])["mu"], tol=c.plateau_tol,
                              smooth=c.plateau_smooth)
    assert r["plateau_step"]["mean"] == pytest.approx(steps[idx].mean())
    np.testing.assert_allclose(r["test_acc"]["mean"], a[f"ref/{r['name']}/test_acc"].mean())
  means = [s["plateau_step_means"][n] for n in names]
  assert s["plateaus_in_order"] == bool(np.all(np.diff(means) >= 0))
  assert 0.0 <= s["pairwise_strict_order_fraction"] <= s["pairwise_order_fraction"] <= 1.0
  _check_figures(complexity_ladder, tmp_path, s)
  with pytest.raises(ValueError, match="config.k"):
    c.k = 9
    complexity_ladder.rung_names(c)


def test_retention_quick(tmp_path):
  c = _quick(retention, "sinusoid_hd,quick")
  s = retention.run(c, str(tmp_path))
  assert [r["p"] for r in s["table"]] == [0.0, 0.2]
  for row in s["table"]:
    res = analysis.load(retention.run_dir(tmp_path, row["p"]))
    a = res.arrays
    assert str(a["t0_reference"]) == "linear"
    train_end = a["train_acc"][:, -1]
    assert row["train_acc_end_min"] == pytest.approx(float(train_end.min()))
    assert row["reached_target"] == bool(train_end.min() >= 0.99)
    # the snapshot reference is F itself at T_0: μ(F_T0; F_T0) = I(F_T0; Y)
    t0 = a["t0_index"]
    for i in np.flatnonzero(t0 >= 0):
      m0 = res.measures("f_t0")
      assert m0["mu"][i, t0[i]] == pytest.approx(m0["i_fy"][i, t0[i]], abs=1e-5)
    mu_l, ok = res.measures("linear")["mu"], t0 >= 0
    if ok.any():
      assert row["mu_l"]["at_t0"]["mean"] == pytest.approx(mu_l[ok, t0[ok]].mean(), abs=1e-6)
    assert row["mu_l"]["end"]["mean"] == pytest.approx(mu_l[:, -1].mean(), abs=1e-6)
    assert row["mu_l_peak"]["mean"] == pytest.approx(mu_l.max(axis=1).mean(), abs=1e-6)
    ch = row["mu_l"]["change"]
    assert row["retained"] == bool(ch["n"] >= 2 and ch["hi"] >= 0)
  noisy = analysis.load(retention.run_dir(tmp_path, 0.2)).arrays
  assert (noisy["train_acc_clean"][:, 0] != noisy["train_acc"][:, 0]).any()  # labels flipped
  _check_figures(retention, tmp_path, s)
  c.noise_rates = [0.7]
  with pytest.raises(ValueError, match="config.noise_rates"):
    retention.run(c, str(tmp_path / "bad"))


def test_cli_quick(tmp_path):
  cmd = [sys.executable, "-m", "experiments.linear_phase", f"--workdir={tmp_path}",
         "--config=experiments/linear_phase.py:quick", "--config.num_seeds=1",
         "--config.num_steps=40", "--config.progress=False", "--config.eval.num_points=4",
         "--config.references.linear.num_steps=20"]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-3000:]
  s = json.loads((tmp_path / "summary.json").read_text())
  assert s["experiment"] == "linear_phase" and s["num_seeds"] == 1 and s["num_steps"] == 40
  assert (tmp_path / "figures" / "linear_phase.png").is_file()


# ----------------------------------------------------------------------------- real MNIST
needs_mnist = pytest.mark.skipif(
    linear_phase.offline_data_dir("mnist") is None,
    reason="no offline MNIST (datasets.shared_data_dir() absent); real-data test skipped")


@needs_mnist
def test_linear_phase_mnist_quick(tmp_path):
  c = _quick(linear_phase, "mnist_mlp,quick")
  assert c.dataset.data_dir == linear_phase.offline_data_dir("mnist")
  s = linear_phase.run(c, str(tmp_path))
  assert s["dataset"] == "mnist" and s["acc_l"]["mean"] > 0.75  # linear on pixels learns
  assert s["test_acc_end"]["mean"] > 0.75
  _check_figures(linear_phase, tmp_path, s)


# ----------------------------------------------------------------------------- CIFAR (mock)
@pytest.mark.parametrize("task", ["cifar10_vgg", "cifar10_resnet"])
def test_cifar_configs_on_mock_data(task, mock_tfds, tmp_path):
  c = _quick(linear_phase, f"{task},quick")
  assert c.dataset.name == "cifar10" and c.optimizer.momentum == 0.9
  c.dataset.train_size = c.dataset.test_size = None  # mock_data has 64 examples per split
  c.dataset.tfds_dir = str(tmp_path / "tfds")
  c.num_seeds, c.num_steps, c.batch_size = 1, 3, 8
  c.eval.num_points = 2
  c.references.linear.num_steps = 3
  with mock_tfds.testing.mock_data(num_examples=64, policy=mock_tfds.testing.MockPolicy.USE_CODE):
    s = linear_phase.run(c, str(tmp_path / "run"))
  a = analysis.load(tmp_path / "run").arrays
  assert a["predictions"].shape == (1, 3, a["y_test"].shape[0])  # steps 0, 1, 3
  assert s["model"] == c.model and set(s["mu_end"]) == CI_KEYS
  assert Path(s["figures"][0]).is_file()


def test_shared_data_dir_resolution():
  root = datasets.shared_data_dir()
  expected = str(root / "fashion_mnist") if root and (root / "fashion_mnist").is_dir() else None
  assert linear_phase.get_config("fashion_cnn").dataset.data_dir == expected
  assert linear_phase.get_config("cifar10_vgg").dataset.get("data_dir") is None
