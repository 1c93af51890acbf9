"""Rule `summary`: one CSV row per (experiment, estimator) from every metrics.json."""

from cryomtd.evaluate import write_summary
from cryomtd.io import log_to

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    rows = write_summary(list(snakemake.input), snakemake.output[0], kinds=snakemake.params.kinds)
    print(f"summary: {len(rows)} rows from {len(snakemake.input)} experiments")
