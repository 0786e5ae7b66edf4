"""Sweep grids: config overrides by field name, their Cartesian product, point folder names.

    grid = grid_lib.make_grid(config, {"label_noise": [0.0, 0.2], "learning_rate": [0.01, 0.1]})
    config_at = grid_lib.apply_overrides(config, grid[0])   # a copy with one point's values
    grid_lib.point_name(grid[0])                            # its folder name

Field names (``resolve_field``): a dotted path that exists in the config is used as is;
otherwise the name is matched against the *ends* of every field path and the shallowest match
wins (``label_noise`` -> ``dataset.label_noise``, ``learning_rate`` -> ``optimizer.learning_rate``
rather than ``references.linear.optimizer.learning_rate``); two equally shallow matches or none
are a ValueError naming the field. Values are converted to the field's type (``convert_value``).
"""

from __future__ import annotations

import ast
import copy
import itertools
import re
import zlib
from typing import Any, Mapping, Sequence

import ml_collections

_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  out = []
  for k, v in config.items():
    out += _paths(v, f"{prefix}{k}.") if isinstance(v, ml_collections.ConfigDict) else []
    out.append(f"{prefix}{k}")
  return out


def _node(config: ml_collections.ConfigDict, path: str) -> tuple[Any, str]:
  *parents, leaf = path.split(".")
  node = config
  for p in parents:
    node = node[p]
  return node, leaf


def resolve_field(config: ml_collections.ConfigDict, name: str) -> str:
  """The dotted config path that sweep field ``name`` denotes (rule: module docstring)."""
  paths = _paths(config)
  if name in paths:
    return name
  matches = [p for p in paths if p.endswith("." + name)]
  if not matches:
    raise ValueError(f"sweep field {name!r}: no such config field")
  depth = min(p.count(".") for p in matches)
  best = [p for p in matches if p.count(".") == depth]
  if len(best) > 1:
    raise ValueError(f"sweep field {name!r} is ambiguous: {best}; give the dotted path")
  return best[0]


def convert_value(config: ml_collections.ConfigDict, path: str, value: Any) -> Any:
  """``value`` (a command-line string or a JSON value) as the type of field ``path``."""
  node, leaf = _node(config, path)
  kind = node.get_type(leaf) if isinstance(node, ml_collections.ConfigDict) else type(node[leaf])
  text = value.strip() if isinstance(value, str) else None
  try:
    if kind is bool:
      return value if isinstance(value, bool) else _BOOLS[(text or "").lower()]
    if kind in (int, float):
      out = kind(text if text is not None else value)
      if isinstance(value, bool) or (text is None and out != value):
        raise ValueError(value)
      return out
    if kind is str:
      if text is None:
        raise ValueError(value)
      return value
    if kind in (list, tuple):
      out = ast.literal_eval(text) if text is not None else value
      if not isinstance(out, (list, tuple)):
        raise ValueError(value)
      return kind(out)
    if text is not None and node[leaf] is None:  # untyped placeholder: a literal, else text
      try:
        return ast.literal_eval(text)
      except (ValueError, SyntaxError):
        return value
    return value
  except (KeyError, TypeError, ValueError, SyntaxError) as e:
    raise ValueError(f"sweep field {path}: cannot use {value!r} for a {kind.__name__} "
                     "field") from e


def make_grid(config: ml_collections.ConfigDict,
              sweep: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """Cartesian product of ``sweep`` (field -> values): one {dotted path: value} per point."""
  if not sweep:
    raise ValueError("sweep: no fields to sweep (give --sweep.<field>=v1,v2 or --sweep_file)")
  axes: dict[str, list[Any]] = {}
  for name, values in sweep.items():
    path = resolve_field(config, name)
    if path in axes:
      raise ValueError(f"sweep field {name!r}: {path} is swept twice")
    if isinstance(values, (str, bytes)) or not len(values):
      raise ValueError(f"sweep field {name!r}: needs a non-empty list of values")
    axes[path] = [convert_value(config, path, v) for v in values]
  return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def format_value(v: Any) -> str:
  """A grid value as short text (folder names, labels)."""
  return repr(v) if isinstance(v, float) else str(v)


def point_name(overrides: Mapping[str, Any]) -> str:
  """Filesystem-safe folder name, e.g. ``dataset.label_noise=0.1,optimizer.learning_rate=0.01``."""
  name = ",".join(f"{k}={format_value(v)}" for k, v in overrides.items())
  name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)
  if len(name) > 180:
    name = f"{name[:150]}-{zlib.crc32(name.encode()):08x}"
  return name


def switch(config: ml_collections.ConfigDict, path: str, value: Any) -> bool:
  """Sets ``path`` to ``value`` in place where that switches a section to another kind, as on
  the command line (``sgd_phases.cli``): ``dataset.name`` -> the new dataset's defaults with the
  old section's common fields (``datasets.COMMON_FIELDS``, kept as references so that derived
  fields follow); ``[<section>.]model`` -> that model with its own defaults (``model_kwargs``
  emptied). True where it did (a different value of such a field); else nothing changes."""
  node, leaf = _node(config, path)
  if path == "dataset.name" and value != config.dataset.get("name"):
    from sgd_phases import datasets  # local import: grids stay light
    old = config.dataset
    config.dataset = datasets.default_config(value)
    for k in (k for k in datasets.COMMON_FIELDS if k in old):
      config.dataset[k] = old[k] if old[k] is None else old.get_ref(k)
    return True
  if (leaf == "model" and isinstance(node, ml_collections.ConfigDict)
      and "model_kwargs" in node and value != node.model):
    node.model = value
    node.model_kwargs = ml_collections.ConfigDict({}, type_safe=False)
    return True
  return False


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of ``config`` with the overrides set (the input is not modified), by the command
  line's rules: another dataset or model first (:func:`switch`: its own defaults), then every
  other field, so that ``model_kwargs.width`` at the same point sets the new model's option.
  The copy keeps the config's references, so a derived field (a FieldReference such as
  sequence_phases' ``dataset.train_size``) follows an override of its sources."""
  c = copy.deepcopy(config)
  c.unlock()
  for path, value in [(p, v) for p, v in overrides.items() if not switch(c, p, v)]:
    node, leaf = _node(c, path)
    node[leaf] = value
  return c
