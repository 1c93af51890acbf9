"""The `approx_em` stage over files: micrographs + their JSON → em.npz, em.mrc, em_trace.json.

Shared by the workflow script (scripts/approx_em.py) and the CLI (``cryomtd em``).
The CTF comes from the experiment's CTF group table (``results/<exp>/ctf_groups.json``,
:class:`cryomtd.ctf.CtfGroupTable`): micrograph ``.../micrographs/{k}.mrc`` is the table's
name ``k`` (the file's stem), and EM compares its patches with the filtered projections of
its group (docs/em3d.md#ctf).
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

from cryomtd.io import InputError, read_json, read_npz, write_json
from cryomtd.layout import Layout
from cryomtd.settings import to_block

from .driver import EMResult, run
from .settings import EmSettings

__all__ = [
    "em_enabled",
    "em_inputs",
    "noise_and_box",
    "initial_coefficients",
    "micrograph_ctfs",
    "reconstruct",
    "write_outputs",
]

log = logging.getLogger("cryomtd.em3d")


def em_enabled(exp_cfg: Mapping[str, Any]) -> bool:
    """Whether an experiment runs approximate EM (its ``em.enabled``, default true)."""
    return EmSettings.from_config(exp_cfg.get("em")).enabled


def em_inputs(
    exp_cfg: Mapping[str, Any],
    exp: str,
    results: str,
    *,
    owner: str | None = None,
    indices: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Input files of rule ``approx_em`` for run ``exp``: micrographs/{k}.mrc and their side files
    of experiment ``owner`` (default ``exp``; a half run reads its experiment's) for k in
    ``indices`` (default: all ``micrographs.n_micrographs``); ``ctf_groups``, the run's CTF
    group table (rule ``ctf_groups``; it models no CTF when the data have none or with
    ``ctf: ignore``); ``lsq_npz`` (the run's own) when ``em.init`` is ``lsq``, or ``auto`` with
    the lsq stage enabled."""
    paths, src = Layout(results, exp), Layout(results, owner or exp)
    ks = list(indices) if indices is not None else list(range(int(exp_cfg["micrographs"]["n_micrographs"])))
    d: dict[str, Any] = {
        "micrographs": [src.micrograph(k) for k in ks],
        "infos": [src.micrograph_info(k) for k in ks],
        "ctf_groups": paths.ctf_groups,
    }
    init = EmSettings.from_config(exp_cfg.get("em")).init
    if init == "lsq" or (init == "auto" and exp_cfg.get("lsq", {}).get("enabled", True)):
        d["lsq_npz"] = paths.estimate("lsq")
    return d


#: Who writes a micrograph's side file (named when a field is missing).
WRITTEN_BY = "cryomtd prepare or simulate; or give --sigma and --L"


def noise_and_box(infos: Sequence[Mapping[str, Any]], names: Sequence[str]) -> tuple[float, int, float]:
    """(σ pooled as √mean σ², box L, pixel size Å) from micrograph JSON records.

    Each record needs ``sigma`` (a positive finite number: approximate EM needs noise) and
    ``L`` (a positive integer, the same in all); ``pixel_size`` is optional (positive,
    default 1 Å). Errors name the file and the field.
    """
    from cryomtd.io import number_field

    if not infos:
        raise InputError("approx_em: no micrograph JSON files given")
    sig, Ls, px = [], [], []
    for info, name in zip(infos, names):
        sig.append(number_field(info, "sigma", name, positive=True, written_by=WRITTEN_BY))
        Ls.append(number_field(info, "L", name, integer=True, positive=True, written_by=WRITTEN_BY))
        px.append(number_field(info, "pixel_size", name, positive=True, default=1.0))
    if len(set(Ls)) != 1:
        raise InputError(f"{names[0]}…: micrographs disagree on the box size L: {sorted(set(Ls))}")
    if max(px) - min(px) > 1e-6 * max(px):
        raise InputError(
            f"{names[0]}…: micrographs have different pixel sizes ({min(px):.4g}…{max(px):.4g} Å); "
            "resample them to one (data.pixel_size_out, cryomtd prepare --pixel-size-out)"
        )
    sigma = math.sqrt(float(np.mean(np.square(sig))))
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


def micrograph_records(
    micrographs: Sequence[str | os.PathLike],
    infos: Sequence[str | os.PathLike | Mapping[str, Any] | None] | None = None,
    *,
    sigma: float | None = None,
    L: int | None = None,
    pixel_size: float | None = None,
) -> list[dict[str, Any]]:
    """The side-file record of each micrograph: its JSON (a path, a dict, or None/absent file =
    empty), with ``sigma``, ``L`` and ``pixel_size`` replaced where given. A record still
    without a pixel size takes the micrograph's MRC header (an error names the file when the
    header has none either)."""
    from cryomtd.volume import read_image_mrc

    if infos is None:
        infos = [None] * len(micrographs)
    if len(micrographs) != len(infos):
        raise InputError(f"approx_em: {len(micrographs)} micrographs but {len(infos)} side files")
    records = []
    for mic, info in zip(micrographs, infos):
        if isinstance(info, Mapping):
            rec = dict(info)
        elif info is not None and (os.path.exists(info) or (sigma is None or L is None)):
            rec = dict(read_json(info))
        else:
            rec = {}
        rec.update({k: v for k, v in (("sigma", sigma), ("L", L), ("pixel_size", pixel_size)) if v is not None})
        if rec.get("pixel_size") is None and "sigma" in rec and "L" in rec:  # (missing σ, L: named first)
            header = read_image_mrc(mic)[1]
            if not header > 0:
                raise InputError(f"{mic}: no pixel size in the MRC header nor a side file; give --pixel-size (Å)")
            rec["pixel_size"] = float(header)
        records.append(rec)
    return records


def micrograph_ctfs(
    ctf_groups: str | os.PathLike | None, micrographs: Sequence[str | os.PathLike], pixel_size: float
) -> list | None:
    """The group CTF of each micrograph from the CTF group table file ``ctf_groups``
    (:class:`cryomtd.ctf.CtfGroupTable`; a micrograph's name is its file stem, ``k`` of
    ``micrographs/{k}.mrc``), or None when there is no table or it models no CTF. Errors
    (:class:`InputError`) name the table when a micrograph is missing from it or the pixel
    sizes disagree."""
    if ctf_groups is None:
        return None
    from cryomtd.ctf import CtfGroupTable

    table = CtfGroupTable.load(ctf_groups)
    if not table.modelled:
        log.info("approx_em: %s models no CTF (mode %s)", ctf_groups, table.mode)
        return None
    if abs(table.pixel_size - pixel_size) > 1e-4 * pixel_size:
        raise InputError(
            f"{ctf_groups}: pixel size {table.pixel_size:.6g} Å, the micrographs' side files say {pixel_size:.6g} Å"
        )
    ctfs = []
    for m in micrographs:
        name = Path(m).stem
        if name not in table.names:
            raise InputError(f"{ctf_groups}: micrograph {name!r} ({m}) is not in the CTF group table")
        ctfs.append(table.ctf_of(name))
    log.info(
        "approx_em: CTF modelled from %s: %d group(s), grouping phase error ≤ %.3g rad at Nyquist (tolerance %.3g)",
        ctf_groups,
        len(set(ctfs)),
        max(g.phase_error for g in table.groups),
        table.max_phase_error,
    )
    return ctfs


def reconstruct(
    micrographs: Sequence[str | os.PathLike],
    infos: Sequence[str | os.PathLike | Mapping[str, Any] | None] | None = None,
    *,
    settings: EmSettings | Mapping[str, Any] | None = None,
    ell_max: int | None = None,
    seed: int = 0,
    lsq_npz: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    show_progress: bool | None = None,
    sigma: float | None = None,
    L: int | None = None,
    pixel_size: float | None = None,
    ctf_groups: str | os.PathLike | None = None,
) -> tuple[EMResult, Any, float]:
    """Run EM with an experiment's ``em`` settings (an :class:`EmSettings` or the config block)
    in the basis ``SphericalBessel(L, ell_max)`` → (result, basis, pixel size Å).

    σ, L and the pixel size come from the micrographs' side files (``infos``), or from
    ``sigma``, ``L``, ``pixel_size`` (:func:`micrograph_records`). ``ctf_groups``: the CTF
    group table (None, or a table that models no CTF: EM without a CTF); see
    :func:`micrograph_ctfs`."""
    from cryomtd.basis import SphericalBessel

    settings = EmSettings.from_config(settings)
    records = micrograph_records(micrographs, infos, sigma=sigma, L=L, pixel_size=pixel_size)
    names = [str(i) if i is not None and not isinstance(i, Mapping) else str(m)
             for m, i in zip(micrographs, infos or [None] * len(micrographs))]  # fmt: skip
    sigma, L, pixel = noise_and_box(records, names)
    b = SphericalBessel(L, ell_max)
    x0 = initial_coefficients(lsq_npz, b.size)
    ctfs = micrograph_ctfs(ctf_groups, micrographs, pixel)
    res = run(
        list(micrographs),
        b,
        sigma=sigma,
        settings=settings,
        x0=x0,
        seed=int(seed),
        checkpoint=checkpoint,
        show_progress=show_progress,
        ctfs=ctfs,
        pixel_size=pixel,
    )
    log.info(
        "approx_em: %d patches, σ = %.4g, init = %s, %d iterations, loglik/patch %s",
        res.n_patches,
        sigma,
        "lsq" if x0 is not None else settings.init if settings.init == "random" else "ball",
        res.iterations,
        f"{res.loglik[-1]:.6g}" if res.loglik else "-",
    )
    return res, b, pixel


def write_outputs(
    res: EMResult,
    basis: Any,
    pixel_size: float,
    settings: EmSettings,
    *,
    npz: str | os.PathLike,
    mrc: str | os.PathLike,
    trace: str | os.PathLike,
) -> None:
    """em.npz (the common :class:`~cryomtd.estimate.Estimate` format; extra: rho, pi, objective,
    L, ell_max, voxel_size), em.mrc (basis.evaluate(coef)), em_trace.json."""
    from cryomtd.estimate import Estimate
    from cryomtd.volume import write_mrc

    label = "log-likelihood per patch"
    if settings.fraction < 1:
        label += f" (over each iteration's {settings.fraction:.0%} subset of patches)"
    Estimate(
        "em",
        coef=res.coef,
        gamma=res.gamma,
        trace=np.asarray(res.loglik),
        trace_label=label,
        wall_time_s=res.wall_time_s,
        settings=to_block(settings),
        extra={
            "rho": res.rho,
            "pi": res.pi,
            "objective": np.asarray(res.objective),
            "L": np.int64(basis.L),
            "ell_max": np.int64(basis.ell_max),
            "voxel_size": np.float64(pixel_size),
            **({} if res.ctf is None else {"ctf_box": np.int64(res.ctf["box"])}),
        },
    ).save(npz)
    write_mrc(mrc, basis.evaluate(res.coef), voxel_size=pixel_size)
    write_json(trace, res.trace())
