"""Static gates (issue #11 item 4): `snakemake --lint` reports nothing for any scenario config
(.test/config_*.yaml), snakefmt finds nothing to change in the workflow files, ruff finds nothing
in the Python code. The tools are pinned (pyproject.toml `test` extra, requirements.lock); their
settings are in pyproject.toml ([tool.ruff], [tool.snakefmt])."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCENARIOS = sorted((REPO / ".test").glob("config_*.yaml"))
WORKFLOW_FILES = ["Snakefile", *sorted(str(p.relative_to(REPO)) for p in (REPO / "rules").glob("*.smk"))]


def _tool(name: str) -> str:
    exe = BIN / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -r requirements.lock (it pins {name})")
    return found


def _snakemake(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def parse_lints(text: str) -> list[tuple[str, str]]:
    """(where, title) of every lint in `snakemake --lint` text output ("Lints for snakefile X:" or
    "Lints for rule R (line N, X):", then one "    * <title>:" line per lint). Snakemake 9.27.1's
    `--lint json` prints text too (the CLI does not pass the format on), so the text is parsed."""
    lints, where = [], None
    for line in text.splitlines():
        m = re.match(r"^Lints for (.+):$", line)
        if m:
            where = m.group(1)
            continue
        m = re.match(r"^    \* (.+):$", line)
        if m and where:
            lints.append((where, m.group(1)))
    return lints


def test_lint_parser_reads_snakemakes_output(tmp_path):
    """The parser finds the lints Snakemake prints (a workflow with known lints), so an empty list
    below means no lints, not an output format the parser missed."""
    (tmp_path / "helpers.smk").write_text("def helper(wc):\n    return 'x'\n\n\n"
                                          "rule b:\n    output: 'b.txt'\n    shell: 'touch {output}'\n")
    (tmp_path / "Snakefile").write_text("include: 'helpers.smk'\n\n\n"
                                        "rule a:\n    output: 'a.txt'\n    shell: 'touch {output}'\n")
    res = _snakemake("--lint", "-s", str(tmp_path / "Snakefile"), cwd=tmp_path)
    lints = parse_lints(res.stdout + res.stderr)
    titles = {t for _, t in lints}
    assert res.returncode != 0
    assert "Mixed rules and functions in same snakefile." in titles, lints
    assert "No log directive defined" in titles and "Specify a conda environment or container for each rule." in titles
    assert any(w.startswith("rule a (") for w, _ in lints) and any(w.startswith("rule b (") for w, _ in lints)


def test_scenarios_exist():
    assert {p.stem for p in SCENARIOS} >= {"config_default", "config_tools", "config_torch", "config_sessions"}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.stem)
def test_snakemake_lint_clean(scenario):
    """No lint for any rule the scenario defines, nor for any workflow file. `--lint` runs no job,
    so it needs none of the scenario's tools (rules/common.smk skips the tools-on-PATH check) and
    writes nothing (not even the header-check cache)."""
    out = REPO / yaml.safe_load(scenario.read_text())["output_dir"]
    existed = out.exists()
    res = _snakemake("--lint", "--configfile", str(scenario.relative_to(REPO)))
    assert existed or not out.exists(), f"snakemake --lint wrote into {out} (a lint writes nothing)"
    lints = parse_lints(res.stdout + res.stderr)
    assert not lints, f"{len(lints)} lint(s) with {scenario.name}:\n" + "\n".join(f"{w}: {t}" for w, t in lints)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "Congratulations, your workflow is in a good condition!" in res.stdout + res.stderr


def test_snakefmt_parses_every_workflow_file():
    """snakefmt reads every file (exit 123 is a parse error; 0/1: formatted or would change)."""
    snakefmt = _tool("snakefmt")
    for f in WORKFLOW_FILES:
        res = subprocess.run([snakefmt, "--check", f], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert res.returncode in (0, 1), f"{f}: snakefmt cannot parse it (exit {res.returncode}):\n{res.stderr[-3000:]}"


def test_snakefmt_check():
    res = subprocess.run([_tool("snakefmt"), "--check", *WORKFLOW_FILES], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, ("snakefmt would reformat (run `snakefmt Snakefile rules/`):\n"
                                 + res.stdout[-3000:] + res.stderr[-3000:])


@pytest.mark.parametrize("folder", ["src", "scripts", "benchmarks", "tests"])
def test_ruff(folder):
    res = subprocess.run([_tool("ruff"), "check", "--output-format", "concise", folder], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"ruff check {folder}:\n{res.stdout[-6000:]}{res.stderr[-2000:]}"
