"""A user model's identity: a hash of the source code that defines it.

    source.fingerprint(WideMLP)                        # 16 hex digits
    source.fingerprint(functools.partial(WideMLP, width=1024))

What is hashed: the class's module and qualified name, the arguments of any
``functools.partial`` around it, the source text of the module file that defines it, and the
source of every module of *user code* that this module reaches through its globals (imported
modules, imported functions and classes), transitively. User code: a module of the same
top-level package, or any module whose file lies outside the Python installation's library
folders (standard library, site-packages) and outside ``sgd_phases``. A class typed into an
interactive session (no module file: a notebook cell) is hashed by its own source (or, where
Python keeps none, its methods' code objects) and its fields' defaults.

Why the source and not the parameter shapes (``jax.eval_shape`` of ``init``) and the class's
name: the shapes miss every change that keeps them (an activation, a normalisation, a
residual connection, the order of layers of one width), and they need the data's input shape,
which is not known when a workdir's identity is checked (before the data is loaded: a finished
run is returned without loading anything). The source catches all of these, and a changed
helper in the same file or in another module of the user's code. What it misses: changes
in installed libraries (flax, jax, a third-party layer package: as for the built-in models,
the library versions are not part of a run's identity), code reached only dynamically (a
module imported inside a function, ``getattr`` on a name built at run time, files or
environment variables read by the model), and a file edited after it was imported but before
the model was first resolved (the source on disk is hashed, the old code runs). It is
conservative where it errs: an edited comment or blank line is a different model (refused or
recomputed, never returned stale).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import re
import sys
import sysconfig
import types
from collections.abc import Callable
from typing import Any

_LIBRARY_DIRS = tuple(sorted({os.path.realpath(p) for k in ("stdlib", "platstdlib", "purelib",
                                                            "platlib")
                              if (p := sysconfig.get_paths().get(k))}))
_OWN_PACKAGE = "sgd_phases"


def fingerprint(constructor: Callable[..., Any]) -> str:
  """16 hex digits of sha256 over the code that defines ``constructor`` (module doc)."""
  h = hashlib.sha256()
  while isinstance(constructor, functools.partial):
    h.update(f"partial{_stable(constructor.args)}{_stable(constructor.keywords)}".encode())
    constructor = constructor.func
  cls = constructor
  h.update(f"{cls.__module__}:{cls.__qualname__}".encode())
  for name, text in _sources(cls):
    h.update(f"\0{name}\0{text}".encode())
  return h.hexdigest()[:16]


def _module_source(module: types.ModuleType | None) -> str | None:
  if module is None or not getattr(module, "__file__", None):
    return None
  try:
    return inspect.getsource(module)
  except (OSError, TypeError):
    return None


def _is_user_code(module: types.ModuleType, top: str) -> bool:
  name = module.__name__
  if name == _OWN_PACKAGE or name.startswith(_OWN_PACKAGE + "."):
    return False
  if name.partition(".")[0] == top:
    return True
  file = getattr(module, "__file__", None)
  if not file:
    return False
  file = os.path.realpath(file)
  return not any(file.startswith(d + os.sep) for d in _LIBRARY_DIRS)


def _reached_modules(module: types.ModuleType) -> list[types.ModuleType]:
  """``module`` and the user-code modules reachable from it through module globals."""
  top = module.__name__.partition(".")[0]
  seen = {module.__name__: module}
  todo = [module]
  while todo:
    for value in list(vars(todo.pop()).values()):
      dep = value if isinstance(value, types.ModuleType) else sys.modules.get(
          getattr(value, "__module__", None) or "")
      if (isinstance(dep, types.ModuleType) and dep.__name__ not in seen
          and _is_user_code(dep, top)):
        seen[dep.__name__] = dep
        todo.append(dep)
  return list(seen.values())


def _sources(cls: type) -> list[tuple[str, str]]:
  """(name, source text) of everything hashed for ``cls``, in a stable order."""
  module = sys.modules.get(cls.__module__)
  defined_there = getattr(module, cls.__qualname__.partition(".")[0], None) is not None
  if not defined_there or _module_source(module) is None:  # typed into an interactive session
    own = [c for c in cls.__mro__ if c.__module__ == cls.__module__]
    return [(c.__qualname__, _class_source(c)) for c in own]
  out = {}
  for m in _reached_modules(module):
    text = _module_source(m)
    if text is not None:
      out[m.__name__] = text
  return sorted(out.items())


def _class_source(cls: type) -> str:
  """A class without a module file: its source where Python kept it, else its methods' code;
  and its attributes' values (the fields' defaults)."""
  try:
    text = inspect.getsource(cls)
  except (OSError, TypeError):
    text = ""
  parts = [text]
  for k, v in sorted(vars(cls).items()):
    if k.startswith("__") and k not in ("__call__", "__init__", "__post_init__"):
      continue
    fn = getattr(v, "__func__", getattr(v, "fget", v))
    if isinstance(fn, types.FunctionType):
      parts.append(f"{k}={'' if text else _function_source(fn)}")
    else:
      parts.append(f"{k}={_stable(v)}")
  return "\n".join(parts)


def _function_source(fn: types.FunctionType) -> str:
  fn = inspect.unwrap(fn)  # flax wraps __call__ and setup
  try:
    return inspect.getsource(fn)
  except (OSError, TypeError):
    return _code_text(fn.__code__)


def _code_text(code: types.CodeType) -> str:
  """A code object's bytecode, names and constants (nested code included): stable across
  processes of one Python version, unlike ``marshal``."""
  consts = [_code_text(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
  return f"{code.co_code.hex()}|{code.co_names}|{code.co_varnames}|{consts}"


def _stable(v: Any) -> str:
  """A text of ``v`` that is the same in every process (no memory addresses)."""
  if isinstance(v, (list, tuple)):
    return f"{type(v).__name__}[{','.join(_stable(x) for x in v)}]"
  if isinstance(v, dict):
    return "{" + ",".join(f"{_stable(k)}:{_stable(x)}" for k, x in sorted(
        v.items(), key=lambda kv: repr(kv[0]))) + "}"
  if isinstance(v, functools.partial):
    return f"partial({_stable(v.func)},{_stable(v.args)},{_stable(v.keywords)})"
  if isinstance(v, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)):
    return f"{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', v.__name__)}"
  if callable(v) and hasattr(v, "__qualname__"):  # e.g. jax.nn.relu (a custom_jvp object)
    return f"{getattr(v, '__module__', '')}.{v.__qualname__}"
  return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(v))
