"""A tiny engine run in its own process (for the preemption, memory and multi-device tests),
and a helper that counts the SGD steps a run trains.

    python tests/tiny_run.py WORKDIR [NUM_STEPS]      # writes WORKDIR/results.npz
    python tests/tiny_run.py WORKDIR NUM_STEPS --distributed PORT PROCESS_ID   # one of 2
    python -m experiments.sweep --config=tests/tiny_run.py:NUM_STEPS ...  # an experiment file
    TINY_RUN_TASK=icl_markov python tests/tiny_run.py WORKDIR NUM_STEPS   # sequence_config
"""

import sys

from sgd_phases import config_lib, io_lib, train_lib


def config(num_steps: int = 200):
  c = config_lib.base_config("ball2d_sinusoid", "mlp", width=32, depth=2)
  c.dataset.n_train = 256
  c.dataset.n_test = 512
  c.num_seeds = 3
  c.num_steps = num_steps
  c.batch_size = 32
  c.eval.num_points = 40
  c.eval.train_eval_size = 256
  c.checkpoint_every = 2
  c.references.linear = config_lib.reference_config("linear", num_steps=100)
  c.progress = False
  return c


def get_config(arg: str | None = None):
  """tiny_run as an experiment file for the commands (``--config=tests/tiny_run.py[:STEPS]``)."""
  return config(int(arg) if arg else 200)


def run(config, workdir):
  """Trains the run and writes a one-number summary.json (as an experiment's ``run``)."""
  import os

  from sgd_phases import workdir as workdir_lib
  results = train_lib.train(config, workdir)
  summary = {"test_acc_end": float(results.arrays["test_acc"][:, -1].mean()),
             "identity": workdir_lib.summary_identity(config)}
  io_lib.write_json(os.path.join(workdir, "summary.json"), summary)
  return summary


def sequence_config(num_steps: int = 200):
  """A tiny in-context Markov-chain run: training sequences sampled on device at every step."""
  c = config_lib.base_config("icl_markov", "transformer", num_layers=1, num_heads=1, d_model=8,
                             mlp=False, layer_norm=False, max_len=16)
  c.dataset.length, c.dataset.train_size, c.dataset.test_size = 16, 64, 16
  c.optimizer = config_lib.optimizer_config("adam", learning_rate=1e-2)
  c.num_seeds, c.batch_size, c.num_steps = 2, 8, num_steps
  c.eval.num_points, c.eval.train_eval_size = 12, 60
  c.references.unigram = config_lib.reference_config("in_context_unigram",
                                                     trained_on="closed_form")
  c.t0.reference = ""
  c.null.num_permutations = 4
  c.checkpoint_every = 2
  c.progress = False
  return c


def count_trained_steps(monkeypatch, steps) -> list[int]:
  """Records the SGD steps of F that each reported evaluation interval trained in this process.

  The engine reports every evaluation k it reaches once, through the run's metric writer
  (``io_lib.MetricWriter.write_scalars``, keys "F/..."), after training the segment from
  ``steps[k-1]`` to ``steps[k]``; evaluation 0 trains nothing. ``steps``: the run's evaluation
  steps. References ("ref:<name>") and the final metrics.jsonl rows are not counted.
  """
  trained: list[int] = []
  orig = io_lib.MetricWriter.write_scalars
  index = {int(s): k for k, s in enumerate(steps)}

  def counting(self, step, scalars):
    k = index[int(step)]
    if k > 0 and any(n.startswith("F/") for n in scalars):
      trained.append(int(steps[k]) - int(steps[k - 1]))
    return orig(self, step, scalars)

  monkeypatch.setattr(io_lib.MetricWriter, "write_scalars", counting)
  return trained


def stall_inside_a_save(save: int, marker: str) -> None:
  """Makes the ``save``-th Orbax checkpoint of this process stop inside its save: its data
  are written to the temporary step folder (local disk) or step prefix (object store), then,
  before Orbax commits it (the rename, or the ``commit_success.txt`` object), ``marker`` is
  created and the saving thread sleeps -- so a SIGKILL lands inside a real save."""
  import os
  import time

  from orbax.checkpoint._src.path import atomicity

  calls = []
  for cls in (atomicity.AtomicRenameTemporaryPath, atomicity.CommitFileTemporaryPath):
    orig = cls.finalize

    async def finalize(self, *args, _orig=orig, **kwargs):
      step = self.get_final().name.isdigit()  # a checkpoint's step folder, not an item's
      calls.extend([1] if step else [])
      if step and len(calls) == save:
        with open(marker, "w") as f:
          f.write(os.fspath(self.get()))
        time.sleep(3600)  # killed here, before the commit
      return await _orig(self, *args, **kwargs)

    cls.finalize = finalize


if __name__ == "__main__":
  import logging
  import os
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
  if os.environ.get("TINY_RUN_STALL_SAVE"):  # save number:marker file (test_preemption)
    n, marker = os.environ["TINY_RUN_STALL_SAVE"].split(":", 1)
    stall_inside_a_save(int(n), marker)
  if os.environ.get("TINY_RUN_WRITE_LOG"):  # record every host file this process writes
    orig_write, log_prefix = io_lib._write, os.environ["TINY_RUN_WRITE_LOG"]

    def logged_write(p, data):
      import jax
      with open(f"{log_prefix}.{jax.process_index()}", "a") as f:
        f.write(f"{os.fspath(p)}\n")
      return orig_write(p, data)

    io_lib._write = logged_write
  make = sequence_config if os.environ.get("TINY_RUN_TASK") == "icl_markov" else config
  c = make(int(sys.argv[2]) if len(sys.argv) > 2 else 200)
  if len(sys.argv) > 3:  # ... --distributed PORT PROCESS_ID [NULL_PERMUTATIONS]: a 2-process job
    c.distributed.enabled = True
    c.distributed.coordinator_address = f"127.0.0.1:{sys.argv[4]}"
    c.distributed.num_processes, c.distributed.process_id = 2, int(sys.argv[5])
    c.distributed.heartbeat_timeout_s = 20
    c.distributed.initialization_timeout_s = int(os.environ.get("TINY_RUN_INIT_TIMEOUT", 120))
    if len(sys.argv) > 6:
      c.null.num_permutations = int(sys.argv[6])
  from sgd_phases import preemption
  try:
    train_lib.train(c, sys.argv[1])
  except preemption.Preempted as e:  # as the experiments' command line does
    logging.warning("%s", e)
    sys.exit(preemption.EXIT_CODE)
