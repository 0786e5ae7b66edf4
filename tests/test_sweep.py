"""Tests of sgd_phases.sweep and experiments/sweep.py: grid, flags, driver, nested vmap."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from etils import epath

from experiments import mi_vs_accuracy
from experiments import sweep as sweep_cli
from sgd_phases import config_lib, engine, io_lib, nested, sweep, train_lib

ROOT = Path(__file__).resolve().parents[1]


def _mi_config():
  c = mi_vs_accuracy.get_config("quick")
  c.num_random_draws, c.random_num_examples, c.curve_points = 2, 200, 21
  return c


def _read_csv(path: epath.Path) -> list[dict[str, str]]:
  return list(csv.DictReader(io.StringIO(epath.Path(path).read_text())))


# ----------------------------------------------------------------------- fields and flags
def test_resolve_field_rules():
  c = config_lib.base_config("ball2d_sinusoid", "mlp")
  c.references.linear = config_lib.reference_config("linear")
  assert sweep.resolve_field(c, "label_noise") == "dataset.label_noise"
  assert sweep.resolve_field(c, "learning_rate") == "optimizer.learning_rate"  # shallowest
  assert sweep.resolve_field(c, "references.linear.num_steps") == "references.linear.num_steps"
  assert sweep.resolve_field(c, "num_steps") == "num_steps"
  with pytest.raises(ValueError, match=r"\bno_such_field\b"):
    sweep.resolve_field(c, "no_such_field")
  c.references.other = config_lib.reference_config("linear")
  with pytest.raises(ValueError, match=r"\bambiguous\b"):
    sweep.resolve_field(c, "trained_on")  # references.linear.* and references.other.*


def test_convert_value_types():
  c = config_lib.base_config("ball2d_sinusoid", "mlp")
  assert sweep.convert_value(c, "num_steps", "300") == 300
  assert isinstance(sweep.convert_value(c, "optimizer.learning_rate", "1e-2"), float)
  assert sweep.convert_value(c, "optimizer.learning_rate", 1) == 1.0
  assert sweep.convert_value(c, "progress", "False") is False
  assert sweep.convert_value(c, "loss", "squared") == "squared"
  assert sweep.convert_value(c, "num_epochs", "2.5") == 2.5  # float placeholder
  for path, bad in [("num_steps", "0.5"), ("num_steps", True), ("progress", "maybe"),
                    ("optimizer.learning_rate", "fast"), ("loss", 3)]:
    with pytest.raises(ValueError, match=rf"\b{re.escape(path)}\b"):
      sweep.convert_value(c, path, bad)


def test_parse_argv_grid_and_names():
  grid, rest = sweep_cli.parse_sweep_argv(["--workdir=/x", "--sweep.label_noise=0,0.1",
                                       "--config.num_seeds=2", "--sweep.batch_size=16,32"])
  assert rest == ["--workdir=/x", "--config.num_seeds=2"]
  assert grid == {"label_noise": ["0", "0.1"], "batch_size": ["16", "32"]}
  with pytest.raises(ValueError, match=r"\bsweep\.label_noise\b"):
    sweep_cli.parse_sweep_argv(["--sweep.label_noise"])
  c = config_lib.base_config("ball2d_sinusoid", "mlp")
  points = sweep.make_grid(c, grid)
  assert points[1] == {"dataset.label_noise": 0.0, "batch_size": 32}
  assert [type(v) for v in points[3].values()] == [float, int] and len(points) == 4
  assert sweep.point_name(points[2]) == "dataset.label_noise=0.1,batch_size=16"
  assert sweep.point_name({"model": "a/b c"}) == "model=a_b_c"
  new = sweep.apply_overrides(c, points[3])
  assert new.batch_size == 32 and c.batch_size == 64  # the input is not modified
  with pytest.raises(ValueError, match=r"\bbogus\b"):
    sweep.make_grid(c, {"bogus": [1]})


def test_a_point_with_another_model_or_dataset_gets_its_defaults_as_on_the_command_line():
  """--sweep.model=...: the model's own options (not the file's mlp width/depth, which a
  linear model refuses), then the point's own model options; --sweep.dataset.name=...: that
  dataset's fields, the common ones (label_noise) kept. Both as cli.prepare_config does."""
  c = config_lib.base_config("ball2d_sinusoid", "mlp", width=8, depth=1)
  c.references.linear = config_lib.reference_config("linear", num_steps=10)
  c.dataset.label_noise = 0.2
  lin = sweep.apply_overrides(c, {"model": "linear"})
  assert lin.model == "linear" and dict(lin.model_kwargs) == {}
  config_lib.validate(lin)  # the mlp's options would be refused: config.model_kwargs
  with pytest.raises(ValueError, match=r"^config\.model_kwargs: depth"):
    config_lib.validate(_with(lin, "model_kwargs", {"depth": 1}))
  wide = sweep.apply_overrides(c, {"model_kwargs.width": 32, "model": "mlp"})  # same model
  assert dict(wide.model_kwargs) == {"width": 32, "depth": 1}
  cnn = sweep.apply_overrides(c, {"model_kwargs.channels": 4, "model": "paper_cnn"})
  assert dict(cnn.model_kwargs) == {"channels": 4}  # the switch first, then the option
  ds = sweep.apply_overrides(c, {"dataset.name": "sinusoid_hd"})
  fresh = config_lib.base_config("sinusoid_hd", "mlp")
  assert set(ds.dataset.keys()) == set(fresh.dataset.keys())
  assert ds.dataset.label_noise == 0.2 and ds.dataset.dim == fresh.dataset.dim
  assert c.model == "mlp" and c.dataset.name == "ball2d_sinusoid"  # the input is not modified


def _with(config, field, value):
  c = config.copy_and_resolve_references()
  c.unlock()
  c[field] = ml_collections.ConfigDict(value)
  return c


# ------------------------------------------------------------------------------ the driver
@pytest.fixture(params=["local", "gs"])
def sweep_root(request, tmp_path) -> epath.Path:
  """A local folder, or a gs:// folder on the local GCS emulator (tests/gcs_emulator.py)."""
  if request.param == "local":
    return epath.Path(tmp_path)
  return epath.Path(request.getfixturevalue("gcs_bucket")) / f"sweep-{id(tmp_path)}"


def test_sweep_end_to_end_skip_and_failure(sweep_root, monkeypatch):
  root = sweep_root
  grid = sweep.make_grid(_mi_config(), {"num_examples": [2000, 2001],
                                        "num_random_draws": [0, 2]})
  rows = sweep.run_sweep(mi_vs_accuracy, _mi_config(), grid, root, vectorize="auto")
  assert [r["status"] for r in rows] == ["done", "done", "failed", "failed"]  # 2001 is odd
  bad = root / sweep.point_name(grid[2]) / "error.txt"
  assert "num_examples must be even" in bad.read_text()
  assert "num_examples must be even" in rows[2]["error"]
  table = _read_csv(root / "summary.csv")
  assert [r["point"] for r in table] == [r["point"] for r in rows]
  assert float(table[0]["max_abs_error_bits"]) < 1e-3 and table[3]["status"] == "failed"
  saved = io_lib.read_json(root / "summary.json")
  assert saved["experiment"] == "sweep" and len(saved["rows"]) == 4
  assert saved["fields"] == ["num_examples", "num_random_draws"]
  assert "random_draws.num_draws" in saved["rows"][1]  # nested summary dicts flattened
  assert len((root / "sweep.png").read_bytes()) > 1000

  # Rerun: finished points are not run again, the failed ones are retried.
  calls = []

  def fake_run(config, workdir):
    calls.append(workdir)
    raise RuntimeError("still broken")

  monkeypatch.setattr(mi_vs_accuracy, "run", fake_run)
  again = sweep.run_sweep(mi_vs_accuracy, _mi_config(), grid, root)
  assert sorted(epath.Path(w).name for w in calls) == sorted(r["point"] for r in rows[2:])
  assert [r["status"] for r in again] == ["done", "done", "failed", "failed"]
  assert again[0] == rows[0] and "still broken" in again[3]["error"]


def test_rerun_with_a_changed_field_never_returns_the_old_rows(tmp_path, monkeypatch):
  """A point's summary.json is reused only when the config that wrote it is this point's."""
  root = epath.Path(tmp_path / "sw")
  grid = sweep.make_grid(_mi_config(), {"num_examples": [2000]})
  first = _mi_config()
  first.accuracies = [0.6, 0.9]
  sweep.run_sweep(mi_vs_accuracy, first, grid, root)
  point = root / sweep.point_name(grid[0]) / "summary.json"
  assert [r["accuracy"] for r in io_lib.read_json(point)["table"]] == [0.6, 0.9]
  calls = []
  orig = mi_vs_accuracy.run
  monkeypatch.setattr(mi_vs_accuracy, "run", lambda c, w: calls.append(w) or orig(c, w))
  same = _mi_config()  # the same config again: skipped
  same.accuracies = [0.6, 0.9]
  sweep.run_sweep(mi_vs_accuracy, same, grid, root)
  assert calls == []
  # other accuracies: the point is run again and its row is the new one
  changed = _mi_config()
  changed.accuracies = [0.7, 0.95]
  rows = sweep.run_sweep(mi_vs_accuracy, changed, grid, root)
  assert len(calls) == 1 and rows[0]["status"] == "done"
  saved = io_lib.read_json(point)
  assert [r["accuracy"] for r in saved["table"]] == [0.7, 0.95]
  assert saved["identity"]["config"]["accuracies"] == [0.7, 0.95]
  # a summary written before identities were recorded is not trusted either
  del saved["identity"]
  io_lib.write_json(point, saved)
  sweep.run_sweep(mi_vs_accuracy, changed, grid, root)
  assert len(calls) == 2


def test_flatten_and_figure_with_two_fields(tmp_path):
  flat = sweep.flatten_summary({"a": {"mean": 1.0, "lo": 0.5, "hi": 1.5, "std": 1, "n": 3},
                                "b": {"c": 2, "d": [1, 2]}, "e": "x", "figures": ["p.png"]})
  assert flat == {"a.mean": 1.0, "a.lo": 0.5, "a.hi": 1.5, "b.c": 2, "e": "x"}
  # what produced a summary is not a column
  assert sweep.flatten_summary({"identity": {"config": {"x": 1}}, "command": "python -m x",
                                "e": 1}) == {"e": 1}
  rows = [{"lr": lr, "p": p, "status": "done", "mu_over_i_at_t0.mean": lr + p,
           "mu_over_i_at_t0.lo": lr, "mu_over_i_at_t0.hi": lr + 2 * p}
          for p in (0.0, 0.2) for lr in (0.01, 0.1, 1.0)]
  assert sweep.pick_metric(rows, ["lr", "p"]) == "mu_over_i_at_t0"
  fig = sweep.sweep_figure(rows, ["lr", "p"], "mu_over_i_at_t0")
  ax = fig.axes[0]
  assert len(ax.containers) == 2 and ax.get_xscale() == "log"
  assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["p=0.0", "p=0.2"]


def test_cli_subprocess(tmp_path):
  """The command runs every point; a point that fails (its folder holds another command's run)
  does not stop the others, and the command then exits with status 1 naming how many failed."""
  for draws in (0, 2):  # the num_examples=2002 points' folders are taken: refused when run
    taken = tmp_path / f"num_random_draws={draws},num_examples=2002"
    taken.mkdir()
    (taken / "owner.json").write_text('{"command": "score"}')
  cmd = [sys.executable, "-m", "experiments.sweep", f"--workdir={tmp_path}",
         "--config=experiments/mi_vs_accuracy.py:quick", "--config.curve_points=11",
         "--sweep.num_random_draws=0,2", "--sweep.num_examples=2000,2002"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 1, out.stderr[-2000:]
  assert "sweep: 2 of 4 points failed" in out.stderr and "2 done, 2 failed of 4" in out.stdout
  rows = _read_csv(tmp_path / "summary.csv")
  assert [r["num_random_draws"] for r in rows] == ["0", "0", "2", "2"]
  assert [r["status"] for r in rows] == ["done", "failed"] * 2
  assert "score" in rows[1]["error"]
  assert io_lib.read_json(tmp_path / "num_random_draws=2,num_examples=2000" / "summary.json"
                          )["random_draws"]


def test_cli_refuses_a_bad_point_before_anything_is_written(tmp_path):
  """An odd num_examples at one point: one error naming the point and the field, exit status
  1, and the sweep's folder is never created (no point ran)."""
  root = tmp_path / "sweep"
  cmd = [sys.executable, "-m", "experiments.sweep", f"--workdir={root}",
         "--config=experiments/mi_vs_accuracy.py:quick", "--config.curve_points=11",
         "--sweep.num_examples=2000,2001"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 1, out.stderr[-2000:]
  assert ("ValueError: sweep point num_examples=2001: config.num_examples must be even"
          in out.stderr)
  assert not root.exists()


def test_parse_shard_from_flag_and_schedulers():
  assert sweep.parse_shard("1/4", {}) == (1, 4)
  assert sweep.parse_shard(None, {}) is None
  assert sweep.parse_shard(None, {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}) == (2, 3)
  assert sweep.parse_shard(None, {"BATCH_TASK_INDEX": "0", "BATCH_TASK_COUNT": "5"}) == (0, 5)
  assert sweep.parse_shard(None, {"JOB_COMPLETION_INDEX": "3", "SWEEP_SHARD_COUNT": "4"}) == (3, 4)
  for bad in ("4/4", "1", "a/b", "-1/2"):
    with pytest.raises(ValueError, match=r"^shard="):
      sweep.parse_shard(bad, {})
  with pytest.raises(ValueError, match=r"SWEEP_SHARD_COUNT"):
    sweep.parse_shard(None, {"JOB_COMPLETION_INDEX": "0"})


def _slurm(task: int, count: int, lo: int, hi: int, step: int | None = None) -> dict[str, str]:
  """The variables Slurm sets for one task of an array (``--array=lo-hi[:step]``)."""
  env = {"SLURM_ARRAY_TASK_ID": task, "SLURM_ARRAY_TASK_COUNT": count,
         "SLURM_ARRAY_TASK_MIN": lo, "SLURM_ARRAY_TASK_MAX": hi}
  return {k: str(v) for k, v in {**env, **({"SLURM_ARRAY_TASK_STEP": step} if step else {})
                                  }.items()}


@pytest.mark.parametrize("ids, step", [(range(1, 9), None), (range(0, 8), None),
                                       (range(3, 24, 3), 3), (range(0, 16, 4), 4)])
def test_slurm_array_tasks_map_onto_shards_0_to_n_minus_1(ids, step):
  """``--array=1-8`` (and 0-7, 3-21:3, 0-12:4): every task gets its own shard of 0 .. n-1."""
  ids = list(ids)
  shards = [sweep.parse_shard(None, _slurm(t, len(ids), ids[0], ids[-1], step)) for t in ids]
  assert shards == [(i, len(ids)) for i in range(len(ids))]


def test_an_unevenly_spaced_slurm_array_is_refused_naming_the_flag():
  with pytest.raises(ValueError, match=r"task 3 of 3 \(ids 1\.\.7.*--shard=i/n"):
    sweep.parse_shard(None, _slurm(3, 3, 1, 7))  # --array=1,3,7


_SHARD_FLAGS = ["--config=experiments/mi_vs_accuracy.py:quick", "--config.curve_points=11",
                "--config.num_random_draws=2", "--config.random_num_examples=20000",
                "--sweep.num_examples=2000,4000,6000,8000,10000,12000"]


def _without_times(rows):
  return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]


@pytest.mark.parametrize("where", ["local", "gs"])
def test_two_concurrent_shards_one_killed_then_merged_equal_one_job(where, tmp_path, request):
  """Two shard jobs at once on one workdir (local disk or gs://), one SIGKILLed and rerun; the
  merged summary equals a one-job sweep's, row for row."""
  root = (str(tmp_path / "sharded") if where == "local"
          else request.getfixturevalue("gcs_bucket") + f"/shards-{os.getpid()}")
  run = lambda *extra: subprocess.Popen(  # noqa: E731
      [sys.executable, "-m", "experiments.sweep", f"--workdir={root}", *_SHARD_FLAGS, *extra],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  shard0, shard1 = run("--shard=0/2"), run("--shard=1/2")
  done1 = lambda: [n for n in ("num_examples=4000", "num_examples=8000", "num_examples=12000")  # noqa: E731
                   if (epath.Path(root) / n / "summary.json").exists()]
  deadline = time.time() + 300
  while not done1() and shard1.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  shard1.kill()  # SIGKILL, after its first point (or at its end, on a fast machine)
  shard1.wait()
  out0 = shard0.communicate(timeout=300)[0]
  assert shard0.returncode == 0, out0[-2000:]
  assert "3 done of 3 points" in out0
  assert not (epath.Path(root) / "summary.json").exists()  # shards never write the summary
  merged = subprocess.run([sys.executable, "-m", "experiments.sweep", f"--workdir={root}",
                           *_SHARD_FLAGS, "--merge"], cwd=ROOT, capture_output=True, text=True)
  assert merged.returncode == 0, merged.stderr[-2000:]
  partial = io_lib.read_json(epath.Path(root) / "summary.json")
  assert partial["missing"]  # the kill landed before shard 1 was done
  assert partial["missing"] == [n for n in ("num_examples=4000", "num_examples=8000",
                                            "num_examples=12000") if n not in done1()]
  rerun = run("--shard=1/2")
  out1 = rerun.communicate(timeout=300)[0]
  assert rerun.returncode == 0 and "3 done of 3 points" in out1, out1[-2000:]
  rows = sweep.merge_sweep(mi_vs_accuracy, _shard_config(), _shard_grid(), root)
  assert [r["status"] for r in rows] == ["done"] * 6
  one = sweep.run_sweep(mi_vs_accuracy, _shard_config(), _shard_grid(), tmp_path / "one")
  assert _without_times(rows) == _without_times(one)
  assert _without_times(_read_csv(epath.Path(root) / "summary.csv")) == _without_times(
      _read_csv(tmp_path / "one" / "summary.csv"))
  assert io_lib.read_json(epath.Path(root) / "summary.json")["missing"] == []


def _shard_config():
  c = mi_vs_accuracy.get_config("quick")
  c.curve_points, c.num_random_draws, c.random_num_examples = 11, 2, 20000
  return c


def _shard_grid():
  return sweep.make_grid(_shard_config(), {"num_examples": [2000, 4000, 6000, 8000, 10000,
                                                            12000]})


# ------------------------------------------------------------------------------ nested vmap
def _tiny(lr: float = 0.1, noise: float = 0.0) -> ml_collections.ConfigDict:
  c = config_lib.base_config("ball2d_sinusoid", "mlp", width=16, depth=1)
  c.dataset.n_train, c.dataset.n_test = 128, 256
  c.dataset.label_noise = noise
  c.optimizer.learning_rate = lr
  c.num_seeds, c.num_steps, c.batch_size = 2, 40, 16
  c.eval.num_points, c.eval.train_eval_size = 5, 128
  c.t0.reference = ""
  c.progress, c.checkpoint_every = False, 0
  return c


def test_nested_groups_rules():
  a, b, c = _tiny(0.1), _tiny(0.3, 0.2), _tiny(0.1)
  d = _tiny(0.1)
  d.batch_size = 32
  assert sweep.nested_groups([a, b, c, d]) == [[0, 1], [3]]  # c repeats a's F
  e, f = _tiny(0.1), _tiny(0.3)
  e.optimizer.schedule = f.optimizer.schedule = "cosine"
  assert sweep.nested_groups([e, f]) == [[0], [1]]  # a schedule: lr cannot be injected
  assert sweep.nested_groups([_mi_config()]) == []  # not a training config
  with pytest.raises(ValueError, match=r"\bconfigs\b"):
    sweep.train_f_nested([a, d])


class _Recorder:
  def __init__(self):
    self.calls = 0
    self.original = engine.run_seeds

  def __call__(self, *args, **kwargs):
    self.calls += 1
    return self.original(*args, **kwargs)


def test_auto_nests_follows_the_engine_strategy():
  small = config_lib.base_config("sinusoid_hd", "mlp", width=16, depth=1)
  small.dataset.n_train, small.dataset.n_test = 128, 64
  big = config_lib.base_config("sinusoid_hd", "mlp", width=512, depth=2)  # the MNIST MLP's size
  big.dataset.dim, big.dataset.n_train, big.dataset.n_test = 784, 128, 64
  assert sweep.auto_nests(small, "cpu")
  assert not sweep.auto_nests(big, "cpu")            # >= CPU_MAP_MIN_PARAMS: mapped on CPU
  assert sweep.auto_nests(big, "gpu")
  big.seed_strategy = "vmap"
  assert sweep.auto_nests(big, "cpu")


def test_nested_sweep_matches_sequential(tmp_path, monkeypatch):
  def run(config, workdir, trained_f=None):  # a minimal experiment: train, then summary.json
    res = train_lib.train(config, workdir, trained_f=trained_f)
    io_lib.write_json(Path(workdir) / "summary.json",
                      {"test_acc_end": float(res.arrays["test_acc"][:, -1].mean())})
    return {}

  module = types.SimpleNamespace(__name__="tiny_experiment", run=run)
  rec = _Recorder()
  monkeypatch.setattr(engine, "run_seeds", rec)
  grid = sweep.make_grid(_tiny(), {"learning_rate": [0.05, 0.5], "label_noise": [0.0, 0.3]})
  rows = sweep.run_sweep(module, _tiny(), grid, tmp_path, vectorize="on")
  assert [r["status"] for r in rows] == ["done"] * 4
  assert rec.calls == 1  # one program trained F at all four points
  assert not (tmp_path / "_nested").exists()
  seq = train_lib.train(sweep.apply_overrides(_tiny(), grid[3]), None).arrays  # plain engine
  nested = [io_lib.read_npz(tmp_path / sweep.point_name(g) / "results.npz") for g in grid]
  # Entry 3 has neither the first entry's learning rate nor its labels: equal predictions
  # mean the per-entry hyperparameters and labels were applied.
  assert np.mean(seq["predictions"] == nested[3]["predictions"]) > 0.99
  np.testing.assert_allclose(seq["train_acc"], nested[3]["train_acc"], atol=0.02)
  assert np.mean(nested[0]["predictions"] == nested[3]["predictions"]) < 0.99
  assert not np.allclose(nested[2]["train_acc"], nested[3]["train_acc"])  # same lr, other labels


def test_failed_nested_program_falls_back_to_points(tmp_path, monkeypatch):
  def broken(configs, ckpt_dir=None, first_ds=None):
    raise FloatingPointError("non-finite loss")

  seen = []

  def run(config, workdir, trained_f):  # records what train_lib.train would be handed
    seen.append(trained_f(config, "none"))
    if config.optimizer.learning_rate > 1:
      raise FloatingPointError("diverged")
    io_lib.write_json(Path(workdir) / "summary.json", {"x": 1.0})

  monkeypatch.setattr(nested, "train_f_nested", broken)
  module = types.SimpleNamespace(__name__="tiny_experiment", run=run)
  grid = sweep.make_grid(_tiny(), {"learning_rate": [0.1, 1e30]})
  rows = sweep.run_sweep(module, _tiny(), grid, tmp_path, vectorize="on")
  assert [r["status"] for r in rows] == ["done", "failed"] and seen == [None, None]
  with pytest.raises(ValueError, match=r"\bvectorize\b"):
    sweep.run_sweep(module, _tiny(), grid, tmp_path, vectorize="yes")
