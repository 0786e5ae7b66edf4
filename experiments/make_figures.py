"""Regenerates every figure from finished experiment workdirs, without training.

``--workdir`` is one experiment workdir or a folder holding several (searched recursively).
Every ``summary.json`` that names an ``"experiment"`` is handed to that module's
``make_figures(workdir)``, which re-reads the result files and rewrites ``figures/*.png``.

    python -m experiments.make_figures --workdir=/tmp/runs      # seconds, CPU
"""

from __future__ import annotations

import importlib
import logging
import os

from etils import epath

from sgd_phases import io_lib

_SKIP = ("checkpoints", "references", "tensorboard", "figures", "_nested")


def _summaries(folder: epath.Path) -> list[epath.Path]:
  """Every summary.json under ``folder``, by walking folders (``**`` globs do not work on
  gs:// in epath); engine internals (checkpoints, ...) are not entered."""
  out = [folder / "summary.json"] if (folder / "summary.json").exists() else []
  for sub in sorted(folder.iterdir()):
    if sub.name not in _SKIP and sub.is_dir():
      out += _summaries(sub)
  return out


def find_workdirs(root: io_lib.PathLike) -> list[tuple[epath.Path, str]]:
  """(workdir, experiment name) for every summary.json under ``root`` (a folder or URI)."""
  root = io_lib.path(root)
  if not root.is_dir():
    raise ValueError(f"workdir: {os.fspath(root)!r} is not a directory")
  found = []
  for path in sorted(_summaries(root), key=os.fspath):
    name = io_lib.read_json(path).get("experiment") if path.is_file() else None
    if isinstance(name, str) and name:
      found.append((path.parent, name))
    else:
      logging.warning("%s has no 'experiment' field; skipped", path)
  return found


def make_all(root: io_lib.PathLike) -> list[str]:
  """Calls ``experiments.<name>.make_figures`` for each workdir under ``root``; PNG paths."""
  found = find_workdirs(root)
  if not found:
    raise ValueError(f"workdir: no summary.json with an 'experiment' field under {str(root)!r}")
  pngs: list[str] = []
  for workdir, name in found:
    module = None
    for package in ("experiments", "sgd_phases"):  # sgd_phases.score: predictions from elsewhere
      try:
        module = importlib.import_module(f"{package}.{name}")
        break
      except ModuleNotFoundError:
        continue
    if module is None or not hasattr(module, "make_figures"):
      raise ValueError(f"{workdir}/summary.json: unknown experiment {name!r}")
    pngs += [str(p) for p in module.make_figures(os.fspath(workdir))]
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
