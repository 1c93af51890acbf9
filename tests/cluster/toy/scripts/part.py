"""One scattered toy job: seeded normal samples of part k, written atomically.

Two outputs, like the real multi-output stages: the samples (.npz) and a summary
(.json). The log marks the moments the fault tests kill the job at:
"temporary written" (data in the temporary file, before the rename; then sleeps
``sleep_s``, or until a file named ``release`` appears in the working directory) and
"npz renamed" (first output complete, second not yet; then sleeps ``pause_s``).
"""

import time
from pathlib import Path

import numpy as np

from cryomtd.io import atomic_path, log_to, write_json
from cryomtd.seeding import rng

with log_to(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects this name)
    k = int(snakemake.wildcards.k)  # noqa: F821
    p = snakemake.params  # noqa: F821
    if p.fail:
        raise RuntimeError(f"toy_part {k}: deliberate failure (fail_parts in config.yaml)")
    x = rng(int(p.seed), "toy", k).standard_normal(int(p.size))
    with atomic_path(snakemake.output.npz, suffix=".npz") as tmp:  # noqa: F821
        np.savez(tmp, x=x)
        log.info("temporary written: %s", tmp)
        deadline = time.monotonic() + float(p.sleep_s)
        while time.monotonic() < deadline and not Path("release").exists():
            time.sleep(0.1)
    log.info("npz renamed")
    time.sleep(float(p.pause_s))
    write_json(snakemake.output.json, {"k": k, "sum": float(x.sum())})  # noqa: F821
    log.info("part %d done", k)
