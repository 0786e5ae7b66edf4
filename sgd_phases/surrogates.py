"""Maximum-entropy surrogate test sets: data that match only low-order class statistics.

Belrose et al. (ICML 2024, "Neural Networks Learn Statistics of Increasing Complexity") ask
whether a network early in training classifies inputs that share only the class-conditional
mean and covariance of the data as well as real data. For each class c, with μ_c and Σ_c the
mean and covariance of the class's training inputs (flattened):

* ``gaussian``: x ~ N(μ_c, Σ_c), the maximum-entropy law with those two moments;
* ``first_moment``: x ~ N(μ_c, σ_c² I), σ_c² = tr(Σ_c)/d: the class mean plus isotropic noise of
  the same total variance.

Samples are clipped to the training inputs' range, drawn from a fixed numpy seed (the same set
for every seed of a run), classes in equal shares (the label of each sample is its class).
Σ_c is factorised by an eigendecomposition in float64 with negative eigenvalues (rounding)
set to zero, so singular covariances (constant border pixels) are fine.
"""

from __future__ import annotations

import numpy as np

KINDS = ("gaussian", "first_moment")


def sample(kind: str, x_train: np.ndarray, y_train: np.ndarray, num_classes: int, size: int,
           seed: int) -> tuple[np.ndarray, np.ndarray]:
  """``size`` surrogate inputs shaped like ``x_train[0]`` (float32) and their labels (int32)."""
  if kind not in KINDS:
    raise ValueError(f"eval.surrogates.kinds: {kind!r} is not one of {KINDS}")
  rng = np.random.default_rng(seed)
  flat = x_train.reshape(len(x_train), -1).astype(np.float64)
  lo, hi = float(flat.min()), float(flat.max())
  counts = np.full(num_classes, size // num_classes)
  counts[: size % num_classes] += 1
  xs, ys = [], []
  for c, n in enumerate(counts):
    xc = flat[y_train == c]
    if len(xc) < 2:
      raise ValueError(f"eval.surrogates: class {c} has {len(xc)} training examples; need >= 2")
    mean = xc.mean(axis=0)
    cov = np.cov(xc, rowvar=False)
    if kind == "gaussian":
      w, v = np.linalg.eigh(cov)
      noise = rng.standard_normal((n, len(mean))) @ (v * np.sqrt(np.clip(w, 0, None))).T
    else:
      noise = rng.standard_normal((n, len(mean))) * np.sqrt(np.trace(cov) / len(mean))
    xs.append(np.clip(mean + noise, lo, hi))
    ys.append(np.full(n, c, np.int32))
  x = np.concatenate(xs).astype(np.float32).reshape((size,) + x_train.shape[1:])
  return x, np.concatenate(ys)
