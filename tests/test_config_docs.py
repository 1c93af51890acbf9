"""The config reference and the commented example stay true to the schemas.

docs/config.md is generated from workflow/schemas/ (python -m cryomtd.schema_docs): the
committed file must equal a fresh generation. configs/example.yaml must validate, name
every user key of every block (everything but `advanced:` engine settings, whose list is
the reference), and state each default the schema has.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cryomtd.config import SCHEMA_DIR, load_schema, validate_config
from cryomtd.schema_docs import reference_markdown

REPO = Path(__file__).resolve().parents[1]


def test_reference_is_generated_from_the_schemas():
    assert (REPO / "docs" / "config.md").read_text() == reference_markdown(), (
        "docs/config.md is stale: run `python -m cryomtd.schema_docs > docs/config.md`"
    )


def _user_keys(schema: dict, base: Path, prefix: str = "") -> dict[str, object]:
    """{dotted key: default} of the user tier of a block schema (advanced: left out)."""
    out = {}
    for key, node in schema.get("properties", {}).items():
        if key == "advanced":
            continue
        if "$ref" in node:
            node = load_schema(base / node["$ref"])
        if node.get("type") == "object" and "properties" in node:
            out.update(_user_keys(node, base, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = node.get("default", "<required>")
    return out


def _flat(block: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in block.items():
        if isinstance(value, dict) and key not in ("ctf",):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_example_config_validates_and_shows_every_user_key_with_its_default():
    text = (REPO / "configs" / "example.yaml").read_text()
    config = yaml.safe_load(text)
    validate_config(config, SCHEMA_DIR / "config.schema.yaml")
    for kind, schema_file in (("mtd1d", "mtd1d.schema.yaml"), ("cryo3d", "cryo3d.schema.yaml")):
        # the keys written in the file (defaults not filled), over the experiments of this kind
        # (a 3-D experiment has either `volume` + `micrographs` or `data`: the example shows both)
        shown: dict[str, object] = {}
        for exp in yaml.safe_load(text)["experiments"].values():
            if exp["kind"] == kind:
                shown.update(_flat(exp))
        expected = _user_keys(load_schema(SCHEMA_DIR / schema_file), SCHEMA_DIR)
        missing = sorted(k for k in expected if k not in shown)
        assert not missing, f"configs/example.yaml ({kind}) leaves out user keys {missing}"
        # the example states the defaults (where it departs from one, the departure is deliberate)
        deliberate = {"seed", "kind", "volume.source", "lsq.ell_max"}
        wrong = {
            k: (shown[k], v) for k, v in expected.items() if k not in deliberate and v != "<required>" and shown[k] != v
        }
        assert not wrong, f"configs/example.yaml ({kind}): values differ from the schema defaults {wrong}"
