"""Seeds sharded over 4 simulated CPU devices give the single-device results (subprocess)."""

import os
import subprocess
import sys
import textwrap
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
      print("OK")
  """
  assert "OK" in _run(code.format(n=1, wd=tmp_path / "one"), 1)
  assert "OK" in _run(code.format(n=4, wd=tmp_path / "four"), 4)
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


def _two_processes(wd: Path, steps: tuple[int, int] = (120, 120),
                   timeout: int = 600) -> list[subprocess.CompletedProcess]:
  """One job of 2 processes × 2 CPU devices (gloo collectives) on 127.0.0.1; ``steps``: each
  process's NUM_STEPS (equal for a well-formed job)."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="--xla_force_host_platform_device_count=2")
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "tests/tiny_run.py", str(wd), str(steps[i]),
                             "--distributed", str(port), str(i)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=timeout)
    outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
  return outs


def test_two_processes_equal_one_process_with_four_devices(tmp_path):
  for o in _two_processes(tmp_path / "two"):
    assert o.returncode == 0, o.stderr[-3000:]
  code = f"""
      import sys
      sys.path.insert(0, "tests")
      import tiny_run
      from sgd_phases import train_lib
      train_lib.train(tiny_run.config(120), "{tmp_path / 'four'}")
  """
  _run(code, 4)
  two = io_lib.read_npz(tmp_path / "two" / "results.npz")
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
  names = sorted(p.name for p in (tmp_path / "two").iterdir())
  assert names == ["checkpoints", "config.json", "metrics.jsonl", "references", "results.npz",
                   "tensorboard"]
  ckpt = next((tmp_path / "two" / "checkpoints").iterdir())
  assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [38, 39]


def test_a_peer_with_another_config_is_refused_before_training(tmp_path):
  outs = _two_processes(tmp_path / "bad", steps=(120, 100))
  assert all(o.returncode != 0 for o in outs)
  assert any("different run config from its peers" in o.stderr for o in outs), outs[0].stderr[-2000:]
  assert not (tmp_path / "bad" / "config.json").exists()  # refused before anything was written
