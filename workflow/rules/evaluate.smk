# Evaluation of 3-D experiments (align to the truth or a reference, half-map FSC for your own
# micrographs, metrics, figures) and the cross-experiment summary table. Library: cryomtd.evaluate; user guide: docs/evaluation.md.
from cryomtd.evaluate.stage import FIGURES as EVAL_FIGURES
from cryomtd.evaluate.stage import FIGURE_LABELS as EVAL_FIGURE_LABELS
from cryomtd.evaluate.stage import evaluate_inputs
from cryomtd.layout import summary_csv


rule evaluate:
    input:
        unpack(
            lambda wc: evaluate_inputs(
                exp_config(wc), wc.exp, RESULTS, wc.exp in EXP3D_MICRO, n_micrographs=len(PLAN.indices[wc.exp])
            )
        ),
    output:
        metrics=PATHS.metrics,
        aligned=directory(PATHS.aligned_dir),
        **{
            name: report(
                PATHS.figure(name),
                caption=f"../report/{name}.rst",
                category="3-D experiments",
                subcategory="{exp}",
                labels={"experiment": "{exp}", "figure": EVAL_FIGURE_LABELS[name]},
            )
            for name in EVAL_FIGURES
        },
    log:
        PATHS.log("evaluate"),
    benchmark:
        PATHS.benchmark("evaluate")
    wildcard_constraints:
        exp=name_regex(EXP3D),
    params:
        settings=lambda wc: exp_config(wc).get("evaluate", {}),
        gamma=lambda wc: None if wc.exp in EXP3D_DATA else exp_config(wc).get("micrographs", {}).get("gamma"),
        figures=list(EVAL_FIGURES),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/evaluate.yaml"
    script:
        "../../scripts/evaluate.py"


rule summary:
    input:
        [Layout(RESULTS, e).metrics for e in EXP1D + EXP3D],
    output:
        report(
            summary_csv(RESULTS),
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "all experiments"},
        ),
    log:
        f"{RESULTS}/logs/summary/summary.log",
    params:
        kinds=["mtd1d"] * len(EXP1D) + ["cryo3d"] * len(EXP3D),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/evaluate.yaml"
    script:
        "../../scripts/summary.py"


ALL_TARGETS.extend(Layout(RESULTS, e).metrics for e in EXP3D)
ALL_TARGETS.append(summary_csv(RESULTS))
