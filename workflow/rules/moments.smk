# Micrograph autocorrelations (docs/design.md §8): one autocorrelate job per micrograph,
# then an exact merge. Library: cryomtd.moments; guide: docs/moments.md. Job resources
# (from the window and the micrograph size) come from cryomtd.moments.stage.
from cryomtd.moments.stage import workflow_resources
from cryomtd.plan import box_size


rule autocorrelate:
    input:
        mrc=PATHS.micrograph("{k}"),
        info=PATHS.micrograph_info("{k}"),
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
        L=lambda wc: box_size(exp_config(wc)),
    threads: 1
    resources:
        mem_mb=lambda wc: workflow_resources(exp_config(wc), micrograph_side(wc))["mem_mb"],
        runtime=lambda wc: workflow_resources(exp_config(wc), micrograph_side(wc))["runtime"],
        gpu=lambda wc: workflow_resources(exp_config(wc))["gpu"],
    conda:
        "../../envs/moments.yaml"
    script:
        "../../scripts/autocorrelate.py"


rule merge_moments:
    input:
        lambda wc: micrograph_files(wc.exp, "moments"),
    output:
        PATHS.moments,
    log:
        PATHS.log("merge_moments", "merge"),
    benchmark:
        PATHS.benchmark("merge_moments", "merge")
    wildcard_constraints:
        exp=name_regex(PLAN.runs(EXP3D_MICRO)),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/moments.yaml"
    script:
        "../../scripts/merge_moments.py"


ALL_TARGETS.extend(Layout(RESULTS, e).moments for e in EXP3D_MICRO)
