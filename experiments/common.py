"""What every experiment module shares: the summary header and how a run is finished."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import ml_collections

from sgd_phases import io_lib


def header(name: str, config: ml_collections.ConfigDict, results: Any) -> dict[str, Any]:
  """First fields of a summary.json: experiment, task, data, model, seeds, steps, quick."""
  return {
      "experiment": name, "task": config.task, "dataset": config.dataset.name,
      "model": config.model, "num_seeds": int(config.num_seeds), "quick": bool(config.quick),
      "num_steps": int(results.arrays["steps"][-1]),
  }


def quick_budget(c: ml_collections.ConfigDict, num_steps: int, learning_rate: float) -> None:
  """The ``quick`` variant shared by the experiments (seconds on CPU): two seeds, batch 32,
  ``num_steps`` steps at ``learning_rate``, 12 evaluations, 512 train examples evaluated, no
  checkpoints."""
  c.num_seeds = 2
  c.num_steps = num_steps
  c.batch_size = 32
  c.optimizer.learning_rate = learning_rate
  c.eval.num_points = 12
  c.eval.train_eval_size = 512
  c.checkpoint_every = 0


def finish(workdir: str | Path, summary: dict[str, Any],
           make_figures: Callable[[str], list[str]]) -> dict[str, Any]:
  """Writes ``summary.json`` atomically, draws the figures; returns the summary + their paths."""
  io_lib.write_json(Path(workdir) / "summary.json", summary)
  summary["figures"] = make_figures(str(workdir))
  return summary
