"""Input checks in two tiers.

Header tier (:func:`check_visit_headers`, run while Snakemake builds the DAG, cached by size
and mtime): only what is cheap to read — the NIfTI header (dimensions, voxel sizes, data type,
orientation codes) and the ``.bval``/``.bvec`` text. Its cost does not grow with image bytes, so
a bad header or gradient table stops the run at start, naming the file and the cause.

Data tier (:func:`check_visit_data`, run by the per-visit ``validate_anat``/``validate_dwi`` job,
rules/validate.smk): reads the voxels — readable data, non-finite values, constant (e.g. all
zero) images and volumes. It runs in parallel, as the first job of each subject's chain, so a bad
subject fails only its own jobs (``--keep-going`` finishes the rest of the cohort).

Every problem raises :class:`neurosmk.io.InputError` (``<file>: <cause>``).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os

from .io import InputError, write_json

UNIT_TOL = 1e-2          # |norm - 1| allowed for b > b0 gradient vectors (DIPY's gradient_table atol)
MIN_DWI_VOLUMES = 7      # a diffusion tensor has 6 unknowns plus S0
MIN_DW_DIRECTIONS = 6
MIN_T1W_DIM = 16         # voxels along each axis of an anatomical image (a "single-slice T1w" is refused)
# NIfTI datatype codes that neurosmk can process (real-valued integers and floats)
_REAL_DTYPES = {2: "uint8", 4: "int16", 8: "int32", 16: "float32", 64: "float64", 256: "int8",
                512: "uint16", 768: "uint32", 1024: "int64", 1280: "uint64"}


def settings_from_config(config: dict, methods: dict) -> dict:
    """The config values the checks depend on (also the cache fingerprint)."""
    from .backends import STEPS

    den = methods.get("dwi.denoise", "none")
    dcfg = config["dwi"]["denoise"]
    reads = STEPS["dwi.denoise"][den].config_keys if den in STEPS["dwi.denoise"] else ()  # the registry's
    if "patch_radius" in reads:
        r = int(dcfg["patch_radius"])
        window = [2 * r + 1] * 3
        why = f"dwi.denoise.patch_radius {r} (method {den}) needs {2 * r + 1} voxels along each axis"
    elif "extent" in reads:
        window = [int(e) for e in dcfg["extent"]]
        why = f"dwi.denoise.extent {window} (method {den}) needs at least that many voxels along the axes"
    else:
        window, why = [1, 1, 1], ""
    return {"b0_threshold": float(config["dwi"]["mask"]["b0_threshold"]), "dwi_min_dims": window,
            "dwi_min_dims_why": why}


DEFAULT_SETTINGS = {"b0_threshold": 50.0, "dwi_min_dims": [5, 5, 5],
                    "dwi_min_dims_why": "dwi.denoise.patch_radius 2 (method dipy_mppca) needs 5 voxels along each axis"}


# ---- header tier ------------------------------------------------------------------------------


def read_header(path: str):
    """The NIfTI-1/2 header of ``path``, reading only its first bytes (gzip or plain)."""
    import nibabel as nib
    import numpy as np

    if not os.path.exists(path):
        raise InputError(path, "file does not exist")
    if not (path.endswith(".nii") or path.endswith(".nii.gz")):
        raise InputError(path, "not a NIfTI file (expected .nii or .nii.gz)")
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as fh:
            raw = fh.read(540)
        if len(raw) < 348:
            raise ValueError(f"only {len(raw)} bytes, a NIfTI header has 348")
        size = int(np.frombuffer(raw[:4], "<i4")[0])
        # check=False: nibabel's check would silently "fix" zero/negative voxel sizes
        if size in (540, 0x1C020000):
            hdr = nib.Nifti2Header.from_fileobj(io.BytesIO(raw), check=False)
        else:
            hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]), check=False)
        if hdr["sizeof_hdr"] not in (348, 540) or bytes(hdr["magic"])[:3] not in (b"n+1", b"ni1", b"n+2", b"ni2"):
            raise ValueError(f"no NIfTI header (sizeof_hdr {int(hdr['sizeof_hdr'])}, magic {bytes(hdr['magic'])!r})")
    except Exception as exc:  # nibabel raises several types; gzip: OSError/EOFError
        raise InputError(path, f"cannot be read as NIfTI ({type(exc).__name__}: {exc})") from exc
    return hdr


def check_image_header(path: str, ndim: int, what: str, min_dims=None, min_dims_why: str = "") -> tuple:
    """Dimensions, voxel sizes, data type and orientation of one image; returns its shape."""
    import numpy as np

    hdr = read_header(path)
    shape = tuple(int(s) for s in hdr.get_data_shape())
    if len(shape) != ndim:
        raise InputError(path, f"a {what} must be {ndim}D, got {len(shape)}D with shape {shape}")
    if any(s < 1 for s in shape):
        raise InputError(path, f"{what} has no voxels (shape {shape})")
    code = int(hdr["datatype"])
    if code not in _REAL_DTYPES:
        raise InputError(path, f"{what} has NIfTI datatype {code} ({hdr.get_data_dtype()}); "
                               f"neurosmk reads real-valued integer or float images")
    zooms = [float(z) for z in hdr["pixdim"][1:4]]
    bad = [(ax, z) for ax, z in zip("ijk", zooms) if not (math.isfinite(z) and z > 0)]
    if bad:
        raise InputError(path, f"{what} has invalid voxel sizes {zooms} (pixdim along "
                               f"{', '.join(a for a, _ in bad)} is zero, negative or not finite)")
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    if qcode == 0 and scode == 0:
        raise InputError(path, f"{what} has no orientation (qform_code and sform_code are both 0): "
                               "its position in space is unknown; fix the header (e.g. fslorient or nibabel)")
    aff = hdr.get_sform() if scode > 0 else hdr.get_qform()
    if not np.all(np.isfinite(aff)) or abs(float(np.linalg.det(aff[:3, :3]))) < 1e-12:
        raise InputError(path, f"{what} has a singular or non-finite {'sform' if scode > 0 else 'qform'} "
                               f"affine {aff[:3].round(4).tolist()}")
    if min_dims is not None:
        small = [(ax, n, m) for ax, n, m in zip("ijk", shape[:3], min_dims) if n < m]
        if small:
            ax, n, m = small[0]
            raise InputError(path, f"{what} has {n} voxel(s) along {ax} (shape {shape}); "
                                   + (min_dims_why or f"at least {m} are needed along each axis"))
    return shape


def read_bval(path: str) -> "list[float]":
    try:
        with open(path) as fh:
            vals = [float(x) for x in fh.read().split()]
    except ValueError as exc:
        raise InputError(path, f"not a .bval file: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not a .bval text file: {exc}") from exc
    if not vals:
        raise InputError(path, "empty .bval file")
    return vals


def read_bvec(path: str) -> "list[list[float]]":
    try:
        with open(path) as fh:
            rows = [[float(x) for x in line.split()] for line in fh if line.strip()]
    except ValueError as exc:
        raise InputError(path, f"not a .bvec file: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not a .bvec text file: {exc}") from exc
    if len(rows) != 3 or len({len(r) for r in rows}) != 1:
        raise InputError(path, f"a .bvec file must have 3 rows of equal length, got {len(rows)} rows "
                               f"with lengths {[len(r) for r in rows]}")
    return rows


def _vols(idx: list[int], n: int = 5) -> str:
    s = ", ".join(str(i) for i in idx[:n])
    return s + (f" and {len(idx) - n} more" if len(idx) > n else "")


def check_gradients(bval_path: str, bvec_path: str, nvol: int, dwi_name: str, b0_threshold: float) -> dict:
    """The gradient table of a DWI series with ``nvol`` volumes; returns a summary."""
    bvals = read_bval(bval_path)
    bvecs = read_bvec(bvec_path)
    if len(bvals) != nvol:
        raise InputError(bval_path, f"{len(bvals)} b-values but the DWI series {dwi_name} has {nvol} volumes")
    if len(bvecs[0]) != nvol:
        raise InputError(bvec_path, f"{len(bvecs[0])} gradient directions but the DWI series {dwi_name} "
                                    f"has {nvol} volumes")
    nonfinite = [i for i, b in enumerate(bvals) if not math.isfinite(b)]
    if nonfinite:
        raise InputError(bval_path, f"non-finite b-value(s) (NaN/Inf) at volume(s) {_vols(nonfinite)}")
    negative = [i for i, b in enumerate(bvals) if b < 0]
    if negative:
        raise InputError(bval_path, f"negative b-value(s) {[bvals[i] for i in negative[:5]]} at volume(s) "
                                    f"{_vols(negative)}")
    b0 = [i for i, b in enumerate(bvals) if b <= b0_threshold]
    if not b0:
        raise InputError(bval_path, f"no b=0 volume (no b-value <= dwi.mask.b0_threshold {b0_threshold:g}; "
                                    f"smallest is {min(bvals):g}): the brain mask and the tensor fit need one")
    vec_nonfinite, vec_bad = [], []
    for i in range(nvol):
        v = (bvecs[0][i], bvecs[1][i], bvecs[2][i])
        if not all(math.isfinite(x) for x in v):
            vec_nonfinite.append(i)
        elif bvals[i] > b0_threshold and abs(math.sqrt(sum(x * x for x in v)) - 1.0) > UNIT_TOL:
            vec_bad.append(i)
    if vec_nonfinite:
        raise InputError(bvec_path, f"non-finite gradient vector(s) (NaN/Inf) at volume(s) {_vols(vec_nonfinite)}")
    if vec_bad:
        i = vec_bad[0]
        norm = math.sqrt(sum(bvecs[a][i] ** 2 for a in range(3)))
        raise InputError(bvec_path, f"gradient vector(s) of b > {b0_threshold:g} volume(s) {_vols(vec_bad)} are "
                                    f"not unit length (volume {i}: norm {norm:.4g}, b={bvals[i]:g}; "
                                    f"tolerance {UNIT_TOL:g})")
    if nvol < MIN_DWI_VOLUMES:
        raise InputError(bval_path, f"the DWI series {dwi_name} has {nvol} volume(s); a tensor fit needs "
                                    f"at least {MIN_DWI_VOLUMES} (one b=0 and {MIN_DW_DIRECTIONS} directions)")
    ndw = nvol - len(b0)
    if ndw < MIN_DW_DIRECTIONS:
        raise InputError(bval_path, f"{ndw} diffusion-weighted volume(s) (b > {b0_threshold:g}); a tensor fit "
                                    f"needs at least {MIN_DW_DIRECTIONS}")
    return {"volumes": nvol, "b0_volumes": len(b0), "bvals": sorted({round(b) for b in bvals})}


def check_t1w_header(path: str) -> tuple:
    return check_image_header(path, 3, "T1w image", [MIN_T1W_DIM] * 3,
                              f"an anatomical image needs at least {MIN_T1W_DIM} voxels along each axis")


def check_dwi_header(series, settings: dict = DEFAULT_SETTINGS) -> tuple:
    stem = series.nifti.rsplit(".nii", 1)[0]
    if series.bval is None:
        raise InputError(series.nifti, f"missing .bval file next to the DWI series (expected {stem}.bval)")
    if series.bvec is None:
        raise InputError(series.nifti, f"missing .bvec file next to the DWI series (expected {stem}.bvec)")
    shape = check_image_header(series.nifti, 4, "DWI series", settings["dwi_min_dims"],
                               settings["dwi_min_dims_why"])
    check_gradients(series.bval, series.bvec, shape[3], os.path.basename(series.nifti), settings["b0_threshold"])
    return shape


class HeaderCache:
    """Files whose header checks passed, keyed by path, size and mtime (ns) of each file of the
    group and the check settings; a JSON file under ``output_dir/.neurosmk/``."""

    def __init__(self, path: str | None, settings: dict):
        self.path = path
        self.fingerprint = json.dumps(settings, sort_keys=True)
        self.data: dict[str, list] = {}
        if path and os.path.exists(path):
            try:
                with open(path) as fh:
                    loaded = json.load(fh)
                if isinstance(loaded, dict) and loaded.get("settings") == self.fingerprint:
                    self.data = loaded.get("files", {})
            except (OSError, ValueError):
                self.data = {}
        self.dirty = False

    @staticmethod
    def _key(paths) -> list:
        out = []
        for p in paths:
            if p is None:
                out.append(None)
            else:
                st = os.stat(p)
                out.append([st.st_size, st.st_mtime_ns])
        return out

    def ok(self, paths) -> bool:
        try:
            return self.data.get(str(paths[0])) == self._key(paths)
        except FileNotFoundError:
            return False

    def mark(self, paths) -> None:
        self.data[str(paths[0])] = self._key(paths)
        self.dirty = True

    def save(self) -> None:
        if self.path and self.dirty:
            write_json(self.path, {"settings": self.fingerprint, "files": self.data}, indent=None)


def check_headers(visits, settings: dict = DEFAULT_SETTINGS, cache_path: str | None = None,
                  save_cache: bool = True) -> "HeaderCache":
    """Header tier for ``visits``: an iterable of (t1w path or None, DWISeries or None).
    ``save_cache`` False: read the cache only, and return it (the workflow saves it when jobs
    start, so a dry run, --lint or --list-rules writes nothing into output_dir)."""
    cache = HeaderCache(cache_path, settings)
    try:
        for t1, dwi in visits:
            if t1 and not cache.ok([t1]):
                check_t1w_header(t1)
                cache.mark([t1])
            if dwi:
                paths = [dwi.nifti, dwi.bval, dwi.bvec]
                if None in paths or not cache.ok(paths):
                    check_dwi_header(dwi, settings)
                    cache.mark(paths)
    finally:
        if save_cache:
            cache.save()
    return cache


# ---- data tier --------------------------------------------------------------------------------


def _load_data(path: str):
    """(image, voxel array): integer images unscaled (no NaN possible; scaling keeps constancy),
    others as stored/scaled floats."""
    import nibabel as nib
    import numpy as np

    try:
        img = nib.load(path)
        proxy = img.dataobj
        if np.issubdtype(img.get_data_dtype(), np.integer) and hasattr(proxy, "get_unscaled"):
            slope = proxy.slope
            data = proxy.get_unscaled() if (slope is None or slope != 0) else np.asanyarray(proxy)
        else:
            data = np.asanyarray(proxy)
    except Exception as exc:
        raise InputError(path, f"image data cannot be read ({type(exc).__name__}: {exc})") from exc
    return img, data


def _value_summary(data) -> dict:
    import numpy as np

    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        nbad = int(data.size - np.count_nonzero(finite))
        vals = data[finite] if nbad else data
    else:
        nbad, vals = 0, data
    if vals.size == 0:
        return {"nonfinite": nbad, "min": None, "max": None}
    return {"nonfinite": nbad, "min": float(vals.min()), "max": float(vals.max())}


def check_t1w_data(path: str) -> dict:
    """Voxel-level checks of a T1w image: readable, all finite, not constant."""
    _, data = _load_data(path)
    s = _value_summary(data)
    n = data.size
    if s["nonfinite"]:
        raise InputError(path, f"T1w image has {s['nonfinite']} non-finite (NaN/Inf) voxels of {n} "
                               f"({100 * s['nonfinite'] / n:.1f}%); neurosmk needs finite values everywhere")
    if s["min"] == s["max"]:
        what = "entirely zero" if s["min"] == 0 else f"constant (every voxel {s['min']:g})"
        raise InputError(path, f"T1w image is {what}: there is no anatomy in it")
    return {"shape": list(data.shape), "min": s["min"], "max": s["max"]}


def check_dwi_data(nifti: str, bval: str | None = None) -> dict:
    """Voxel-level checks of a DWI series, volume by volume: readable, finite, not constant."""
    import numpy as np

    _, data = _load_data(nifti)
    if data.ndim != 4:
        raise InputError(nifti, f"a DWI series must be 4D, got {data.ndim}D with shape {data.shape}")
    nvol = data.shape[3]
    nonfinite, constant = [], []
    lo, hi = math.inf, -math.inf
    for i in range(nvol):
        v = data[..., i]
        s = _value_summary(v)
        if s["nonfinite"]:
            nonfinite.append((i, s["nonfinite"]))
        if s["min"] is not None:
            lo, hi = min(lo, s["min"]), max(hi, s["max"])
            if s["min"] == s["max"] and not s["nonfinite"]:
                constant.append((i, s["min"]))
    nvox = int(np.prod(data.shape[:3]))
    if nonfinite:
        if len(nonfinite) == nvol and all(c == nvox for _, c in nonfinite):
            raise InputError(nifti, "DWI series is entirely NaN/Inf")
        desc = ", ".join(f"{i} ({c} of {nvox} voxels)" for i, c in nonfinite[:5])
        raise InputError(nifti, f"non-finite (NaN/Inf) values in volume(s) {desc}"
                                + (f" and {len(nonfinite) - 5} more" if len(nonfinite) > 5 else "")
                                + "; neurosmk needs finite values everywhere")
    if constant:
        if len(constant) == nvol and lo == hi:
            what = "entirely zero" if lo == 0 else f"constant (every voxel {lo:g})"
            raise InputError(nifti, f"DWI series is {what}")
        desc = ", ".join(f"{i} (every voxel {c:g})" for i, c in constant[:5])
        raise InputError(nifti, f"constant volume(s) {desc}"
                                + (f" and {len(constant) - 5} more" if len(constant) > 5 else "")
                                + ": an empty or dropped volume; remove it and its b-value/vector")
    return {"shape": list(data.shape), "min": lo, "max": hi}


def check_visit_data(t1w: str | None, dwi: dict | None) -> dict:
    """Data tier for one visit; ``dwi`` is {"nii", "bval", "bvec"} or None. Returns a report."""
    report = {}
    if t1w:
        report[os.path.basename(t1w)] = {"path": t1w, **check_t1w_data(t1w)}
    if dwi:
        report[os.path.basename(dwi["nii"])] = {"path": dwi["nii"], **check_dwi_data(dwi["nii"], dwi.get("bval"))}
    return report
