"""Run many Snakemake command lines in one Python process.

A dry run of the demo costs ~0.2-0.7 s once Snakemake is imported, ~3-6 s as a fresh process
(the imports), so the re-run matrix (hundreds of dry runs) and every dry run of the tests
(tests/helpers.py) go through here. Batch mode: a JSON list of {"args": [...], "cwd": "..."} on
stdin, a JSON list of {"rc": int, "out": str} (stdout and stderr together) on stdout.
``--serve``: one such object per line on stdin, one {"rc", "out", "err"} line back per command,
until stdin closes. sys.argv is set as the CLI would set it (the workflow reads it to recognise
--touch).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys


def run_one(args: list[str], cwd: str, split: bool = False) -> dict:
    from snakemake.cli import main

    out = io.StringIO()
    err = io.StringIO() if split else out
    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = ["snakemake", *args]
    rc = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(args)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException as e:  # noqa: BLE001 - report it, go on with the next command
                err.write(f"\n{type(e).__name__}: {e}\n")
                rc = 99
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    res = {"rc": rc, "out": out.getvalue()}
    if split:
        res["err"] = err.getvalue()
    return res


def serve() -> None:
    real_stdout = sys.stdout
    for line in sys.stdin:
        job = json.loads(line)
        real_stdout.write(json.dumps(run_one(job["args"], job["cwd"], split=True)) + "\n")
        real_stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        jobs = json.load(sys.stdin)
        real_stdout = sys.stdout
        results = [run_one(j["args"], j["cwd"]) for j in jobs]
        json.dump(results, real_stdout)
