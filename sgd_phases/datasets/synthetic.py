"""Synthetic classification tasks, drawn from the data seed with numpy (no download).

* ``ball2d_sinusoid`` - the paper's Figure 1 task: x uniform in the unit disc,
  y = 1[x2 > a sin(w x1)].
* ``sinusoid_hd`` - a high-dimensional sinusoid: y = 1[<u,x> + a sin(w <v,x>) > 0].
* ``theorem1`` - the simplified linear model of Theorem 1 (one signal coordinate + noise coords).

Synopsis::

    from sgd_phases import datasets
    ds = datasets.get_dataset({"name": "ball2d_sinusoid", "label_noise": 0.1, "seed": 3})
    ds.x_train.shape  # (1000, 2)

Each builder takes a resolved config (see ``default_config_*``) and returns a
:class:`~sgd_phases.datasets.base.Dataset`; subsampling and label noise are applied by
:func:`~sgd_phases.datasets.base.finalize`. Inputs are float32, labels int32 in {0, 1}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from sgd_phases.datasets import base


def _check_positive_int(config: Mapping[str, Any], *fields: str) -> None:
  for field in fields:
    v = config[field]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{field}={v!r} must be a positive integer")


def _check_number(config: Mapping[str, Any], field: str, positive: bool = False) -> None:
  v = config[field]
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (
      positive and v <= 0):
    raise ValueError(f"{field}={v!r} must be a finite{' positive' if positive else ''} number")


# ---------------------------------------------------------------------------------------------
# ball2d_sinusoid


def default_config_ball2d_sinusoid() -> ml_collections.ConfigDict:
  """Defaults for ``ball2d_sinusoid`` (Figure 1 of the paper)."""
  c = base.common_config("ball2d_sinusoid")
  c.n_train = 1000  # Training points drawn.
  c.n_test = 10_000  # Test points drawn (large, so that accuracy / MI estimates are precise).
  c.amplitude = 0.25  # a in y = 1[x2 > a sin(w x1)]; 0 makes the task linear.
  c.frequency = 3 * math.pi  # w: 1.5 periods across the disc; best linear classifier ~90%.
  return c


def _uniform_disc(rng: np.random.Generator, n: int) -> np.ndarray:
  # Radius sqrt(u) makes the density uniform in area (P[r <= s] = s^2).
  r = np.sqrt(rng.random(n))
  theta = rng.uniform(0.0, 2 * np.pi, n)
  return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def ball2d_sinusoid(config: Mapping[str, Any]) -> base.Dataset:
  """x uniform in the 2-D unit ball, y = 1[x2 > amplitude * sin(frequency * x1)]."""
  _check_positive_int(config, "n_train", "n_test")
  _check_number(config, "amplitude")
  _check_number(config, "frequency")
  base.check_common(config, 2, config["n_train"], config["n_test"])
  rng = base.data_rng(config["seed"], "ball2d_sinusoid")
  x = _uniform_disc(rng, config["n_train"] + config["n_test"]).astype(np.float32)
  y = (x[:, 1] > config["amplitude"] * np.sin(config["frequency"] * x[:, 0])).astype(np.int32)
  n = config["n_train"]
  return base.finalize(config, x[:n], y[:n], x[n:], y[n:], num_classes=2)


# ---------------------------------------------------------------------------------------------
# sinusoid_hd

_DISTRIBUTIONS = ("gaussian", "uniform")


def default_config_sinusoid_hd() -> ml_collections.ConfigDict:
  """Defaults for ``sinusoid_hd`` (the high-dimensional sinusoid of Figure 4)."""
  c = base.common_config("sinusoid_hd")
  c.n_train = 10_000  # Training points drawn.
  c.n_test = 10_000  # Test points drawn.
  c.dim = 50  # Input dimension d.
  c.distribution = "gaussian"  # 'gaussian': N(0, I_d); 'uniform': U[-sqrt3, sqrt3]^d (unit var).
  c.amplitude = 0.8  # a in y = 1[<u,x> + a sin(w <v,x>) > 0]; 0 makes the task linear.
  c.frequency = 2.0  # w; with a=0.8 the best linear classifier gets ~83%, the truth 100%.
  return c


def sinusoid_hd(config: Mapping[str, Any]) -> base.Dataset:
  """x ~ N(0, I_d) (or uniform), y = 1[<u, x> + amplitude * sin(frequency * <v, x>) > 0].

  u and v are random orthonormal directions drawn from the data seed, so the label depends on a
  2-D projection of x: linear along u, oscillating along v.
  """
  _check_positive_int(config, "n_train", "n_test", "dim")
  _check_number(config, "amplitude")
  _check_number(config, "frequency")
  if config["dim"] < 2:
    raise ValueError(f"dim={config['dim']} must be >= 2 (u and v are orthonormal)")
  if config["distribution"] not in _DISTRIBUTIONS:
    raise ValueError(f"distribution={config['distribution']!r} must be one of {_DISTRIBUTIONS}")
  base.check_common(config, 2, config["n_train"], config["n_test"])
  rng = base.data_rng(config["seed"], "sinusoid_hd")
  d, n = config["dim"], config["n_train"] + config["n_test"]
  q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
  u, v = q[:, 0], q[:, 1]
  if config["distribution"] == "gaussian":
    x = rng.standard_normal((n, d))
  else:
    x = rng.uniform(-math.sqrt(3.0), math.sqrt(3.0), (n, d))
  score = x @ u + config["amplitude"] * np.sin(config["frequency"] * (x @ v))
  x, y = x.astype(np.float32), (score > 0).astype(np.int32)
  m = config["n_train"]
  return base.finalize(config, x[:m], y[:m], x[m:], y[m:], num_classes=2)


# ---------------------------------------------------------------------------------------------
# theorem1


def default_config_theorem1() -> ml_collections.ConfigDict:
  """Defaults for ``theorem1`` (the simplified model of Theorem 1)."""
  c = base.common_config("theorem1")
  c.n_train = 500  # Training points n (the experiment sets label_noise, e.g. 0.2).
  c.n_test = 10_000  # Test points (clean labels unless noisy_test).
  c.dim = 2000  # d >= n_train, so a linear model can interpolate the noisy training labels.
  c.signal = 1.0  # x[0] = (2 y_clean - 1) * signal.
  c.noise_std = 1.0  # Coordinates 1..d-1 ~ N(0, noise_std^2 / d): noise vector norm ~ noise_std.
  return c


def theorem1(config: Mapping[str, Any]) -> base.Dataset:
  """One coordinate carries the clean label; d - 1 near-orthogonal noise coordinates.

  Construction: y_clean is balanced in {0, 1} (exactly, up to one example, in each split);
  x[0] = (2 y_clean - 1) * signal and x[1:] ~ N(0, noise_std^2 / d * I), so each noise vector
  has norm ~ noise_std and two independent ones have inner product ~ noise_std^2 / sqrt(d).
  Label noise (config ``label_noise``) flips training labels as for any dataset.

  Why fitting the noise does not destroy the concept: with d >= n the n noise vectors are
  nearly orthogonal, so a linear model can fit any label pattern through them
  (w = w_0 e_0 + sum_i c_i xi_i with one c_i per training point). A fresh test point's noise
  vector is also nearly orthogonal to all of them, so that memorised part adds only a small
  term (~ ||c|| noise_std^2 / sqrt(d)) to the test score, while the signal coordinate, fitted to
  the (1 - 2p)-majority of correct labels, keeps w_0 > 0: train accuracy reaches 100% and clean
  test accuracy stays high (it improves as d / n grows).
  """
  _check_positive_int(config, "n_train", "n_test", "dim")
  _check_number(config, "signal", positive=True)
  _check_number(config, "noise_std")
  if config["noise_std"] < 0:
    raise ValueError(f"noise_std={config['noise_std']!r} must be >= 0")
  if config["dim"] < 2:
    raise ValueError(f"dim={config['dim']} must be >= 2 (signal + noise coordinates)")
  base.check_common(config, 2, config["n_train"], config["n_test"])
  rng = base.data_rng(config["seed"], "theorem1")
  d = config["dim"]

  def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.permutation(np.arange(n) % 2).astype(np.int32)
    x = rng.standard_normal((n, d)) * (config["noise_std"] / math.sqrt(d))
    x[:, 0] = (2 * y - 1) * config["signal"]
    return x.astype(np.float32), y

  x_tr, y_tr = draw(config["n_train"])
  x_te, y_te = draw(config["n_test"])
  return base.finalize(config, x_tr, y_tr, x_te, y_te, num_classes=2)
