"""DAG construction + dry run of N synthetic subjects (default 1,000) through the real
neurosmk rules, side by side with a bare Snakefile with the same number of trivial jobs.

    .venv/bin/python benchmarks/bench_dag.py [N]

Input validation is switched off here (the synthetic images are empty files): this measures
indexing, rule parsing and DAG building only.
"""

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bids_index import make_tree as make_bids  # noqa: E402
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


BARE = """
N = int(config["njobs"])
rule all:
    input: expand("out/{i}.txt", i=range(N))
rule trivial:
    output: "out/{i}.txt"
    shell: "touch {output}"
"""


def timed(cmd, cwd):
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(p.stdout[-3000:] + p.stderr[-3000:])
    m = re.search(r"^total\s+(\d+)", p.stdout, re.M)
    return dt, int(m.group(1)) if m else None


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        make_bids(td / "bids", n)
        cfg = td / "config.yaml"
        cfg.write_text(f"bids_dir: {td / 'bids'}\noutput_dir: {td / 'out'}\nvalidate_inputs: false\n"
                       "freesurfer_dir: null\n")
        t_real, jobs = timed(SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "-n", "--cores", "2", "--quiet", "rules",
                                          "--configfile", str(cfg)], td)
        (td / "bare").mkdir()
        (td / "bare" / "Snakefile").write_text(BARE)
        t_bare, jobs_bare = timed(SNAKEMAKE + ["-n", "--cores", "2", "--quiet", "rules", "--config", f"njobs={jobs - 1}"], td / "bare")
    print(f"{'workflow':<36}{'jobs':>8}{'seconds':>10}")
    print(f"{'neurosmk, ' + str(n) + ' subjects':<36}{jobs:>8}{t_real:>10.2f}")
    print(f"{'bare Snakefile, trivial jobs':<36}{jobs_bare:>8}{t_bare:>10.2f}")
    ratio = t_real / t_bare
    print(f"ratio {ratio:.2f} (goal <= 1.3: {'met' if ratio <= 1.3 else 'NOT met'})")


if __name__ == "__main__":
    main()
