"""The 3-D moment model with the CTF (cryomtd.mom3d.ctfmodel): cost, kernel accuracy, and how far
the simulator's micrographs depart from the isolated-particle model.

    python benchmarks/mom3d_ctf.py cost --L 11 --ell-max 2 --window 6 --groups 1 2 4 --threads 2
    python benchmarks/mom3d_ctf.py kernel --L 11 --ell-max 2 --window 6
    python benchmarks/mom3d_ctf.py placement --micrographs 4 --size 1024 --threads 2

``cost``: one cost + gradient evaluation of the fit (``_Cost``, exact moments as data) with the
clean model and with CTF models of 1, 2, 4 defocus groups (1–2.5 µm, 300 kV, 3.85 Å/px), both
routes (invariants, quadrature), in one process (the ratio is the stable figure), plus the
models' construction time. ``kernel``: the model's change when the kernel's truncation radius
(G3) and FFT grid (h, g2) are doubled — the truncation error of the defaults. ``placement``:
noise-free CTF micrographs of ``cryomtd.simulate.micrograph`` (separated spacing, γ = 0.1, BPTI
11³ at 3.85 Å/px, ℓmax 4, one defocus per micrograph spread over 1–2.5 µm) against (i) the
isolated-particle prediction for the same particles (their clean box sums on the whole support
folded with that micrograph's kernels: only the placement — neighbours' overlapping tails and
the periodic filter's wrap at the edges — differs) and (ii) the model (exact SO(3) average,
all micrographs as pixel-weighted groups), W = 6; the clean micrographs (no CTF) give the
baseline of (ii) (the finite number of particles).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

PX = 3.85
DEFOCI = (10000.0, 15000.0, 20000.0, 25000.0)


def _basis_coef(L: int, ell_max: int):
    from cryomtd.basis import SphericalBessel
    from cryomtd.volume import from_structure

    b = SphericalBessel(L, ell_max)
    vol = from_structure("data/structures/5PTI.pdb", L, PX, 2 * PX)
    return b, b.expand(vol)


def _time(f, repeat: int) -> float:
    f()
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    return min(t)


def cost(args: argparse.Namespace) -> None:
    """Build every model first, then time their cost + gradient round-robin (``repeat`` rounds,
    minimum per model): the ratios then hold under a shared machine's changing load."""
    from cryomtd.ctf import CTF
    from cryomtd.mom3d.ctfmodel import CtfMixture
    from cryomtd.mom3d.fit import _Cost, crop_moments, make_model

    b, c = _basis_coef(args.L, args.ell_max)
    W = args.window
    print(f"L={args.L} ell_max={args.ell_max} size={b.size} W={W}, torch threads {torch.get_num_threads()}")
    cases = []
    for kind in args.kinds:
        for ng in [0, *args.groups]:
            mix = None
            if ng:
                d = np.linspace(10000.0, 25000.0, ng)
                mix = CtfMixture.of([(CTF(float(x)), 1.0) for x in d], PX)
            t0 = time.perf_counter()
            model = make_model(b, W, kind, None, mix)
            build = time.perf_counter() - t0
            data = crop_moments(model.numpy(c, 0.1), W)
            cases.append((kind, ng, build, _Cost(model, data, sigma=0.0, weights=(1, 1, 1), prior_weight=0.0)))
            print(f"built {kind} with {ng} group(s) in {build:.1f} s", flush=True)
    x0 = torch.as_tensor(c * 1.01)

    def step(cf: _Cost) -> float:
        x = x0.clone().requires_grad_(True)
        g = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
        t0 = time.perf_counter()
        torch.autograd.grad(cf(x, g), (x, g))
        return time.perf_counter() - t0

    best = [np.inf] * len(cases)
    for _ in range(args.repeat + 1):  # the first round warms up
        for i, case in enumerate(cases):
            best[i] = min(best[i], step(case[3]))
    print("| route | CTF groups | build (s) | cost + gradient (s) | / no CTF |")
    print("|---|---|---|---|---|")
    base = {}
    for (kind, ng, build, _), t in zip(cases, best, strict=True):
        base.setdefault(kind, t)
        print(f"| {kind} | {ng or 'none'} | {build:.1f} | {t:.4f} | {t / base[kind]:.2f} |")


def kernel(args: argparse.Namespace) -> None:
    from cryomtd.ctf import CTF
    from cryomtd.mom3d.ctfmodel import FFT_SIZE, CtfMixture, CtfQuadratureModel, default_radius

    b, c = _basis_coef(args.L, args.ell_max)
    W = args.window
    print("| defocus (µm) | delocalisation (px) | radius R (px) | a2: FFT 2× | a3: R vs 2R | a3: R/2 vs 2R |")
    print("|---|---|---|---|---|---|")
    for d in args.defoci:
        mix = CtfMixture.of(CTF(float(d)), PX)
        R = default_radius(mix)
        ref = CtfQuadratureModel(b, W, mix).numpy(c, 0.1)
        big = CtfQuadratureModel(b, W, mix, fft_size=2 * FFT_SIZE + 1).numpy(c, 0.1)  # 4051: odd
        wide = CtfQuadratureModel(b, W, mix, radius=2 * R).numpy(c, 0.1)
        half = CtfQuadratureModel(b, W, mix, radius=R // 2).numpy(c, 0.1)

        def rel(x, y):
            return np.linalg.norm(x - y) / np.linalg.norm(y)

        print(
            f"| {d / 1e4:.2f} | {mix.delocalisation:.1f} | {R} | {rel(ref.a2, big.a2):.1e} | "
            f"{rel(ref.a3, wide.a3):.1e} | {rel(half.a3, wide.a3):.1e} |",
            flush=True,
        )


def _box_sums_full(images: np.ndarray, n: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Σ over images (q, L, L) of Σp, Σ p p(+ℓ), Σ p p(+ℓ1) p(+ℓ2) on every lag |ℓ|∞ ≤ n−1 (dense)."""
    from cryomtd.mom3d.model import _weighted_gram

    P = torch.as_tensor(images)
    w = torch.ones(P.shape[0], dtype=torch.float64)
    K = 2 * n - 1
    m3 = torch.zeros(K * K, K * K, dtype=torch.float64)
    for s in range(0, P.shape[0], 256):
        m3 += _weighted_gram(P[s : s + 256], w[s : s + 256], n)
    m3 = m3.reshape((K,) * 4)
    L = images.shape[1]  # m2 by FFT: irfft2(|F|²)[ℓ] = Σ_r p[r] p[r+ℓ] (zero-padded, no wrap)
    M = L + K
    F = np.fft.rfft2(images, s=(M, M))
    ac = np.fft.irfft2(np.abs(F) ** 2, s=(M, M)).sum(axis=0)
    idx = np.arange(-(n - 1), n) % M
    m2 = ac[idx[:, None], idx[None, :]]
    return float(images.sum()), m2, m3.numpy()


def placement(args: argparse.Namespace) -> None:
    from cryomtd.ctf import CTF
    from cryomtd.mom3d.ctfmodel import CtfMixture, CtfQuadratureModel, ctf_kernels, filter_box_moments, support_side
    from cryomtd.mom3d.model import MomentModel
    from cryomtd.moments import autocorrelations_2d
    from cryomtd.rotations import euler_to_matrix
    from cryomtd.simulate import micrograph

    b, c = _basis_coef(args.L, args.ell_max)
    W, L = args.window, args.L
    n = support_side(b)
    U = W - 1 + n - 1
    defoci = np.linspace(10000.0, 25000.0, args.micrographs)

    def rel(x, y):
        return float(np.linalg.norm(np.asarray(x) - np.asarray(y)) / np.linalg.norm(y))

    rows = []
    emp_all, iso_all, emp0_all, w_all = [], [], [], []
    for k, d in enumerate(defoci):
        ctf = CTF(float(d))
        t0 = time.perf_counter()
        mic = micrograph(c, args.size, gamma=0.1, snr=None, seed=100 + k, basis=b, ctf=ctf, pixel_size=PX)
        mic0 = micrograph(c, args.size, gamma=0.1, snr=None, seed=100 + k, basis=b, pixel_size=PX)
        e = autocorrelations_2d(mic.image, W)
        e0 = autocorrelations_2d(mic0.image, W)
        p = mic.particles
        R = euler_to_matrix(p["rlnAngleRot"].to_numpy(), p["rlnAngleTilt"].to_numpy(), p["rlnAnglePsi"].to_numpy())
        imgs = np.asarray(b.project(c, R)).reshape(-1, L, L)
        o = (L - n) // 2
        imgs = imgs[:, o : o + n, o : o + n]
        m1, m2, m3 = _box_sums_full(imgs, n)
        (kern,) = ctf_kernels(CtfMixture.of(ctf, PX), U, U)
        f1, f2, f3 = filter_box_moments(m1, m2, m3, kern, W)
        npix = float(args.size**2)
        iso = (f1 / npix, f2 / npix, f3 / npix)
        emp = (float(e.a1), np.asarray(e.a2), np.asarray(e.a3))
        emp_all.append(emp)
        iso_all.append(iso)
        emp0_all.append((float(e0.a1), np.asarray(e0.a2), np.asarray(e0.a3)))
        w_all.append(npix)
        rows.append(
            (
                d,
                mic.ctf.delocalisation(PX),
                len(p),
                abs(emp[0] - iso[0]) / abs(iso[0]),
                rel(emp[1], iso[1]),
                rel(emp[2], iso[2]),
                time.perf_counter() - t0,
            )
        )
        print(
            f"micrograph {k}: defocus {d / 1e4:.2f} µm ({rows[-1][1]:.1f} px), {len(p)} particles: "
            f"simulated vs isolated a1 {rows[-1][3]:.1e} a2 {rows[-1][4]:.2e} a3 {rows[-1][5]:.2e} "
            f"({rows[-1][6]:.0f} s)",
            flush=True,
        )
    w = np.asarray(w_all) / np.sum(w_all)

    def merge(parts):
        return [sum(wi * pt[j] for wi, pt in zip(w, parts, strict=True)) for j in range(3)]

    emp, iso, emp0 = merge(emp_all), merge(iso_all), merge(emp0_all)
    gamma = float(np.mean([0.1]))  # target γ; the realised one is in the isolated prediction
    mix = CtfMixture.of([(CTF(float(d)), wi) for d, wi in zip(defoci, w, strict=True)], PX)
    model = CtfQuadratureModel(b, W, mix).numpy(c, gamma)
    clean = MomentModel(b, W).numpy(c, gamma)
    print()
    print("| comparison (merged, W = 6) | a1 | a2 | a3 |")
    print("|---|---|---|---|")
    print(
        f"| CTF micrographs vs isolated particles (same particles): placement | "
        f"{abs(emp[0] - iso[0]) / abs(iso[0]):.1e} | {rel(emp[1], iso[1]):.2e} | {rel(emp[2], iso[2]):.2e} |"
    )
    print(
        f"| CTF micrographs vs CTF model (placement + finite sample) | "
        f"{abs(emp[0] - model.a1) / abs(model.a1):.1e} | {rel(emp[1], model.a2):.2e} | {rel(emp[2], model.a3):.2e} |"
    )
    print(
        f"| isolated particles vs CTF model (finite sample) | "
        f"{abs(iso[0] - model.a1) / abs(model.a1):.1e} | {rel(iso[1], model.a2):.2e} | {rel(iso[2], model.a3):.2e} |"
    )
    print(
        f"| clean micrographs vs clean model (finite sample, no CTF) | "
        f"{abs(emp0[0] - clean.a1) / abs(clean.a1):.1e} | {rel(emp0[1], clean.a2):.2e} | {rel(emp0[2], clean.a3):.2e} |"
    )
    print(
        f"| CTF micrographs vs clean model (CTF ignored) | "
        f"{abs(emp[0] - clean.a1) / abs(clean.a1):.1e} | {rel(emp[1], clean.a2):.2e} | {rel(emp[2], clean.a3):.2e} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("cost", "kernel", "placement"):
        p = sub.add_parser(name)
        p.add_argument("--L", type=int, default=11)
        p.add_argument("--ell-max", type=int, default=2 if name != "placement" else 4)
        p.add_argument("--window", type=int, default=6)
        p.add_argument("--threads", type=int, default=2)
        if name == "cost":
            p.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4])
            p.add_argument("--kinds", nargs="+", default=["invariants", "quadrature"])
            p.add_argument("--repeat", type=int, default=5)
        if name == "kernel":
            p.add_argument("--defoci", type=float, nargs="+", default=[10000.0, 25000.0])
        if name == "placement":
            p.add_argument("--micrographs", type=int, default=4)
            p.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    {"cost": cost, "kernel": kernel, "placement": placement}[args.cmd](args)


if __name__ == "__main__":
    main()
