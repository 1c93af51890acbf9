"""Rule `simulate_micrograph`: truth.npz → micrographs/{k}.mrc, particles/{k}.star, micrographs/{k}.json."""

from cryomtd.io import log_to
from cryomtd.simulate import save_micrograph, simulate_from_truth

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    mic = par.micrographs
    m = simulate_from_truth(
        inp.truth, int(snakemake.wildcards.k), seed=par.seed, size=mic["size"], gamma=mic["gamma"],
        snr=mic["snr"], spacing=mic["spacing"], ctf=mic["ctf"], micrograph_name=par.name,
    )
    save_micrograph(m, out.mrc, out.star, out.info)
