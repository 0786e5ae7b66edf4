"""Tests for sgd_phases.models.transformer: shapes, causality, parameter count, init, a numpy
reference forward pass, training over vmapped seeds, field validation."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sgd_phases import models, steps

SMALL = {"d_model": 16, "num_heads": 2, "num_layers": 2}


def _key(seed: int = 0) -> jax.Array:
  # "rbg" keys: threefry kernels take seconds to compile per shape on XLA:CPU (see test_models).
  return jax.random.key(seed, impl="rbg")


# Jitted once per (model, shapes): on XLA:CPU an eager init compiles a random kernel per
# parameter shape (~4 s for a 2-layer model), the jitted init one program (~2 s).
@functools.partial(jax.jit, static_argnums=0)
def _init(model, key, x):
  return model.init(key, x)


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, variables, x):
  return model.apply(variables, x)


def _tokens(vocab: int, batch: int, length: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, vocab, (batch, length)).astype(np.int32)


def _param_count(vocab: int, d: int, layers: int, max_len: int, mlp: bool, mlp_ratio: int,
                 layer_norm: bool, use_bias: bool = True) -> int:
  """Closed form: embeddings (V + P)·d; per layer attention 4·(d² + d) (q, k, v, out with
  biases), MLP 2·r·d² + (r + 1)·d, one LayerNorm 2·d per sublayer; final LayerNorm 2·d;
  unembedding d·V + V. Without biases: no + d, + (r + 1)·d, + V terms."""
  ln = 2 * d if layer_norm else 0
  b = 1 if use_bias else 0
  per_layer = 4 * (d * d + b * d) + ln
  if mlp:
    per_layer += 2 * mlp_ratio * d * d + b * (mlp_ratio + 1) * d + ln
  return (vocab + max_len) * d + layers * per_layer + ln + d * vocab + b * vocab


# --- shapes and causality -----------------------------------------------------------------------


def test_logits_shape_dtype_and_token_dtypes():
  model = models.get_model("transformer", num_classes=5, **SMALL)
  x = _tokens(5, batch=3, length=7)
  variables = _init(model, _key(), x)
  logits = _apply(model, variables, x)
  assert logits.shape == (3, 7, 5) and logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  assert float(jnp.max(jnp.abs(logits[0] - logits[1]))) > 0  # depends on the input
  # Float arrays holding integer values (as the engine may pass them) give the same logits.
  np.testing.assert_array_equal(_apply(model, variables, x.astype(np.float32)), logits)
  # Traced only (compiles cost seconds): any integer dtype, any T <= max_len, and train=True is
  # the same function.
  for xs in (x.astype(np.uint8), x.astype(np.int16), x[:, :3]):
    assert jax.eval_shape(model.apply, variables, xs).shape == (3, xs.shape[1], 5)
  jaxpr = {str(jax.make_jaxpr(functools.partial(model.apply, train=t))(variables, x))
           for t in (False, True)}
  assert len(jaxpr) == 1


def test_causal_mask():
  model = models.get_model("transformer", num_classes=5, **SMALL)
  length = 7
  x = _tokens(5, batch=3, length=length)  # as above: reuses its compiled init and apply
  variables = _init(model, _key(), x)
  apply = functools.partial(_apply, model)
  logits = apply(variables, x)
  for t in range(length):
    changed = x.copy()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1 + np.arange(length - t - 1)) % 5  # the future
    np.testing.assert_allclose(apply(variables, changed)[:, :t + 1], logits[:, :t + 1],
                               atol=1e-6, rtol=0)
    changed = x.copy()
    changed[:, t] = (changed[:, t] + 1) % 5  # the present token
    moved = np.abs(np.asarray(apply(variables, changed))[:, t] - np.asarray(logits)[:, t])
    assert np.all(moved.max(axis=-1) > 1e-4), t


# --- parameter count and init -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        # MLP + LayerNorm
        {"num_layers": 2, "num_heads": 2, "d_model": 16, "mlp_ratio": 3, "max_len": 32},
        # attention-only, no LayerNorm, one-hot embedding (as in Edelman et al. 2024)
        {"num_layers": 3, "num_heads": 4, "d_model": 8, "mlp": False, "layer_norm": False,
         "embedding": "onehot", "max_len": 10},
        {"num_layers": 0, "d_model": 4, "max_len": 3},  # embed -> final LN -> unembed
        {"num_layers": 2, "d_model": 8, "mlp_ratio": 2, "max_len": 5, "use_bias": False},
    ],
)
def test_parameter_count_closed_form(kwargs):
  vocab = 7
  model = models.get_model("transformer", num_classes=vocab, **kwargs)
  shapes = jax.eval_shape(model.init, _key(), jnp.zeros((1, 3), jnp.int32))
  expected = _param_count(vocab, model.d_model, model.num_layers, model.max_len, model.mlp,
                          model.mlp_ratio, model.layer_norm, model.use_bias)
  assert models.count_params(shapes["params"]) == expected


def test_parameter_count_defaults_by_hand():
  # V=10, d=64, L=2, P=256, r=4: (10 + 256)·64 + 2·(4·(64² + 64) + 2·4·64² + 5·64 + 2·2·64)
  # + 2·64 + 64·10 + 10 = 17_024 + 2·(16_640 + 33_088 + 256) + 128 + 650 = 117_770.
  model = models.get_model("transformer", num_classes=10)
  shapes = jax.eval_shape(model.init, _key(), jnp.zeros((1, 4), jnp.int32))
  assert models.count_params(shapes["params"]) == 117_770
  assert _param_count(10, 64, 2, 256, True, 4, True) == 117_770


def test_init_scale():
  scale = 0.05  # not the default, so the field must reach every initialiser
  model = models.get_model("transformer", num_classes=64, d_model=256, num_layers=1,
                           max_len=64, init_scale=scale)
  params = _init(model, _key(), jnp.zeros((1, 4), jnp.int32))["params"]
  attn = params["attn_0"]
  normal = {
      "tok_embed": params["tok_embed"]["embedding"],
      "pos_embed": params["pos_embed"],
      "unembed": params["unembed"]["kernel"],
      "mlp_in": params["mlp_in_0"]["kernel"],
      **{name: attn[name]["kernel"] for name in ("query", "key", "value", "out")},
  }
  for name, w in normal.items():
    std = float(jnp.std(w))
    assert abs(std / scale - 1) < 0.05, (name, std)
    assert abs(float(jnp.mean(w))) < 0.1 * scale, name
  biases = [attn[n]["bias"] for n in ("query", "key", "value", "out")] + [
      params["unembed"]["bias"], params["mlp_in_0"]["bias"], params["ln_final"]["bias"]]
  assert all(not jnp.any(b) for b in biases)
  assert bool(jnp.all(params["ln_final"]["scale"] == 1))


# --- independent numpy forward pass -------------------------------------------------------------


def _np_layer_norm(h, p, eps=1e-6):
  mu = h.mean(-1, keepdims=True)
  var = ((h - mu) ** 2).mean(-1, keepdims=True)
  return (h - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_gelu(z):  # tanh approximation (flax nn.gelu default)
  return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))


def _np_dense(h, p):
  return h @ p["kernel"] + p.get("bias", 0.0)


def _np_forward(params, x, model) -> np.ndarray:
  """The transformer in float64 numpy, one batch row, head and position at a time."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  vocab, d, heads = model.num_classes, model.d_model, model.num_heads
  dh, length = d // heads, x.shape[1]
  norm = _np_layer_norm if model.layer_norm else (lambda h, _: h)
  if model.embedding == "learned":
    table = p["tok_embed"]["embedding"]
  else:
    table = np.eye(vocab) @ p["tok_embed"]["kernel"]
  out = np.zeros((x.shape[0], length, vocab))
  for b in range(x.shape[0]):
    h = table[x[b]] + p["pos_embed"][:length]
    for i in range(model.num_layers):
      a = p[f"attn_{i}"]
      z = norm(h, p.get(f"ln_attn_{i}"))
      q, k, v = (_np_dense(z, a[n]) for n in ("query", "key", "value"))
      mixed = np.zeros((length, d))
      for hd in range(heads):
        sl = slice(hd * dh, (hd + 1) * dh)
        for t in range(length):
          s = k[: t + 1, sl] @ q[t, sl] / np.sqrt(dh)  # positions 0..t only
          w = np.exp(s - s.max())
          mixed[t, sl] = (w / w.sum()) @ v[: t + 1, sl]
      h = h + _np_dense(mixed, a["out"])
      if model.mlp:
        z = norm(h, p.get(f"ln_mlp_{i}"))
        h = h + _np_dense(_np_gelu(_np_dense(z, p[f"mlp_in_{i}"])), p[f"mlp_out_{i}"])
    out[b] = _np_dense(norm(h, p.get("ln_final")), p["unembed"])
  return out


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_layers": 1, "num_heads": 2, "d_model": 8, "mlp": False, "layer_norm": False},
        {"num_layers": 1, "num_heads": 1, "d_model": 8, "mlp": False, "layer_norm": False,
         "embedding": "onehot"},
        {"num_layers": 2, "num_heads": 2, "d_model": 8, "mlp_ratio": 2},  # MLP + LayerNorm
        {"num_layers": 2, "num_heads": 4, "d_model": 8, "mlp_ratio": 2, "use_bias": False},
    ],
)
def test_matches_numpy_reference(kwargs):
  # init_scale 0.5: large enough that attention is far from uniform and every term matters.
  model = models.get_model("transformer", num_classes=5, max_len=8, init_scale=0.5, **kwargs)
  x = _tokens(5, batch=2, length=6, seed=1)
  params = _init(model, _key(1), x)["params"]
  got = np.asarray(_apply(model, {"params": params}, x))
  np.testing.assert_allclose(got, _np_forward(params, x, model), atol=1e-5, rtol=1e-5)


# --- training over vmapped seeds ----------------------------------------------------------------


def test_adam_learns_previous_token_over_vmapped_seeds():
  # Target at position t is the token at t - 1 (0 at t = 0): needs attention to the previous
  # position; tokens are uniform, so unigram statistics alone stay at log(V).
  vocab, length, batch, num_steps, num_seeds = 4, 8, 32, 40, 2
  model = models.get_model("transformer", num_classes=vocab, num_layers=1, d_model=16,
                           max_len=length)
  tx = optax.adam(2e-2)
  tr = steps.Trainer(model=model, tx=tx, loss="cross_entropy", batch_size=batch,
                     num_classes=vocab, has_batch_stats=False)
  xs = _tokens(vocab, batch=num_steps * batch, length=length, seed=2)
  xs = jnp.asarray(xs.reshape(num_steps, batch, length))
  ys = jnp.concatenate([jnp.zeros_like(xs[..., :1]), xs[..., :-1]], axis=-1)

  step = jax.vmap(functools.partial(steps.train_step, tr), in_axes=(0, None, None))

  @jax.jit
  def run(keys):  # one program: eager vmapped inits compile per op (seconds on XLA:CPU)
    params = jax.vmap(model.init, in_axes=(0, None))(keys, xs[0])["params"]
    state = jax.vmap(lambda p: steps.TrainState.create(apply_fn=model.apply, params=p, tx=tx))(
        params)
    return jax.lax.scan(lambda s, xy: step(s, *xy), state, (xs, ys))

  # losses: [steps, seeds]; the loss of step t is computed before its update.
  _, losses = run(jax.random.split(_key(3), num_seeds))
  assert losses.shape == (num_steps, num_seeds)
  np.testing.assert_allclose(losses[0], math.log(vocab), rtol=0.1)
  assert bool(jnp.all(losses[-5:].mean(axis=0) < 0.5 * math.log(vocab))), losses[-5:]
  assert float(jnp.max(jnp.abs(losses[:, 0] - losses[:, 1]))) > 0  # the seeds differ


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_layers": -1}, "num_layers"),
        ({"num_heads": 0}, "num_heads"),
        ({"d_model": 0}, "d_model"),
        ({"d_model": 10, "num_heads": 3}, "d_model"),
        ({"mlp_ratio": 0}, "mlp_ratio"),
        ({"max_len": 0}, "max_len"),
        ({"embedding": "sinusoidal"}, "embedding"),
        ({"init_scale": 0.0}, "init_scale"),
        ({"init_scale": float("nan")}, "init_scale"),
        ({"mlp": "yes"}, "mlp"),
        ({"layer_norm": 1}, "layer_norm"),
        ({"use_bias": 0}, "use_bias"),
        ({"dropout": 0.1}, "dropout"),  # not a field: get_model names it
    ],
)
def test_bad_fields_raise_naming_the_field(kwargs, field):
  kwargs = {"num_classes": 5, **kwargs}
  with pytest.raises(ValueError, match=rf"^{field}\b"):
    models.get_model("transformer", **kwargs)


def test_bad_inputs_at_call_time():
  model = models.get_model("transformer", num_classes=5, d_model=8, num_layers=1, max_len=4)
  variables = jax.eval_shape(model.init, _key(), jnp.zeros((1, 4), jnp.int32))
  with pytest.raises(ValueError, match=r"max_len=4 .*T=5"):
    jax.eval_shape(model.apply, variables, jnp.zeros((1, 5), jnp.int32))
  with pytest.raises(ValueError, match=r"\[B, T\]"):
    jax.eval_shape(model.apply, variables, jnp.zeros((1, 4, 1), jnp.int32))
