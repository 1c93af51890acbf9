"""Rule `autocorrelate`: micrographs/{k}.mrc → moments/{k}.npz (cryomtd.moments)."""

from cryomtd.io import log_to
from cryomtd.moments.stage import autocorrelate_file

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    autocorrelate_file(snakemake.input.mrc, snakemake.output[0], show_progress=False, **snakemake.params.opts)
