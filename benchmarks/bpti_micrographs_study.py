"""BPTI-from-micrographs study: table, figure, references and cost projection.

Run the study first (configs/bpti_micrographs.yaml; never inside the repository):

    mkdir -p /tmp/study && cp configs/bpti_micrographs.yaml /tmp/study/ && cd /tmp/study
    snakemake -s /path/to/cryomtd/Snakefile -d /tmp/study --configfile bpti_micrographs.yaml --cores 1

then, from the repository root (one thread):

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bpti_micrographs_study.py /tmp/study \
        --references --measure --figure docs/figures/bpti_micrographs_fsc.png

* table: one row per experiment from results/<exp>/metrics.json (FSC-0.5, FSC-0.143,
  relative error after alignment, γ), lsq.npz (best cost, restart costs) and the rules'
  benchmark files (wall seconds per rule, summed per experiment = the experiment's wall
  time with --cores 1); written as Markdown to stdout and CSV to STUDY/study_table.csv;
* --references (STUDY/references.json, cached): the ℓ ≤ 2 truncation of the truth (the best
  any ℓ ≤ 2 fit can do) and its cost; the "n = ∞" fit: the same lsq settings and seed on the
  exact, noise-free moments of the full (ℓ ≤ 4) truth at the same γ; and the same optimiser
  (CG + polish) started at the truncated truth instead of a random point;
* --measure (STUDY/throughput.json, cached): in-process seconds of one simulated micrograph
  and of its autocorrelation (W = 6) at 1024² and 4096², and of the W = 10 autocorrelation
  (the TRPV1 window) at 1024²; then the projected cost of 300 micrographs of 4096².
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]


def bench_seconds(exp_dir: Path) -> dict[str, float]:
    """Wall seconds per rule (sum over that rule's jobs) from results/<exp>/benchmarks/<rule>/*.tsv."""
    out: dict[str, float] = {}
    for tsv in glob.glob(str(exp_dir / "benchmarks" / "*" / "*.tsv")):
        rule = Path(tsv).parent.name
        with open(tsv) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        out[rule] = out.get(rule, 0.0) + sum(float(r["s"]) for r in rows)
    return out


def collect(study: Path, config: dict) -> list[dict]:
    rows = []
    for name, exp in config["experiments"].items():
        d = study / "results" / name
        mic = exp["micrographs"]
        row = {
            "experiment": name,
            "snr": mic["snr"],
            "n_micrographs": mic["n_micrographs"],
            "size": mic["size"],
            "pixels": mic["n_micrographs"] * mic["size"] ** 2,
            "done": (d / "metrics.json").exists(),
        }
        b = bench_seconds(d) if d.exists() else {}
        row.update({f"t_{k}": v for k, v in sorted(b.items())})
        row["t_total"] = sum(b.values())
        if row["done"]:
            m = json.loads((d / "metrics.json").read_text())
            e = m["estimators"]["lsq"]
            z = np.load(d / "lsq.npz")
            row.update(
                fsc05=e["resolution_0.5"],
                fsc0143=e["resolution_0.143"],
                bound05=e["resolution_0.5_bound"],
                bound0143=e["resolution_0.143_bound"],
                rel_error=e["relative_error"],
                rel_error_coef=e["relative_error_coef"],
                gamma=e["gamma"],
                gamma_true=m["gamma_true"],
                cost=float(z["cost"]),
                restart_costs=" ".join(f"{c:.3e}" for c in np.asarray(z["restart_costs"])),
                sigma_est=float(z["sigma"]),
                voxel_size=m["voxel_size"],
                L=m["L"],
            )
            infos = sorted(glob.glob(str(d / "micrographs" / "*.json")))
            if infos:
                row["sigma_true"] = json.loads(Path(infos[0]).read_text())["sigma"]
        rows.append(row)
    return rows


def snr_label(snr: float) -> str:
    return "1" if snr == 1 else f"1/{round(1 / snr)}"


def markdown(rows: list[dict]) -> str:
    head = (
        "| experiment | SNR | micrographs | pixels | FSC-0.5 (Å) | FSC-0.143 (Å) | rel. error | γ (true) "
        "| σ est. (true) | best cost (restarts) | wall (s): simulate + autocorrelate + fit + rest = total |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if not r["done"]:
            lines.append(
                f"| {r['experiment']} | {snr_label(r['snr'])} | {r['n_micrographs']} | | not finished |" + " |" * 6
            )
            continue
        t = {k: r.get(f"t_{k}", 0.0) for k in ("simulate_micrograph", "autocorrelate", "recover_lsq")}
        rest = r["t_total"] - sum(t.values())
        b05 = "≤ " if r["bound05"] else ""
        b0143 = "≤ " if r["bound0143"] else ""
        lines.append(
            f"| {r['experiment']} | {snr_label(r['snr'])} | {r['n_micrographs']} | {r['pixels'] / 1e6:.1f} M "
            f"| {b05}{r['fsc05']:.1f} | {b0143}{r['fsc0143']:.1f} | {r['rel_error']:.3f} "
            f"| {r['gamma']:.4f} ({r['gamma_true']:.4f}) | {r['sigma_est']:.4f} ({r.get('sigma_true', math.nan):.4f}) "
            f"| {r['cost']:.2e} ({r['restart_costs']}) "
            f"| {t['simulate_micrograph']:.0f} + {t['autocorrelate']:.0f} + {t['recover_lsq']:.0f} + {rest:.0f} "
            f"= {r['t_total']:.0f} |"
        )
    return "\n".join(lines)


def references(study: Path, config: dict) -> dict:
    """ℓ ≤ 2 truncation of the truth, and the fit to exact noise-free moments of the full truth."""
    cache = study / "references.json"
    if cache.exists():
        return json.loads(cache.read_text())
    from cryomtd.basis import SphericalBessel
    from cryomtd.evaluate.metrics import estimator_metrics
    from cryomtd.mom3d import expected_moments
    from cryomtd.mom3d.fit import fit_restart
    from cryomtd.seeding import rng
    from cryomtd.volume import read_mrc

    name, exp = next(iter(config["experiments"].items()))
    d = study / "results" / name
    t = np.load(d / "truth.npz")
    L, ell_max, vs = int(t["L"]), int(t["ell_max"]), float(t["voxel_size"])
    full = SphericalBessel(L, ell_max)
    coef = np.asarray(t["coef"], float)
    truth = read_mrc(d / "truth.mrc")[0]
    lsq = exp["lsq"]
    k = int(lsq["ell_max"])
    keep = np.asarray(full.ell) <= k
    out = {}
    trunc = np.where(keep, coef, 0.0)
    m, _ = estimator_metrics(truth, full.evaluate(trunc), basis=full, truth_coef=coef, est_coef=trunc, voxel_size=vs)
    out["truncation"] = {
        "fsc05": m["resolution_0.5"],
        "fsc0143": m["resolution_0.143"],
        "rel_error": m["relative_error"],
        "fsc": list(map(float, m["fsc"])),
    }
    gamma = 0.1
    W = int(exp["moments"]["window"])
    t0 = time.perf_counter()
    mom = expected_moments(full, coef, gamma, W, sigma=0.0)
    t_model = time.perf_counter() - t0
    sub = SphericalBessel(L, k)
    fits = []
    for r in range(int(lsq["restarts"])):
        res = fit_restart(
            mom,
            sub,
            rng=rng(int(exp["seed"]), "lsq3d", r),
            sigma=0.0,
            window=W,
            optimizer="conjugate-gradient",
            max_iterations=int(lsq["max_iterations"]),
            marching=True,
            a2_first=True,
            gamma0=0.1,
            restart=r,
            polish=int(lsq.get("polish", 0)),
        )
        fits.append(res)
    best = min(fits, key=lambda f: f.cost)
    est = np.zeros(full.size)
    est[: sub.size] = best.coef
    m, _ = estimator_metrics(truth, full.evaluate(est), basis=full, truth_coef=coef, est_coef=est, voxel_size=vs)
    out["exact_moments"] = {
        "fsc05": m["resolution_0.5"],
        "fsc0143": m["resolution_0.143"],
        "rel_error": m["relative_error"],
        "gamma": float(best.gamma),
        "cost": float(best.cost),
        "restart_costs": [float(f.cost) for f in fits],
        "fit_s": [float(f.wall_time_s) for f in fits],
        "model_s": t_model,
        "fsc": list(map(float, m["fsc"])),
    }
    out.update(truth_start(full, coef, truth, vs, mom, sub, W, lsq))
    cache.write_text(json.dumps(out, indent=1))
    return out


def truth_start(full, coef, truth, vs, mom, sub, W, lsq) -> dict:
    """Cost at the ℓ ≤ 2 truncation of the truth, and the same optimiser (CG + polish) started there
    (uses cryomtd.mom3d.fit internals: a diagnostic, not the workflow's path)."""
    from cryomtd.evaluate.metrics import estimator_metrics
    from cryomtd.mom3d.fit import MomentModel, _Cost, _optimise, cost_terms, crop_moments, gauss_newton_polish

    model = MomentModel(sub, W)
    c0 = coef[: sub.size].copy()
    terms = [float(x) for x in cost_terms(model, mom, c0, 0.1, sigma=0.0)]
    cost = _Cost(model, crop_moments(mom, W), sigma=0.0, weights=(1.0, 1.0, 1.0), prior_weight=0.0)
    t0 = time.perf_counter()
    c, g, f, _, _ = _optimise(
        cost,
        model,
        c0,
        0.1,
        optimizer="conjugate-gradient",
        max_iterations=int(lsq["max_iterations"]),
        min_gradient_norm=1e-10,
        max_inner=None,
    )
    if int(lsq.get("polish", 0)):
        c, g, f, _, _ = gauss_newton_polish(cost, c, g, max_iterations=int(lsq["polish"]))
    est = np.zeros(full.size)
    est[: sub.size] = c
    m, _ = estimator_metrics(truth, full.evaluate(est), basis=full, truth_coef=coef, est_coef=est, voxel_size=vs)
    return {
        "truncation_cost": sum(terms),
        "truncation_cost_terms": terms,
        "truth_start": {
            "fsc05": m["resolution_0.5"],
            "fsc0143": m["resolution_0.143"],
            "rel_error": m["relative_error"],
            "gamma": float(g),
            "cost": float(f),
            "fit_s": time.perf_counter() - t0,
            "fsc": list(map(float, m["fsc"])),
        },
    }


def measure(study: Path, config: dict) -> dict:
    """In-process seconds: simulate one micrograph; autocorrelate it (W = 6; W = 10 at 1024²)."""
    cache = study / "throughput.json"
    if cache.exists():
        return json.loads(cache.read_text())
    import tempfile

    from cryomtd.moments.stage import autocorrelate_file
    from cryomtd.simulate import save_micrograph, simulate_from_truth

    name, exp = list(config["experiments"].items())[-1]
    truth = study / "results" / name / "truth.npz"
    mic = exp["micrographs"]
    out = {"experiment": name}
    with tempfile.TemporaryDirectory() as tmp:
        for size, windows in ((1024, (6, 10)), (4096, (6,))):
            t0 = time.perf_counter()
            m = simulate_from_truth(
                truth,
                0,
                seed=int(exp["seed"]),
                size=size,
                gamma=mic["gamma"],
                snr=mic["snr"],
                spacing=mic["spacing"],
                ctf=None,
                micrograph_name=f"{tmp}/m.mrc",
            )
            save_micrograph(m, f"{tmp}/m.mrc", f"{tmp}/m.star", f"{tmp}/m.json")
            out[f"simulate_{size}"] = time.perf_counter() - t0
            for W in windows:
                t0 = time.perf_counter()
                autocorrelate_file(f"{tmp}/m.mrc", f"{tmp}/m_{W}.npz", window=W, backend="numpy", show_progress=False)
                out[f"autocorrelate_{size}_W{W}"] = time.perf_counter() - t0
                print(f"size {size} W {W}: {out[f'autocorrelate_{size}_W{W}']:.1f} s", file=sys.stderr)
    cache.write_text(json.dumps(out, indent=1))
    return out


def projection(thr: dict, rows: list[dict], n: int = 300, size: int = 4096) -> str:
    fits = [r.get("t_recover_lsq", 0.0) / 2 for r in rows if r["done"]]
    t_fit = float(np.median(fits)) if fits else math.nan
    px = size * size
    c_sim = thr[f"simulate_{size}"] / px
    c6 = thr[f"autocorrelate_{size}_W6"] / px
    c10 = thr["autocorrelate_1024_W10"] / 1024**2
    c6_1k = thr["autocorrelate_1024_W6"] / 1024**2
    bpti = n * (thr[f"simulate_{size}"] + thr[f"autocorrelate_{size}_W6"]) + 2 * t_fit
    lines = [
        f"per pixel: simulate {c_sim * 1e9:.0f} ns, autocorrelate W=6 {c6 * 1e9:.0f} ns at {size}² "
        f"({c6_1k * 1e9:.0f} ns at 1024²), W=10 {c10 * 1e9:.0f} ns at 1024²",
        f"fit (BPTI, ℓ ≤ 2, W = 6, one restart, median over the study): {t_fit:.0f} s",
        f"BPTI setting at {n} × {size}²: {n} × ({thr[f'simulate_{size}']:.1f} + "
        f"{thr[f'autocorrelate_{size}_W6']:.1f}) s"
        f" + 2 × {t_fit:.0f} s = {bpti / 3600:.2f} core-hours",
        f"TRPV1 window W = 10 autocorrelation of {n} × {size}²: {n * px * c10 / 3600:.1f} core-hours",
    ]
    return "\n".join(lines)


def plot(rows: list[dict], refs: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=100)
    for snr, marker in ((1.0, "o"), (0.25, "s"), (0.0625, "^")):
        pts = sorted((r["n_micrographs"], r["fsc05"]) for r in rows if r["done"] and r["snr"] == snr)
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, marker=marker, label=f"SNR {snr_label(snr)}")
    if refs:
        ax.axhline(
            refs["exact_moments"]["fsc05"],
            color="0.4",
            ls="--",
            lw=1,
            label=f"exact moments (n = ∞): {refs['exact_moments']['fsc05']:.1f} Å",
        )
        if "truth_start" in refs:
            ax.axhline(
                refs["truth_start"]["fsc05"],
                color="0.4",
                ls="-.",
                lw=1,
                label=f"exact moments, started at the truth: {refs['truth_start']['fsc05']:.1f} Å",
            )
        ax.axhline(
            refs["truncation"]["fsc05"],
            color="0.6",
            ls=":",
            lw=1,
            label=f"truth truncated to ℓ ≤ 2: {refs['truncation']['fsc05']:.1f} Å",
        )
    done = [r for r in rows if r["done"]]
    if done:  # the highest FSC shell of an odd box: L·voxel / (L//2); resolutions cannot go below it
        last = done[0]["L"] * done[0]["voxel_size"] / (done[0]["L"] // 2)
        ax.axhline(last, color="k", lw=0.6)
        ax.text(
            0.99,
            last,
            f"last FSC shell ({last:.1f} Å)",
            va="bottom",
            ha="right",
            fontsize=7,
            transform=ax.get_yaxis_transform(),
        )
    ax.set_xscale("log", base=2)
    ns = sorted({r["n_micrographs"] for r in rows})
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("micrographs of 1024² (γ = 0.1)")
    ax.set_ylabel("FSC-0.5 resolution (Å)")
    ax.set_title("BPTI 11³, ℓ ≤ 2 fitted, W = 6", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", type=Path, help="the snakemake working directory of the study")
    ap.add_argument(
        "--config", type=Path, default=None, help="config (default: STUDY/bpti_micrographs.yaml, else the repository's)"
    )
    ap.add_argument("--references", action="store_true", help="truncation and exact-moment references")
    ap.add_argument("--measure", action="store_true", help="measure throughput and print the projection")
    ap.add_argument("--figure", type=Path, default=None, help="PNG of FSC-0.5 vs number of micrographs")
    a = ap.parse_args(argv)
    cfg_path = a.config or (a.study / "bpti_micrographs.yaml")
    if not cfg_path.exists():
        cfg_path = REPO / "configs" / "bpti_micrographs.yaml"
    config = yaml.safe_load(cfg_path.read_text())
    rows = collect(a.study, config)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in rows[0], k))
    with open(a.study / "study_table.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(markdown(rows))
    refs = references(a.study, config) if a.references else None
    if refs:
        print(
            "\nreferences:",
            json.dumps(
                {
                    k: ({kk: vv for kk, vv in v.items() if kk != "fsc"} if isinstance(v, dict) else v)
                    for k, v in refs.items()
                },
                indent=1,
            ),
        )
    if a.measure:
        thr = measure(a.study, config)
        print("\nthroughput:", json.dumps(thr, indent=1))
        print(projection(thr, rows))
    if a.figure:
        plot(rows, refs, a.figure)
        print(f"\nfigure: {a.figure} ({os.path.getsize(a.figure) / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
