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


def test_sequence_throughput_quick(tmp_path):
  out = tmp_path / "st.json"
  sequence_throughput.main(["--quick", "--out", str(out)])
  data = _load(out)
  assert {"engine_vmap", "engine_map", "engine_auto", "jax_loop", "jax_fori"} == {
      r["variant"] for r in data["rows"]}
  for r in data["rows"]:
    assert _positive(r["sequences_per_s"]) and r["batch"] == 64
    assert r["sequences_per_s"] == pytest.approx(r["seeds"] * r["steps"] * 64 / r["median_s"])
    assert r["tokens_per_s"] == pytest.approx(r["sequences_per_s"] * r["positions"])
  auto = next(r for r in data["rows"] if r["variant"] == "engine_auto")
  assert auto["resolved"] == data["task"]["auto"] in ("vmap", "map")
  assert data["auto_check"][0]["auto"] == auto["resolved"]


def test_eval_overhead_quick(tmp_path):
  out = tmp_path / "eo.json"
  eval_overhead.main(["--quick", "--out", str(out)])
  data = _load(out)
  rows = {r["run"]: r for r in data["rows"]}
  assert rows["full"]["num_evaluations"] > rows["no_eval"]["num_evaluations"]
  assert rows["no_eval"]["num_evaluations"] <= 3  # step 0, (step 1,) the last step
  assert math.isfinite(rows["full"]["overhead"])


def test_soft_overhead_quick(tmp_path):
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
