"""Shared by the backend benchmarks: the demo DWI, and running one leg in a fresh interpreter.

A leg is the benchmark script itself called as ``script --one ARGS...``; it prints one JSON line
(wall time, peak RSS, ...). A fresh process per leg keeps each leg's peak memory and imports
its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAW = REPO / "demo" / "bids" / "sub-02" / "dwi" / "sub-02_dwi"  # 72x72x36x21, see demo/README.md


def run_leg(script: str, *args) -> dict:
    """Run ``script --one *args`` in a new interpreter and return the JSON of its last line."""
    out = subprocess.run([sys.executable, script, "--one", *map(str, args)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table: the header, the separator and one line per row."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
