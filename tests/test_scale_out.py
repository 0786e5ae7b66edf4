"""Seeds sharded over 4 simulated CPU devices give the single-device results (subprocess)."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from sgd_phases import io_lib

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, devices: int) -> str:
  env = dict(os.environ, PYTHONPATH=str(ROOT),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_sharded_run_matches_single_device(tmp_path):
  code = """
      import sys, jax, numpy as np
      sys.path.insert(0, "tests")
      import tiny_run
      from sgd_phases import engine, train_lib, sharding
      assert jax.device_count() == {n}
      c = tiny_run.config(120)
      c.references.f_t0 = tiny_run.config_lib.reference_config("linear", "snapshot_at_T0")
      train_lib.train(c, "{wd}")
      if {n} > 1:  # the engine's buffers really are split over the 4 devices
        ds = train_lib.datasets_lib.get_dataset(c.dataset)
        data = engine.EvalData.create(ds, 256)
        tr = engine.make_trainer("mlp", c.model_kwargs, c.optimizer, c.loss, 32, 120, 2)
        out = engine.run_seeds(tr, data, ds.y_train, engine.SeedSet(0, np.arange(4)),
                               np.array([0, 10]), engine.RunOptions(strategy="vmap"))
        sh = out["predictions"].sharding
        assert len(sh.device_set) == 4, sh
        assert sh.spec[0] == sharding.SEED_AXIS, sh
        shapes = {{s.data.shape for s in out["predictions"].addressable_shards}}
        assert shapes == {{(1, 2, 512)}}, shapes
        tr_u = engine.make_trainer("mlp", c.model_kwargs, c.optimizer, c.loss, 32, 120, 2,
                                      unroll=True)
        un = engine.run_seeds(tr_u, data, ds.y_train, engine.SeedSet(0, np.arange(4)),
                              np.array([0, 10]), engine.RunOptions(strategy="unroll"))
        assert len(un["predictions"].sharding.device_set) == 4
        agree = np.mean(np.asarray(un["predictions"]) == np.asarray(out["predictions"]))
        assert agree > 0.99, agree
      # a sequence task sampling on device (its segments carry an empty [S, 0] example order)
      # over several segments: the same predictions on 1 and 4 devices
      from experiments import sequence_phases
      q = sequence_phases.get_config("icl_markov_small,quick")
      sq = train_lib.datasets_lib.get_dataset(q.dataset)
      tr_q = engine.make_trainer(q.model, q.model_kwargs, q.optimizer, q.loss, 8, 6,
                                 sq.num_classes, sampler=sq.meta["train_sampler"])
      seq = engine.run_seeds(tr_q, engine.EvalData.create(sq, 8), sq.y_train,
                             engine.SeedSet(0, np.arange(4)), np.array([0, 2, 4, 6]),
                             engine.RunOptions(strategy="map"))
      print("SEQ", np.asarray(seq["predictions"]).tobytes().hex())
      print("OK")
  """
  out_one = _run(code.format(n=1, wd=tmp_path / "one"), 1)
  out_four = _run(code.format(n=4, wd=tmp_path / "four"), 4)
  assert "OK" in out_one and "OK" in out_four
  seq = [re.search(r"^SEQ (\w+)$", o, re.M).group(1) for o in (out_one, out_four)]
  assert seq[0] == seq[1]
  one = io_lib.read_npz(tmp_path / "one" / "results.npz")
  four = io_lib.read_npz(tmp_path / "four" / "results.npz")
  assert set(one) == set(four)
  np.testing.assert_array_equal(one["predictions"], four["predictions"])
  assert (str(one["resolved/device_count"]), str(four["resolved/device_count"])) == ("1", "4")
  for k in one:  # float reductions may differ in the last bit between layouts
    if k == "resolved/device_count":
      continue
    if one[k].dtype.kind == "f":
      np.testing.assert_allclose(one[k], four[k], atol=1e-6, err_msg=k)
    else:
      np.testing.assert_array_equal(one[k], four[k], err_msg=k)


def _free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_two(wd: Path, steps: tuple[int, int] = (120, 120), workdirs: tuple[Path, Path] = (),
               processes: tuple[int, ...] = (0, 1), **env_vars: str) -> list[subprocess.Popen]:
  """One job of 2 processes × 2 CPU devices (gloo collectives) on 127.0.0.1; ``steps``: each
  process's NUM_STEPS (equal for a well-formed job); ``workdirs``: each process's workdir
  (default ``wd`` for both); ``processes``: which of the two to start. Output goes to files
  next to ``wd`` (a full pipe would block one process inside a collective and hang the job)."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="--xla_force_host_platform_device_count=2",
             **env_vars)
  port = _free_port()
  wd.parent.mkdir(parents=True, exist_ok=True)
  procs = []
  for i in processes:
    with open(_log(wd, i), "w") as log:
      procs.append(subprocess.Popen(
          [sys.executable, "tests/tiny_run.py", str(workdirs[i] if workdirs else wd),
           str(steps[i]), "--distributed", str(port), str(i)], cwd=ROOT, env=env, stdout=log,
          stderr=subprocess.STDOUT))
  return procs


def _log(wd: Path, i: int) -> Path:
  return wd.parent / f"{wd.name}.process_{i}.log"


def _two_processes(wd: Path, steps: tuple[int, int] = (120, 120),
                   timeout: int = 600, **env_vars: str) -> list[subprocess.CompletedProcess]:
  """Runs :func:`_start_two` to the end; ``stderr`` of each result: its output."""
  procs = _start_two(wd, steps, **env_vars)
  for p in procs:
    p.wait(timeout=timeout)
  return [subprocess.CompletedProcess(p.args, p.returncode, "", _log(wd, i).read_text())
          for i, p in enumerate(procs)]


def test_two_processes_killed_resumed_equal_one_process_with_four_devices(tmp_path):
  """A 2-process × 2-device job on one shared workdir. SIGKILL process 1 mid-run: process 0
  exits with the coordination service's heartbeat error (tiny_run sets heartbeat_timeout_s =
  20) instead of hanging. The same command on both resumes from the last checkpoint, and the
  job's predictions equal an uninterrupted 1 × 4 run's, its measures to 1e-6; one writer."""
  steps, wd = 400, tmp_path / "two"
  ckpts = lambda: sorted(int(p.name) for p in wd.glob("checkpoints/chunk_*/*")  # noqa: E731
                         if p.name.isdigit())
  # SIGTERM to process 1 only (a preemption notice): JAX's preemption service tells process 0,
  # both checkpoint at the same evaluation and exit with status 75
  from sgd_phases import preemption
  procs = _start_two(wd, (steps, steps))
  deadline = time.time() + 300
  while max(ckpts(), default=0) < 4 and procs[1].poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert procs[1].poll() is None, _log(wd, 1).read_text()[-2000:]
  procs[1].send_signal(signal.SIGTERM)
  for p in procs:
    p.wait(timeout=120)
  logs = [_log(wd, i).read_text() for i in range(2)]
  assert [p.returncode for p in procs] == [preemption.EXIT_CODE] * 2, logs[0][-2000:]
  saved = [re.search(r"preempted; checkpoint saved at step (\d+) \(evaluation (\d+)\)", t)
           for t in logs]
  assert all(saved) and saved[0].groups() == saved[1].groups(), logs[1][-2000:]
  first = max(ckpts())
  assert int(saved[0].group(2)) == first
  # the same command resumes there; SIGKILL process 1 mid-run this time (once it has trained
  # on: killed before it joined, process 0 would wait for it at initialisation instead)
  procs = _start_two(wd, (steps, steps))
  deadline = time.time() + 300
  while (max(ckpts(), default=0) < first + 4 and procs[1].poll() is None
         and time.time() < deadline):
    time.sleep(0.05)
  assert procs[1].poll() is None, "the job ended before it could be killed: " + (
      _log(wd, 1).read_text()[-2000:])
  procs[1].send_signal(signal.SIGKILL)
  killed_at = time.time()
  procs[0].wait(timeout=120)
  procs[1].wait()
  err = _log(wd, 0).read_text()
  assert procs[0].returncode != 0 and time.time() - killed_at < 20 + 40
  assert "heartbeat timeout" in err and "remote task has failed" in err, err[-3000:]
  assert not (wd / "results.npz").exists()
  last = max(ckpts())

  outs = _two_processes(wd, (steps, steps), TINY_RUN_WRITE_LOG=str(tmp_path / "writes"))
  for o in outs:
    assert o.returncode == 0, o.stderr[-3000:]
  # one writer, recorded: process 0 wrote every host file of the final attempt, process 1 none
  written = (tmp_path / "writes.0").read_text().split()
  assert {os.path.relpath(p, wd) for p in written} >= {"config.json", "results.npz",
                                                       "references/linear.npz"}
  assert not (tmp_path / "writes.1").exists()
  two = io_lib.read_npz(wd / "results.npz")
  resumed = f"F seeds 0-2: resumed from checkpoint at step {two['steps'][last]}"
  assert all(resumed in o.stderr for o in outs), [resumed] + [o.stderr[-1500:] for o in outs]
  _run(f"""
      import sys
      sys.path.insert(0, "tests")
      import tiny_run
      from sgd_phases import train_lib
      train_lib.train(tiny_run.config({steps}), "{tmp_path / 'four'}")
  """, 4)
  four = io_lib.read_npz(tmp_path / "four" / "results.npz")
  assert (str(two["resolved/process_count"]), str(two["resolved/device_count"])) == ("2", "4")
  np.testing.assert_array_equal(two["predictions"], four["predictions"])
  for k in four:
    if k.startswith("resolved/"):
      continue
    if four[k].dtype.kind == "f":
      np.testing.assert_allclose(two[k], four[k], atol=1e-6, err_msg=k)
    else:
      np.testing.assert_array_equal(two[k], four[k], err_msg=k)
  # one writer: exactly one copy of each host-written file; Orbax saved collectively
  names = sorted(p.name for p in wd.iterdir())
  assert names == ["checkpoints", "config.json", "metrics.jsonl", "owner.json", "references",
                   "results.npz", "tensorboard"]
  ckpt = next((wd / "checkpoints").iterdir())
  assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [38, 39]


def test_a_peer_with_another_config_is_refused_before_training(tmp_path):
  outs = _two_processes(tmp_path / "bad", steps=(120, 100))
  assert all(o.returncode != 0 for o in outs)
  for o in outs:  # both say the same: which field, and which process is the odd one out
    assert "process 1 differs from process 0: num_steps: 120 -> 100" in o.stderr, o.stderr[-2000:]
  assert not (tmp_path / "bad" / "config.json").exists()  # refused before anything was written


def test_an_unshared_workdir_fails_fast_naming_it(tmp_path):
  """Node-local workdirs (one per process) used to hang at the first checkpoint for 10 min."""
  wds = (tmp_path / "node0" / "wd", tmp_path / "node1" / "wd")
  start = time.time()
  procs = _start_two(tmp_path / "unshared", workdirs=wds)
  for p in procs:
    p.wait(timeout=120)
  assert time.time() - start < 60
  logs = [_log(tmp_path / "unshared", i).read_text() for i in range(2)]
  for p, log in zip(procs, logs):
    assert p.returncode != 0 and "is not shared by the processes of this job" in log, log[-2000:]
    assert "processes [1] do not see what process 0 wrote" in log
  assert not list(tmp_path.glob("node*/wd/checkpoints"))  # failed before any training


def test_a_peer_that_never_joins_fails_within_the_timeout(tmp_path):
  start = time.time()
  (proc,) = _start_two(tmp_path / "alone", processes=(0,), TINY_RUN_INIT_TIMEOUT="5")
  proc.wait(timeout=60)
  log = _log(tmp_path / "alone", 0).read_text()
  assert proc.returncode != 0 and time.time() - start < 45
  assert "not every process joined within initialization_timeout_s = 5 s" in log, log[-2000:]
  assert "coordinator 127.0.0.1:" in log and "2 processes" in log


# Each of 2 processes (1 CPU device each) runs experiments' quick configs as one job; process
# 0 writes results.npz and summary.json 1 s late, so a process that reads one before process
# 0 has finished writing it fails (a missing file) or reads the previous one (a stale summary).
_EXPERIMENTS = """
import json, logging, sys, time
from sgd_phases import io_lib
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
port, pid, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if pid == 0:
  write = io_lib._write
  def late(p, data):
    if p.name in ("results.npz", "summary.json"):
      time.sleep(1)
    return write(p, data)
  io_lib._write = late
from experiments import retention_map, synthetic_ball
def config(module, **fields):
  c = module.get_config("quick")
  c.update(fields)
  c.distributed.update(enabled=True, coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                       process_id=pid, heartbeat_timeout_s=30)
  return c
# few evaluations and null draws, no soft measures (fewer programs): the reads are under test
small = dict(num_steps=150, eval={"num_points": 6}, soft={"enabled": False})
runs = [("map", retention_map, config(retention_map, map_values=(0.1,),
                                      null={"num_permutations": 5}, **small)),
        ("ball", synthetic_ball, config(synthetic_ball, null={"num_permutations": 5}, **small)),
        ("ball", synthetic_ball, config(synthetic_ball,  # re-scored, not trained
                                        null={"num_permutations": 3}, **small))]
for name, module, c in runs:
  summary = module.run(c, f"{root}/{name}")
  print("SUMMARY", name, json.dumps({k: v for k, v in summary.items()
                                     if k not in ("figures", "wall_time_s")},
                                    sort_keys=True, default=str), flush=True)
"""


def test_experiments_as_two_processes_read_only_what_process_0_finished_writing(tmp_path):
  """Every path on which an experiment reads a file after training, run as one 2-process job:
  retention_map's sweep (first: its nested program is the job's first computation; then each
  cell's summary.json and the sweep's), synthetic_ball's results.npz, and the same run
  re-scored (results.npz rewritten). Every process returns the summary process 0 wrote."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="")
  port = _free_port()
  logs = [tmp_path / f"process_{i}.log" for i in range(2)]
  procs = []
  for i, log in enumerate(logs):
    with open(log, "w") as f:
      procs.append(subprocess.Popen([sys.executable, "-c", _EXPERIMENTS, str(port), str(i),
                                     str(tmp_path / "runs")], cwd=ROOT, env=env, stdout=f,
                                    stderr=subprocess.STDOUT))
  for p in procs:
    p.wait(timeout=900)
  out = [log.read_text() for log in logs]
  for p, text in zip(procs, out):
    assert p.returncode == 0, text[-3000:]
    assert "training them one by one" not in text  # the nested program ran across processes
  summaries = [re.findall(r"^SUMMARY (\w+) (.*)$", text, re.M) for text in out]
  assert [n for n, _ in summaries[0]] == ["map", "ball", "ball"]
  assert summaries[0] == summaries[1]  # what every process computed from the files it read
  assert summaries[0][1] != summaries[0][2]  # the re-scored null is another one
  for name in ("ball", "map"):  # ... is what process 0 wrote last
    written = io_lib.read_json(tmp_path / "runs" / name / "summary.json")
    returned = [json.loads(s) for n, s in summaries[0] if n == name][-1]
    assert returned == json.loads(json.dumps({k: v for k, v in written.items()
                                              if k != "wall_time_s"}, default=str)), name
  assert "re-scoring the stored predictions" in out[1]
