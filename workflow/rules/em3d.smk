# Approximate EM from micrographs. Library: cryomtd.em3d; guide: docs/em3d.md.
# Inputs (em_inputs): the micrographs and side files, the run's ctf_groups.json (rule ctf_groups;
# EM models each micrograph's group CTF from it), lsq.npz when EM starts from the moments estimate.
from cryomtd.em3d.stage import em_enabled, em_inputs

# every 3-D run with EM: the experiments with micrographs and the half-data runs of data experiments
EXP3D_EM = PLAN.runs([e for e in EXP3D_MICRO if em_enabled(exp_config(e))])


rule approx_em:
    input:
        unpack(
            lambda wc: em_inputs(
                exp_config(wc), wc.exp, RESULTS, owner=PLAN.owner[wc.exp], indices=PLAN.indices[wc.exp]
            )
        ),
    output:
        npz=PATHS.estimate("em"),
        mrc=PATHS.estimate_mrc("em"),
        trace=PATHS.em_trace,
    log:
        PATHS.log("approx_em"),
    benchmark:
        PATHS.benchmark("approx_em")
    wildcard_constraints:
        exp=name_regex(EXP3D_EM),
    params:
        em=lambda wc: exp_config(wc)["em"],
        ell_max=lambda wc: exp_config(wc)["basis"]["ell_max"],
        seed=lambda wc: exp_config(wc)["seed"],
        checkpoint=lambda wc: Layout(RESULTS, wc.exp).em_checkpoint,
    threads: lambda wc: exp_config(wc)["em"]["advanced"]["threads"]
    resources:
        mem_mb=lambda wc: exp_config(wc)["em"]["advanced"]["memory_mb"] + 1500,
        runtime=lambda wc: exp_config(wc)["em"]["advanced"]["runtime"],
        gpu=lambda wc: int(exp_config(wc)["em"]["advanced"]["backend"] == "torch-cuda"),
    conda:
        "../../envs/em.yaml"
    script:
        "../../scripts/approx_em.py"


ALL_TARGETS.extend(Layout(RESULTS, e).em_trace for e in EXP3D_EM if e in EXP3D)
