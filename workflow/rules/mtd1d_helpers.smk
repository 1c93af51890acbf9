# Input/param helpers of the 1-D rules (workflow/rules/mtd1d.smk); kept apart so rule files hold rules only.


def _mtd1d(wc):
    return exp_config(wc)


def _segment_inputs(wc):
    n = int(_mtd1d(wc)["segments"])
    return expand(f"{RESULTS}/{{exp}}/segments/{{k}}.npz", exp=wc.exp, k=range(n))


def _restart_inputs(wc):
    n = int(_mtd1d(wc)["lsq"]["restarts"])
    return expand(f"{RESULTS}/{{exp}}/lsq/restart_{{r}}.npz", exp=wc.exp, r=range(n))


def _em_samples(wc):
    """Samples the EM job holds: the first em.segments segments (all when null)."""
    c = _mtd1d(wc)
    used = c["em"]["segments"] or c["segments"]
    return int(c["N"]) * min(int(used), int(c["segments"])) // int(c["segments"])


def _sim_params(wc):
    c = _mtd1d(wc)
    return {k: c[k] for k in ("seed", "L", "signal", "sigma", "N", "segments", "chunk", "moments_dtype", "placement")}
