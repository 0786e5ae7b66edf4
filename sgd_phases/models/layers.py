"""Shared building blocks: a convolution with two interchangeable implementations, pooling, checks.

Synopsis::

    from sgd_phases.models import layers
    y = layers.Conv(32, conv_impl="patches")(x)     # same params as conv_impl="lax"
    y = layers.max_pool_2x2(y)                      # 2x2 / stride 2, floor ("VALID") pooling

``Conv`` owns the same parameters as ``flax.linen.Conv`` (``kernel`` [kh, kw, Cin, Cout] and
``bias`` [Cout]) and computes either with ``lax.conv_general_dilated`` ("lax", what ``nn.Conv``
does) or as im2col ("patches": the kh·kw shifted slices of the padded input are concatenated on
the channel axis and multiplied by the kernel reshaped to [kh·kw·Cin, Cout]). Both give the same
outputs for the same parameters, so checkpoints are interchangeable. "auto" picks per backend,
see ``resolve_conv_impl``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "lax", "patches")
Padding = str | Sequence[tuple[int, int]]
Initializer = Callable[..., jax.Array]


def resolve_conv_impl(conv_impl: str) -> str:
  """Maps "auto" to a concrete implementation for the default JAX backend.

  "auto" = "patches" on CPU, "lax" elsewhere. Measured with ``python -m
  benchmarks.conv_impl_bench`` (paper_cnn, batch 64, 28x28x1, forward+backward, jit, median of
  interleaved rounds) on the project's 2-core CPU, shared with other jobs so numbers are noisy;
  steps/s lax vs patches (see benchmarks/results/conv_impl_cpu.json):
    one seed:          lax 26.2  vs patches 31.5   (patches 1.20x)
    vmap over 4 seeds: lax  2.36 vs patches  3.36  (patches 1.42x; vmap turns lax convs into
                       grouped convolutions, patches into batched matmuls)
  On GPU/TPU the native convolution (cuDNN / XLA TPU) is the fast path, hence "lax" there.
  """
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
  if conv_impl == "auto":
    return "patches" if jax.default_backend() == "cpu" else "lax"
  return conv_impl


def _pairs(value: int | Sequence[int], name: str) -> tuple[int, int]:
  pair = (value, value) if isinstance(value, int) else tuple(value)
  if len(pair) != 2 or any(int(v) < 1 for v in pair):
    raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
  return int(pair[0]), int(pair[1])


def im2col(
    x: jax.Array,
    kernel_size: tuple[int, int],
    strides: tuple[int, int],
    pads: Sequence[tuple[int, int]],
) -> jax.Array:
  """[B, H, W, C] -> [B, Ho, Wo, kh·kw·C] patches, ordered (kh, kw, C) like a reshaped HWIO kernel.

  Built from strided slices and one concatenation: on CPU this is cheaper than
  ``lax.conv_general_dilated_patches`` (itself a convolution with a one-hot kernel).
  """
  kh, kw = kernel_size
  sh, sw = strides
  (pt, pb), (pl, pr) = pads
  if pt or pb or pl or pr:
    x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  height, width = x.shape[1], x.shape[2]
  out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
  if out_h < 1 or out_w < 1:
    raise ValueError(f"x: spatial size {x.shape[1:3]} is too small for a {kernel_size} kernel")
  cols = [
      lax.slice(
          x,
          (0, i, j, 0),
          (x.shape[0], i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, x.shape[3]),
          (1, sh, sw, 1),
      )
      for i in range(kh)
      for j in range(kw)
  ]
  return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


class Conv(nn.Module):
  """2-D convolution on NHWC input with ``nn.Conv``'s parameters and a choice of implementation.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw) or an int.
    strides: (sh, sw) or an int.
    padding: "SAME", "VALID" or explicit ((top, bottom), (left, right)).
    use_bias: add a learned bias.
    conv_impl: "lax" (``lax.conv_general_dilated``), "patches" (im2col + matmul) or "auto".
    kernel_init / bias_init: initialisers (defaults as ``nn.Conv``).
  """

  features: int
  kernel_size: int | Sequence[int] = 3
  strides: int | Sequence[int] = 1
  padding: Padding = "SAME"
  use_bias: bool = True
  conv_impl: str = "auto"
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"x must be rank-4 NHWC, got shape {x.shape}")
    impl = resolve_conv_impl(self.conv_impl)
    kh, kw = _pairs(self.kernel_size, "kernel_size")
    strides = _pairs(self.strides, "strides")
    in_features = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (kh, kw, in_features, self.features))
    if isinstance(self.padding, str):
      pads = lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, self.padding)
    else:
      pads = tuple(tuple(int(v) for v in p) for p in self.padding)
    if impl == "lax":
      y = lax.conv_general_dilated(
          x, kernel, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
    else:
      patches = im2col(x, (kh, kw), strides, pads)
      y = patches @ kernel.reshape(kh * kw * in_features, self.features)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,))
      y = y + bias.reshape((1, 1, 1, self.features))
    return y


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pool with stride 2 and floor rounding (= ``nn.max_pool(x, (2, 2), (2, 2))``).

  Written as crop + reshape + max instead of ``lax.reduce_window``: on CPU the backward pass of
  reduce_window (select-and-scatter) was ~5x slower (26x26x32 maps, batch 64: 9.7 ms vs 2.0 ms).
  Gradients agree except on exact ties inside a window (here shared equally, there to one element).
  """
  batch, height, width, channels = x.shape
  h2, w2 = height // 2, width // 2
  x = x[:, : 2 * h2, : 2 * w2, :]
  return jnp.max(x.reshape(batch, h2, 2, w2, 2, channels), axis=(2, 4))


def as_float_images(x: Any) -> jax.Array:
  """Checks rank-4 NHWC input and casts it to float32."""
  x = jnp.asarray(x)
  if x.ndim != 4:
    raise ValueError(f"x must be a rank-4 NHWC image batch, got shape {x.shape}")
  return x.astype(jnp.float32)


def as_float_vectors(x: Any) -> jax.Array:
  """Flattens everything after the batch axis: [B, ...] -> [B, d] float32."""
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise ValueError(f"x must have a batch axis and at least one feature axis, got {x.shape}")
  return x.reshape(x.shape[0], -1).astype(jnp.float32)


def global_avg_pool(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, C]."""
  return jnp.mean(x, axis=(1, 2))


def check_positive_int(value: Any, name: str, minimum: int = 1) -> None:
  """Raises ValueError naming ``name`` unless ``value`` is an int >= minimum."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_num_classes(num_classes: int) -> None:
  """Raises ValueError unless num_classes is an int >= 2 (binary tasks use K = 2 logits)."""
  check_positive_int(num_classes, "num_classes", minimum=2)
