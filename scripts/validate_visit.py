"""Voxel-level checks of one visit's raw T1w and DWI (neurosmk.validate); writes a JSON report.
A bad file ends the job with `<file>: <cause>` in its log and no report."""

from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
import sys  # noqa: E402

from neurosmk import __version__  # noqa: E402
from neurosmk.io import InputError, write_json  # noqa: E402
from neurosmk.validate import check_visit_data  # noqa: E402

s = snakemake  # noqa: F821
inp = dict(s.input.items())
dwi = {"nii": inp["dwi"], "bval": inp.get("bval"), "bvec": inp.get("bvec")} if "dwi" in inp else None
if s.config.get("validate_inputs", True):
    try:
        files = check_visit_data(inp.get("t1w"), dwi)
    except InputError as exc:
        for stream in dict.fromkeys((sys.stderr, sys.__stderr__)):  # the job log and Snakemake's output
            print(f"neurosmk: input check failed: {exc}", file=stream, flush=True)
        sys.exit(1)
    status = "passed"
else:
    files, status = {}, "skipped (validate_inputs: false)"
write_json(s.output.report, {"status": status, "files": files, "neurosmk_version": __version__})
