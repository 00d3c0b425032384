"""Group QC page build time for N synthetic visits (default 1,000), against a baseline that draws
the same distributions as one matplotlib figure (PNG) per metric, the way the FreeSurfer group QC
plots are made.

    .venv/bin/python benchmarks/bench_qc_group.py [--subjects 1000] [--repeat 3]

Synthetic per-visit numbers: every metric of neurosmk.qc_metrics.METRICS drawn from a normal
distribution around a plausible value, some missing (n/a), a few visits made outliers. Both legs
read the same per-visit JSON files; the timings include reading them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from neurosmk import qcpages  # noqa: E402
from neurosmk.qc_metrics import METRICS, read_visit_metrics  # noqa: E402

TYPICAL = {"brainmask_ml": (1450, 120), "csf_ml": (300, 50), "gm_ml": (650, 60), "wm_ml": (500, 50),
           "reg_similarity_before": (0.45, 0.08), "reg_similarity_after": (0.93, 0.02),
           "t1w_snr_wm": (18, 3), "t1w_cnr": (3.2, 0.4), "t1w_cjv": (0.45, 0.05), "dwi_mask_ml": (1600, 150),
           "dwi_b0_snr": (22, 4), "fa_wm_mean": (0.42, 0.03), "fs_etiv_ml": (1550, 150),
           "fs_mean_thickness_mm": (2.5, 0.12)}


def synth(folder: str, n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        pid = f"sub-{i:05d}"
        m = {}
        for k in METRICS:
            mu, sd = TYPICAL[k]
            v = float(rng.normal(mu, sd))
            if i % 97 == 5:
                v = mu + 9 * sd  # outlier
            m[k] = None if rng.random() < 0.03 else v
        path = os.path.join(folder, f"{pid}_desc-qc_metrics.json")
        with open(path, "w") as f:
            json.dump({"participant_id": pid, "session_id": "n/a", "metrics": m}, f)
        pairs.append((path, os.path.join(folder, f"{pid}.html")))
    return pairs


def baseline(pairs, out_dir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [read_visit_metrics(p) for p, _ in pairs]
    for k, (label, unit, _) in METRICS.items():
        vals = [r["metrics"][k] for r in recs if r["metrics"][k] is not None]
        fig, ax = plt.subplots(figsize=(8, 1.6))
        ax.scatter(vals, np.random.default_rng(0).random(len(vals)), s=6)
        ax.set_title(label)
        ax.set_yticks([])
        fig.savefig(os.path.join(out_dir, f"{k}.png"), dpi=100, bbox_inches="tight")
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pairs = synth(tmp, args.subjects)
        out = os.path.join(tmp, "group", "qc.html")
        os.makedirs(os.path.dirname(out))
        ours, base = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            qcpages.group_page(out, pairs, out_tsv=os.path.join(tmp, "group", "qc_metrics.tsv"))
            ours.append(time.perf_counter() - t)
        size = os.path.getsize(out)
        n_out = open(out).read().count('class="tag bad">outlier')
        for _ in range(args.repeat):
            t = time.perf_counter()
            baseline(pairs, os.path.join(tmp, "group"))
            base.append(time.perf_counter() - t)
    print(f"group QC page, {args.subjects} visits x {len(METRICS)} metrics (best of {args.repeat}):")
    print(f"  {'neurosmk group page (HTML + inline SVG + TSV)':<52} {min(ours):8.3f} s   "
          f"page {size / 1e6:.2f} MB, {n_out} visits flagged")
    print(f"  {'baseline: one matplotlib PNG per metric':<52} {min(base):8.3f} s")
    print(f"  ratio baseline / ours: {min(base) / min(ours):.1f}x")


if __name__ == "__main__":
    main()
