"""Regenerates every figure from finished experiment workdirs, without training.

``--workdir`` is one experiment workdir or a folder holding several (searched recursively).
Every ``summary.json`` that names an ``"experiment"`` is handed to that module's
``make_figures(workdir)``, which re-reads the result files and rewrites ``figures/*.png``.

    python -m experiments.make_figures --workdir=/tmp/runs      # seconds, CPU
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from sgd_phases import io_lib


def find_workdirs(root: str | Path) -> list[tuple[Path, str]]:
  """(workdir, experiment name) for every summary.json under ``root`` (sorted by path)."""
  root = Path(root)
  if not root.is_dir():
    raise ValueError(f"workdir: {str(root)!r} is not a directory")
  found = []
  for path in sorted(root.rglob("summary.json")):
    name = io_lib.read_json(path).get("experiment") if path.is_file() else None
    if isinstance(name, str) and name:
      found.append((path.parent, name))
    else:
      logging.warning("%s has no 'experiment' field; skipped", path)
  return found


def make_all(root: str | Path) -> list[str]:
  """Calls ``experiments.<name>.make_figures`` for each workdir under ``root``; PNG paths."""
  found = find_workdirs(root)
  if not found:
    raise ValueError(f"workdir: no summary.json with an 'experiment' field under {str(root)!r}")
  pngs: list[str] = []
  for workdir, name in found:
    try:
      module = importlib.import_module(f"experiments.{name}")
    except ModuleNotFoundError as e:
      raise ValueError(f"{workdir}/summary.json: unknown experiment {name!r}") from e
    pngs += [str(p) for p in module.make_figures(str(workdir))]
  return pngs


def main(argv: list[str]) -> None:
  from absl import app, flags
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for png in make_all(flags.FLAGS.workdir):
    print(png)


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("workdir", None, "An experiment workdir, or a folder of them.")
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
