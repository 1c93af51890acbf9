"""Rule `prepare_volume`: volume source → truth_raw.mrc, truth.mrc (in the basis), truth.npz."""

from cryomtd.io import log_to
from cryomtd.volume import prepare_volume

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    vol = dict(par.volume)
    source = inp.source[0] if len(inp.source) else vol["source"]
    prepared = prepare_volume(
        source, vol["L"], voxel_size=vol["voxel_size"], resolution=vol["resolution"], n_blobs=vol["n_blobs"],
        variant=vol["variant"], normalize=vol["normalize"], ell_max=par.ell_max, seed=par.seed,
    )
    prepared.save(out.raw, out.truth, out.npz)
