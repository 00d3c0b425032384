# dwi.preproc: drbuddi -- TORTOISE DRBUDDI susceptibility-distortion correction with a blip-up /
# blip-down b=0 pair (the correction QSIPrep recommends where eddy/topup do not fit, e.g. DSI).
# Three jobs: the b=0 pair (Python), DRBUDDI itself (TORTOISE container only: not on conda or
# PyPI, and not runnable on the test machines), the field applied to every DWI volume (ANTsPy).
# Command line as QSIPrep runs it (PennLINC/qsiprep qsiprep/interfaces/tortoise.py, class
# DRBUDDI): DRBUDDI -u up.nii --up_json up.json -d down.nii; outputs in the working folder.
# Same file names as dwifslpreproc (rules/mrtrix.smk): desc-preproc dwi/bval/bvec.

from neurosmk import dwi_scheme as _dwi_scheme

if METHOD["dwi.preproc"] == "drbuddi":
    _DRB = step_cfg("dwi.preproc")
    _DRB_WORK = _paths.state_path(OUT, "work", "drbuddi", visit_wc())
    _DRB_FILES = {
        k: os.path.join(_DRB_WORK, f)
        for k, f in (
            ("up", "up_b0.nii"),
            ("down", "down_b0.nii"),
            ("up_json", "up.json"),
            ("field", "deformation_FINV.nii.gz"),
            ("b0", "b0_corrected_final.nii"),
            ("version", "drbuddi_version.txt"),
        )
    }
    _DRB_EXE = _backends.STEPS["dwi.preproc"]["drbuddi"].tools_for(_DRB)[0]
    _DRB_IMAGE = CONTAINERS["tortoise_cuda" if _DRB["use_gpu"] else "tortoise"]
    _DRB_REVERSE = {}  # (subject, session) -> (reverse image, its bval or None, pe of the DWI)
    for _k, _d in DWI.items():
        _rev, _rpe, _upe = _dwi_scheme.reverse_pe_b0(_d.nifti, _d.json)  # refused at start if none
        _rb = _rev[: -len(".nii.gz")] + ".bval" if _rev.endswith(".nii.gz") else None
        _DRB_REVERSE[_k] = (_rev, _rb if _rb and os.path.exists(_rb) else None, _upe)

    rule dwi_preproc_drbuddi_inputs:
        input:
            unpack(_drb_inputs),
            **validated("dwi", "dwi.preproc"),  # rules/validate.smk: the visit's voxel checks first
        output:
            up=temp(_DRB_FILES["up"]),
            down=temp(_DRB_FILES["down"]),
            up_json=temp(_DRB_FILES["up_json"]),
        log:
            logfile("dwi_preproc_drbuddi_inputs"),
        benchmark:
            benchfile("dwi_preproc_drbuddi_inputs")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        threads: 1
        resources:
            **res("dwi_preproc_drbuddi_inputs"),
        params:
            pe_up=lambda wc: _DRB_REVERSE[_key(wc)][2],
            b0_threshold=config["dwi"]["mask"]["b0_threshold"],
        script:
            "../scripts/drbuddi_inputs.py"

    rule dwi_preproc_drbuddi:
        input:
            up=_DRB_FILES["up"],
            down=_DRB_FILES["down"],
            up_json=_DRB_FILES["up_json"],
        output:
            field=temp(_DRB_FILES["field"]),
            b0=temp(_DRB_FILES["b0"]),
            # the ToolVersion of the corrected DWI's sidecars (dwi_preproc_drbuddi_apply): DRBUDDI
            # has no version option, so it is the pinned image the job ran in (provenance.VERSION_COMMANDS)
            version=temp(_DRB_FILES["version"]),
        log:
            logfile("dwi_preproc_drbuddi"),
        benchmark:
            benchfile("dwi_preproc_drbuddi")
        conda:
            ENVS["tortoise"]
        container:
            _DRB_IMAGE
        threads: _DRB["threads"]
        resources:
            **res("dwi_preproc_drbuddi"),
        params:
            method="drbuddi",
            exe=_DRB_EXE,  # DRBUDDI_cuda with use_gpu
            version_cmd=_provenance.version_command("tortoise", [_DRB_EXE], image=_DRB_IMAGE),
        shell:
            # the TORTOISE images keep the binaries in /src/TORTOISEV4/bin (QSIPrep's Dockerfile);
            # DRBUDDI writes into the working folder: the job's private "$tmp" (TOOLRUN)
            tool_shell(
                'cp {input.up:q} "$tmp/up_b0.nii" && cp {input.down:q} "$tmp/down_b0.nii"'
                ' && cp {input.up_json:q} "$tmp/up.json"'
                ' && ( cd "$tmp" && PATH="$PATH:/src/TORTOISEV4/bin" OMP_NUM_THREADS={threads} {params.exe:q}'
                " -u up_b0.nii --up_json up.json -d down_b0.nii ) > {log:q} 2>&1"
                ' && sh -c {params.version_cmd:q} > "$tmp/version.txt"'
                ' && toolrun_end "$tmp/deformation_FINV.nii.gz" {output.field:q} "$tmp/b0_corrected_final.nii" {output.b0:q}'
                ' "$tmp/version.txt" {output.version:q}',
                sidecar=False,
            )

    rule dwi_preproc_drbuddi_apply:
        input:
            dwi=dwi_after_degibbs,
            bval=lambda wc: raw_dwi(wc)["bval"],
            bvec=lambda wc: raw_dwi(wc)["bvec"],
            field=_DRB_FILES["field"],
            b0=_DRB_FILES["b0"],
            version=_DRB_FILES["version"],
        output:
            **sidecars(DWI_PREPROC, DWI_PREPROC_BVAL, DWI_PREPROC_BVEC),
            dwi=DWI_PREPROC,
            bval=DWI_PREPROC_BVAL,
            bvec=DWI_PREPROC_BVEC,
        log:
            logfile("dwi_preproc_drbuddi_apply"),
        benchmark:
            benchfile("dwi_preproc_drbuddi_apply")
        conda:
            ENVS["neurosmk"]
        container:
            CONTAINERS["neurosmk"]
        threads: 1
        resources:
            **res("dwi_preproc_drbuddi_apply"),
        params:
            method="drbuddi",
            use_gpu=_DRB["use_gpu"],
            prov=prov("dwi.preproc"),
        script:
            "../scripts/drbuddi_apply.py"

    DWI_TARGETS += [DWI_PREPROC, DWI_PREPROC_BVAL, DWI_PREPROC_BVEC]
