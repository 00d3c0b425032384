# Structural stages with FreeSurfer 7.4.1: N4 (AntsN4BiasFieldCorrectionFs), skull stripping
# (recon-all -autorecon1 brainmask, or SynthStrip), and the full recon-all of each T1w
# (freesurfer.recon_all.enabled). Same file names as the Python backends (rules/anat.smk).
# FreeSurfer is not packaged for conda: run these rules with --sdm apptainer (the pinned image).

import shutil as _shutil

FS_RECON_DIR = f"{OUT}/freesurfer"
FS_SUBJECT = visit_wc()  # sub-<label>[_ses-<label>]
FS_LOCK_SCRIPT = os.path.join(NEUROSMK_ROOT, "scripts", "fs_clear_stale_lock.py")
_FS_CFG = config["freesurfer"]["recon_all"]
if _FS_CFG["license"]:
    # cosmetic: exported rather than passed as a param, so moving the file never re-runs recon-all
    os.environ["FS_LICENSE"] = os.path.abspath(os.path.expandvars(_FS_CFG["license"]))

_FS_TMP = ('tmp=$(mktemp -d "$(dirname "{output[0]}")/.{rule}.XXXXXX")'
           ' && trap \'rm -rf "$tmp"\' EXIT && ')


if METHOD["anat.biascorrect"] == "freesurfer":

    rule anat_biascorrect_freesurfer:
        input:
            t1w=raw_t1w,
        output:
            t1w=T1_PREPROC,
        params:
            method="freesurfer",
            shrink_factor=step_cfg("anat.biascorrect")["shrink_factor"],
            iters=" ".join(str(i) for i in step_cfg("anat.biascorrect")["convergence_iters"]),
        threads: step_cfg("anat.biascorrect")["threads"]
        resources:
            mem_mb=3000,
            runtime=30,
        log:
            logfile("anat_biascorrect_freesurfer"),
        benchmark:
            benchfile("anat_biascorrect_freesurfer")
        conda:
            ENVS["freesurfer"]
        container:
            CONTAINERS["freesurfer"]
        shell:
            'AntsN4BiasFieldCorrectionFs -i "{input.t1w}" -o "{output.t1w}.tmp.nii.gz" -s {params.shrink_factor}'
            ' -t {params.iters} > "{log}" 2>&1 && mv "{output.t1w}.tmp.nii.gz" "{output.t1w}"'


if METHOD["anat.skullstrip"] == "freesurfer":

    rule anat_skullstrip_freesurfer:
        # recon-all -autorecon1 in a scratch SUBJECTS_DIR; its brainmask.mgz, resampled back onto
        # the input grid (nearest neighbour), masks the input and, binarised, is the brain mask.
        input:
            t1w=T1_PREPROC,
        output:
            mask=BRAIN_MASK,
            brain=T1_BRAIN,
        params:
            method="freesurfer",
        threads: step_cfg("anat.skullstrip")["threads"]
        resources:
            mem_mb=4000,
            runtime=60,
        log:
            logfile("anat_skullstrip_freesurfer"),
        benchmark:
            benchfile("anat_skullstrip_freesurfer")
        conda:
            ENVS["freesurfer"]
        container:
            CONTAINERS["freesurfer"]
        shell:
            _FS_TMP +
            '( recon-all -sd "$tmp" -s fs -i "{input.t1w}" -autorecon1 -openmp {threads}'
            ' && mri_convert "$tmp/fs/mri/brainmask.mgz" "$tmp/brainmask.nii.gz" --like "{input.t1w}" -rt nearest'
            ' && mri_mask "{input.t1w}" "$tmp/brainmask.nii.gz" "$tmp/brain.nii.gz"'
            ' && mri_binarize --i "$tmp/brainmask.nii.gz" --min 1 --o "$tmp/mask.nii.gz" ) > "{log}" 2>&1'
            ' && mv "$tmp/mask.nii.gz" "{output.mask}" && mv "$tmp/brain.nii.gz" "{output.brain}"'


if METHOD["anat.skullstrip"] == "synthstrip":
    _SS = step_cfg("anat.skullstrip")

    rule anat_skullstrip_synthstrip:
        input:
            t1w=T1_PREPROC,
        output:
            mask=BRAIN_MASK,
            brain=T1_BRAIN,
        params:
            method="synthstrip",
            border=_SS["synthstrip_border"],
            flags=" ".join(f for f, on in (("--no-csf", _SS["synthstrip_no_csf"]), ("-g", _SS["use_gpu"])) if on),
        threads: _SS["threads"]
        resources:
            mem_mb=8000,
            runtime=20,
            **({"gpu": 1} if _SS["use_gpu"] else {}),
        log:
            logfile("anat_skullstrip_synthstrip"),
        benchmark:
            benchfile("anat_skullstrip_synthstrip")
        conda:
            ENVS["freesurfer"]
        container:
            CONTAINERS["freesurfer"]
        shell:
            'mri_synthstrip -i "{input.t1w}" -o "{output.brain}.tmp.nii.gz" -m "{output.mask}.tmp.nii.gz"'
            ' -b {params.border} {params.flags} -t {threads} > "{log}" 2>&1'
            ' && mv "{output.mask}.tmp.nii.gz" "{output.mask}" && mv "{output.brain}.tmp.nii.gz" "{output.brain}"'


if _FS_CFG["enabled"]:
    if _check_tools:
        _missing = [t for t in ("recon-all", "mri_convert") if _shutil.which(t) is None]
        if _missing or not os.environ.get("FS_LICENSE"):
            raise _backends.BackendError(
                "cannot run this configuration:\n  - step 'freesurfer.recon_all' (enabled) needs "
                + (f"{', '.join(_missing)} on PATH: install {_backends._FS_INSTALL}, or run with --sdm apptainer"
                   if _missing else "a FreeSurfer license: set freesurfer.recon_all.license or FS_LICENSE"))

    FS_OUTPUTS = {
        "aseg": f"{FS_RECON_DIR}/{FS_SUBJECT}/stats/aseg.stats",
        "lh_aparc": f"{FS_RECON_DIR}/{FS_SUBJECT}/stats/lh.aparc.stats",
        "rh_aparc": f"{FS_RECON_DIR}/{FS_SUBJECT}/stats/rh.aparc.stats",
        "aparcaseg": f"{FS_RECON_DIR}/{FS_SUBJECT}/mri/aparc+aseg.mgz",
    }
    FS_DONE = f"{FS_RECON_DIR}/{FS_SUBJECT}/scripts/neurosmk_recon-all_all.done"

    rule freesurfer_recon_all:
        # The subject folder is prepared by hand (mri/orig/001.mgz, what recon-all -i does) because
        # Snakemake creates the output folders first and recon-all -i refuses an existing subject.
        # A stale IsRunning lock from a killed run is removed first, only if no recon-all of this
        # subject runs here (scripts/fs_clear_stale_lock.py). Outputs are protected (hours of work).
        input:
            t1w=raw_t1w,
        output:
            **{k: protected(v) for k, v in FS_OUTPUTS.items()},
            done=protected(FS_DONE),
        params:
            method="recon-all",
            subjects_dir=FS_RECON_DIR,
            subject=FS_SUBJECT,
            extra=_FS_CFG["extra_args"],
        threads: _FS_CFG["threads"]
        resources:
            mem_mb=16000,
            runtime=24 * 60,
        log:
            logfile("freesurfer_recon_all"),
        benchmark:
            benchfile("freesurfer_recon_all")
        conda:
            ENVS["freesurfer"]
        container:
            CONTAINERS["freesurfer"]
        shell:
            'export SUBJECTS_DIR="{params.subjects_dir}" && s="{params.subject}" && ('
            ' mkdir -p "$SUBJECTS_DIR/$s/mri/orig"'
            ' && {{ [ -e "$SUBJECTS_DIR/$s/mri/orig/001.mgz" ]'
            ' || mri_convert "{input.t1w}" "$SUBJECTS_DIR/$s/mri/orig/001.mgz"; }}'
            ' && "$(command -v fspython || command -v python3)" "{FS_LOCK_SCRIPT}" "$SUBJECTS_DIR" "$s"'
            ' && recon-all -sd "$SUBJECTS_DIR" -s "$s" -all -openmp {threads} {params.extra}'
            ' ) > "{log}" 2>&1'
            ' && echo "recon-all -all finished $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "{output.done}"'

    ANAT_TARGETS += [*FS_OUTPUTS.values(), FS_DONE]

    def _refuse_recon_all_redo():
        """A finished recon-all (its sentinel exists) is redone only on explicit request.

        Snakemake would redo it whenever one of its triggers fires (a changed recon-all
        parameter, a touched or moved T1w, an edited rule, --forceall) and first delete its
        outputs. protected() stops that only for non-root users, so this check runs before any
        job starts (real runs and --touch; a dry run lists the job with its reason) and
        refuses unless the rule is named in --forcerun.
        """
        from snakemake.exceptions import WorkflowError

        if "freesurfer_recon_all" in workflow.dag_settings.forcerun:
            return
        redo = [job for job in workflow.dag.needrun_jobs()
                if job.rule.name == "freesurfer_recon_all" and os.path.exists(job.output.done)]
        if redo:
            lines = "\n".join(f"  - {job.output.done} (reason: {workflow.dag.reason(job)})" for job in redo)
            raise WorkflowError(
                "refusing to redo a finished FreeSurfer recon-all (hours of work):\n" + lines +
                "\nTo keep it, undo the change (`make why` lists what changed). To redo it on purpose, run "
                "again with `--forcerun freesurfer_recon_all` (as a non-root user first `chmod u+w` "
                "its outputs: they are write-protected).")

    onstart:
        _refuse_recon_all_redo()
