"""Rule `detect_symmetry`: moments.npz → lsq/symmetry.json + lsq/detected.npz (lsq.symmetry: auto)."""

import dataclasses

from cryomtd.io import log_to
from cryomtd.mom3d.settings import LsqSettings
from cryomtd.mom3d.stage import detect_symmetry_file

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    p = snakemake.params
    s = LsqSettings.from_config(p.lsq, where=f"experiments.{snakemake.wildcards.exp}.lsq")
    s = dataclasses.replace(s, advanced=dataclasses.replace(s.advanced, threads=snakemake.threads))
    detect_symmetry_file(
        snakemake.input.moments,
        snakemake.output.json,
        snakemake.output.npz,
        L=p.L,
        ell_max=p.ell_max,
        settings=s,
        seed=p.seed,
        exact=p.exact,
        ctf_groups=snakemake.input.get("ctf_groups"),
    )
