"""Shared command-line entry point of the experiments (absl + ml_collections config files).

Each ``experiments/<name>.py`` ends with::

    if __name__ == "__main__":
      cli.main(__file__, run)

so that ``python -m experiments.<name> --workdir=DIR --config.num_seeds=8`` runs the default
config, and ``--config=experiments/<name>.py:quick`` (big_vision style) passes ``"quick"`` to
that module's ``get_config(arg)``. ``--config.dataset.name=NAME`` switches the dataset section to
NAME's fields (its common fields kept), so the flags of that dataset can follow, e.g.
``--config.dataset.name=npz --config.dataset.data_dir=/data/mine``.
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


def _fmt(v: Any) -> str:
  return "nan" if not isinstance(v, (int, float)) or v != v else (
      f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}")


def _line(key: str, v: Any) -> str | None:
  """One line for a headline value: a {mean, lo, hi} summary, a value beside its null
  (stats.versus_null), or a scalar; None for anything else (tables, lists, metadata)."""
  if isinstance(v, dict) and {"mean", "lo", "hi"} <= set(v):
    return f"{key}: {_fmt(v['mean'])} [{_fmt(v['lo'])}, {_fmt(v['hi'])}] (n={v.get('n', '?')})"
  if isinstance(v, dict) and {"value", "null", "excess"} <= set(v):
    val, nul = v["value"], v["null"]
    return (f"{key}: {_fmt(val['mean'])} [{_fmt(val['lo'])}, {_fmt(val['hi'])}]; null "
            f"{_fmt(nul['mean'])}, excess {_fmt(v['excess']['mean'])}, p = {_fmt(nul['p_value'])}")
  if isinstance(v, bool) or (isinstance(v, (int, float)) and key not in ("num_seeds",)):
    return f"{key}: {v if isinstance(v, bool) else _fmt(v)}"
  return None


def human_summary(summary: dict[str, Any], workdir: str, max_lines: int = 25) -> list[str]:
  """A short console summary (at most ``max_lines``): what ran, its headline values with their
  intervals and nulls, where the files are. The whole summary is in ``summary.json``."""
  what = [str(summary[k]) for k in ("task", "dataset", "model") if summary.get(k)] + [
      f"{summary[k]} {k.split('_')[1]}" for k in ("num_seeds", "num_steps") if summary.get(k)
  ] + (["quick"] if summary.get("quick") else [])
  head = (f"{summary.get('experiment', '?')}" + (f" ({', '.join(what)})" if what else "")
          + (f" in {summary['wall_time_s']} s" if "wall_time_s" in summary else ""))
  skip = {"num_steps", "num_seeds", "quick", "wall_time_s", "identity", "command", "resolved",
          "figures"}
  lines = []
  for k, v in summary.items():
    if k in skip:
      continue
    rows = (list(v) if isinstance(v, list) else
            [{"": name, **r} for name, r in v.items()]
            if isinstance(v, dict) and all(isinstance(r, dict) for r in v.values()) else [])
    if rows and len(rows) <= 8 and all(isinstance(r, dict) and not {"mean", "value"} & set(r)
                                       for r in rows):
      for r in rows:  # a table (one row per noise rate, width, ...): label and main values
        label = next((f"{rk}={rv}".lstrip("=") for rk, rv in r.items()
                      if isinstance(rv, (int, float, str)) and not isinstance(rv, bool)), "")
        vals = [ln for rk, rv in list(r.items())[1:] for ln in [_line(rk, rv)] if ln]
        vals.sort(key=lambda ln: ("null" not in ln, "[" not in ln, "mu" not in ln))
        lines.append(f"{k}[{label}]: " + "; ".join(vals[:2]))
    elif (ln := _line(k, v)) is not None:
      lines.append(ln)
  tail = [f"files: {workdir}/summary.json (everything: --print_json)"] + [
      f"figure: {f}" for f in summary.get("figures", [])[:3]]
  room = max_lines - 1 - len(tail)
  if len(lines) > room:
    lines = lines[:room - 1] + [f"... {len(lines) - room + 1} more values in summary.json"]
  return [head] + lines + tail


def _dataset_name(argv: list[str]) -> str | None:
  """The value of ``--config.dataset.name`` in ``argv`` (the last one), or None."""
  name = None
  for i, a in enumerate(argv):
    if a.startswith("--config.dataset.name="):
      name = a.split("=", 1)[1]
    elif a == "--config.dataset.name" and i + 1 < len(argv):
      name = argv[i + 1]
  return name


def _config_for_dataset(argv: list[str], module_file: str, name: str
                        ) -> tuple[ml_collections.ConfigDict, list[str]]:
  """The config of ``--config=path.py[:arg]`` (or of ``module_file``) with its dataset section
  replaced by dataset ``name``'s defaults plus the old section's common fields; and ``argv``
  without ``--config=...`` (the config is then a config dict, not a file)."""
  import importlib.util

  from sgd_phases import datasets
  spec, rest, skip = None, [], False
  for i, a in enumerate(argv):
    if skip:
      skip = False
    elif a.startswith("--config="):
      spec = a.split("=", 1)[1]
    elif a == "--config" and i + 1 < len(argv):
      spec, skip = argv[i + 1], True
    else:
      rest.append(a)
  path, _, arg = (spec or os.path.abspath(module_file)).partition(":")
  loader = importlib.util.spec_from_file_location("_experiment_config", path)
  if loader is None:
    raise ValueError(f"--config={spec!r}: not a config file")
  module = importlib.util.module_from_spec(loader)
  loader.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  old = config.dataset.to_dict()
  config.dataset = datasets.default_config(name)
  config.dataset.update({k: old[k] for k in datasets.COMMON_FIELDS if k in old})
  return config, rest


def main(module_file: str, run: Callable[[ml_collections.ConfigDict, str], dict[str, Any]]
         ) -> None:
  """Defines --config and --workdir, runs ``run(config, workdir)``, prints its summary."""
  from absl import app, flags
  from ml_collections import config_flags

  flags.DEFINE_string("workdir", None, "Output folder (results.npz, figures, summary.json).")
  module = os.path.splitext(os.path.relpath(os.path.abspath(module_file)))[0].replace(os.sep, ".")
  _COMMAND[:] = [shlex.join(["python", "-m", module] + sys.argv[1:])]
  name = _dataset_name(sys.argv)
  if name is None:
    config_flags.DEFINE_config_file("config", os.path.abspath(module_file),
                                    "Experiment config: path.py[:arg].", lock_config=True)
  else:  # another dataset: its fields must exist before the flags that set them are parsed
    config, sys.argv[1:] = _config_for_dataset(sys.argv[1:], module_file, name)
    config_flags.DEFINE_config_dict("config", config, "Experiment config.", lock_config=True)
  flags.DEFINE_bool("print_json", False, "Print the whole summary as JSON (default: a short "
                    "human summary; the JSON is always in WORKDIR/summary.json).")
  flags.mark_flags_as_required(["workdir"])

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    try:
      summary = run(flags.FLAGS.config, flags.FLAGS.workdir)
    except preemption.Preempted as e:  # SIGTERM: checkpointed; the same command resumes
      logging.warning("%s", e)
      sys.exit(preemption.EXIT_CODE)
    if flags.FLAGS.print_json:
      print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
      print("\n".join(human_summary(summary, flags.FLAGS.workdir)))

  app.run(_main)
