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
from etils import epath

from experiments import common, complexity_ladder, linear_phase, retention
from sgd_phases import analysis, datasets, io_lib

sys.path.insert(0, str(Path(__file__).parent))
import gcs_emulator  # noqa: E402

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
    assert set(s[key]) - {"ci"} == CI_KEYS, key
  for key in ("acc_l", "test_acc_end", "train_acc_end"):  # bounded: intervals stay in [0, 1]
    assert s[key]["ci"] == "bootstrap" and 0 <= s[key]["lo"] <= s[key]["hi"] <= 1, key
  assert s["t0_step"]["ci"] == "bootstrap" and s["t0_step"]["lo"] >= 0
  assert "ci" not in s["i_ly"]  # bits: the t interval
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
  # soft measures against L's softmax (stored per seed; argmax = L's predictions)
  pl = a["soft/linear/probabilities"]
  assert pl.shape == (2, a["y_test"].size, 2)
  np.testing.assert_array_equal(pl.argmax(-1), a["ref/linear/predictions"])
  ce = -np.log2(np.take_along_axis(pl, a["y_test"][None, :, None], -1)[..., 0]).mean(-1)
  np.testing.assert_allclose(a["soft/linear/ce"], ce, rtol=1e-5)
  np.testing.assert_allclose(a["soft/f/ce"], a["test_loss"] / np.log(2.0), atol=1e-4)
  for field in ("kl_ref_f", "kl_f_ref", "js"):
    assert a[f"soft/linear/{field}"].shape == a["test_acc"].shape
    assert set(s["soft"]["references"]["linear"][f"{field}_end"]) == CI_KEYS
  assert s["soft"]["mixture"]["names"] == ["linear", "uniform"]
  assert {Path(p).name for p in s["figures"]} == {"linear_phase.png", "linear_phase_soft.png",
                                                  "linear_phase_mixture.png"}
  _check_figures(linear_phase, workdir, s)


def test_linear_phase_rerun_loads_and_config_errors(linear_run):
  workdir, s = linear_run
  again = linear_phase.run(_quick(linear_phase, "quick"), str(workdir))  # loaded, not retrained
  assert again["mu_end"] == s["mu_end"]
  with pytest.raises(ValueError, match=r"\btask must be one of\b"):
    linear_phase.get_config("mnist_transformer")
  with pytest.raises(ValueError, match=r"\btask must be one of\b"):
    linear_phase.get_config("mnist_mlp,fashion_mlp")


def test_linear_phase_on_a_gs_workdir_writes_every_file_and_equals_local(linear_run, gcs_bucket):
  """The quick experiment with ``workdir=gs://...`` (local GCS emulator): the same files as the
  local run, results bit-identical, figures redrawn from the bucket."""
  local, s = linear_run  # (checkpoints on gs:// are tested in test_preemption.py)
  uri = f"{gcs_bucket}/linear_phase-{os.getpid()}"
  g = linear_phase.run(_quick(linear_phase, "quick"), uri)

  def norm(names):  # event file names hold host and time; Orbax marks GCS commits by objects
    return sorted({"tensorboard/events" if n.startswith("tensorboard/events") else n
                   for n in names if not n.endswith("commit_success.txt")})

  on_gs = gcs_emulator.list_objects(uri)
  assert norm(on_gs) == norm(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
  for name in ("config.json", "results.npz", "metrics.jsonl", "summary.json",
               "figures/linear_phase.png", "references/linear.npz"):
    assert name in on_gs, name
  assert any(n.startswith("tensorboard/events") for n in on_gs)
  a, b = analysis.load(local).arrays, analysis.load(uri).arrays
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  differ = ("figures", "wall_time_s")  # where the files went, and how long it took
  assert {k: v for k, v in g.items() if k not in differ} == {
      k: v for k, v in s.items() if k not in differ}
  figures = ["linear_phase.png", "linear_phase_soft.png", "linear_phase_mixture.png"]
  assert g["figures"] == [f"{uri}/figures/{f}" for f in figures]
  assert s["figures"] == [str(local / "figures" / f) for f in figures]
  on_gs, on_disk = io_lib.read_json(f"{uri}/summary.json"), io_lib.read_json(local / "summary.json")
  assert on_gs.pop("wall_time_s") >= 0 and on_disk.pop("wall_time_s") >= 0
  assert on_gs == on_disk
  (epath.Path(uri) / "figures" / "linear_phase.png").unlink()
  assert linear_phase.make_figures(uri) == [f"{uri}/figures/{f}" for f in figures]
  assert len((epath.Path(uri) / "figures" / "linear_phase.png").read_bytes()) > 1000


def test_complexity_ladder_quick(tmp_path):
  c = _quick(complexity_ladder, "sinusoid_hd,quick")
  s = complexity_ladder.run(c, str(tmp_path))
  names = [r["name"] for r in s["rungs"]]
  assert names == ["linear", "mlp1", "mlp2"]
  res = analysis.load(tmp_path)
  a = res.arrays
  for r in s["rungs"]:
    assert r["plateau_step"]["n"] == c.num_seeds
    assert a["steps"][0] <= r["plateau_step"]["mean"] <= a["steps"][-1]
    null = r["plateau_mu_over_i_vs_null"]
    assert null["null"]["num_draws"] == c.null.num_permutations
    assert null["null"]["lo"] <= null["null"]["mean"] <= null["null"]["hi"]
  assert 0.0 <= s["pairwise_strict_order_fraction"] <= s["pairwise_order_fraction"] <= 1.0
  _check_figures(complexity_ladder, tmp_path, s)
  with pytest.raises(ValueError, match=r"^config\.k\b"):
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
    assert row["mu_l"]["at_t0"]["n"] == int((t0 >= 0).sum())
    assert row["mu_l_peak"]["mean"] >= row["mu_l"]["end"]["mean"] - 1e-9
    for key in ("mu_l_peak_over_i_ly_vs_null", "mu_l_end_over_i_ly_vs_null"):
      assert 0.0 < row[key]["null"]["p_value"] <= 1.0
  noisy = analysis.load(retention.run_dir(tmp_path, 0.2)).arrays
  assert (noisy["train_acc_clean"][:, 0] != noisy["train_acc"][:, 0]).any()  # labels flipped
  _check_figures(retention, tmp_path, s)
  c.noise_rates = [0.7]
  with pytest.raises(ValueError, match=r"^config\.noise_rates\b"):
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


# ----------------------------------------------------------------------------- oracles
def _fake_results(steps, curves, i_fy, test_acc, nulls=None, t0=None, train_acc=None):
  """A results.Results from hand-built per-reference μ curves {name: [S, E]}."""
  from sgd_phases import mutual_info, results
  s, e = i_fy.shape
  arrays = {"steps": np.asarray(steps), "reference_names": np.array(list(curves)),
            "seed_ids": np.arange(s), "t0_index": np.full(s, -1) if t0 is None else t0}
  arrays["t0_step"] = np.where(arrays["t0_index"] >= 0,
                               arrays["steps"][np.maximum(arrays["t0_index"], 0)], -1)
  for name, mu in curves.items():
    for f in mutual_info.InfoMeasures._fields:
      arrays[f"mi/{name}/{f}"] = np.zeros((s, e))
    arrays[f"mi/{name}/mu"] = mu
    arrays[f"mi/{name}/i_fy"] = i_fy
    arrays[f"mi/{name}/i_ly"] = np.full((s, e), 0.5)
    arrays[f"ref/{name}/test_acc"] = np.full(s, test_acc[name])
    if nulls is not None:
      arrays[f"null/{name}/mu"] = nulls[name]
  for k in ("test_acc", "train_acc", "train_acc_clean"):
    arrays[k] = np.ones((s, e)) if train_acc is None else train_acc
  return results.Results(arrays)


def _steps_curve(plateaus, top, e=40):
  """[S, E]: 0 before each seed's plateau index, ``top`` from it on."""
  return np.stack([np.where(np.arange(e) >= p, top, 0.0) for p in plateaus])


def test_ladder_summary_on_hand_built_curves():
  steps = np.arange(40) * 10
  # rungs' plateau indices per seed (2 seeds): linear 5/5, r1 10/20, r2 20/20 (a tie)
  curves = {"linear": _steps_curve([5, 5], 0.3), "r1": _steps_curve([10, 20], 0.5),
            "r2": _steps_curve([20, 20], 0.6)}
  i_fy = np.full((2, 40), 0.8)
  nulls = {n: np.full((10, 2, 40), 0.2) for n in curves}
  res = _fake_results(steps, curves, i_fy, {"linear": 0.8, "r1": 0.85, "r2": 0.84}, nulls)
  s = complexity_ladder.summarize_ladder(res, list(curves), tol=0.05, smooth=1)
  assert s["plateau_step_means"] == {"linear": 50.0, "r1": 150.0, "r2": 200.0}
  assert s["plateaus_in_order"] is True
  # pairs (lin, r1), (lin, r2), (r1, r2) per seed: all <= ; strict fails only for seed 1's tie
  assert s["pairwise_order_fraction"] == 1.0
  assert s["pairwise_strict_order_fraction"] == pytest.approx(5 / 6)
  assert s["reference_acc_increasing"] is False  # 0.85 then 0.84
  rung = {r["name"]: r for r in s["rungs"]}["r1"]
  v = rung["plateau_mu_over_i_vs_null"]
  assert v["value"]["mean"] == pytest.approx(0.5 / 0.8)
  assert v["null"]["mean"] == pytest.approx(0.2 / 0.8)
  assert v["excess"]["mean"] == pytest.approx((0.5 - 0.2) / (0.8 - 0.2))
  assert v["null"]["p_value"] == pytest.approx(1 / 11)
  out_of_order = {"linear": _steps_curve([30, 30], 0.3), "r1": _steps_curve([10, 10], 0.5)}
  s2 = complexity_ladder.summarize_ladder(
      _fake_results(steps, out_of_order, i_fy, {"linear": 0.8, "r1": 0.9}), ["linear", "r1"],
      tol=0.05, smooth=1)
  assert s2["plateaus_in_order"] is False and s2["pairwise_order_fraction"] == 0.0


def test_retention_row_on_hand_built_curves():
  steps = np.arange(10) * 100
  t0 = np.array([2, 2, -1])  # the third seed never reaches T_0
  base = np.tile(np.array([0.0, 0.1, 0.3, 0.35, 0.4, 0.38, 0.36, 0.34, 0.32, 0.30]), (3, 1))
  kept = base.copy()
  kept[:, -1] = [0.40, 0.28, 0.31]  # changes from T_0: +0.10, −0.02 (third: no T_0)
  i_fy = np.full((3, 10), 0.6)
  null = np.full((4, 3, 10), 0.1)
  null[0, :, 6] = 0.3  # draw 0 peaks at evaluation 6, away from every observed peak (4, 9)
  res = _fake_results(steps, {"linear": kept, "f_t0": kept}, i_fy, {"linear": 0.9, "f_t0": 0.9},
                      nulls={"linear": null, "f_t0": np.zeros((4, 3, 10))},
                      t0=t0, train_acc=np.full((3, 10), 0.995))
  row = retention.noise_row(res, 0.1, target=0.99)
  # the peak's null is each draw's own peak: (0.3 + 3 x 0.1) / 4, over I(L;Y) = 0.5 (read at
  # the observed argmax it would be 0.1 / 0.5, too low)
  peak_null = row["mu_l_peak_over_i_ly_vs_null"]["null"]["mean"]
  assert peak_null == pytest.approx((0.3 + 3 * 0.1) / 4 / 0.5)
  # loss from peak: observed peak − end = (0, 0.12, 0.09); null per draw = (0.2, 0, 0, 0)
  loss = row["mu_l_loss_from_peak_vs_null"]
  assert loss["value"]["mean"] == pytest.approx(np.mean([0.0, 0.12, 0.09]))
  assert loss["null"]["mean"] == pytest.approx(0.2 / 4)
  assert row["t0_found"] == 2 and row["reached_target"] is True
  assert row["mu_l"]["at_t0"] == pytest.approx({"mean": 0.3, "lo": 0.3, "hi": 0.3, "std": 0.0,
                                                "n": 2}, nan_ok=True)
  ch = row["mu_l"]["change"]
  assert ch["n"] == 2 and ch["mean"] == pytest.approx(0.04)
  assert row["retained"] is True  # the CI of {+0.10, −0.02} reaches above 0
  # peak at index 4 (0.40) for seeds 1-2, and the end (0.40) ties it for seed 0
  assert row["mu_l_peak"]["mean"] == pytest.approx(0.40)
  assert row["mu_l_end_minus_peak"]["mean"] == pytest.approx(np.mean([0.0, -0.12, -0.09]))
  assert row["mu_l_end_over_i_ly_vs_null"]["value"]["mean"] == pytest.approx(
      np.mean([0.40, 0.28, 0.31]) / 0.5)
  assert row["mu_l_end_over_i_ly_vs_null"]["null"]["mean"] == pytest.approx(0.1 / 0.5)
  lost = base.copy()
  lost[:, -1] = [0.20, 0.21, 0.22]  # every seed ends ~0.1 below its T_0 value
  res = _fake_results(steps, {"linear": lost, "f_t0": lost}, i_fy, {"linear": 0.9, "f_t0": 0.9},
                      t0=np.array([2, 2, 2]), train_acc=np.full((3, 10), 0.9))
  row = retention.noise_row(res, 0.2, target=0.99)
  assert row["retained"] is False and row["reached_target"] is False
  assert row["mu_l"]["change"]["hi"] < 0
  assert "mu_l_end_over_i_ly_vs_null" not in row  # no null draws in this run


# ----------------------------------------------------------------------------- real MNIST
@pytest.mark.shared_data("mnist")
def test_linear_phase_mnist_quick(tmp_path):
  c = _quick(linear_phase, "mnist_mlp,quick")
  assert c.dataset.data_dir == common.offline_data_dir("mnist")
  s = linear_phase.run(c, str(tmp_path))
  assert s["dataset"] == "mnist" and s["acc_l"]["mean"] > 0.75  # linear on pixels learns
  assert s["test_acc_end"]["mean"] > 0.75
  _check_figures(linear_phase, tmp_path, s)


@pytest.mark.shared_data("mnist")  # without it the task would download MNIST
def test_linear_phase_on_all_ten_mnist_classes_quick(tmp_path):
  """K = 10 (L = softmax regression): the headline at T_0 recomputed from the stored
  predictions with pyitlib (an independent plug-in implementation)."""
  from pyitlib import discrete_random_variable as drv
  s = linear_phase.run(_quick(linear_phase, "mnist10_mlp,quick"), str(tmp_path))
  a = analysis.load(tmp_path).arrays
  assert int(a["num_classes"]) == 10 and set(np.unique(a["y_test"])) == set(range(10))
  assert s["t0_found"] >= 1 and 1.0 < s["i_ly"]["mean"] <= np.log2(10)
  ratios = []
  for i in np.flatnonzero(a["t0_index"] >= 0):
    f, l, y = a["predictions"][i, a["t0_index"][i]], a["ref/linear/predictions"][i], a["y_test"]
    i_fy = drv.information_mutual(f, y, base=2)
    ratios.append((i_fy - drv.information_mutual_conditional(f, y, l, base=2)) / i_fy)
  assert s["mu_over_i_at_t0"]["mean"] == pytest.approx(np.mean(ratios), abs=1e-5)
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
