"""One scattered toy job: seeded normal samples of part k, written atomically.

Logs "temporary written" after the data is in the temporary file and before the
rename, then sleeps ``sleep_s``: the window in which the fault test kills the job.
"""

import time

import numpy as np

from cryomtd.io import atomic_path, log_to
from cryomtd.seeding import rng

with log_to(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects this name)
    k = int(snakemake.wildcards.k)  # noqa: F821
    p = snakemake.params  # noqa: F821
    if p.fail:
        raise RuntimeError(f"toy_part {k}: deliberate failure (fail_parts in config.yaml)")
    x = rng(int(p.seed), "toy", k).standard_normal(int(p.size))
    with atomic_path(snakemake.output[0], suffix=".npz") as tmp:  # noqa: F821
        np.savez(tmp, x=x)
        log.info("temporary written: %s", tmp)
        time.sleep(float(p.sleep_s))
    log.info("part %d done", k)
