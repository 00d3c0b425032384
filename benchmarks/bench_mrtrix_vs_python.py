"""MRtrix3 vs Python (DIPY) backend of each diffusion step on the demo DWI (72x72x36, 21 volumes).

    python benchmarks/bench_mrtrix_vs_python.py [--threads 2] [--workdir DIR]

Each (step, backend) runs in its own child process, which reports its wall time and its peak
resident memory (getrusage: RUSAGE_SELF for the in-process DIPY call, RUSAGE_CHILDREN for the
MRtrix command it launches). Both backends of a step read the same input (the MRtrix output of
the step before), so the agreement column compares like with like. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _legs import RAW, REPO, print_table, run_leg

sys.path.insert(0, str(REPO / "src"))
PARAMS = ("FA", "MD", "AD", "RD", "RGB", "V1")


def paths(work: Path, backend: str) -> dict[str, str]:
    p = {k: str(work / f"{backend}_{k}.nii.gz") for k in ("den", "noise", "gibbs", "mask", *PARAMS)}
    p["tensor"] = str(work / f"{backend}_tensor.mif")
    return p


def run_one(step: str, backend: str, work: Path, threads: int) -> dict:
    """Run one step with one backend in this process; return wall seconds and peak RSS (MiB)."""
    mr = paths(work, "mrtrix")
    me = paths(work, backend)
    bval, bvec, raw = f"{RAW}.bval", f"{RAW}.bvec", f"{RAW}.nii.gz"
    nt = ["-nthreads", str(threads), "-force", "-quiet"]
    t0 = time.perf_counter()
    if backend == "mrtrix":
        cmds = {
            "denoise": [["dwidenoise", raw, me["den"], "-noise", me["noise"], "-extent", "5,5,5", *nt]],
            "degibbs": [["mrdegibbs", mr["den"], me["gibbs"], "-axes", "0,1", *nt]],
            "mask": [["dwi2mask", mr["gibbs"], me["mask"], "-fslgrad", bvec, bval, *nt]],
            "tensor": [["dwi2tensor", mr["gibbs"], me["tensor"], "-fslgrad", bvec, bval, "-mask", mr["mask"],
                        "-ols", "-iter", "1", *nt],
                       ["tensor2metric", me["tensor"], "-mask", mr["mask"], "-fa", me["FA"], "-adc", me["MD"],
                        "-ad", me["AD"], "-rd", me["RD"], "-vector", me["V1"], "-num", "1", "-modulate", "none", *nt]],
        }[step]
        for c in cmds:
            subprocess.run(c, check=True)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    else:
        from neurosmk import dwi as D

        if step == "denoise":
            D.denoise_mppca(raw, me["den"], me["noise"], patch_radius=2)
        elif step == "degibbs":
            D.degibbs(mr["den"], me["gibbs"], slice_axis=2, n_points=3, num_processes=threads)
        elif step == "mask":
            D.b0_mask(mr["gibbs"], bval, bvec, me["mask"])
        else:
            D.tensor_fit(mr["gibbs"], bval, bvec, mr["mask"], {p: me[p] for p in PARAMS}, fit_method="WLS")
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"wall_s": time.perf_counter() - t0, "peak_mib": peak_kb / 1024}


def agreement(step: str, work: Path) -> str:
    import nibabel as nib

    load = lambda p: nib.load(p).get_fdata(dtype=np.float32)  # noqa: E731
    mr, py = paths(work, "mrtrix"), paths(work, "dipy")
    m = load(mr["mask"]) > 0
    r = lambda a, b, mm: float(np.corrcoef(a[mm].ravel(), b[mm].ravel())[0, 1])  # noqa: E731
    if step in ("denoise", "degibbs"):
        k = "den" if step == "denoise" else "gibbs"
        a, b = load(mr[k]), load(py[k])
        m4 = np.broadcast_to(m[..., None], a.shape)
        return f"r={r(a, b, m4):.5f} rel.diff={np.abs(a - b)[m4].mean() / np.abs(b[m4]).mean():.4f}"
    if step == "mask":
        b = load(py["mask"]) > 0
        return f"Dice={2 * (m & b).sum() / (m.sum() + b.sum()):.4f}"
    a, b = load(mr["FA"]), load(py["FA"])
    md_r = r(load(mr["MD"]), load(py["MD"]), m)
    return f"FA r={r(a, b, m):.4f} mean.abs.dFA={np.abs(a - b)[m].mean():.4f}; MD r={md_r:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir")
    ap.add_argument("--one", nargs=2, metavar=("STEP", "BACKEND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="neurosmk_bench_"))
    if args.one:
        print(json.dumps(run_one(*args.one, work, args.threads)))
        return
    if not shutil.which("dwidenoise"):
        sys.exit("MRtrix3 is not on PATH")
    rows = []
    for step in ("denoise", "degibbs", "mask", "tensor"):
        res = {}
        for backend in ("mrtrix", "dipy"):
            res[backend] = run_leg(__file__, step, backend, "--workdir", work, "--threads", args.threads)
        rows.append((step, res))
    rows = [(step, res, agreement(step, work)) for step, res in rows]  # needs the mask: after all steps
    print(f"demo DWI 72x72x36x21, {args.threads} threads, work dir {work}")
    print_table(["step", "MRtrix wall s", "DIPY wall s", "DIPY/MRtrix time", "MRtrix peak MiB", "DIPY peak MiB",
                 "agreement (in the MRtrix mask)"],
                [[step, f"{res['mrtrix']['wall_s']:.2f}", f"{res['dipy']['wall_s']:.2f}",
                  f"{res['dipy']['wall_s'] / res['mrtrix']['wall_s']:.1f}x", f"{res['mrtrix']['peak_mib']:.0f}",
                  f"{res['dipy']['peak_mib']:.0f}", agree] for step, res, agree in rows])
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
