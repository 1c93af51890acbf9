"""Rule `autocorrelate`: micrographs/{k}.mrc (+ its side file's σ) → moments/{k}.npz (cryomtd.moments)."""

from cryomtd.io import log_to, read_json
from cryomtd.moments.settings import MomentsSettings
from cryomtd.moments.stage import autocorrelate_file

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    settings = MomentsSettings.from_config(
        snakemake.params.moments, where=f"experiments.{snakemake.wildcards.exp}.moments"
    )
    sigma = read_json(snakemake.input.info).get("sigma")
    autocorrelate_file(
        snakemake.input.mrc, snakemake.output[0], settings, L=snakemake.params.L, sigma=sigma, show_progress=False
    )
