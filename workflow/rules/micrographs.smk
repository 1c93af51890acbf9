# The micrographs of a 3-D experiment, micrographs/{k}.mrc with their side files {k}.json:
# simulated (one job per micrograph k, seeded by rng(seed, "micrograph", k); library
# cryomtd.simulate, guide docs/simulation.md) or prepared from the user's files (file k of
# the sorted data.micrographs glob; library cryomtd.micrographs, guide docs/own_micrographs.md).
# Every later stage reads the same contract.
EXP3D_SIMULATED = [e for e in EXP3D_MICRO if e in EXP3D_SIM]


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
        exp=name_regex(EXP3D_SIMULATED),
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


rule prepare_micrograph:
    input:
        lambda wc: PLAN.files[wc.exp][int(wc.k)],
    output:
        mrc=PATHS.micrograph("{k}"),
        info=PATHS.micrograph_info("{k}"),
    log:
        PATHS.log("prepare_micrograph", "{k}"),
    benchmark:
        PATHS.benchmark("prepare_micrograph", "{k}")
    wildcard_constraints:
        exp=name_regex(EXP3D_DATA),
        k=r"\d+",
    params:
        data=lambda wc: exp_config(wc)["data"],
        ctf=lambda wc: PLAN.ctfs[wc.exp][int(wc.k)],
    threads: 1
    resources:
        mem_mb=lambda wc: 1000 + os.path.getsize(PLAN.files[wc.exp][int(wc.k)]) * 12 // 2**20,
        runtime=15,
    conda:
        "../../envs/simulate.yaml"
    script:
        "../../scripts/prepare_micrograph.py"


rule ctf_groups:
    # The CTF groups of a run's micrographs (cryomtd.ctf.ctf_group_table): both estimators read
    # the microscope from this one file; its table is empty without a CTF or with `ctf: ignore`.
    input:
        unpack(
            lambda wc: {"truth": Layout(RESULTS, wc.exp).truth_npz}
            if wc.exp in EXP3D_EXACT
            else {"infos": micrograph_files(wc.exp, "info")}
        ),
    output:
        PATHS.ctf_groups,
    log:
        PATHS.log("ctf_groups"),
    wildcard_constraints:
        exp=name_regex(PLAN.runs(EXP3D)),
    params:
        exact=lambda wc: wc.exp in EXP3D_EXACT,
        micrographs=lambda wc: exp_config(wc).get("micrographs"),
        seed=lambda wc: exp_config(wc)["seed"],
        names=lambda wc: PLAN.indices[wc.exp] if wc.exp not in EXP3D_EXACT else list(
            range(exp_config(wc)["micrographs"]["n_micrographs"])
        ),
        mode=lambda wc: exp_config(wc)["ctf"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/simulate.yaml"
    script:
        "../../scripts/ctf_groups.py"


ALL_TARGETS.extend(
    path
    for e in EXP3D_SIMULATED
    for k in PLAN.indices[e]
    for path in (Layout(RESULTS, e).micrograph(k), Layout(RESULTS, e).particles(k), Layout(RESULTS, e).micrograph_info(k))
)
ALL_TARGETS.extend(path for e in EXP3D_DATA for path in micrograph_files(e, "info"))
