# Diffusion stages, portable Python backends (DIPY). The input of each stage depends on which
# earlier stages are enabled (method "none" skips a stage), through dwi_after_denoise,
# dwi_after_degibbs and dwi_for_model (rules/common.smk).

DWI_DENOISED = dwi("dwi", desc="denoised")
DWI_NOISE = dwi("noise", desc="mppca")  # noise-level map (sigma) of the denoising
DWI_DEGIBBS = dwi("dwi", desc="degibbs")
DWI_MASK = dwi("mask", desc="brain")
DTI = {p: dwi("dwimap", model="DTI", param=p) for p in ("FA", "MD", "AD", "RD", "RGB", "V1")}
DTI_STATS = dwi("stats", ext=".tsv", model="DTI", desc="roi")

DWI_TARGETS += [DWI_MASK, *DTI.values(), DTI_STATS, figure("dti", "dwi")]


if "dwi_denoise_dipy" in _backends.STEPS["dwi.denoise"][METHOD["dwi.denoise"]].rules:  # the DIPY methods

    rule dwi_denoise_dipy:
        input:
            unpack(raw_dwi),
            **validated("dwi"),  # rules/validate.smk: the visit's voxel checks first
        output:
            **sidecars(DWI_DENOISED, DWI_NOISE),
            dwi=DWI_DENOISED,
            noise=DWI_NOISE,
        log:
            logfile("dwi_denoise_dipy"),
        benchmark:
            benchfile("dwi_denoise_dipy")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        # DIPY's mppca computes in one thread (full demo DWI: 29.5 s CPU with 1 or 2 BLAS threads);
        # reserving dwi.denoise.threads (2, for mrtrix dwidenoise) left a core idle beside it.
        threads: 1
        resources:
            **res("dwi_denoise_dipy"),
        params:
            method=METHOD["dwi.denoise"],
            patch_radius=step_cfg("dwi.denoise")["patch_radius"],
            prov=prov("dwi.denoise"),
        script:
            "../scripts/dwi_denoise.py"


if METHOD["dwi.denoise"] == "torch":
    # PyTorch MP-PCA (src/neurosmk/dwi_torch.py:mppca), DIPY's algorithm batched over patches on
    # CUDA when the job sees a GPU, else on the CPU; same output files as dwi_denoise_dipy.

    rule dwi_denoise_torch:
        input:
            unpack(raw_dwi),
            **validated("dwi"),  # rules/validate.smk: the visit's voxel checks first
        output:
            **sidecars(DWI_DENOISED, DWI_NOISE),
            dwi=DWI_DENOISED,
            noise=DWI_NOISE,
        log:
            logfile("dwi_denoise_torch"),
        benchmark:
            benchfile("dwi_denoise_torch")
        conda:
            ENVS["neurosmk-gpu"]
        container:
            CONTAINERS["neurosmk"]
        threads: step_cfg("dwi.denoise")["threads"]
        resources:
            **res("dwi_denoise_torch"),
        params:
            method="torch",
            patch_radius=step_cfg("dwi.denoise")["patch_radius"],
            prov=prov("dwi.denoise"),
        script:
            "../scripts/dwi_denoise_torch.py"


if METHOD["dwi.degibbs"] == "dipy":

    rule dwi_degibbs_dipy:
        input:
            **validated("dwi", "dwi.degibbs"),  # rules/validate.smk: the visit's voxel checks first
            dwi=dwi_after_denoise,
        output:
            **sidecars(DWI_DEGIBBS),
            dwi=DWI_DEGIBBS,
        log:
            logfile("dwi_degibbs_dipy"),
        benchmark:
            benchfile("dwi_degibbs_dipy")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        threads: step_cfg("dwi.degibbs")["threads"]
        resources:
            **res("dwi_degibbs_dipy"),
        params:
            method="dipy",
            slice_axis=step_cfg("dwi.degibbs")["slice_axis"],
            n_points=step_cfg("dwi.degibbs")["n_points"],
            prov=prov("dwi.degibbs"),
        script:
            "../scripts/dwi_degibbs.py"


if METHOD["dwi.mask"] == "dipy":

    rule dwi_mask_dipy:
        input:
            unpack(dwi_for_model),
            **validated("dwi", "dwi.mask"),  # rules/validate.smk: the visit's voxel checks first
        output:
            **sidecars(DWI_MASK),
            mask=DWI_MASK,
        log:
            logfile("dwi_mask_dipy"),
        benchmark:
            benchfile("dwi_mask_dipy")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        threads: step_cfg("dwi.mask")["threads"]
        resources:
            **res("dwi_mask_dipy"),
        params:
            method="dipy",
            median_radius=step_cfg("dwi.mask")["median_radius"],
            numpass=step_cfg("dwi.mask")["numpass"],
            b0_threshold=step_cfg("dwi.mask")["b0_threshold"],
            prov=prov("dwi.mask"),
        script:
            "../scripts/dwi_mask.py"


if METHOD["dwi.tensor"] == "dipy":

    rule dwi_tensor_dipy:
        input:
            unpack(dwi_for_model),
            mask=DWI_MASK,
        output:
            **DTI,
            **sidecars(*DTI.values()),
        log:
            logfile("dwi_tensor_dipy"),
        benchmark:
            benchfile("dwi_tensor_dipy")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        threads: step_cfg("dwi.tensor")["threads"]
        resources:
            **res("dwi_tensor_dipy"),
        params:
            method="dipy",
            fit_method=step_cfg("dwi.tensor")["fit_method"],
            b0_threshold=step_cfg("dwi.mask")["b0_threshold"],
            prov=prov("dwi.tensor"),
        script:
            "../scripts/dwi_tensor.py"


if METHOD["dwi.tensor"] == "torch":
    # PyTorch backend (src/neurosmk/dwi_torch.py): DIPY's WLS/OLS batched over voxels on CUDA
    # when the job sees a GPU, else on the CPU; same output files as dwi_tensor_dipy.
    # device "cuda" requests resources gpu=1 (local: --resources gpu=1 limits GPU jobs to one at a
    # time; SLURM: --gpus=1). profiles/slurm-gpu sends this rule to the GPU partition in any case.
    # fit_method WLS or OLS: checked at start (backends.py choices)

    rule dwi_tensor_torch:
        input:
            unpack(dwi_for_model),
            mask=DWI_MASK,
        output:
            **DTI,
            **sidecars(*DTI.values()),
        log:
            logfile("dwi_tensor_torch"),
        benchmark:
            benchfile("dwi_tensor_torch")
        conda:
            ENVS["neurosmk-gpu"]
        container:
            CONTAINERS["neurosmk"]
        threads: step_cfg("dwi.tensor")["threads"]
        resources:
            **res("dwi_tensor_torch"),
        params:
            method="torch",
            fit_method=step_cfg("dwi.tensor")["fit_method"],
            prov=prov("dwi.tensor"),
        script:
            "../scripts/dwi_tensor_torch.py"


rule dwi_stats_qc:
    """DTI ROI table and the FA / colour-FA QC figure."""
    input:
        **DTI,
        mask=DWI_MASK,
    output:
        **sidecars(DTI_STATS),
        stats=DTI_STATS,
        fig_fa=report(
            figure("dti", "dwi"),
            caption="../report/fa.rst",
            category="Diffusion QC",
            subcategory="DTI",
            labels={"subject": "{subject}", "figure": "FA / colour FA"},
        ),
    log:
        logfile("dwi_stats_qc"),
    benchmark:
        benchfile("dwi_stats_qc")
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    threads: 1
    resources:
        **res("dwi_stats_qc"),
    params:
        wm_fa_threshold=step_cfg("dwi.tensor")["wm_fa_threshold"],
        prov=prov("dwi.qc"),
    script:
        "../scripts/dwi_stats_qc.py"
