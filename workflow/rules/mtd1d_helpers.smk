# Settings, paths and input helpers of the 1-D rules (workflow/rules/mtd1d.smk); kept apart so
# rule files hold rules only.
from cryomtd.layout import Layout
from cryomtd.mtd1d.settings import Mtd1dSettings

# Every path of the 1-D rules, with the {exp} wildcard (and {k}, {r} where a rule has them).
LAYOUT_1D = Layout(RESULTS, "{exp}")

# The settings of each 1-D experiment, built once from its validated config block.
MTD1D_SETTINGS = {name: Mtd1dSettings.from_config(exp_config(name), f"experiments.{name}") for name in EXP1D}


def mtd1d_settings(wc):
    return MTD1D_SETTINGS[wc.exp]


def mtd1d_stage_settings(stage):
    """A `params:` function: the plain settings the output of `stage` depends on
    (Mtd1dSettings.stage_block), so a changed setting reruns exactly the jobs it affects."""
    return lambda wc: mtd1d_settings(wc).stage_block(stage)


def mtd1d_segment_files(wc):
    return [Layout(RESULTS, wc.exp).segment(k) for k in range(mtd1d_settings(wc).segments)]


def mtd1d_restart_files(wc):
    return [Layout(RESULTS, wc.exp).lsq_restart(r) for r in range(mtd1d_settings(wc).lsq.restarts)]


def mtd1d_em_mem_mb(wc):
    """Memory of the EM job: the samples it uses as float32 data + float64 patches
    (12 bytes/sample) + blocks, 16 bytes per sample with a 1 GB base."""
    s = mtd1d_settings(wc)
    samples = s.N * s.em_segments_used // s.segments
    return 1000 + int(16 * samples / 1e6)
