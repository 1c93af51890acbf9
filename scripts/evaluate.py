"""Rule `evaluate`: align each 3-D estimate to the truth or the reference map and/or measure its
half-map FSC; write metrics.json, aligned MRCs, figures.

snakemake.input (cryomtd.evaluate.stage.evaluate_inputs): truth_npz/truth_mrc (simulated
experiments), <name>_npz/<name>_mrc per estimator, <name>_half{1,2}_npz/_mrc (data
experiments: the half-data estimates, at Layout.half(i)), reference (optional map),
micrographs (side files). snakemake.params: settings (the evaluate block), gamma (γ truth or
None), figures. The flavour is read from which inputs are there.
"""

from pathlib import Path

from cryomtd.evaluate import EvaluationSettings, evaluate_experiment, write_evaluation
from cryomtd.io import log_to
from cryomtd.layout import ESTIMATORS, Layout

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    inp, out = snakemake.input, snakemake.output
    keys = set(inp.keys())
    metrics = Path(out.metrics)  # <results>/<exp>/metrics.json: the rule's paths are the Layout's
    layout = Layout(str(metrics.parent.parent), metrics.parent.name)
    names = [n for n in ESTIMATORS if f"{n}_npz" in keys]
    halves = any(f"{n}_half1_npz" in keys for n in names)
    ev = evaluate_experiment(
        layout,
        names,
        micrograph_infos=list(inp.micrographs),
        gamma_true=snakemake.params.gamma,
        settings=EvaluationSettings.from_config(snakemake.params.settings, f"experiments.{layout.exp}.evaluate"),
        truth="truth_npz" in keys,
        reference=inp.reference if "reference" in keys else None,
        halves=(layout.half(1), layout.half(2)) if halves else False,
    )
    write_evaluation(ev, layout, snakemake.params.figures)
