"""Rule `simulate_micrograph`: truth.npz → micrographs/{k}.mrc, particles/{k}.star, micrographs/{k}.json."""

from cryomtd.io import log_to
from cryomtd.simulate import MicrographSettings, save_micrograph

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    mics = MicrographSettings.from_config(par.micrographs, where=f"experiments.{snakemake.wildcards.exp}.micrographs")
    m = mics.simulate(inp.truth, int(snakemake.wildcards.k), seed=par.seed, micrograph_name=par.name)
    save_micrograph(m, out.mrc, out.star, out.info)
