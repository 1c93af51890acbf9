"""Rule `evaluate`: align each 3-D estimate to the truth, write metrics.json, aligned MRCs, figures."""

from pathlib import Path

from cryomtd.evaluate import EvaluationSettings, evaluate_experiment, write_evaluation
from cryomtd.io import log_to

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    inp, out = snakemake.input, snakemake.output
    names = [n for n in ("lsq", "em") if f"{n}_npz" in inp.keys()]
    estimates = {
        n: {"npz": inp[f"{n}_npz"], "mrc": inp[f"{n}_mrc"], "trace": inp.get(f"{n}_trace")} for n in names
    }
    exp = Path(out.metrics).parent.name
    metrics, aligned, truth, traces = evaluate_experiment(
        exp,
        truth_npz=inp.truth_npz,
        truth_mrc=inp.truth_mrc,
        estimates=estimates,
        micrograph_infos=list(inp.micrographs),
        gamma_true=snakemake.params.gamma,
        settings=EvaluationSettings.from_config(snakemake.params.settings),
    )
    Path(out.aligned).mkdir(parents=True, exist_ok=True)
    write_evaluation(
        metrics, aligned, truth, traces,
        metrics_path=out.metrics,
        aligned_paths={n: Path(out.aligned) / f"{n}.mrc" for n in names},
        figure_paths={f: out[f] for f in snakemake.params.figures},
    )
