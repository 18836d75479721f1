"""Validate a loaded spec against the schema and turn pydantic's errors into
one-line issues at the right place in the right file, with hints."""

from __future__ import annotations

import copy
import math
import re
import typing
from typing import Any

from pydantic import BaseModel, Tag, ValidationError

from ftspec.core.errors import Issue, Pos, did_you_mean
from ftspec.spec.limits import MAX_PROFILES
from ftspec.spec.load import Document, KeyPath, LoadedSpec, Origin, dotted, merge, resolve_plain
from ftspec.spec.schema import Spec


def validate(loaded: LoadedSpec) -> tuple[Spec | None, list[Issue]]:
    """Validate the effective spec, and every profile it defines but did not choose.

    A mistake inside an unused profile is still a mistake: it is reported at its
    line in the profile, whether or not the profile is chosen this time.
    """
    spec, issues = _validate_data(loaded.data, loaded.origin)
    # A value the loader refused (a bad tag, a duplicate) is reported once, by the loader.
    refused = {i.key for i in loaded.issues}
    issues = list(loaded.issues) + [i for i in issues if i.key not in refused]
    base = Document(loaded.data, loaded.where, loaded.root)
    # Each unused profile costs a whole validation: past the limit, that is the error,
    # and they are not validated one by one.
    unused = loaded.unused_profiles
    if len(unused) + len(set(loaded.profiles)) > MAX_PROFILES:
        name, extra = list(unused.items())[max(0, MAX_PROFILES - len(set(loaded.profiles)))]
        issues.append(Issue(extra.root, f"profiles.{name}",
                            f"more than {MAX_PROFILES} profiles ({len(unused) + len(set(loaded.profiles))}); "
                            f"a spec may define at most {MAX_PROFILES}"))
        unused = {}
    for name, overlay in unused.items():
        # Only the sections a profile touches are validated with it (its issues are
        # the only ones kept), so a profile costs what it overrides, not the whole spec.
        touched = set(overlay.data)
        section = Document({k: v for k, v in base.data.items() if k in touched},
                           {p: o for p, o in base.where.items() if p[:1] and p[0] in touched}, base.root)
        variant = merge(section, overlay)
        prefix = f"profiles.{name}"

        def origin(path: KeyPath, variant: Document = variant) -> Origin:
            return _origin_in(variant, path, loaded.root)

        _, profile_issues = _validate_data(variant.data, origin)
        issues.extend(i for i in profile_issues if i.key == prefix or i.key.startswith(prefix + "."))
    return spec, issues


# Sections a spec must have, and what stands in for one that is wrong, so that the rest
# of the spec can still be checked (see salvage). `data` and `format` have no stand-in:
# without them there is nothing to check the data against.
_STAND_INS: dict[str, Any] = {"ftspec": 1, "name": "invalid", "model": {"kind": "tiny"}}
_REQUIRED = ("ftspec", "name", "model", "data", "format")


def salvage(loaded: LoadedSpec) -> tuple[Spec | None, tuple[str, ...]]:
    """A spec that the schema refused, made valid by setting aside what is wrong in it,
    so that its data and templates are still checked in the same run.

    A key the schema does not know is dropped; a section with a wrong value is replaced
    by its default (``training``, ``eval``, ``method``, …) or a stand-in (``model``); a
    wrong optional key of ``data`` or ``format`` is dropped. Returns the spec and the
    dotted keys set aside (the checks that read them are not run, and what they say about
    them is not reported), or None when ``data`` or ``format`` cannot be made valid."""
    data = copy.deepcopy(loaded.data)
    aside: list[str] = []
    for _ in range(16):
        try:
            return Spec.model_validate(data), tuple(aside)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
        changed = False
        for err in errors:
            path = _walk(data, tuple(err["loc"]), err["type"] in ("missing", "extra_forbidden"))
            if not path or not isinstance(path[0], str):
                return None, ()
            top = path[0]
            if top in aside:
                continue
            if len(path) >= 2 and err["type"] == "extra_forbidden" and _drop(data, path):
                aside.append(dotted(path))
            elif top in _STAND_INS:
                data[top] = copy.deepcopy(_STAND_INS[top])
                aside.append(top)
            elif top not in _REQUIRED:
                data.pop(top, None)
                aside.append(top)
            elif (len(path) >= 2 and isinstance(path[1], str) and path[1] not in ("train", "kind")
                  and _drop(data, path[:2])):
                aside.append(dotted(path[:2]))
            else:
                return None, ()
            changed = True
        if not changed:
            return None, ()
    return None, ()


def _drop(data: dict, path: KeyPath) -> bool:
    node: Any = data
    for p in path[:-1]:
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    if isinstance(node, dict) and path[-1] in node:
        del node[path[-1]]
        return True
    return False


def _origin_in(doc: Document, path: KeyPath, root: Pos) -> Origin:
    path = tuple(path)
    while path:
        if path in doc.where:
            return doc.where[path]
        path = path[:-1]
    return Origin(root, None, "")


def _validate_data(data: dict, origin) -> tuple[Spec | None, list[Issue]]:
    try:
        return Spec.model_validate(data), []
    except ValidationError as exc:
        return None, errors_to_issues(exc, data, origin)


# --------------------------------------------------------------------------- error translation


def _walk(data: Any, loc: tuple, keep_last: bool) -> KeyPath:
    """The key path in the data that ``loc`` points at, without pydantic's union tags."""
    path: list = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part in node and not _is_tag(node, part, loc[i + 1:]):
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif last and keep_last and isinstance(part, str):
            path.append(part)
        # anything else is a union member's tag, not a key
    return tuple(path)


def _is_tag(node: dict, part: Any, rest: tuple) -> bool:
    """Whether ``part`` is a union member's tag that is also a key of ``node`` (a hub
    source is tagged `hub` and has a `hub` key): it is when the key holds a plain value
    and the next part of the location is another key of the same mapping."""
    return bool(rest) and not isinstance(node[part], (dict, list)) and isinstance(rest[0], str) and rest[0] in node


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
            else:
                return tp
        else:
            return tp


def _tag_of(member: Any) -> str | None:
    if typing.get_origin(member) is typing.Annotated:
        for meta in typing.get_args(member)[1:]:
            if isinstance(meta, Tag):
                return meta.tag
    return None


def _type_at(loc: tuple) -> Any:
    """The schema's type at ``loc`` (pydantic's loc, union tags included), or None."""
    tp: Any = Spec
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) or next(
                (f for f in tp.model_fields.values() if f.alias == part), None)
            if field is None:
                return None
            tp = field.annotation
            continue
        origin = typing.get_origin(tp)
        if origin is typing.Union:
            member = next((m for m in typing.get_args(tp) if _tag_of(m) == part), None)
            if member is None:
                return None
            tp = member
        elif origin in (list, tuple):
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    return tp


def _fields_at(loc: tuple) -> list[str] | None:
    """The keys the schema allows at ``loc``."""
    tp = _unwrap(_type_at(loc))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or name for name, f in tp.model_fields.items()]
    return None


def _tags_at(loc: tuple) -> list[str]:
    """The kinds a discriminated union at ``loc`` accepts."""
    tp = _unwrap(_type_at(loc))
    if typing.get_origin(tp) is typing.Union:
        return [t for t in (_tag_of(m) for m in typing.get_args(tp)) if t]
    return []


def _got(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return repr(shown)
    return str(value)


_QUOTED = re.compile(r"'([^']*)'")


def _expected(err: dict) -> str:
    """What the schema wanted, as a phrase that fits after 'must be'."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    simple = {
        "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "a whole number",
        "float_parsing": "a number", "float_type": "a number",
        "bool_parsing": "true or false", "bool_type": "true or false",
        "string_type": "a string", "list_type": "a list", "tuple_type": "a list",
        "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
        "none_required": "null",
        "finite_number": "a finite number",
    }
    if kind in simple:
        return simple[kind]
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        return "one of " + expected if "," in expected or " or " in expected else expected
    if kind == "greater_than":
        return f"greater than {ctx['gt']}"
    if kind == "greater_than_equal":
        return f"at least {ctx['ge']}"
    if kind == "less_than":
        return f"less than {ctx['lt']}"
    if kind == "less_than_equal":
        return f"at most {ctx['le']}"
    if kind in ("too_short", "string_too_short"):
        n = ctx.get("min_length", 1)
        if kind == "string_too_short":
            return "a non-empty string" if n == 1 else f"at least {n} characters long"
        return f"a list of at least {n} item{'s' if n != 1 else ''}"
    if kind in ("too_long", "string_too_long"):
        n = ctx.get("max_length")
        return f"at most {n} {'characters' if kind == 'string_too_long' else 'items'} long"
    if kind == "string_pattern_mismatch":
        return f"text matching {ctx.get('pattern')}"
    return err["msg"][0].lower() + err["msg"][1:]


def errors_to_issues(exc: ValidationError, data: dict, origin) -> list[Issue]:
    grouped: dict[KeyPath, list[dict]] = {}
    order: list[KeyPath] = []
    for err in exc.errors(include_url=False):
        keep_last = err["type"] in ("missing", "extra_forbidden")
        path = _walk(data, tuple(err["loc"]), keep_last)
        # Errors of one value under a plain union (int or 'epoch') become one message.
        key = path + ((err["type"],) if keep_last else ())
        if key not in grouped:
            grouped[key] = []
            order.append(key)
        grouped[key].append(err)
    issues = []
    for key in order:
        errs = grouped[key]
        path = key[:-1] if errs[0]["type"] in ("missing", "extra_forbidden") else key
        issues.append(_issue(path, errs, data, origin))
    return issues


def _value_at(data: Any, path: KeyPath) -> Any:
    for p in path:
        data = data[p]
    return data


def _issue(path: KeyPath, errs: list[dict], data: dict, origin) -> Issue:
    err = errs[0]
    kind = err["type"]
    o: Origin = origin(path)
    exact = o.key == dotted(path) or (o.key.endswith("." + dotted(path)) if path else False)
    key = o.key if exact and o.key else dotted(path)

    if kind == "missing":
        parent = origin(path[:-1])
        where = parent.key_pos or parent.pos
        parent_path = dotted(path[:-1])
        # Inside a profile or a base spec, name the key where it would be written.
        if parent.key and parent_path and parent.key.endswith(parent_path) and parent.key != parent_path:
            key = f"{parent.key}.{path[-1]}"
        return Issue(where, key, "required key is missing")

    if kind == "extra_forbidden":
        allowed = _fields_at(tuple(err["loc"][:-1])) or []
        hint = did_you_mean(path[-1], allowed)
        if hint is None and len(path) == 1:  # a key indented too little to be in its section
            owner = next((name for name in _fields_at(()) or [] if path[0] in (_fields_at((name,)) or [])), None)
            if owner:
                hint = f"'{path[0]}' is a key of '{owner}': indent it under '{owner}:'"
        return Issue(o.key_pos or o.pos, key, "unknown key", hint)

    value = err.get("input")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        container = _value_at(data, path)
        ctx = err.get("ctx") or {}
        expected = _QUOTED.findall(ctx.get("expected_tags", "")) or _tags_at(tuple(err["loc"]))
        disc = "name" if isinstance(container, dict) and "name" in container and "kind" not in container else "kind"
        if isinstance(container, str) and path == ("method",):  # `method: lora`, `method: dpo`
            return _method_string(o, key, container, expected)
        if isinstance(container, str):  # a short form such as `adapter: lora`
            return Issue(o.pos, key, f"unknown kind {_got(container)}; expected {_or(expected)}",
                         did_you_mean(container, expected))
        if kind == "union_tag_invalid" and isinstance(container, dict) and disc in container:
            o2 = origin(path + (disc,))
            got = container[disc]
            return Issue(o2.pos, f"{key}.{disc}", f"unknown {disc} {_got(got)}; expected {_or(expected)}",
                         did_you_mean(str(got), expected))
        if not isinstance(container, dict):
            return Issue(o.pos, key, f"must be a mapping with '{disc}: …' ({_or(expected)}) (got {_got(container)})")
        return Issue(o.pos, key, f"needs '{disc}:' to say which one ({_or(expected)})")

    if kind in ("template", "source", "metric"):
        return Issue(o.pos, key, f"{err['msg']} (got {_got(value)})")

    if kind == "value_error":
        message = str((err.get("ctx") or {}).get("error", err["msg"]))
        return Issue(o.pos, key, message)

    if key.endswith("name") and kind == "string_pattern_mismatch" and len(path) == 1:
        return Issue(o.pos, key, "must be lower-case letters, digits, '.', '_' or '-', starting with a letter or digit "
                     f"(got {_got(value)})")

    phrases = []
    for e in errs:
        phrase = _expected(e)
        if phrase not in phrases:
            phrases.append(phrase)
    literal_choices = [c for e in errs if e["type"] == "literal_error"
                       for c in _QUOTED.findall((e.get("ctx") or {}).get("expected", ""))]
    hint = did_you_mean(str(value), literal_choices) if literal_choices and isinstance(value, str) else None
    if hint is None and any(e["type"] in _NUMBER_ERRORS for e in errs):
        hint = _number_hint(value)
    return Issue(o.pos, key, f"must be {' or '.join(phrases)} (got {_got(value)})", hint)


# Where the schema wanted a number: text that reads as one was quoted (the one rule, for
# every field: a quoted value is text; see ftspec.spec.schema.Number).
_NUMBER_ERRORS = {"int_type", "int_parsing", "float_type", "float_parsing"}


def _number_hint(value: Any) -> str | None:
    """What to write where text stands for a number: without the quotes when the text, unquoted,
    is a YAML number; otherwise the number in YAML's spelling (``1_000`` and ``١٢`` are text in
    YAML 1.2, though Python reads them as numbers)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    text = value.strip()
    try:
        plain = resolve_plain(text)
    except ValueError:  # a number out of a spec's range: the schema says so
        return None
    if isinstance(plain, (int, float)) and not isinstance(plain, bool):
        return f"a quoted value is text: write {text} without quotes"
    spelled = str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)
    return f"YAML reads {text} as text, not a number: write {spelled}"


_ADAPTERS = ("full", "lora", "qlora")


def _method_string(o: Origin, key: str, value: str, kinds: list[str]) -> Issue:
    """``method`` is a mapping: the objective (``kind``) and what is trained (``adapter``);
    a name given in its place says which of the two it meant."""
    word = value.strip().lower()
    if word in _ADAPTERS:
        return Issue(o.pos, key, f"'{value}' is an adapter, not a method: write method.adapter: {word}",
                     f"e.g. method: {{kind: sft, adapter: {word}}}")
    if word in kinds:
        return Issue(o.pos, key, f"'{value}' is the method's kind: write method.kind: {word}",
                     f"e.g. method: {{kind: {word}}}")
    close = did_you_mean(word, kinds + list(_ADAPTERS))
    return Issue(o.pos, key, f"must be a mapping with 'kind: …' ({_or(kinds)}) "
                 f"and 'adapter: …' ({_or(list(_ADAPTERS))}) (got {_got(value)})", close)


def _or(items: list[str]) -> str:
    quoted = [f"'{i}'" for i in items]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]
