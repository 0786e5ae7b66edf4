"""Prints the README's results tables from the committed summaries in docs/results/.

    python docs/results_table.py

Every number in the tables comes from a summary.json written by an experiment run (copied to
docs/results/<run>.json with its wall time); rows whose run predates the conditional null show
"—" in the null columns.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
LINEAR_PHASE_ROWS = [  # (summary, task, model, steps: for summaries that predate num_steps)
    ("lp_mnist_mlp", "MNIST 0–4 vs 5–9", "mlp 512×2", 10_000),
    ("lp_mnist10_mlp", "MNIST, all 10 classes (K = 10)", "mlp 512×2", 10_000),
    ("lp_mnist_cnn", "MNIST 0–4 vs 5–9", "paper_cnn", 1_000),
    ("lp_fashion_mlp", "Fashion-MNIST 0–4 vs 5–9", "mlp 512×2", 10_000),
    ("lp_fashion_cnn_4k", "Fashion-MNIST 0–4 vs 5–9", "paper_cnn", 4_000),
    ("lp_sinusoid_hd", "sinusoid_hd (d = 50, synthetic)", "mlp 256×2", 20_000),
    ("synthetic_ball", "ball2d_sinusoid, 10% noise (4 seeds)", "mlp 128×3", 40_000),
]


def ci(v: dict, digits: int = 2) -> str:
  return f"{v['mean']:.{digits}f} [{v['lo']:.{digits}f}, {v['hi']:.{digits}f}]"


def null(v: dict | None) -> tuple[str, str]:
  """(null mean [95% range], excess) of a stats.versus_null entry, or dashes."""
  if v is None:
    return "—", "—"
  n = v["null"]
  return f"{n['mean']:.2f} [{n['lo']:.2f}, {n['hi']:.2f}]", ci(v["excess"])


def linear_phase_table() -> list[str]:
  out = ["| task | model | steps | T_0 (step) | μ/I at T_0 | null | excess | μ_∞/I(L;Y) | null "
         "| excess | I(L;Y) [bits] | train / test acc at end |", "|" + "---|" * 12]
  for name, task, model, steps in LINEAR_PHASE_ROWS:
    path = RESULTS / f"{name}.json"
    if not path.exists():
      continue
    s = json.loads(path.read_text())
    t0 = s["t0_step"]
    t0s = (f"{t0['mean']:.0f} [{t0['lo']:.0f}, {t0['hi']:.0f}]" if t0["mean"] >= 100
           else f"{t0['mean']:.1f} [{t0['lo']:.1f}, {t0['hi']:.1f}]")
    end = s.get("mu_end_over_i_ly") or {"mean": s["mu_end"]["mean"] / s["i_ly"]["mean"]}
    end_s = ci(end) if "lo" in end else f"{end['mean']:.2f}"
    out.append(" | ".join([
        f"| {task}", model, f"{s.get('num_steps', steps):,}", t0s, ci(s["mu_over_i_at_t0"]),
        *null(s.get("mu_over_i_at_t0_vs_null")), end_s, *null(s.get("mu_end_over_i_ly_vs_null")),
        f"{s['i_ly']['mean']:.3f}",
        f"{s['train_acc_end']['mean']:.3f} / {s['test_acc_end']['mean']:.3f} |"]))
  return out


def retention_table() -> list[str]:
  s = json.loads((RESULTS / "retention_mnist.json").read_text())
  out = ["| p | T_0 | μ at T_0 → end [bits] | peak | μ_peak/I(L;Y) | null of the peak | excess "
         "| μ_end/I(L;Y) | null | excess | loss from peak [bits] | its null | μ_Y(F;F_T0) change "
         "| train (noisy) / clean / test |", "|" + "---|" * 14]
  for r in s["table"]:
    loss = r.get("mu_l_loss_from_peak_vs_null")
    out.append(" | ".join([
        f"| {r['p']}", f"{r['t0_step']['mean']:.0f}",
        f"{r['mu_l']['at_t0']['mean']:.3f} → {r['mu_l']['end']['mean']:.3f}",
        f"{r['mu_l_peak']['mean']:.3f}", ci(r["mu_l_peak_over_i_ly_vs_null"]["value"]),
        *null(r.get("mu_l_peak_over_i_ly_vs_null")),
        ci(r["mu_l_end_over_i_ly_vs_null"]["value"]), *null(r.get("mu_l_end_over_i_ly_vs_null")),
        "—" if loss is None else ci(loss["value"], 3),
        "—" if loss is None else f"{loss['null']['mean']:.3f}",
        f"{r['mu_f_t0']['change']['mean']:+.3f}",
        f"{r['train_acc_end']['mean']:.3f} / {r['train_acc_clean_end']['mean']:.3f} / "
        f"{r['test_acc']['end']['mean']:.3f} |"]))
  return out


def retention_map_table() -> list[str]:
  """Cells: loss from peak (its null) · μ_end/I(L;Y) (its null) · excess [95% CI]; † = not
  every seed reached the target train accuracy."""
  s = json.loads((RESULTS / "retention_map_mnist.json").read_text())
  field, ps = s["map_field"], s["noise_rates"]
  out = [f"| {field.split('.')[-1]} \\ p | " + " | ".join(f"{p:g}" for p in ps) + " |",
         "|" + "---|" * (len(ps) + 1)]
  for v in s["map_values"]:
    cells = []
    for p in ps:
      r = next(r for r in s["rows"] if r[field] == v and r["dataset.label_noise"] == p)
      cells.append(f"{r['mu_l_loss_from_peak.value.mean']:.3f} "
                   f"({r['mu_l_loss_from_peak.null.mean']:.3f}) · "
                   f"{r['mu_l_end_over_i_ly.value.mean']:.2f} "
                   f"({r['mu_l_end_over_i_ly.null.mean']:.2f}) · "
                   f"{r['mu_l_end_over_i_ly.excess.mean']:.2f} "
                   f"[{r['mu_l_end_over_i_ly.excess.lo']:.2f}, "
                   f"{r['mu_l_end_over_i_ly.excess.hi']:.2f}]"
                   + ("" if r.get("interpolates") else "†"))
    out.append(f"| {v} | " + " | ".join(cells) + " |")
  return out


def ladder_table() -> list[str]:
  s = json.loads((RESULTS / "ladder_mnist.json").read_text())
  out = ["| G_i | test acc | plateau step | μ/I(F;Y) at the plateau | null | excess | μ at end |",
         "|" + "---|" * 7]
  for r in s["rungs"]:
    v = r["plateau_mu_over_i_vs_null"]
    out.append(" | ".join([f"| {r['name']}", f"{r['test_acc']['mean']:.3f}",
                           f"{r['plateau_step']['mean']:.0f}", ci(v["value"]), *null(v),
                           f"{r['mu_end']['mean']:.3f} |"]))
  return out


if __name__ == "__main__":
  for table in (linear_phase_table(), retention_table(), retention_map_table(), ladder_table()):
    print("\n".join(table) + "\n")
