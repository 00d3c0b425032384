# Diffusion stages with MRtrix3 (dwidenoise, mrdegibbs, dwi2mask, dwi2tensor/tensor2metric) and
# the optional eddy/motion correction (dwifslpreproc -> FSL eddy). Each rule exists only when the
# config picks its method, and writes the same file names as the DIPY backends (rules/dwi.smk).
#
# MRtrix writes outputs in place, so every command runs through the tool wrapper (TOOLRUN,
# scripts/toolrun.sh): it writes into the job's private "$tmp" and toolrun_end renames the files
# into the outputs when the command succeeded: a crash never leaves a plausible output. -force is
# only ever used on those temporary files.
#
# Paths reach the shell only through Snakemake's shlex quoting ({input.x:q}, {output.x:q},
# {log:q}); tests/test_hostile.py checks it.

# DIPY fit_method -> dwi2tensor options: DIPY WLS weights an OLS prediction once (-ols -iter 1)
MRTRIX_TENSOR_FIT = {"OLS": "-ols -iter 0", "WLS": "-ols -iter 1"}


if METHOD["dwi.denoise"] == "mrtrix":

    rule dwi_denoise_mrtrix:
        input:
            **validated("dwi"),  # rules/validate.smk: the visit's voxel checks first
            dwi=lambda wc: raw_dwi(wc)["nii"],
        output:
            **sidecars(DWI_DENOISED, DWI_NOISE),
            dwi=DWI_DENOISED,
            noise=DWI_NOISE,
        log:
            logfile("dwi_denoise_mrtrix"),
        benchmark:
            benchfile("dwi_denoise_mrtrix")
        conda:
            ENVS["mrtrix3"]
        container:
            CONTAINERS["mrtrix3"]
        threads: step_cfg("dwi.denoise")["threads"]
        resources:
            **res("dwi_denoise_mrtrix"),
        params:
            method="mrtrix",
            extent=",".join(str(e) for e in step_cfg("dwi.denoise")["extent"]),
            prov=prov("dwi.denoise"),
        shell:
            tool_shell(
                'dwidenoise {input.dwi:q} "$tmp/dwi.nii.gz" -noise "$tmp/noise.nii.gz"'
                " -extent {params.extent} -nthreads {threads} -force > {log:q} 2>&1"
                ' && toolrun_end "$tmp/dwi.nii.gz" {output.dwi:q} "$tmp/noise.nii.gz" {output.noise:q}',
            )


if METHOD["dwi.degibbs"] == "mrtrix":

    rule dwi_degibbs_mrtrix:
        input:
            **validated("dwi", "dwi.degibbs"),  # rules/validate.smk: the visit's voxel checks first
            dwi=dwi_after_denoise,
        output:
            **sidecars(DWI_DEGIBBS),
            dwi=DWI_DEGIBBS,
        log:
            logfile("dwi_degibbs_mrtrix"),
        benchmark:
            benchfile("dwi_degibbs_mrtrix")
        conda:
            ENVS["mrtrix3"]
        container:
            CONTAINERS["mrtrix3"]
        threads: step_cfg("dwi.degibbs")["threads"]
        resources:
            **res("dwi_degibbs_mrtrix"),
        params:
            method="mrtrix",
            axes=_mrtrix_degibbs_axes(step_cfg("dwi.degibbs")["slice_axis"]),
            nshifts=step_cfg("dwi.degibbs")["nshifts"],
            min_w=step_cfg("dwi.degibbs")["min_w"],
            max_w=step_cfg("dwi.degibbs")["max_w"],
            prov=prov("dwi.degibbs"),
        shell:
            tool_shell(
                'mrdegibbs {input.dwi:q} "$tmp/dwi.nii.gz" -axes {params.axes} -nshifts {params.nshifts}'
                " -minW {params.min_w} -maxW {params.max_w} -nthreads {threads} -force > {log:q} 2>&1"
                ' && toolrun_end "$tmp/dwi.nii.gz" {output.dwi:q}',
            )


if METHOD["dwi.mask"] == "mrtrix":

    rule dwi_mask_mrtrix:
        input:
            unpack(dwi_for_model),
            **validated("dwi", "dwi.mask"),  # rules/validate.smk: the visit's voxel checks first
        output:
            **sidecars(DWI_MASK),
            mask=DWI_MASK,
        log:
            logfile("dwi_mask_mrtrix"),
        benchmark:
            benchfile("dwi_mask_mrtrix")
        conda:
            ENVS["mrtrix3"]
        container:
            CONTAINERS["mrtrix3"]
        threads: step_cfg("dwi.mask")["threads"]
        resources:
            **res("dwi_mask_mrtrix"),
        params:
            method="mrtrix",
            prov=prov("dwi.mask"),
        shell:
            tool_shell(
                'dwi2mask {input.dwi:q} "$tmp/mask.nii.gz" -fslgrad {input.bvec:q} {input.bval:q}'
                " -nthreads {threads} -force > {log:q} 2>&1"
                ' && toolrun_end "$tmp/mask.nii.gz" {output.mask:q}',
            )


if METHOD["dwi.tensor"] == "mrtrix":  # fit_method checked at start (backends.py choices)

    rule dwi_tensor_mrtrix:
        input:
            unpack(dwi_for_model),
            mask=DWI_MASK,
        output:
            **DTI,
            **sidecars(*DTI.values()),
        log:
            logfile("dwi_tensor_mrtrix"),
        benchmark:
            benchfile("dwi_tensor_mrtrix")
        conda:
            ENVS["mrtrix3"]
        container:
            CONTAINERS["mrtrix3"]
        threads: step_cfg("dwi.tensor")["threads"]
        resources:
            **res("dwi_tensor_mrtrix"),
        params:
            method="mrtrix",
            fit=MRTRIX_TENSOR_FIT[step_cfg("dwi.tensor")["fit_method"]],
            prov=prov("dwi.tensor"),
        # FA/ADC(=MD)/AD/RD and V1 (unmodulated principal eigenvector) in one pass; colour FA is
        # |V1| x FA as in DIPY's color_fa: tensor2metric -vector -modulate FA, then mrcalc -abs.
        # V1 convention: scanner (world, RAS+) axes, which is what tensor2metric writes; the DIPY
        # backend rotates its eigenvectors into the same axes (neurosmk.dwi.fsl_bvec_to_world).
        shell:
            tool_shell(
                '( dwi2tensor {input.dwi:q} "$tmp/tensor.mif" -fslgrad {input.bvec:q} {input.bval:q}'
                " -mask {input.mask:q} {params.fit} -nthreads {threads}"
                ' && tensor2metric "$tmp/tensor.mif" -mask {input.mask:q} -fa "$tmp/FA.nii.gz"'
                ' -adc "$tmp/MD.nii.gz" -ad "$tmp/AD.nii.gz" -rd "$tmp/RD.nii.gz"'
                ' -vector "$tmp/V1.nii.gz" -num 1 -modulate none -nthreads {threads} -force'
                ' && tensor2metric "$tmp/tensor.mif" -mask {input.mask:q} -vector "$tmp/rgb.mif" -num 1'
                " -modulate fa -nthreads {threads}"
                ' && mrcalc "$tmp/rgb.mif" -abs "$tmp/RGB.nii.gz" -datatype float32 -nthreads {threads} -force'
                " ) > {log:q} 2>&1"
                ' && toolrun_end "$tmp/FA.nii.gz" {output.FA:q} "$tmp/MD.nii.gz" {output.MD:q} "$tmp/AD.nii.gz" {output.AD:q}'
                ' "$tmp/RD.nii.gz" {output.RD:q} "$tmp/V1.nii.gz" {output.V1:q} "$tmp/RGB.nii.gz" {output.RGB:q}',
            )


# ---- dwi.preproc: eddy-current and motion correction ------------------------------------------
if METHOD["dwi.preproc"] == "fsl_dwifslpreproc":
    _PREPROC_GPU = step_cfg("dwi.preproc")["use_gpu"]

    rule dwi_preproc_dwifslpreproc:
        input:
            **validated("dwi", "dwi.preproc"),  # rules/validate.smk: the visit's voxel checks first
            dwi=dwi_after_degibbs,
            bval=lambda wc: raw_dwi(wc)["bval"],
            bvec=lambda wc: raw_dwi(wc)["bvec"],
        output:
            **sidecars(DWI_PREPROC, DWI_PREPROC_BVAL, DWI_PREPROC_BVEC),
            dwi=DWI_PREPROC,
            bval=DWI_PREPROC_BVAL,
            bvec=DWI_PREPROC_BVEC,
        log:
            logfile("dwi_preproc_dwifslpreproc"),
        benchmark:
            benchfile("dwi_preproc_dwifslpreproc")
        conda:
            ENVS["fsl"]
        container:
            CONTAINERS["mrtrix3"]
        threads: step_cfg("dwi.preproc")["threads"]
        resources:
            **res("dwi_preproc_dwifslpreproc"),
        params:
            method="fsl_dwifslpreproc",
            pe=_preproc_pe_args,
            eddy_options=_eddy_options(),
            # use_gpu false hides the GPUs: dwifslpreproc then falls back from eddy_cuda to the CPU eddy
            cuda="" if _PREPROC_GPU else "CUDA_VISIBLE_DEVICES= ",
            prov=prov("dwi.preproc", versions="mrtrix3+fsl"),
        shell:
            tool_shell(
                '{params.cuda}dwifslpreproc {input.dwi:q} "$tmp/dwi.nii.gz" -fslgrad {input.bvec:q} {input.bval:q}'
                " {params.pe:q} -eddy_options {params.eddy_options:q}"
                ' -export_grad_fsl "$tmp/dwi.bvec" "$tmp/dwi.bval"'
                ' -scratch "$tmp" -nthreads {threads} -force > {log:q} 2>&1'
                ' && toolrun_end "$tmp/dwi.bvec" {output.bvec:q} "$tmp/dwi.bval" {output.bval:q} "$tmp/dwi.nii.gz" {output.dwi:q}',
            )

    DWI_TARGETS += [DWI_PREPROC, DWI_PREPROC_BVAL, DWI_PREPROC_BVEC]


# ---- DSI guard for dwi.preproc fsl_dwifslpreproc (eddy) ---------------------------------------
if METHOD["dwi.preproc"] == "fsl_dwifslpreproc" and config["steps"]["dwi"]:
    from neurosmk import dwi_scheme as _dwi_scheme

    for _series in DWI.values():  # stops at start, naming the file, for a non-shelled scheme
        if _series.bval:
            _dwi_scheme.check_shelled(_series.bval, step_cfg("dwi.preproc")["max_shells"])
