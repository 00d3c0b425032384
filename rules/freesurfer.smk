# Structural stages with FreeSurfer 7.4.1: N4 (AntsN4BiasFieldCorrectionFs), skull stripping
# (recon-all -autorecon1 brainmask + fslmaths, or SynthStrip), the full recon-all of each T1w
# (freesurfer.recon_all.enabled), SynthSeg (anat.synthseg) and mri_segstats (anat.segstats).
# Same file names as the Python backends (rules/anat.smk).
# FreeSurfer is not packaged for conda: run these rules with --sdm apptainer (the pinned image).

import shlex as _shlex
import shutil as _shutil

os.environ.update(NEUROSMK_FS_LOCK_SCRIPT=os.path.join(NEUROSMK_ROOT, "scripts", "fs_clear_stale_lock.py"))
_FS_CFG = config["freesurfer"]["recon_all"]
if _FS_CFG["license"]:
    # cosmetic: exported rather than passed as a param, so moving the file never re-runs recon-all
    # (set for the jobs, not read: not an `envvars:` requirement)
    os.environ.update(FS_LICENSE=os.path.abspath(os.path.expandvars(_FS_CFG["license"])))


if METHOD["anat.biascorrect"] == "freesurfer":

    rule anat_biascorrect_freesurfer:
        input:
            **validated("anat"),  # rules/validate.smk: the visit's voxel checks first
            t1w=raw_t1w,
        output:
            **sidecars(T1_PREPROC),
            t1w=T1_PREPROC,
        log:
            logfile("anat_biascorrect_freesurfer"),
        benchmark:
            benchfile("anat_biascorrect_freesurfer")
        conda:
            ENVS["freesurfer"]
        container:
            CONTAINERS["freesurfer"]
        threads: step_cfg("anat.biascorrect")["threads"]
        resources:
            **res("anat_biascorrect_freesurfer"),
        params:
            method="freesurfer",
            shrink_factor=step_cfg("anat.biascorrect")["shrink_factor"],
            iters=[str(i) for i in step_cfg("anat.biascorrect")["convergence_iters"]],
            prov=prov("anat.biascorrect"),
        shell:
            tool_shell(
                'AntsN4BiasFieldCorrectionFs -i {input.t1w:q} -o "$tmp/n4.nii.gz" -s {params.shrink_factor:q}'
                " -t {params.iters:q} > {log:q} 2>&1"
                ' && toolrun_end "$tmp/n4.nii.gz" {output.t1w:q}',
            )


if METHOD["anat.skullstrip"] == "freesurfer":
    # Two rules, one per tool env: FreeSurfer 7.4.1 does not ship FSL's fslmaths (only a private
    # copy, $FREESURFER_HOME/bin/fslmaths.fsl, used by its own scripts), and the FSL image does
    # not carry FreeSurfer.
    FS_BRAINMASK = anat("T1w", desc="fsbrainmask")  # brainmask.mgz on the input grid

    rule anat_skullstrip_freesurfer:
        # recon-all -autorecon1 in a scratch SUBJECTS_DIR; its brainmask.mgz (the skull-stripped
        # T1 in the 256^3 conformed space) is brought back onto the input grid with --like.
        # -rt nearest (an addition to the issue's command): the mask edge stays a hard edge.
        input:
            t1w=T1_PREPROC,
        output:
            **sidecars(FS_BRAINMASK),
            brainmask=FS_BRAINMASK,
        log:
            logfile("anat_skullstrip_freesurfer"),
        benchmark:
            benchfile("anat_skullstrip_freesurfer")
        conda:
            ENVS["freesurfer"]
        container:
            CONTAINERS["freesurfer"]
        threads: step_cfg("anat.skullstrip")["threads"]
        resources:
            **res("anat_skullstrip_freesurfer"),
        params:
            method="freesurfer",
            prov=prov("anat.skullstrip"),
        shell:
            tool_shell(
                '( recon-all -sd "$tmp" -s fs -i {input.t1w:q} -autorecon1 -openmp {threads}'
                ' && mri_convert "$tmp/fs/mri/brainmask.mgz" "$tmp/brainmask.nii.gz" --like {input.t1w:q} -rt nearest'
                " ) > {log:q} 2>&1"
                ' && toolrun_end "$tmp/brainmask.nii.gz" {output.brainmask:q}',
            )

    rule anat_skullstrip_freesurfer_fslmaths:
        # fslmaths T1w -mas brainmask: the brain; brainmask -bin: the binary brain mask.
        input:
            t1w=T1_PREPROC,
            brainmask=FS_BRAINMASK,
        output:
            **sidecars(BRAIN_MASK, T1_BRAIN),
            mask=BRAIN_MASK,
            brain=T1_BRAIN,
        log:
            logfile("anat_skullstrip_freesurfer_fslmaths"),
        benchmark:
            benchfile("anat_skullstrip_freesurfer_fslmaths")
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["fsl"]
        threads: 1
        resources:
            **res("anat_skullstrip_freesurfer_fslmaths"),
        params:
            method="freesurfer",
            prov=prov("anat.skullstrip"),
        shell:
            tool_shell(
                _FSL_ENV,
                '( fslmaths {input.t1w:q} -mas {input.brainmask:q} "$tmp/brain.nii.gz"'
                ' && fslmaths {input.brainmask:q} -bin "$tmp/mask.nii.gz" -odt char ) > {log:q} 2>&1'
                ' && toolrun_end "$tmp/mask.nii.gz" {output.mask:q} "$tmp/brain.nii.gz" {output.brain:q}',
            )


if METHOD["anat.skullstrip"] == "synthstrip":
    _SS = step_cfg("anat.skullstrip")

    rule anat_skullstrip_synthstrip:
        input:
            t1w=T1_PREPROC,
        output:
            **sidecars(BRAIN_MASK, T1_BRAIN),
            mask=BRAIN_MASK,
            brain=T1_BRAIN,
        log:
            logfile("anat_skullstrip_synthstrip"),
        benchmark:
            benchfile("anat_skullstrip_synthstrip")
        conda:
            ENVS["freesurfer"]
        container:
            CONTAINERS["freesurfer"]
        threads: _SS["threads"]
        resources:
            **res("anat_skullstrip_synthstrip"),
        params:
            method="synthstrip",
            border=_SS["synthstrip_border"],
            flags=[f for f, on in (("--no-csf", _SS["synthstrip_no_csf"]), ("-g", _SS["use_gpu"])) if on],
            prov=prov("anat.skullstrip"),
        shell:
            tool_shell(
                'mri_synthstrip -i {input.t1w:q} -o "$tmp/brain.nii.gz" -m "$tmp/mask.nii.gz"'
                # no thread option: FreeSurfer's mri_synthstrip parser has none (tests/data/interfaces)
                " -b {params.border:q} {params.flags:q} > {log:q} 2>&1"
                ' && toolrun_end "$tmp/mask.nii.gz" {output.mask:q} "$tmp/brain.nii.gz" {output.brain:q}',
            )


# ---- SynthMorph registration (anat.register: synthmorph) ---------------------------------------
if METHOD["anat.register"] == "synthmorph":
    _REG = step_cfg("anat.register")
    # mri_synthmorph of FreeSurfer 7.4 (freesurfer/freesurfer mri_synthmorph/mri_synthmorph,
    # argparse: MOVING FIXED, -m {deform,affine,rigid}, -t TRANS, -o MOVED, -i INIT, -j THREADS, -g):
    # affine first, then the deformable model initialised with it (-i); the deformable transform
    # "includes any initialization". Transforms are in SynthMorph's own convention (its help,
    # TRANSFORMS): the affine is a 4x4 RAS matrix (text) taking template (fixed) world coordinates
    # to T1w (moving) world coordinates; warps are RAS displacement fields in mm on the fixed
    # grid, fixed -> moving. The inverse warp (on the T1w grid) is a second registration with the
    # roles swapped, not the exact inverse. The convention is recorded in every sidecar (params).
    _SM_GPU = ["-g"] if _REG["use_gpu"] else []

    rule anat_register_synthmorph:
        input:
            brain=T1_BRAIN,
            template=template_t1w(),
        output:
            **sidecars(XFM_AFFINE, XFM_WARP, XFM_INVWARP, T1_TEMPLATE),
            affine=XFM_AFFINE,
            warp=XFM_WARP,
            invwarp=XFM_INVWARP,
            warped=T1_TEMPLATE,
        log:
            logfile("anat_register_synthmorph"),
        benchmark:
            benchfile("anat_register_synthmorph")
        conda:
            ENVS["freesurfer"]
        container:
            CONTAINERS["freesurfer"]
        threads: _REG["threads"]
        resources:
            **res("anat_register_synthmorph"),
        params:
            method="synthmorph",
            template=TEMPLATE_NAME,
            gpu=_SM_GPU,
            convention=(
                "SynthMorph (FreeSurfer 7.4): affine .mat = 4x4 RAS matrix as text, template world "
                "-> T1w world; warp = RAS displacement field (mm) on the template grid, template -> "
                "T1w, affine included; inverse warp = RAS displacement field on the T1w grid from a "
                "second registration with the roles swapped"
            ),
            prov=prov("anat.register"),
        shell:
            tool_shell(
                '( mri_synthmorph -m affine -t "$tmp/affine.txt" -j {threads} {params.gpu:q} {input.brain:q} {input.template:q}'
                ' && mri_synthmorph -m deform -i "$tmp/affine.txt" -t "$tmp/warp.nii.gz" -o "$tmp/warped.nii.gz"'
                " -j {threads} {params.gpu:q} {input.brain:q} {input.template:q}"
                ' && mri_synthmorph -m affine -t "$tmp/inv_affine.txt" -j {threads} {params.gpu:q}'
                " {input.template:q} {input.brain:q}"
                ' && mri_synthmorph -m deform -i "$tmp/inv_affine.txt" -t "$tmp/invwarp.nii.gz"'
                " -j {threads} {params.gpu:q} {input.template:q} {input.brain:q} ) > {log:q} 2>&1"
                ' && toolrun_end "$tmp/affine.txt" {output.affine:q} "$tmp/warp.nii.gz" {output.warp:q}'
                ' "$tmp/invwarp.nii.gz" {output.invwarp:q} "$tmp/warped.nii.gz" {output.warped:q}',
            )


if _FS_CFG["enabled"]:
    if _check_tools:
        _missing = [t for t in ("recon-all", "mri_convert") if _shutil.which(t) is None]
        if _missing or not os.environ.get("FS_LICENSE"):
            raise _backends.BackendError(
                "cannot run this configuration:\n  - step 'freesurfer.recon_all' (enabled) needs "
                + (
                    f"{', '.join(_missing)} on PATH: install {_backends._FS_INSTALL}, or run with --sdm apptainer"
                    if _missing
                    else "a FreeSurfer license: set freesurfer.recon_all.license or FS_LICENSE"
                )
            )

    FS_OUTPUTS = {
        k: _paths.recon_all_file(OUT, FS_SUBJECT, k) for k in ("aseg", "lh_aparc", "rh_aparc", "aparcaseg", "aseg_mgz")
    }
    FS_DONE = _paths.recon_all_file(OUT, FS_SUBJECT, "done")

    rule freesurfer_recon_all:
        # The subject folder is prepared by hand (mri/orig/001.mgz, what recon-all -i does) because
        # Snakemake creates the output folders first and recon-all -i refuses an existing subject.
        # A stale IsRunning lock from a killed run is removed first, only if no recon-all of this
        # subject runs here (scripts/fs_clear_stale_lock.py). Outputs are protected (hours of work).
        input:
            **validated("anat"),  # rules/validate.smk: the visit's voxel checks first
            t1w=raw_t1w,
        output:
            **{k: protected(v) for k, v in FS_OUTPUTS.items()},
            done=protected(FS_DONE),
        log:
            logfile("freesurfer_recon_all"),
        benchmark:
            benchfile("freesurfer_recon_all")
        conda:
            ENVS["freesurfer"]
        container:
            CONTAINERS["freesurfer"]
        threads: _FS_CFG["threads"]
        resources:
            **res("freesurfer_recon_all"),
        params:
            method="recon-all",
            subjects_dir=lambda wc, output: folder_of(output.done, 3),  # FS_RECON_DIR
            subject=FS_SUBJECT,
            extra=_shlex.split(_FS_CFG["extra_args"]),  # one word per argument, each quoted in the shell
        shell:
            "export SUBJECTS_DIR={params.subjects_dir:q} && s={params.subject:q} && ("
            ' mkdir -p "$SUBJECTS_DIR/$s/mri/orig"'
            ' && {{ [ -e "$SUBJECTS_DIR/$s/mri/orig/001.mgz" ]'
            ' || mri_convert {input.t1w:q} "$SUBJECTS_DIR/$s/mri/orig/001.mgz"; }}'
            ' && "$(command -v fspython || command -v python3)" "$NEUROSMK_FS_LOCK_SCRIPT" "$SUBJECTS_DIR" "$s"'
            ' && recon-all -sd "$SUBJECTS_DIR" -s "$s" -all -openmp {threads} {params.extra:q}'
            " ) > {log:q} 2>&1"
            ' && echo "recon-all -all finished $(date -u +%Y-%m-%dT%H:%M:%SZ)" > {output.done:q}'

    ANAT_TARGETS += [*FS_OUTPUTS.values(), FS_DONE]

    onstart:
        _refuse_recon_all_redo()


# ---- SynthSeg ---------------------------------------------------------------------------------
SYNTHSEG_DSEG = anat("dseg", desc="synthseg")
SYNTHSEG_VOL = anat("volumes", ext=".csv", desc="synthseg")

if METHOD["anat.synthseg"] == "freesurfer":
    _SYN = step_cfg("anat.synthseg")

    rule anat_synthseg_freesurfer:
        # mri_synthseg on the raw T1w (SynthSeg needs no bias correction or skull stripping). The
        # segmentation is on SynthSeg's 1 mm grid (FreeSurferColorLUT labels); the volumes are
        # SynthSeg's own CSV (one row, mm^3), kept as written.
        input:
            **validated("anat"),  # rules/validate.smk: the visit's voxel checks first
            t1w=raw_t1w,
        output:
            **({"vol": SYNTHSEG_VOL} if _SYN["vol"] else {}),
            **sidecars(SYNTHSEG_DSEG, *([SYNTHSEG_VOL] if _SYN["vol"] else [])),
            dseg=SYNTHSEG_DSEG,
        log:
            logfile("anat_synthseg_freesurfer"),
        benchmark:
            benchfile("anat_synthseg_freesurfer")
        conda:
            ENVS["freesurfer"]
        container:
            CONTAINERS["freesurfer"]
        threads: _SYN["threads"]
        resources:
            **res("anat_synthseg_freesurfer"),
        params:
            method="freesurfer",
            prov=prov("anat.synthseg"),
            flags=[
                f
                for f, on in (("--robust", _SYN["robust"]), ("--parc", _SYN["parc"]), ("--cpu", not _SYN["use_gpu"]))
                if on
            ],
            vol=_SYN["vol"],
            # where the volumes CSV goes: [] without --vol (the shell loop then moves nothing)
            out_vol=lambda wc, output: [output.vol] if _SYN["vol"] else [],
        shell:
            tool_shell(
                'mri_synthseg --i {input.t1w:q} --o "$tmp/synthseg.nii.gz" --vol "$tmp/volumes.csv"'
                " {params.flags:q} --threads {threads} > {log:q} 2>&1"
                ' && toolrun_end "$tmp/synthseg.nii.gz" {output.dseg:q}'
                ' && for f in {params.out_vol:q}; do toolrun_end "$tmp/volumes.csv" "$f"; done',
            )

    ANAT_TARGETS += [SYNTHSEG_DSEG] + ([SYNTHSEG_VOL] if _SYN["vol"] else [])


# ---- mri_segstats -----------------------------------------------------------------------------
if METHOD["anat.segstats"] == "freesurfer":
    _SEGSTATS_SEG = step_cfg("anat.segstats")["seg"]
    if _SEGSTATS_SEG == "synthseg" and METHOD["anat.synthseg"] != "freesurfer":
        raise ValueError(
            "config key 'anat.segstats.seg' 'synthseg' needs anat.synthseg.method 'freesurfer', "
            f"not {METHOD['anat.synthseg']!r}"
        )
    if _SEGSTATS_SEG == "aseg" and not _FS_CFG["enabled"]:
        raise ValueError(
            "config key 'anat.segstats.seg' 'aseg' needs freesurfer.recon_all.enabled: true "
            "(the recon-all mri/aseg.mgz)"
        )
    SEGSTATS = anat("segstats", ext=".stats", desc=_SEGSTATS_SEG)

    rule anat_segstats_freesurfer:
        # A FreeSurfer segstats table (# ColHeaders Index SegId NVoxels Volume_mm3 StructName),
        # names from $FREESURFER_HOME/FreeSurferColorLUT.txt, background (0) left out.
        input:
            seg=SYNTHSEG_DSEG if _SEGSTATS_SEG == "synthseg" else FS_OUTPUTS["aseg_mgz"],
        output:
            **sidecars(SEGSTATS),
            stats=SEGSTATS,
        log:
            logfile("anat_segstats_freesurfer"),
        benchmark:
            benchfile("anat_segstats_freesurfer")
        conda:
            ENVS["freesurfer"]
        container:
            CONTAINERS["freesurfer"]
        threads: step_cfg("anat.segstats")["threads"]
        resources:
            **res("anat_segstats_freesurfer"),
        params:
            method="freesurfer",
            prov=prov("anat.segstats"),
            seg=_SEGSTATS_SEG,
        shell:
            tool_shell(
                'mri_segstats --seg {input.seg:q} --ctab-default --excludeid 0 --sum "$tmp/segstats.stats"'
                " > {log:q} 2>&1"
                ' && toolrun_end "$tmp/segstats.stats" {output.stats:q}',
            )

    ANAT_TARGETS.append(SEGSTATS)
