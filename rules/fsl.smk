# Structural stages with FSL (bet, fast, run_first_all, flirt/fnirt) and the atlas-to-native
# warp (applywarp). Each rule exists only when the config picks its method and writes the same
# file names as the Python backends (rules/anat.smk). FSL names its outputs after a basename, so
# each rule works in a private temporary folder beside its outputs and renames the files it
# keeps into the common names (same filesystem: the rename is atomic).

SUBCORT_DSEG = anat("dseg", seg="FIRST")
FIRST_QC = f"{OUT}/sub-{{subject}}/figures/{visit_wc()}_desc-first_slicesdir"

_FSL_TMP = ('export FSLOUTPUTTYPE=NIFTI_GZ && tmp=$(mktemp -d "$(dirname "{output[0]}")/.{rule}.XXXXXX")'
            ' && trap \'rm -rf "$tmp"\' EXIT && ')


if METHOD["anat.skullstrip"] == "fsl_bet":
    _BET_VARIANT = step_cfg("anat.skullstrip")["bet_variant"]

    rule anat_skullstrip_fsl_bet:
        input:
            t1w=T1_PREPROC,
        output:
            mask=BRAIN_MASK,
            brain=T1_BRAIN,
            **sidecars(BRAIN_MASK, T1_BRAIN),
        params:
            method="fsl_bet",
            f=step_cfg("anat.skullstrip")["fractional_threshold"],
            g=step_cfg("anat.skullstrip")["vertical_gradient"],
            variant="" if _BET_VARIANT == "none" else f"-{_BET_VARIANT}",
            prov=prov("anat.skullstrip"),
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        log:
            logfile("anat_skullstrip_fsl_bet"),
        benchmark:
            benchfile("anat_skullstrip_fsl_bet")
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["fsl"]
        shell:
            _FSL_TMP +
            'bet "{input.t1w}" "$tmp/brain" -f {params.f} -g {params.g} {params.variant} -m > "{log}" 2>&1'
            ' && mv "$tmp/brain_mask.nii.gz" "{output.mask}" && mv "$tmp/brain.nii.gz" "{output.brain}"'
            + SIDECAR


if METHOD["anat.segment"] == "fsl_fast":

    rule anat_segment_fsl_fast:
        # FAST on the brain-extracted T1w; with -t 1 -n 3 the classes are ordered by intensity,
        # so seg labels 1/2/3 and pve_0/1/2 are CSF/GM/WM, the labels the common dseg uses.
        input:
            brain=T1_BRAIN,
        output:
            dseg=DSEG,
            csf=PROBSEG["CSF"],
            gm=PROBSEG["GM"],
            wm=PROBSEG["WM"],
            **sidecars(DSEG, *PROBSEG.values()),
        params:
            method="fsl_fast",
            prov=prov("anat.segment"),
        threads: 1
        resources:
            mem_mb=4000,
            runtime=60,
        log:
            logfile("anat_segment_fsl_fast"),
        benchmark:
            benchfile("anat_segment_fsl_fast")
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["fsl"]
        shell:
            _FSL_TMP +
            'fast -t 1 -n 3 -g -B -b -p -o "$tmp/fast" "{input.brain}" > "{log}" 2>&1'
            ' && mv "$tmp/fast_seg.nii.gz" "{output.dseg}"'
            ' && mv "$tmp/fast_pve_0.nii.gz" "{output.csf}"'
            ' && mv "$tmp/fast_pve_1.nii.gz" "{output.gm}"'
            ' && mv "$tmp/fast_pve_2.nii.gz" "{output.wm}"'
            + SIDECAR


if METHOD["anat.subcortical"] == "fsl_first":
    _FIRST_INPUT = step_cfg("anat.subcortical")["input"]
    _FIRST_STRUCTS = step_cfg("anat.subcortical")["structures"]

    rule anat_subcortical_fsl_first:
        input:
            t1w=T1_BRAIN if _FIRST_INPUT == "brain" else T1_PREPROC,
        output:
            dseg=SUBCORT_DSEG,
            qc=directory(FIRST_QC),
            **sidecars(SUBCORT_DSEG),
        params:
            method="fsl_first",
            brain="-b" if _FIRST_INPUT == "brain" else "",
            structures=f"-s {_FIRST_STRUCTS}" if _FIRST_STRUCTS else "",
            prov=prov("anat.subcortical"),
        threads: 1
        resources:
            mem_mb=4000,
            runtime=120,
        log:
            logfile("anat_subcortical_fsl_first"),
        benchmark:
            benchfile("anat_subcortical_fsl_first")
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["fsl"]
        shell:
            _FSL_TMP +
            '( run_first_all -i "{input.t1w}" -o "$tmp/first" {params.brain} {params.structures}'
            ' && cd "$tmp" && first_roi_slicesdir "{input.t1w}" "$tmp/first_all_fast_firstseg.nii.gz" )'
            ' > "{log}" 2>&1'
            ' && mv "$tmp/first_all_fast_firstseg.nii.gz" "{output.dseg}" && mv "$tmp/slicesdir" "{output.qc}"'
            + SIDECAR

    ANAT_TARGETS += [SUBCORT_DSEG, FIRST_QC]


if METHOD["anat.register"] == "fsl":

    rule anat_register_fsl:
        # brain -> brain-extracted template: flirt 12-dof, fnirt initialised with it, the
        # inverse warp, and the brain resampled with the full warp.
        input:
            brain=T1_BRAIN,
            template=template_t1w(),
        output:
            affine=XFM_AFFINE,
            warp=XFM_WARP,
            invwarp=XFM_INVWARP,
            warped=T1_TEMPLATE,
            **sidecars(XFM_AFFINE, XFM_WARP, XFM_INVWARP, T1_TEMPLATE),
        params:
            method="fsl",
            template=TEMPLATE_NAME,
            fnirt_config=step_cfg("anat.register")["fnirt_config"],
            prov=prov("anat.register"),
        threads: 1
        resources:
            mem_mb=8000,
            runtime=90,
        log:
            logfile("anat_register_fsl"),
        benchmark:
            benchfile("anat_register_fsl")
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["fsl"]
        shell:
            _FSL_TMP +
            '( flirt -in "{input.brain}" -ref "{input.template}" -dof 12 -omat "$tmp/affine.mat"'
            ' && fnirt --in="{input.brain}" --ref="{input.template}" --aff="$tmp/affine.mat"'
            ' --config={params.fnirt_config} --cout="$tmp/warpcoef" --fout="$tmp/warp.nii.gz" --logout="$tmp/fnirt.log"'
            ' && invwarp --warp="$tmp/warp.nii.gz" --ref="{input.brain}" --out="$tmp/invwarp.nii.gz"'
            ' && applywarp --in="{input.brain}" --ref="{input.template}" --warp="$tmp/warp.nii.gz"'
            ' --interp=spline --out="$tmp/warped.nii.gz" ) > "{log}" 2>&1'
            ' && mv "$tmp/affine.mat" "{output.affine}" && mv "$tmp/warp.nii.gz" "{output.warp}"'
            ' && mv "$tmp/invwarp.nii.gz" "{output.invwarp}" && mv "$tmp/warped.nii.gz" "{output.warped}"'
            + SIDECAR

    rule anat_register_metrics_fsl:
        """Registration metrics of the FSL result (same JSON as the ANTs backend writes)."""
        input:
            brain=T1_BRAIN,
            warped=T1_TEMPLATE,
            template=template_t1w(),
        output:
            metrics=REG_METRICS,
        params:
            method="fsl",
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        log:
            logfile("anat_register_metrics_fsl"),
        benchmark:
            benchfile("anat_register_metrics_fsl")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        script:
            "../scripts/anat_register_metrics.py"


if METHOD["anat.atlas"] == "fsl_applywarp":
    _ATLAS = step_cfg("anat.atlas")
    if METHOD["anat.register"] != "fsl":
        raise ValueError("config key 'anat.atlas.method' 'fsl_applywarp' needs anat.register.method 'fsl' "
                         f"(the inverse fnirt warp), not {METHOD['anat.register']!r}")
    if not _ATLAS["image"]:
        raise ValueError("config key 'anat.atlas.image' must name a label image in template space "
                         "when anat.atlas.method is 'fsl_applywarp'")
    ATLAS_NATIVE = anat("dseg", atlas=_ATLAS["name"], space="T1w")

    rule anat_atlas_fsl_applywarp:
        input:
            atlas=os.path.expandvars(_ATLAS["image"]),
            brain=T1_BRAIN,
            invwarp=XFM_INVWARP,
        output:
            dseg=ATLAS_NATIVE,
            **sidecars(ATLAS_NATIVE),
        params:
            method="fsl_applywarp",
            atlas=_ATLAS["name"],
            prov=prov("anat.atlas"),
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        log:
            logfile("anat_atlas_fsl_applywarp"),
        benchmark:
            benchfile("anat_atlas_fsl_applywarp")
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["fsl"]
        shell:
            _FSL_TMP +
            'applywarp --in="{input.atlas}" --ref="{input.brain}" --warp="{input.invwarp}" --interp=nn'
            ' --out="$tmp/atlas.nii.gz" > "{log}" 2>&1 && mv "$tmp/atlas.nii.gz" "{output.dseg}"'
            + SIDECAR

    ANAT_TARGETS.append(ATLAS_NATIVE)
