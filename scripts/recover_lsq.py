"""Rule `recover_lsq`: moments.npz → lsq/restart_{r}.npz (one seeded least-squares restart)."""

import dataclasses

from cryomtd.io import log_to
from cryomtd.mom3d.settings import LsqSettings
from cryomtd.mom3d.stage import recover_restart_file

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    p = snakemake.params
    s = LsqSettings.from_config(p.lsq, where=f"experiments.{snakemake.wildcards.exp}.lsq")
    s = dataclasses.replace(s, advanced=dataclasses.replace(s.advanced, threads=snakemake.threads))
    recover_restart_file(
        snakemake.input.moments,
        snakemake.output[0],
        L=p.L,
        ell_max=p.ell_max,
        settings=s,
        seed=p.seed,
        restart=int(snakemake.wildcards.r),
        exact=p.exact,
        ctf_groups=snakemake.input.get("ctf_groups"),
        symmetry_json=snakemake.input.symmetry[0] if snakemake.input.symmetry else None,
    )
