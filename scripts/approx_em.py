"""Rule `approx_em`: approximate EM from the micrographs → em.npz, em.mrc, em_trace.json."""

from cryomtd.em3d.settings import EmSettings
from cryomtd.em3d.stage import reconstruct, write_outputs
from cryomtd.io import log_to

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    settings = EmSettings.from_config(par.em, where=f"experiments.{snakemake.wildcards.exp}.em")
    res, basis, pixel = reconstruct(
        list(inp.micrographs),
        list(inp.infos),
        settings=settings,
        ell_max=par.ell_max,
        seed=par.seed,
        lsq_npz=inp.get("lsq_npz"),
        checkpoint=par.checkpoint,
        ctf_groups=inp.get("ctf_groups"),
    )
    write_outputs(res, basis, pixel, settings, npz=out.npz, mrc=out.mrc, trace=out.trace)
