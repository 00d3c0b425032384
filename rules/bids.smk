# BIDS-Derivatives completeness: the gradient table of the preprocessed DWI series.
# Denoising and Gibbs removal do not change the gradients. BIDS (1.11 schema) allows .bval/.bvec
# only without a desc- entity, so one sub-X[_ses-Y]_dwi.bval/.bvec beside the series applies to
# all of them by inheritance (desc-denoised, desc-degibbs). dwifslpreproc writes its own rotated
# desc-preproc_dwi.bval/.bvec (rules/mrtrix.smk; listed in .bidsignore, see README).

_DWI_GRAD_DESCS = [d for d, step in (("denoised", "dwi.denoise"), ("degibbs", "dwi.degibbs")) if METHOD[step] != "none"]

if config["steps"]["dwi"] and DWI and _DWI_GRAD_DESCS:
    DWI_GRADIENTS = {e: dwi("dwi", ext=f".{e}") for e in ("bval", "bvec")}
    DWI_TARGETS += list(DWI_GRADIENTS.values())

    rule dwi_gradients:
        input:
            **validated("dwi"),  # rules/validate.smk (also joins the dwi SLURM group job)
            bval=lambda wc: raw_dwi(wc)["bval"],
            bvec=lambda wc: raw_dwi(wc)["bvec"],
        output:
            **DWI_GRADIENTS,
        log:
            logfile("dwi_gradients"),
        benchmark:
            benchfile("dwi_gradients")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        threads: 1
        resources:
            **res("dwi_gradients"),
        script:
            "../scripts/dwi_gradients.py"


# ---- methods paragraph (its inputs and helpers: rules/provenance.smk) --------------------------
rule methods:
    """A methods section naming each step that ran, its tool, version, parameters and citations."""
    input:
        sidecars=_methods_inputs,
    output:
        md=report(METHODS_MD, caption="../report/methods.rst", category="Methods"),
    log:
        logfile("methods", visit=False),
    benchmark:
        benchfile("methods", visit=False)
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    threads: 1
    resources:
        **res("methods"),
    params:
        methods=METHOD,
    script:
        "../scripts/methods.py"
