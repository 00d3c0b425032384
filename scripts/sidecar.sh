#!/bin/sh
# Provenance sidecars of a shell rule's outputs (neurosmk.provenance): run by the rule itself,
# right after its tool succeeded, inside the tool's own environment or container. POSIX sh with
# sha256sum, sed, tr and printf only.
#
# usage: [NEUROSMK_VERSION=x.y.z] sidecar.sh STATIC_JSON VERSION_CMD OUT_DIR BIDS_DIR OUTPUT... -- INPUT...
#   STATIC_JSON  the DAG-time record (step, method, parameters, environment; rules/provenance.smk)
#   VERSION_CMD  shell code printing the tool's version (first line kept)
#   OUTPUT...    the job's outputs: each *.json among them whose stem another output shares is
#                a sidecar to write; INPUT... the job's inputs (checksummed, listed as Sources)
set -eu
[ $# -ge 5 ] || { echo "usage: sidecar.sh STATIC_JSON VERSION_CMD OUT_DIR BIDS_DIR OUTPUT... -- INPUT..." >&2; exit 2; }
static=$1; vcmd=$2; outdir=$3; bidsdir=$4; shift 4

jesc() {  # JSON string body: control characters to spaces, backslash and quote escaped
    printf '%s' "$1" | tr '\n\r\t' '   ' | tr -d '\000-\010\013\014\016-\037' | sed 's/[\\"]/\\&/g'
}
absp() {  # absolute path, without trailing slash (string operations only)
    case $1 in /*) p=$1 ;; *) p=$PWD/$1 ;; esac
    while :; do case $p in */./*) p=$(printf '%s' "$p" | sed 's|/\./|/|') ;; */) p=${p%/} ;; *) break ;; esac; done
    printf '%s' "$p"
}
uri() {
    a=$(absp "$1"); o=$(absp "$outdir"); b=$(absp "$bidsdir")
    if [ ${#o} -ge ${#b} ]; then first=$o; fname=""; second=$b; sname="raw"
    else first=$b; fname="raw"; second=$o; sname=""; fi
    case $a in
        "$first"/*) printf 'bids:%s:%s' "$fname" "${a#"$first"/}" ;;
        "$second"/*) printf 'bids:%s:%s' "$sname" "${a#"$second"/}" ;;
        *) printf 'file://%s' "$a" ;;
    esac
}
stem() {
    for e in .nii.gz .tsv.gz .tar.gz; do  # neurosmk.io.COMPOUND_EXTS; else the last extension
        case $1 in *"$e") printf '%s' "${1%"$e"}"; return ;; esac
    done
    printf '%s' "${1%.*}"
}

outputs=""; nout=0
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    nout=$((nout + 1)); eval "out_$nout=\$1"; shift
done
[ $# -gt 0 ] && shift  # --

# Sources and checksums, once for all sidecars of the job
srcs=""; sums=""
for f in "$@"; do
    case $(absp "$f") in "$(absp "$outdir")"/.neurosmk/*) continue ;; esac  # neurosmk's records, not data
    u=$(jesc "$(uri "$f")")
    case ",$srcs," in *",\"$u\","*) continue ;; esac
    srcs="${srcs:+$srcs, }\"$u\""
    if [ -d "$f" ]; then s=null; else s="\"sha256:$(sha256sum < "$f" | cut -d' ' -f1)\""; fi
    sums="${sums:+$sums, }\"$u\": $s"
done

version=$(sh -c "$vcmd" 2>/dev/null | head -n 1) || version=""
[ -n "$version" ] || version=unknown

# the command line as run: the -c argument of the shell that runs the job, without Snakemake's
# prefix and without this sidecar call; else (no /proc, or a script file) the rule's template
cmdline=""
if [ -r "/proc/$PPID/cmdline" ]; then
    c=$(tr '\000' '\n' < "/proc/$PPID/cmdline" | sed -n '/^-c$/{n;p;q;}' | tr '\n' ' ')
    case $c in *" && NEUROSMK_PROV=sidecar "*)
        c=${c%%" && NEUROSMK_PROV=sidecar "*}
        case $c in *"set -euo pipefail;"*) c=${c#*"set -euo pipefail;"} ;; esac
        cmdline=$(printf '%s' "$c" | sed 's/^ *//') ;;
    esac
fi
if [ -n "$cmdline" ]; then cl="\"$(jesc "$cmdline")\""; else cl=null; fi
case ${APPTAINER_CONTAINER:-}${SINGULARITY_CONTAINER:-} in
    ?*) active=apptainer ;;
    *) case ${CONDA_PREFIX:-} in *.snakemake*) active=conda ;; *) active=host ;; esac ;;
esac

# the static record ends with its "SoftwareEnvironment" object: add "Active" to it
body=${static%\}\}}
i=1
while [ $i -le $nout ]; do
    eval "sc=\$out_$i"; i=$((i + 1))
    case $sc in *.json) ;; *) continue ;; esac
    st=$(stem "$sc"); desc=""; j=1
    while [ $j -le $nout ]; do
        eval "o=\$out_$j"; j=$((j + 1))
        [ "$o" != "$sc" ] || continue
        case $o in *.json|*.png|*.svg) continue ;; esac
        [ "$(stem "$o")" = "$st" ] || continue
        desc="${desc:+$desc, }\"$(jesc "${o##*/}")\""
    done
    [ -n "$desc" ] || continue  # a JSON output of its own, not a sidecar
    tmp="$sc.tmp.$$"
    printf '%s, "Active": "%s"}, "ToolVersion": "%s", "CommandLine": %s, "Sources": [%s], "SourceChecksums": {%s}, "Describes": [%s], "GeneratedBy": {"Name": "neurosmk", "Version": "%s"}}\n' \
        "$body" "$active" "$(jesc "$version")" "$cl" "$srcs" "$sums" "$desc" "$(jesc "${NEUROSMK_VERSION:-unknown}")" > "$tmp"
    mv "$tmp" "$sc"
done
