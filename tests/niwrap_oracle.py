"""An independent check of FSL and MRtrix3 command lines: NiWrap's generated wrappers.

NiWrap (niwrap-fsl, niwrap-mrtrix 1.1.0 on PyPI; Boutiques-derived descriptors of FSL 6.0.4 and
MRtrix3 3.0.4) builds each tool's argv from a typed parameter dict (``<tool>_cargs``). Its
argument spec is read by probing: each parameter is set alone to a sentinel of its declared type
and the argv the wrapper builds shows the option string and how the value is written. A command
line is then accepted only if every option is one the wrapper can write, every value parses as
the declared type (int, float, Literal choices, comma-separated ints) and the positional count
matches the required positional parameters.
"""

from __future__ import annotations

import importlib
import pathlib
import shlex
import types
import typing
from dataclasses import dataclass, field

from styxdefs import DryRunner

SENTINEL = "SENTINEL"


@dataclass
class Opt:
    key: str
    kind: str  # flag | value | eq (--x=value)
    vtype: object = None


@dataclass
class Spec:
    tool: str
    options: dict[str, Opt] = field(default_factory=dict)  # option string -> Opt
    positional: list[tuple[str, object]] = field(default_factory=list)  # required, in argv order
    optional_positional: int = 0
    variadic: bool = False  # positional operands NiWrap models as a tagged-union list: not counted


def _strip(tp):
    origin = typing.get_origin(tp)
    if origin is typing.NotRequired:
        return _strip(typing.get_args(tp)[0])
    return tp


def _sentinel(tp, key):
    tp = _strip(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is bool:
        return True
    if tp is int:
        return 7
    if tp is float:
        return 0.25
    if tp is str:
        return f"{SENTINEL}_{key}"
    if origin in (typing.Union, types.UnionType):
        if all(typing.get_origin(a) is typing.Literal for a in args):
            return typing.get_args(args[0])[0]
        return f"{SENTINEL}_{key}"  # InputPathType = Path | str
    if origin is typing.Literal:
        return args[0]
    if origin is list and args and args[0] in (int, float, str):
        return [_sentinel(args[0], key)] * 2
    if origin is list and args:
        inner = _sentinel(args[0], key)
        return None if inner is None else [inner]
    if typing.is_typeddict(tp):  # a nested option group (-fslgrad bvecs bvals): every member set
        hints = typing.get_type_hints(tp, include_extras=True)
        out = {}
        for k, t in hints.items():
            v = _sentinel(t, k)
            if v is None:
                return None
            out[k] = v
        return out
    return None  # other structures: not probed


def _argv(cargs, params):
    return cargs(params, DryRunner())


def load_spec(package: str, tool: str) -> Spec:
    mod = importlib.import_module(f"niwrap.{package}.{tool}")
    td_name = "".join(p.capitalize() for p in tool.split("_"))
    td = getattr(mod, td_name)
    hints = typing.get_type_hints(td, include_extras=True)
    cargs = getattr(mod, f"{tool}_cargs")
    required = {k: t for k, t in hints.items() if k != "@type" and typing.get_origin(t) is not typing.NotRequired}
    base = {}
    for k, t in required.items():
        s = _sentinel(t, k)
        base[k] = [] if s is None else s
    spec = Spec(tool)
    try:
        argv0 = _argv(cargs, base)
    except (TypeError, KeyError):  # a required list of tagged unions (mrcalc's operands): empty
        base = {k: ([] if isinstance(v, list) else v) for k, v in base.items()}
        argv0 = _argv(cargs, base)
        spec.variadic = True
    for k, t in required.items():  # required: positional or "--x=value"
        tok = f"{SENTINEL}_{k}"
        for a in argv0:
            if a == tok:
                spec.positional.append((k, _strip(t)))
            elif a.endswith("=" + tok):
                spec.options[a[: -len(tok)]] = Opt(k, "eq", _strip(t))
            elif a.endswith(tok):  # e.g. a flag glued to the value
                spec.options[a[: -len(tok)]] = Opt(k, "eq", _strip(t))
    spec.positional.sort(key=lambda kt: argv0.index(f"{SENTINEL}_{kt[0]}"))
    for i, a in enumerate(argv0):  # required flagged values (-x VALUE)
        for k, t in required.items():
            if a == f"{SENTINEL}_{k}" and i > 1 and argv0[i - 1].startswith("-"):
                spec.options[argv0[i - 1]] = Opt(k, "value", _strip(t))
                spec.positional = [p for p in spec.positional if p[0] != k]
    for k, t in hints.items():
        if k == "@type" or k in required:
            continue
        s = _sentinel(t, k)
        if s is None:
            continue
        try:
            new = _argv(cargs, {**base, k: s})
        except Exception:  # noqa: BLE001
            continue
        if len(new) == len(argv0) and f"{SENTINEL}_{k}" in new:  # a positional with a default (bet's output)
            spec.positional.append((k, _strip(t)))
            continue
        added = [a for a in new if a not in argv0] if len(new) > len(argv0) else []
        if not added:
            continue
        vt = _strip(t)
        if len(added) == 1:
            a = added[0]
            val = ",".join(str(x) for x in s) if isinstance(s, list) else str(s)
            if a.startswith("-") and "=" in a and a.endswith("=" + val):
                spec.options[a[: -len(val)]] = Opt(k, "eq", vt)
            elif a.startswith("-"):
                spec.options[a] = Opt(k, "flag")
            else:  # an optional positional (bet's output basename)
                spec.optional_positional += 1
        elif added[0].startswith("-"):
            spec.options[added[0]] = Opt(k, "value", vt)
            if len(added) > 2:  # e.g. two values after one option (-fslgrad bvecs bvals)
                spec.options[added[0]].vtype = ("n", len(added) - 1)
    return spec


def _check_value(v: str, vt, where: str) -> list[str]:
    origin = typing.get_origin(vt)
    args = typing.get_args(vt)
    if isinstance(vt, tuple):
        return []
    if vt is int:
        try:
            int(v)
        except ValueError:
            return [f"{where}: {v!r} is not an integer"]
        return []
    if vt is float:
        try:
            float(v)
        except ValueError:
            return [f"{where}: {v!r} is not a number"]
        return []
    if origin is typing.Literal:
        return [] if v in map(str, args) else [f"{where}: {v!r} is not one of {list(args)}"]
    if origin in (typing.Union, types.UnionType) and all(typing.get_origin(a) is typing.Literal for a in args):
        choices = [c for a in args for c in typing.get_args(a)]
        return [] if v in map(str, choices) else [f"{where}: {v!r} is not one of {choices}"]
    if origin is list and args and args[0] in (int, float):
        bad = []
        for part in v.split(","):
            bad += _check_value(part, args[0], where)
        return bad
    return []


def operator_strings(package: str, tool: str) -> set[str]:
    """Every option string a wrapper can write (its ``cargs.append("-x")`` literals): for tools
    whose argv NiWrap builds from nested operation lists (fslmaths)."""
    import re

    src = pathlib.Path(importlib.import_module(f"niwrap.{package}.{tool}").__file__).read_text()
    return set(re.findall(r'cargs\.append\("(-[A-Za-z0-9_]+)"\)', src))


def check_operators(package: str, argv: list[str]) -> list[str]:
    known = operator_strings(package, argv[0])
    return [f"{argv[0]}: operator {a!r} is not in NiWrap's descriptor" for a in argv[1:]
            if a.startswith("-") and not _is_number(a) and a not in known]


def check_argv(spec: Spec, argv: list[str]) -> list[str]:
    """Problems of one command line (argv[0] is the tool) against the spec; [] if accepted."""
    if spec.tool in ("fslmaths", "mrcalc"):
        return check_operators("fsl" if spec.tool == "fslmaths" else "mrtrix", argv)
    problems, positional = [], []
    i = 1
    eq_opts = sorted((o for o in spec.options if spec.options[o].kind == "eq"), key=len, reverse=True)
    while i < len(argv):
        a = argv[i]
        if a in spec.options and spec.options[a].kind != "eq":
            opt = spec.options[a]
            if opt.kind == "value":
                n = opt.vtype[1] if isinstance(opt.vtype, tuple) else 1
                vals = argv[i + 1:i + 1 + n]
                if len(vals) < n:
                    problems.append(f"{spec.tool} {a}: missing value")
                for v in vals:
                    problems += _check_value(v, opt.vtype, f"{spec.tool} {a}")
                i += 1 + n
            else:
                i += 1
            continue
        eq = next((o for o in eq_opts if a.startswith(o)), None)
        if eq:
            problems += _check_value(a[len(eq):], spec.options[eq].vtype, f"{spec.tool} {eq}")
            i += 1
            continue
        if a.startswith("-") and len(a) > 1 and not _is_number(a):
            problems.append(f"{spec.tool}: option {a!r} is not in NiWrap's descriptor")
        else:
            positional.append(a)
        i += 1
    if not spec.variadic and not (len(spec.positional) <= len(positional)
                                  <= len(spec.positional) + spec.optional_positional):
        problems.append(f"{spec.tool}: {len(positional)} positional arguments {positional}, "
                        f"the descriptor has {len(spec.positional)} ({[k for k, _ in spec.positional]})")
    return problems


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


# ---- splitting a shell command into simple commands -----------------------------------------
_OPS = {"&&", "||", ";", "|", "(", ")", "{", "}"}


def simple_commands(shell: str) -> list[list[str]]:
    """The simple commands of a shell string: shlex words split at &&, ||, ;, |, ( and ),
    without redirections and leading VAR=value assignments."""
    import re

    shell = re.sub(r"(?<=\s)[12]>&[12](?=\s|$)", " ", shell)  # fd duplications (shlex cannot tell "2>" from "2 >")
    lex = shlex.shlex(shell, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    cmds, cur = [], []
    words = list(lex)
    i = 0
    while i < len(words):
        w = words[i]
        if w in _OPS:
            if cur:
                cmds.append(cur)
            cur = []
        elif w in (">", ">>", "<", "2>", "&>"):
            i += 1  # skip the target
        elif w == ">&" or w.endswith(">&"):
            i += 1
        else:
            cur.append(w)
        i += 1
    if cur:
        cmds.append(cur)
    out = []
    for c in cmds:
        while c and "=" in c[0] and not c[0].startswith("-") and c[0].split("=")[0].isidentifier():
            c = c[1:]
        if c and c[0] in ("export", "trap", "tmp", "cd"):
            continue
        if c:
            out.append(c)
    return out


def tool_name(word: str) -> str:
    return pathlib.PurePath(word).name
