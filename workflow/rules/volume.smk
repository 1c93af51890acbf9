# Ground-truth volume of a 3-D experiment (docs/design.md §6). Library: cryomtd.volume;
# guide: docs/simulation.md.
from cryomtd.volume import resolve_source


rule prepare_volume:
    input:
        source=lambda wc: resolve_source(exp_config(wc)["volume"]["source"], workflow.basedir),
    output:
        raw=f"{RESULTS}/{{exp}}/truth_raw.mrc",
        truth=f"{RESULTS}/{{exp}}/truth.mrc",
        npz=f"{RESULTS}/{{exp}}/truth.npz",
    log:
        f"{RESULTS}/{{exp}}/logs/prepare_volume/prepare_volume.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/prepare_volume/prepare_volume.tsv"
    wildcard_constraints:
        exp=name_regex(EXP3D),
    params:
        volume=lambda wc: exp_config(wc)["volume"],
        ell_max=lambda wc: exp_config(wc).get("basis", {}).get("ell_max"),
        seed=lambda wc: exp_config(wc)["seed"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/simulate.yaml"
    script:
        "../../scripts/prepare_volume.py"


ALL_TARGETS.extend(expand(f"{RESULTS}/{{exp}}/truth.mrc", exp=EXP3D))
