"""Atomic writes, seeding and config defaults: the conventions every stage relies on."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from cryomtd.config import SCHEMA_DIR, fill_defaults, schema_defaults
from cryomtd.io import InputError, atomic_path, read_json, read_npz, save_npz, write_json
from cryomtd.seeding import rng


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "out.npz"
    save_npz(target, a=np.arange(3))
    assert np.array_equal(np.load(target)["a"], np.arange(3))
    assert [p.name for p in target.parent.iterdir()] == ["out.npz"]
    write_json(tmp_path / "m.json", {"x": np.float64(1.5), "y": np.arange(2)})
    assert read_json(tmp_path / "m.json") == {"x": 1.5, "y": [0, 1]}


def test_rng_depends_only_on_seed_stage_index():
    a = rng(7, "simulate", 3).standard_normal(5)
    b = rng(7, "simulate", 3).standard_normal(5)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, rng(7, "simulate", 4).standard_normal(5))
    assert not np.array_equal(a, rng(7, "restart", 3).standard_normal(5))
    assert not np.array_equal(a, rng(8, "simulate", 3).standard_normal(5))


def test_schema_defaults_fill_nested_experiments(repo_root):
    cfg = {"experiments": {"e": {"kind": "mtd1d", "seed": 0}}}
    fill_defaults(cfg, repo_root / "workflow/schemas/config.schema.yaml")
    assert cfg["experiments"]["e"]["L"] == 21


def test_schema_defaults_of_a_block_follow_refs_and_nesting(repo_root):
    """The helper finds the checkout's schemas from the editable install and reads the defaults
    as written there (independently: the YAML read here by hand)."""
    assert SCHEMA_DIR == repo_root / "workflow" / "schemas"
    assert schema_defaults("mtd1d")["L"] == 21
    assert schema_defaults("mtd1d.schema.yaml") == schema_defaults("mtd1d")
    raw = yaml.safe_load((repo_root / "workflow/schemas/moments.schema.yaml").read_text())
    noise = raw["properties"]["noise"]["properties"]
    assert schema_defaults("moments", "noise") == {k: v["default"] for k, v in noise.items() if "default" in v}
    # through a $ref: cryo3d.schema.yaml's `em` property refers to em3d.schema.yaml
    assert schema_defaults("cryo3d", "em") == schema_defaults("em3d")
    assert schema_defaults("em3d")["grid_step"] == 30.0
    assert schema_defaults("no_such_block") == {}
    with pytest.raises(KeyError, match="nope"):
        schema_defaults("moments", "nope")


def test_read_npz_roundtrip_and_errors_name_the_file(tmp_path):
    a = np.arange(6.0).reshape(2, 3)
    save_npz(tmp_path / "a.npz", a=a, n=np.int64(3))
    got = read_npz(tmp_path / "a.npz", ("a",))
    np.testing.assert_array_equal(got["a"], a)
    assert int(got["n"]) == 3 and set(got) == {"a", "n"}
    (tmp_path / "bad.npz").write_text("not a zip")
    for path, required, needle in [
        (tmp_path / "none.npz", (), "not found"),
        (tmp_path / "bad.npz", (), "not a readable"),
        (tmp_path / "a.npz", ("a", "coef"), "coef"),
    ]:
        with pytest.raises(InputError) as err:
            read_npz(path, required)
        assert str(path) in str(err.value) and needle in str(err.value)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_outputs_get_the_umask_permissions(tmp_path, umask, mode):
    """A new file under umask u has mode 0o666 & ~u, however the temporary file was created."""
    import os
    import stat

    old = os.umask(umask)
    try:
        save_npz(tmp_path / "a.npz", a=np.arange(3))
        write_json(tmp_path / "b.json", {"x": 1})
        with open(tmp_path / "plain.txt", "w"):  # independent reference: an ordinary open()
            pass
    finally:
        os.umask(old)
    for name in ("a.npz", "b.json", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_current_umask_reads_without_changing_it():
    import os

    from cryomtd.io import current_umask

    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert current_umask() == 0o027
    finally:
        os.umask(old)


def test_log_to_writes_the_full_traceback_of_a_failed_script(tmp_path):
    """A rule script that raises leaves the whole traceback (frames and message) in its log."""
    import subprocess
    import sys

    script = tmp_path / "rule_script.py"
    log = tmp_path / "logs" / "rule.log"
    script.write_text(
        "from cryomtd.io import log_to\n"
        "def inner_stage():\n"
        "    raise ValueError('boom in the stage')\n"
        f"with log_to({str(log)!r}):\n"
        "    print('started')\n"
        "    inner_stage()\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    text = log.read_text()
    assert "started" in text and "stage failed" in text
    assert "Traceback (most recent call last)" in text
    assert "inner_stage" in text and "ValueError: boom in the stage" in text
