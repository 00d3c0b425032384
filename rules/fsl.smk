# Structural stages with FSL (bet, fast, run_first_all, flirt/fnirt) and the atlas-to-native
# warp (applywarp). Each rule exists only when the config picks its method and writes the same
# file names as the Python backends (rules/anat.smk). FSL names its outputs after a basename, so
# each rule works in the job's private temporary folder (TOOLRUN, scripts/toolrun.sh) and renames
# the files it keeps into the common names.

SUBCORT_DSEG = anat("dseg", seg="FIRST")
FIRST_QC = _paths.figure_path(OUT, "{subject}", visit_wc(), "first", "slicesdir", ext="")


if METHOD["anat.skullstrip"] == "fsl_bet":
    _BET_VARIANT = step_cfg("anat.skullstrip")["bet_variant"]

    rule anat_skullstrip_fsl_bet:
        input:
            t1w=T1_PREPROC,
        output:
            **sidecars(BRAIN_MASK, T1_BRAIN),
            mask=BRAIN_MASK,
            brain=T1_BRAIN,
        log:
            logfile("anat_skullstrip_fsl_bet"),
        benchmark:
            benchfile("anat_skullstrip_fsl_bet")
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["fsl"]
        threads: 1
        resources:
            **res("anat_skullstrip_fsl_bet"),
        params:
            method="fsl_bet",
            f=step_cfg("anat.skullstrip")["fractional_threshold"],
            g=step_cfg("anat.skullstrip")["vertical_gradient"],
            variant=[] if _BET_VARIANT == "none" else [f"-{_BET_VARIANT}"],  # a list: :q quotes each item
            prov=prov("anat.skullstrip"),
        shell:
            tool_shell(
                _FSL_ENV,
                'bet {input.t1w:q} "$tmp/brain" -f {params.f:q} -g {params.g:q} {params.variant:q} -m > {log:q} 2>&1'
                ' && toolrun_end "$tmp/brain_mask.nii.gz" {output.mask:q} "$tmp/brain.nii.gz" {output.brain:q}',
            )


if METHOD["anat.segment"] == "fsl_fast":

    rule anat_segment_fsl_fast:
        # FAST on the brain-extracted T1w; with -t 1 -n 3 the classes are ordered by intensity,
        # so seg labels 1/2/3 and pve_0/1/2 are CSF/GM/WM, the labels the common dseg uses.
        input:
            brain=T1_BRAIN,
        output:
            **sidecars(DSEG, *PROBSEG.values()),
            dseg=DSEG,
            csf=PROBSEG["CSF"],
            gm=PROBSEG["GM"],
            wm=PROBSEG["WM"],
        log:
            logfile("anat_segment_fsl_fast"),
        benchmark:
            benchfile("anat_segment_fsl_fast")
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["fsl"]
        threads: 1
        resources:
            **res("anat_segment_fsl_fast"),
        params:
            method="fsl_fast",
            prov=prov("anat.segment"),
        shell:
            tool_shell(
                _FSL_ENV,
                'fast -t 1 -n 3 -g -B -b -p -o "$tmp/fast" {input.brain:q} > {log:q} 2>&1'
                ' && toolrun_end "$tmp/fast_seg.nii.gz" {output.dseg:q} "$tmp/fast_pve_0.nii.gz" {output.csf:q}'
                ' "$tmp/fast_pve_1.nii.gz" {output.gm:q} "$tmp/fast_pve_2.nii.gz" {output.wm:q}',
            )


if METHOD["anat.subcortical"] == "fsl_first":
    _FIRST_INPUT = step_cfg("anat.subcortical")["input"]
    _FIRST_STRUCTS = step_cfg("anat.subcortical")["structures"]

    rule anat_subcortical_fsl_first:
        input:
            t1w=T1_BRAIN if _FIRST_INPUT == "brain" else T1_PREPROC,
        output:
            **sidecars(SUBCORT_DSEG),
            dseg=SUBCORT_DSEG,
            qc=directory(FIRST_QC),
        log:
            logfile("anat_subcortical_fsl_first"),
        benchmark:
            benchfile("anat_subcortical_fsl_first")
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["fsl"]
        threads: 1
        resources:
            **res("anat_subcortical_fsl_first"),
        params:
            method="fsl_first",
            brain=["-b"] if _FIRST_INPUT == "brain" else [],
            structures=["-s", _FIRST_STRUCTS] if _FIRST_STRUCTS else [],
            prov=prov("anat.subcortical"),
        shell:
            tool_shell(
                _FSL_ENV,
                '( run_first_all -i {input.t1w:q} -o "$tmp/first" {params.brain:q} {params.structures:q}'
                ' && cd "$tmp" && first_roi_slicesdir {input.t1w:q} "$tmp/first_all_fast_firstseg.nii.gz" )'
                " > {log:q} 2>&1"
                ' && toolrun_end "$tmp/first_all_fast_firstseg.nii.gz" {output.dseg:q} "$tmp/slicesdir" {output.qc:q}',
            )

    ANAT_TARGETS += [SUBCORT_DSEG, FIRST_QC]


if METHOD["anat.register"] == "fsl":
    # FSL's documented recipe (FNIRT user guide, "Now what? -- applywarp!" and the example
    # registration of a T1 to MNI152: https://fsl.fmrib.ox.ac.uk/fsl/fslwiki/FNIRT/UserGuide):
    #   flirt -in brain -ref MNI152_T1_2mm_brain -omat affine.mat           (brain -> template brain)
    #   fnirt --in=head --aff=affine.mat --config=T1_2_MNI152_2mm            (head -> template head;
    #         the config sets --ref=MNI152_T1_2mm and --refmask=MNI152_T1_2mm_brain_mask_dil,
    #         $FSLDIR/etc/flirtsch/T1_2_MNI152_2mm.cnf; here both are given explicitly, on one grid)
    #   applywarp --ref=MNI152_T1_2mm --in=head --warp=warp
    # The template is FSL's own MNI152 (ICBM 2009 nonlinear 6th generation; TemplateFlow
    # MNI152NLin6Asym) at the resolution the config names, copied out of $FSLDIR/data/standard
    # by anat_template_fsl(_brain) so that the QC and metric rules (project env) can read it too.
    _FNIRT_CONFIG = step_cfg("anat.register")["fnirt_config"]
    if TEMPLATE_NAME != FSL_TEMPLATE_NAME or config["template"]["t1w"]:
        raise ValueError(
            "anat.register.method 'fsl' registers to FSL's MNI152 ($FSLDIR/data/standard/MNI152_T1_2mm*, "
            f"the reference and refmask fnirt --config={_FNIRT_CONFIG} was tuned for), whose TemplateFlow name is "
            f"{FSL_TEMPLATE_NAME}: set template.name: {FSL_TEMPLATE_NAME} and template.t1w: null "
            f"(now template.name {TEMPLATE_NAME!r}, template.t1w {config['template']['t1w']!r})"
        )

    # Two rules because a job's sidecars share one provenance record, and the BIDS SkullStripped
    # of the head (false) and of the brain (true) differ.
    rule anat_template_fsl:
        """FSL's MNI152 head at the fnirt config's resolution, copied from $FSLDIR/data/standard
        (fsl-data_standard) into the derivatives' sourcedata."""
        output:
            **sidecars(FSL_TEMPLATE["head"]),
            head=FSL_TEMPLATE["head"],
        log:
            logfile("anat_template_fsl", visit=False),
        benchmark:
            benchfile("anat_template_fsl", visit=False)
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["fsl"]
        threads: 1
        resources:
            **res("anat_template_fsl"),
        params:
            method="fsl",
            standard=f"MNI152_T1_{FSL_TEMPLATE_RES}",
            prov=prov("anat.register"),
        shell:
            tool_shell(
                _FSL_ENV,
                '( s="$FSLDIR/data/standard"/{params.standard:q}'
                ' && cp "$s.nii.gz" "$tmp/head.nii.gz" ) > {log:q} 2>&1'
                ' && toolrun_end "$tmp/head.nii.gz" {output.head:q}',
            )

    rule anat_template_fsl_brain:
        """FSL's MNI152 brain and dilated brain mask (the fnirt config's --refmask) at the same
        resolution, from $FSLDIR/data/standard."""
        output:
            **sidecars(FSL_TEMPLATE["brain"], FSL_TEMPLATE["mask_dil"]),
            brain=FSL_TEMPLATE["brain"],
            mask_dil=FSL_TEMPLATE["mask_dil"],
        log:
            logfile("anat_template_fsl_brain", visit=False),
        benchmark:
            benchfile("anat_template_fsl_brain", visit=False)
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["fsl"]
        threads: 1
        resources:
            **res("anat_template_fsl_brain"),
        params:
            method="fsl",
            standard=f"MNI152_T1_{FSL_TEMPLATE_RES}",
            prov=prov("anat.register"),
        shell:
            tool_shell(
                _FSL_ENV,
                '( s="$FSLDIR/data/standard"/{params.standard:q}'
                ' && cp "$s"_brain.nii.gz "$tmp/brain.nii.gz" && cp "$s"_brain_mask_dil.nii.gz "$tmp/mask_dil.nii.gz"'
                " ) > {log:q} 2>&1"
                ' && toolrun_end "$tmp/brain.nii.gz" {output.brain:q} "$tmp/mask_dil.nii.gz" {output.mask_dil:q}',
            )

    rule anat_register_fsl:
        input:
            head=T1_PREPROC,
            brain=T1_BRAIN,
            tpl_head=FSL_TEMPLATE["head"],
            tpl_brain=FSL_TEMPLATE["brain"],
            tpl_mask=FSL_TEMPLATE["mask_dil"],
        output:
            **sidecars(XFM_AFFINE, XFM_WARP, XFM_INVWARP, T1_TEMPLATE),
            affine=XFM_AFFINE,
            warp=XFM_WARP,
            invwarp=XFM_INVWARP,
            warped=T1_TEMPLATE,
        log:
            logfile("anat_register_fsl"),
        benchmark:
            benchfile("anat_register_fsl")
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["fsl"]
        threads: 1
        resources:
            **res("anat_register_fsl"),
        params:
            method="fsl",
            template=TEMPLATE_NAME,
            fnirt_config=_FNIRT_CONFIG,
            prov=prov("anat.register"),
        shell:
            # the warped T1w is the brain (the common name says desc-brain), resampled with the
            # full warp; the inverse warp is defined on the native grid (--ref=the T1w)
            tool_shell(
                _FSL_ENV,
                '( flirt -in {input.brain:q} -ref {input.tpl_brain:q} -dof 12 -omat "$tmp/affine.mat"'
                ' && fnirt --in={input.head:q} --aff="$tmp/affine.mat" --config={params.fnirt_config:q}'
                " --ref={input.tpl_head:q} --refmask={input.tpl_mask:q}"
                ' --cout="$tmp/warpcoef.nii.gz" --fout="$tmp/warp.nii.gz" --logout="$tmp/fnirt.log"'
                ' && invwarp --warp="$tmp/warp.nii.gz" --ref={input.brain:q} --out="$tmp/invwarp.nii.gz"'
                ' && applywarp --in={input.brain:q} --ref={input.tpl_head:q} --warp="$tmp/warp.nii.gz"'
                ' --interp=spline --out="$tmp/warped.nii.gz" ) > {log:q} 2>&1'
                ' && toolrun_end "$tmp/affine.mat" {output.affine:q} "$tmp/warp.nii.gz" {output.warp:q}'
                ' "$tmp/invwarp.nii.gz" {output.invwarp:q} "$tmp/warped.nii.gz" {output.warped:q}',
            )


if METHOD["anat.atlas"] == "fsl_applywarp":
    _ATLAS = step_cfg("anat.atlas")
    if METHOD["anat.register"] != "fsl":
        raise ValueError(
            "config key 'anat.atlas.method' 'fsl_applywarp' needs anat.register.method 'fsl' "
            f"(the inverse fnirt warp), not {METHOD['anat.register']!r}"
        )
    if not _ATLAS["image"]:
        raise ValueError(
            "config key 'anat.atlas.image' must name a label image in template space "
            "when anat.atlas.method is 'fsl_applywarp'"
        )
    ATLAS_NAME = _backends.atlas_label(_ATLAS["image"], _ATLAS["name"])
    ATLAS_NATIVE = anat("dseg", atlas=ATLAS_NAME, space="T1w")

    rule anat_atlas_fsl_applywarp:
        # applywarp --interp=nn with the inverse warp: labels stay labels (FNIRT user guide,
        # "Transforming an atlas/ROI to the native space": applywarp --ref=native --in=atlas
        # --warp=inverse_warp --interp=nn)
        input:
            atlas=os.path.expandvars(_ATLAS["image"]),
            brain=T1_BRAIN,
            invwarp=XFM_INVWARP,
        output:
            **sidecars(ATLAS_NATIVE),
            dseg=ATLAS_NATIVE,
        log:
            logfile("anat_atlas_fsl_applywarp"),
        benchmark:
            benchfile("anat_atlas_fsl_applywarp")
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["fsl"]
        threads: 1
        resources:
            **res("anat_atlas_fsl_applywarp"),
        params:
            method="fsl_applywarp",
            atlas=ATLAS_NAME,
            prov=prov("anat.atlas"),
        shell:
            tool_shell(
                _FSL_ENV,
                "applywarp --in={input.atlas:q} --ref={input.brain:q} --warp={input.invwarp:q} --interp=nn"
                ' --out="$tmp/atlas.nii.gz" > {log:q} 2>&1'
                ' && toolrun_end "$tmp/atlas.nii.gz" {output.dseg:q}',
            )

    ANAT_TARGETS.append(ATLAS_NATIVE)
