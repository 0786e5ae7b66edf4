"""Small-image VGG-11 with BatchNorm.

Synopsis::

    from sgd_phases.models import get_model, has_batch_stats
    model = get_model("vgg11", num_classes=2, width=0.25)
    variables = model.init(jax.random.key(0), x)                 # {'params', 'batch_stats'}
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    logits = model.apply(variables, x)                            # eval: running averages

Config [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M] with every conv 3x3 SAME without
bias -> BatchNorm(momentum 0.9) -> ReLU, channels scaled by ``width``. A max-pool ("M") is skipped
when the map is already smaller than 2x2 (28x28 input: 28 -> 14 -> 7 -> 3 -> 1, last pool
skipped; 32x32: five pools to 1x1). Classifier: global average pool -> Dense(K) (identical to
flatten when the map is 1x1). Convs use He-normal init.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import flax.linen as nn
import jax

from sgd_phases.models import layers

VGG11_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
  """VGG with BatchNorm for small images (see module docstring).

  Attributes:
    num_classes: K.
    width: channel multiplier (channels = max(1, round(c * width))).
    conv_impl: "auto", "lax", "patches" or "shifted" (see ``models.layers``).
  """

  num_classes: int
  width: float = 1.0
  conv_impl: str = "auto"
  uses_batch_stats: ClassVar[bool] = True

  def __post_init__(self) -> None:
    layers.check_num_classes(self.num_classes)
    if isinstance(self.width, bool) or not isinstance(self.width, int | float) or self.width <= 0:
      raise ValueError(f"width must be a positive number, got {self.width!r}")
    layers.resolve_conv_impl(self.conv_impl)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = layers.as_float_images(x)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
    for item in VGG11_CFG:
      if item == "M":
        if min(x.shape[1:3]) >= 2:
          x = layers.max_pool_2x2(x)
        continue
      features = max(1, round(item * self.width))
      x = layers.Conv(
          features,
          3,
          use_bias=False,
          conv_impl=self.conv_impl,
          kernel_init=nn.initializers.he_normal(),
      )(x)
      x = nn.relu(norm()(x))
    return nn.Dense(self.num_classes)(layers.global_avg_pool(x))


VGG11 = VGG
