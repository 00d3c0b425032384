# QC pages (issue #13): DWI mosaics, per-visit QC numbers, one HTML page per visit and a group page.
#
#   {OUT}/sub-X[_ses-Y].html                  visit page (fMRIPrep's layout: beside the sub-X folders,
#                                             figures linked from sub-X/figures/, nothing embedded)
#   sub-X/figures/sub-X[_ses-Y]_desc-qc_metrics.json   the visit's key numbers and image-quality numbers
#   {OUT}/group/qc.html, {OUT}/group/qc_metrics.tsv    group page (reads only the metrics JSONs) + table
#
# The anatomical mosaics come from anat_volumes_qc (rules/anat.smk), FA from dwi_stats_qc
# (rules/dwi.smk); this file adds the DWI mask and colour-FA mosaics.

QC_METRICS = f"{os.path.splitext(figure('qc', 'metrics'))[0]}.json"
QC_PAGE = _paths.dataset_file(OUT, f"{visit_wc()}.html")
QC_GROUP_PAGE = _paths.group_file(OUT, "qc_page")
QC_GROUP_TSV = _paths.group_file(OUT, "qc_metrics")
FIG_B0MASK = figure("b0mask", "dwi")
FIG_COLORFA = figure("colorfa", "dwi")

_QC_ANAT = bool(config["steps"]["anat"])
_QC_DWI = bool(config["steps"]["dwi"])
QC_VISITS = sorted(set(T1W if _QC_ANAT else {}) | set(DWI if _QC_DWI else {}), key=lambda k: (k[0], k[1] or ""))

if _QC_DWI and DWI:
    DWI_TARGETS += [FIG_B0MASK, FIG_COLORFA]
if QC_VISITS:
    EXTRA_TARGETS += expand_visits(QC_PAGE, QC_VISITS) + [QC_GROUP_PAGE, QC_GROUP_TSV]


# (figure path pattern, title, caption) per kind, in page order
QC_FIGURES = {
    "anat": [
        (figure("brainmask", "T1w"), "Brain mask", "Brain mask (red) on the bias-corrected T1w."),
        (
            figure("dseg", "T1w"),
            "Tissue classes",
            "Tissue segmentation contours on the bias-corrected T1w: CSF blue, GM green, WM yellow.",
        ),
        (
            figure("reg", "T1w"),
            "Registration to the template",
            "T1w brain registered to the template; red lines are the template's brain outline and "
            "grey/white boundary: the T1w's should follow them (ventricles, sulci, cerebellum).",
        ),
    ],
    "dwi": [
        (FIG_B0MASK, "DWI brain mask", "DWI brain mask (red) on the mean b=0 image."),
        (figure("dti", "dwi"), "Fractional anisotropy", "FA (0 to 1) in the DWI mask's bounding box."),
        (
            FIG_COLORFA,
            "Colour FA",
            "Colour FA: red left-right, green anterior-posterior, blue inferior-superior (scanner axes).",
        ),
    ],
}


if METHOD["anat.register"] == "none":  # no registration figure (rules/anat.smk)
    QC_FIGURES["anat"] = [f for f in QC_FIGURES["anat"] if f[0] != figure("reg", "T1w")]


rule qc_dwi_figures:
    """DWI mask on the mean b=0 image and colour FA, whole-brain mosaics."""
    input:
        unpack(dwi_for_model),
        mask=DWI_MASK,
        rgb=DTI["RGB"],
    output:
        b0mask=report(
            FIG_B0MASK,
            caption="../report/b0mask.rst",
            category="Diffusion QC",
            subcategory="DWI mask",
            labels={"subject": "{subject}", "figure": "DWI mask"},
        ),
        colorfa=report(
            FIG_COLORFA,
            caption="../report/colorfa.rst",
            category="Diffusion QC",
            subcategory="colour FA",
            labels={"subject": "{subject}", "figure": "colour FA"},
        ),
    log:
        logfile("qc_dwi_figures"),
    benchmark:
        benchfile("qc_dwi_figures")
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    threads: 1
    resources:
        **res("qc_dwi_figures"),
    params:
        b0_threshold=step_cfg("dwi.mask")["b0_threshold"],
    script:
        "../scripts/qc_dwi_figures.py"


rule qc_visit_metrics:
    """The visit's key numbers and image-quality numbers (T1w SNR/CNR/CJV, DWI b=0 SNR), one JSON."""
    input:
        unpack(_qc_metrics_inputs),
    output:
        metrics=QC_METRICS,
    log:
        logfile("qc_visit_metrics"),
    benchmark:
        benchfile("qc_visit_metrics")
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    threads: 1
    resources:
        **res("qc_visit_metrics"),
    params:
        # only a visit with DWI reads it (an anatomy-only visit does not re-run when it changes)
        b0_threshold=lambda wc: step_cfg("dwi.mask")["b0_threshold"] if _qc_has(wc, "dwi") else None,
    script:
        "../scripts/qc_visit_metrics.py"


rule qc_visit_page:
    """One self-contained HTML page per visit: figures, numbers, methods with versions, status."""
    input:
        metrics=QC_METRICS,
        figures=_qc_page_figures,
    output:
        html=QC_PAGE,
    log:
        logfile("qc_visit_page"),
    benchmark:
        benchfile("qc_visit_page")
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    threads: 1
    resources:
        **res("qc_visit_page"),
    params:
        captions=_qc_page_captions,
        out_group_page=QC_GROUP_PAGE,
        out_dir=lambda wc, output: folder_of(output.html),  # out_*: paths, left out of the provenance record
    script:
        "../scripts/qc_visit_page.py"


rule qc_group_page:
    """Group QC page (distributions, robust outliers, subject index) from the per-visit numbers."""
    input:
        metrics=expand_visits(QC_METRICS, QC_VISITS),
    output:
        **sidecars(QC_GROUP_TSV),
        html=QC_GROUP_PAGE,  # not embedded in the Snakemake report (its links are relative); linked from it
        tsv=QC_GROUP_TSV,
    log:
        logfile("qc_group_page", visit=False),
    benchmark:
        benchfile("qc_group_page", visit=False)
    conda:
        ENVS["neurosmk"]
    container:
        CONTAINERS["neurosmk"]
    threads: 1
    resources:
        **res("qc_group_page"),
    params:
        out_pages=expand_visits(QC_PAGE, QC_VISITS),
        out_dir=lambda wc, output: folder_of(output.html, 2),  # out_*: paths, left out of the provenance record
        prov=prov("qc.group"),
    script:
        "../scripts/qc_group_page.py"
