"""The `approx_em` stage over files: micrographs + their JSON → em.npz, em.mrc, em_trace.json.

Shared by the workflow script (scripts/approx_em.py) and the CLI (``cryomtd em``).
The basis is ``SphericalBessel(L, ell_max)`` with L from the micrographs' JSON (the
particle box) and ``ell_max`` from the experiment's ``basis`` block, the same basis the
simulator projected with; the noise level σ is the one the simulator recorded.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cryomtd.io import InputError, read_json, read_npz, save_npz, write_json

from .driver import EMResult, run

__all__ = ["em_enabled", "em_inputs", "noise_and_box", "initial_coefficients", "reconstruct", "write_outputs"]

log = logging.getLogger("cryomtd.em3d")


def em_enabled(exp_cfg: Mapping[str, Any]) -> bool:
    """Whether an experiment runs approximate EM (its ``em.enabled``, default true)."""
    return bool(exp_cfg.get("em", {}).get("enabled", True))


def em_inputs(exp_cfg: Mapping[str, Any], exp: str, results: str) -> dict[str, Any]:
    """Input files of rule ``approx_em``: micrographs/{k}.mrc and .json; ``lsq_npz`` when
    ``em.init`` is ``lsq``, or ``auto`` with the lsq stage enabled."""
    n = int(exp_cfg["micrographs"]["n_micrographs"])
    base = f"{results}/{exp}"
    d: dict[str, Any] = {"micrographs": [f"{base}/micrographs/{k}.mrc" for k in range(n)],
                         "infos": [f"{base}/micrographs/{k}.json" for k in range(n)]}
    init = exp_cfg.get("em", {}).get("init", "auto")
    if init == "lsq" or (init == "auto" and exp_cfg.get("lsq", {}).get("enabled", True)):
        d["lsq_npz"] = f"{base}/lsq.npz"
    return d


def noise_and_box(infos: Sequence[Mapping[str, Any]], names: Sequence[str]) -> tuple[float, int, float]:
    """(σ pooled as √mean σ², box L, pixel size Å) from micrograph JSON records."""
    if not infos:
        raise InputError("approx_em: no micrograph JSON files given")
    sig, Ls, px = [], [], []
    for info, name in zip(infos, names):
        for key in ("sigma", "L"):
            if key not in info:
                raise InputError(f"{name}: missing field {key!r} (written by simulate_micrograph)")
        sig.append(float(info["sigma"]))
        Ls.append(int(info["L"]))
        px.append(float(info.get("pixel_size", 1.0)))
    if len(set(Ls)) != 1:
        raise InputError(f"{names[0]}…: micrographs disagree on the box size L: {sorted(set(Ls))}")
    sigma = math.sqrt(float(np.mean(np.square(sig))))
    if not sigma > 0:
        raise InputError(f"{names[0]}: sigma = 0 (noise-free micrographs); approximate EM needs a positive noise level")
    if max(sig) - min(sig) > 1e-6 * sigma:
        log.warning("micrographs have different sigma (%.4g…%.4g); using the pooled %.4g", min(sig), max(sig), sigma)
    return sigma, Ls[0], px[0]


def initial_coefficients(lsq_npz: str | os.PathLike | None, size: int) -> np.ndarray | None:
    """Coefficients ``coef`` of the method-of-moments estimate, or None without a file."""
    if lsq_npz is None:
        return None
    path = Path(lsq_npz)
    z = read_npz(path, ("coef",), what="lsq estimate (em.init needs the lsq stage's output)")
    coef = np.asarray(z["coef"], dtype=np.float64).ravel()
    if coef.size != size:
        raise InputError(f"{path}: 'coef' has {coef.size} entries, the EM basis has {size}")
    return coef


def reconstruct(micrographs: Sequence[str | os.PathLike], infos: Sequence[str | os.PathLike], *,
                em: Mapping[str, Any], basis: Mapping[str, Any] | None = None, seed: int = 0,
                lsq_npz: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None,
                show_progress: bool | None = None) -> tuple[EMResult, Any, float]:
    """Run EM with the settings of an experiment's ``em`` block → (result, basis, pixel size)."""
    from cryomtd.basis import SphericalBessel

    if len(micrographs) != len(infos):
        raise InputError(f"approx_em: {len(micrographs)} micrographs but {len(infos)} JSON files")
    sigma, L, pixel = noise_and_box([read_json(p) for p in infos], [str(p) for p in infos])
    b = SphericalBessel(L, (basis or {}).get("ell_max"))
    x0 = initial_coefficients(lsq_npz, b.size)
    step = em.get("step", {})
    res = run(list(micrographs), b, sigma=sigma, grid_step=float(em.get("grid_step", 30.0)), x0=x0,
              iterations=int(em.get("iterations", 20)), fraction=float(em.get("fraction", 1.0)), seed=int(seed),
              tol=float(em.get("tol", 1e-6)), burn_in=int(step.get("burn_in", 3)), decay=float(step.get("decay", 0.6)),
              prior_weight=float(em.get("prior_weight", 0.0)),
              learn_rotation_prior=bool(em.get("learn_rotation_prior", False)), checkpoint=checkpoint,
              backend=str(em.get("backend", "auto")), dtype=str(em.get("dtype", "float64")),
              method=str(em.get("method", "auto")),
              memory_mb=float(em.get("memory_mb", 1024)), threads=int(em.get("threads", 1)),
              show_progress=show_progress)
    log.info("approx_em: %d patches, σ = %.4g, init = %s, %d iterations, loglik/patch %s",
             res.n_patches, sigma, "lsq" if x0 is not None else "random", res.iterations,
             f"{res.loglik[-1]:.6g}" if res.loglik else "-")
    return res, b, pixel


def write_outputs(res: EMResult, basis: Any, pixel_size: float, *, npz: str | os.PathLike,
                  mrc: str | os.PathLike, trace: str | os.PathLike) -> None:
    """em.npz (coef, rho, pi, loglik, L, ell_max), em.mrc (basis.evaluate(coef)), em_trace.json."""
    from cryomtd.volume import write_mrc

    save_npz(npz, coef=res.coef, rho=res.rho, pi=res.pi, loglik=np.asarray(res.loglik), L=int(basis.L),
             ell_max=int(basis.ell_max), voxel_size=float(pixel_size))
    write_mrc(mrc, basis.evaluate(res.coef), voxel_size=pixel_size)
    write_json(trace, res.trace())
