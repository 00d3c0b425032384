# The one wrapper of neurosmk's tool calls (the FSL, FreeSurfer, MRtrix3 and TORTOISE shell
# rules): a private temporary folder per job, outputs moved into place atomically. Sourced by
# the job's own shell, inside the tool's environment or container (so POSIX sh with mktemp,
# sha1sum or shasum, mv and rm only: no Python there); rules/provenance.smk builds the calls:
#
#   . toolrun.sh && toolrun_begin LOG OUTPUT... && ( TOOL ... "$tmp/x" ... ) > LOG 2>&1
#     && toolrun_end "$tmp/x" DEST [SRC DEST]... && <SIDECAR: scripts/sidecar.sh>
#
# toolrun_begin makes "$tmp", a fresh folder under $TMPDIR named like a Python job's
# (neurosmk.runtime: neurosmk-job-<rule>-<digest of the outputs>-XXXXXX), points TMPDIR into it
# (the tool's own temporary files land there too) and removes it when the job's shell exits: on
# success, on failure, on SIGTERM/SIGINT/SIGHUP. A folder left by a run killed with SIGKILL is
# removed by the next run of the same job. toolrun_end checks that the tool wrote every SRC,
# then moves each beside its DEST (same filesystem) and renames it into place: an output exists
# only once it is complete. Every path is an argument, never evaluated.

_toolrun_abs() {  # absolute path (no symlink resolution): as os.path.abspath for clean paths
    case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$(pwd -P)" "${1#./}" ;; esac
}

toolrun_key() {  # RULE OUTPUT...: <rule>-<first 12 hex of sha1(absolute outputs joined by NUL)>
    _tr_rule=$1; shift
    _tr_sum=$( { _tr_first=1
                 for _tr_o in "$@"; do
                     [ $_tr_first = 1 ] || printf '\000'
                     _toolrun_abs "$_tr_o"; _tr_first=0
                 done; } | { sha1sum 2>/dev/null || shasum -a 1; } ) || return 1
    printf '%s-%s' "$_tr_rule" "$(printf '%s' "$_tr_sum" | cut -c1-12)"
}

toolrun_rule() {  # LOG: the job's rule, from its log's path (neurosmk.paths.log_path):
    # logs/<rule>/<visit>.log, or logs/<rule>.log for a run-level job
    _tr_dir=$(basename "$(dirname "$1")")
    if [ "$_tr_dir" = logs ]; then printf '%s' "$(basename "$1" .log)"; else printf '%s' "$_tr_dir"; fi
}

toolrun_begin() {  # LOG OUTPUT...: sets tmp (see the head of this file)
    [ $# -ge 2 ] || { echo "toolrun_begin: usage: toolrun_begin LOG OUTPUT..." >&2; return 2; }
    _tr_log=$1; shift
    set -- "$(toolrun_rule "$_tr_log")" "$@"
    _tr_base=${TMPDIR:-/tmp}
    mkdir -p "$_tr_base" || { echo "neurosmk: cannot create the temporary folder $_tr_base (TMPDIR)" >&2; return 1; }
    _tr_prefix="neurosmk-job-$(toolrun_key "$@")-" || return 1
    for _tr_old in "$_tr_base/$_tr_prefix"*; do  # a SIGKILLed run of this job (Snakemake never runs a job twice at once)
        [ ! -e "$_tr_old" ] || rm -rf "$_tr_old"
    done
    tmp=$(mktemp -d "$_tr_base/${_tr_prefix}XXXXXX") || {
        echo "neurosmk: $1: cannot create a temporary folder in $_tr_base (TMPDIR)" >&2; return 1; }
    trap 'rm -rf "$tmp"' EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
    TMPDIR=$tmp
    export TMPDIR
}

_toolrun_pairs() {  # ACTION SRC DEST ...: check | stage | commit | unstage each pair
    _tr_act=$1; shift
    while [ $# -ge 2 ]; do
        case $_tr_act in
            check) [ -e "$1" ] || { echo "neurosmk: the tool did not write $1 (for $2): see the job's log" >&2; return 1; } ;;
            stage) rm -rf "$2.toolrun-partial" && mv "$1" "$2.toolrun-partial" || return 1 ;;
            commit) mv "$2.toolrun-partial" "$2" || return 1 ;;
            unstage) rm -rf "$2.toolrun-partial" ;;
        esac
        shift 2
    done
}

toolrun_end() {  # SRC DEST [SRC DEST]...: see the head of this file
    [ $# -ge 2 ] && [ $(($# % 2)) -eq 0 ] || { echo "toolrun_end: usage: toolrun_end SRC DEST [SRC DEST]..." >&2; return 2; }
    _toolrun_pairs check "$@" || return 1
    _toolrun_pairs stage "$@" || { _toolrun_pairs unstage "$@"; return 1; }
    _toolrun_pairs commit "$@"
}
