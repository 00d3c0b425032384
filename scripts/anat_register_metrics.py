"""Registration metrics for a backend that writes its own warped image (FSL): the same JSON keys
as neurosmk.anat.register (correlation with the template before and after)."""
from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
import ants  # noqa: E402

from neurosmk.anat import registration_metrics  # noqa: E402

s = snakemake  # noqa: F821
metrics = registration_metrics(ants.image_read(s.input.brain), ants.image_read(s.input.template),
                               ants.image_read(s.input.warped), s.params.method, s.output.metrics)
print(metrics)
