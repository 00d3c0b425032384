"""PyTorch backends, batched over voxels: method ``torch`` of dwi.tensor and of dwi.denoise.

Both run on CUDA when a GPU is visible (``device: auto``) and on the CPU otherwise. The tensor fit computes the
same estimator as DIPY 1.12.1's ``TensorModel(fit_method="WLS")`` (``dipy.reconst.dti``):

1. signals in the mask are clipped below at 1e-4 (DIPY's ``MIN_POSITIVE_SIGNAL``), y = log S;
2. OLS: b_ols = pinv(X) y with DIPY's design matrix X (``design_matrix(gtab)``, 7 columns:
   Dxx, Dxy, Dyy, Dxz, Dyz, Dzz, log S0; ``ols_fit_tensor``);
3. WLS (``wls_fit_tensor``): weights w = exp(X b_ols), the OLS-predicted signal, and one refit
   min ||w * (X b - y)||^2 per voxel (DIPY takes pinv(w X) per voxel; here a batched QR least
   squares, the same solution because w > 0 and X has full column rank, which is checked);
4. eigen-decomposition of the symmetric tensor, eigenvalues sorted in decreasing order and
   clipped below at 1e-6 / max(-X) (DIPY's ``eig_from_lo_tri``).

All arithmetic is float64 on either device. The eigenvalues/eigenvectors are wrapped in a DIPY
``TensorFit`` and written by :func:`neurosmk.dwi.write_tensor_maps`, the code the DIPY backend
uses, so FA/MD/AD/RD/RGB/V1 follow one set of conventions. Eigenvector signs are arbitrary in
both backends (compare V1 with |dot|).

The MP-PCA denoising (:func:`mppca`) reimplements DIPY's ``mppca`` the same way; see there.

PyTorch is an optional extra: ``pip install 'neurosmk[gpu]'`` (torch==2.13.0).
"""

from __future__ import annotations

import numpy as np

from .io import InputError, load_nifti

MIN_POSITIVE_SIGNAL = 1e-4  # dipy.reconst.dti.MIN_POSITIVE_SIGNAL
FIT_METHODS = ("WLS", "OLS")
DEVICES = ("auto", "cpu", "cuda")
INSTALL = "pip install 'neurosmk[gpu]' (torch==2.13.0)"


def import_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError(f"dwi.tensor method 'torch' needs PyTorch: {INSTALL}") from exc
    return torch


def pick_device(requested: str = "auto", key: str = "dwi.tensor.device"):
    """``auto``: the first CUDA device if one is visible, else the CPU; ``cuda`` fails without one."""
    torch = import_torch()
    if requested not in DEVICES:
        raise ValueError(f"config key '{key}': {requested!r} is not one of {', '.join(DEVICES)}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"config key '{key}' is 'cuda' but PyTorch {torch.__version__} sees no CUDA device "
            f"(CUDA_VISIBLE_DEVICES={__import__('os').environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}, "
            f"torch built with CUDA: {torch.version.cuda or 'no'}); use device 'auto' or 'cpu', or run the "
            "job where a GPU is allocated (--resources gpu=1 / profiles/slurm-gpu)")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", 0)


def design_matrix(gtab, source: str = "bval/bvec") -> np.ndarray:
    """DIPY's DTI design matrix (g, 7); raises InputError when it cannot determine a tensor."""
    from dipy.reconst.dti import design_matrix as dipy_design

    X = dipy_design(gtab)
    rank = np.linalg.matrix_rank(X)
    if rank < X.shape[1]:
        raise InputError(source, f"the gradient table determines only {rank} of the 7 tensor parameters "
                                      "(a tensor fit needs a b=0 volume and >= 6 non-collinear directions)")
    return X


def fit_tensors(X: np.ndarray, signal: np.ndarray, fit_method: str = "WLS", device="cpu",
                batch_voxels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit one tensor per row of ``signal`` (n voxels, g volumes); return evals (n, 3), evecs (n, 3, 3).

    ``evecs[i, :, j]`` is the eigenvector of ``evals[i, j]`` (columns, as in DIPY), evals in
    decreasing order. Voxels are processed in batches to bound device memory.
    """
    torch = import_torch()
    fit_method = fit_method.upper()
    if fit_method not in FIT_METHODS:
        raise ValueError(f"config key 'dwi.tensor.fit_method': {fit_method!r} is not available with method "
                         f"'torch' (available: {', '.join(FIT_METHODS)}; NLLS/RT need method 'dipy')")
    device = torch.device(device)
    n, g = signal.shape
    if X.shape != (g, 7):
        raise ValueError(f"design matrix {X.shape} does not match {g} volumes")
    if batch_voxels is None:  # ~256 MiB for the weighted design of one batch
        batch_voxels = max(4096, (256 << 20) // (g * 7 * 8))
    f64 = torch.float64
    Xt = torch.as_tensor(X, dtype=f64, device=device)
    pinv = torch.as_tensor(np.linalg.pinv(X), dtype=f64, device=device)  # (7, g), as in ols_fit_tensor
    min_diffusivity = 1e-6 / -X.min()
    evals = np.empty((n, 3))
    evecs = np.empty((n, 3, 3))
    for start in range(0, n, batch_voxels):
        s = torch.as_tensor(signal[start:start + batch_voxels], device=device)
        y = torch.log(torch.clamp(s.to(f64), min=MIN_POSITIVE_SIGNAL))  # (b, g)
        beta = y @ pinv.T  # OLS (b, 7)
        if fit_method == "WLS":
            w = torch.exp(beta @ Xt.T)  # OLS-predicted signal (b, g)
            A = Xt.unsqueeze(0) * w.unsqueeze(-1)  # (b, g, 7)
            rhs = (w * y).unsqueeze(-1)  # (b, g, 1)
            beta = torch.linalg.lstsq(A, rhs, driver="gels").solution.squeeze(-1)
        dxx, dxy, dyy, dxz, dyz, dzz = beta[:, :6].unbind(-1)
        D = torch.stack([torch.stack([dxx, dxy, dxz], -1),
                         torch.stack([dxy, dyy, dyz], -1),
                         torch.stack([dxz, dyz, dzz], -1)], -2)
        lam, vec = torch.linalg.eigh(D)  # ascending
        lam = torch.flip(lam, dims=[-1]).clamp(min=min_diffusivity)
        vec = torch.flip(vec, dims=[-1])
        stop = start + lam.shape[0]
        evals[start:stop] = lam.cpu().numpy()
        evecs[start:stop] = vec.cpu().numpy()
    return evals, evecs


def tensor_fit_torch(in_file: str, bval: str, bvec: str, mask_file: str, out: dict[str, str],
                     fit_method: str = "WLS", device: str = "auto", threads: int | None = None) -> str:
    """Fit DTI with PyTorch and write the same maps as :func:`neurosmk.dwi.tensor_fit`.

    Returns the device used ("cpu" or "cuda:0") and records it with
    :func:`neurosmk.runtime.note` (``Device``, ``TorchVersion``) for the provenance sidecars.
    """
    from dipy.reconst.dti import TensorFit, TensorModel

    from .dwi import load_gradients, write_tensor_maps

    torch = import_torch()
    if threads:
        torch.set_num_threads(int(threads))
    dev = pick_device(device)
    img = load_nifti(in_file, ndim=4)
    mask = np.asanyarray(load_nifti(mask_file, ndim=3).dataobj) > 0
    if mask.shape != img.shape[:3]:
        raise InputError(mask_file, f"mask shape {mask.shape} differs from the DWI's {img.shape[:3]} ({in_file})")
    _, _, gtab = load_gradients(bval, bvec, img.shape[3])
    X = design_matrix(gtab, source=f"{bval} / {bvec}")
    data = img.get_fdata(dtype=np.float32)
    evals, evecs = fit_tensors(X, data[mask], fit_method=fit_method, device=dev)
    params = np.zeros(mask.shape + (12,))
    params[mask] = np.concatenate([evals[:, None, :], evecs], axis=1).reshape(-1, 12)
    fit = TensorFit(TensorModel(gtab, fit_method=fit_method), params)
    write_tensor_maps(fit, mask, img, out)
    return _note_device(torch, dev)


# ---- MP-PCA denoising --------------------------------------------------------------------------
def mppca(arr: np.ndarray, patch_radius: int = 2, device="cpu", batch_voxels: int = 4096):
    """DIPY 1.12.1 ``mppca(arr, patch_radius, return_sigma=True)`` in PyTorch, batched over patches.

    For every voxel at least ``patch_radius`` from the border (DIPY's ``genpca`` with no mask
    and ``pca_method="eig"``): PCA of its (2r+1)^3 x volumes patch, the noise variance from the
    Marchenko-Pastur classifier (``_pca_classifier``, vectorised: the largest c with
    L[c] - L[0] - 4 sqrt((c+1)/N) mean(L[:c+1]) <= 0), components below
    tau = (1 + sqrt(volumes/N))^2 var removed, and the patch estimates averaged with weights
    1 / (1 + volumes - removed). Float64 throughout (DIPY computes float32 input in float32).
    Returns (denoised, sigma) as float32 numpy arrays.
    """
    torch = import_torch()
    device = torch.device(device)
    if arr.ndim != 4:
        raise ValueError(f"MP-PCA needs a 4D array, got shape {arr.shape}")
    shape, dim = arr.shape[:3], arr.shape[3]
    pr = np.full(3, int(patch_radius))
    pr[np.array(shape) == 1] = 0
    ps = 2 * pr + 1
    if np.any((np.array(shape) != 1) & (np.array(shape) < ps)):
        raise ValueError(f"image {shape} is smaller than the MP-PCA patch {tuple(ps)}")
    n = int(np.prod(ps))
    if n == 1:
        raise ValueError("MP-PCA needs more than 1 voxel per patch: increase patch_radius")
    tau_factor2 = (1 + np.sqrt(dim / n)) ** 2
    f64 = torch.float64
    flat = torch.as_tensor(np.asarray(arr).reshape(-1, dim), dtype=f64, device=device)
    strides = torch.tensor([shape[1] * shape[2], shape[2], 1], device=device)
    grids = torch.meshgrid(*[torch.arange(-p, p + 1, device=device) for p in pr], indexing="ij")
    delta = (torch.stack([g.reshape(-1) for g in grids], 1) * strides).sum(1)  # (n,)
    cgrids = torch.meshgrid(*[torch.arange(p, s - p, device=device) for p, s in zip(pr, shape)], indexing="ij")
    centers = (torch.stack([g.reshape(-1) for g in cgrids], 1) * strides).sum(1)
    nvox = flat.shape[0]
    theta = torch.zeros(nvox, dtype=f64, device=device)
    thetax = torch.zeros((nvox, dim), dtype=f64, device=device)
    varsum = torch.zeros(nvox, dtype=f64, device=device)
    keep_l = min(dim, n - 1)  # the classifier drops the zero eigenvalues mean subtraction leaves
    cidx = torch.arange(keep_l, device=device, dtype=f64)
    for start in range(0, centers.numel(), batch_voxels):
        idx = centers[start:start + batch_voxels, None] + delta[None, :]  # (b, n)
        P = flat[idx]  # (b, n, dim)
        M = P.mean(1, keepdim=True)
        Xc = P - M
        C = Xc.transpose(1, 2) @ Xc / n
        d, W = torch.linalg.eigh(C)  # ascending
        L = d[:, dim - keep_l:]
        var_c = torch.cumsum(L, 1) / (cidx + 1)
        r = L - L[:, :1] - 4 * torch.sqrt((cidx + 1) / n) * var_c
        last_le = keep_l - 1 - torch.argmax(torch.flip(r <= 0, dims=[1]).to(torch.int8), dim=1)
        this_var = var_c.gather(1, last_le[:, None]).squeeze(1)
        keep = d >= (tau_factor2 * this_var)[:, None]
        ncomps = dim - keep.sum(1)
        Wk = W * keep[:, None, :]
        Xest = (Xc @ Wk) @ Wk.transpose(1, 2) + M
        th = 1.0 / (1.0 + dim - ncomps.to(f64))  # (b,)
        flat_idx = idx.reshape(-1)
        thb = th[:, None].expand(-1, n).reshape(-1)
        theta.index_add_(0, flat_idx, thb)
        thetax.index_add_(0, flat_idx, (Xest * th[:, None, None]).reshape(-1, dim))
        varsum.index_add_(0, flat_idx, (this_var * th)[:, None].expand(-1, n).reshape(-1))
    den = (thetax / theta[:, None]).clamp(min=0)
    sigma = torch.sqrt(varsum / theta)
    return (den.reshape(*shape, dim).cpu().numpy().astype(np.float32),
            sigma.reshape(shape).cpu().numpy().astype(np.float32))


def _note_device(torch, dev) -> str:
    from . import runtime

    used = "cpu" if dev.type == "cpu" else f"cuda:{dev.index or 0}"
    fields = {"Device": used, "TorchVersion": torch.__version__}
    if dev.type == "cuda":
        fields["DeviceName"] = torch.cuda.get_device_name(dev)
    runtime.note(**fields)
    return used


def denoise_mppca_torch(in_file: str, out_file: str, noise_file: str, patch_radius: int = 2,
                        device: str = "auto", threads: int | None = None) -> str:
    """Method ``torch`` of dwi.denoise: the same files as :func:`neurosmk.dwi.denoise_mppca`."""
    from .dwi import _save_like

    torch = import_torch()
    if threads:
        torch.set_num_threads(int(threads))
    dev = pick_device(device, key="dwi.denoise.device")
    img = load_nifti(in_file, ndim=4)
    den, sigma = mppca(img.get_fdata(dtype=np.float32), patch_radius=patch_radius, device=dev)
    _save_like(den, img, out_file)
    _save_like(sigma, img, noise_file)
    return _note_device(torch, dev)
