#!/usr/bin/env python
"""neurosmk-status on a synthetic cohort: time to the subject x stage table (goal < 10 s at 10,000).

    python benchmarks/bench_status.py [--subjects 10000] [--fail-every 97]

Builds an output tree like a finished run of the default pipeline: per subject the 10 per-visit
jobs of the default backends (anat biascorrect/skullstrip/segment/register/volumes, dwi
denoise/degibbs/mask/tensor/stats), each with its log, its benchmark record and one small output
file; every --fail-every-th subject has its dwi_tensor job failed (a traceback in the log, no
record); the cohort-level jobs' logs and records; and Snakemake's run log of that run as a SLURM
run writes it (every job's info block, an error report per failed subject's DWI group job), which
the status reads because jobs did not finish. Then times, side by side:
  collect     neurosmk.status.collect(output_dir): the DataFrame (what the QC pages import);
  cli         neurosmk-status OUTPUT_DIR --failed-only (collect + summary + TSV), in-process;
  baseline    what a user would do without it: read every log for its first error line.
Each timed twice (cold-ish after building, then warm); the file-system cache is not dropped. Wall and
CPU seconds are printed: on a busy shared machine wall can be many times the CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from neurosmk import paths, status  # noqa: E402

RULES = ["anat_biascorrect_ants", "anat_skullstrip_python", "anat_segment_atropos", "anat_register_ants",
         "anat_volumes_qc", "dwi_denoise_dipy", "dwi_degibbs_dipy", "dwi_mask_dipy", "dwi_tensor_dipy",
         "dwi_stats_qc"]
GROUP_RULES = ["group_anat_volumes", "group_dti_stats", "dataset_description", "methods"]
TB = ("Traceback (most recent call last):\n  File \"scripts/dwi_tensor.py\", line 3, in <module>\n"
      "    fit()\nnumpy.linalg.LinAlgError: SVD did not converge\n")
BENCH = "s\th:m:s\tmax_rss\n12.5\t0:00:12\t300.1\n"


def build(out: Path, n: int, fail_every: int) -> int:
    made = 0
    for rule in RULES:
        os.makedirs(os.path.dirname(paths.log_path(str(out), rule, "sub-x")), exist_ok=True)
        os.makedirs(os.path.dirname(paths.bench_path(str(out), rule, "sub-x")), exist_ok=True)
    for i in range(1, n + 1):
        visit = f"sub-{i:05d}"
        failed = fail_every and i % fail_every == 0
        for dt in ("anat", "dwi"):
            os.makedirs(out / visit / dt, exist_ok=True)
        for rule in RULES:
            bad = failed and rule == "dwi_tensor_dipy"
            skipped = failed and rule == "dwi_stats_qc"
            if skipped:
                continue
            with open(paths.log_path(str(out), rule, visit), "w") as fh:
                fh.write(f"{rule} {visit}\n" + (TB if bad else "done\n"))
            made += 1
            if not bad:
                with open(paths.bench_path(str(out), rule, visit), "w") as fh:
                    fh.write(BENCH)
                with open(out / visit / rule.split("_")[0] / f"{visit}_desc-{rule.split('_')[1]}.tsv", "w") as fh:
                    fh.write("x\n1\n")
                made += 2
    for rule in GROUP_RULES:
        Path(paths.log_path(str(out), rule)).write_text("ok\n")
        Path(paths.bench_path(str(out), rule)).write_text(BENCH)
    return made


def run_log(workdir: Path, out: Path, n: int, fail_every: int) -> int:
    """Snakemake's run log of that run as a SLURM run writes it (bytes): every job's info block,
    its 'Finished' line, and for each failed subject the error report of its DWI group job with
    the SLURM log copied in. neurosmk-status reads it because jobs did not finish."""
    from snakemake.logging import DefaultFormatter

    fmt = DefaultFormatter(show_failed_logs=True)
    (workdir / ".snakemake" / "log").mkdir(parents=True)
    slurm = workdir / ".snakemake" / "slurm_logs" / "group_dwi"
    slurm.mkdir(parents=True)
    dwi = [r for r in RULES if r.startswith("dwi_")]
    with open(workdir / ".snakemake" / "log" / "2026-12-01T000000.000000.snakemake.log", "w") as fh:
        jobid = 0
        for i in range(1, n + 1):
            visit = f"sub-{i:05d}"
            for rule in RULES:
                jobid += 1
                outp = out / visit / rule.split("_")[0] / f"{visit}_desc-{rule.split('_')[1]}.tsv"
                log = paths.log_path(str(out), rule, visit)
                fh.write(f"[Tue Dec  1 05:47:{i % 60:02d} 2026]\nlocalrule {rule}:\n"
                         f"    input: {out}/{visit}/in.nii.gz\n    output: {outp}\n    log: {log}\n    jobid: {jobid}\n"
                         f"    benchmark: {paths.bench_path(str(out), rule, visit)}\n    reason: Missing output files: "
                         f"{outp}\n    wildcards: subject={visit[4:]}\n    resources: tmpdir=/tmp, mem_mb=2000, "
                         f"runtime=10, slurm_partition=cpu, group_slot=1\n\n")
                fh.write(f"[Tue Dec  1 05:47:{i % 60:02d} 2026]\nFinished jobid: {jobid} (Rule: {rule})\n"
                         f"{jobid} of {n * len(RULES)} steps done\n")
            if fail_every and i % fail_every == 0:
                log = slurm / f"{i}.log"
                log.write_text(f"localrule dwi_tensor_dipy:\n{TB}")
                jobs = [{"rule_name": r, "jobid": jobid, "log": [paths.log_path(str(out), r, visit)],
                         "output": [str(out / visit / "dwi" / f"{visit}_desc-{r.split('_')[1]}.tsv")]} for r in dwi]
                fh.write("\n".join(fmt._format_group_error({"msg": "Error in group dwi", "aux_logs": [str(log)],
                                                              "job_error_info": jobs})) + "\n")
        return fh.tell()


def baseline(out: Path) -> int:
    """Read every log and take its first error line (no status module)."""
    n = 0
    for _rule, _visit, log, _bench, _mtime in paths.iter_job_logs(str(out)):
        if status.first_error_line(log):
            n += 1
    return n


CPU: list[float] = []


def timed(fn):
    """Wall seconds (and, in CPU, the process's CPU seconds: a busy shared machine inflates wall)."""
    t0, c0 = time.perf_counter(), time.process_time()
    r = fn()
    CPU.append(time.process_time() - c0)
    return time.perf_counter() - t0, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=10000)
    ap.add_argument("--fail-every", type=int, default=97)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="neurosmk-bench-status-") as tmp:
        out = Path(tmp) / "out"
        wd = Path(tmp) / "work"
        t_build, files = timed(lambda: build(out, a.subjects, a.fail_every))
        size = run_log(wd, out, a.subjects, a.fail_every)
        n_fail = a.subjects // a.fail_every if a.fail_every else 0
        print(f"{a.subjects} subjects x {len(RULES)} jobs: {files} files built in {t_build:.1f} s; "
              f"{n_fail} subjects with a failed dwi_tensor job; Snakemake's run log {size / 1e6:.0f} MB")
        print(f"{'run':<6} {'collect':>8} {'cli':>8} {'baseline':>9} {'cli/baseline':>12}   "
              f"{'cpu: collect':>12} {'cli':>6} {'baseline':>8}   (seconds)")
        for run in ("1st", "2nd"):
            t_collect, df = timed(lambda: status.collect(out, wd))
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                t_cli, rc = timed(lambda: status.main([str(out), "--workdir", str(wd), "--failed-only"]))
            t_base, n_err = timed(lambda: baseline(out))
            cc, ccli, cb = CPU[-3:]
            print(f"{run:<6} {t_collect:8.2f} {t_cli:8.2f} {t_base:9.2f} {t_cli / t_base:12.2f}   "
                  f"{cc:12.2f} {ccli:6.2f} {cb:8.2f}")
        failed = df[df["state"] == "failed"]
        assert len(failed) == n_fail == n_err, (len(failed), n_fail, n_err)
        assert rc == (1 if n_fail else 0)
        assert (failed["error"] == "numpy.linalg.LinAlgError: SVD did not converge").all()
        t_parse, reports = timed(lambda: status.failed_jobs(wd, str(out), 0.0))
        assert len(reports) == n_fail * 5, len(reports)  # the 5 DWI jobs of each
        print(f"of which reading the run log's error reports (neurosmk.status.failed_jobs): {t_parse:.2f} s, "
              f"{CPU[-1]:.2f} s CPU ({len(reports)} jobs in {n_fail} reports)")
        print(f"rows {len(df)}; failed {len(failed)} (all named with their error line); "
              f"not run {int((df['state'] == 'not run').sum())}; goal: cli < 10 s at 10,000 subjects")


if __name__ == "__main__":
    main()
