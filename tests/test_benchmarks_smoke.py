"""Smoke tests of the benchmarks: each ``--quick`` mode runs and writes valid JSON (no timings
are asserted: the numbers depend on the machine and its load).

PyTorch (the ``bench`` extra) is optional: without it the torch variants are left out of the
runs and these tests check everything else, so they run in CI. The PyTorch twins' parameter
counts are checked by ``python -m benchmarks.torch_baselines --check`` where torch is installed
(and by ``train_throughput`` before it times them).
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from benchmarks import (common, eval_overhead, roofline, scaling, sequence_throughput,
                        soft_overhead, train_throughput)

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _load(path):
  data = json.loads(path.read_text())
  env = data["env"]
  for key in ("backend", "device_kind", "cpu_count", "jax", "flax", "torch", "date",
              "load_average"):
    assert key in env, key
  return data


def _positive(x):
  return isinstance(x, float) and math.isfinite(x) and x > 0


def test_train_throughput_quick(tmp_path):
  out = tmp_path / "tt.json"
  train_throughput.main(["--quick", "--out", str(out)])
  data = _load(out)
  variants = {r["variant"] for r in data["rows"]}
  assert {"engine_vmap", "engine_map", "engine_auto", "jax_loop"} <= variants
  assert ({"torch_loop", "torch_vmap"} <= variants) == HAVE_TORCH
  for r in data["rows"]:
    assert _positive(r["examples_per_s"]) and r["batch"] == 64
    assert r["examples_per_s"] == pytest.approx(r["seeds"] * r["steps"] * 64 / r["median_s"])
  auto = next(r for r in data["rows"] if r["variant"] == "engine_auto")
  assert auto["resolved"] in ("vmap", "map")


def test_sequence_throughput_quick(tmp_path, monkeypatch):
  """The experiment and the hand-written loop, each run in this process (not a fresh one)."""
  def in_process(variant, seeds, steps, quick):
    out = sequence_throughput.child(variant, seeds, steps, quick)
    return json.loads(json.dumps(out))  # what run_child reads back

  monkeypatch.setattr(sequence_throughput, "run_child", in_process)
  out = tmp_path / "st.json"
  sequence_throughput.main(["--quick", "--no-bare", "--one-lane", "--without-soft", "--out",
                            str(out)])
  data = _load(out)
  (cell,) = data["cells"]
  assert set(cell["runs"]) == {"experiment", "hand", "experiment_1lane",
                               "experiment_without_soft"}
  assert _positive(cell["one_lane_over_experiment_paired"])
  assert _positive(cell["hand_over_experiment_without_soft_paired"])
  rescore = {v: cell["runs"][v][0]["stages_s"]["rescore"]
             for v in ("experiment", "experiment_without_soft")}
  assert rescore["experiment_without_soft"] < 0.1 * rescore["experiment"]  # soft measures off
  assert sequence_throughput.cell_config(2, 3, True, lanes=1).seed_lanes == 1
  assert sequence_throughput.cell_config(2, 3, True).seed_lanes == 0
  for v in ("experiment", "hand"):
    assert _positive(cell["median_wall_s"][v]) and cell["runs"][v][0]["peak_rss_mb"] > 0
  stages = cell["runs"]["experiment"][0]["stages_s"]
  assert {"train_f", "score", "null_mu", "rescore", "finish"} <= set(stages)
  assert 0 < stages["null_mu"] <= stages["score"] < cell["runs"]["experiment"][0]["wall_s"]
  prof = data["step_profile"]
  assert _positive(prof["ms_per_step"]["engine"]) and _positive(prof["ms_per_step"]["hand"])
  assert prof["cost_per_step"]["engine"]["flops"] > 0


def test_sequence_throughput_cell_summary(monkeypatch):
  """Rounds alternate the variants' order; the paired ratio is the median of the rounds'
  ratios (not the ratio of medians), the stage shares and the evaluations' share (training
  with 40 evaluations minus without, over the experiment's wall) are per round, then medians."""
  walls = {"experiment": [10.0, 20.0, 40.0], "hand": [12.0, 10.0, 60.0],
           "experiment_bare": [9.0, 9.0, 9.0]}
  order = []

  def fake(variant, seeds, steps, quick):
    r = len([v for v in order if v == variant])
    order.append(variant)
    w = walls[variant][r]
    return {"wall_s": w, "cpu_s": w / 2, "stages_s": {"train_f": w / 2, "score": 1.0,
                                                        "rescore": 0.5 * (variant != "hand")}}

  monkeypatch.setattr(sequence_throughput, "run_child", fake)
  cell = sequence_throughput.run_cell(2, 5, 3, False, ("experiment", "hand", "experiment_bare"),
                                      log=lambda _: None)
  assert order == ["experiment", "hand", "experiment_bare", "experiment_bare", "hand",
                   "experiment", "experiment", "hand", "experiment_bare"]
  assert cell["hand_over_experiment_paired"] == pytest.approx(1.2)  # of 1.2, 0.5, 1.5
  assert cell["median_wall_s"]["hand"] == 12.0
  share = cell["experiment_share_of_wall"]
  assert share["train_f"] == pytest.approx(0.5) and share["score"] == pytest.approx(0.05)
  # training 5, 10, 20 s against the bare runs' 4.5 s: (0.5/10, 5.5/20, 15.5/40)
  assert share["evaluations"] == pytest.approx(5.5 / 20)
  # hand / (experiment - rescore): 12/9.5, 10/19.5, 60/39.5
  assert cell["hand_over_experiment_minus_soft_paired"] == pytest.approx(12 / 9.5)


def test_sequence_throughput_times_stages_that_exist():
  """The stage functions the experiment's runs are timed by still exist where they are
  looked up (a renamed or moved stage would make the benchmark fail, not time nothing)."""
  from experiments import common as exp_common
  from sgd_phases import scoring, soft_scoring, train_lib
  for module, names in ((train_lib, sequence_throughput.STAGES), (exp_common, ("finish",)),
                        (scoring, ("null_mu",)), (soft_scoring, ("rescore",))):
    for name in names:
      assert callable(getattr(module, name)), (module.__name__, name)


def test_hand_written_loop_is_the_projects_model_and_scores_like_it():
  """The baseline's transformer computes the project's logits from the same parameters, its
  numpy μ equals the project's on the same predictions; it refuses an architecture it does
  not implement, naming the field."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from benchmarks import sequence_hand_loop
  from sgd_phases import datasets, models, scoring, sequence_references
  c = sequence_throughput.cell_config(2, 3, quick=True)
  c.null.num_permutations = 3
  ds = datasets.get_dataset(c.dataset)
  model = models.get_model("transformer", ds.num_classes, **c.model_kwargs)
  x = jnp.asarray(ds.x_test[:4])
  p = model.init(jax.random.key(1), x)["params"]
  mine = {"tok": p["tok_embed"]["embedding"], "pos": p["pos_embed"],
          "unembed": p["unembed"]["kernel"],
          "layers": [{w: p[f"attn_{i}"][name]["kernel"] for w, name in
                      zip("qkvo", ("query", "key", "value", "out"))}
                     for i in range(c.model_kwargs.num_layers)]}
  hand_params = sequence_hand_loop.init(c, jax.random.key(0))
  assert jax.tree.structure(mine) == jax.tree.structure(hand_params)
  np.testing.assert_allclose(sequence_hand_loop.logits(mine, x), model.apply({"params": p}, x),
                             rtol=1e-5, atol=1e-6)
  out = sequence_hand_loop.run(c)
  assert out["predictions"].shape == (2, len(out["steps"]), ds.y_test_flat.size)
  for name, ref in c.references.items():
    l = sequence_references.closed_form(ref.model, dict(ref.model_kwargs), ds).reshape(-1)
    mu = scoring.measures(out["predictions"], l, ds.y_test_flat, ds.num_classes)["mu"]
    np.testing.assert_allclose(out["mu"][name], mu, atol=1e-5)
    assert out["null"][name].shape == (3, 2, len(out["steps"]))
  c.model_kwargs.layer_norm = True
  with pytest.raises(ValueError, match=r"^config\.model_kwargs\.layer_norm"):
    sequence_hand_loop.check_config(c)


def test_eval_overhead_quick(tmp_path, monkeypatch):
  """Its runs without the null and the soft measures (fewer programs to compile: the
  benchmark's own code paths are the same)."""
  make = eval_overhead.make_config

  def smaller(*args, **kwargs):
    c = make(*args, **kwargs)
    c.null.num_permutations, c.soft.enabled = 0, False
    return c

  monkeypatch.setattr(eval_overhead, "make_config", smaller)
  out = tmp_path / "eo.json"
  eval_overhead.main(["--quick", "--out", str(out)])
  data = _load(out)
  rows = {r["run"]: r for r in data["rows"]}
  assert rows["full"]["num_evaluations"] > rows["no_eval"]["num_evaluations"]
  assert rows["no_eval"]["num_evaluations"] <= 3  # step 0, (step 1,) the last step
  assert math.isfinite(rows["full"]["overhead"])


def test_soft_overhead_quick(tmp_path, monkeypatch):
  """The run with the soft measures in its own process (the benchmark's ``--child``), the one
  without them in this process (one JAX start and one compilation of F fewer)."""
  spawn = soft_overhead._spawn

  def off_in_process(workload, seeds, quick, soft):
    if soft:
      return spawn(workload, seeds, quick, soft)
    return json.loads(json.dumps(soft_overhead.child(workload, seeds, quick, soft)))

  monkeypatch.setattr(soft_overhead, "_spawn", off_in_process)
  out = tmp_path / "so.json"
  soft_overhead.main(["--quick", "--workloads", "linear_phase", "--out", str(out)])
  row = _load(out)["rows"][0]
  assert row["workload"] == "linear_phase" and row["buffer_mb"] > 0
  assert row["runs"]["off"][0]["soft_s"] == 0 < row["runs"]["on"][0]["soft_s"]
  assert _positive(row["cpu_on_s"]) and math.isfinite(row["cpu_overhead"])


def test_roofline_quick(tmp_path):
  out = tmp_path / "rl.json"
  roofline.main(["--quick", "--out", str(out)])
  data = _load(out)
  assert _positive(data["peak_gflops"]["jnp.dot"])
  row = data["rows"][0]
  assert _positive(row["achieved_gflops_analytic"])
  # XLA counts at least the matmuls (plus bias, activations, the update).
  assert row["xla_flops_per_seed_step"] >= 0.9 * row["analytic_flops_per_seed_step"]


def test_analytic_flops_counts_three_matmuls_per_layer_but_one_less_for_the_input():
  layers = roofline.mlp_layer_dims(784, 512, 2, 2)
  assert layers == [(784, 512), (512, 512), (512, 2)]
  macs = 784 * 512 + 512 * 512 + 512 * 2
  assert roofline.analytic_flops(64, layers) == 2 * 64 * (3 * macs - 784 * 512)


def test_scaling_quick(tmp_path):
  out = tmp_path / "sc.json"
  scaling.main(["--quick", "--plot", "--out", str(out)])
  data = _load(out)
  assert [r["seeds"] for r in data["seeds"]] == [1, 2]
  assert [r["n"] for r in data["sizes"]] == [1000, 10000]
  for name in ("scaling_seeds.png", "scaling_mi.png"):
    assert (tmp_path / name).stat().st_size > 1000


def test_interleaved_rejects_zero_rounds():
  with pytest.raises(ValueError, match=r"\brounds\b"):
    common.interleaved({"a": lambda: None}, rounds=0)


def test_auto_strategy_rule_measured_by_train_throughput():
  from sgd_phases import engine
  big = engine.CPU_MAP_MIN_PARAMS
  assert engine.resolve_strategy("auto", "mlp", "cpu", num_params=665_602) == "map"
  assert engine.resolve_strategy("auto", "mlp", "cpu", num_params=big - 1) == "vmap"
  assert engine.resolve_strategy("auto", "linear", "cpu", num_params=1570) == "vmap"
  assert engine.resolve_strategy("auto", "paper_cnn", "cpu", num_params=10) == "map"
  assert engine.resolve_strategy("auto", "mlp", "gpu", num_params=big * 10) == "vmap"
  assert engine.resolve_strategy("vmap", "mlp", "cpu", num_params=big * 10) == "vmap"
