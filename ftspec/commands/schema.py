"""`ftspec schema`: the published JSON Schemas, and the spec reference in Markdown."""

from __future__ import annotations

import json
from pathlib import Path

from ftspec.commands.output import write_file
from ftspec.plan.artifacts import schemas
from ftspec.spec.reference import markdown_reference

# What `--of` names, and the file each schema is published as in the repository's schema/.
SCHEMA_FILES = {"spec": "ftspec-v1.schema.json", "plan": "plan.schema.json", "manifest": "manifest.schema.json",
                "metrics": "metrics.schema.json"}


def _text(value: dict) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def schema_text(of: str = "spec", markdown: bool = False) -> str:
    """The JSON Schema of a spec, plan.json, manifest.json or metrics.json (``of``), or with
    ``markdown`` the spec reference."""
    if markdown:
        return markdown_reference()
    if of not in SCHEMA_FILES:
        raise ValueError(f"no schema of {of!r} (one of {', '.join(SCHEMA_FILES)})")
    return _text(schemas()[SCHEMA_FILES[of]])


def write_schemas(directory: Path) -> int:
    """Write every published schema into ``directory``; how many. A file that cannot be
    written raises SpecError (those before it are written)."""
    published = schemas()
    for name, value in published.items():
        write_file(directory / name, _text(value))
    return len(published)

