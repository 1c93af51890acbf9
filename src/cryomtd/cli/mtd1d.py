"""``cryomtd mtd1d …``: the 1-D MTD stages without Snakemake (see docs/mtd1d.md).

Each subcommand reads one experiment of a workflow config (``--config``, ``--experiment``;
validated against workflow/schemas/mtd1d.schema.yaml, defaults filled) and writes the
same files as the corresponding rule.
"""

from __future__ import annotations

import argparse
import json


def _exp_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config.yaml", help="workflow config file (default: config.yaml)")
    p.add_argument("--experiment", "-e", required=True, help="name of an mtd1d experiment in the config")


def load_experiment(config_path, name: str) -> dict:
    """One mtd1d experiment of a workflow config file, validated against
    ``workflow/schemas/mtd1d.schema.yaml`` with its defaults filled in (for the CLI)."""
    import jsonschema
    import yaml

    from cryomtd.config import SCHEMA_DIR, fill_defaults, load_schema
    from cryomtd.io import InputError

    try:
        with open(config_path) as fh:
            cfg = yaml.safe_load(fh)
    except OSError as exc:
        raise InputError(f"{config_path}: cannot read ({exc})") from None
    exps = (cfg or {}).get("experiments", {})
    if name not in exps:
        raise InputError(f"{config_path}: no experiment {name!r} under 'experiments' (have {sorted(exps)})")
    exp = exps[name]
    schema_path = SCHEMA_DIR / "mtd1d.schema.yaml"
    errors = sorted(jsonschema.Draft202012Validator(load_schema(schema_path)).iter_errors(exp), key=str)
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "(experiment)"
        raise InputError(f"{config_path}: experiments.{name}.{where}: {e.message}")
    return fill_defaults(exp, schema_path)


def _cfg(args):
    return load_experiment(args.config, args.experiment)


def _segment(args) -> int:
    from cryomtd.mtd1d.stages import run_segment

    run_segment(_cfg(args), args.index, args.out)
    return 0


def _merge(args) -> int:
    from cryomtd.mtd1d.stages import run_merge

    run_merge(args.inputs, args.out)
    return 0


def _lsq(args) -> int:
    from cryomtd.mtd1d.stages import run_lsq_restart

    run_lsq_restart(_cfg(args), args.moments, args.restart, args.out)
    return 0


def _pick(args) -> int:
    from cryomtd.mtd1d.stages import run_pick

    run_pick(args.inputs, args.out)
    return 0


def _em(args) -> int:
    from cryomtd.mtd1d.stages import run_em

    run_em(_cfg(args), args.lsq, args.moments, args.out, args.trace)
    return 0


def _evaluate(args) -> int:
    from pathlib import Path

    from cryomtd.mtd1d.stages import run_evaluate

    d = Path(args.dir)
    m = run_evaluate(_cfg(args), d / "moments.npz", d / "lsq.npz", d / "em.npz", d / "em_trace.json",
                     d / "metrics.json", d / "figures" / "overlay.png", d / "figures" / "loglik.png",
                     name=args.experiment)
    print(json.dumps(m, indent=2))
    return 0


def _run(args) -> int:
    from cryomtd.mtd1d.stages import run_all

    out = args.outdir or f"results/{args.experiment}"
    m = run_all(_cfg(args), out, name=args.experiment)
    print(json.dumps({k: m[k] for k in ("gamma_true", "lsq", "em")}, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cryomtd mtd1d {segment,merge,lsq,pick,em,evaluate,run}``."""
    p = sub.add_parser("mtd1d", help="1-D multi-target detection stages",
                       description="1-D multi-target detection: simulate segments, merge moments, "
                       "least squares, approximate EM, evaluate (docs/mtd1d.md).")
    s = p.add_subparsers(dest="mtd1d_command", metavar="STAGE", required=True)

    q = s.add_parser("segment", help="simulate one segment in chunks and write its moment sums")
    _exp_args(q)
    q.add_argument("--index", type=int, required=True, help="segment index k (seeds the segment)")
    q.add_argument("--out", required=True, help="output .npz")
    q.set_defaults(func=_segment)

    q = s.add_parser("merge", help="merge segment moment files (exact)")
    q.add_argument("--out", required=True)
    q.add_argument("inputs", nargs="+")
    q.set_defaults(func=_merge)

    q = s.add_parser("lsq", help="one least-squares restart from merged moments")
    _exp_args(q)
    q.add_argument("--moments", required=True)
    q.add_argument("--restart", type=int, default=0)
    q.add_argument("--out", required=True)
    q.set_defaults(func=_lsq)

    q = s.add_parser("pick", help="keep the restart with the lowest cost")
    q.add_argument("--out", required=True)
    q.add_argument("inputs", nargs="+")
    q.set_defaults(func=_pick)

    q = s.add_parser("em", help="approximate EM started from the least-squares estimate")
    _exp_args(q)
    q.add_argument("--lsq", required=True)
    q.add_argument("--moments", required=True)
    q.add_argument("--out", required=True, help="em.npz")
    q.add_argument("--trace", required=True, help="em_trace.json")
    q.set_defaults(func=_em)

    q = s.add_parser("evaluate", help="metrics.json and figures for a results folder")
    _exp_args(q)
    q.add_argument("--dir", required=True, help="results/<experiment> folder with the stage outputs")
    q.set_defaults(func=_evaluate)

    q = s.add_parser("run", help="all stages in this process (resumes finished segments/restarts)")
    _exp_args(q)
    q.add_argument("--outdir", default=None, help="default results/<experiment>")
    q.set_defaults(func=_run)
