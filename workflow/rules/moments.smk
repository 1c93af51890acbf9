# Micrograph autocorrelations (docs/design.md §8): one autocorrelate job per micrograph,
# then an exact merge. Library: cryomtd.moments; guide: docs/moments.md. The config
# plumbing (window default = volume L, resources) lives in cryomtd.moments.stage.
from cryomtd.moments.stage import workflow_options, workflow_resources


rule autocorrelate:
    input:
        mrc=f"{RESULTS}/{{exp}}/micrographs/{{k}}.mrc",
    output:
        f"{RESULTS}/{{exp}}/moments/{{k}}.npz",
    log:
        f"{RESULTS}/{{exp}}/logs/autocorrelate/{{k}}.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/autocorrelate/{{k}}.tsv"
    wildcard_constraints:
        exp=name_regex(EXP3D_MICRO),
        k=r"\d+",
    params:
        opts=lambda wc: workflow_options(exp_config(wc)),
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
        lambda wc: [f"{RESULTS}/{wc.exp}/moments/{k}.npz" for k in range(exp_config(wc)["micrographs"]["n_micrographs"])],
    output:
        f"{RESULTS}/{{exp}}/moments.npz",
    log:
        f"{RESULTS}/{{exp}}/logs/merge_moments/merge.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/merge_moments/merge.tsv"
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


ALL_TARGETS.extend(f"{RESULTS}/{e}/moments.npz" for e in EXP3D_MICRO)
