"""Optimizers from config: optax SGD (momentum, Nesterov, weight decay, schedules) or Adam(W).

    tx = optim.make_optimizer(config.optimizer, num_steps=config.num_steps)
"""

from __future__ import annotations

from typing import Any, Mapping

import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")


def _get(cfg: Mapping[str, Any], name: str, default: Any) -> Any:
  value = cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)
  return default if value is None else value


def make_schedule(cfg: Mapping[str, Any], num_steps: int) -> optax.Schedule:
  """Learning-rate schedule named by ``cfg.schedule``."""
  lr = float(_get(cfg, "learning_rate", 0.1))
  name = _get(cfg, "schedule", "constant")
  warmup = int(_get(cfg, "warmup_steps", 0))
  if name == "constant":
    return optax.constant_schedule(lr)
  if name == "cosine":
    return optax.cosine_decay_schedule(lr, max(num_steps, 1))
  if name == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(num_steps, warmup + 1))
  if name == "step":
    # Divide by 10 at 50% and 75% of training (the classic CIFAR ResNet recipe).
    return optax.piecewise_constant_schedule(
        lr, {int(num_steps * 0.5): 0.1, int(num_steps * 0.75): 0.1})
  raise ValueError(f"optimizer.schedule={name!r} is not one of {SCHEDULES}")


def make_optimizer(cfg: Mapping[str, Any], num_steps: int) -> optax.GradientTransformation:
  """optax transformation named by ``cfg.name`` (sgd | adam | adamw)."""
  name = _get(cfg, "name", "sgd")
  schedule = make_schedule(cfg, num_steps)
  wd = float(_get(cfg, "weight_decay", 0.0))
  if name == "sgd":
    momentum = float(_get(cfg, "momentum", 0.0))
    tx = optax.sgd(schedule, momentum=momentum or None,
                   nesterov=bool(_get(cfg, "nesterov", False)))
    return optax.chain(optax.add_decayed_weights(wd), tx) if wd else tx
  if name == "adam":
    tx = optax.adam(schedule)
    return optax.chain(optax.add_decayed_weights(wd), tx) if wd else tx
  if name == "adamw":
    return optax.adamw(schedule, weight_decay=wd)
  raise ValueError(f"optimizer.name={name!r} is not one of {OPTIMIZERS}")


def optimizer_key(cfg: Mapping[str, Any], num_steps: int) -> tuple[Any, ...] | None:
  """A hashable value equal for two (config, num_steps) that ``make_optimizer`` turns into the
  same optimizer; None when a field's value is not hashable."""
  items = tuple(sorted((str(k), v) for k, v in dict(cfg).items()))
  try:
    hash(items)
  except TypeError:
    return None
  return ("optimizer", items, int(num_steps))
