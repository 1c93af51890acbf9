"""CLI subcommands of the evaluation stage: ``fsc``, ``align``, ``evaluate``, ``summary``.

Defaults are read from ``workflow/schemas/evaluate.schema.yaml`` (the one place they are written).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _read(path: str):
    from cryomtd.volume import read_mrc

    return read_mrc(path)


def _cmd_fsc(args: argparse.Namespace) -> int:
    from cryomtd.evaluate import fsc, resolution, shell_frequencies

    a, vs = _read(args.a)
    b, _ = _read(args.b)
    if a.shape != b.shape:
        from cryomtd.io import InputError

        raise InputError(f"{args.b}: shape {b.shape} differs from {args.a} {a.shape}")
    vs = args.voxel_size or vs or 1.0
    L = a.shape[0]
    curve = fsc(a, b)
    freq = shell_frequencies(L, vs)
    print("shell\tfrequency\tfsc")
    for k, (f, c) in enumerate(zip(freq, curve)):
        print(f"{k}\t{f:.5f}\t{c:.4f}")
    unit = "Å" if vs != 1.0 else "voxels"
    res = {f"resolution_{t:g}": resolution(curve, t, vs, L=L) for t in args.thresholds}
    for key, v in res.items():
        print(f"{key}: {v:.3f} {unit}")
    if args.json:
        from cryomtd.io import write_json

        write_json(args.json, {"fsc": curve, "frequencies": freq, "voxel_size": vs, **res})
    return 0


def _cmd_align(args: argparse.Namespace) -> int:
    from cryomtd.evaluate import align, fsc, resolution
    from cryomtd.volume import write_mrc

    est, vs = _read(args.estimate)
    ref, vs_ref = _read(args.reference)
    al = align(
        est,
        ref,
        reflections=not args.no_reflections,
        ell_max=args.ell_max,
        grid_step=args.grid_step,
        refine=not args.no_refine,
        shift=args.shift,
        output="interpolate",
    )
    vs = vs_ref or vs or 1.0
    write_mrc(args.out, al.volume, vs)
    curve = fsc(al.volume, ref)
    print(
        json.dumps(
            {
                "rotation": al.rotation.round(6).tolist(),
                "reflected": al.reflected,
                "shift": al.shift.round(4).tolist(),
                "correlation": round(al.correlation, 6),
                "resolution_0.5": resolution(curve, 0.5, vs, L=ref.shape[0]),
                "out": args.out,
            },
            indent=2,
        )
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cryomtd.cli.options import settings_from_options
    from cryomtd.evaluate import EvaluationSettings, evaluate_experiment, write_evaluation
    from cryomtd.layout import ESTIMATORS, Layout

    d = Path(args.results).resolve()
    layout = Layout(str(d.parent), d.name)
    estimators = [n for n in ESTIMATORS if Path(layout.estimate(n)).exists() and n not in args.skip]
    infos = sorted((d / "micrographs").glob("*.json")) if (d / "micrographs").is_dir() else []
    settings = settings_from_options(EvaluationSettings, args, "cryomtd evaluate")
    ev = evaluate_experiment(
        layout, estimators, micrograph_infos=infos, gamma_true=args.gamma, settings=settings, reference=args.reference
    )
    write_evaluation(ev, layout)
    for n, m in ev.metrics["estimators"].items():
        parts = []
        if "relative_error" in m:
            parts.append(f"relative error {m['relative_error']:.4f}, FSC 0.5 at {m['resolution_0.5']:.3f} Å")
        if "resolution_half_0.143" in m:
            parts.append(f"half-map FSC 0.143 at {m['resolution_half_0.143']:.3f} Å")
        print(f"{n}: " + "; ".join(parts))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from cryomtd.evaluate import write_summary

    rows = write_summary(args.metrics, args.out)
    print(f"{args.out}: {len(rows)} rows")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fsc``, ``align``, ``evaluate`` and ``summary`` to ``sub``."""
    from cryomtd.cli.options import add_settings_options
    from cryomtd.evaluate import EvaluationSettings

    defaults = EvaluationSettings()
    p = sub.add_parser("fsc", help="Fourier shell correlation of two MRC volumes and its resolutions")
    p.add_argument("a", help="first volume (MRC)")
    p.add_argument("b", help="second volume (MRC), same box")
    p.add_argument("--voxel-size", type=float, default=None, help="Å per voxel (default: from the header of A)")
    p.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=list(defaults.thresholds),
        help="FSC values whose crossing is reported (default %(default)s; 0.5 is the criterion "
        "against a known truth, 0.143 the half-map criterion)",
    )
    p.add_argument("--json", help="also write the curve and resolutions to this JSON file")
    p.set_defaults(func=_cmd_fsc)

    p = sub.add_parser("align", help="align an estimate to a reference over rotations and reflection")
    p.add_argument("estimate", help="volume to move (MRC)")
    p.add_argument("reference", help="volume to align to (MRC), same box")
    p.add_argument("--out", required=True, help="aligned estimate (MRC, voxel size of the reference)")
    p.add_argument("--ell-max", type=int, default=None, help="basis degree for the search (default: the basis default)")
    p.add_argument(
        "--grid-step",
        type=float,
        default=defaults.advanced.grid_step,
        help="coarse rotation grid step in degrees (default %(default)s)",
    )
    p.add_argument("--no-reflections", action="store_true", help="search rotations only")
    p.add_argument("--no-refine", action="store_true", help="keep the best grid rotation")
    p.add_argument("--shift", action="store_true", help="also fit a sub-voxel translation")
    p.set_defaults(func=_cmd_align)

    p = sub.add_parser(
        "evaluate",
        help="evaluate a 3-D experiment folder like the workflow rule",
        description="Align the estimates of results/<experiment> (lsq.*, em.*) to the truth (truth.npz, truth.mrc), "
        "or to --reference, and/or measure the half-map FSC of half1/ and half2/ when they exist.",
    )
    p.add_argument("results", help="results/<experiment> folder")
    p.add_argument("--reference", default=None, help="a map (MRC) to compare against when there is no truth")
    p.add_argument("--gamma", type=float, default=None, help="true γ when there are no micrographs/*.json")
    p.add_argument("--skip", nargs="*", default=[], choices=["lsq", "em"], help="estimators to leave out")
    add_settings_options(p, EvaluationSettings, schema="evaluate")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("summary", help="collect metrics.json files into one CSV")
    p.add_argument("metrics", nargs="+", help="metrics.json files")
    p.add_argument("--out", required=True, help="summary CSV")
    p.set_defaults(func=_cmd_summary)
