"""Rule `refine_lsq`: lsq/restart_*.npz → lsq/refine_{k}.npz (the k-th best restart, continued)."""

import dataclasses

from cryomtd.io import log_to
from cryomtd.mom3d.settings import LsqSettings
from cryomtd.mom3d.stage import refine_restart_file

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    p = snakemake.params
    s = LsqSettings.from_config(p.lsq, where=f"experiments.{snakemake.wildcards.exp}.lsq")
    s = dataclasses.replace(s, advanced=dataclasses.replace(s.advanced, threads=snakemake.threads))
    refine_restart_file(
        snakemake.input.moments,
        list(snakemake.input.restarts),
        snakemake.output[0],
        rank=int(snakemake.wildcards.k),
        L=p.L,
        ell_max=p.ell_max,
        settings=s,
        exact=p.exact,
        ctf_groups=snakemake.input.get("ctf_groups"),
        symmetry_json=snakemake.input.symmetry[0] if snakemake.input.symmetry else None,
    )
