"""Rule `merge_moments`: moments/{k}.npz for every micrograph → moments.npz (exact merge)."""

from cryomtd.io import log_to
from cryomtd.moments.stage import merge_files

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    merge_files(list(snakemake.input), snakemake.output[0])
