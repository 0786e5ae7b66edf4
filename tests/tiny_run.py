"""A tiny engine run in its own process (for the preemption and multi-device tests).

    python tests/tiny_run.py WORKDIR [NUM_STEPS]      # writes WORKDIR/results.npz
"""

import sys

from sgd_phases import config_lib, train_lib


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


if __name__ == "__main__":
  steps = int(sys.argv[2]) if len(sys.argv) > 2 else 200
  train_lib.train(config(steps), sys.argv[1])
