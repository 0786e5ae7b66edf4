"""Plain CNNs: the complexity ladder (cnn1 ... cnn6) and the reproductions' ``paper_cnn``.

Synopsis::

    from sgd_phases.models import get_model
    g3 = get_model("cnn3", num_classes=2)                      # ladder rung: 3 conv layers
    f = get_model("paper_cnn", num_classes=2)                  # 4 conv + 2 x Dense(2000)
    variables = f.init(jax.random.key(0), x)                   # x: [B, 28, 28, 1] or [B, 32, 32, 3]
    logits = f.apply(variables, x)                             # [B, 2]

Layout of ``CNN``: ``depth`` x [Conv 3x3 (``channels``), ReLU], with a 2x2/stride-2 max-pool after
each of the first ``min(depth, num_pools)`` convs and the remaining ``num_pools - depth`` pools (if
any) after the last conv; then flatten -> ``dense`` hidden layers [Dense, ReLU] -> Dense(K).
With the ladder defaults (SAME padding, num_pools=3) every rung reaches the head at the same
resolution (28 -> 3x3, 32 -> 4x4), so the rungs differ only in conv depth, and depth > 3 keeps
convolving at that resolution. A pool is skipped if the map is already smaller than 2x2, so deep
or VALID variants stay valid on 28x28 and 32x32.

``paper_cnn`` is the TF/Keras reproduction's MNIST network (AurelienBoland/SGD-learns-functions-
of-increasing-complexity, ``paper_cnn_model``): 4 x [Conv 3x3, 32, ReLU] with max-pool after the
first two, flatten, Dense 2000 ReLU x 2, then K logits (their single sigmoid unit becomes K = 2
softmax logits). Keras' Conv2D defaults to padding="valid", so ``padding="VALID"`` by default:
28 -> 26 -> 13 -> 11 -> 5 -> 3 -> 1, i.e. 32 features reach the dense layers (32x32 input: 2x2x32).
Kernels use Glorot-uniform init (Keras' default) and zero biases, in the ladder too.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax

from sgd_phases.models import layers

_glorot = nn.initializers.glorot_uniform()


def _as_tuple(value: int | Sequence[int], length: int | None, name: str) -> tuple[int, ...]:
  """An int (repeated ``length`` times, or (value,) / () if length is None) or a sequence."""
  if isinstance(value, int) and not isinstance(value, bool):
    if length is None and value == 0:
      return ()
    values = (value,) * (1 if length is None else length)
  else:
    try:
      values = tuple(value)
    except TypeError:
      raise ValueError(f"{name} must be an int or a sequence of ints, got {value!r}") from None
    if length is not None and len(values) != length:
      raise ValueError(f"{name} must be an int or have {length} entries, got {value!r}")
  for v in values:
    layers.check_positive_int(v, name)
  return values


class CNN(nn.Module):
  """Plain CNN, see the module docstring for the layout and pooling rule.

  Attributes:
    num_classes: K (binary tasks use 2).
    depth: number of 3x3 conv layers (>= 1).
    channels: conv widths, an int for all layers or one int per layer.
    dense: hidden Dense widths after flattening: an int (0 = none) or a sequence.
    num_pools: number of 2x2 max-pools (see the placement rule above).
    padding: "SAME" or "VALID" for every conv.
    conv_impl: "auto", "lax", "patches" or "shifted" (see ``models.layers``).
  """

  num_classes: int
  depth: int = 3
  channels: int | Sequence[int] = 32
  dense: int | Sequence[int] = 256
  num_pools: int = 3
  padding: str = "SAME"
  conv_impl: str = "auto"
  uses_batch_stats: ClassVar[bool] = False

  def __post_init__(self) -> None:
    layers.check_num_classes(self.num_classes)
    layers.check_positive_int(self.depth, "depth")
    layers.check_positive_int(self.num_pools, "num_pools", minimum=0)
    _as_tuple(self.channels, self.depth, "channels")
    _as_tuple(self.dense, None, "dense")
    if self.padding not in ("SAME", "VALID"):
      raise ValueError(f"padding must be 'SAME' or 'VALID', got {self.padding!r}")
    layers.resolve_conv_impl(self.conv_impl)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no BatchNorm / dropout
    x = layers.as_float_images(x)
    channels = _as_tuple(self.channels, self.depth, "channels")
    pools_after = [1 if i < self.num_pools else 0 for i in range(self.depth)]
    pools_after[-1] += max(0, self.num_pools - self.depth)
    for width, num_pools in zip(channels, pools_after):
      if self.padding == "VALID" and min(x.shape[1:3]) < 3:
        raise ValueError(f"x: input {x.shape} too small for {self.depth} VALID 3x3 convs")
      x = layers.Conv(
          width, 3, padding=self.padding, conv_impl=self.conv_impl, kernel_init=_glorot
      )(x)
      x = nn.relu(x)
      for _ in range(num_pools):
        if min(x.shape[1:3]) >= 2:
          x = layers.max_pool_2x2(x)
    x = x.reshape(x.shape[0], -1)
    for width in _as_tuple(self.dense, None, "dense"):
      x = nn.relu(nn.Dense(width, kernel_init=_glorot)(x))
    return nn.Dense(self.num_classes, kernel_init=_glorot)(x)


# The reproduction's MNIST CNN (see module docstring). Kwargs may override any field.
PaperCNN = functools.partial(
    CNN, depth=4, channels=32, dense=(2000, 2000), num_pools=2, padding="VALID"
)

# Complexity ladder G_1 ⊂ G_2 ⊂ ...: CNNk has k conv layers (depth is fixed by the preset).
LADDER_DEPTHS = (1, 2, 3, 4, 5, 6)
LADDER = {f"cnn{k}": functools.partial(CNN, depth=k) for k in LADDER_DEPTHS}
