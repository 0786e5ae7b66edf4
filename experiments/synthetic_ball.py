"""Figure 1 (right): decision boundaries of an MLP trained by SGD on the 2-D sinusoid ball.

Data uniform in the unit disc, labelled y = 1[x2 > a·sin(ω·x1)], 10% of the training labels
flipped; plain SGD on an MLP. The run records F_t's predictions on a grid (``eval.probe_grid``)
at every evaluation, so the snapshots show the function going from near-linear, to the
sinusoid, to islands around the flipped points; the engine also scores μ_Y(F_t;L) against a
linear classifier L trained on the labels. Near-linearity is quantified by the agreement
P[F_t(x) = L(x)] on the test set (``agreement_with_linear``).

    python -m experiments.synthetic_ball --workdir=/tmp/ball        # ~1-2 min on a 2-core CPU
    python -m experiments.synthetic_ball --workdir=/tmp/ballq \\
        --config=experiments/synthetic_ball.py:quick                 # seconds

Outputs in the workdir: the engine's files (results.npz, ...), ``train_points.npz`` (the
training set, for the pictures), ``summary.json`` and ``figures/{decision_boundaries,
linear_phase,agreement}.png``.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from experiments import common
from sgd_phases import analysis, cli, config_lib, io_lib, plotting, results, stats, train_lib
from sgd_phases import datasets as datasets_lib

NAME = "synthetic_ball"
POINTS_FILE = "train_points.npz"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Default config (CPU, a few minutes); ``arg="quick"`` shrinks it to seconds."""
  quick = "quick" in cli.parse_arg(arg)
  c = config_lib.base_config("ball2d_sinusoid", "mlp", width=128, depth=3)
  c.experiment = NAME               # experiment name (recorded in summary.json)
  c.quick = quick                   # shrunken settings for tests / smoke runs
  c.dataset.n_train = 300           # few enough points that plain SGD memorises the flips
  c.dataset.n_test = 10_000         # clean test labels (noisy_test=False)
  c.dataset.label_noise = 0.1       # the paper's 10% label noise
  c.optimizer.learning_rate = 0.5   # plain SGD (momentum 0); 1.0 diverged
  c.batch_size = 64                 # smaller batches (more SGD noise) memorised the flips slower
  c.num_steps = 40_000              # long enough to fit (nearly) all flipped labels
  c.num_seeds = 4                   # seeds: init and data order (the data set is fixed)
  c.eval.num_points = 60            # log-spaced evaluations
  c.eval.probe_grid = 101           # F_t's predictions on a 101x101 grid over [-1.1, 1.1]^2
  c.references.linear = config_lib.reference_config("linear", num_steps=2000,
                                                    learning_rate=0.1)
  c.t0.reference = "linear"         # T_0: first step with acc(F_t) >= acc(L)
  c.checkpoint_every = 0            # short run: no checkpoints
  # Steps of the decision-boundary snapshots (seed 0); each is replaced by the evaluation
  # step closest to it on a log scale. Empty: ``num_snapshots`` log-spaced evaluation steps.
  c.snapshot_steps = (0, 30, 300, 1000, 3000, 6000, 15000, 40000)
  c.num_snapshots = 8               # used when snapshot_steps is empty
  if quick:
    c.model_kwargs.width, c.model_kwargs.depth = 32, 2
    c.dataset.n_train, c.dataset.n_test = 200, 1000
    c.num_steps, c.num_seeds = 300, 2
    c.eval.num_points, c.eval.probe_grid = 12, 21
    c.references.linear.num_steps = 100
    c.snapshot_steps = ()
    c.num_snapshots = 4
    c.progress = False
  return c


def training_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The engine's config: ``config`` without the experiment's own fields."""
  return common.engine_config(config)


def engine_runs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """The one engine run (``training_config``); bad snapshot fields are refused."""
  _check_snapshots(list(config.snapshot_steps), config.num_snapshots)
  return [training_config(config)]


def _check_snapshots(requested: list[int], num: int) -> None:
  if len(requested) == 0 and num < 1:
    raise ValueError(f"config.num_snapshots must be >= 1, got {num}")
  if any(s < 0 for s in requested):
    raise ValueError(f"config.snapshot_steps must be non-negative, got {list(requested)}")


def pick_snapshots(steps: np.ndarray, requested: list[int], num: int) -> list[int]:
  """Indices into ``steps``: the closest evaluation to each requested step (or ``num``
  log-spaced ones when none are requested), distinct and sorted."""
  steps = np.asarray(steps)
  _check_snapshots(requested, num)
  if len(requested) == 0:
    requested = [0] + list(np.geomspace(max(1, steps[1]), steps[-1], num - 1))
  logs = np.log1p(steps.astype(np.float64))
  return sorted({int(np.argmin(np.abs(logs - np.log1p(float(s))))) for s in requested})


def agreement_with(results: results.Results, reference: str) -> np.ndarray:
  """[S, E] fraction of test points where F_t and the reference predict the same class."""
  a = results.arrays
  return np.mean(a["predictions"] == results.reference(reference)[:, None, :], axis=-1)


def run(config: ml_collections.ConfigDict, workdir: str, *,
        trained_f: Any = None) -> dict[str, Any]:
  """Trains F and L, writes summary.json and the figures; returns the headline numbers."""
  config, started = common.begin(config, workdir, runs=engine_runs)  # checked, claimed
  tcfg = training_config(config)
  train_lib.train(tcfg, workdir, trained_f=trained_f)
  ds = datasets_lib.get_dataset(tcfg.dataset)
  io_lib.write_npz(io_lib.path(workdir) / POINTS_FILE,
                   {"x_train": ds.x_train, "y_train": ds.y_train, "flipped": ds.flipped})
  results = analysis.load(workdir)  # everything below from the files
  a = results.arrays
  steps = a["steps"]
  snaps = pick_snapshots(steps, list(config.snapshot_steps), config.num_snapshots)
  agree = agreement_with(results, "linear")
  m = results.measures("linear")
  last, s = len(steps) - 1, len(a["seed_ids"])
  head = analysis.headline(results, "linear")
  summary: dict[str, Any] = {
      "experiment": NAME,
      "quick": bool(config.quick),
      "num_seeds": s,
      "snapshot_steps": [int(steps[k]) for k in snaps],
      **head,
      "train_acc_clean_end": stats.summarize(a["train_acc_clean"][:, last], bounded=True),
      "agreement_with_linear": {int(steps[k]): stats.summarize(agree[:, k], bounded=True)
                                for k in snaps},
      "mu_over_i_at_snapshots": {  # μ_Y(F_t;L) / I(F_t;Y); NaN where I = 0
          int(steps[k]): stats.summarize(stats.ratio_at(m["mu"], m["i_fy"], np.full(s, k)),
                                         bounded=True) for k in snaps},
      "max_agreement_with_linear": stats.summarize(agree.max(axis=1), bounded=True),
      "step_of_max_agreement": stats.summarize(steps[agree.argmax(axis=1)], bounded=True),
      "agreement_with_linear_end": stats.summarize(agree[:, last], bounded=True),
  }
  return common.finish(workdir, summary, make_figures, config=config, started=started)


def make_figures(workdir: str) -> list[str]:
  """Decision boundaries (seed 0), the μ-vs-linear curves and agreement, from the files."""
  wd = io_lib.path(workdir)
  results = analysis.load(wd)
  a = results.arrays
  summary = io_lib.read_json(wd / "summary.json")
  pts = io_lib.read_npz(wd / POINTS_FILE)
  steps = a["steps"]
  idx = [int(np.flatnonzero(steps == s)[0]) for s in summary["snapshot_steps"]]
  probe = a["probe_inputs"]
  g = int(round(np.sqrt(probe.shape[0])))
  grid = probe[:g, 0]  # x1 varies fastest: the first row holds the x1 grid
  agree = agreement_with(results, "linear")
  titles = [f"step {int(steps[k])}\nagree(F,L)={agree[0, k]:.2f}" for k in idx]
  fig = plotting.plot_decision_boundaries(
      grid, grid, [a["probe_predictions"][0, k].reshape(g, g) for k in idx],
      [int(steps[k]) for k in idx], pts["x_train"], pts["y_train"], pts["flipped"],
      titles=titles, ncols=4)
  out = [plotting.save_figure(fig, wd / "figures" / "decision_boundaries.png")]
  m = results.measures("linear")
  fig = plotting.plot_linear_phase(steps, m["i_fy"], m["mu"], m["i_ly"], a["test_acc"],
                                   results.reference("linear", "test_acc"), t0_steps=a["t0_step"],
                                   title="2-D sinusoid ball, MLP vs linear L",
                                   mu_null=results.null("linear"))
  out.append(plotting.save_figure(fig, wd / "figures" / "linear_phase.png"))
  fig = plotting.Figure(figsize=(5.0, 3.2), layout="constrained")
  ax = fig.subplots()
  acc = plotting.ACC_LIMITS
  plotting.plot_band(ax, steps, agree, "P[F_t = L] (test)", color="tab:blue", limits=acc)
  plotting.plot_band(ax, steps, a["train_acc"], "train acc (noisy labels)", color="tab:red",
                     limits=acc)
  plotting.plot_band(ax, steps, a["train_acc_clean"], "train acc (clean labels)",
                     color="tab:orange", limits=acc)
  plotting.plot_band(ax, steps, a["test_acc"], "test acc (clean)", color="black", limits=acc)
  ax.set_xlabel(plotting.STEP_LABEL)
  ax.set_ylabel("fraction")
  ax.grid(True, alpha=0.3, linewidth=0.5)
  ax.legend(fontsize=7, frameon=False)
  out.append(plotting.save_figure(fig, wd / "figures" / "agreement.png"))
  return out


if __name__ == "__main__":
  cli.main(__file__, run)
