"""Rule `prepare_micrograph`: the k-th file of data.micrographs → micrographs/{k}.mrc and {k}.json."""

from cryomtd.io import log_to
from cryomtd.micrographs import DataSettings, prepare_micrograph

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    settings = DataSettings.from_config(snakemake.params.data, where=f"experiments.{snakemake.wildcards.exp}.data")
    prepared = prepare_micrograph(
        snakemake.input[0], settings, index=int(snakemake.wildcards.k), ctf=snakemake.params.ctf
    )
    prepared.save(snakemake.output.mrc, snakemake.output.info)
