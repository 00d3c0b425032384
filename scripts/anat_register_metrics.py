"""Registration metrics for a backend that writes its own warped image (FSL): the same JSON keys
as neurosmk.anat.register (correlation with the template before and after)."""
from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
import ants  # noqa: E402

from neurosmk.anat import _masked_corr  # noqa: E402
from neurosmk.io import write_json  # noqa: E402

s = snakemake  # noqa: F821
fixed = ants.image_read(s.input.template)
before = ants.resample_image_to_target(ants.image_read(s.input.brain), fixed, interp_type="linear")
warped = ants.image_read(s.input.warped)
metrics = {
    "correlation_before": _masked_corr(before.numpy(), fixed.numpy()),
    "correlation_after": _masked_corr(warped.numpy(), fixed.numpy()),
    "transform": s.params.method,
}
write_json(s.output.metrics, metrics)
print(metrics)
