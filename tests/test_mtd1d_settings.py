"""The 1-D settings object: built from config blocks, what each stage depends on, the estimate files.

Independent references: the schema files read directly (and through the Snakefile's own
validate + fill_defaults), stage outputs recomputed from the complete settings, and the
common estimate format's required keys.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from snakemake.utils import validate

from cryomtd.cli import main
from cryomtd.cli.mtd1d import load_experiment
from cryomtd.config import fill_defaults
from cryomtd.estimate import REQUIRED_KEYS, Estimate
from cryomtd.io import InputError
from cryomtd.layout import Layout
from cryomtd.mtd1d.moments import Moments1D, merge
from cryomtd.mtd1d.settings import STAGES, Em1dSettings, Mtd1dAdvanced, Mtd1dSettings, PlacementSettings
from cryomtd.mtd1d.stages import em_estimate, evaluation, lsq_restart, run_all, segment_moments, signal_of
from cryomtd.settings import to_block

SCHEMA = "workflow/schemas/config.schema.yaml"

#: A small experiment that differs from the defaults in every block.
SMALL = {
    "kind": "mtd1d",
    "seed": 5,
    "L": 6,
    "signal": {"type": "step", "path": None},
    "sigma": 0.4,
    "N": 6000,
    "segments": 2,
    "placement": {"gamma": 0.1, "min_gap": 3},
    "spacing": "arbitrary",
    "lsq": {
        "restarts": 2,
        "sigma_known": False,
        "max_iterations": 30,
        "starts": 3,
        "screen_iterations": 5,
        "keep": 1,
    },
    "em": {"iterations": 4, "tol": 1e-9, "segments": 1},
    "advanced": {"chunk": 999, "moments_dtype": "float32"},
}


def _workflow_settings(block: dict, repo_root) -> Mtd1dSettings:
    """The settings the workflow builds: Snakefile validate + fill_defaults, then from_config."""
    cfg = {"experiments": {"x": copy.deepcopy(block)}}
    validate(cfg, str(repo_root / SCHEMA))
    fill_defaults(cfg, repo_root / SCHEMA)
    return Mtd1dSettings.from_config(cfg["experiments"]["x"], "experiments.x")


def test_default_object_is_the_workflow_default(repo_root, tmp_path):
    """Mtd1dSettings(seed=s) is what the workflow and the CLI build from {kind, seed}."""
    block = {"kind": "mtd1d", "seed": 4}
    assert _workflow_settings(block, repo_root) == Mtd1dSettings(seed=4)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"experiments": {"x": block}}))
    assert load_experiment(tmp_path / "c.yaml", "x") == Mtd1dSettings(seed=4)
    s = _workflow_settings(SMALL, repo_root)
    assert to_block(s) == SMALL  # every key given is kept, nothing else added


def test_library_calls_with_defaults_equal_the_workflow_default_path(repo_root):
    """A stage driven by Mtd1dSettings(...) gives the same numbers as the workflow's settings object."""
    small = {"kind": "mtd1d", "seed": 2, "L": 7, "N": 8000, "segments": 2}
    wf = _workflow_settings(small, repo_root)
    lib = Mtd1dSettings(seed=2, L=7, N=8000, segments=2)
    assert wf == lib
    (m1, c1), (m2, c2) = segment_moments(wf, 0), segment_moments(lib, 0)
    assert c1 == c2 and np.array_equal(m1.s3, m2.s3)
    e1, e2 = lsq_restart(wf, m1, 1), lsq_restart(lib, m2, 1)
    assert np.array_equal(e1.coef, e2.coef) and e1.gamma == e2.gamma and e1.settings == e2.settings


def test_old_em_max_iterations_is_rejected_naming_it(tmp_path):
    with pytest.raises(InputError) as e:
        Mtd1dSettings.from_config({"kind": "mtd1d", "seed": 0, "em": {"max_iterations": 50}}, "experiments.x")
    msg = str(e.value)
    assert "experiments.x.em" in msg and "max_iterations" in msg and "em.iterations" in msg and "\n" not in msg
    with pytest.raises(InputError, match=r"experiments\.x: unknown key chunk .*advanced\.chunk"):
        Mtd1dSettings.from_config({"kind": "mtd1d", "seed": 0, "chunk": 10}, "experiments.x")
    with pytest.raises(InputError, match=r"experiments\.x\.em: unknown key iteration\b"):
        Mtd1dSettings.from_config({"seed": 0, "em": {"iteration": 5}}, "experiments.x")
    with pytest.raises(InputError, match=r"experiments\.x\.seed: required"):
        Mtd1dSettings.from_config({"kind": "mtd1d"}, "experiments.x")
    # the CLI names the key and the config file
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump({"experiments": {"x": {"kind": "mtd1d", "seed": 0, "em": {"max_iterations": 50}}}})
    )
    with pytest.raises(InputError, match=r"c\.yaml: experiments\.x\.em: unknown key max_iterations"):
        load_experiment(tmp_path / "c.yaml", "x")


def test_nested_blocks_are_typed_settings():
    s = Mtd1dSettings.from_config(SMALL, "experiments.x")
    assert s.placement == PlacementSettings(gamma=0.1, min_gap=3)
    assert s.em == Em1dSettings(iterations=4, tol=1e-9, segments=1)
    assert s.advanced == Mtd1dAdvanced(chunk=999, moments_dtype="float32")
    assert s.em_segments_used == 1
    assert dataclasses.replace(s, em=Em1dSettings(segments=7)).em_segments_used == 2  # at most `segments`
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.L = 3  # type: ignore[misc]


def test_stage_block_selects_what_each_stage_reads():
    s = Mtd1dSettings.from_config(SMALL, "experiments.x")
    assert s.stage_block("lsq") == {
        "seed": 5,
        "L": 6,
        "sigma": 0.4,
        "lsq": {"sigma_known": False, "max_iterations": 30, "starts": 3, "screen_iterations": 5, "keep": 1},
        "spacing": "arbitrary",
    }
    assert s.stage_block("merge") == {} and s.stage_block("pick") == {}
    assert s.stage_block("em")["em"] == SMALL["em"] and s.stage_block("em")["lsq"] == {"sigma_known": False}
    assert s.stage_block("em")["spacing"] == "arbitrary" and "spacing" not in s.stage_block("segment")
    assert "em" not in s.stage_block("segment") and "lsq" not in s.stage_block("segment")
    with pytest.raises(KeyError):
        s.stage_block("plot")


def test_each_stage_depends_only_on_its_declared_settings():
    """Running a stage with only the settings STAGES declares for it (everything else at its
    default) gives the same output as with the complete settings: the rules' `params` are
    complete, so a change they do not see cannot change an output."""
    s = Mtd1dSettings.from_config(SMALL, "experiments.x")
    for stage in ("segment", "lsq", "em", "evaluate"):
        assert s.for_stage(stage) != s  # not vacuous: each stage ignores something
    (m_full, c_full), (m_part, c_part) = segment_moments(s, 1), segment_moments(s.for_stage("segment"), 1)
    assert c_full == c_part and np.array_equal(m_full.s3, m_part.s3) and m_full.n == m_part.n
    m = merge([segment_moments(s, k)[0] for k in range(s.segments)])
    full, part = lsq_restart(s, m, 1), lsq_restart(s.for_stage("lsq"), m, 1)
    assert np.array_equal(full.coef, part.coef) and full.gamma == part.gamma and full.settings == part.settings
    em_full, em_part = em_estimate(s, full, m), em_estimate(s.for_stage("em"), full, m)
    assert np.array_equal(em_full.coef, em_part.coef) and np.array_equal(em_full.trace, em_part.trace)
    assert em_full.settings == em_part.settings == s.stage_block("em")
    assert evaluation(s, 0.1, full, em_full, "x") == evaluation(s.for_stage("evaluate"), 0.1, full, em_full, "x")
    assert set(STAGES) == {"segment", "merge", "lsq", "pick", "em", "evaluate"}


def test_run_all_writes_estimates_in_the_common_format(tmp_path):
    s = Mtd1dSettings.from_config(SMALL, "experiments.small")
    lay = Layout(str(tmp_path), "small")
    metrics = run_all(s, lay)
    lsq = Estimate.load(lay.estimate("lsq"))
    em = Estimate.load(lay.estimate("em"))
    with np.load(lay.estimate("em")) as f:
        assert set(REQUIRED_KEYS) <= set(f.files)
    assert lsq.estimator == "lsq" and em.estimator == "em"
    assert lsq.coef.shape == em.coef.shape == (s.L,)
    # the picked restart is the one with the lowest cost among the restart files
    costs = [float(Estimate.load(lay.lsq_restart(r)).trace[-1]) for r in range(s.lsq.restarts)]
    assert list(lsq.extra["restart_costs"]) == costs and lsq.trace[-1] == min(costs)
    assert int(lsq.extra["restart"]) == int(np.argmin(costs))
    assert lsq.settings == s.stage_block("lsq") and em.settings == s.stage_block("em")
    assert em.trace.size == int(em.extra["iterations"]) <= s.em.iterations
    # spacing arbitrary: 2L shifts + L(L−1)/2 pairs of copies in a patch
    assert em.extra["rho"].shape == (2 * s.L + s.L * (s.L - 1) // 2,)
    assert int(em.extra["samples"]) == 3000  # first of 2 segments
    # metrics.json is the evaluation of these files
    with np.load(lay.moments) as f:
        gamma_true = float(f["gamma_true"])
    assert json.loads(Path(lay.metrics).read_text()) == json.loads(
        json.dumps(evaluation(s, gamma_true, lsq, em, "small"))
    )
    assert metrics["em"]["loglik"] == em.trace[-1]
    trace = json.loads(Path(lay.em_trace).read_text())
    assert trace["loglik"] == list(em.trace) and trace["sigma_used"] == float(em.extra["sigma"])
    # step of length 6: three ones scaled to ‖x‖² = L (rounding of the scale factor only)
    np.testing.assert_allclose(signal_of(s), np.array([1.0, 1, 1, 0, 0, 0]) * np.sqrt(2), rtol=1e-15)


def test_cli_run_overrides_settings(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"experiments": {"small": SMALL}}))
    out = tmp_path / "res" / "small"
    assert (
        main(
            [
                "mtd1d",
                "run",
                "--config",
                str(tmp_path / "c.yaml"),
                "-e",
                "small",
                "--outdir",
                str(out),
                "--em-iterations",
                "2",
                "--lsq-restarts",
                "1",
                "--em-segments",
                "null",
            ]
        )
        == 0
    )
    em = Estimate.load(out / "em.npz")
    assert em.settings["em"]["iterations"] == 2 and em.trace.size <= 2 and int(em.extra["samples"]) == 6000
    assert not (out / "lsq" / "restart_1.npz").exists()
    assert Moments1D.load(out / "moments.npz").n == 6000
    with pytest.raises(SystemExit):  # argparse: not a boolean
        main(["mtd1d", "run", "--config", str(tmp_path / "c.yaml"), "-e", "small", "--lsq-sigma-known", "maybe"])


def test_fit_functions_default_to_the_lsq_block_and_the_spacing_key():
    """fit_lsq / fit_lsq_restart / fit_em without options: the screening and model defaults of the schema."""
    import inspect

    from cryomtd.mtd1d import fit_em, fit_lsq, fit_lsq_restart
    from cryomtd.mtd1d.settings import Lsq1dSettings

    d = Lsq1dSettings()
    for f in (fit_lsq, fit_lsq_restart):
        p = inspect.signature(f).parameters
        assert (p["starts"].default, p["screen_iterations"].default, p["keep"].default) == (
            d.starts,
            d.screen_iterations,
            d.keep,
        )
        assert p["spacing"].default == Mtd1dSettings(seed=0).spacing == "separated"
    assert inspect.signature(fit_em).parameters["spacing"].default == Mtd1dSettings(seed=0).spacing
