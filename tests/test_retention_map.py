"""End to end: experiments.retention_map on its quick config (4 synthetic cells, ~20 s on CPU).

The cell numbers in summary.csv are checked against an independent recomputation from each
cell's results.npz (plain numpy, a hard-coded t quantile), not against the code that wrote them.
"""

from __future__ import annotations

import csv
import functools
import math
import os

import numpy as np
import pytest
from etils import epath

from experiments import retention_map
from sgd_phases import io_lib, mutual_info, results, train_lib

MU_KEYS = ("mu_l_peak", "mu_l_t0", "mu_l_end", "mu_l_end_over_i_ly", "mu_f_t0_end",
           "mu_l_loss_from_peak")
T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (3 seeds)


def _float(row: dict[str, str], key: str) -> float:
  return float(row[key])


def _csv(path: epath.Path) -> list[dict[str, str]]:
  with open(path) as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def quick_map(tmp_path_factory):
  workdir = epath.Path(tmp_path_factory.mktemp("retention_map"))
  config = retention_map.get_config("quick")
  config.soft.enabled = False  # the map reports no soft measure: one program less per cell
  return workdir, config, retention_map.run(config, str(workdir))


def test_outputs_one_row_per_cell_with_nulls(quick_map):
  workdir, config, s = quick_map
  assert config.task == "sinusoid_hd" and config.num_seeds >= 3
  rows = _csv(workdir / "summary.csv")
  assert len(rows) == 4 and [r["status"] for r in rows] == ["done"] * 4
  assert {(r["optimizer.learning_rate"], r["dataset.label_noise"]) for r in rows} == {
      ("0.1", "0.0"), ("0.1", "0.2"), ("0.3", "0.0"), ("0.3", "0.2")}
  for r in rows:
    for m in MU_KEYS:  # each μ with its null beside it
      for col in ("value.mean", "value.lo", "value.hi", "null.mean", "null.lo", "null.hi",
                  "p_value", "excess.mean"):
        assert f"{m}.{col}" in r, (m, col)
    for m in ("mu_l_peak", "mu_l_end", "mu_l_end_over_i_ly"):
      assert math.isfinite(float(r[f"{m}.null.mean"])) and 0 < float(r[f"{m}.p_value"]) <= 1
    for col in ("mu_l_peak_step.mean", "mu_l_loss_from_peak.value.lo", "train_acc_clean_end.mean",
                "test_acc_end.hi", "interp_step.mean", "interpolates"):
      assert col in r, col
  saved = io_lib.read_json(workdir / "summary.json")
  assert saved["experiment"] == retention_map.NAME and saved["all_done"] is True
  assert saved["fields"] == ["optimizer.learning_rate", "dataset.label_noise"]
  assert len(saved["table"]) == len(saved["rows"]) == 4
  assert saved["nested_points"] == 4  # the small MLP: one nested (cell × seed) program on CPU
  for t in saved["table"]:  # compact rows: [mean, lo, hi] and the null beside each μ
    assert len(t["mu_l_end"]) == 3 and math.isfinite(t["mu_l_end.null"])
  assert {t["p"] for t in saved["table"]} == {0.0, 0.2}
  pngs = [epath.Path(p) for p in s["figures"]]
  assert len(pngs) == len(retention_map.HEATMAPS) + 1
  assert all(p.is_file() and os.path.getsize(p) > 5000 for p in pngs)
  cell = io_lib.read_json(workdir / rows[0]["point"] / "summary.json")
  assert cell["cell"] is True and cell["experiment"] == retention_map.NAME
  assert (workdir / rows[0]["point"] / "figures" / "retention_map_cell.png").is_file()


def test_cell_numbers_match_results_npz(quick_map):
  workdir, config, _ = quick_map
  for r in _csv(workdir / "summary.csv"):
    cell = workdir / r["point"]
    a = results.load(cell).arrays
    cfg = io_lib.read_json(cell / io_lib.CONFIG_FILE)
    assert cfg["dataset"]["label_noise"] == float(r["dataset.label_noise"])
    assert cfg["optimizer"]["learning_rate"] == float(r["optimizer.learning_rate"])
    assert "noise_rates" not in cfg and "map_values" not in cfg  # map-only fields dropped
    mu, i_ly, null = a["mi/linear/mu"], a["mi/linear/i_ly"], a["null/linear/mu"]
    peak_at = np.argmax(mu, axis=1)
    peak, end = mu.max(axis=1), mu[:, -1]
    loss = peak - end
    assert (loss >= 0).all()
    get = functools.partial(_float, r)
    assert get("mu_l_peak.value.mean") == pytest.approx(peak.mean(), abs=1e-6)
    assert get("mu_l_peak_step.mean") == pytest.approx(a["steps"][peak_at].mean())
    assert get("mu_l_end.value.mean") == pytest.approx(end.mean(), abs=1e-6)
    half = T_975_DF2 * loss.std(ddof=1) / math.sqrt(len(loss))
    assert get("mu_l_loss_from_peak.value.mean") == pytest.approx(loss.mean(), abs=1e-6)
    assert get("mu_l_loss_from_peak.value.hi") == pytest.approx(loss.mean() + half, abs=1e-6)
    # the loss's null: per draw, its own maximum over the evaluations minus its own end value
    loss_null = null.max(axis=2) - null[:, :, -1]
    assert get("mu_l_loss_from_peak.null.mean") == pytest.approx(loss_null.mean(), abs=1e-6)
    assert get("mu_l_loss_from_peak.excess.mean") == pytest.approx(
        np.mean(loss - loss_null.mean(axis=0)), abs=1e-6)
    assert get("mu_l_end_over_i_ly.value.mean") == pytest.approx(
        np.mean(end / i_ly[:, -1]), abs=1e-6)
    assert get("mu_l_end.null.mean") == pytest.approx(null[:, :, -1].mean(), abs=1e-6)
    # the peak's null is the peak of every draw, not the draws at the observed argmax
    assert get("mu_l_peak.null.mean") == pytest.approx(null.max(axis=2).mean(), abs=1e-6)
    at_argmax = np.take_along_axis(null, np.broadcast_to(peak_at[None, :, None],
                                                         null.shape[:2] + (1,)), -1)[..., 0]
    assert get("mu_l_peak.null.mean") > at_argmax.mean()
    assert get("mu_l_end.excess.mean") == pytest.approx(
        np.mean(end - null[:, :, -1].mean(axis=0)), abs=1e-6)
    for key, arr in (("train_acc_end", "train_acc"), ("train_acc_clean_end", "train_acc_clean"),
                     ("test_acc_end", "test_acc")):
      assert get(f"{key}.mean") == pytest.approx(a[arr][:, -1].mean(), abs=1e-6)
    noisy = a["train_acc"]
    assert (r["interpolates"] == "True") == bool(noisy[:, -1].min() >= config.target_train_acc)
    first = [a["steps"][np.argmax(row >= 0.99)] for row in noisy if (row >= 0.99).any()]
    if first:
      assert get("interp_step.mean") == pytest.approx(np.mean(first))
    if float(r["dataset.label_noise"]) > 0:  # labels were flipped: clean and noisy differ
      assert not np.allclose(a["train_acc"][:, -1], a["train_acc_clean"][:, -1])


def test_rerun_trains_nothing_and_redraws(quick_map, monkeypatch):
  workdir, config, s = quick_map

  def no_training(*args, **kwargs):
    raise AssertionError("a finished cell was trained again")

  monkeypatch.setattr(train_lib, "train", no_training)
  for p in s["figures"]:
    epath.Path(p).unlink()
  again = retention_map.run(config, str(workdir))
  assert again["table"] == s["table"] and again["all_done"]
  assert all(epath.Path(p).is_file() for p in again["figures"])


def test_make_figures_redraws_the_map_and_its_cells(quick_map):
  from experiments import make_figures
  workdir, _, s = quick_map
  for p in s["figures"]:
    epath.Path(p).unlink()
  pngs = make_figures.make_all(workdir)
  assert sorted(s["figures"]) == sorted(p for p in pngs if "/figures/retention_map_" in p
                                        and "_cell" not in p)
  cells = [p for p in pngs if p.endswith("retention_map_cell.png")]
  assert len(cells) == 4 and all(os.path.getsize(p) > 5000 for p in pngs)


def test_heatmaps_hatch_non_interpolating_cells(quick_map):
  workdir = quick_map[0]
  summary = io_lib.read_json(workdir / "summary.json")
  summary["rows"][1]["interpolates"] = False
  summary["rows"][1]["interp_seeds"] = 1
  figs = retention_map.heatmaps(summary)
  assert list(figs) == [k for k, *_ in retention_map.HEATMAPS]
  hatched = [p for p in figs["mu_l_end.value"].axes[0].patches if p.get_hatch()]
  assert len(hatched) == 1
  texts = [t.get_text() for t in figs["interp_step"].axes[0].texts]
  assert sum("1/3 seeds" in t for t in texts) == 1
  end = [t.get_text() for t in figs["mu_l_end.value"].axes[0].texts]
  assert all("null" in t for t in end) and len(end) == 4


def test_bad_configs_fail_before_training(tmp_path):
  c = retention_map.get_config("quick")
  c.noise_rates = [0.7]
  with pytest.raises(ValueError, match=r"^config\.noise_rates\b"):
    retention_map.run(c, str(tmp_path))
  c = retention_map.get_config("quick")
  c.map_field = "label_noise"
  with pytest.raises(ValueError, match=r"^config\.map_field\b"):
    retention_map.run(c, str(tmp_path))


def test_cell_summary_on_hand_built_curves():
  steps = np.array([0, 10, 100, 1000])
  mu = np.array([[0.0, 0.3, 0.4, 0.35], [0.0, 0.2, 0.3, 0.3], [0.0, 0.1, 0.2, 0.25]])
  s, e = mu.shape
  arrays = {"steps": steps, "reference_names": np.array(["linear", "f_t0"]),
            "seed_ids": np.arange(s), "t0_index": np.array([1, 2, -1]),
            "train_acc": np.array([[0.5, 0.9, 0.99, 1.0], [0.5, 0.8, 0.95, 0.995],
                                   [0.5, 0.6, 0.7, 0.9]]),
            "train_acc_clean": np.full((s, e), 0.8), "test_acc": np.full((s, e), 0.9)}
  arrays["t0_step"] = np.where(arrays["t0_index"] >= 0, steps[arrays["t0_index"]], -1)
  for name in ("linear", "f_t0"):
    for f in mutual_info.InfoMeasures._fields:
      arrays[f"mi/{name}/{f}"] = np.full((s, e), 0.5)
    arrays[f"mi/{name}/mu"] = mu
    arrays[f"ref/{name}/test_acc"] = np.full(s, 0.8)
    arrays[f"null/{name}/mu"] = np.full((10, s, e), 0.1)
  arrays["null/linear/mu"][3, 0, 2] = 0.6  # one draw peaks at 0.6: the peak's null counts it
  row = retention_map.cell_summary(results.Results(arrays), target=0.99)
  assert row["mu_l_peak"]["null"]["mean"] == pytest.approx(0.1 + 0.5 / 10 / 3)
  assert row["mu_l_loss_from_peak"]["value"]["mean"] == pytest.approx(np.mean([0.05, 0.0, 0.0]))
  # the loss's null: zero for flat draws, 0.6 − 0.1 for the one that peaks
  assert row["mu_l_loss_from_peak"]["null"]["mean"] == pytest.approx(0.5 / 10 / 3)
  assert row["mu_l_peak_step"]["mean"] == pytest.approx(np.mean([100, 100, 1000]))
  assert row["mu_l_t0"]["value"]["mean"] == pytest.approx(0.3)  # seeds 0, 1: mu[0, 1], mu[1, 2]
  assert row["mu_l_end_over_i_ly"]["value"]["mean"] == pytest.approx(0.9 / 3 / 0.5)
  assert row["mu_l_end"]["null"]["mean"] == pytest.approx(0.1)
  assert row["mu_l_end"]["excess"]["mean"] == pytest.approx(0.3 - 0.1)
  assert row["interp_step"]["mean"] == pytest.approx(np.mean([100, 1000]))
  assert row["interp_seeds"] == 2 and row["interpolates"] is False  # seed 2 ends at 0.9
  assert row["train_acc_end_min"] == pytest.approx(0.9)
