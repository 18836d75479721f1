"""Load a spec: YAML with the position of every key and value (:mod:`.positioned`), then
``extends``, ``profiles``, stages and ``--set`` overrides, in that order (:mod:`.layers`).

The result is a :class:`LoadedSpec`: the effective document, before validation, with an
:class:`Origin` for every key path saying which file, line and layer the value came from.
"""

from ftspec.spec.limits import MAX_DEPTH, MAX_NODES, MAX_PROFILES, MAX_SPEC_BYTES, MAX_STAGES
from ftspec.spec.load.document import (
    Document,
    KeyPath,
    LoadedSpec,
    LoadedStage,
    Origin,
    deep_copy,
    display_path,
    dotted,
    merge,
    relabel,
    subdocument,
)
from ftspec.spec.load.layers import load, parse_set
from ftspec.spec.load.positioned import MAX_FLOAT, MAX_INT_DIGITS, parse_yaml, read_document, resolve_plain
from ftspec.spec.load.stages import STAGE_KEYS, STAGE_MERGES, STAGE_REPLACES, put_stage, split_stages

__all__ = [
    "MAX_DEPTH", "MAX_FLOAT", "MAX_INT_DIGITS", "MAX_NODES", "MAX_PROFILES", "MAX_SPEC_BYTES", "MAX_STAGES",
    "STAGE_KEYS", "STAGE_MERGES", "STAGE_REPLACES",
    "Document", "KeyPath", "LoadedSpec", "LoadedStage", "Origin",
    "deep_copy", "display_path", "dotted", "load", "merge", "parse_set", "parse_yaml", "put_stage",
    "read_document", "relabel", "resolve_plain", "split_stages", "subdocument",
]
