"""Model zoo: a name -> constructor registry of flax.linen classifiers.

Synopsis::

    from sgd_phases import models
    model = models.get_model("paper_cnn", num_classes=2)            # conv_impl="auto"
    variables = model.init(jax.random.key(0), x)            # x: [B, H, W, C] (or [B, d] for MLPs)
    if models.has_batch_stats(model):                        # vgg11, resnet20
      logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    else:
      logits = model.apply(variables, x, train=True)         # [B, K] float32
    models.count_params(variables["params"])

Per-seed models: ``jax.vmap(model.init, in_axes=(0, None))(jax.random.split(key, S), x)`` gives
params (and batch_stats) with a leading seed axis.

Every model has ``__call__(x, train=False) -> logits [B, K]`` (``transformer``: tokens [B, T] ->
[B, T, V], scored at every position). ``linear``/``mlp`` flatten all axes
after the batch axis; conv models need rank-4 NHWC input. Binary tasks use K = 2 logits.

Registry (kwargs beyond ``num_classes``; see each class docstring):
  linear            flatten -> Dense(K); use_bias, init_scale, init_first (Theorem 1)
  mlp               width=512, depth=2 hidden layers, activation="relu"
  cnn               depth=3, channels=32, dense=256, num_pools=3, padding="SAME", conv_impl
  cnn1 ... cnn6     the complexity ladder: ``cnn`` with depth fixed to 1 ... 6
  paper_cnn         reproduction's CNN: 4 conv (32 ch, VALID) + 2 x Dense(2000); same kwargs as cnn
  vgg11             VGG-11 + BatchNorm for small images; width=1.0, conv_impl
  resnet20          pre-activation ResNet-20 (~0.27 M params); stage_sizes, width=16, conv_impl
  transformer       causal decoder: tokens [B, T] -> [B, T, K] (K = vocab); num_layers=2, d_model=64

``conv_impl`` (conv models): "auto" (default: "patches" on CPU, "lax" on GPU/TPU), "lax",
"patches" or "shifted"; same parameters for all, see ``sgd_phases.models.layers``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from sgd_phases.models import cnn, linear, mlp, resnet, source, transformer, vgg
from sgd_phases.models.layers import CONV_IMPLS, Conv, check_num_classes, resolve_conv_impl

PyTree = Any

MODELS: dict[str, Callable[..., nn.Module]] = {
    "linear": linear.Linear,
    "mlp": mlp.MLP,
    "cnn": cnn.CNN,
    **cnn.LADDER,
    "paper_cnn": cnn.PaperCNN,
    "vgg11": vgg.VGG11,
    "resnet20": resnet.ResNet20,
    "transformer": transformer.Transformer,
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)

# Preset keywords that define a registry entry and may not be overridden through get_model.
_FIXED_KWARGS: dict[str, tuple[str, ...]] = {name: ("depth",) for name in cnn.LADDER}


BUILTIN: tuple[str, ...] = tuple(MODELS)
# a user model's source hash (sgd_phases.models.source), recorded in a run's identity as
# ``model_fingerprint`` by ``workdir.pin``; built-in models have none (this package's code)
_FINGERPRINTS: dict[str, str] = {}
_IMPORTED: set[str] = set()  # names registered by import path (looked up again on every use)


def register(name: str, constructor: Callable[..., nn.Module], *, replace: bool = False) -> None:
  """Adds a model: ``constructor(num_classes=K, **model_kwargs)`` -> a Flax Linen module whose
  ``__call__(x, train=False)`` maps a batch to [B, K] logits (a Linen dataclass with a
  ``num_classes`` field, e.g. the class itself). Built-in names are not replaced.

  Registering a name again (a re-run notebook cell) with the same definition (the same
  :func:`fingerprint`) is a no-op; with another definition it replaces the old one, with a
  warning naming both fingerprints unless ``replace``: a run's identity records the
  fingerprint, so the old definition's runs are refused or recomputed, never returned for the
  new one (refusing would force a kernel restart for every edit of a notebook cell)."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"name: must be a non-empty string, got {name!r}")
  if name in BUILTIN:
    raise ValueError(f"name: model {name!r} is already registered (a built-in model)")
  cls = _module_class(constructor)
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
    raise ValueError(f"{name}: {constructor!r} is not a Flax Linen module class")
  if "num_classes" not in {f.name for f in dataclasses.fields(cls)}:
    raise ValueError(f"{name}: {cls.__name__} has no num_classes field (the number of logits)")
  fp = source.fingerprint(constructor)
  old = _FINGERPRINTS.get(name)
  if old is not None and old != fp and not replace:
    logging.warning("models.register: %r now names another definition (fingerprint %s -> %s); "
                    "runs of the old one will not be reused", name, old, fp)
  MODELS[name], _FINGERPRINTS[name] = constructor, fp


def fingerprint(name: str) -> str | None:
  """The source fingerprint of user model ``name`` (``sgd_phases.models.source``: what it
  hashes and why), None for a built-in model; one ValueError naming an unknown model."""
  resolve(name)
  return _FINGERPRINTS.get(name)


def resolve(name: str) -> Callable[..., nn.Module]:
  """The constructor of a registered model, or of ``package.module:ClassName`` (imported and
  registered under that name: ``--config.model=my_pkg.nets:WideMLP``; looked up in its module
  on every use, so a reloaded module's class is the one used and fingerprinted). One
  ValueError naming the model and the cause otherwise."""
  if isinstance(name, str) and name in MODELS and name not in _IMPORTED:
    return MODELS[name]
  if not (isinstance(name, str) and ":" in name):
    raise ValueError(f"{name!r}: not a registered model {sorted(MODELS)} nor an import path "
                     "package.module:ClassName")
  module_name, _, attr = name.partition(":")
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name is not None and (module_name + ".").startswith(e.name + "."):
      raise ValueError(f"{name!r}: no module named {e.name!r} (is its folder on sys.path / "
                       "PYTHONPATH?)") from None
    raise ValueError(f"{name!r}: importing {module_name} failed: {type(e).__name__}: {e}") from e
  except Exception as e:  # an error inside the user's module: report it, not "not found"
    raise ValueError(f"{name!r}: importing {module_name} failed: {type(e).__name__}: {e}") from e
  if not hasattr(module, attr):
    raise ValueError(f"{name!r}: module {module_name} has no attribute {attr!r}")
  obj = getattr(module, attr)
  if MODELS.get(name) is not obj:
    register(name, obj, replace=True)
    _IMPORTED.add(name)
  return obj


def _module_class(constructor: Callable[..., nn.Module]) -> type[nn.Module]:
  while isinstance(constructor, functools.partial):
    constructor = constructor.func
  return constructor  # type: ignore[return-value]


def model_kwargs(name: str) -> tuple[str, ...]:
  """The keyword arguments ``get_model(name, num_classes, **kwargs)`` accepts."""
  try:
    constructor = resolve(name)
  except ValueError as e:
    raise ValueError(f"name: unknown model {name!r}; registered models: {list(MODELS)} "
                     f"({e})") from None
  fields = dataclasses.fields(_module_class(constructor))
  skip = {"parent", "name", "num_classes", *_FIXED_KWARGS.get(name, ())}
  return tuple(f.name for f in fields if f.init and f.name not in skip)


def model_defaults(name: str) -> dict[str, Any]:
  """{keyword: default} of every keyword of ``model_kwargs(name)`` (a preset's own value where
  it sets one; ``dataclasses.MISSING`` for a keyword without a default)."""
  allowed = model_kwargs(name)
  constructor, preset = resolve(name), {}
  while isinstance(constructor, functools.partial):
    preset = {**constructor.keywords, **preset}  # the outermost preset wins
    constructor = constructor.func
  out = {}
  for f in dataclasses.fields(constructor):
    if f.name in allowed:
      default = (f.default if f.default_factory is dataclasses.MISSING  # type: ignore[misc]
                 else f.default_factory())  # type: ignore[misc]
      out[f.name] = preset.get(f.name, default)
  return out


def check_kwargs(name: str, kwargs: Any) -> None:
  """One ValueError naming the first key of ``kwargs`` that model ``name`` does not take."""
  allowed = model_kwargs(name)
  for key in kwargs:
    if key not in allowed:
      raise ValueError(f"{key}: unknown keyword argument for model {name!r}; allowed: {allowed}")


def get_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds registry model ``name`` with ``num_classes`` logits.

  Raises ValueError for an unknown ``name`` (listing the registry), an unknown or fixed keyword
  argument (naming it), ``num_classes`` < 2 or an invalid field value (naming the field).
  Lists in kwargs (e.g. from a ConfigDict) are turned into tuples so modules stay hashable.
  """
  check_kwargs(name, kwargs)
  check_num_classes(num_classes)
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  return resolve(name)(num_classes=num_classes, **kwargs)


def has_batch_stats(model: nn.Module) -> bool:
  """Whether ``model`` uses BatchNorm (a ``batch_stats`` collection, mutable in train mode)."""
  return bool(getattr(model, "uses_batch_stats", False))


def count_params(params: PyTree, *, stacked: bool = False) -> int:
  """Number of scalars in a parameter pytree (arrays or ShapeDtypeStructs).

  Pass ``variables["params"]`` to leave out ``batch_stats``. With ``stacked=True`` the leading
  (seed) axis of every leaf is ignored, giving the per-seed count of vmapped parameters.
  """
  leaves = jax.tree.leaves(params)
  return sum(math.prod(leaf.shape[1:] if stacked else leaf.shape) for leaf in leaves)


__all__ = [
    "CONV_IMPLS",
    "MODELS",
    "MODEL_NAMES",
    "Conv",
    "count_params",
    "fingerprint",
    "get_model",
    "has_batch_stats",
    "model_defaults",
    "model_kwargs",
    "register",
    "resolve",
    "resolve_conv_impl",
]
