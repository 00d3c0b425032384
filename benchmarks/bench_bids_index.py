"""BIDS indexing time for N subjects (default 10,000), neurosmk's scandir indexer side by side
with a naive baseline (pathlib glob over the same tree).

    .venv/bin/python benchmarks/bench_bids_index.py [N]
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


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
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
