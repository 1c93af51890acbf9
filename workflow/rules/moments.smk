# Micrograph autocorrelations (docs/design.md §8): one autocorrelate job per micrograph,
# then an exact merge. Library: cryomtd.moments; guide: docs/moments.md. Job resources
# (from the window and the micrograph size) come from cryomtd.moments.stage.
from cryomtd.moments.stage import workflow_resources


rule autocorrelate:
    input:
        mrc=PATHS.micrograph("{k}"),
    output:
        PATHS.micrograph_moments("{k}"),
    log:
        PATHS.log("autocorrelate", "{k}"),
    benchmark:
        PATHS.benchmark("autocorrelate", "{k}")
    wildcard_constraints:
        exp=name_regex(EXP3D_MICRO),
        k=r"\d+",
    params:
        moments=lambda wc: exp_config(wc)["moments"],
        L=lambda wc: exp_config(wc)["volume"]["L"],
    threads: 1
    resources:
        mem_mb=lambda wc: workflow_resources(exp_config(wc))["mem_mb"],
        runtime=lambda wc: workflow_resources(exp_config(wc))["runtime"],
        gpu=lambda wc: workflow_resources(exp_config(wc))["gpu"],
    conda:
        "../../envs/moments.yaml"
    script:
        "../../scripts/autocorrelate.py"


rule merge_moments:
    input:
        lambda wc: [Layout(RESULTS, wc.exp).micrograph_moments(k)
                    for k in range(exp_config(wc)["micrographs"]["n_micrographs"])],
    output:
        PATHS.moments,
    log:
        PATHS.log("merge_moments", "merge"),
    benchmark:
        PATHS.benchmark("merge_moments", "merge")
    wildcard_constraints:
        exp=name_regex(EXP3D_MICRO),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/moments.yaml"
    script:
        "../../scripts/merge_moments.py"


ALL_TARGETS.extend(Layout(RESULTS, e).moments for e in EXP3D_MICRO)
