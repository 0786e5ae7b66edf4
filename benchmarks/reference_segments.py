"""Benchmark: what training a reference in checkpointed segments costs.

    python -m benchmarks.reference_segments                 # linear_phase mnist_mlp's L, 5 seeds
    python -m benchmarks.reference_segments --quick         # tiny, seconds (smoke test)

In a checkpointed run (a workdir, ``checkpoint_every`` > 0) each reference trains in
``train_lib.REFERENCE_SEGMENTS`` segments, so that SIGTERM stops it within one segment and the
rerun resumes it: every segment boundary is an evaluation (test predictions, train accuracy)
and every ``checkpoint_every``-th one an Orbax checkpoint. Timed round-robin
(``benchmarks.common.interleaved``), the same reference with the same data:
  one_piece   ``train_lib.train_reference`` without a workdir: steps [0, num_steps];
  segmented   with a fresh local workdir per call (checkpoints, then the reference's cache).
The overhead is segmented / one_piece - 1. Writes
benchmarks/results/reference_segments_<backend>.json (``--quick``: ..._quick.json).
"""

from __future__ import annotations

import tempfile

import numpy as np

from benchmarks import common
from experiments import linear_phase
from sgd_phases import datasets, engine, io_lib, train_lib


def main() -> None:
  args = common.parser(__doc__).parse_args()
  config = linear_phase.get_config("quick" if args.quick else "mnist_mlp")
  config.progress = False
  config.checkpoint_every = config.checkpoint_every or 10  # the default (quick: none)
  if not args.quick:
    config.num_seeds = 5
  ds = datasets.get_dataset(config.dataset)
  data = engine.EvalData.create(ds, config.eval.train_eval_size)
  seed_ids = np.arange(config.num_seeds)

  def one_piece():
    return train_lib.train_reference(config, "linear", data, ds, seed_ids)["predictions"]

  def segmented():
    with tempfile.TemporaryDirectory() as wd:
      return train_lib.train_reference(config, "linear", data, ds, seed_ids,
                                       workdir=io_lib.path(wd))["predictions"]

  times = common.interleaved({"one_piece": one_piece, "segmented": segmented},
                             rounds=args.rounds or (1 if args.quick else 3), log=print)
  med = {k: common.timing_summary(v) for k, v in times.items()}
  ref = config.references.linear
  out = {"env": common.environment(), "dataset": ds.name, "num_seeds": int(config.num_seeds),
         "reference": {"model": ref.model, "num_steps": int(ref.num_steps),
                       "batch_size": int(ref.batch_size)},
         "segments": train_lib.REFERENCE_SEGMENTS,
         "checkpoint_every": int(config.checkpoint_every), "times": med,
         "overhead": med["segmented"]["median_s"] / med["one_piece"]["median_s"] - 1}
  path = common.write_json(common.out_path("reference_segments", args.out, args.quick), out)
  print(f"segmented / one piece - 1 = {out['overhead']:+.1%} ({path})")


if __name__ == "__main__":
  main()
