from neurosmk.runtime import setup

setup(snakemake)  # noqa: F821
import time  # noqa: E402

from neurosmk import qcpages  # noqa: E402

s = snakemake  # noqa: F821
t0 = time.perf_counter()
qcpages.group_page(s.output.html, list(zip(s.input.metrics, s.params.out_pages)), out_tsv=s.output.tsv,
                   failed=qcpages.failed_counts(s.params.out_dir))
print(f"{s.output.html}: {len(s.input.metrics)} visits in {time.perf_counter() - t0:.3f} s")
