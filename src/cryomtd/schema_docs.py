"""The config reference (``docs/config.md``) generated from the schemas, so it cannot drift.

``python -m cryomtd.schema_docs > docs/config.md`` rewrites it; ``tests/test_config_docs.py``
checks that the committed file equals the output. One table per config block (the
schema files of ``workflow/schemas``), one row per key: dotted name, type, default,
description; keys of an ``advanced:`` sub-block are listed after the user keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryomtd.config import SCHEMA_DIR, load_schema

__all__ = ["BLOCKS", "reference_markdown"]

#: (title, schema file, the config path the block sits at), in reading order.
BLOCKS = [
    ("Top level", "config.schema.yaml", ""),
    ("1-D experiment (`kind: mtd1d`)", "mtd1d.schema.yaml", "experiments.<name>"),
    ("3-D experiment (`kind: cryo3d`)", "cryo3d.schema.yaml", "experiments.<name>"),
    ("`volume`", "volume.schema.yaml", "experiments.<name>.volume"),
    ("`micrographs`", "micrographs.schema.yaml", "experiments.<name>.micrographs"),
    ("`basis`", "basis.schema.yaml", "experiments.<name>.basis"),
    ("`moments`", "moments.schema.yaml", "experiments.<name>.moments"),
    ("`lsq`", "lsq3d.schema.yaml", "experiments.<name>.lsq"),
    ("`em`", "em3d.schema.yaml", "experiments.<name>.em"),
    ("`evaluate`", "evaluate.schema.yaml", "experiments.<name>.evaluate"),
]


def _type(node: dict[str, Any]) -> str:
    if "$ref" in node:
        return f"block ({Path(node['$ref']).stem.split('.')[0]})"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    if "oneOf" in node:
        return " or ".join(_type(n) for n in node["oneOf"])
    t = node.get("type", "")
    return " or ".join(t) if isinstance(t, list) else str(t)


def _default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return "required" if node.get("_required") else "—"
    d = node["default"]
    if d == {}:
        return "(block)"
    return f"`{json.dumps(d, ensure_ascii=False)}`"


def _rows(schema: dict[str, Any], prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    required = set(schema.get("required", []))
    props = schema.get("properties", {})
    nested = []
    for key, node in props.items():
        node = dict(node, _required=key in required)
        name = f"{prefix}{key}"
        if node.get("type") == "object" and "properties" in node:
            nested.append((name, node))
            continue
        desc = " ".join(str(node.get("description", "")).split())
        rows.append((name, _type(node), _default(node), desc))
    for name, node in nested:  # sub-blocks (advanced: last, as in the schema files)
        desc = " ".join(str(node.get("description", "")).split())
        rows.append((name, "block", _default(node), desc))
        rows += _rows(node, f"{name}.")
    return rows


def reference_markdown(schema_dir: Path = SCHEMA_DIR) -> str:
    """The whole reference page as Markdown."""
    out = [
        "# Config reference",
        "",
        "Generated from `workflow/schemas/` by `python -m cryomtd.schema_docs` (do not edit by hand).",
        "A commented example of a full config is `configs/example.yaml`. Unknown keys are errors;",
        "keys under `advanced:` change speed, memory or the optimiser's path, not what is estimated.",
        "",
    ]
    for title, file, where in BLOCKS:
        schema = load_schema(schema_dir / file)
        desc = " ".join(str(schema.get("description", "")).split())
        out += [
            f"## {title}",
            "",
            f"At `{where}`." if where else "",
            desc,
            "",
            "| key | type | default | description |",
            "|---|---|---|---|",
        ]
        for name, typ, default, d in _rows(schema, ""):
            out.append(f"| `{name}` | {typ} | {default} | {d.replace('|', chr(92) + '|')} |")
        out.append("")
    return "\n".join(line for line in out) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
