"""Run many Snakemake command lines in one Python process.

A dry run of the demo costs ~0.2 s once Snakemake is imported, ~2 s as a fresh process (the
imports), so the re-run matrix (hundreds of dry runs) goes through here. Reads a JSON list of
{"args": [...], "cwd": "..."} on stdin and writes a JSON list of {"rc": int, "out": str}
(stdout and stderr together) on stdout. sys.argv is set as the CLI would set it (the workflow
reads it to recognise --touch).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys


def run_one(args: list[str], cwd: str) -> dict:
    from snakemake.cli import main

    buf = io.StringIO()
    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = ["snakemake", *args]
    rc = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                main(args)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException as e:  # noqa: BLE001 - report it, go on with the next command
                buf.write(f"\n{type(e).__name__}: {e}\n")
                rc = 99
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return {"rc": rc, "out": buf.getvalue()}


if __name__ == "__main__":
    jobs = json.load(sys.stdin)
    real_stdout = sys.stdout
    results = [run_one(j["args"], j["cwd"]) for j in jobs]
    json.dump(results, real_stdout)
