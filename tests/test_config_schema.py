"""The config schema stops a bad config before any job and names the offending key."""

from __future__ import annotations

import copy

import pytest
import yaml
from snakemake.utils import validate

SCHEMA = "workflow/schemas/config.schema.yaml"


@pytest.fixture()
def default_config(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    with open(repo_root / "config.yaml") as fh:
        return yaml.safe_load(fh)


def test_default_config_is_valid(default_config):
    validate(copy.deepcopy(default_config), SCHEMA)


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda c: c["experiments"]["mtd1d_demo"].update(bogus_key=1), "bogus_key"),
        (lambda c: c["experiments"]["mtd1d_demo"].update(seed="one"), "seed"),
        (lambda c: c["experiments"]["mtd1d_demo"].pop("seed"), "seed"),
        (lambda c: c["experiments"]["mtd1d_demo"].update(kind="2d"), "kind"),
        (lambda c: c.update(unknown_top=1), "unknown_top"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(default_config, mutate, needle):
    cfg = copy.deepcopy(default_config)
    mutate(cfg)
    with pytest.raises(Exception) as exc:
        validate(cfg, SCHEMA)
    assert needle in str(exc.value)
