"""sgd_phases.workdir: nothing reused from disk unless it came from the same config; a failed
attempt never blocks its corrected rerun; files written with the usual mode, durably."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest

import tiny_run
from sgd_phases import config_lib, io_lib, train_lib
from sgd_phases import workdir as workdir_lib


def _tiny(**overrides):
  c = tiny_run.config(60)
  c.num_seeds = 2
  c.eval.num_points = 6
  c.null.num_permutations = 0
  for k, v in overrides.items():
    c[k] = v
  return c


# ------------------------------------------------------------------------------- caches
def test_cached_npz_recomputes_another_configs_cache(tmp_path):
  path = tmp_path / "c.npz"
  calls = []

  def compute(v):
    return lambda: calls.append(v) or {"x": np.full(3, v)}

  a = workdir_lib.cached_npz(path, {"lr": 0.1}, compute(1), what="test")
  b = workdir_lib.cached_npz(path, {"lr": 0.1}, compute(2), what="test")  # reused
  assert calls == [1] and (a["x"] == 1).all() and (b["x"] == 1).all()
  assert workdir_lib.IDENTITY_KEY not in b
  c = workdir_lib.cached_npz(path, {"lr": 0.2}, compute(3), what="test")  # another config
  assert calls == [1, 3] and (c["x"] == 3).all()
  stored = io_lib.read_npz(path)
  assert json.loads(str(stored[workdir_lib.IDENTITY_KEY])) == {"lr": 0.2}
  io_lib.write_npz(path, {"x": np.full(3, 9)})  # written before identities were recorded
  d = workdir_lib.cached_npz(path, {"lr": 0.2}, compute(4), what="test")
  assert calls == [1, 3, 4] and (d["x"] == 4).all()


def test_reference_cache_from_another_config_is_retrained(tmp_path):
  """A references/<name>.npz of another run put into this workdir is not paired with this F:
  the reference is retrained and equals the one a clean run trains."""
  a_cfg, b_cfg = _tiny(), _tiny()
  b_cfg.references.linear.optimizer.learning_rate = 0.5
  a = train_lib.train(a_cfg, tmp_path / "a")
  train_lib.train(b_cfg, tmp_path / "b")
  foreign = tmp_path / "b" / "references" / "linear.npz"
  mine = tmp_path / "a" / "references" / "linear.npz"
  assert not np.array_equal(io_lib.read_npz(foreign)["predictions"],
                            io_lib.read_npz(mine)["predictions"])
  shutil.copy(foreign, mine)
  (tmp_path / "a" / "results.npz").unlink()  # an unfinished run: F resumes, L is looked up
  again = train_lib.train(a_cfg, tmp_path / "a")
  np.testing.assert_array_equal(again.reference("linear"), a.reference("linear"))
  np.testing.assert_array_equal(again.measures("linear")["mu"], a.measures("linear")["mu"])


# ------------------------------------------------------------------- failed attempts
def test_diverged_run_never_blocks_its_corrected_rerun(tmp_path):
  wd = tmp_path / "wd"
  bad = _tiny(checkpoint_every=1)
  bad.optimizer.learning_rate = 1e30
  with pytest.raises(FloatingPointError, match=r"last good checkpoint is evaluation \d+ "):
    train_lib.train(bad, wd)  # (it used to say "evaluation None")
  assert (wd / workdir_lib.FAILED_FILE).exists() and (wd / "checkpoints").exists()
  good = _tiny(checkpoint_every=1)
  res = train_lib.train(good, wd)  # same workdir, corrected learning rate: runs
  assert np.isfinite(res.arrays["train_loss"]).all()
  assert io_lib.read_json(wd / "config.json")["optimizer"]["learning_rate"] == 0.1
  assert not (wd / workdir_lib.FAILED_FILE).exists()
  fresh = train_lib.train(good, tmp_path / "fresh")
  np.testing.assert_array_equal(res.arrays["predictions"], fresh.arrays["predictions"])


def test_untrained_step0_checkpoint_is_no_progress(tmp_path):
  """Checkpoints holding only evaluation 0 (nothing trained yet) block no other config."""
  wd = tmp_path / "wd"
  c = _tiny(checkpoint_every=1)
  c.optimizer.learning_rate = 1e30
  with pytest.raises(FloatingPointError):
    train_lib.train(c, wd)
  # as if the process had died right after the checkpoint of step 0: only evaluation 0 left
  (wd / workdir_lib.FAILED_FILE).unlink()
  assert workdir_lib.progress(wd) == ["checkpoints"]
  for chunk in (wd / "checkpoints").iterdir():
    for step in chunk.iterdir():
      if step.name.isdigit() and int(step.name) > 0:
        shutil.rmtree(step)
  assert workdir_lib.progress(wd) == []
  other = _tiny(num_seeds=3)
  assert train_lib.train(other, wd).arrays["predictions"].shape[0] == 3
  assert workdir_lib.progress(wd)  # now there is real progress: another config is refused
  with pytest.raises(ValueError, match=r"num_seeds: 3 -> 2"):
    train_lib.train(_tiny(), wd)


def test_overwrite_removes_every_artifact_of_the_old_run(tmp_path):
  wd = tmp_path / "wd"
  train_lib.train(_tiny(), wd)
  for extra in ("linearized.npz", "summary.json", "figures/x.png"):
    io_lib.write_bytes(wd / extra, b"old")
  changed = _tiny(overwrite=True)
  changed.optimizer.learning_rate = 0.05
  train_lib.train(changed, wd)
  assert not (wd / "linearized.npz").exists() and not (wd / "summary.json").exists()
  assert not (wd / "figures").exists()
  assert io_lib.read_json(wd / "config.json")["optimizer"]["learning_rate"] == 0.05


# ------------------------------------------------------------------------------ files
def test_files_get_the_usual_mode_and_are_synced(tmp_path, monkeypatch):
  synced = []
  orig = os.fsync
  monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or orig(fd))
  old = os.umask(0o022)
  try:
    io_lib.write_json(tmp_path / "a.json", {"x": 1})
    io_lib.write_npz(tmp_path / "r.npz", {"x": np.zeros(2)})
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "r.npz").st_mode) == 0o644
    os.umask(0o077)
    io_lib.write_json(tmp_path / "b.json", {"x": 1})
    assert stat.S_IMODE(os.stat(tmp_path / "b.json").st_mode) == 0o600
  finally:
    os.umask(old)
  assert len(synced) == 6  # each file and its folder
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_run_identity_ignores_operational_fields():
  a, b = _tiny(), _tiny(progress=True, checkpoint_every=0, seeds_per_chunk=1)
  assert workdir_lib.run_identity(a) == workdir_lib.run_identity(b)
  assert workdir_lib.experiment_identity(a) == workdir_lib.experiment_identity(b)
  c = _tiny()
  c.references.linear.num_steps = 7
  assert "references.linear.num_steps: 100 -> 7" in workdir_lib.differences(
      workdir_lib.run_identity(a), workdir_lib.run_identity(c))
  assert config_lib.to_dict(a) != config_lib.to_dict(b)


def test_engine_fields_are_base_configs_and_experiments_keep_theirs_out():
  from experiments import common, kernel_regime, retention_map
  pinned = set(config_lib.PINNED_FIELDS)  # filled in by workdir.pin where they apply
  assert set(config_lib.base_config().keys()) == set(config_lib.ENGINE_FIELDS) - pinned
  for module, own in ((kernel_regime, {"widths", "min_bits"}),
                      (retention_map, {"noise_rates", "map_field", "map_values", "vectorize",
                                       "target_train_acc"})):
    c = module.get_config("quick")
    e = common.engine_config(c)
    assert own <= set(c.keys()) and not own & set(e.keys())
    assert set(e.keys()) == set(config_lib.ENGINE_FIELDS) - pinned | set(common.HEADER_FIELDS)


# ------------------------------------------------------------------ one identity mechanism
def test_every_identity_is_taken_from_the_pinned_config(tmp_path):
  """Run, F and experiment identities of a config as written (npz data: no fingerprint yet)
  equal those of the config as a run records it (pinned), so a sweep point compares equal to
  its finished run and F's key finds the nested program's share."""
  from sgd_phases import datasets, sweep
  rng = np.random.default_rng(0)
  for split, n in (("train", 40), ("test", 20)):
    np.savez(tmp_path / f"{split}.npz", x=rng.normal(size=(n, 3)).astype(np.float32),
             y=rng.integers(0, 2, n))
  c = _tiny()
  c.dataset = datasets.default_config("npz")
  c.dataset.data_dir = str(tmp_path)
  pinned = workdir_lib.pin(c)
  assert c.dataset.fingerprint is None  # pin works on a copy
  fp = datasets.pin(c.dataset.to_dict())["fingerprint"]
  assert pinned.dataset.fingerprint == fp is not None
  stored = json.loads(json.dumps(config_lib.to_dict(pinned)))  # as config.json holds it
  for kind in workdir_lib.IDENTITIES:
    ident = workdir_lib.identity(c, kind)
    assert ident == workdir_lib.identity(pinned, kind) == workdir_lib.identity(stored, kind)
    assert ident["dataset"]["fingerprint"] == fp
  assert sweep.f_key(c) == sweep.f_key(pinned)
  summary = tmp_path / "summary.json"
  summary.write_text(json.dumps({"identity": workdir_lib.summary_identity(pinned)}))
  assert workdir_lib.summary_differences(summary, c) == []
  np.savez(tmp_path / "test.npz", x=np.zeros((20, 3), np.float32), y=np.zeros(20, int))
  assert "dataset.fingerprint" in workdir_lib.summary_differences(summary, c)[0]


_NPZ_EXPERIMENT = '''
"""linear_phase's quick config on a folder of .npz files (for the sweep command)."""
from experiments import linear_phase
from experiments.linear_phase import make_figures, run  # noqa: F401
from sgd_phases import datasets


def get_config(arg=None):
  c = linear_phase.get_config("quick")
  c.dataset = datasets.default_config("npz")
  c.dataset.data_dir = DATA_DIR
  c.num_steps, c.references.linear.num_steps = 60, 60
  c.null.num_permutations, c.progress = 0, False
  return c
'''


def test_a_sharded_npz_sweep_merges_every_point_as_done(tmp_path):
  """Two shard jobs of the sweep command, then --merge: every point is done (the merge
  compares each point's config, pinned, with its summary's identity)."""
  import subprocess
  import sys
  from pathlib import Path
  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, 4)).astype(np.float32)
  y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(np.int64)
  (tmp_path / "data").mkdir()
  np.savez(tmp_path / "data" / "train.npz", x=x[:400], y=y[:400])
  np.savez(tmp_path / "data" / "test.npz", x=x[400:], y=y[400:])
  exp = tmp_path / "npz_phase.py"
  exp.write_text(_NPZ_EXPERIMENT.replace("DATA_DIR", repr(str(tmp_path / "data"))))
  root = Path(__file__).resolve().parents[1]
  args = [sys.executable, "-m", "experiments.sweep", f"--config={exp}",
          f"--workdir={tmp_path / 'sw'}", "--sweep.label_noise=0.0,0.2"]
  shards = [subprocess.Popen(args + [f"--shard={i}/2"], cwd=root, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in (0, 1)]
  for p in shards:
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0 and "1 done of 1 points" in out, out[-2000:]
  merged = subprocess.run(args + ["--merge"], cwd=root, capture_output=True, text=True,
                          check=False)
  assert merged.returncode == 0 and "2 done of 2 points" in merged.stdout, merged.stderr[-2000:]
  summary = json.loads((tmp_path / "sw" / "summary.json").read_text())
  assert summary["missing"] == [] and [r["status"] for r in summary["rows"]] == ["done"] * 2


# ------------------------------------------------------------------------- ownership
def _snapshot(root) -> dict[str, bytes]:
  """Every file under ``root`` (relative path -> bytes)."""
  return {os.path.relpath(p, root): open(p, "rb").read()
          for d, _, files in os.walk(root) for p in (os.path.join(d, f) for f in files)}


def test_score_into_a_training_workdir_is_refused_and_the_run_is_untouched(tmp_path, capsys):
  from sgd_phases import score
  wd = tmp_path / "wd"
  train_lib.train(_tiny(), wd)
  before = _snapshot(wd)
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 50)
  np.savez(tmp_path / "F.npz", predictions=rng.integers(0, 2, (3, 50)), labels=y)
  np.savez(tmp_path / "L.npz", predictions=y)
  argv = [f"--predictions={tmp_path / 'F.npz'}", f"--reference=linear={tmp_path / 'L.npz'}",
          "--num_permutations=2"]
  with pytest.raises(SystemExit):
    score.main(argv + [f"--workdir={wd}"])
  err = capsys.readouterr().err
  assert "holds a training run (train_lib.train) (found owner.json)" in err, err
  assert _snapshot(wd) == before  # byte for byte: results.npz and config.json untouched
  (wd / workdir_lib.OWNER_FILE).unlink()  # a run written before owners were recorded
  before = _snapshot(wd)
  with pytest.raises(ValueError, match=r"holds a training run .*\(found config\.json\)"):
    score.write(score.score_predictions(np.load(tmp_path / "F.npz")["predictions"], y,
                                        {"linear": y}, num_permutations=2), wd, 0.0)
  assert _snapshot(wd) == before
  score.main(argv + [f"--workdir={tmp_path / 'scored'}"])  # its own workdir: written, and
  score.main(argv + [f"--workdir={tmp_path / 'scored'}"])  # rewritten on a rerun
  with pytest.raises(ValueError, match=r"holds the output of python -m sgd_phases.score"):
    train_lib.train(_tiny(), tmp_path / "scored")


def test_an_experiment_never_writes_into_another_ones_workdir(tmp_path):
  """mi_vs_accuracy (no training: fast) owns W; linear_phase, a sweep and a training run are
  refused there, naming it, with W unchanged; mi_vs_accuracy itself reruns there."""
  from experiments import linear_phase, mi_vs_accuracy
  from sgd_phases import sweep
  c = mi_vs_accuracy.get_config("quick")
  c.num_random_draws, c.curve_points = 0, 11
  wd = tmp_path / "mi"
  mi_vs_accuracy.run(c, str(wd))
  before = _snapshot(wd)
  owned = r"holds a run of experiment 'mi_vs_accuracy' \(found owner.json\)"
  lp = linear_phase.get_config("quick")
  with pytest.raises(ValueError, match=owned):
    linear_phase.run(lp, str(wd))
  with pytest.raises(ValueError, match=owned):
    sweep.run_sweep(linear_phase, lp, sweep.make_grid(lp, {"label_noise": [0.0]}), wd)
  with pytest.raises(ValueError, match=owned):
    train_lib.train(_tiny(), wd)
  assert _snapshot(wd) == before
  again = mi_vs_accuracy.run(c, str(wd))  # its own workdir: rerun as before
  assert again["identity"] == json.loads(before["summary.json"])["identity"]
  with pytest.raises(ValueError, match=r"holds a sweep of experiments.linear_phase"):
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "owner.json").write_text('{"command": "sweep:experiments.linear_phase"}')
    (tmp_path / "sw" / "label_noise=0.0").mkdir()
    mi_vs_accuracy.run(c, str(tmp_path / "sw"))
