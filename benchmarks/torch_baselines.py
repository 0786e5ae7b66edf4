"""PyTorch baselines: what a user would write instead of the engine to train many seeds.

    from benchmarks import torch_baselines as tb
    losses = tb.train_loop("mlp", x, y, num_seeds=4, num_steps=100, batch_size=64, lr=0.1)
    losses = tb.train_func_vmap("mlp", x, y, num_seeds=4, num_steps=100, batch_size=64, lr=0.1)

``x``: [n, 28, 28, 1] float32 numpy images (NHWC, as the JAX engine gets them), ``y``: [n] int
labels. Two ways to train ``num_seeds`` independent networks with plain SGD on batches drawn
from a fresh per-seed permutation each epoch (the engine's data order, drop-last):

* ``train_loop``: the standard way: for each seed, build the model and ``torch.optim.SGD``, then
  a Python loop of forward / ``loss.backward()`` / ``opt.step()``.
* ``train_func_vmap``: all seeds at once: parameters stacked with
  ``torch.func.stack_module_state``, ``torch.func.vmap(torch.func.grad(loss))`` over seeds with
  ``functional_call``, and an in-place SGD update of the stacked parameters.

Architectures match ``sgd_phases.models``: ``mlp`` (flatten, 512-512 ReLU, K logits),
``paper_cnn`` (4 x [conv3x3 32 VALID, ReLU] with 2x2 max-pools after the first two, flatten,
2 x Dense(2000) ReLU, K logits) and the ladder ``cnn1`` ... ``cnn6`` (k x [conv3x3 32 SAME,
ReLU], 3 max-pools placed as in ``sgd_phases.models.cnn``, Dense 256 ReLU, K logits). Both
trainers return the final-step loss of every seed ([S] numpy).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from benchmarks import common

MODELS = common.TORCH_MODELS


class MLP(nn.Module):
  """784-width-width-K ReLU network (input flattened)."""

  def __init__(self, in_features: int, num_classes: int = 2, width: int = 512, depth: int = 2):
    super().__init__()
    dims = [in_features] + [width] * depth
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(dims[:-1], dims[1:]):
      layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], num_classes))
    self.net = nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.net(x)


class CNN(nn.Module):
  """``sgd_phases.models.cnn.CNN`` on NCHW input: ``depth`` x [conv 3x3, ReLU] with the same
  max-pool placement (one after each of the first ``num_pools`` convs, the rest after the last;
  a pool is skipped on maps under 2x2), flatten, ``dense`` x [Linear, ReLU], K logits."""

  def __init__(self, in_shape: tuple[int, int, int], num_classes: int = 2, depth: int = 4,
               channels: int = 32, dense: tuple[int, ...] = (256,), num_pools: int = 3,
               padding: str = "SAME"):
    super().__init__()
    h, w, c = in_shape
    pools_after = [1 if i < num_pools else 0 for i in range(depth)]
    pools_after[-1] += max(0, num_pools - depth)
    pad = 1 if padding == "SAME" else 0
    convs: list[nn.Module] = []
    for i in range(depth):
      convs += [nn.Conv2d(c if i == 0 else channels, channels, 3, padding=pad), nn.ReLU()]
      h, w = h + 2 * pad - 2, w + 2 * pad - 2
      for _ in range(pools_after[i]):
        if min(h, w) >= 2:
          convs.append(nn.MaxPool2d(2))
          h, w = h // 2, w // 2
    self.features = nn.Sequential(*convs)
    head: list[nn.Module] = [nn.Flatten()]
    width = channels * h * w
    for d in dense:
      head += [nn.Linear(width, d), nn.ReLU()]
      width = d
    self.head = nn.Sequential(*head, nn.Linear(width, num_classes))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.head(self.features(x))


def make_model(name: str, in_shape: tuple[int, ...], num_classes: int = 2) -> nn.Module:
  """One of ``MODELS`` for inputs of shape ``in_shape`` (H, W, C)."""
  if name == "mlp":
    return MLP(math.prod(in_shape), num_classes)
  if name not in MODELS:
    raise ValueError(f"name={name!r} is not one of {MODELS}")
  if len(in_shape) != 3:
    raise ValueError(f"in_shape: {name} needs (H, W, C), got {in_shape}")
  if name == "paper_cnn":
    return CNN(tuple(in_shape), num_classes, depth=4, dense=(2000, 2000), num_pools=2,
               padding="VALID")
  return CNN(tuple(in_shape), num_classes, depth=int(name[3:]))


def _to_torch(x: np.ndarray, name: str) -> torch.Tensor:
  t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
  return t.permute(0, 3, 1, 2).contiguous() if (name != "mlp" and t.ndim == 4) else t


def _check(name: str, x: np.ndarray, y: np.ndarray, num_seeds: int, num_steps: int,
           batch_size: int) -> None:
  if name not in MODELS:
    raise ValueError(f"name={name!r} is not one of {MODELS}")
  if len(x) != len(y):
    raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
  for arg, v in (("num_seeds", num_seeds), ("num_steps", num_steps), ("batch_size", batch_size)):
    if v < 1:
      raise ValueError(f"{arg} must be >= 1, got {v}")
  if batch_size > len(x):
    raise ValueError(f"batch_size={batch_size} exceeds the {len(x)} training examples")


class _Batches:
  """Per-seed index stream: a fresh permutation every epoch, incomplete last batch dropped."""

  def __init__(self, n: int, batch_size: int, seed: int):
    self.n, self.bs = n, batch_size
    self.per_epoch = n // batch_size
    self.gen = torch.Generator().manual_seed(seed)
    self.perm = torch.randperm(n, generator=self.gen)

  def __call__(self, t: int) -> torch.Tensor:
    j = t % self.per_epoch
    if t > 0 and j == 0:
      self.perm = torch.randperm(self.n, generator=self.gen)
    return self.perm[j * self.bs:(j + 1) * self.bs]


def train_loop(name: str, x: np.ndarray, y: np.ndarray, num_seeds: int, num_steps: int,
               batch_size: int = 64, lr: float = 0.1, seed: int = 0) -> np.ndarray:
  """Seeds one after another, each a standard forward/backward/``opt.step()`` Python loop."""
  _check(name, x, y, num_seeds, num_steps, batch_size)
  xt, yt = _to_torch(x, name), torch.from_numpy(np.asarray(y, np.int64))
  losses = []
  for s in range(num_seeds):
    torch.manual_seed(seed * 100_003 + s)
    model = make_model(name, x.shape[1:], int(yt.max()) + 1 if len(yt) else 2)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    batches = _Batches(len(xt), batch_size, seed * 100_003 + s)
    loss = torch.zeros(())
    for t in range(num_steps):
      idx = batches(t)
      opt.zero_grad(set_to_none=True)
      loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
      loss.backward()
      opt.step()
    losses.append(float(loss.detach()))
  return np.asarray(losses, np.float32)


def train_func_vmap(name: str, x: np.ndarray, y: np.ndarray, num_seeds: int, num_steps: int,
                    batch_size: int = 64, lr: float = 0.1, seed: int = 0) -> np.ndarray:
  """All seeds in one ``torch.func.vmap(grad(loss))`` per step, stacked-parameter SGD."""
  from torch.func import functional_call, grad_and_value, stack_module_state, vmap

  _check(name, x, y, num_seeds, num_steps, batch_size)
  xt, yt = _to_torch(x, name), torch.from_numpy(np.asarray(y, np.int64))
  num_classes = int(yt.max()) + 1 if len(yt) else 2
  nets = []
  for s in range(num_seeds):
    torch.manual_seed(seed * 100_003 + s)
    nets.append(make_model(name, x.shape[1:], num_classes))
  params, buffers = stack_module_state(nets)
  params = {k: v.detach() for k, v in params.items()}
  base = copy.deepcopy(nets[0]).to("meta")

  def loss_fn(p, b, xb, yb):
    return nn.functional.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

  step_grads = vmap(grad_and_value(loss_fn), in_dims=(0, 0, 0, 0))
  batches = [_Batches(len(xt), batch_size, seed * 100_003 + s) for s in range(num_seeds)]
  loss = torch.zeros(num_seeds)
  keys = list(params)
  for t in range(num_steps):
    idx = torch.stack([b(t) for b in batches])                      # [S, B]
    grads, loss = step_grads(params, buffers, xt[idx], yt[idx])
    with torch.no_grad():
      torch._foreach_add_([params[k] for k in keys], [grads[k] for k in keys], alpha=-lr)
  return loss.detach().numpy().astype(np.float32)


def check_parameter_counts(shapes: tuple[tuple[int, int, int], ...] = ((28, 28, 1), (32, 32, 3))
                           ) -> None:
  """Raises AssertionError unless every PyTorch twin has its Flax model's parameter count."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from sgd_phases import models  # pylint: disable=import-outside-toplevel

  for name in MODELS:
    for shape in shapes:
      tree = jax.eval_shape(models.get_model(name, 2).init, jax.random.key(0),
                            jnp.zeros((1,) + shape))
      want = models.count_params(tree["params"])
      got = sum(p.numel() for p in make_model(name, shape, 2).parameters())
      assert got == want, f"{name} on {shape}: PyTorch {got} parameters, Flax {want}"


if __name__ == "__main__":
  import sys

  if sys.argv[1:] != ["--check"]:
    sys.exit("usage: python -m benchmarks.torch_baselines --check")
  check_parameter_counts()
  print(f"parameter counts equal for {list(MODELS)}")
