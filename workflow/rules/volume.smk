# Ground-truth volume of a 3-D experiment (docs/design.md §6). Library: cryomtd.volume;
# guide: docs/simulation.md.
from cryomtd.volume import resolve_source


rule prepare_volume:
    input:
        source=lambda wc: resolve_source(exp_config(wc)["volume"]["source"], workflow.basedir),
    output:
        raw=PATHS.truth_raw_mrc,
        truth=PATHS.truth_mrc,
        npz=PATHS.truth_npz,
    log:
        PATHS.log("prepare_volume"),
    benchmark:
        PATHS.benchmark("prepare_volume")
    wildcard_constraints:
        exp=name_regex(EXP3D_SIM),
    params:
        volume=lambda wc: exp_config(wc)["volume"],
        basis=lambda wc: exp_config(wc)["basis"],
        seed=lambda wc: exp_config(wc)["seed"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/simulate.yaml"
    script:
        "../../scripts/prepare_volume.py"


ALL_TARGETS.extend(Layout(RESULTS, e).truth_mrc for e in EXP3D_SIM)
