"""F_lin (sgd_phases.models.linearized) against closed forms, and the quick kernel_regime run
against independent recomputations."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import kernel_regime
from sgd_phases import analysis, io_lib, models
from sgd_phases.models.linearized import Linearized


def _mlp_and_inputs():
  net = models.get_model("mlp", 3, width=16, depth=2)
  x = jax.random.normal(jax.random.key(1), (8, 5))
  return net, Linearized(net), x


def test_linearized_is_the_first_order_taylor_expansion():
  net, lin, x = _mlp_and_inputs()
  key = jax.random.key(0)
  theta0 = net.init(key, x)["params"]
  v = lin.init(key, x)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, v["params"]["theta0"], theta0))
  f0 = net.apply({"params": theta0}, x)
  np.testing.assert_array_equal(lin.apply(v, x), f0)  # δ = 0: F_lin = F
  delta = jax.tree.map(lambda t: 0.1 * jax.random.normal(jax.random.key(2), t.shape), theta0)
  at = lambda d: lin.apply({"params": {"theta0": theta0, "delta": d}}, x)  # noqa: E731
  # affine in δ: F_lin(2δ) − F_lin(0) = 2 (F_lin(δ) − F_lin(0))
  np.testing.assert_allclose(at(jax.tree.map(lambda d: 2 * d, delta)) - f0,
                             2 * (at(delta) - f0), atol=1e-5)
  # the tangent is F's directional derivative: a central finite difference of F itself
  eps = 1e-3
  shift = lambda s: net.apply({"params": jax.tree.map(lambda t, d: t + s * d, theta0, delta)}, x)  # noqa: E731
  np.testing.assert_allclose(at(delta) - f0, (shift(eps) - shift(-eps)) / (2 * eps), atol=2e-3)


def test_sgd_on_delta_is_sgd_on_theta_at_init():
  """∂L/∂δ at δ = 0 is F's gradient at θ₀; θ₀ itself gets a zero gradient."""
  net, lin, x = _mlp_and_inputs()
  y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
  key = jax.random.key(0)
  loss = lambda logits: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()  # noqa: E731
  theta0 = net.init(key, x)["params"]
  g_f = jax.grad(lambda p: loss(net.apply({"params": p}, x)))(theta0)
  g_lin = jax.grad(lambda p: loss(lin.apply({"params": p}, x)))(lin.init(key, x)["params"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g_lin["delta"], g_f)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_lin["theta0"]))
  with pytest.raises(ValueError, match=r"\bBatchNorm\b"):
    Linearized(models.get_model("resnet20", 2))


def _quick_config():
  """The quick config without the soft measures (this experiment reports none of them)."""
  c = kernel_regime.get_config("quick")
  c.progress, c.soft.enabled = False, False
  return c


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  """The quick run (both widths) in its workdir, shared by the tests below."""
  c, wd = _quick_config(), tmp_path_factory.mktemp("kernel_quick")
  return c, wd, kernel_regime.run(c, str(wd))


def test_quick_run_pairs_f_with_its_linearisation(quick_run):
  from pyitlib import discrete_random_variable as drv
  c, tmp_path, s = quick_run
  for w in c.widths:
    wdir = tmp_path / f"width{w}"
    a = analysis.load(wdir).arrays
    lin = io_lib.read_npz(wdir / kernel_regime.LIN_FILE)
    f, g, y = a["predictions"], lin["predictions"], a["y_test"]
    assert g.shape == f.shape  # time-paired [S, E, N]
    np.testing.assert_array_equal(g[:, 0], f[:, 0])  # same θ₀: identical at step 0
    # μ_Y(F_t;F_lin,t) and the departure step, recomputed from their definitions
    mu = np.array([[drv.information_mutual(f[i, e], y, base=2)
                    - drv.information_mutual_conditional(f[i, e], y, g[i, e], base=2)
                    for e in range(f.shape[1])] for i in range(f.shape[0])])
    i_fy = np.array([[drv.information_mutual(f[i, e], y, base=2) for e in range(f.shape[1])]
                     for i in range(f.shape[0])])
    dep = []  # the first fall below 0.9·I after an evaluation at or above it (the phase)
    for i in range(f.shape[0]):
      valid = [e for e in range(f.shape[1]) if i_fy[i, e] > c.min_bits]
      in_phase = [e for e in valid if mu[i, e] >= 0.9 * i_fy[i, e]]
      hits = [e for e in valid if mu[i, e] < 0.9 * i_fy[i, e] and in_phase
              and min(in_phase) < e]
      dep.append(a["steps"][hits[0]] if hits else np.nan)
    row = s["by_width"][str(w)]
    assert row["never_departs"] == int(np.isnan(dep).sum())
    if not np.isnan(dep).all():
      assert row["departure_step"]["mean"] == pytest.approx(np.nanmean(dep))
    assert row["agreement_end"]["mean"] == pytest.approx((f[:, -1] == g[:, -1]).mean())
  assert (tmp_path / "figures" / "kernel_regime.png").stat().st_size > 1000


def test_overwrite_retrains_f_lin(tmp_path, quick_run):
  """F retrained under another config is never paired with the old F_lin."""
  wdir = tmp_path / "width16"  # the quick run's width 16 (F and F_lin trained)
  shutil.copytree(quick_run[1] / "width16", wdir)
  old = io_lib.read_npz(wdir / kernel_regime.LIN_FILE)
  c2 = _quick_config()
  c2.widths, c2.overwrite = [16], True
  c2.optimizer.learning_rate = 0.03  # same shapes: a stale F_lin would pass unnoticed
  kernel_regime.run(c2, str(tmp_path))
  new = io_lib.read_npz(wdir / kernel_regime.LIN_FILE)
  assert not np.array_equal(new["predictions"], old["predictions"])
  fresh = kernel_regime.train_linearized(kernel_regime.width_config(c2, 16), str(tmp_path / "f"))
  np.testing.assert_array_equal(new["predictions"], fresh["predictions"])
  # and a cache of another config found without overwrite (e.g. copied in) is retrained too
  io_lib.write_bytes(wdir / kernel_regime.LIN_FILE, (tmp_path / "f" / kernel_regime.LIN_FILE
                                                     ).read_bytes())
  c2.overwrite = False
  c3 = kernel_regime.width_config(c2, 16)
  c3.optimizer.learning_rate = 0.07
  again = kernel_regime.train_linearized(c3, str(wdir))
  assert not np.array_equal(again["predictions"], fresh["predictions"])
