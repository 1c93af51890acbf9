"""``cryomtd mtd1d …``: the 1-D MTD stages without Snakemake (see docs/mtd1d.md).

Each subcommand reads one experiment of a workflow config (``--config``, ``--experiment``;
validated against workflow/schemas/mtd1d.schema.yaml) into a
:class:`~cryomtd.mtd1d.settings.Mtd1dSettings` and writes the same files as the
corresponding rule. ``run`` also takes one option per setting (``--em-iterations 50``,
``--advanced-chunk 65536``, …) that overrides the config; their defaults are the config's
values, and where the config leaves a setting out, the settings dataclass's default.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import typing
from collections.abc import Iterator
from typing import Any

from cryomtd.mtd1d.settings import Mtd1dSettings


def _exp_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config.yaml", help="workflow config file (default: config.yaml)")
    p.add_argument("--experiment", "-e", required=True, help="name of an mtd1d experiment in the config")


def _setting_fields(
    cls: type = Mtd1dSettings, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """(path, type hint, default) of every scalar setting, nested blocks included (not ``kind``)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "kind":
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _setting_fields(hints[f.name], path + (f.name,))
        else:
            yield path + (f.name,), hints[f.name], f.default


def _converter(hint: Any):
    """Parse an option value of type ``hint`` (``X | None`` accepts ``null``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    base = args[0] if optional else hint

    def convert(text: str):
        if optional and text.lower() in ("null", "none"):
            return None
        if base is bool:
            if text.lower() not in ("true", "false"):
                raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
            return text.lower() == "true"
        return base(text)

    convert.__name__ = getattr(base, "__name__", "value")
    return convert


def _dest(path: tuple[str, ...]) -> str:
    return "set__" + "__".join(path)


def _setting_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("settings (override the config; default: the config's value, else the one shown)")
    for path, hint, default in _setting_fields():
        shown = "required" if default is dataclasses.MISSING else json.dumps(default)
        g.add_argument(
            "--" + "-".join(path).replace("_", "-"),
            dest=_dest(path),
            type=_converter(hint),
            default=argparse.SUPPRESS,
            metavar="VALUE",
            help=f"{'.'.join(path)} ({shown})",
        )


def _overrides(args) -> dict[tuple[str, ...], Any]:
    return {path: getattr(args, _dest(path)) for path, _, _ in _setting_fields() if hasattr(args, _dest(path))}


def load_experiment(config_path, name: str, overrides: dict[tuple[str, ...], Any] | None = None) -> Mtd1dSettings:
    """The settings of one mtd1d experiment of a workflow config file, with ``overrides``
    (``{("em", "iterations"): 50}``) applied, validated against ``workflow/schemas/mtd1d.schema.yaml``."""
    import jsonschema
    import yaml

    from cryomtd.config import SCHEMA_DIR, load_schema
    from cryomtd.io import InputError
    from cryomtd.mtd1d.settings import check_keys_in_place

    try:
        with open(config_path) as fh:
            cfg = yaml.safe_load(fh)
    except OSError as exc:
        raise InputError(f"{config_path}: cannot read ({exc})") from None
    exps = (cfg or {}).get("experiments", {})
    if name not in exps:
        raise InputError(f"{config_path}: no experiment {name!r} under 'experiments' (have {sorted(exps)})")
    exp = copy.deepcopy(exps[name])
    where = f"experiments.{name}"
    if not isinstance(exp, dict):
        raise InputError(f"{config_path}: {where}: expected a mapping of settings")
    check_keys_in_place(exp, f"{config_path}: {where}")
    for path, value in (overrides or {}).items():
        node = exp
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    errors = sorted(
        jsonschema.Draft202012Validator(load_schema(SCHEMA_DIR / "mtd1d.schema.yaml")).iter_errors(exp), key=str
    )
    if errors:
        e = errors[0]
        at = ".".join(str(p) for p in e.absolute_path)
        raise InputError(f"{config_path}: {where}{'.' + at if at else ''}: {e.message}")
    return Mtd1dSettings.from_config(exp, where)


def _settings(args) -> Mtd1dSettings:
    return load_experiment(args.config, args.experiment, _overrides(args))


def _segment(args) -> int:
    from cryomtd.mtd1d.stages import run_segment

    run_segment(_settings(args), args.index, args.out)
    return 0


def _merge(args) -> int:
    from cryomtd.mtd1d.stages import run_merge

    run_merge(args.inputs, args.out)
    return 0


def _lsq(args) -> int:
    from cryomtd.mtd1d.stages import run_lsq_restart

    run_lsq_restart(_settings(args), args.moments, args.restart, args.out)
    return 0


def _pick(args) -> int:
    from cryomtd.mtd1d.stages import run_pick

    run_pick(args.inputs, args.out)
    return 0


def _em(args) -> int:
    from cryomtd.mtd1d.stages import run_em

    run_em(_settings(args), args.lsq, args.moments, args.out, args.trace)
    return 0


def _layout(folder: str):
    import os

    from cryomtd.layout import Layout

    folder = os.path.normpath(folder)
    return Layout(os.path.dirname(folder) or ".", os.path.basename(folder))


def _evaluate(args) -> int:
    from cryomtd.mtd1d.stages import run_evaluate

    lay = _layout(args.dir)
    m = run_evaluate(
        _settings(args),
        lay.moments,
        lay.estimate("lsq"),
        lay.estimate("em"),
        lay.metrics,
        lay.figure("overlay"),
        lay.figure("loglik"),
        name=args.experiment,
    )
    print(json.dumps(m, indent=2))
    return 0


def _run(args) -> int:
    from cryomtd.layout import Layout
    from cryomtd.mtd1d.stages import run_all

    lay = _layout(args.outdir) if args.outdir else Layout("results", args.experiment)
    m = run_all(_settings(args), lay)
    print(json.dumps({k: m[k] for k in ("gamma_true", "lsq", "em")}, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cryomtd mtd1d {segment,merge,lsq,pick,em,evaluate,run}``."""
    p = sub.add_parser(
        "mtd1d",
        help="1-D multi-target detection stages",
        description="1-D multi-target detection: simulate segments, merge moments, "
        "least squares, approximate EM, evaluate (docs/mtd1d.md).",
    )
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
    q.add_argument("--restart", type=int, default=0, help="restart index (seeds the start; default 0)")
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
    _setting_options(q)
    q.set_defaults(func=_run)
