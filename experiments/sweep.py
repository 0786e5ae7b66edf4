"""Seed × hyperparameter sweeps of any experiment: one workdir per grid point, a summary table.

    python -m experiments.sweep --config=experiments/linear_phase.py:quick --workdir=/tmp/sw \\
        --sweep.label_noise=0,0.1,0.2 --sweep.optimizer.learning_rate=0.01,0.1
    python -m experiments.sweep --config=experiments/linear_phase.py --workdir=/tmp/sw \\
        --sweep_file=grid.json --config.num_seeds=8 --vectorize=off

``--config=<experiment>.py[:arg]`` is that experiment's ``get_config`` (``--config.x=...``
overrides apply to every point, parsed as by every experiment's command, ``sgd_phases.cli``:
``--config.dataset.name``, ``--config.model`` and any ``--config.model_kwargs.<option>``);
``--sweep.<field>=v1,v2,...`` lists values of one field (``label_noise`` means
``dataset.label_noise``, see ``sgd_phases.sweep.resolve_field``; any model option, e.g.
``--sweep.model_kwargs.layer_norm=True,False``), and ``--sweep_file`` a JSON object {field: [values]} (for lists or strings with commas). The grid
is their Cartesian product; each point runs ``<experiment>.run(config, DIR/<point>)``, finished
points are skipped on a rerun, a bad config value at any point is refused before anything is
written (the experiment's ``engine_runs`` checks, naming the point), a point that fails while it
runs writes ``DIR/<point>/error.txt`` (the others go on; the command then exits with status 1,
naming how many failed; a preempted one, SIGTERM, with status 75: rerun it to resume). Outputs:
``DIR/summary.csv``, ``DIR/summary.json`` (rows: the overrides, status, the headline numbers as
``<name>.mean/.lo/.hi``) and ``DIR/sweep.png`` (``--metric``, default μ/I at T_0). Runtime: the
sum of the points' (the quick linear_phase config: seconds per point on CPU).
``--vectorize=auto|on|off``: train points that differ only in learning rate, weight decay or
label-noise rate as one nested (point × seed) program (see ``sgd_phases.sweep``).

Many independent jobs (a Slurm array, a Kubernetes Indexed Job, Cloud Batch, several TPU VMs)
share one workdir (a shared filesystem or gs://): each runs ``--shard=i/n`` (or reads its index
from the scheduler) and writes only its points; ``--merge`` then writes the summary::

    python -m experiments.sweep ... --workdir=gs://b/sw --shard=0/4     # ... 1/4, 2/4, 3/4
    python -m experiments.sweep ... --workdir=gs://b/sw --merge        # summary.csv, sweep.png
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from experiments import common
from sgd_phases import cli, io_lib, sweep

_GRID: dict[str, list[Any]] = {}


def parse_sweep_argv(argv: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
  """Splits ``--sweep.<field>=v1,v2`` out of ``argv``: ({field: [v1, v2]}, other args)."""
  grid: dict[str, list[str]] = {}
  rest = []
  for arg in argv:
    if not arg.startswith("--sweep."):
      rest.append(arg)
      continue
    name, sep, values = arg[len("--sweep."):].partition("=")
    if not sep or not name or not values:
      raise ValueError(f"sweep flag {arg!r}: expected --sweep.<field>=v1,v2,...")
    if name in grid:
      raise ValueError(f"sweep flag --sweep.{name} is given twice")
    grid[name] = values.split(",")
  return grid, rest


def load_experiment(path: str) -> ModuleType:
  """The module of an experiment file ``path[:arg]`` (imported by package name if in one)."""
  if not Path(path).is_file() and ":" in path:
    path = path.rsplit(":", 1)[0]
  file = Path(path).resolve()
  if not file.is_file():
    raise ValueError(f"config: no experiment file {path!r}")
  parts, folder = [file.stem], file.parent
  while (folder / "__init__.py").exists():
    parts.insert(0, folder.name)
    folder = folder.parent
  if len(parts) > 1 and str(folder) in [str(Path(p or ".").resolve()) for p in sys.path]:
    return importlib.import_module(".".join(parts))
  spec = importlib.util.spec_from_file_location(f"sweep_experiment_{file.stem}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def read_sweep_file(path: str) -> dict[str, list[Any]]:
  """{field: [values]} from a JSON file; one ValueError naming a bad entry."""
  grid = io_lib.read_json(path)
  if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
    raise ValueError(f"sweep_file {path!r}: must hold a JSON object {{field: [values]}}")
  return grid


def make_figures(workdir: str) -> list[str]:
  """Redraws ``sweep.png`` from the sweep's summary.json (used by experiments.make_figures)."""
  path = sweep.make_figure(workdir)
  return [] if path is None else [path]


def main(argv: list[str]) -> None:
  from absl import app, flags
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  f = flags.FLAGS
  grid = dict(_GRID)
  for name, values in (read_sweep_file(f.sweep_file) if f.sweep_file else {}).items():
    if name in grid:
      raise ValueError(f"sweep field {name!r} is given both as a flag and in --sweep_file")
    grid[name] = values
  module = load_experiment(cli.config_file())
  cli.add_model_options(f.config, list(grid), "--sweep.")  # any option of the model
  points = sweep.make_grid(f.config, grid)
  if f.merge:
    rows = sweep.merge_sweep(module, f.config, points, f.workdir, vectorize=f.vectorize,
                             metric=f.metric)
  else:
    shard = sweep.parse_shard(f.shard)
    check = functools.partial(common.check, runs=getattr(module, "engine_runs",
                                                         common.engine_runs))
    rows = cli.run_command(lambda: sweep.run_sweep(
        module, f.config, points, f.workdir, vectorize=f.vectorize, metric=f.metric,
        shard=shard, check=check))
  counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "missing")}
  for r in rows:
    print(f"{r['status']:8s} {r['point']}" + (f"  {r['error']}" if r.get("error") else ""))
  print(", ".join(f"{v} {k}" for k, v in counts.items() if v) + f" of {len(rows)} points")
  if counts["failed"] and not f.merge:  # a scheduler must not record the job as a success
    sys.exit(f"sweep: {counts['failed']} of {len(rows)} points failed (each one's error is in "
             "its error.txt; a rerun retries them): exit status 1")


def _parse_flags(argv: list[str]) -> list[str]:
  grid, rest = parse_sweep_argv(argv)
  _GRID.update(grid)
  return cli.parse_flags(rest)


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("workdir", None, "Sweep folder: one sub-folder per grid point.")
  flags.DEFINE_string("sweep_file", None, "JSON object {field: [values]} (added to --sweep.*).")
  flags.DEFINE_enum("vectorize", "auto", list(sweep.VECTORIZE),
                    "Nested (point × seed) programs: auto (where measured faster), on, off.")
  flags.DEFINE_string("metric", None, "Headline plotted in sweep.png (default: μ/I at T_0).")
  flags.DEFINE_string("shard", None, "i/n: run only the points at positions ≡ i (mod n) (default: "
                      "from SLURM_ARRAY_TASK_ID/COUNT, BATCH_TASK_INDEX/COUNT, or "
                      "JOB_COMPLETION_INDEX + SWEEP_SHARD_COUNT; else every point).")
  flags.DEFINE_bool("merge", False, "Write summary.csv/json and sweep.png from the finished "
                    "points of a sharded sweep (runs nothing; lists missing/failed points).")
  flags.mark_flags_as_required(["workdir"])
  app.run(main, flags_parser=_parse_flags)
