"""SIGKILL a training process, restart it: the results equal an uninterrupted run's."""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sgd_phases import io_lib, train_lib

sys.path.insert(0, str(Path(__file__).parent))
import tiny_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = 1500


def _committed(workdir: Path) -> list[Path]:
  ckpt = workdir / "checkpoints"
  if not ckpt.exists():
    return []
  return [p for p in ckpt.glob("chunk_*/*") if p.is_dir() and p.name.isdigit()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  wd = tmp_path_factory.mktemp("full")
  return train_lib.train(tiny_run.config(STEPS), wd)


def test_sigkill_then_resume(tmp_path, uninterrupted, caplog, monkeypatch):
  wd = tmp_path / "killed"
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  proc = subprocess.Popen([sys.executable, "tests/tiny_run.py", str(wd), str(STEPS)], cwd=ROOT,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 300
  while len(_committed(wd)) < 2 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed: " + (
      proc.stderr.read().decode()[-2000:])
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (wd / "results.npz").exists()
  # A write interrupted by the kill leaves an uncommitted folder: simulate one beyond the last.
  chunk = next((wd / "checkpoints").glob("chunk_*"))
  partial = chunk / "999.orbax-checkpoint-tmp-1234"
  partial.mkdir()
  (partial / "junk").write_bytes(b"\x00" * 10)
  # the last checkpoint the killed run committed (every chunk of this config is one chunk)
  steps = uninterrupted.arrays["steps"]
  committed = max(int(p.name) for p in _committed(wd))
  trained = tiny_run.count_trained_steps(monkeypatch, steps)
  with caplog.at_level(logging.INFO):
    resumed = train_lib.train(tiny_run.config(STEPS), wd)
  assert "partial checkpoint" in caplog.text
  resumed_at = [r.getMessage() for r in caplog.records if "resumed from checkpoint" in
                r.getMessage()]
  assert resumed_at == [f"F seeds 0-2: resumed from checkpoint at step {steps[committed]}"]
  # the restart trained only the steps after that checkpoint, not the run from scratch
  assert sum(trained) == STEPS - int(steps[committed]) < STEPS
  for k, v in uninterrupted.arrays.items():
    np.testing.assert_array_equal(v, resumed.arrays[k], err_msg=k)
  np.testing.assert_array_equal(io_lib.read_npz(wd / "results.npz")["predictions"],
                                uninterrupted.arrays["predictions"])
