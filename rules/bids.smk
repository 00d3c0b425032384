# BIDS-Derivatives completeness: the gradient table beside every preprocessed DWI series.
# Denoising and Gibbs removal do not change the gradients, so the denoised and degibbs series
# get copies of the raw .bval/.bvec (dwifslpreproc writes its own rotated ones, rules/mrtrix.smk).

_DWI_GRAD_DESCS = [d for d, step in (("denoised", "dwi.denoise"), ("degibbs", "dwi.degibbs"))
                   if METHOD[step] != "none"]

if config["steps"]["dwi"] and DWI and _DWI_GRAD_DESCS:
    DWI_TARGETS += [dwi("dwi", ext=e, desc=d) for d in _DWI_GRAD_DESCS for e in (".bval", ".bvec")]

    rule dwi_gradients:
        input:
            bval=lambda wc: raw_dwi(wc)["bval"],
            bvec=lambda wc: raw_dwi(wc)["bvec"],
        output:
            bval=dwi("dwi", ext=".bval", desc="{desc}"),
            bvec=dwi("dwi", ext=".bvec", desc="{desc}"),
        wildcard_constraints:
            desc="|".join(_DWI_GRAD_DESCS),
        threads: 1
        resources:
            mem_mb=200,
            runtime=5,
        log:
            logfile("dwi_gradients", visit_wc() + "_desc-{desc}"),
        benchmark:
            benchfile("dwi_gradients", visit_wc() + "_desc-{desc}")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        script:
            "../scripts/dwi_gradients.py"
