# Evaluation of 3-D experiments (align to the truth, FSC, metrics, figures) and the
# cross-experiment summary table. Library: cryomtd.evaluate; user guide: docs/evaluation.md.

EVAL_FIGURES = ["fsc", "slices", "projections", "mip", "convergence"]
EVAL_FIGURE_LABELS = {
    "fsc": "FSC",
    "slices": "central slices",
    "projections": "projections",
    "mip": "max-intensity projections",
    "convergence": "convergence",
}


def estimator_enabled(wc, name):
    """Whether estimator 'lsq' or 'em' runs in this experiment (its block's `enabled`)."""
    return exp_config(wc).get(name, {}).get("enabled", True)


def micrograph_info_files(wc):
    """micrographs/{k}.json of a micrograph experiment (γ truth); none for exact moments."""
    if wc.exp not in EXP3D_MICRO:
        return []
    n = exp_config(wc)["micrographs"]["n_micrographs"]
    return [f"{RESULTS}/{wc.exp}/micrographs/{k}.json" for k in range(n)]


def evaluate_inputs(wc):
    d = {
        "truth_npz": f"{RESULTS}/{wc.exp}/truth.npz",
        "truth_mrc": f"{RESULTS}/{wc.exp}/truth.mrc",
        "micrographs": micrograph_info_files(wc),
    }
    if estimator_enabled(wc, "lsq"):
        d.update(lsq_npz=f"{RESULTS}/{wc.exp}/lsq.npz", lsq_mrc=f"{RESULTS}/{wc.exp}/lsq.mrc")
    if estimator_enabled(wc, "em"):
        d.update(
            em_npz=f"{RESULTS}/{wc.exp}/em.npz",
            em_mrc=f"{RESULTS}/{wc.exp}/em.mrc",
            em_trace=f"{RESULTS}/{wc.exp}/em_trace.json",
        )
    return d


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        metrics=f"{RESULTS}/{{exp}}/metrics.json",
        aligned=directory(f"{RESULTS}/{{exp}}/aligned"),
        **{
            name: report(
                f"{RESULTS}/{{exp}}/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="3-D experiments",
                subcategory="{exp}",
                labels={"experiment": "{exp}", "figure": EVAL_FIGURE_LABELS[name]},
            )
            for name in EVAL_FIGURES
        },
    log:
        f"{RESULTS}/{{exp}}/logs/evaluate/evaluate.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/evaluate/evaluate.tsv"
    wildcard_constraints:
        exp=name_regex(EXP3D),
    params:
        settings=lambda wc: exp_config(wc).get("evaluate", {}),
        gamma=lambda wc: exp_config(wc).get("micrographs", {}).get("gamma"),
        figures=EVAL_FIGURES,
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
        expand(f"{RESULTS}/{{exp}}/metrics.json", exp=EXP1D + EXP3D),
    output:
        report(
            f"{RESULTS}/summary.csv",
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


ALL_TARGETS.extend(expand(f"{RESULTS}/{{exp}}/metrics.json", exp=EXP3D))
ALL_TARGETS.append(f"{RESULTS}/summary.csv")
