"""Benchmark of approximate EM with the CTF: per-iteration cost with and without it, and the
effect of the truncation t of the enlarged projection box (docs/em3d.md#ctf).

Three parts, all in one process (ratios are what to rely on; the machine is shared):

* ``cost``: the E- and M-step seconds of one EM iteration (``--repeat`` round-robin
  passes over all configurations, the best of them reported) on the same patches
  without a CTF, with one CTF group, and with G groups
  (defocus spread ``--defocus`` µm); the one-off set-up (kernels, operators, the rule);
  the cost against t at one group; and the same patches cut from 2 or 8 micrographs in one
  group (the cost follows groups, not micrographs).
* ``model``: how much of a clean CTF-filtered micrograph (the simulator's) the enlarged box
  of side L + 2t explains, for each t: 1 − ‖clean − Σ boxes‖²/‖clean‖² on noise-free
  micrographs of the volume (every particle's filtered projection restricted to its box,
  pasted back), next to the rule's filtered-ball energy fraction.
* ``em``: EM at high SNR (L = 7, three defocus groups) for each t: relative error and FSC
  to the truth after a few iterations from the truth low-passed to ℓ ≤ 1, and the seconds
  per iteration; with the CTF ignored and without a CTF in the data for reference.

    OMP_NUM_THREADS=2 python benchmarks/em3d_ctf.py --parts cost model em --out em3d_ctf.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from cryomtd import rotations, simulate
from cryomtd.basis import SphericalBessel
from cryomtd.ctf import CTF
from cryomtd.em3d import PatchSource, ProjectionModel, em, plan_ctf, truncation_radius
from cryomtd.volume import gaussian_blobs, prepare_volume


def cost(args) -> dict:
    """Per-iteration E/M seconds without a CTF, with 1 and G groups, against t, and 2 vs 8 micrographs."""
    L, px = args.L, args.pixel_size
    b = SphericalBessel(L, args.ell_max)
    model = ProjectionModel.from_basis(b)
    R = rotations.grid(args.grid_step)
    wig = [np.asarray(w) for w in b.wigner(R)]
    coef = b.expand(gaussian_blobs(L, 8, 0))
    side = L * args.tiles
    rng = np.random.default_rng(0)
    mics8 = [rng.standard_normal((side, side // 4 * 1)) for _ in range(8)]  # 8 strips = the same patches as 2×
    mics2 = [np.concatenate(mics8[4 * i : 4 * i + 4], axis=1) for i in range(2)]
    lo, hi = args.defocus
    defoci = list(np.linspace(lo, hi, args.groups) * 1e4)
    kw = dict(sigma=1.0, x0=coef, iterations=1, tol=0, backend="numpy", method=args.method, pixel_size=px)
    runs = []

    def one(name, mics, ctfs, t=None):
        src = PatchSource(mics, L)
        t0 = time.perf_counter()
        setup = plan_ctf(ctfs, src.shapes, L, px, truncation=t) if ctfs is not None else None
        t_setup = time.perf_counter() - t0
        res = em(src, model, wig, ctfs=ctfs, ctf_truncation=t, **kw)
        row = {
            "run": name,
            "micrographs": len(mics),
            "patches": src.n,
            "groups": 0 if setup is None else setup.n_groups,
            "t": 0 if setup is None else setup.truncation,
            "box": L if setup is None else setup.box,
            "shifts": (L + (L if setup is None else setup.box)) ** 2,
            "setup_s": t_setup,
            "estep_s": res.estep_s[-1],
            "mstep_s": res.mstep_s[-1],
            "load": os.getloadavg()[0],
        }
        row["iteration_s"] = row["estep_s"] + row["mstep_s"]
        runs.append(row)
        print(json.dumps(row), flush=True)

    configs = [("no CTF", mics2, None, None), (f"1 group ({hi} µm)", mics2, [CTF(hi * 1e4)] * 2, None)]
    configs += [
        (f"{args.groups} groups (8 micrographs)", mics8, [CTF(defoci[k % args.groups]) for k in range(8)], None)
    ]
    configs += [("1 group, 8 micrographs", mics8, [CTF(hi * 1e4)] * 8, None)]
    configs += [(f"1 group, t = {t}", mics2, [CTF(hi * 1e4)] * 2, t) for t in args.t_list]
    for _ in range(args.repeat):  # round robin: every configuration sees the machine's load alike
        for name, mics, ctfs, t in configs:
            one(name, mics, ctfs, t)
    best = {}
    for r in runs:  # best of the repeats per configuration (the least disturbed run)
        if r["run"] not in best or r["iteration_s"] < best[r["run"]]["iteration_s"]:
            best[r["run"]] = r
    base = best["no CTF"]
    for r in best.values():
        r["ratio_to_no_ctf"] = r["iteration_s"] / base["iteration_s"]
        r["estep_ratio"] = r["estep_s"] / base["estep_s"]
        r["mstep_ratio"] = r["mstep_s"] / base["mstep_s"]
    return {"L": L, "ell_max": args.ell_max, "basis_size": b.size, "rotations": len(R), "runs": runs,
            "best": list(best.values())}  # fmt: skip


def model_error(args) -> dict:
    """Energy of the clean filtered micrograph explained by boxes of side L + 2t, per t."""
    L, px = args.L, args.pixel_size
    out = {}
    for vol in args.volumes:
        source = {"bpti": os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                       "data/structures/5PTI.pdb")}.get(vol, vol)  # fmt: skip
        prep = prepare_volume(source, L, ell_max=args.ell_max, voxel_size=px if source == vol else None)
        pix = prep.voxel_size if source != vol else px
        b = SphericalBessel(L, args.ell_max)
        model = ProjectionModel.from_basis(b)
        rows = []
        for df in sorted({args.defocus[0], args.defocus[1]}):
            c = CTF(df * 1e4)
            t_rule, kept, deloc = truncation_radius(c, L, pix)
            size = 8 * (L + int(np.ceil(deloc)))
            m = simulate.micrograph(prep.coef, size, gamma=0.02, snr=None, seed=1, spacing=3 * L, basis=b,
                                    pixel_size=pix, ctf=c)  # fmt: skip
            Rm = rotations.euler_to_matrix(
                m.particles["rlnAngleRot"], m.particles["rlnAngleTilt"], m.particles["rlnAnglePsi"]
            )
            corners = np.stack([m.particles["y"], m.particles["x"]], 1).astype(int) - L // 2
            wig = [np.asarray(w) for w in b.wigner(Rm)]
            ts = sorted(set(args.t_list) | {t_rule, int(np.ceil(deloc))})
            for t in ts:
                ctf = plan_ctf([c], [(size, size)], L, pix, truncation=t)
                boxes = ctf.models(model)[0].project(prep.coef, wig)  # (n, B, B)
                recon = np.zeros((size, size))
                B = L + 2 * t
                for k in range(len(corners)):  # paste each box periodically (a benchmark, not a hot path)
                    ys = (np.arange(B) + corners[k, 0] - t) % size
                    xs = (np.arange(B) + corners[k, 1] - t) % size
                    recon[np.ix_(ys, xs)] += boxes[k]
                lost = float(np.sum((m.clean - recon) ** 2) / np.sum(m.clean**2))
                ball = float(plan_ctf([c], [(size, size)], L, pix, truncation=t).kept[0])
                row = {"volume": vol, "defocus_um": df, "pixel_size": pix, "delocalisation_px": deloc,
                       "t_rule": t_rule, "t": t, "explained": 1.0 - lost, "ball_energy": ball}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
        out[vol] = rows
    return out


def em_effect(args) -> dict:
    """EM at high SNR (L = 7, 5 Å, three defocus groups) for each truncation t."""
    from cryomtd.evaluate.align import relative_error
    from cryomtd.evaluate.fsc import fsc

    L, size, px = 7, args.em_size, 5.0
    b = SphericalBessel(L, 3)
    coef = b.expand(gaussian_blobs(L, 5, 0))
    truth = b.evaluate(coef)
    defoci = [d * 1e4 for d in args.em_defocus]
    rule = max(truncation_radius(CTF(d), L, px)[0] for d in defoci)
    spacing = 2 * L + 2 * rule - 1  # at most one filtered particle (box of the rule's t) per patch

    grid = rotations.grid(60)

    def data(with_ctf):
        if not args.em_exact:  # the simulator: Haar-random rotations (off the EM grid)
            return [simulate.micrograph(coef, size, gamma=args.em_gamma, snr=args.em_snr, seed=k, spacing=spacing,
                                        basis=b, pixel_size=px, ctf=CTF(df) if with_ctf else None)
                    for k, df in enumerate(defoci)]  # fmt: skip
        # rotations of the EM grid (no grid error, as tests/test_em3d.py's recovery test): the
        # simulator's placement and pasting, the whole micrograph filtered by apply_ctf, white noise
        from types import SimpleNamespace

        from cryomtd.ctf import apply_ctf

        energy = np.mean(np.sum(b.project(coef, rotations.random(500, 3)) ** 2, axis=(1, 2)))
        sigma = float(np.sqrt(energy / (L * L * args.em_snr)))
        out = []
        for k, df in enumerate(defoci):
            g = np.random.default_rng(k)
            n = int(round(args.em_gamma * size * size / L**2))
            corners = simulate.place_particles(size, L, n, spacing, g)
            clean = simulate.paste(size, corners, b.project(coef, grid[g.integers(len(grid), size=n)]))
            if with_ctf:
                clean = apply_ctf(clean, CTF(df), px)
            out.append(SimpleNamespace(image=clean + sigma * g.standard_normal(clean.shape), sigma=sigma,
                                       particles=corners))  # fmt: skip
        return out

    x0 = np.where(b.ell <= 1, coef, 0.0)
    kw = dict(rotations=grid, x0=x0, iterations=args.em_iterations, tol=0, seed=0, backend="numpy", pixel_size=px)
    from cryomtd.em3d import run

    rows = []

    def record(name, mics, ctfs, t=None):
        res = run([m.image for m in mics], b, sigma=mics[0].sigma, ctfs=ctfs, ctf_truncation=t, **kw)
        est = b.evaluate(res.coef)
        row = {"run": name, "t": None if res.ctf is None else res.ctf["truncation"],
               "rel_error": relative_error(est, truth), "fsc": [round(float(v), 4) for v in fsc(est, truth)],
               "iteration_s": float(np.mean(np.add(res.estep_s, res.mstep_s))), "loglik": res.loglik[-1]}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)

    plain, with_ctf = data(False), data(True)
    print(f"em: {[len(m.particles) for m in with_ctf]} particles, spacing {spacing}, rule t = {rule}", flush=True)
    record("no CTF in the data", plain, None)
    record("CTF ignored", with_ctf, None)
    for t in sorted(set(args.em_t) | {rule}):
        record(f"CTF modelled, t = {t}" + (" (rule)" if t == rule else ""), with_ctf, [CTF(d) for d in defoci], t)
    return {"defocus_um": args.em_defocus, "rule_t": rule, "spacing": spacing, "runs": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["cost", "model", "em"], choices=["cost", "model", "em"])
    ap.add_argument("--L", type=int, default=11)
    ap.add_argument("--ell-max", type=int, default=10)
    ap.add_argument("--pixel-size", type=float, default=3.85, help="Å (the published setting's)")
    ap.add_argument("--defocus", type=float, nargs=2, default=[1.0, 2.5], help="defocus spread, µm")
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--grid-step", type=float, default=30.0)
    ap.add_argument("--tiles", type=int, default=8, help="micrograph side in patches (cost part)")
    ap.add_argument("--method", default="fft")
    ap.add_argument("--t-list", type=int, nargs="+", default=[0, 2, 4, 8, 12, 16])
    ap.add_argument("--repeat", type=int, default=1, help="cost: round-robin repeats, best of them reported")
    ap.add_argument("--volumes", nargs="+", default=["shepp_logan", "bpti"])
    ap.add_argument("--em-size", type=int, default=140)
    ap.add_argument("--em-defocus", type=float, nargs="+", default=[0.7, 1.0, 1.3])
    ap.add_argument("--em-t", type=int, nargs="+", default=[0, 1, 2, 6])
    ap.add_argument("--em-snr", type=float, default=20.0)
    ap.add_argument("--em-gamma", type=float, default=0.05)
    ap.add_argument("--em-iterations", type=int, default=4)
    ap.add_argument("--em-exact", action="store_true", help="em: particles at rotations of the EM grid")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = {"args": vars(args), "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}  # fmt: skip
    if "model" in args.parts:
        out["model"] = model_error(args)
    if "em" in args.parts:
        out["em"] = em_effect(args)
    if "cost" in args.parts:
        out["cost"] = cost(args)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
