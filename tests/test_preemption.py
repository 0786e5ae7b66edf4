"""SIGKILL a training process, restart it: the results equal an uninterrupted run's, on a local
workdir and on a gs:// workdir (local GCS emulator, tests/gcs_emulator.py)."""

import logging
import re
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from etils import epath

from sgd_phases import io_lib, train_lib

sys.path.insert(0, str(Path(__file__).parent))
import gcs_emulator  # noqa: E402
import tiny_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = 1500


def _committed(workdir: str) -> list[int]:
  """Evaluation indices of the finished checkpoints (Orbax: a renamed step folder locally, a
  ``commit_success.txt`` object on GCS)."""
  if workdir.startswith("gs://"):
    files = gcs_emulator.list_objects(workdir + "/checkpoints")
    return sorted(int(f.split("/")[1]) for f in files
                  if f.count("/") == 2 and f.endswith("/commit_success.txt"))
  ckpt = Path(workdir) / "checkpoints"
  return [] if not ckpt.exists() else [int(p.name) for p in ckpt.glob("chunk_*/*")
                                       if p.is_dir() and p.name.isdigit()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  wd = tmp_path_factory.mktemp("full")
  return train_lib.train(tiny_run.config(STEPS), wd)


@pytest.fixture(params=["local", "gs"])
def workdir(request, tmp_path):
  if request.param == "local":
    return str(tmp_path / "killed")
  return request.getfixturevalue("gcs_bucket") + f"/killed-{uuid.uuid4().hex[:12]}"  # per test


def test_sigkill_inside_a_save_then_resume(workdir, uninterrupted, caplog, monkeypatch,
                                          tmp_path):
  """The process is killed inside a real Orbax save (the third checkpoint: its data written,
  not yet committed; tiny_run.stall_inside_a_save), then the run is resumed."""
  marker = tmp_path / "stalled"
  env = dict(os.environ, PYTHONPATH=str(ROOT), TINY_RUN_STALL_SAVE=f"3:{marker}")
  proc = subprocess.Popen([sys.executable, "tests/tiny_run.py", workdir, str(STEPS)], cwd=ROOT,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 300
  while not marker.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed: " + (
      proc.stderr.read().decode()[-2000:])
  time.sleep(0.2)  # the marker's content is flushed
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  wd = epath.Path(workdir)
  assert not (wd / "results.npz").exists()
  # the kill left the third save uncommitted: locally Orbax's temporary folder (with data in
  # it), on GCS a step prefix without commit_success.txt
  partial = epath.Path(marker.read_text())
  assert partial.exists() and any(True for _ in partial.iterdir())
  assert len(_committed(workdir)) == 2
  if io_lib.is_local(wd):
    assert ".orbax-checkpoint-tmp" in partial.name
  else:
    assert not (partial / "commit_success.txt").exists()
  # the last checkpoint the killed run committed (every chunk of this config is one chunk)
  steps = uninterrupted.arrays["steps"]
  committed = max(_committed(workdir))
  trained = tiny_run.count_trained_steps(monkeypatch, steps)
  with caplog.at_level(logging.INFO):
    resumed = train_lib.train(tiny_run.config(STEPS), workdir)
  assert "partial checkpoint" in caplog.text
  resumed_at = [r.getMessage() for r in caplog.records if "resumed from checkpoint" in
                r.getMessage()]
  assert resumed_at == [f"F seeds 0-2: resumed from checkpoint at step {steps[committed]}"]
  # the restart trained only the steps after that checkpoint, not the run from scratch
  assert sum(trained) == STEPS - int(steps[committed]) < STEPS
  for k, v in uninterrupted.arrays.items():  # bit-identical to the uninterrupted local run
    np.testing.assert_array_equal(v, resumed.arrays[k], err_msg=k)
  np.testing.assert_array_equal(io_lib.read_npz(wd / "results.npz")["predictions"],
                                uninterrupted.arrays["predictions"])
  # a finished run is reloaded, not retrained
  trained.clear()
  again = train_lib.train(tiny_run.config(STEPS), workdir)
  assert trained == []
  np.testing.assert_array_equal(again.arrays["predictions"], uninterrupted.arrays["predictions"])


def test_sigterm_checkpoints_at_the_signal_and_resumes(workdir, uninterrupted, caplog,
                                                        monkeypatch):
  """SIGTERM (scancel, preemption): a checkpoint at the next evaluation, exit status 75, and
  the rerun resumes there and ends bit-identical to an uninterrupted run."""
  from sgd_phases import preemption
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  proc = subprocess.Popen([sys.executable, "tests/tiny_run.py", workdir, str(STEPS)], cwd=ROOT,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 300
  while len(_committed(workdir)) < 1 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)  # (one committed checkpoint: F is training; on gs:// commits lag)
  assert proc.poll() is None, "the run finished before the signal"
  before = max(_committed(workdir))
  sent = time.time()
  proc.send_signal(signal.SIGTERM)
  rc = proc.wait(timeout=120)
  err = proc.stderr.read().decode()
  assert rc == preemption.EXIT_CODE, err[-3000:]
  assert time.time() - sent < 60
  assert "preempted; checkpoint saved at step" in err
  steps = uninterrupted.arrays["steps"]
  at = max(_committed(workdir))
  assert at >= before and f"saved at step {steps[at]} (evaluation {at})" in err
  assert not (epath.Path(workdir) / "results.npz").exists()
  trained = tiny_run.count_trained_steps(monkeypatch, steps)
  with caplog.at_level(logging.INFO):
    resumed = train_lib.train(tiny_run.config(STEPS), workdir)
  assert f"resumed from checkpoint at step {steps[at]}" in caplog.text
  assert sum(trained) == STEPS - int(steps[at])
  for k, v in uninterrupted.arrays.items():
    np.testing.assert_array_equal(v, resumed.arrays[k], err_msg=k)
  # one TensorBoard event file, rewritten from the results: no duplicate curves
  events = [f.name for f in (epath.Path(workdir) / "tensorboard").iterdir()]
  assert len(events) == 1 and events[0].startswith("events.out.tfevents"), events


REF_STEPS = 20_000  # the reference's SGD steps: seconds, so that the signal lands inside it
# what is under test is L's segments: F with few evaluations, no null, no soft measures (fewer
# programs to compile in each of the three runs)
REF_OVERRIDES = {"eval.num_points": 6, "null.num_permutations": 0, "soft.enabled": False}


def test_sigterm_while_a_reference_trains_stops_within_a_segment_and_resumes(tmp_path):
  """The sweep's command, one point whose reference L trains in REFERENCE_SEGMENTS checkpointed
  segments: SIGTERM while L trains stops it at the next segment (not after the whole of L)
  with exit status 75 and one line, no traceback. The same command resumes L there, and the
  point's results equal an uninterrupted run's whose L trained in one piece (no workdir)."""
  from sgd_phases import preemption
  root = tmp_path / "sw"
  cmd = [sys.executable, "-m", "experiments.sweep", f"--workdir={root}",
         "--config=tests/tiny_run.py:100", f"--config.references.linear.num_steps={REF_STEPS}",
         "--sweep.seed=0"] + [f"--config.{k}={v}" for k, v in REF_OVERRIDES.items()]
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  ref_ckpt = root / "seed=0" / "references" / "checkpoints" / "linear"
  committed = lambda: sorted(int(p.name) for p in ref_ckpt.glob("chunk_*/*")  # noqa: E731
                             if p.name.isdigit())
  deadline = time.time() + 300
  while max(committed(), default=0) < 2 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "L finished before the signal: " + proc.stderr.read()[-2000:]
  proc.send_signal(signal.SIGTERM)
  err = proc.communicate(timeout=120)[1]
  assert proc.returncode == preemption.EXIT_CODE, err[-3000:]
  assert "Traceback" not in err
  assert len([ln for ln in err.splitlines() if "rerun the same command to resume" in ln]) == 1
  stop = re.search(r"ref:linear seeds 0-2: preempted; checkpoint saved at step (\d+) "
                   r"\(evaluation (\d+)\)", err)
  assert stop and 2 <= int(stop.group(2)) < train_lib.REFERENCE_SEGMENTS, err[-3000:]
  assert not (root / "seed=0" / "results.npz").exists()
  again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert (f"ref:linear seeds 0-2: resumed from checkpoint at step {stop.group(1)}"
          in again.stderr)
  assert not ref_ckpt.exists()  # L is cached in references/linear.npz: its checkpoints went
  c = tiny_run.config(100)
  c.references.linear.num_steps = REF_STEPS
  c.update_from_flattened_dict(REF_OVERRIDES)
  whole = train_lib.train(c, None).arrays
  resumed = io_lib.read_npz(root / "seed=0" / "results.npz")
  for k, v in whole.items():
    np.testing.assert_array_equal(v, resumed[k], err_msg=k)


def test_sigkill_of_a_run_sampling_on_device_then_resume_is_bit_identical(tmp_path, caplog,
                                                                          monkeypatch):
  """Training sequences drawn on device from fold_in(data key, step): a run killed inside its
  third save and resumed draws the batches the uninterrupted run drew (every array equal)."""
  steps_ = 400
  marker, wd = tmp_path / "stalled", str(tmp_path / "killed")
  env = dict(os.environ, PYTHONPATH=str(ROOT), TINY_RUN_TASK="icl_markov",
             TINY_RUN_STALL_SAVE=f"3:{marker}")
  proc = subprocess.Popen([sys.executable, "tests/tiny_run.py", wd, str(steps_)], cwd=ROOT,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  full = train_lib.train(tiny_run.sequence_config(steps_), tmp_path / "full")  # meanwhile
  deadline = time.time() + 300
  while not marker.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (tmp_path / "killed" / "results.npz").exists()
  steps = full.arrays["steps"]
  committed = max(_committed(wd))
  trained = tiny_run.count_trained_steps(monkeypatch, steps)
  with caplog.at_level(logging.INFO):
    resumed = train_lib.train(tiny_run.sequence_config(steps_), wd)
  assert f"resumed from checkpoint at step {steps[committed]}" in caplog.text
  assert sum(trained) == steps_ - int(steps[committed]) < steps_
  for k, v in full.arrays.items():
    np.testing.assert_array_equal(v, resumed.arrays[k], err_msg=k)
