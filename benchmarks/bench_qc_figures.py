"""Render time of each QC mosaic (neurosmk.qc) on the outputs of a finished run, against nilearn used
directly (plot_anat mosaic with its own cut selection on the uncropped image, then the same
contours), the obvious way to make the same figure.

    .venv/bin/python benchmarks/bench_qc_figures.py [--out results/demo] [--subject 01]

Needs a finished run (``make demo``, or any output_dir) with the subject's anat and/or dwi outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/demo")
    ap.add_argument("--anat-subject", default="01")
    ap.add_argument("--dwi-subject", default="02")
    ap.add_argument("--template", default=None, help="template T1w (default: nilearn's MNI152 2009a)")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    from neurosmk import qc
    from neurosmk.anat import nilearn_template

    a = os.path.join(args.out, f"sub-{args.anat_subject}", "anat", f"sub-{args.anat_subject}_")
    d = os.path.join(args.out, f"sub-{args.dwi_subject}", "dwi", f"sub-{args.dwi_subject}_")
    tpl = args.template or nilearn_template()
    warped = [f for f in os.listdir(os.path.dirname(a)) if "_space-" in f and f.endswith("desc-brain_T1w.nii.gz")] \
        if os.path.isdir(os.path.dirname(a)) else []
    jobs = []
    if os.path.exists(a + "desc-preproc_T1w.nii.gz"):
        jobs += [("brain mask on T1w", lambda o: qc.mask_mosaic(a + "desc-preproc_T1w.nii.gz",
                                                                a + "desc-brain_mask.nii.gz", o)),
                 ("tissue classes on T1w", lambda o: qc.dseg_mosaic(a + "desc-preproc_T1w.nii.gz", a + "dseg.nii.gz",
                                                                    a + "desc-brain_mask.nii.gz", o))]
        if warped:
            w = os.path.join(os.path.dirname(a), warped[0])
            jobs.append(("template contours on registered T1w", lambda o: qc.registration_mosaic(w, tpl, o)))
    if os.path.exists(d + "model-DTI_param-FA_dwimap.nii.gz"):
        jobs += [("FA with colourbar", lambda o: qc.fa_mosaic(d + "model-DTI_param-FA_dwimap.nii.gz",
                                                              d + "desc-brain_mask.nii.gz", o)),
                 ("colour FA", lambda o: qc.colour_fa_mosaic(d + "model-DTI_param-RGB_dwimap.nii.gz",
                                                            d + "desc-brain_mask.nii.gz", o))]
    if not jobs:
        sys.exit(f"{args.out}: no sub-{args.anat_subject} anat or sub-{args.dwi_subject} dwi outputs")

    def nilearn_direct(o):
        from nilearn import plotting

        display = plotting.plot_anat(a + "desc-preproc_T1w.nii.gz", display_mode="mosaic", cut_coords=8)
        display.add_contours(a + "desc-brain_mask.nii.gz", levels=[0.5], colors="r")
        display.savefig(o, dpi=150)
        display.close()

    import nilearn.plotting  # noqa: F401 - imported before timing, for both legs

    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        if os.path.exists(a + "desc-preproc_T1w.nii.gz"):
            t = time.perf_counter()
            nilearn_direct(os.path.join(tmp, "baseline.png"))
            rows.append(("baseline: nilearn plot_anat mosaic, uncropped", time.perf_counter() - t,
                         os.path.getsize(os.path.join(tmp, "baseline.png"))))
        for name, fn in jobs:
            out = os.path.join(tmp, name.replace(" ", "_") + ".png")
            t = time.perf_counter()
            fn(out)
            rows.append((name, time.perf_counter() - t, os.path.getsize(out)))
    print(f"QC mosaics (3 rows x 8 slices, 150 dpi) on {args.out}; load average {os.getloadavg()[0]:.1f}")
    for name, sec, size in rows:
        print(f"  {name:<48} {sec:7.2f} s  {size / 1e3:8.0f} kB")


if __name__ == "__main__":
    main()
