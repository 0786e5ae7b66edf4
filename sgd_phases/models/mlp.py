"""Fully connected network (MLP).

Synopsis::

    from sgd_phases.models import get_model
    mlp = get_model("mlp", num_classes=10, width=512, depth=2, activation="relu")
    variables = mlp.init(jax.random.key(0), x)       # x: [B, d] or [B, H, W, C]
    logits = mlp.apply(variables, x)                  # [B, 10]
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from sgd_phases.models import layers

ACTIVATIONS = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "gelu": nn.gelu,
    "sigmoid": nn.sigmoid,
    "silu": nn.silu,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
    "identity": lambda x: x,
}


class MLP(nn.Module):
  """Fully connected network: flatten -> depth x [Dense(width), activation] -> Dense(K).

  Kernels use flax's default LeCun-normal init, biases zero.
  """

  num_classes: int
  width: int = 512
  depth: int = 2
  activation: str = "relu"
  uses_batch_stats: ClassVar[bool] = False

  def __post_init__(self) -> None:
    layers.check_num_classes(self.num_classes)
    layers.check_positive_int(self.width, "width")
    layers.check_positive_int(self.depth, "depth", minimum=0)
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    act = ACTIVATIONS[self.activation]
    x = layers.as_float_vectors(x)
    for _ in range(self.depth):
      x = act(nn.Dense(self.width)(x))
    return nn.Dense(self.num_classes)(x)
