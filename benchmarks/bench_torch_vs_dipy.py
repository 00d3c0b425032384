"""PyTorch backends (dwi.denoise / dwi.tensor method ``torch``) against DIPY on the demo DWI.

    python benchmarks/bench_torch_vs_dipy.py [--threads 1] [--devices cpu cuda]

Each (step, backend, device) runs in its own child process, which reports its wall time (the
whole call: reading, computing, writing; torch's import is timed apart) and its peak resident
memory. Both backends of a step read the same inputs; the agreement column compares the torch
output with DIPY's inside the brain mask. CUDA legs run only where torch sees a GPU. Needs
``pip install 'neurosmk[gpu]'`` (torch 2.13.0). Prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _legs import RAW, REPO, print_table, run_leg

sys.path.insert(0, str(REPO / "src"))
PARAMS = ("FA", "MD", "AD", "RD", "RGB", "V1")


def paths(work: Path, tag: str) -> dict[str, str]:
    return {k: str(work / f"{tag}_{k}.nii.gz") for k in ("den", "noise", "mask", *PARAMS)}


def run_one(step: str, backend: str, device: str, work: Path, threads: int) -> dict:
    """One step, one backend, in this process: wall seconds, torch import seconds, peak MiB."""
    bval, bvec, raw = f"{RAW}.bval", f"{RAW}.bvec", f"{RAW}.nii.gz"
    ref = paths(work, "ref")
    me = paths(work, f"{backend}-{device}")
    t_import = 0.0
    if backend == "torch":
        t0 = time.perf_counter()
        import torch

        torch.set_num_threads(threads)
        t_import = time.perf_counter() - t0
        from neurosmk import dwi_torch as T
    from neurosmk import dwi as D

    t0 = time.perf_counter()
    if step == "denoise":
        if backend == "dipy":
            D.denoise_mppca(raw, me["den"], me["noise"], patch_radius=2)
        else:
            T.denoise_mppca_torch(raw, me["den"], me["noise"], patch_radius=2, device=device, threads=threads)
    else:  # tensor, on the raw series inside the reference mask
        if backend == "dipy":
            D.tensor_fit(raw, bval, bvec, ref["mask"], {p: me[p] for p in PARAMS}, fit_method="WLS")
        else:
            T.tensor_fit_torch(raw, bval, bvec, ref["mask"], {p: me[p] for p in PARAMS}, fit_method="WLS",
                               device=device, threads=threads)
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": wall, "import_s": t_import, "peak_mib": peak}


def agreement(step: str, work: Path, tag: str) -> str:
    import nibabel as nib

    load = lambda p: nib.load(p).get_fdata(dtype=np.float64)  # noqa: E731
    ref, d, t = paths(work, "ref"), paths(work, "dipy-cpu"), paths(work, tag)
    m = load(ref["mask"]) > 0
    if step == "denoise":
        a, b = load(t["den"]), load(d["den"])
        m4 = np.broadcast_to(m[..., None], a.shape)
        rel = np.abs(a - b)[m4] / np.maximum(np.abs(b[m4]), 1e-6)
        return f"max abs diff {np.abs(a - b)[m4].max():.3g}; rel. diff p99.9 {np.percentile(rel, 99.9):.2g}"
    fa_t, fa_d = load(t["FA"]), load(d["FA"])
    v_t, v_d = load(t["V1"]), load(d["V1"])
    wm = m & (fa_d > 0.2)
    dot = np.abs((v_t[wm] * v_d[wm]).sum(-1))
    return (f"FA max abs diff {np.abs(fa_t - fa_d)[m].max():.2g}; "
            f"MD max rel diff {np.max(np.abs(load(t['MD']) - load(d['MD']))[m] / load(d['MD'])[m]):.2g}; "
            f"V1 min |dot| (FA>0.2) {dot.min():.6f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--devices", nargs="*", default=["cpu", "cuda"])
    ap.add_argument("--workdir")
    ap.add_argument("--one", nargs=3, metavar=("STEP", "BACKEND", "DEVICE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="neurosmk_torch_bench_"))
    if args.one:
        print(json.dumps(run_one(*args.one, work, args.threads)))
        return
    try:
        import torch
    except ImportError:
        sys.exit("torch is not installed: pip install 'neurosmk[gpu]'")
    devices = [d for d in args.devices if d == "cpu" or (d == "cuda" and torch.cuda.is_available())]
    from neurosmk import dwi as D

    D.b0_mask(f"{RAW}.nii.gz", f"{RAW}.bval", f"{RAW}.bvec", paths(work, "ref")["mask"])
    legs = [("dipy", "cpu")] + [("torch", d) for d in devices]
    rows = []
    for step in ("denoise", "tensor"):
        res = {}
        for backend, device in legs:
            res[(backend, device)] = run_leg(__file__, step, backend, device, "--workdir", work,
                                             "--threads", args.threads)
        rows.append((step, res))
    print(f"demo DWI 72x72x36x21, {args.threads} thread(s), torch {torch.__version__}, "
          f"CUDA {'available' if torch.cuda.is_available() else 'not available'}")
    table = []
    for step, res in rows:
        base = res[("dipy", "cpu")]["wall_s"]
        for (backend, device), r in res.items():
            agree = "(reference)" if backend == "dipy" else agreement(step, work, f"{backend}-{device}")
            table.append([step, backend, device, f"{r['wall_s']:.2f}", f"{r['import_s']:.2f}",
                          f"{base / r['wall_s']:.2f}x", f"{r['peak_mib']:.0f}", agree])
    print_table(["step", "backend", "device", "wall s", "torch import s", "speed-up vs DIPY", "peak MiB",
                 "agreement with DIPY"], table)
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
