"""Load and validate the neurosmk configuration against ``config/schema/config.schema.yaml``.

Validation fills in defaults, rejects unknown keys with the dotted path of the key and the list
of keys that are allowed there, and checks types, ranges and enums.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "config" / "schema" / "config.schema.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the problem."""


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    """The schema, with each step's list of methods generated from the backend registry
    (neurosmk.backends.STEPS) into its ``method`` description: a registered method is documented
    without an edit here."""
    # libyaml's loader when PyYAML has it: ~10x faster on the schema (every job's start-up reads it)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path) as fh:
        schema = yaml.load(fh, Loader=loader)
    from .backends import STEPS

    for step, methods in STEPS.items():
        section, name = step.split(".")
        node = schema.get("properties", {}).get(section, {}).get("properties", {}).get(name, {})
        method = node.get("properties", {}).get("method")
        if method is not None:
            listed = ", ".join(f"{m} ({b.doc})" if b.doc else m for m, b in methods.items())
            method["description"] = f"{method.get('description', '').rstrip()} Registered methods: {listed}.".lstrip()
    return schema


def _fill_defaults(instance: dict, schema: dict) -> None:
    """Recursively insert schema defaults (objects with defaults get their own defaults too)."""
    props = schema.get("properties", {})
    for key, sub in props.items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(instance[key], sub)


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate_config(config: dict[str, Any], schema: dict | None = None, check: bool = True) -> dict[str, Any]:
    """Return a validated copy of ``config`` with defaults filled in.

    Raises :class:`ConfigError` listing every problem, each with the dotted key. ``check``
    False only fills in the defaults: for a job's own snakemake process, whose main process
    validated the same configuration before submitting it (:mod:`neurosmk.startup`).
    """
    schema = schema or load_schema()
    if not isinstance(config, dict):
        raise ConfigError(f"the configuration must be a mapping, got {type(config).__name__}")
    cfg = copy.deepcopy(config)
    _fill_defaults(cfg, schema)
    if not check:
        return cfg
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path))):
        where = _dotted(err.absolute_path)
        if err.validator == "additionalProperties":
            sub = err.schema.get("properties", {})
            extra = sorted(set(err.instance) - set(sub))
            for key in extra:
                full = f"{where}.{key}" if err.absolute_path else key
                problems.append(f"unknown config key '{full}' (allowed here: {', '.join(sorted(sub)) or 'none'})")
        elif err.validator == "required":
            problems.append(f"missing required config key at {where}: {err.message}")
        else:
            problems.append(f"config key '{where}': {err.message}")
    if problems:
        raise ConfigError("invalid neurosmk configuration:\n  - " + "\n  - ".join(problems))
    return cfg


def get(cfg: dict, dotted: str, default: Any = None) -> Any:
    cur: Any = cfg
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur


def schema_keys(schema: dict | None = None, prefix: str = "") -> list[tuple[str, dict]]:
    """Every key the schema documents, as (dotted key, sub-schema), depth first."""
    schema = schema or load_schema()
    out = []
    for key, sub in schema.get("properties", {}).items():
        dotted = f"{prefix}.{key}" if prefix else key
        out.append((dotted, sub))
        if sub.get("type") == "object" and "properties" in sub:
            out.extend(schema_keys(sub, dotted))
    return out
