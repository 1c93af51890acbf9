"""Rule mtd1d_segment: simulate one segment in chunks and write its moment sums."""

from cryomtd.io import log_to
from cryomtd.mtd1d.settings import Mtd1dSettings
from cryomtd.mtd1d.stages import run_segment

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    settings = Mtd1dSettings.from_config(sm.params.settings, f"experiments.{sm.wildcards.exp}")
    run_segment(settings, int(sm.wildcards.k), sm.output[0])
