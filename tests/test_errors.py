"""Bad input gives one clear line naming the file or config key, never a traceback.

The CLI cases drive ``cryomtd.cli.main`` (and once the installed ``cryomtd`` entry point
through a subprocess); the config cases run the real ``snakemake -n`` on the repository's
Snakefile in a temporary working directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import yaml
from conftest import snakemake_command

from cryomtd.cli import main
from cryomtd.io import InputError

pytestmark = pytest.mark.filterwarnings("ignore:Data array contains NaN values:RuntimeWarning")

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
L = 5


def write_micrograph(path: Path, image: np.ndarray, info: dict | str | None = None) -> Path:
    """A float32 MRC micrograph (written with mrcfile directly: NaN allowed) and its side file."""
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(image.astype(np.float32))
    text = info if isinstance(info, str) else json.dumps(info or {"sigma": 0.5, "L": L, "pixel_size": 1.0})
    path.with_suffix(".json").write_text(text)
    return path


@pytest.fixture()
def noisy(tmp_path) -> Path:
    return write_micrograph(tmp_path / "0.mrc", np.random.default_rng(0).standard_normal((30, 30)))


def cli(capsys, *args: str) -> tuple[int, str]:
    """Exit status and stderr of ``cryomtd ARGS`` run in-process."""
    capsys.readouterr()
    rc = main(list(args))
    return rc, capsys.readouterr().err


def one_error_line(err: str) -> str:
    """The single ``error:`` line of a failed command (and no traceback)."""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


EM_FAST = ("--iterations", "1", "--grid-step", "60", "--backend", "numpy", "--threads", "1")


# ---------------------------------------------------------------- a: non-finite micrograph pixels
def test_em_refuses_a_micrograph_with_nan_and_inf(tmp_path, capsys):
    img = np.random.default_rng(1).standard_normal((30, 30))
    img[3, 4] = img[20, 7] = np.nan
    img[25, 25] = np.inf
    mic = write_micrograph(tmp_path / "bad.mrc", img)
    rc, err = cli(capsys, "em", str(mic), "--out", str(tmp_path / "out"), *EM_FAST)
    assert rc != 0
    assert one_error_line(err).endswith(f"error: {mic}: micrograph holds 3 non-finite pixels (NaN/Inf)")


def test_the_entry_point_exits_nonzero_without_a_traceback(tmp_path):
    img = np.zeros((30, 30))
    img[0, 0] = np.nan
    mic = write_micrograph(tmp_path / "bad.mrc", img)
    proc = subprocess.run(
        [sys.executable, "-m", "cryomtd.cli", "em", str(mic), "--out", str(tmp_path / "o"), *EM_FAST],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert one_error_line(proc.stderr) == f"cryomtd em: error: {mic}: micrograph holds 1 non-finite pixels (NaN/Inf)"


# ---------------------------------------------------------------- b: a window too large for memory
def test_moments_window_too_large_for_memory_is_refused_before_allocating(noisy, tmp_path, capsys):
    rc, err = cli(
        capsys, "moments", str(noisy), "--window", "300", "--out", str(tmp_path / "m.npz"), "--backend", "numpy"
    )
    assert rc != 0
    line = one_error_line(err)
    assert "moments.window (--window) = 300" in line
    # (2·300 − 1)⁴ float64 = 0.94 TiB for the dense a3 alone, ~13× that with its index maps
    assert f"the dense a3 alone is (2W−1)⁴ float64 = {599**4 * 8 / 2**30:.1f} GiB" in line and "of memory" in line
    assert not (tmp_path / "m.npz").exists()


def test_memory_check_names_the_largest_window_that_fits(monkeypatch):
    from cryomtd.moments import autocorr2d

    monkeypatch.setattr(autocorr2d, "_physical_memory", lambda: 40 * 2**20)  # a 40 MiB machine
    image = np.random.default_rng(2).standard_normal((64, 64))
    with pytest.raises(
        InputError,
        match=r"moments.window \(--window\) = 30: .* 40.0 MiB of memory; "
        r"the largest window that fits is about (\d+)",
    ) as err:
        autocorr2d.autocorrelations_2d(image, 30, backend="numpy")
    fits = int(str(err.value).split("fits is about ")[1].split()[0])
    assert autocorr2d.memory_needed(fits, 64, 64) <= 40 * 2**20 < autocorr2d.memory_needed(fits + 1, 64, 64)
    autocorr2d.autocorrelations_2d(image, fits, backend="numpy")  # the suggested window runs


# ---------------------------------------------------------------- c: bad side-file fields
@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("L", "eleven", "field 'L': expected a positive integer, got 'eleven'"),
        ("L", 0, "field 'L': expected a positive integer, got 0"),
        ("L", 5.5, "field 'L': expected a positive integer, got 5.5"),
        ("sigma", -0.5, "field 'sigma': expected a positive finite number, got -0.5"),
        ("sigma", 0, "field 'sigma': expected a positive finite number, got 0"),
        ("sigma", float("nan"), "field 'sigma': expected a positive finite number, got nan"),
        ("sigma", float("inf"), "field 'sigma': expected a positive finite number, got inf"),
        ("sigma", None, "field 'sigma': expected a positive finite number, got None"),
        ("pixel_size", -1.0, "field 'pixel_size': expected a positive finite number, got -1.0"),
    ],
)
def test_em_side_file_fields_are_checked(tmp_path, capsys, field, value, expected):
    info = {"sigma": 0.5, "L": L, "pixel_size": 1.0, field: value}
    mic = write_micrograph(
        tmp_path / "0.mrc", np.random.default_rng(3).standard_normal((30, 30)), json.dumps(info)
    )  # NaN/Infinity as Python's json writes them
    rc, err = cli(capsys, "em", str(mic), "--out", str(tmp_path / "out"), *EM_FAST)
    assert rc != 0
    assert one_error_line(err).endswith(f"error: {mic.with_suffix('.json')}: {expected}")


def test_em_side_file_missing_field_and_bad_json(tmp_path, capsys):
    mic = write_micrograph(tmp_path / "0.mrc", np.zeros((30, 30)), json.dumps({"L": L}))
    rc, err = cli(capsys, "em", str(mic), "--out", str(tmp_path / "out"), *EM_FAST)
    missing = "0.json: missing field 'sigma' (written by cryomtd prepare or simulate; or give --sigma and --L)"
    assert rc != 0 and missing in one_error_line(err)
    mic.with_suffix(".json").write_text('{"sigma": 0.5, "L": ')
    rc, err = cli(capsys, "em", str(mic), "--out", str(tmp_path / "out"), *EM_FAST)
    assert rc != 0 and "0.json: not valid JSON" in one_error_line(err)


@pytest.mark.parametrize(
    "info, expected",
    [
        ({"n_particles": "ten", "size": 64}, "field 'n_particles': expected an integer >= 0, got 'ten'"),
        ({"n_particles": 10, "size": 0}, "field 'size': expected a positive integer, got 0"),
        ({"n_particles": 10, "size": [64, -1]}, "field 'size': expected a positive integer, got -1"),
        ({"n_particles": 10, "size": 64, "L": "eleven"}, "field 'L': expected a positive integer, got 'eleven'"),
        ({"size": 64}, "missing field 'n_particles'"),
    ],
)
def test_evaluation_side_file_fields_are_checked(tmp_path, info, expected):
    from cryomtd.evaluate.metrics import true_gamma

    p = tmp_path / "0.json"
    p.write_text(json.dumps(info))
    with pytest.raises(InputError, match="^" + str(p) + ": " + expected.replace("[", r"\[")):
        true_gamma([p], L)
    p.write_text(json.dumps({"n_particles": 10, "size": [64, 32]}))
    assert true_gamma([p], L) == pytest.approx(10 * L**2 / (64 * 32))


# ---------------------------------------------------------------- d: a corrupt EM checkpoint
def test_corrupt_em_checkpoint_names_the_file_and_the_remedy(noisy, tmp_path, capsys):
    ck = tmp_path / "ck" / "state.npz"
    out = tmp_path / "out"
    assert cli(capsys, "em", str(noisy), "--out", str(out), "--checkpoint", str(ck), *EM_FAST)[0] == 0
    data = ck.read_bytes()
    for broken in (data[: len(data) // 2], b"not a checkpoint"):  # killed mid-copy; overwritten
        ck.write_bytes(broken)
        rc, err = cli(
            capsys, "em", str(noisy), "--out", str(out), "--checkpoint", str(ck), "--iterations", "2", *EM_FAST[2:]
        )
        assert rc != 0
        line = one_error_line(err)
        assert f"error: {ck}: unreadable EM checkpoint (" in line and line.endswith("delete it to start afresh")
    ck.unlink()  # the remedy the message gives works
    assert cli(capsys, "em", str(noisy), "--out", str(out), "--checkpoint", str(ck), *EM_FAST)[0] == 0


# ---------------------------------------------------------------- e, f: the workflow config
def snakemake_dry_run(workdir: Path, config_text: str) -> subprocess.CompletedProcess:
    (workdir / "config.yaml").write_text(config_text)
    cmd = snakemake_command(workdir, "-n", cores=1)
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)


def experiment(**em) -> dict:
    return {
        "experiments": {
            "demo": {"kind": "cryo3d", "seed": 1, "volume": {"source": "data/structures/5PTI.pdb", "L": 7}, "em": em}
        }
    }


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in out and 'File "' not in out, out
    return [ln for ln in out.splitlines() if ln.startswith("error: ")]


@pytest.mark.slow
def test_yaml_syntax_error_in_the_config_is_one_line_with_its_line(tmp_path):
    text = (
        "experiments:\n  demo:\n    kind: cryo3d\n    seed: 1\n    volume: {source: x.pdb, L: 7\n"
        "    em:\n      grid_step: 30\n"
    )
    proc = snakemake_dry_run(tmp_path, text)
    assert error_lines(proc) == [
        "error: config.yaml, line 6, column 7: invalid YAML: expected ',' or '}', but got ':' "
        "(in a flow mapping that starts at line 5, column 13)"
    ]


@pytest.mark.slow
def test_unknown_key_and_wrong_type_in_the_config_name_the_key(tmp_path):
    proc = snakemake_dry_run(tmp_path, yaml.safe_dump(experiment(grid_stp=30, iterations="x")))
    assert error_lines(proc) == [
        "error: config: experiments.demo.em: unknown key 'grid_stp' (did you mean 'grid_step'?)",
        "error: config: experiments.demo.em.iterations: expected integer, got 'x'",
    ]


@pytest.mark.parametrize(
    "cfg, lines",
    [
        (experiment(grid_step="x"), ["config: experiments.demo.em.grid_step: expected number, got 'x'"]),
        (experiment(grid_step=0), ["config: experiments.demo.em.grid_step: expected a value > 0, got 0"]),
        (
            experiment(advanced={"backend": "cuda"}),
            [
                "config: experiments.demo.em.advanced.backend: expected one of auto, numpy, torch-cpu, "
                "torch-cuda, got 'cuda'"
            ],
        ),
        (
            {"experiments": {"demo": {"kind": "cryo3x", "seed": 1, "L": 3}}},
            ["config: experiments.demo.kind: expected one of mtd1d, cryo3d, got 'cryo3x'"],
        ),
        (
            {"experiments": {"one": {"kind": "mtd1d", "seed": 1, "L": "x"}}, "result_dir": "r"},
            [
                "config: unknown key 'result_dir' (did you mean 'results_dir'?)",
                "config: experiments.one.L: expected integer, got 'x'",
            ],
        ),
        (
            {
                "experiments": {
                    "d": {"kind": "cryo3d", "volume": {"source": "x.pdb", "L": 7}, "micrographs": {"spacing": "wide"}}
                }
            },
            [
                "config: experiments.d: missing required key 'seed'",
                "config: experiments.d.micrographs.spacing: expected one of separated, nonoverlapping; "
                "or integer >= 1, got 'wide'",
            ],
        ),
        (
            {"experiments": {"a b": {"kind": "mtd1d", "seed": 1}}},
            ["config: experiments: invalid name 'a b': expected a name matching ^[A-Za-z0-9][A-Za-z0-9_-]*$"],
        ),
    ],
)
def test_validate_config_gives_one_line_per_error_at_the_deepest_path(cfg, lines):
    from cryomtd.config import ConfigError, validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(cfg, SCHEMA)
    assert err.value.lines == lines


def test_the_shipped_configs_validate():
    from cryomtd.config import validate_config

    for path in [REPO / "config.yaml", *sorted((REPO / "configs").glob("*.yaml"))]:
        validate_config(yaml.safe_load(path.read_text()), SCHEMA)
