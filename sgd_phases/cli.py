"""Shared command-line entry point of the experiments (absl + ml_collections config files).

Each ``experiments/<name>.py`` ends with::

    if __name__ == "__main__":
      cli.main(__file__, run)

so that ``python -m experiments.<name> --workdir=DIR --config.num_seeds=8`` runs the default
config, and ``--config=experiments/<name>.py:quick`` (big_vision style) passes ``"quick"`` to
that module's ``get_config(arg)``. The one flag parser (:func:`parse_flags`, also the sweep's):
``--config.dataset.name=NAME`` switches the dataset section to NAME's fields (its common fields
kept), so the flags of that dataset can follow, e.g. ``--config.dataset.name=npz
--config.dataset.data_dir=/data/mine``; ``--config.model=NAME`` switches to that model with its
defaults, and ``--config.model_kwargs.<option>=value`` sets any option the model accepts
(likewise ``--config.references.<name>.model...``), named in one error when it accepts none.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import os
import re
import shlex
import sys
from typing import Any, Callable, Sequence

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


# ------------------------------------------------------------- the one command-line parser
_CONFIG_FLAGS = re.compile(r"--config(\.dataset\.name|\.(?:\w+\.)*?model"
                           r"|\.(?:\w+\.)*?model_kwargs\.\w+)?$")
_SPEC: list[str] = []  # the --config=path.py[:arg] of this process, when parsed by parse_flags


def config_file() -> str | None:
  """The experiment file of ``--config=path.py[:arg]`` (without ``:arg``), once
  :func:`parse_flags` has run."""
  return _SPEC[0].partition(":")[0] if _SPEC else None


def _split(argv: Sequence[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
  """The flags :func:`prepare_config` applies itself (``--config``, ``--config.dataset.name``,
  ``--config.[<path>.]model``, ``--config.[<path>.]model_kwargs.<option>``) as (name without
  ``--``, value) in order (``--flag=v`` or ``--flag v``; None: a bare flag), and the rest."""
  mine, rest, i = [], [], 0
  while i < len(argv):
    name, eq, value = argv[i].partition("=")
    if not _CONFIG_FLAGS.match(name):
      rest.append(argv[i])
    elif eq:
      mine.append((name[2:], value))
    elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
      mine.append((name[2:], argv[i + 1]))
      i += 1
    else:
      mine.append((name[2:], None))
    i += 1
  return mine, rest


def _last_value(argv: Sequence[str], flag: str) -> str | None:
  """The value of the last ``--flag=value`` (or ``--flag value``) in ``argv``, else None."""
  value = None
  for i, a in enumerate(argv):
    if a.startswith(flag + "="):
      value = a[len(flag) + 1:]
    elif a == flag and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """``get_config(arg)`` (or ``get_config()``) of the config file ``path.py[:arg]``."""
  import importlib.util
  path, _, arg = spec.partition(":")
  loader = (importlib.util.spec_from_file_location("_experiment_config", path)
            if os.path.isfile(path) else None)
  if loader is None or not hasattr(loader.loader, "exec_module"):
    raise ValueError(f"--config={spec!r}: no config file {path!r} (expected path.py[:arg])")
  module = importlib.util.module_from_spec(loader)
  loader.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _node(config: ml_collections.ConfigDict, prefix: str, flag: str
          ) -> ml_collections.ConfigDict:
  """The config section at ``prefix`` (``""`` or ``"references.linear."``), which must hold a
  ``model`` and its ``model_kwargs``."""
  node = config
  for key in prefix.split(".")[:-1]:
    node = node.get(key) if isinstance(node, ml_collections.ConfigDict) else None
  if not isinstance(node, ml_collections.ConfigDict) or not {"model", "model_kwargs"} <= set(node):
    raise ValueError(f"--{flag}: config.{prefix}model does not exist")
  return node


def model_options(model: str, trained_on: str | None = None) -> dict[str, Any]:
  """{option: default} of every keyword ``model`` accepts in ``model_kwargs``: a registered
  (or import-path) model's, or, for a reference ``trained_on="closed_form"``, the closed-form
  predictor's."""
  from sgd_phases import models, sequence_references
  if trained_on == "closed_form":
    if model not in sequence_references.CLOSED_FORM:
      raise ValueError(f"model {model!r}: not a closed-form predictor "
                       f"{sequence_references.CLOSED_FORM}")
    return dict(sequence_references.CLOSED_FORM_KWARGS.get(model, {}))
  return models.model_defaults(model)


def model_option(config: ml_collections.ConfigDict, path: str, flag: str,
                 trained_on: str | None = None) -> tuple[ml_collections.ConfigDict, str, Any]:
  """(section, option, default) of model option ``path`` (``[<section>.]model_kwargs.<option>``,
  e.g. ``references.linear.model_kwargs.use_bias``): any keyword the section's model accepts
  (:func:`model_options`; ``trained_on``: the section's, if about to change), in its
  ``model_kwargs`` or not. One ValueError naming ``flag`` otherwise."""
  prefix, _, option = path.rpartition("model_kwargs.")
  node = _node(config, prefix, flag[2:])
  try:
    options = model_options(node.model, trained_on or node.get("trained_on"))
  except ValueError as e:
    raise ValueError(f"{flag}: {e}") from None
  if option not in options:
    raise ValueError(f"{flag}: {option!r} is not an option of model {node.model!r} (its "
                     f"options: {sorted(options)})")
  return node, option, options[option]


def add_model_options(config: ml_collections.ConfigDict, paths: Sequence[str], flag: str
                      ) -> None:
  """Adds each model option of ``paths`` (:func:`model_option`; e.g. a sweep's fields) that its
  ``model_kwargs`` lacks, at its default, so that it can be set like the others."""
  with config.unlocked():
    for path in paths:
      if "model_kwargs." in path:
        node, option, default = model_option(config, path, f"{flag}{path}")
        if option not in node.model_kwargs:
          node.model_kwargs = ml_collections.ConfigDict(
              {**node.model_kwargs.to_dict(), option: default}, type_safe=False)


def _parse_option(default: Any, text: str | None, flag: str) -> Any:
  """Command-line ``text`` as a value of a model option whose default is ``default``: a bool,
  the text itself for a string option, else a Python literal (lists become tuples; an int
  where the default is a float becomes a float; text where the default is None)."""
  if isinstance(default, bool):
    value = {"true": True, "1": True, "false": False, "0": False}.get(
        (text or "true").strip().lower())
    if value is None:
      raise ValueError(f"--{flag}={text!r}: expected True or False")
    return value
  if text is None:
    raise ValueError(f"--{flag}: needs a value (--{flag}=...)")
  if isinstance(default, str):
    return text
  try:
    value = ast.literal_eval(text.strip())
  except (ValueError, SyntaxError):
    if default is None or default is dataclasses.MISSING:
      return text
    raise ValueError(f"--{flag}={text!r}: not a value of the option's type "
                     f"(its default is {default!r})") from None
  if isinstance(value, list):
    value = tuple(value)
  if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  return value


def prepare_config(argv: Sequence[str], default_file: str | None = None
                   ) -> tuple[ml_collections.ConfigDict, str, list[str]]:
  """The config that ``--config.<field>=value`` flags then override, the ``path.py[:arg]`` it
  came from, and the flags left for absl (module doc). From ``argv``, in this order:

  * ``--config=path.py[:arg]`` (default ``default_file``): that file's ``get_config(arg)``;
  * ``--config.dataset.name=NAME`` (another dataset): the dataset section becomes NAME's
    defaults with the old section's common fields (``datasets.COMMON_FIELDS``);
  * ``--config.[<path>.]model=NAME`` (another model, e.g. ``references.linear.model``): that
    model with its own defaults (``model_kwargs`` emptied);
  * ``--config.[<path>.]model_kwargs.<option>=value``: any option the model accepts
    (:func:`model_options`), present in the file's ``model_kwargs`` or not; one ValueError
    naming the flag for an option the model does not accept.
  """
  from sgd_phases import grid
  mine, rest = _split(argv)
  spec = next((v for n, v in reversed(mine) if n == "config"), default_file)
  if not spec:
    raise ValueError("--config: required, an experiment config file path.py[:arg]")
  config = load_config_file(spec)
  for name, value in mine:
    if value is None and ".model_kwargs." not in name:
      raise ValueError(f"--{name}: needs a value (--{name}=...)")
  with config.unlocked():
    for name, value in mine:
      prefix = name[len("config."):-len("model")] if name.endswith(".model") else None
      if prefix is not None:
        _node(config, prefix, name)  # a section with a model, else one error naming the flag
      if name == "config.dataset.name" or prefix is not None:
        # another dataset or model: its own defaults (common dataset fields kept as references,
        # so that a derived field, e.g. sequence_phases' train_size, follows its sources)
        grid.switch(config, name[len("config."):], value)
    for name, value in mine:
      if ".model_kwargs." in name:
        path = name[len("config."):]
        trained_on = _last_value(rest, f"--config.{path.rpartition('model_kwargs.')[0]}trained_on")
        node, option, default = model_option(config, path, f"--{name}", trained_on)
        node.model_kwargs = ml_collections.ConfigDict(
            {**node.model_kwargs.to_dict(), option: _parse_option(default, value, name)},
            type_safe=False)
  return config, spec, rest


def parse_flags(argv: Sequence[str], default_file: str | None = None) -> list[str]:
  """The absl flags parser of every command (``app.run(main, flags_parser=...)``): defines
  ``--config`` as :func:`prepare_config`'s config, then parses the other flags; a bad flag ends
  the process with one line naming it (exit status 1)."""
  from absl import app
  from ml_collections import config_flags
  try:
    config, spec, rest = prepare_config(argv[1:], default_file)
  except ValueError as e:
    sys.stderr.write(f"FATAL Flags parsing error: {e}\n")
    sys.exit(1)
  _SPEC[:] = [spec]
  argv = [argv[0], *rest]  # (config_flags finds the overrides in sys_argv, default sys.argv)
  config_flags.DEFINE_config_dict("config", config, "Experiment config: path.py[:arg], then "
                                  "--config.<field>=value overrides.", lock_config=True,
                                  sys_argv=argv)
  return app.parse_flags_with_usage(argv)


def run_command(fn: Callable[[], Any]) -> Any:
  """``fn()`` as a command's body: a preemption (SIGTERM; checkpointed) ends the process with
  one logged line and exit status ``preemption.EXIT_CODE`` (75): the same command resumes."""
  try:
    return fn()
  except preemption.Preempted as e:
    logging.warning("%s", e)
    sys.exit(preemption.EXIT_CODE)


def main(module_file: str, run: Callable[[ml_collections.ConfigDict, str], dict[str, Any]]
         ) -> None:
  """Defines --config (:func:`parse_flags`) and --workdir, runs ``run(config, workdir)``, prints
  its summary."""
  from absl import app, flags

  flags.DEFINE_string("workdir", None, "Output folder (results.npz, figures, summary.json).")
  flags.DEFINE_bool("print_json", False, "Print the whole summary as JSON (default: a short "
                    "human summary; the JSON is always in WORKDIR/summary.json).")
  flags.mark_flags_as_required(["workdir"])
  module = os.path.splitext(os.path.relpath(os.path.abspath(module_file)))[0].replace(os.sep, ".")
  _COMMAND[:] = [shlex.join(["python", "-m", module] + sys.argv[1:])]

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    summary = run_command(lambda: run(flags.FLAGS.config, flags.FLAGS.workdir))
    if flags.FLAGS.print_json:
      print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
      print("\n".join(human_summary(summary, flags.FLAGS.workdir)))

  app.run(_main, flags_parser=lambda argv: parse_flags(argv, os.path.abspath(module_file)))
