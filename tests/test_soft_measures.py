"""sgd_phases.soft_measures against closed forms, a numpy brute force, synthetic mixtures with
known weights and an independent constrained solver (scipy SLSQP)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from sgd_phases import soft_measures as sm


def _np_kl(p, q, floor=1e-30):
  """Brute force, one example at a time: Σ_k p log2(p/q), 0 log 0 = 0, clipped at floor."""
  out = 0.0
  for a, b in zip(p, q):
    if a > 0:
      out += a * (np.log2(max(a, floor)) - np.log2(max(b, floor)))
  return out


def _rand(rng, shape, k):
  return rng.dirichlet(np.full(k, 0.5), shape).astype(np.float32)


def test_closed_forms():
  a, b = 0.9, 0.3
  p = jnp.array([[[[a, 1 - a]]]])   # [S=1, E=1, N=1, K=2]
  q = jnp.array([[b, 1 - b]])
  kl = a * np.log2(a / b) + (1 - a) * np.log2((1 - a) / (1 - b))
  kl_rev = b * np.log2(b / a) + (1 - b) * np.log2((1 - b) / (1 - a))
  d = sm.divergences(p, q)
  assert float(d["kl_f_ref"][0, 0]) == pytest.approx(kl, rel=1e-5)
  assert float(d["kl_ref_f"][0, 0]) == pytest.approx(kl_rev, rel=1e-5)
  same = sm.divergences(p, p[0, 0])
  assert all(float(v[0, 0]) == 0.0 for v in same.values())  # identical: exactly 0
  # disjoint supports: JS = 1 bit (its maximum); 0 log 0 = 0 on the zero entries
  disjoint = sm.divergences(jnp.array([[[[1.0, 0.0]]]]), jnp.array([[0.0, 1.0]]))
  assert float(disjoint["js"][0, 0]) == pytest.approx(1.0, abs=1e-6)
  half = sm.divergences(jnp.array([[[[1.0, 0.0]]]]), jnp.array([[0.5, 0.5]]))
  assert float(half["kl_f_ref"][0, 0]) == pytest.approx(1.0, abs=1e-6)
  # the other direction puts mass where F has none: clipped at the floor, finite
  assert float(half["kl_ref_f"][0, 0]) == pytest.approx(-0.5 + 0.5 * np.log2(0.5 / 1e-30),
                                                     rel=1e-5)
  f16 = sm.divergences(jnp.array([[[[1.0, 0.0]]]], jnp.float16), jnp.array([[0.5, 0.5]]),
                       floor=sm.floor_for(jnp.float16))
  assert float(f16["kl_ref_f"][0, 0]) == pytest.approx(-0.5 + 0.5 * np.log2(0.5 / 2.0**-24),
                                                    rel=1e-5)
  ce = sm.cross_entropy(jnp.array([[0.25, 0.75], [0.5, 0.5]]), jnp.array([1, 0]))["ce"]
  assert float(ce) == pytest.approx(0.5 * (np.log2(4 / 3) + 1.0), rel=1e-6)


@pytest.mark.parametrize("ref_shape", ["shared", "per_seed", "time_paired"])
def test_against_numpy_brute_force(ref_shape):
  rng = np.random.default_rng(0)
  s, e, m, t, k = 2, 3, 4, 5, 3
  n = m * t
  pf = _rand(rng, (s, e, n), k)
  pf[0, 0, 0] = [1.0, 0.0, 0.0]  # zeros on both sides
  ref = {"shared": _rand(rng, (n,), k), "per_seed": _rand(rng, (s, n), k),
         "time_paired": _rand(rng, (s, e, n), k)}[ref_shape]
  ref[..., 1, :] = [0.0, 1.0, 0.0]
  y = rng.integers(0, k, n)
  out = sm.divergences(jnp.asarray(pf), jnp.asarray(ref), num_positions=t)
  full = np.broadcast_to(ref if ref.ndim == 4 else ref[:, None] if ref.ndim == 3 else ref,
                         (s, e, n, k))
  for i in range(s):
    for j in range(e):
      rf = np.array([_np_kl(full[i, j, x], pf[i, j, x]) for x in range(n)])
      fr = np.array([_np_kl(pf[i, j, x], full[i, j, x]) for x in range(n)])
      mid = 0.5 * (pf[i, j] + full[i, j])
      js = np.array([0.5 * _np_kl(full[i, j, x], mid[x]) + 0.5 * _np_kl(pf[i, j, x], mid[x])
                     for x in range(n)])
      for name, per in (("kl_ref_f", rf), ("kl_f_ref", fr), ("js", js)):
        assert float(out[name][i, j]) == pytest.approx(per.mean(), rel=1e-4, abs=1e-5), name
        np.testing.assert_allclose(out[f"position/{name}"][i, j], per.reshape(m, t).mean(0),
                                   rtol=1e-4, atol=1e-5)
      assert 0.0 <= float(out["js"][i, j]) <= 1.0
  ce = sm.cross_entropy(jnp.asarray(pf), jnp.asarray(y), num_positions=t)
  nll = -np.log2(np.maximum(np.take_along_axis(pf, np.broadcast_to(y[:, None], (s, e, n, 1)),
                                               -1)[..., 0], 1e-30))
  np.testing.assert_allclose(ce["ce"], nll.mean(-1), rtol=1e-5)
  np.testing.assert_allclose(ce["position/ce"], nll.reshape(s, e, m, t).mean(-2), rtol=1e-5)


def test_bad_reference_shape_names_it():
  with pytest.raises(ValueError, match=r"distribution 0: shape \(3, 4, 2\)"):
    sm.divergences(jnp.ones((2, 3, 4, 2)) / 2, jnp.ones((3, 4, 2)) / 2)


def test_mixture_recovers_known_weights():
  """F = a known mixture of two references and the uniform distribution (one weight 0, one
  seed per weight vector): the fit recovers the weights to 1e-3 with residual ~0."""
  rng = np.random.default_rng(1)
  n, k = 500, 4
  comps = [_rand(rng, (n,), k) for _ in range(3)]  # the third one is not in F
  truth = np.array([[[0.6, 0.0, 0.1, 0.3], [0.2, 0.5, 0.3, 0.0]],
                    [[0.0, 0.0, 1.0, 0.0], [0.25, 0.25, 0.25, 0.25]]])  # [S=2, E=2, R+1]
  stacked = np.stack(comps + [np.full((n, k), 1 / k, np.float32)])
  pf = np.einsum("ser,rnk->senk", truth, stacked).astype(np.float32)
  fit = sm.mixture(jnp.asarray(pf), [jnp.asarray(c) for c in comps])
  w = np.asarray(fit["weights"])
  assert w.shape == (2, 2, 4) and (w >= 0).all()
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(w, truth, atol=1e-3)
  assert np.abs(np.asarray(fit["residual_kl"])).max() < 1e-5


def test_mixture_agrees_with_an_independent_constrained_solver():
  """F not a mixture: the weights and residual KL equal scipy's SLSQP on the same problem."""
  rng = np.random.default_rng(2)
  n, k = 300, 3
  comps = [_rand(rng, (n,), k) for _ in range(2)]
  pf = _rand(rng, (1, 2, n), k)
  pf[0, 1] = 0.7 * comps[0] + 0.3 * _rand(rng, (n,), k)  # near one reference
  fit = sm.mixture(jnp.asarray(pf), [jnp.asarray(c) for c in comps])
  stacked = np.stack(comps + [np.full((n, k), 1 / k)]).astype(np.float64)
  for j in range(2):
    f = pf[0, j].astype(np.float64)

    def kl(w, f=f):
      q = np.einsum("r,rnk->nk", w, stacked)
      return np.sum(f * (np.log2(f) - np.log2(q))) / n

    res = optimize.minimize(kl, np.full(3, 1 / 3), method="SLSQP", bounds=[(0, 1)] * 3,
                            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                            options={"ftol": 1e-14, "maxiter": 500})
    assert res.success
    np.testing.assert_allclose(fit["weights"][0, j], res.x, atol=2e-3)
    assert float(fit["residual_kl"][0, j]) == pytest.approx(res.fun, abs=1e-5)
    assert float(fit["residual_kl"][0, j]) <= res.fun + 1e-6  # never worse than scipy


def test_mixture_refuses_too_many_components():
  with pytest.raises(ValueError, match="components: 12 distributions"):
    sm.mixture(jnp.ones((1, 1, 2, 2)) / 2, [jnp.ones((2, 2)) / 2] * 12)
