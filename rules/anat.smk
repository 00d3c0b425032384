# Structural (T1w) stages, portable Python backends (ANTsPy, brainextractor, DIPY).
# Every backend of a step writes the same file names; METHOD[...] picks the rule.

T1_PREPROC = anat("T1w", desc="preproc")  # N4 bias-corrected, full head
BRAIN_MASK = anat("mask", desc="brain")
T1_BRAIN = anat("T1w", desc="brain")
DSEG = anat("dseg")
PROBSEG = {t: anat("probseg", label=t) for t in ("CSF", "GM", "WM")}
XFM_AFFINE = anat("xfm", ext=".mat", from_="T1w", to=TEMPLATE_NAME, mode="image", desc="affine")
XFM_WARP = anat("xfm", from_="T1w", to=TEMPLATE_NAME, mode="image", desc="warp")
XFM_INVWARP = anat("xfm", from_=TEMPLATE_NAME, to="T1w", mode="image", desc="warp")
T1_TEMPLATE = anat("T1w", space=TEMPLATE_NAME, desc="brain")
REG_METRICS = anat("metrics", ext=".json", space=TEMPLATE_NAME, desc="registration")
TISSUE_VOL = anat("volumes", ext=".tsv", desc="tissue")

# anat.register.method none: no spatial normalisation, so nothing in template space (transforms,
# registered T1w, registration metrics, registration figure) is made
REGISTERED = METHOD["anat.register"] != "none"
ANAT_TARGETS += [
    T1_PREPROC,
    BRAIN_MASK,
    T1_BRAIN,
    DSEG,
    *PROBSEG.values(),
    TISSUE_VOL,
    figure("brainmask", "T1w"),
    figure("dseg", "T1w"),
    *([XFM_AFFINE, XFM_WARP, XFM_INVWARP, T1_TEMPLATE, REG_METRICS, figure("reg", "T1w")] if REGISTERED else []),
]


if METHOD["anat.biascorrect"] == "ants":

    rule anat_biascorrect_ants:
        input:
            **validated("anat"),  # rules/validate.smk: the visit's voxel checks first
            t1w=raw_t1w,
        output:
            **sidecars(T1_PREPROC),
            t1w=T1_PREPROC,
        log:
            logfile("anat_biascorrect_ants"),
        benchmark:
            benchfile("anat_biascorrect_ants")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        threads: step_cfg("anat.biascorrect")["threads"]
        resources:
            **res("anat_biascorrect_ants"),
        params:
            method="ants",
            shrink_factor=step_cfg("anat.biascorrect")["shrink_factor"],
            convergence_iters=step_cfg("anat.biascorrect")["convergence_iters"],
            convergence_tol=step_cfg("anat.biascorrect")["convergence_tol"],
            spline_distance=step_cfg("anat.biascorrect")["spline_distance"],
            prov=prov("anat.biascorrect"),
        script:
            "../scripts/anat_biascorrect.py"


# only the keys the chosen backend reads (its registry record's config_keys): editing the other
# backend's keys re-runs nothing
_SKULLSTRIP_KEYS = {
    m: b.config_keys for m, b in _backends.STEPS["anat.skullstrip"].items() if "anat_skullstrip_python" in b.rules
}

if METHOD["anat.skullstrip"] in _SKULLSTRIP_KEYS:

    rule anat_skullstrip_python:
        input:
            t1w=T1_PREPROC,
        output:
            **sidecars(BRAIN_MASK, T1_BRAIN),
            mask=BRAIN_MASK,
            brain=T1_BRAIN,
        log:
            logfile("anat_skullstrip_python"),
        benchmark:
            benchfile("anat_skullstrip_python")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        threads: step_cfg("anat.skullstrip")["threads"]
        resources:
            **res("anat_skullstrip_python"),
        params:
            **{k: step_cfg("anat.skullstrip")[k] for k in _SKULLSTRIP_KEYS[METHOD["anat.skullstrip"]]},
            method=METHOD["anat.skullstrip"],
            prov=prov("anat.skullstrip"),
        script:
            "../scripts/anat_skullstrip.py"


if METHOD["anat.segment"] == "atropos":

    rule anat_segment_atropos:
        input:
            t1w=T1_PREPROC,
            mask=BRAIN_MASK,
        output:
            **sidecars(DSEG, *PROBSEG.values()),
            dseg=DSEG,
            csf=PROBSEG["CSF"],
            gm=PROBSEG["GM"],
            wm=PROBSEG["WM"],
        log:
            logfile("anat_segment_atropos"),
        benchmark:
            benchfile("anat_segment_atropos")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        threads: step_cfg("anat.segment")["threads"]
        resources:
            **res("anat_segment_atropos"),
        params:
            method="atropos",
            mrf_weight=step_cfg("anat.segment")["mrf_weight"],
            iterations=step_cfg("anat.segment")["iterations"],
            prov=prov("anat.segment"),
        script:
            "../scripts/anat_segment.py"


if METHOD["anat.register"] == "ants":

    rule anat_register_ants:
        input:
            brain=T1_BRAIN,
            template=template_t1w(),
        output:
            **sidecars(XFM_AFFINE, XFM_WARP, XFM_INVWARP, T1_TEMPLATE),
            affine=XFM_AFFINE,
            warp=XFM_WARP,
            invwarp=XFM_INVWARP,
            warped=T1_TEMPLATE,
            metrics=REG_METRICS,
        log:
            logfile("anat_register_ants"),
        benchmark:
            benchfile("anat_register_ants")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        threads: step_cfg("anat.register")["threads"]
        resources:
            **res("anat_register_ants"),
        params:
            method="ants",
            template=TEMPLATE_NAME,
            transform=step_cfg("anat.register")["transform"],
            syn_iterations=step_cfg("anat.register")["syn_iterations"],
            seed=step_cfg("anat.register")["seed"],
            prov=prov("anat.register"),
        script:
            "../scripts/anat_register.py"


if METHOD["anat.register"] in ("fsl", "synthmorph"):
    # Registration metrics of a tool registration (rules/fsl.smk, rules/freesurfer.smk), the same
    # JSON as the ANTs rule writes itself: one rule, named after the backend (as validate_{anat,dwi}).
    _REG_METHOD = METHOD["anat.register"]

    rule:
        name:
            f"anat_register_metrics_{_REG_METHOD}"
        input:
            brain=T1_BRAIN,
            warped=T1_TEMPLATE,
            template=template_t1w(),  # FSL's MNI152 brain for fsl (rules/common.smk)
        output:
            metrics=REG_METRICS,
        log:
            logfile(f"anat_register_metrics_{_REG_METHOD}"),
        benchmark:
            benchfile(f"anat_register_metrics_{_REG_METHOD}")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        threads: 1
        resources:
            **res(f"anat_register_metrics_{_REG_METHOD}"),
        params:
            method=_REG_METHOD,
        script:
            "../scripts/anat_register_metrics.py"


rule anat_volumes_qc:
    """Tissue volume table and the structural QC figures (one job: they share the loads)."""
    input:
        **({"warped": T1_TEMPLATE, "template": template_t1w()} if REGISTERED else {}),
        t1w=T1_PREPROC,
        mask=BRAIN_MASK,
        dseg=DSEG,
    output:
        **(
            {
                "fig_reg": report(
                    figure("reg", "T1w"),
                    caption="../report/registration.rst",
                    category="Structural QC",
                    subcategory="registration",
                    labels={"subject": "{subject}", "figure": "registration"},
                )
            }
            if REGISTERED
            else {}
        ),
        **sidecars(TISSUE_VOL),
        volumes=TISSUE_VOL,
        fig_mask=report(
            figure("brainmask", "T1w"),
            caption="../report/brainmask.rst",
            category="Structural QC",
            subcategory="brain mask",
            labels={"subject": "{subject}", "figure": "brain mask"},
        ),
        fig_dseg=report(
            figure("dseg", "T1w"),
            caption="../report/dseg.rst",
            category="Structural QC",
            subcategory="segmentation",
            labels={"subject": "{subject}", "figure": "tissue segmentation"},
        ),
    log:
        logfile("anat_volumes_qc"),
    benchmark:
        benchfile("anat_volumes_qc")
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    threads: 1
    resources:
        **res("anat_volumes_qc"),
    params:
        prov=prov("anat.qc"),
    script:
        "../scripts/anat_volumes_qc.py"
