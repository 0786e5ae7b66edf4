"""Tests for sgd_phases.models: registry, shapes, parameter counts, init, BatchNorm, convs."""

from __future__ import annotations

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgd_phases import models
from sgd_phases.models import layers

IMAGE_SHAPES = [(28, 28, 1), (32, 32, 3)]
CONV_MODELS = ["cnn", "paper_cnn", "vgg11", "resnet20"] + [f"cnn{k}" for k in range(1, 7)]
# Token models ([B, T] int -> [B, T, V]) are tested in tests/test_transformer.py.
SEQUENCE_MODELS = ("transformer",)
IMAGE_MODELS = [n for n in models.MODEL_NAMES if n not in SEQUENCE_MODELS]
# Smaller variants where a test does not depend on width/depth (the file must stay fast on CPU).
SMALL_KWARGS = {
    "vgg11": {"width": 0.125, "conv_impl": "lax"},  # its Conv impls: test_conv_matches_flax_conv
    "resnet20": {"width": 4, "stage_sizes": (1, 1)},  # keeps stem, identity + projection blocks
    "mlp": {"width": 32},
}


def _key(seed: int = 0) -> jax.Array:
  # "rbg" keys: on XLA:CPU, threefry random-bit kernels take seconds to compile per shape, which
  # dominated this file's runtime. Tests about init statistics use the default impl instead.
  return jax.random.key(seed, impl="rbg")


def _images(shape, batch=2, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal((batch, *shape)), jnp.float32)


def _init_and_apply(model, x, key=None):
  """init + eval-mode forward. Eager on purpose: XLA:CPU compiles of whole-model inits cost
  seconds each, while eager primitives are compiled once per shape and shared across models."""
  variables = model.init(_key() if key is None else key, x)
  return variables, model.apply(variables, x)


def _conv_kernels(params) -> list[jax.Array]:
  return [leaf for leaf in jax.tree.leaves(params) if leaf.ndim == 4]


# --- registry and shapes ----------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_model_shapes_on_mnist_and_cifar_inputs(name):
  # jax.eval_shape traces init and apply exactly as a real call would (shape errors surface),
  # without compiling; numerical runs follow below and in the BatchNorm / conv_impl tests.
  with jax.numpy_rank_promotion("raise"):
    for shape, k in itertools.product(IMAGE_SHAPES, (2, 10)):
      model = models.get_model(name, num_classes=k)
      variables, logits = jax.eval_shape(
          functools.partial(_init_and_apply, model), _images(shape), _key()
      )
      assert logits.shape == (2, k), (name, shape, k)
      assert logits.dtype == jnp.float32
      assert ("batch_stats" in variables) == models.has_batch_stats(model)


# resnet20 runs numerically in test_batchnorm_* and test_conv_impls_agree.
@pytest.mark.parametrize("name", [n for n in IMAGE_MODELS if n != "resnet20"])
def test_forward_runs_and_is_finite(name):
  with jax.numpy_rank_promotion("raise"):
    for shape in IMAGE_SHAPES:
      model = models.get_model(name, num_classes=2, **SMALL_KWARGS.get(name, {}))
      _, logits = _init_and_apply(model, _images(shape))
      assert logits.shape == (2, 2) and logits.dtype == jnp.float32
      assert bool(jnp.all(jnp.isfinite(logits)))
      assert float(jnp.max(jnp.abs(logits[0] - logits[1]))) > 0  # depends on the input


@pytest.mark.parametrize("name", ["linear", "mlp"])
def test_vector_models_accept_flat_and_image_input(name):
  model = models.get_model(name, num_classes=3, **SMALL_KWARGS.get(name, {}))
  x_img = _images((4, 4, 2))
  x_flat = x_img.reshape(2, -1)
  variables, logits = _init_and_apply(model, x_flat)
  assert logits.shape == (2, 3)
  np.testing.assert_allclose(model.apply(variables, x_img), logits, rtol=1e-6)
  # uint8 input is cast to float32.
  assert model.apply(variables, jnp.ones((2, 32), jnp.uint8)).dtype == jnp.float32


def test_registry_contents_and_batch_stats_flags():
  expected = {"linear", "mlp", "cnn", "paper_cnn", "vgg11", "resnet20", "transformer"}
  expected |= {f"cnn{k}" for k in range(1, 7)}
  assert set(models.MODEL_NAMES) == expected == set(models.MODELS)
  with_bn = {n for n in models.MODEL_NAMES if models.has_batch_stats(models.get_model(n, 2))}
  assert with_bn == {"vgg11", "resnet20"}


# --- parameter counts ---------------------------------------------------------------------------


def _resnet20_count(k: int, in_ch: int = 3) -> int:
  """Analytic count: stem conv, 9 pre-act blocks (BN, conv, BN, conv [+ 1x1 proj]), BN, Dense."""
  total = 9 * in_ch * 16  # stem conv, no bias
  c_in = 16
  for c in (16, 32, 64):
    for _ in range(3):
      total += 2 * c_in + 9 * c_in * c + 2 * c + 9 * c * c  # BN(c_in), conv, BN(c), conv
      total += c_in * c if c_in != c else 0  # projection shortcut
      c_in = c
  return total + 2 * 64 + 64 * k + k  # final BN, classifier


def _paper_cnn_count(k: int, hw: int = 28, in_ch: int = 1) -> int:
  """Analytic count for 4 VALID 3x3 convs (32 ch), pools after the first two, 2000-2000-K head."""
  total, c_in, side = 0, in_ch, hw
  for i in range(4):
    total += 9 * c_in * 32 + 32
    c_in, side = 32, side - 2
    if i < 2:
      side //= 2
  flat = side * side * 32
  return total + flat * 2000 + 2000 + 2000 * 2000 + 2000 + 2000 * k + k


def test_resnet20_parameter_count():
  model = models.get_model("resnet20", num_classes=2)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  n = models.count_params(shapes["params"])
  assert n == _resnet20_count(2) == 271_762
  assert 260_000 <= n <= 280_000
  model10 = models.get_model("resnet20", num_classes=10)
  shapes10 = jax.eval_shape(model10.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert models.count_params(shapes10["params"]) == _resnet20_count(10) == 272_282


def test_paper_cnn_parameter_count():
  model = models.get_model("paper_cnn", num_classes=2)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  assert models.count_params(shapes["params"]) == _paper_cnn_count(2) == 4_100_066
  # Keras' default padding: 28 -> 26 -> 13 -> 11 -> 5 -> 3 -> 1, so 32 features enter the head.
  assert shapes["params"]["Dense_0"]["kernel"].shape == (32, 2000)


def test_count_params_stacked_over_seeds():
  model = models.get_model("mlp", num_classes=2, width=8, depth=1)
  x = jnp.zeros((1, 5))
  single = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  stacked = jax.eval_shape(
      jax.vmap(model.init, in_axes=(0, None)), jax.random.split(jax.random.key(0), 3), x
  )
  assert models.count_params(single) == 5 * 8 + 8 + 8 * 2 + 2
  assert models.count_params(stacked["params"], stacked=True) == models.count_params(single)
  assert models.count_params(stacked["params"]) == 3 * models.count_params(single)


# --- linear init options (Theorem 1) ------------------------------------------------------------


def test_linear_init_scale_bounds_kernel():
  s, d = 0.3, 2000
  model = models.get_model("linear", num_classes=2, init_scale=s)
  kernel = model.init(jax.random.key(0), jnp.zeros((1, d)))["params"]["Dense_0"]["kernel"]
  assert kernel.shape == (d, 2)
  assert float(jnp.max(jnp.abs(kernel))) <= s
  assert float(jnp.max(jnp.abs(kernel))) > 0.9 * s  # uniform on [-s, s], not a smaller range
  np.testing.assert_allclose(float(jnp.std(kernel)), s / np.sqrt(3), rtol=0.05)
  diff = kernel[:, 1] - kernel[:, 0]  # effective binary weight vector
  assert float(jnp.max(jnp.abs(diff))) <= 2 * s


def test_linear_default_init_is_flax_lecun_normal():
  d = 4000
  model = models.get_model("linear", num_classes=2, use_bias=False)
  params = model.init(jax.random.key(0), jnp.zeros((1, d)))["params"]
  assert set(params["Dense_0"]) == {"kernel"}
  np.testing.assert_allclose(float(jnp.std(params["Dense_0"]["kernel"])), 1 / np.sqrt(d), rtol=0.1)


@pytest.mark.parametrize("k", [2, 5])
def test_linear_init_first_sets_binary_weight_on_first_coordinate(k):
  v, s, d = -3.5, 0.2, 50
  model = models.get_model("linear", num_classes=k, init_scale=s, init_first=v)
  variables, _ = _init_and_apply(model, jnp.zeros((1, d)))
  kernel, bias = variables["params"]["Dense_0"]["kernel"], variables["params"]["Dense_0"]["bias"]
  assert float(kernel[0, 1] - kernel[0, 0]) == v
  np.testing.assert_array_equal(kernel[0, 2:], 0.0)
  assert float(jnp.max(jnp.abs(kernel[1:]))) <= s
  np.testing.assert_array_equal(bias, 0.0)
  # The logit difference z1 - z0 of a unit vector e_0 is exactly v.
  logits = model.apply(variables, jnp.eye(d)[:1])
  np.testing.assert_allclose(float(logits[0, 1] - logits[0, 0]), v, rtol=1e-6)


# --- BatchNorm and seeds ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet20"])  # vgg11's BatchNorm is the same nn.BatchNorm
def test_batchnorm_per_seed_stats_under_vmap(name):
  # conv_impl="lax": the BatchNorm logic does not depend on it, and it compiles fastest.
  model = models.get_model(name, num_classes=2, conv_impl="lax", **SMALL_KWARGS[name])
  x = _images((32, 32, 3), batch=4)
  keys = jax.random.split(_key(), 3)
  variables = jax.jit(jax.vmap(model.init, in_axes=(0, None)))(keys, x)
  assert jax.tree.leaves(variables["batch_stats"])[0].shape[0] == 3
  kernel = next(leaf for leaf in jax.tree.leaves(variables["params"]) if leaf.ndim == 5)
  assert not np.allclose(kernel[0], kernel[1])  # per-seed parameters

  def train_apply(v):
    return model.apply(v, x, train=True, mutable=["batch_stats"])

  logits, updates = jax.jit(jax.vmap(train_apply))(variables)
  assert logits.shape == (3, 4, 2)
  assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(variables["batch_stats"])
  for a, b in itertools.combinations(range(3), 2):
    stats_a = jax.tree.map(lambda t, a=a: t[a], updates["batch_stats"])
    stats_b = jax.tree.map(lambda t, b=b: t[b], updates["batch_stats"])
    assert not any(jax.tree.leaves(jax.tree.map(np.allclose, stats_a, stats_b))), (a, b)
  changed = jax.tree.map(lambda u, v: not np.allclose(u, v), updates["batch_stats"],
                         variables["batch_stats"])
  assert all(jax.tree.leaves(changed))  # every running mean / var moved

  def eval_apply(v):
    return model.apply(v, x, train=False, mutable=["batch_stats"])

  eval_logits, eval_updates = jax.jit(jax.vmap(eval_apply))(variables)
  jax.tree.map(np.testing.assert_array_equal, eval_updates["batch_stats"], variables["batch_stats"])
  # Eval mode normalises with running averages: an example's logits ignore the rest of the batch.
  first_only = jax.jit(jax.vmap(lambda v: model.apply(v, x[:1])))(variables)
  np.testing.assert_allclose(first_only[:, 0], eval_logits[:, 0], rtol=1e-5, atol=1e-5)


# --- convolution implementations ----------------------------------------------------------------


# paper_cnn: VALID 3x3 convs (Cin = 1 and 3, then 32); resnet20: padded stride-1/2 3x3 convs,
# strided 1x1 projections, BatchNorm. SAME padding and the other layer cases: test_conv_matches_*.
@pytest.mark.parametrize("name", ["paper_cnn", "resnet20"])
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_conv_impls_agree(name, shape):
  kw = SMALL_KWARGS.get(name, {})
  impls = ("lax", "patches", "shifted")
  model = {impl: models.get_model(name, num_classes=2, conv_impl=impl, **kw) for impl in impls}
  x = _images(shape, seed=1)
  variables = model["lax"].init(_key(), x)
  # Train mode for BatchNorm models (batch statistics, mutable batch_stats), eval otherwise
  # (the conv code path does not depend on the mode).
  train = models.has_batch_stats(model["lax"])
  mutable = ["batch_stats"] if train else False
  out_lax = model["lax"].apply(variables, x, train=train, mutable=mutable)
  for impl in impls[1:]:
    assert jax.tree.structure(variables) == jax.tree.structure(
        jax.eval_shape(model[impl].init, _key(), x)
    )
    out = model[impl].apply(variables, x, train=train, mutable=mutable)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), out_lax, out
    )


@pytest.mark.parametrize(
    "kernel_size,strides,padding",
    [(3, 1, "SAME"), (3, 1, "VALID"), (3, 2, "SAME"), (1, 2, "VALID"), (3, 2, ((1, 1), (1, 1)))],
)
@pytest.mark.parametrize("impl", ["lax", "patches", "shifted"])
def test_conv_matches_flax_conv(kernel_size, strides, padding, impl):
  x = _images((9, 8, 3))
  ref = nn.Conv(5, (kernel_size, kernel_size), strides=strides, padding=padding)
  ours = layers.Conv(5, kernel_size, strides=strides, padding=padding, conv_impl=impl)
  variables = ref.init(_key(), x)
  assert jax.tree.structure(variables) == jax.tree.structure(ours.init(_key(), x))
  np.testing.assert_allclose(
      ours.apply(variables, x), ref.apply(variables, x), rtol=1e-5, atol=1e-5
  )


def test_max_pool_matches_flax():
  x = _images((7, 6, 4))
  expected = nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(layers.max_pool_2x2(x), expected)


def test_auto_conv_impl_follows_backend():
  expected = "patches" if jax.default_backend() == "cpu" else "lax"
  assert layers.resolve_conv_impl("auto") == expected
  assert layers.resolve_conv_impl("lax") == "lax"


# --- complexity ladder ---------------------------------------------------------------------------


def test_ladder_depth_increases_and_is_valid_on_both_sizes():
  depths = []
  for k in range(1, 7):
    model = models.get_model(f"cnn{k}", num_classes=2)
    per_shape = []
    for shape in IMAGE_SHAPES:
      shapes = jax.eval_shape(model.init, _key(), jnp.zeros((1, *shape)))
      per_shape.append(len(_conv_kernels(shapes["params"])))
      # Every rung reaches the head at the same resolution (3x3 or 4x4, 32 channels).
      side = {28: 3, 32: 4}[shape[0]]
      assert shapes["params"]["Dense_0"]["kernel"].shape[0] == side * side * 32
    assert per_shape[0] == per_shape[1]
    depths.append(per_shape[0])
  assert depths == [1, 2, 3, 4, 5, 6]


def test_cnn_channels_per_layer():
  model = models.get_model("cnn", num_classes=2, depth=2, channels=[8, 16], dense=0)
  params = jax.eval_shape(model.init, jax.random.key(0), _images((28, 28, 1)))["params"]
  assert [k.shape[-1] for k in _conv_kernels(params)] == [8, 16]
  assert set(params) == {"Conv_0", "Conv_1", "Dense_0"}  # dense=0: no hidden dense layer


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_name_lists_registry():
  with pytest.raises(ValueError, match=r"\bname\b") as info:
    models.get_model("resnet1000", num_classes=2)
  assert "resnet1000" in str(info.value) and "paper_cnn" in str(info.value)


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("mlp", {"widht": 3}, "widht"),
        ("cnn3", {"depth": 5}, "depth"),
        ("linear", {"conv_impl": "lax"}, "conv_impl"),
        ("mlp", {"activation": "swishy"}, "activation"),
        ("mlp", {"depth": -1}, "depth"),
        ("cnn", {"depth": 0}, "depth"),
        ("cnn", {"depth": 2, "channels": (8, 8, 8)}, "channels"),
        ("cnn", {"dense": -4}, "dense"),
        ("paper_cnn", {"conv_impl": "fft"}, "conv_impl"),
        ("paper_cnn", {"padding": "FULL"}, "padding"),
        ("vgg11", {"width": 0}, "width"),
        ("resnet20", {"stage_sizes": ()}, "stage_sizes"),
        ("linear", {"init_scale": -1.0}, "init_scale"),
    ],
)
def test_bad_kwargs_name_the_argument(name, kwargs, match):
  with pytest.raises(ValueError, match=rf"\b{match}\b"):
    models.get_model(name, num_classes=2, **kwargs)


@pytest.mark.parametrize("name", ["linear", "resnet20"])
@pytest.mark.parametrize("num_classes", [1, 0])
def test_num_classes_below_two_rejected(name, num_classes):
  with pytest.raises(ValueError, match=r"\bnum_classes\b"):
    models.get_model(name, num_classes=num_classes)


@pytest.mark.parametrize("name", CONV_MODELS)
def test_conv_models_require_rank4_input(name):
  model = models.get_model(name, num_classes=2)
  with pytest.raises(ValueError, match="^x "):
    model.init(jax.random.key(0), jnp.zeros((2, 784)))


def test_vector_models_reject_unbatched_input():
  model = models.get_model("linear", num_classes=2)
  with pytest.raises(ValueError, match="^x "):
    model.init(jax.random.key(0), jnp.zeros((784,)))
