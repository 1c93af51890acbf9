# Approximate EM from micrographs (issue 7, DESIGN §7). Library: cryomtd.em3d; guide: docs/em3d.md.
from cryomtd.em3d.stage import em_enabled, em_inputs

EXP3D_EM = [e for e in EXP3D_MICRO if em_enabled(exp_config(e))]


rule approx_em:
    input:
        unpack(lambda wc: em_inputs(exp_config(wc), wc.exp, RESULTS)),
    output:
        npz=f"{RESULTS}/{{exp}}/em.npz",
        mrc=f"{RESULTS}/{{exp}}/em.mrc",
        trace=f"{RESULTS}/{{exp}}/em_trace.json",
    log:
        f"{RESULTS}/{{exp}}/logs/approx_em/approx_em.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/approx_em/approx_em.tsv"
    wildcard_constraints:
        exp=name_regex(EXP3D_EM),
    params:
        em=lambda wc: exp_config(wc)["em"],
        basis=lambda wc: exp_config(wc).get("basis", {}),
        seed=lambda wc: exp_config(wc)["seed"],
        checkpoint=lambda wc: f"{RESULTS}/{wc.exp}/em_checkpoint/state.npz",
    threads: lambda wc: exp_config(wc)["em"]["threads"]
    resources:
        mem_mb=lambda wc: exp_config(wc)["em"]["memory_mb"] + 1500,
        runtime=lambda wc: exp_config(wc)["em"]["runtime"],
        gpu=lambda wc: int(exp_config(wc)["em"]["backend"] == "cuda"),
    conda:
        "../../envs/em.yaml"
    script:
        "../../scripts/approx_em.py"


ALL_TARGETS.extend(expand(f"{RESULTS}/{{exp}}/em_trace.json", exp=EXP3D_EM))
