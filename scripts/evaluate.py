"""Rule `evaluate`: align each 3-D estimate to the truth, write metrics.json, aligned MRCs, figures."""

from pathlib import Path

from cryomtd.evaluate import EvaluationSettings, evaluate_experiment, write_evaluation
from cryomtd.io import log_to
from cryomtd.layout import ESTIMATORS, Layout

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    inp, out = snakemake.input, snakemake.output
    metrics = Path(out.metrics)  # <results>/<exp>/metrics.json: the rule's paths are the Layout's
    layout = Layout(str(metrics.parent.parent), metrics.parent.name)
    ev = evaluate_experiment(
        layout,
        [n for n in ESTIMATORS if f"{n}_npz" in inp.keys()],  # noqa: SIM118 (Snakemake InputFiles)
        micrograph_infos=list(inp.micrographs),
        gamma_true=snakemake.params.gamma,
        settings=EvaluationSettings.from_config(snakemake.params.settings, f"experiments.{layout.exp}.evaluate"),
    )
    write_evaluation(ev, layout, snakemake.params.figures)
