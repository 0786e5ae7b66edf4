"""Shared command-line entry point of the experiments (absl + ml_collections config files).

Each ``experiments/<name>.py`` ends with::

    if __name__ == "__main__":
      cli.main(__file__, run)

so that ``python -m experiments.<name> --workdir=DIR --config.num_seeds=8`` runs the default
config, and ``--config=experiments/<name>.py:quick`` (big_vision style) passes ``"quick"`` to
that module's ``get_config(arg)``.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from typing import Any, Callable

import ml_collections

from sgd_phases import preemption

_COMMAND: list[str] = []  # the command line of this process, when started by ``main``


def command() -> str | None:
  """The command line that started this process through :func:`main` (``python -m
  experiments.<name> ...``), or None when the experiment was called from Python."""
  return _COMMAND[0] if _COMMAND else None


def parse_arg(arg: str | None) -> set[str]:
  """``"mnist_mlp,quick"`` -> {"mnist_mlp", "quick"} (the ``:arg`` of --config=file.py:arg)."""
  return {a.strip() for a in (arg or "").split(",") if a.strip()}


def main(module_file: str, run: Callable[[ml_collections.ConfigDict, str], dict[str, Any]]
         ) -> None:
  """Defines --config and --workdir, runs ``run(config, workdir)``, prints its summary."""
  from absl import app, flags
  from ml_collections import config_flags

  flags.DEFINE_string("workdir", None, "Output folder (results.npz, figures, summary.json).")
  config_flags.DEFINE_config_file("config", os.path.abspath(module_file),
                                  "Experiment config: path.py[:arg].", lock_config=True)
  flags.mark_flags_as_required(["workdir"])

  module = os.path.splitext(os.path.relpath(os.path.abspath(module_file)))[0].replace(os.sep, ".")
  _COMMAND[:] = [shlex.join(["python", "-m", module] + sys.argv[1:])]

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    try:
      summary = run(flags.FLAGS.config, flags.FLAGS.workdir)
    except preemption.Preempted as e:  # SIGTERM: checkpointed; the same command resumes
      logging.warning("%s", e)
      sys.exit(preemption.EXIT_CODE)
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))

  app.run(_main)
