"""Benchmark of the approximate-EM E-step: throughput, its ratio to a plain loop, scaling, pruning.

For each backend × method (fft, matmul): E-step throughput in patch·rotation·shift
evaluations per second (log-likelihoods, float64 log-sum-exp, responsibilities and the
M-step statistics n_ωs, b_ω — the whole per-iteration work on the data), and the fraction
of the machine's capability measured in the same run:

* matmul method: achieved GFLOP/s (4·L² flops per evaluation: 2·L² for the cross term,
  2·L² for the back-projection) ÷ the GFLOP/s of a 1024³ float64 matrix product;
* fft method: achieved (patch, rotation) pairs/s ÷ the pairs/s of a plain batched
  irfft2(rfft2(·)) on images of the transform's size (numpy: the fused path's M×M lag grid,
  M = 21 at L = 11; torch: 2L×2L) — the fused path does one inverse and one forward 2-D
  transform per pair.

Reference (always printed): a plain implementation — a Python loop over (patch, rotation)
pairs with one numpy FFT cross-correlation each, then a log-sum-exp, no statistics — on a
subset (``--ref-pairs``), timed in alternating rounds with the **default** E-step
(numpy, ``method: auto``, ``--threads``) on all patches; the ratio of their evaluations/s.
``--scaling``: time vs patches, vs rotations, and the M-step vs rotations. ``--prune ε…``:
batch EM on a simulated micrograph with and without rotation pruning (:func:`prune_study`).
Everything is printed and written as JSON (``--out``).

    OMP_NUM_THREADS=2 python benchmarks/em3d.py --L 11 --patches 128 --rotations 576 \
        --backends numpy --methods fft matmul --rounds 5 --threads 1 --out em3d_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import scipy.fft
import scipy.special

from cryomtd.em3d import ProjectionModel, Statistics, estep_batch, get_backend, mstep, projection_spectra
from cryomtd.em3d.backend import FFT_LIBRARY
from cryomtd.em3d.estep import CHUNK_ELEMENTS, auto_method, batch_sizes, fft_size


def best_time(f, repeat: int = 3, sync=lambda: None) -> float:
    f()
    sync()
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_gflops(xp, n: int = 1024) -> float:
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n)), "float64")
    return 2 * n**3 / best_time(lambda: a @ a, sync=xp.sync) / 1e9


def fft_pairs_per_s(xp, L: int, batch: int, size: int | None = None) -> float:
    """rfft2 + irfft2 pairs per second on (batch, n, n) float64 images (n = ``size``, default 2L)."""
    n = 2 * L if size is None else size
    a = xp.asarray(np.random.default_rng(0).standard_normal((batch, n, n)), "float64")
    return batch / best_time(lambda: xp.irfft2(xp.rfft2(a), (n, n)), sync=xp.sync)


def reference_estep(patches, proj, sigma, log_rho, log_pi):
    """Plain loop over (patch, rotation): one FFT cross-correlation each, then log-sum-exp."""
    P, L = patches.shape[0], patches.shape[1]
    R = proj.shape[0]
    mask = np.zeros((2 * L, 2 * L))
    mask[:L, :L] = 1
    ll = np.empty((P, R, 2 * L, 2 * L))
    for r in range(R):
        z = np.zeros((2 * L, 2 * L))
        z[:L, :L] = proj[r]
        norm = np.fft.irfft2(np.fft.rfft2(mask) * np.conj(np.fft.rfft2(z * z)), s=(2 * L, 2 * L))
        zh = np.conj(np.fft.rfft2(z))
        for i in range(P):
            Y = np.zeros((2 * L, 2 * L))
            Y[:L, :L] = patches[i]
            cross = np.fft.irfft2(np.fft.rfft2(Y) * zh, s=(2 * L, 2 * L))
            ll[i, r] = (cross - 0.5 * norm - 0.5 * np.sum(patches[i] ** 2)) / sigma**2 + log_rho + log_pi[r]
    return scipy.special.logsumexp(ll, axis=(1, 2, 3))


def random_model(L: int, ell_max: int, seed: int = 0) -> ProjectionModel:
    S = [max(1, (L // 2) - l // 2) for l in range(ell_max + 1)]
    ell = np.concatenate([np.full(s * (2 * l + 1), l) for l, s in enumerate(S)])
    radial = np.concatenate([np.repeat(np.arange(1, s + 1), 2 * l + 1) for l, s in enumerate(S)])
    return ProjectionModel(np.random.default_rng(seed).standard_normal((L * L, ell.size)), ell, radial, L)


def random_wigner(n: int, ell_max: int, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    return [np.linalg.qr(rng.standard_normal((n, 2 * l + 1, 2 * l + 1)))[0] for l in range(ell_max + 1)]


def estep_time(xp, method, patches, proj, memory_mb, repeat=2):
    L = patches.shape[-1]
    R = proj.shape[0]
    log_rho = np.full((2 * L, 2 * L), -np.log(4 * L * L))
    log_pi = np.full(R, -np.log(R))
    P_batch, rot_chunk = batch_sizes(R, L, memory_mb)

    def go():
        sp = projection_spectra(proj, log_rho, log_pi, xp, method, stack_mb=memory_mb / 4)
        st = Statistics.zeros(R, L)
        for p0 in range(0, patches.shape[0], P_batch):
            st.add(estep_batch(patches[p0 : p0 + P_batch], sp, 1.0, xp, rot_chunk))
        return st

    return best_time(go, repeat=repeat, sync=xp.sync)


def prune_study(args, ref_rate: float) -> dict:
    """Batch EM on one simulated micrograph (the talk's setting: ``--prune-volume`` at L = 11,
    ℓmax = 10, γ = 0.4 non-overlapping, 30° grid), started from the truth low-passed to ℓ ≤ 2 (a
    stand-in for the method-of-moments start), with and without rotation pruning (prune_after
    = 2): per iteration the E-step seconds, the fraction of (patch, rotation) pairs evaluated,
    the E-step's (patch, rotation) throughput against the plain loop's, and the pruned run's
    difference from the full one (log-likelihood, coefficients)."""
    import logging

    from cryomtd import simulate
    from cryomtd.basis import SphericalBessel
    from cryomtd.em3d import run
    from cryomtd.volume import prepare_volume

    L, ell_max = args.L, args.ell_max
    prep = prepare_volume(args.prune_volume, L, ell_max=ell_max)
    basis = SphericalBessel(L, ell_max)
    x0 = np.where(basis.ell <= 2, prep.coef, 0.0)
    fractions: list[float] = []

    class Grab(logging.Handler):
        def emit(self, record):
            if "pruning" in record.getMessage():
                fractions.append(float(record.args[1]))

    logger = logging.getLogger("cryomtd.em3d")
    logger.addHandler(Grab())
    logger.setLevel(logging.INFO)
    result = {"size": args.prune_size, "volume": args.prune_volume, "runs": []}
    for snr in args.prune_snr:
        m = simulate.micrograph(
            prep.coef, args.prune_size, gamma=0.4, snr=snr, seed=0, spacing="nonoverlapping", basis=basis
        )
        kw = dict(sigma=m.sigma, grid_step=30.0, iterations=args.prune_iterations, x0=x0, tol=0, seed=0)
        kw.update(backend="numpy", threads=args.threads, show_progress=False)
        full = run([m.image], basis, **kw)
        R = 576
        for eps in args.prune:
            fractions.clear()
            pr = run([m.image], basis, prune=eps, prune_after=2, **kw)
            rows = []
            for k in range(args.prune_iterations):
                pairs = pr.n_patches * R
                rows.append(
                    {
                        "iteration": k + 1,
                        "evaluated_fraction": fractions[k],
                        "estep_s_full": full.estep_s[k],
                        "estep_s_pruned": pr.estep_s[k],
                        "ratio_full_vs_plain": pairs * 4 * L * L / full.estep_s[k] / ref_rate,
                        "ratio_pruned_vs_plain": pairs * 4 * L * L / pr.estep_s[k] / ref_rate,
                        "loglik_full": full.loglik[k],
                        "loglik_rel_diff": abs(pr.loglik[k] - full.loglik[k]) / abs(full.loglik[k]),
                    }
                )
            coef_diff = float(np.linalg.norm(pr.coef - full.coef) / np.linalg.norm(full.coef))
            result["runs"].append(
                {"snr": snr, "epsilon": eps, "patches": pr.n_patches, "iterations": rows, "coef_rel_diff": coef_diff}
            )
            print(f"pruning study, SNR {snr}, ε = {eps:g}, {pr.n_patches} patches × {R} rotations:")
            for r in rows:
                print(
                    f"  it {r['iteration']}: evaluated {r['evaluated_fraction']:.4f}  E full {r['estep_s_full']:.2f}s "
                    f"(×{r['ratio_full_vs_plain']:.1f})  pruned {r['estep_s_pruned']:.2f}s "
                    f"(×{r['ratio_pruned_vs_plain']:.1f} the plain loop)  Δloglik/|loglik| {r['loglik_rel_diff']:.2e}"
                )
            print(f"  final coefficients: ‖pruned − full‖/‖full‖ = {coef_diff:.2e}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, default=11)
    ap.add_argument("--ell-max", type=int, default=10)
    ap.add_argument("--patches", type=int, default=256)
    ap.add_argument("--rotations", type=int, default=576)
    ap.add_argument("--backends", nargs="+", default=["numpy", "torch-cpu"])
    ap.add_argument("--methods", nargs="+", default=["fft", "matmul"])
    ap.add_argument("--memory-mb", type=float, default=1024)
    ap.add_argument("--ref-pairs", type=int, default=1152, help="(patch, rotation) pairs timed for the plain reference")
    ap.add_argument("--rounds", type=int, default=3, help="alternating reference / default E-step timings (best)")
    ap.add_argument("--threads", type=int, default=2, help="threads of the default E-step (em.advanced.threads)")
    ap.add_argument("--scaling", action="store_true", help="also time vs patches, vs rotations, and the M-step")
    ap.add_argument("--prune", type=float, nargs="*", default=[], help="ε of the pruning study (none: skipped)")
    ap.add_argument("--prune-size", type=int, default=330, help="pruning study: micrograph side")
    ap.add_argument("--prune-snr", type=float, nargs="+", default=[3.5, 1.0], help="pruning study: SNRs")
    ap.add_argument("--prune-iterations", type=int, default=5, help="pruning study: EM iterations per run")
    ap.add_argument("--prune-volume", default="shepp_logan", help="pruning study: volume source")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    L, R, P = args.L, args.rotations, args.patches
    rng = np.random.default_rng(0)
    patches = rng.standard_normal((P, L, L))
    proj = rng.standard_normal((R, L, L))
    evals = P * R * 4 * L * L
    out = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg": os.getloadavg(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "L": L,
        "patches": P,
        "rotations": R,
        "shifts": 4 * L * L,
        "results": [],
    }
    print(f"L={L}  patches={P}  rotations={R}  shifts={4 * L * L}  evaluations={evals:.3g}  load={os.getloadavg()}")
    for backend in args.backends:
        try:
            xp = get_backend(backend)
        except (ImportError, RuntimeError) as exc:
            print(f"{backend}: skipped ({exc})")
            continue
        peak = matmul_gflops(xp)
        P_batch, rot_chunk = batch_sizes(R, L, args.memory_mb)
        M = fft_size(2 * L - 1) if xp.name == "numpy" else 2 * L  # the fused path's lag grid (numpy)
        fftrate = fft_pairs_per_s(xp, L, min(P_batch, P) * max(1, min(rot_chunk, CHUNK_ELEMENTS // (P * M * M))), M)
        for method in args.methods:
            t = estep_time(xp, method, patches, proj, args.memory_mb)
            rate = evals / t
            if method == "matmul":
                frac = rate * 4 * L * L / 1e9 / peak
                cap = f"{rate * 4 * L * L / 1e9:.2f} GFLOP/s of {peak:.1f} matmul peak"
            else:
                frac = (P * R / t) / fftrate
                cap = f"{P * R / t:.3g} (patch, rotation) pairs/s of {fftrate:.3g} plain batched {M}×{M} FFT pairs/s"
            row = {
                "backend": backend,
                "method": method,
                "seconds": t,
                "evals_per_s": rate,
                "fraction": frac,
                "matmul_gflops": peak,
                "fft_pairs_per_s": fftrate,
            }
            out["results"].append(row)
            print(f"{backend:10s} {method:7s} {t:8.3f} s  {rate / 1e6:8.2f} M eval/s  {cap}  → fraction {frac:.2f}")

    # plain reference on a subset, interleaved with the default vectorised E-step on the whole
    # batch (same process, alternating rounds, best of each): per-(patch, rotation) throughput
    n_ref = max(1, min(P, args.ref_pairs // R)) if args.ref_pairs >= R else 1
    r_ref = R if args.ref_pairs >= R else args.ref_pairs
    sub_p, sub_r = patches[:n_ref], proj[:r_ref]
    log_rho = np.full((2 * L, 2 * L), -np.log(4 * L * L))
    xp = get_backend("numpy", workers=args.threads)
    method = auto_method(xp)
    P_batch, rot_chunk = batch_sizes(R, L, args.memory_mb)
    log_pi_ref = np.full(r_ref, -np.log(r_ref))
    t_ref, t_def = np.inf, np.inf
    for _ in range(args.rounds):
        t_ref = min(t_ref, best_time(lambda: reference_estep(sub_p, sub_r, 1.0, log_rho, log_pi_ref), repeat=1))
        t_def = min(t_def, estep_time(xp, method, patches, proj, args.memory_mb))
    ref_rate = n_ref * r_ref * 4 * L * L / t_ref
    def_rate = evals / t_def
    M = fft_size(2 * L - 1)
    Pb = min(P_batch, P)
    plain = fft_pairs_per_s(xp, L, Pb * max(1, min(rot_chunk, CHUNK_ELEMENTS // (Pb * M * M))), M)
    out["reference"] = {
        "patches": n_ref,
        "rotations": r_ref,
        "seconds": t_ref,
        "evals_per_s": ref_rate,
        "default": {
            "backend": "numpy",
            "method": method,
            "threads": args.threads,
            "fft_library": FFT_LIBRARY,
            "seconds": t_def,
            "evals_per_s": def_rate,
            "pairs_per_s": P * R / t_def,
            "plain_fft_pairs_per_s": plain,
            "fft_fraction": (P * R / t_def) / plain,
        },
        "ratio": def_rate / ref_rate,
    }
    print(
        f"plain loop over (patch, rotation) on {n_ref}×{r_ref}: {ref_rate / 1e6:.2f} M eval/s; default E-step "
        f"(numpy {method}, {FFT_LIBRARY}, {args.threads} threads) on {P}×{R}: {def_rate / 1e6:.2f} M eval/s "
        f"= ×{def_rate / ref_rate:.1f} the plain loop; {P * R / t_def:.3g} (patch, rotation) pairs/s = "
        f"{(P * R / t_def) / plain:.2f} of a plain batched {M}×{M} c2r+r2c pair ({plain:.3g}/s)"
    )

    if args.scaling:
        xp = get_backend("numpy")
        method = auto_method(xp)
        sc = {"method": method, "vs_patches": [], "vs_rotations": [], "mstep_vs_rotations": []}
        for p in (P // 4, P // 2, P):
            t = estep_time(xp, method, patches[:p], proj, args.memory_mb)
            sc["vs_patches"].append([p, t])
            print(f"E-step {method}: {p} patches × {R} rotations: {t:.3f} s")
        for r in (R // 4, R // 2, R):
            t = estep_time(xp, method, patches, proj[:r], args.memory_mb)
            sc["vs_rotations"].append([r, t])
            print(f"E-step {method}: {P} patches × {r} rotations: {t:.3f} s")
        model = random_model(L, args.ell_max)
        for r in (R // 4, R // 2, R):
            wig = random_wigner(r, args.ell_max)
            st = Statistics(float(P), 0.0, rng.random((r, 2 * L, 2 * L)), rng.standard_normal((r, L, L)))
            t = best_time(lambda st=st, wig=wig: mstep(st, model, wig, 1.0), repeat=1)
            sc["mstep_vs_rotations"].append([r, t])
            print(f"M-step: size {model.size}, {r} rotations: {t:.3f} s")
        out["scaling"] = sc
    if args.prune:
        out["pruning"] = prune_study(args, ref_rate)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
