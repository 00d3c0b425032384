"""The one place the tests run Snakemake, write configs and read dry runs.

- ``run_snakemake(args, cwd=..., check=..., env=...)``: ``snakemake -s Snakefile ARGS``. Dry runs
  (``-n``) with the default environment go to one long-lived Snakemake process
  (``tests/_smk_batch.py --serve``): ~0.3-0.7 s each instead of ~3-6 s for a fresh interpreter
  (the imports). ``NEUROSMK_TEST_SUBPROCESS=1`` runs every call as its own process.
- ``write_config(path, overrides, **dotted)``: the repository's config/config.yaml (or a scenario
  file in ``.test/``) with overrides deep-merged onto it; repo-relative paths made absolute so the
  file works from any folder.
- ``parse_dry_run(stdout)``: ``snakemake -n -p`` output -> rule -> input/output/resources/
  threads/shell; ``job_counts(stdout)``: the "Job stats" table.
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
DEMO_BIDS = REPO / "demo" / "bids"
DEMO_FREESURFER = REPO / "demo" / "freesurfer"
SCENARIOS = REPO / ".test"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
_PATH_KEYS = ("bids_dir", "output_dir", "freesurfer_dir")


# ---- configs ------------------------------------------------------------------------------------
def merge(base: dict, over: dict) -> dict:
    """A deep copy of ``base`` with ``over`` merged in (nested dicts merged, anything else replaced)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def set_dotted(cfg: dict, key: str, value) -> dict:
    """cfg["a"]["b"]["c"] = value for key "a.b.c" (creating the dicts on the way)."""
    cur = cfg
    *parents, last = key.split(".")
    for p in parents:
        cur = cur.setdefault(p, {})
    cur[last] = value
    return cfg


def _absolute(cfg: dict) -> dict:
    for k in _PATH_KEYS:
        if isinstance(cfg.get(k), str) and not os.path.isabs(cfg[k]):
            cfg[k] = str(REPO / cfg[k])
    return cfg


def base_config(scenario: str | None = None) -> dict:
    """config/config.yaml, or it with .test/config_<scenario>.yaml merged on (as Snakemake merges a
    --configfile onto the Snakefile's default config); relative paths made absolute."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    if scenario is not None:
        cfg = merge(cfg, yaml.safe_load(scenario_path(scenario).read_text()))
    return _absolute(cfg)


def scenario_path(name: str) -> Path:
    """.test/config_<name>.yaml (default, tools, torch, sessions): run from the repository root."""
    path = SCENARIOS / f"config_{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such scenario config")
    return path


def write_config(path: Path, overrides: dict | None = None, *, scenario: str | None = None, **dotted) -> Path:
    """Write ``base_config(scenario)`` with ``overrides`` (nested dict) deep-merged on, then the
    ``dotted`` keys ("anat.register.seed"=...) set, to ``path``; returns ``path``. The base's
    relative paths are made absolute (to the repository); a relative path the caller gives stays
    relative to the run's working directory, as Snakemake reads it (``output_dir="out"``)."""
    cfg = merge(base_config(scenario), overrides or {})
    for key, value in dotted.items():
        set_dotted(cfg, key, value)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    tmp.replace(path)
    return path


# ---- running Snakemake ----------------------------------------------------------------------------
def snakemake_env(extra: dict | None = None) -> dict:
    """os.environ with this checkout's src/ first on PYTHONPATH (plus ``extra``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def _is_dry(args: list[str]) -> bool:
    return any(a in ("-n", "--dry-run", "--dryrun") for a in args)


class _Server:
    """One ``tests/_smk_batch.py --serve`` process: a JSON line in, a JSON line out."""

    proc: subprocess.Popen | None = None

    @classmethod
    def run(cls, args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        if cls.proc is None or cls.proc.poll() is not None:
            cls.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_smk_batch.py")), "--serve"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=snakemake_env(), cwd=REPO)
        proc = cls.proc
        proc.stdin.write(json.dumps({"args": args, "cwd": str(cwd)}) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line:
            cls.stop()
            raise subprocess.TimeoutExpired(["snakemake", *args], timeout,
                                            output="the dry-run server gave no answer (killed)")
        res = json.loads(line)
        return subprocess.CompletedProcess(["snakemake", *args], res["rc"], res["out"], res["err"])

    @classmethod
    def stop(cls):
        if cls.proc is not None and cls.proc.poll() is None:
            cls.proc.kill()
            cls.proc.wait()
        cls.proc = None


atexit.register(_Server.stop)


def run_in_server(args, cwd: Path = REPO, timeout: float = 900) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` (give ``-s``) in the long-lived Snakemake process, whatever the command
    (the re-run matrix also sends --touch runs)."""
    return _Server.run([str(a) for a in args], Path(cwd), timeout)


def run_snakemake(args, cwd: Path = REPO, timeout: float = 1200, check: bool = True,
                  env: dict | None = None) -> subprocess.CompletedProcess:
    """``snakemake -s <repo>/Snakefile ARGS`` in ``cwd``; output in ``.stdout`` (Snakemake 9 writes
    its log there), ``.stderr``. ``check``: raise with the output's tail on a non-zero exit.
    ``env``: the whole environment of a subprocess run (default: ``snakemake_env()``)."""
    args = ["-s", str(SNAKEFILE), *map(str, args)]
    if env is None and _is_dry(args) and os.environ.get("NEUROSMK_TEST_SUBPROCESS") != "1":
        proc = _Server.run(args, Path(cwd), timeout)
    else:
        proc = subprocess.run(SNAKEMAKE + args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env=snakemake_env() if env is None else env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-5000:]}\n{proc.stderr[-8000:]}")
    return proc


def dry_run(cfg: Path, *args: str, cwd: Path = REPO,
            check: bool = True) -> tuple[dict[str, dict], subprocess.CompletedProcess]:
    """``snakemake -n -p --cores 2 --configfile CFG ARGS``: (parse_dry_run of it, the process)."""
    proc = run_snakemake(["-n", "-p", "--cores", "2", "--configfile", str(cfg), *args], cwd=cwd, check=check)
    return parse_dry_run(proc.stdout), proc


_RULE_PROPERTIES = """
import json, os, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.io import is_flagged
from snakemake.settings.types import ConfigSettings, DeploymentSettings, ResourceSettings
from snakemake_interface_executor_plugins.settings import DeploymentMethod
with SnakemakeApi() as api:  # --sdm conda: parse only, the rules' tools need not be on PATH
    wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path(sys.argv[1]),
                      config_settings=ConfigSettings(configfiles=[Path(sys.argv[2])]),
                      deployment_settings=DeploymentSettings(deployment_method=[DeploymentMethod.CONDA]))
    props = {}
    for name in sys.argv[3:]:
        r = wf._workflow.get_rule(name)
        props[name] = {"conda_env": str(r.conda_env) if r.conda_env else None, "container": r.container_img,
                       "protected": {os.path.basename(f): bool(is_flagged(f, "protected")) for f in r.output}}
    print("RULE_PROPERTIES " + json.dumps(props))
"""


def rule_properties(cfg: Path, *rules: str) -> dict[str, dict]:
    """What the parsed workflow (not the rule files' text) says of each rule under ``cfg``:
    {'conda_env': path, 'container': image, 'protected': {output file name: bool}}."""
    proc = subprocess.run([sys.executable, "-c", _RULE_PROPERTIES, str(SNAKEFILE), str(cfg), *rules], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=snakemake_env())
    line = [x for x in proc.stdout.splitlines() if x.startswith("RULE_PROPERTIES ")]
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[-1][len("RULE_PROPERTIES "):])


# ---- reading dry runs -----------------------------------------------------------------------------
def job_counts(stdout: str) -> dict[str, int]:
    """Rule -> job count from snakemake's 'Job stats' table (empty when nothing to do)."""
    if "Job stats:" not in stdout:
        return {}
    out = {}
    for line in stdout.split("Job stats:")[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            out[parts[0]] = int(parts[1])
    return out


_SIDE_EXT = re.compile(r"\.(nii\.gz|mat|bval|bvec|tsv|csv|stats)$")


def parse_dry_run(text: str) -> dict[str, dict]:
    """``snakemake -n -p`` output -> rule name -> {'input', 'output', 'valid' (the visit's
    input-check reports, apart from 'input'), 'sidecars' (X.json beside an output X, apart from
    'output'), 'resources', 'threads', 'shell' (None for run:/script: rules), 'sidecar' (the
    provenance call every shell rule ends with), 'command' (shell and sidecar call as printed),
    'jobs' (one such dict per job, in order)}; the
    rule's own keys are those of its last job."""
    parsed: list[tuple[str, dict]] = []
    cur = None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            cur = {"input": [], "output": [], "valid": [], "sidecars": [], "resources": {}, "shell": None,
                   "sidecar": None, "command": None}
            parsed.append((m.group(1), cur))
            continue
        if cur is None:
            continue
        if line.startswith("Shell command: "):
            full = line[len("Shell command: "):]
            cmd, _, sidecar = full.partition(" && NEUROSMK_PROV=sidecar ")
            cur["command"] = None if full == "None" else full
            cur["shell"] = None if cmd == "None" else cmd
            cur["sidecar"] = sidecar or None
            cur = None
            continue
        m = re.match(r"^    (\w+): (.*)$", line)
        if not m:
            continue
        key, val = m.groups()
        if key == "input":
            items = val.split(", ")
            cur["valid"] = [i for i in items if "/.neurosmk/validate/" in i]
            cur["input"] = [i for i in items if i not in cur["valid"]]
        elif key == "output":
            items = val.split(", ")
            stems = {_SIDE_EXT.sub("", o) for o in items if not o.endswith(".json")}
            cur["sidecars"] = [o for o in items if o.endswith(".json") and o[:-5] in stems]
            cur["output"] = [o for o in items if o not in cur["sidecars"]]
        elif key == "resources":
            cur["resources"] = dict(kv.split("=", 1) for kv in val.split(", "))
        elif key == "threads":
            cur["threads"] = int(val)
    jobs: dict[str, dict] = {}
    for name, job in parsed:
        jobs.setdefault(name, {"jobs": []})["jobs"].append(job)
    for entry in jobs.values():
        entry.update(entry["jobs"][-1])
    return jobs
