"""BIDS indexing time for N subjects (default 10,000), neurosmk's scandir indexer side by side
with a naive baseline (pathlib glob over the same tree).

    .venv/bin/python benchmarks/bench_bids_index.py [N]
    .venv/bin/python benchmarks/bench_bids_index.py N --headers   # + the start-up input checks

--headers also times the header-level input checks (neurosmk.bids.validate_inputs) on N subjects
with real-size images (benchmarks/bench_dag.py's symlinked T1w and DWI), first (no cache) and
again (size+mtime cache), in wall and CPU seconds.
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from neurosmk.bids import index_bids, pick_dwi, pick_t1w  # noqa: E402


def make_tree(root: Path, n: int) -> None:
    for i in range(n):
        s = f"sub-{i:05d}"
        (root / s / "anat").mkdir(parents=True)
        (root / s / "dwi").mkdir()
        (root / s / "anat" / f"{s}_T1w.nii.gz").touch()
        (root / s / "anat" / f"{s}_T1w.json").touch()
        for ext in (".nii.gz", ".bval", ".bvec", ".json"):
            (root / s / "dwi" / f"{s}_dwi{ext}").touch()


def bench_headers(n: int) -> None:
    from bench_dag import make_bids, real_size_images

    from neurosmk.bids import validate_inputs

    files = real_size_images()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent / "_work") as td:
        td = Path(td)
        make_bids(td / "bids", n, files)
        print(f"{'header checks, ' + str(n) + ' real-size subjects':<40}{'wall s':>9}{'CPU s':>9}")
        for label in ("first (no cache)", "again (cached)"):
            t, c = time.perf_counter(), time.process_time()
            validate_inputs(index_bids(td / "bids"), cache_path=str(td / "cache.json"))
            print(f"{'index + checks, ' + label:<40}{time.perf_counter() - t:>9.2f}{time.process_time() - c:>9.2f}")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    if "--headers" in sys.argv:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        bench_headers(n)
        return
    with tempfile.TemporaryDirectory() as td:
        root = Path(td)
        t = time.perf_counter()
        make_tree(root, n)
        print(f"built {n} subjects ({n * 6} files) in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        idx = index_bids(root)
        sel = [(pick_t1w(v), pick_dwi(v)) for v in idx.visits.values()]
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        t1 = sorted(root.glob("sub-*/anat/*_T1w.nii*"))
        dwi = sorted(root.glob("sub-*/dwi/*_dwi.nii*"))
        for d in dwi:
            stem = str(d)[: -len(".nii.gz")]
            Path(stem + ".bval").exists() and Path(stem + ".bvec").exists()
        t_glob = time.perf_counter() - t
        assert len(sel) == n and len(t1) == n
        print(f"{'indexer':<32}{'seconds':>10}")
        print(f"{'neurosmk.bids.index_bids':<32}{t_ours:>10.3f}")
        print(f"{'pathlib glob + exists (baseline)':<32}{t_glob:>10.3f}")
        print(f"goal: < 10 s for 10,000 subjects -> {'met' if t_ours < 10 else 'NOT met'}")


if __name__ == "__main__":
    main()
