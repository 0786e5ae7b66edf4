"""An independent PyTorch + pyitlib reimplementation of ``experiments/sequence_phases.py``.

The same transformer training and μ measurement, written again outside the project, and compared
with the project's own run at the same settings::

    .venv/bin/python -m benchmarks.sequence_reference_impl                  # full config
    .venv/bin/python -m benchmarks.sequence_reference_impl --num_steps=300 --num_seeds=2
    .venv/bin/python -m benchmarks.sequence_reference_impl --project_workdir=/tmp/seq  # reuse

Shared with the project (so the settings and the data are provably the same): the experiment's
config (``experiments.sequence_phases.get_config("icl_markov_small")``, its training sequences
stored: ``train_sampling="pregenerated"``; model size, Adam lr, batch, steps, seeds,
evaluation steps via ``eval_lib.eval_steps``), the sequences (``datasets.get_dataset``) and the
closed-form references L (``sgd_phases.sequence_references``, tested on their own).

Written here, independent of the project: F, a causal 2-layer attention-only pre-LN transformer
(1 head, d_model 32, learned token + position embeddings, final LN, all kernels and embeddings
N(0, 0.02²), biases 0, LN eps 1e-6 as flax) in PyTorch; Adam (torch.optim.Adam, β 0.9/0.999,
eps 1e-8 as optax); the loss (mean next-token cross-entropy over all T−1 positions); the data
order (one pass over the training sequences in a per-seed numpy permutation); evaluation (argmax
at every position of the test sequences); and I(F_t;Y), I(F_t;Y|L) with pyitlib (plug-in, bits),
μ = I(F;Y) − I(F;Y|L).

Both runs are summarised by the same code below: per reference the mean and 95% Student-t
interval over seeds of μ/I at every step (μ/I only where I(F;Y) > config.min_bits), the step of
peak μ/I, the step where μ(bigram) overtakes μ(unigram) for good, and the final accuracy. The
project's stored predictions are also re-scored with pyitlib, which separates a difference in
the estimator from a difference in training.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks import common  # first: sets OMP_WAIT_POLICY before torch is imported

# isort: split
import numpy as np
import torch
from pyitlib import discrete_random_variable as drv
from scipy import stats as sp_stats
from torch import nn

from experiments import sequence_phases
from sgd_phases import datasets, eval_lib, io_lib, sequence_references

NAME = "sequence_reference_impl"
LN_EPS = 1e-6  # flax.linen.LayerNorm's default (torch's is 1e-5)
ADAM = {"betas": (0.9, 0.999), "eps": 1e-8}  # optax.adam's defaults


# ----------------------------------------------------------------------------- the model
class CausalSelfAttention(nn.Module):
  """Multi-head causal self-attention; q, k, v and output projections with biases."""

  def __init__(self, d_model: int, num_heads: int):
    super().__init__()
    self.num_heads, self.d_head = num_heads, d_model // num_heads
    self.query = nn.Linear(d_model, d_model)
    self.key = nn.Linear(d_model, d_model)
    self.value = nn.Linear(d_model, d_model)
    self.out = nn.Linear(d_model, d_model)

  def forward(self, h: torch.Tensor) -> torch.Tensor:
    b, t, d = h.shape
    split = lambda z: z.view(b, t, self.num_heads, self.d_head).transpose(1, 2)  # [B,H,T,dh]
    q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
    scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)                     # [B,H,T,T]
    future = torch.triu(torch.ones(t, t, dtype=torch.bool, device=h.device), diagonal=1)
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return self.out((weights @ v).transpose(1, 2).reshape(b, t, d))


class Transformer(nn.Module):
  """Tokens [B, T] -> next-token logits [B, T, V]: h = tok(x) + pos[:T]; per layer
  h += Attn(LN(h)) (attention-only); logits = Linear(LN(h))."""

  def __init__(self, vocab: int, max_len: int, num_layers: int = 2, num_heads: int = 1,
               d_model: int = 32, init_scale: float = 0.02):
    super().__init__()
    self.tok = nn.Embedding(vocab, d_model)
    self.pos = nn.Parameter(torch.empty(max_len, d_model))
    self.norms = nn.ModuleList(nn.LayerNorm(d_model, eps=LN_EPS) for _ in range(num_layers))
    self.attns = nn.ModuleList(CausalSelfAttention(d_model, num_heads)
                               for _ in range(num_layers))
    self.final_norm = nn.LayerNorm(d_model, eps=LN_EPS)
    self.unembed = nn.Linear(d_model, vocab)
    for m in self.modules():  # N(0, init_scale²) kernels and embeddings, zero biases
      if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=init_scale)
      if isinstance(m, nn.Linear):
        nn.init.zeros_(m.bias)
    nn.init.normal_(self.pos, std=init_scale)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = self.tok(x) + self.pos[: x.shape[1]]
    for norm, attn in zip(self.norms, self.attns):
      h = h + attn(norm(h))
    return self.unembed(self.final_norm(h))


# ----------------------------------------------------------------------------- training
def train_seed(config: Any, ds: datasets.Dataset, seed: int, steps: np.ndarray
               ) -> dict[str, np.ndarray]:
  """Trains one seed; returns test predictions [E, N] and test accuracy [E] at ``steps``."""
  torch.manual_seed(seed)
  kw = config.model_kwargs
  if kw.get("mlp", True) or not kw.get("layer_norm", True):
    raise ValueError("this reimplementation covers the attention-only pre-LN transformer only")
  x_tr = torch.from_numpy(ds.x_train.astype(np.int64))
  y_tr = torch.from_numpy(ds.y_train.astype(np.int64))
  x_te = torch.from_numpy(ds.x_test.astype(np.int64))
  y_te = ds.y_test.reshape(-1)
  vocab, bs, num_steps = ds.num_classes, int(config.batch_size), int(config.num_steps)
  if len(x_tr) < num_steps * bs:
    raise ValueError(f"{len(x_tr)} training sequences < num_steps × batch = {num_steps * bs}")
  model = Transformer(vocab, x_tr.shape[1], kw.num_layers, kw.num_heads, kw.d_model,
                      kw.get("init_scale", 0.02))
  if config.optimizer.name != "adam" or config.optimizer.schedule != "constant":
    raise ValueError("this reimplementation covers constant-lr Adam only")
  opt = torch.optim.Adam(model.parameters(), lr=float(config.optimizer.learning_rate), **ADAM)
  order = np.random.default_rng([int(config.seed), seed]).permutation(len(x_tr))  # one pass
  preds, accs = [], []
  want = {int(s) for s in steps}

  def evaluate() -> None:
    with torch.no_grad():
      pred = model(x_te).argmax(-1).reshape(-1).numpy().astype(np.int32)
    preds.append(pred)
    accs.append(float(np.mean(pred == y_te)))

  for t in range(num_steps + 1):
    if t in want:
      evaluate()
    if t == num_steps:
      break
    idx = torch.from_numpy(order[t * bs:(t + 1) * bs])
    logits = model(x_tr[idx])
    loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), y_tr[idx].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
  return {"predictions": np.stack(preds), "test_acc": np.asarray(accs)}


# ----------------------------------------------------------------------------- measures
def pyitlib_measures(pred: np.ndarray, y: np.ndarray, refs: dict[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
  """pred [S, E, N] -> {"i_fy": [S, E], "mu/<ref>": [S, E]} in bits with pyitlib (plug-in)."""
  s, e, _ = pred.shape
  out = {"i_fy": np.zeros((s, e))} | {f"mu/{r}": np.zeros((s, e)) for r in refs}
  for i in range(s):
    for j in range(e):
      f = pred[i, j].astype(np.int64)
      i_fy = drv.information_mutual(f, y, base=2)
      out["i_fy"][i, j] = i_fy
      for r, l in refs.items():
        out[f"mu/{r}"][i, j] = i_fy - drv.information_mutual_conditional(f, y, l, base=2)
  return out


def ci95(v: np.ndarray) -> dict[str, Any]:
  """Mean and 95% Student-t interval of per-seed values (NaNs dropped)."""
  v = np.asarray(v, np.float64)
  v = v[np.isfinite(v)]
  if v.size == 0:
    return {"mean": None, "lo": None, "hi": None, "n": 0}
  m = float(v.mean())
  if v.size < 2:
    return {"mean": m, "lo": None, "hi": None, "n": 1}
  half = float(sp_stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
  return {"mean": m, "lo": m - half, "hi": m + half, "n": int(v.size)}


def ratio(mu: np.ndarray, i_fy: np.ndarray, min_bits: float) -> np.ndarray:
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(i_fy > min_bits, mu / np.where(i_fy > min_bits, i_fy, 1.0), np.nan)


def overtake_step(lo: np.ndarray, hi: np.ndarray, steps: np.ndarray) -> np.ndarray:
  """Per seed, the first step from which μ(hi) > μ(lo) at every later step (NaN: never)."""
  out = []
  for a, b in zip(lo, hi):
    ahead = b > a
    stays = [bool(ahead[j:].all()) for j in range(len(ahead))]
    out.append(float(steps[stays.index(True)]) if any(stays) else np.nan)
  return np.asarray(out)


def summarize(steps: np.ndarray, m: dict[str, np.ndarray], test_acc: np.ndarray,
              refs: list[str], ladders: list[list[str]], min_bits: float) -> dict[str, Any]:
  """Per-step curves (mean, 95% CI), peak steps, overtake steps, final accuracy."""
  ratios = {r: ratio(m[f"mu/{r}"], m["i_fy"], min_bits) for r in refs}
  curve = lambda a: [ci95(a[:, j]) for j in range(a.shape[1])]
  out: dict[str, Any] = {
      "i_fy": curve(m["i_fy"]), "test_acc": curve(test_acc),
      "test_acc_end": ci95(test_acc[:, -1]), "i_fy_end": ci95(m["i_fy"][:, -1]),
      "references": {}, "overtakes": {}}
  with warnings.catch_warnings():  # steps where no seed has a ratio: NaN, quietly
    warnings.simplefilter("ignore", RuntimeWarning)
    mean_ratio = np.stack([np.nanmean(ratios[r], 0) for r in refs])               # [R, E]
  for r in refs:
    rr = ratios[r]
    peak = np.array([float(steps[np.nanargmax(x)]) if np.isfinite(x).any() else np.nan
                     for x in rr])
    out["references"][r] = {
        "ratio": curve(rr), "mu": curve(m[f"mu/{r}"]),
        "ratio_per_seed": [[None if not np.isfinite(v) else round(float(v), 5) for v in x]
                           for x in rr],
        "peak_step": ci95(peak), "peak_step_per_seed": peak.tolist(),
        "peak_ratio": ci95(np.array([np.nanmax(x) if np.isfinite(x).any() else np.nan
                                     for x in rr])),
        "ratio_end": ci95(rr[:, -1]), "mu_end": ci95(m[f"mu/{r}"][:, -1])}
  with np.errstate(invalid="ignore"):
    lead = np.where(np.isfinite(mean_ratio).any(0),
                    np.argmax(np.nan_to_num(mean_ratio, nan=-np.inf), 0), -1)
  out["leader_by_step"] = [refs[i] if i >= 0 else None for i in lead]
  for ladder in ladders:
    for lo, hi in itertools.pairwise(ladder):
      if {lo, hi} <= set(refs):
        ov = overtake_step(m[f"mu/{lo}"], m[f"mu/{hi}"], steps)
        out["overtakes"][f"{lo}->{hi}"] = {**ci95(ov), "per_seed": ov.tolist()}
  return out


# ----------------------------------------------------------------------------- the project run
SAME_FIELDS = ("num_steps", "num_seeds", "batch_size", "seed", "dataset", "model", "model_kwargs",
               "optimizer", "eval", "loss", "references", "min_bits", "task")


def project_run(config: Any, workdir: str | None) -> tuple[Any, float, str]:
  """The project's run of ``config``: loaded from ``workdir`` when it holds a finished one with
  the same settings, else trained there (or in a temp dir). Returns (Results, wall s, path)."""
  from sgd_phases import analysis  # pylint: disable=import-outside-toplevel
  path = workdir or tempfile.mkdtemp(prefix="sequence_phases_")
  cfg_file = Path(path) / io_lib.CONFIG_FILE
  if (Path(path) / io_lib.RESULTS_FILE).exists() and cfg_file.exists():
    stored, want = io_lib.read_json(cfg_file), config.to_dict()
    bad = [f for f in SAME_FIELDS if f in stored and stored[f] != want[f]]
    if bad:
      raise ValueError(f"{path}: the stored run differs from this config in {bad}")
    summary = Path(path) / "summary.json"
    wall = float(io_lib.read_json(summary)["wall_time_s"]) if summary.exists() else float("nan")
    return analysis.load(path), wall, path
  started = time.time()
  sequence_phases.run(config, path)
  return analysis.load(path), time.time() - started, path


# ----------------------------------------------------------------------------- comparison
def compare(steps: np.ndarray, ours: dict[str, Any], proj: dict[str, Any], refs: list[str]
            ) -> dict[str, Any]:
  """Per reference: where the 95% intervals of μ/I overlap, the largest gap of the means, and
  the scalar summaries side by side."""
  out: dict[str, Any] = {"references": {}}
  for r in refs:
    a, b = ours["references"][r]["ratio"], proj["references"][r]["ratio"]
    gaps, overlap, both = [], 0, 0
    for j, (x, y) in enumerate(zip(a, b)):
      if x["mean"] is None or y["mean"] is None:
        continue
      both += 1
      gaps.append((abs(x["mean"] - y["mean"]), int(steps[j])))
      if None in (x["lo"], y["lo"]) or (x["lo"] <= y["hi"] and y["lo"] <= x["hi"]):
        overlap += 1
    worst = max(gaps) if gaps else (None, None)
    out["references"][r] = {
        "steps_compared": both, "steps_ci_overlap": overlap,
        "max_abs_mean_gap": worst[0], "max_gap_at_step": worst[1],
        "mean_abs_mean_gap": float(np.mean([g for g, _ in gaps])) if gaps else None,
        **{f"{k}_torch_vs_project": [ours["references"][r][k], proj["references"][r][k]]
           for k in ("peak_step", "peak_ratio", "ratio_end", "mu_end")}}
  out["overtakes_torch_vs_project"] = {
      k: [ours["overtakes"][k], proj["overtakes"][k]] for k in ours["overtakes"]}
  out["test_acc_end_torch_vs_project"] = [ours["test_acc_end"], proj["test_acc_end"]]
  out["i_fy_end_torch_vs_project"] = [ours["i_fy_end"], proj["i_fy_end"]]
  out["leader_by_step_agree"] = int(sum(
      x == y for x, y in zip(ours["leader_by_step"], proj["leader_by_step"])))
  return out


def plot(path: Path, steps: np.ndarray, ours: dict[str, Any], proj: dict[str, Any],
         refs: list[str], title: str) -> None:
  """μ/I mean and 95% band per reference, both implementations overlaid (log step axis)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, len(refs) + 1, figsize=(4.2 * (len(refs) + 1), 3.6))
  x = np.maximum(steps, 0.5)  # step 0 drawn at 0.5 on the log axis
  panels = [(r, lambda s, r=r: s["references"][r]["ratio"]) for r in refs]
  panels.append(("I(F;Y) bits", lambda s: s["i_fy"]))
  for ax, (name, get) in zip(axes, panels):
    for label, s, color in (("PyTorch + pyitlib", ours, "C0"), ("project (JAX)", proj, "C3")):
      c = get(s)
      nan = lambda v: np.nan if v is None else v
      mean = np.array([nan(p["mean"]) for p in c])
      lo = np.array([nan(p["lo"]) for p in c])
      hi = np.array([nan(p["hi"]) for p in c])
      ax.plot(x, mean, color=color, label=label)
      ax.fill_between(x, lo, hi, color=color, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_title(name if name.endswith("bits") else f"μ/I vs {name}")
  axes[0].legend(fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
  p.add_argument("--num_steps", type=int, default=None, help="override (both implementations)")
  p.add_argument("--num_seeds", type=int, default=None, help="override (both implementations)")
  p.add_argument("--project_workdir", default=None,
                 help="a finished project run to load (or a folder to train it into)")
  p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
  p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
  p.add_argument("--no_plot", action="store_true")
  args = p.parse_args(argv)
  torch.set_num_threads(args.threads)

  # the settings this reimplementation writes out (pre-LN, d_model 32: icl_markov_small), on
  # stored training sequences (train_size = num_steps x batch_size follows num_steps) that the
  # PyTorch loop reads too
  config = sequence_phases.get_config("icl_markov_small")
  config.dataset.train_sampling = "pregenerated"
  if args.num_steps is not None:
    config.num_steps = args.num_steps
  if args.num_seeds is not None:
    config.num_seeds = args.num_seeds
  config.progress = False
  ds = datasets.get_dataset(config.dataset)
  steps = eval_lib.eval_steps(int(config.num_steps), config.eval.schedule,
                              int(config.eval.num_points), int(config.eval.every))
  refs = list(config.references.keys())
  ref_pred = {r: sequence_references.closed_form(
      config.references[r].model, dict(config.references[r].model_kwargs), ds).astype(np.int64)
              for r in refs}
  y = ds.y_test.reshape(-1).astype(np.int64)
  ladders = sequence_phases.TASKS[config.task][3]
  min_bits = float(config.min_bits)

  # --- ours
  t0 = time.time()
  runs = [train_seed(config, ds, s, steps) for s in range(int(config.num_seeds))]
  torch_train_s = time.time() - t0
  pred = np.stack([r["predictions"] for r in runs])
  acc = np.stack([r["test_acc"] for r in runs])
  t0 = time.time()
  ours_m = pyitlib_measures(pred, y, ref_pred)
  pyitlib_s = time.time() - t0
  ours = summarize(steps, ours_m, acc, refs, ladders, min_bits)
  print(f"torch: {torch_train_s:.1f} s training, {pyitlib_s:.1f} s pyitlib", flush=True)

  # --- the project's
  res, project_s, workdir = project_run(config, args.project_workdir)
  a = res.arrays
  if not np.array_equal(a["steps"], steps) or not np.array_equal(a["y_test"], y):
    raise ValueError("the project run's evaluation steps or test targets differ from ours")
  for r in refs:
    if not (res.reference(r) == ref_pred[r][None]).all():
      raise ValueError(f"the project run's reference {r!r} predictions differ from ours")
  proj_m = {"i_fy": a[f"mi/{refs[0]}/i_fy"].astype(np.float64)}
  proj_m |= {f"mu/{r}": res.measures(r)["mu"].astype(np.float64) for r in refs}
  proj = summarize(steps, proj_m, a["test_acc"].astype(np.float64), refs, ladders, min_bits)
  print(f"project: {project_s:.1f} s ({workdir})", flush=True)
  # the project's predictions re-scored with pyitlib: the estimator alone
  t0 = time.time()
  rescored = pyitlib_measures(a["predictions"], y, ref_pred)
  estimator_check = {k: float(np.max(np.abs(rescored[k] - proj_m[k]))) for k in rescored}
  rescore_s = time.time() - t0

  out_json = Path(args.out) if args.out else common.RESULTS_DIR / f"{NAME}_cpu.json"
  png = out_json.with_suffix(".png")
  if not args.no_plot:
    plot(png, steps, ours, proj, refs,
         f"icl_markov k=3 T={config.dataset.length}: {config.num_seeds} seeds, "
         f"{config.num_steps} steps, mean ± 95% CI")
  result = {
      "command": " ".join([Path(sys.executable).name, "-m", f"benchmarks.{NAME}"] +
                          sys.argv[1:]),
      "env": common.environment(),
      "settings": {
          "config": "experiments/sequence_phases.py:icl_markov_small (get_config)" + (
              f", num_steps={args.num_steps}" if args.num_steps is not None else "") + (
              f", num_seeds={args.num_seeds}" if args.num_seeds is not None else ""),
          "num_steps": int(config.num_steps), "num_seeds": int(config.num_seeds),
          "batch_size": int(config.batch_size), "train_size": int(config.dataset.train_size),
          "test_sequences": int(config.dataset.test_size), "length": int(config.dataset.length),
          "test_positions": int(y.size), "k": int(ds.num_classes),
          "model_kwargs": config.model_kwargs.to_dict(),
          "optimizer": config.optimizer.to_dict(), "adam_torch": ADAM, "ln_eps": LN_EPS,
          "min_bits": min_bits, "references": refs, "steps": steps.tolist(),
          "reference_acc": {r: float(np.mean(ref_pred[r] == y)) for r in refs},
          "torch_threads": args.threads,
          "differences_by_design": [
              ("init and data-order random streams (torch.manual_seed(s) / numpy permutation "
               "vs jax.random fold_in): the seeds are different draws, not the same networks"),
              "masking with -inf (torch) vs -1e9 (project): identical after softmax",
              ("position table of T-1 rows (torch) vs 256 rows (project): unused rows get no "
               "gradient and never reach the output")]},
      "wall_time_s": {"torch_train": round(torch_train_s, 1), "torch_pyitlib": round(pyitlib_s, 1),
                      "project_run": round(project_s, 1),
                      "pyitlib_rescore_project": round(rescore_s, 1)},
      "project_workdir": workdir,
      "torch": ours, "project": proj,
      "estimator_check_max_abs_diff_bits": estimator_check,
      "comparison": compare(steps, ours, proj, refs),
      "figure": None if args.no_plot else str(png.relative_to(Path.cwd()) if png.is_relative_to(
          Path.cwd()) else png),
  }
  common.write_json(out_json, result)
  print(f"wrote {out_json}")
  return result


if __name__ == "__main__":
  main()
