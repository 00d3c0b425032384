"""Why would jobs re-run? `make why` (or: python scripts/why.py [snakemake args...]).

Dry-runs the workflow and prints, for every job that would run, its own reason (changed params
with the old and new values, changed code or input files, newer inputs, missing outputs, forced),
then the jobs that run only because something upstream of them does. Exit status: that of the
dry run. (`snakemake --list-changes params` of Snakemake 9.27.1 lists an output of every job
whether its params changed or not, so it is not used here.)
"""

from __future__ import annotations

import re
import subprocess
import sys

RULE = re.compile(r"^(?:local)?rule (\S+):$")
DOWNSTREAM = "Input files updated by another job"


def jobs(dry_run_output: str) -> list[dict]:
    out, cur = [], None
    for line in dry_run_output.splitlines():
        m = RULE.match(line)
        if m:
            cur = {"rule": m.group(1), "wildcards": "", "reason": ""}
            out.append(cur)
        elif cur is not None and line.startswith("    ") and ": " in line:
            key, _, value = line.strip().partition(": ")
            if key in ("wildcards", "reason"):
                cur[key] = value
        else:
            cur = None
    return out


def main(argv: list[str]) -> int:
    cmd = [sys.executable, "-m", "snakemake", "-n", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout + proc.stderr)
        return proc.returncode
    found = jobs(proc.stdout)
    if not found:
        print("Nothing would run: every output is up to date with the config, code and inputs.")
        return 0
    follow = []
    for job in found:
        own = [r for r in job["reason"].split("; ") if r and not r.startswith(DOWNSTREAM)]
        name = job["rule"] + (f" ({job['wildcards']})" if job["wildcards"] else "")
        if own:
            print(f"{name}:\n    " + "\n    ".join(own))
        elif job["rule"] != "all":
            follow.append(name)
    if follow:
        print("downstream of those (their inputs will be rewritten):\n    " + "\n    ".join(sorted(follow)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
