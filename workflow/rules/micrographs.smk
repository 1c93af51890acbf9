# Micrograph simulation (docs/design.md §6): one job per micrograph k, seeded by
# rng(seed, "micrograph", k). Library: cryomtd.simulate; guide: docs/simulation.md.


rule simulate_micrograph:
    input:
        truth=PATHS.truth_npz,
    output:
        mrc=PATHS.micrograph("{k}"),
        star=PATHS.particles("{k}"),
        info=PATHS.micrograph_info("{k}"),
    log:
        PATHS.log("simulate_micrograph", "{k}"),
    benchmark:
        PATHS.benchmark("simulate_micrograph", "{k}")
    wildcard_constraints:
        exp=name_regex(EXP3D_MICRO),
        k=r"\d+",
    params:
        micrographs=lambda wc: exp_config(wc)["micrographs"],
        seed=lambda wc: exp_config(wc)["seed"],
        name=lambda wc: Layout(RESULTS, wc.exp).micrograph(wc.k),
    threads: 1
    resources:
        mem_mb=lambda wc: 1000 + exp_config(wc)["micrographs"]["size"] ** 2 * 8 * 6 // 2**20,
        runtime=15,
    conda:
        "../../envs/simulate.yaml"
    script:
        "../../scripts/simulate_micrograph.py"


ALL_TARGETS.extend(
    path
    for e in EXP3D_MICRO
    for k in range(exp_config(e)["micrographs"]["n_micrographs"])
    for path in (Layout(RESULTS, e).micrograph(k), Layout(RESULTS, e).particles(k), Layout(RESULTS, e).micrograph_info(k))
)
