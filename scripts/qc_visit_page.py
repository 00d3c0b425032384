from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
import time  # noqa: E402

from neurosmk import qcpages  # noqa: E402

s = snakemake  # noqa: F821
t0 = time.perf_counter()
session = s.wildcards.get("session")
pid, ses = f"sub-{s.wildcards.subject}", (f"ses-{session}" if session else None)
figures = [(title, png, caption) for (title, caption), png in zip(s.params.captions, s.input.figures)]
qcpages.subject_page(s.output.html, s.input.metrics, figures,
                     qcpages.visit_sidecars(s.params.out_dir, pid, ses),
                     group_page=s.params.out_group_page,
                     status_rows=qcpages.visit_status(s.params.out_dir, pid, ses))
print(f"{s.output.html}: built in {time.perf_counter() - t0:.3f} s")
