"""Gather the toy parts into total.json: count, sum and sum of squares (float64)."""

import numpy as np

from cryomtd.io import log_to, write_json

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    xs = [np.load(f)["x"] for f in snakemake.input if f.endswith(".npz")]
    x = np.concatenate(xs)
    write_json(
        snakemake.output[0],
        {
            "count": int(x.size),
            "sum": float(x.sum()),
            "sum_sq": float(np.square(x).sum()),
        },
    )
