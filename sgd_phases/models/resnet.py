"""CIFAR pre-activation ResNet (ResNet-v2; He et al. 2016, "Identity Mappings in Deep ResNets").

Synopsis::

    from sgd_phases.models import get_model
    model = get_model("resnet20", num_classes=2)                    # 3 stages x 3 blocks
    variables = model.init(jax.random.key(0), x)                    # {'params', 'batch_stats'}
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    small = get_model("resnet20", num_classes=2, stage_sizes=(3,))  # 1-stage rung of a ladder

Layout: Conv 3x3 (``width`` ch, no BN after it) -> stages of basic pre-activation blocks with
``width * 2**i`` channels (first block of stages i > 0 has stride 2) -> BN -> ReLU -> global
average pool -> Dense(K). Block: y = BN-ReLU(x); out = conv3x3(BN-ReLU(conv3x3_s(y))) + shortcut,
with shortcut = x (identity) when the shape is kept, else a 1x1 strided projection conv of y
("option B", as in He et al. and the TF/Keras reproduction). Convs have no bias (each feeds a
BatchNorm), He-normal init; 3x3 convs use symmetric padding 1 (PyTorch-style, so stride-2 convs
and the strided 1x1 shortcut sample the same pixels). BatchNorm: momentum 0.9, eps 1e-5.
resnet20 has 271,762 parameters for K = 2 (272,282 for K = 10), see tests/test_models.py.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax

from sgd_phases.models import layers

_PAD1 = ((1, 1), (1, 1))
_he = nn.initializers.he_normal()


class PreActBlock(nn.Module):
  """Basic pre-activation residual block (two 3x3 convs)."""

  features: int
  strides: int = 1
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
    conv = functools.partial(
        layers.Conv, use_bias=False, conv_impl=self.conv_impl, kernel_init=_he
    )
    y = nn.relu(norm()(x))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = conv(self.features, 1, self.strides, padding="VALID", name="proj")(y)
    y = conv(self.features, 3, self.strides, padding=_PAD1)(y)
    y = nn.relu(norm()(y))
    y = conv(self.features, 3, 1, padding=_PAD1)(y)
    return y + shortcut


class ResNet(nn.Module):
  """Pre-activation CIFAR ResNet (see module docstring).

  Attributes:
    num_classes: K.
    stage_sizes: blocks per stage; (3, 3, 3) is ResNet-20 (6n + 2 layers with n = 3).
    width: channels of the stem and first stage (doubles at every later stage).
    conv_impl: "auto", "lax", "patches" or "shifted" (see ``models.layers``).
  """

  num_classes: int
  stage_sizes: Sequence[int] = (3, 3, 3)
  width: int = 16
  conv_impl: str = "auto"
  uses_batch_stats: ClassVar[bool] = True

  def __post_init__(self) -> None:
    layers.check_num_classes(self.num_classes)
    layers.check_positive_int(self.width, "width")
    try:
      sizes = tuple(self.stage_sizes)
    except TypeError:
      raise ValueError(
          f"stage_sizes must be a sequence of ints, got {self.stage_sizes!r}"
      ) from None
    if not sizes:
      raise ValueError("stage_sizes must not be empty")
    for size in sizes:
      layers.check_positive_int(size, "stage_sizes")
    layers.resolve_conv_impl(self.conv_impl)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = layers.as_float_images(x)
    x = layers.Conv(
        self.width, 3, padding=_PAD1, use_bias=False, conv_impl=self.conv_impl, kernel_init=_he
    )(x)
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = PreActBlock(self.width * 2**i, strides, self.conv_impl)(x, train)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x)
    return nn.Dense(self.num_classes)(layers.global_avg_pool(x))


ResNet20 = functools.partial(ResNet, stage_sizes=(3, 3, 3))
