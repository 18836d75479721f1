"""The header of a GGUF model file, read in pure Python (no torch, no numpy, no gguf
package), for `validate`: the architecture, context length, block count, vocabulary
size and chat template, without reading the tensors.

A GGUF file opens with the magic ``GGUF``, a version (2 or 3), the tensor count and
the count of metadata key/value pairs, then the pairs: a key (a length-prefixed UTF-8
string), a value type and the value. Arrays hold a type, a count and the elements;
arrays of numbers are skipped by seeking, string arrays (the vocabulary) by reading
each length. Everything read is bounded, so a hostile file costs little.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ftspec.catalog.architectures import GGUF_LOADABLE
from ftspec.core.paths import open_regular

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_KEYS = 1 << 16  # metadata pairs
MAX_STRING = 16 << 20  # one string (a chat template is a few KiB)
MAX_KEY = 1 << 16  # one key's name (real ones are a few dozen bytes)
MAX_ARRAY = 1 << 24  # elements of one array (a vocabulary is some 10^5)
MAX_HEADER = 256 << 20  # bytes of metadata read or skipped, in all
# The only values validate uses; every other value is skipped, not held in memory.
_KEPT = ("general.architecture", "general.name", "tokenizer.chat_template")
_KEPT_SUFFIXES = (".context_length", ".block_count")

# GGUF value types: fixed-size numbers (struct format), 7 bool, 8 string, 9 array.
_NUMBERS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
_U64 = struct.Struct("<Q")

# GGUF spellings transformers renames before looking the architecture up.
_RENAMED = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2",
            "t5encoder": "t5"}


class GGUFError(ValueError):
    """The file is not a GGUF file ftspec can read (the message says why, in words)."""


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    tensor_count: int
    architecture: str | None  # general.architecture, as the file says it
    name: str | None  # general.name
    context_length: int | None  # <arch>.context_length
    block_count: int | None  # <arch>.block_count
    vocab_size: int | None  # how many tokens tokenizer.ggml.tokens holds
    chat_template: str | None  # tokenizer.chat_template

    @property
    def model_type(self) -> str | None:
        """transformers' name for the architecture (its config's model_type)."""
        return transformers_architecture(self.architecture, self.name)

    @property
    def loadable(self) -> bool:
        """Whether transformers can de-quantise and load this architecture."""
        return self.model_type in GGUF_LOADABLE


def transformers_architecture(architecture: str | None, name: str | None = None) -> str | None:
    """The name transformers gives a GGUF architecture (llama.cpp calls mistral models llama)."""
    if architecture is None:
        return None
    if "llama" in architecture and name and "mistral" in name:
        return "mistral"
    return _RENAMED.get(architecture, architecture)


class _Reader:
    def __init__(self, fh: BinaryIO, size: int):
        self.fh = fh
        self.size = size

    def read(self, n: int) -> bytes:
        # What is read counts against the header's limit as what is skipped does.
        if self.fh.tell() + n > MAX_HEADER:
            raise GGUFError(f"its header is over {MAX_HEADER >> 20} MiB")
        data = self.fh.read(n)
        if len(data) != n:
            raise GGUFError("the file ends inside its header")
        return data

    def number(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt)))[0]

    def skip(self, n: int) -> None:
        if self.fh.tell() + n > min(self.size, MAX_HEADER):
            raise GGUFError("the file ends inside its header" if self.fh.tell() + n > self.size
                            else f"its header is over {MAX_HEADER >> 20} MiB")
        self.fh.seek(n, 1)

    def string(self, keep: bool = True, most: int = MAX_STRING, what: str = "a string") -> str | None:
        n = self.number("Q")
        if n > most:
            raise GGUFError(f"{what} in its header is {n} bytes long")
        if not keep:
            self.skip(n)
            return None
        try:  # strictly: the gguf reader transformers loads with refuses what is not UTF-8
            return self.read(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFError(f"{what} in its header is not UTF-8 text (byte {exc.start + 1})") from None

    def skip_strings(self, count: int) -> None:
        """Skip ``count`` strings (a vocabulary): read in blocks, their lengths parsed in memory."""
        buf, at = b"", 0
        for _ in range(count):
            if len(buf) - at < 8:
                buf, at = buf[at:] + self.fh.read(1 << 20), 0
                if len(buf) < 8:
                    raise GGUFError("the file ends inside its header")
            (n,) = _U64.unpack_from(buf, at)
            if n > MAX_STRING:
                raise GGUFError(f"a string in its header is {n} bytes long")
            at += 8 + n
            if at > len(buf):  # the string runs past the block: skip its rest in the file
                self.fh.seek(at - len(buf), 1)
                buf, at = b"", 0
                if self.fh.tell() > MAX_HEADER:
                    raise GGUFError(f"its header is over {MAX_HEADER >> 20} MiB")
        self.fh.seek(-(len(buf) - at), 1)  # give back what was read past the last string
        if self.fh.tell() > MAX_HEADER:
            raise GGUFError(f"its header is over {MAX_HEADER >> 20} MiB")
        if self.fh.tell() > self.size:
            raise GGUFError("the file ends inside its header")

    def value(self, kind: int, keep: bool) -> Any:
        """A value of type ``kind``; an array is returned as its length (elements skipped)."""
        if kind in _NUMBERS:
            return self.number(_NUMBERS[kind])
        if kind == STRING:
            return self.string(keep)
        if kind == ARRAY:
            inner, count = self.number("I"), self.number("Q")
            if count > MAX_ARRAY:
                raise GGUFError(f"an array in its header has {count} elements")
            if inner in _NUMBERS:
                self.skip(count * struct.calcsize(_NUMBERS[inner]))
            elif inner == STRING:
                self.skip_strings(count)
            else:
                raise GGUFError(f"an array in its header holds values of unknown type {inner}")
            return count
        raise GGUFError(f"a value in its header has unknown type {kind}")


def read_header(path: str | Path) -> GGUFHeader:
    """Read the metadata of the GGUF file at ``path`` (raises OSError or GGUFError; a
    FIFO or a device is refused without blocking, as every file ftspec reads)."""
    with open_regular(Path(path)) as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(0)
        r = _Reader(fh, size)
        if fh.read(4) != MAGIC:
            raise GGUFError("not a GGUF file (it does not start with 'GGUF')")
        version = r.number("I")
        if version not in VERSIONS:
            swapped = struct.unpack(">I", struct.pack("<I", version))[0]
            if swapped in VERSIONS:
                raise GGUFError("a big-endian GGUF file; transformers reads little-endian ones")
            raise GGUFError(f"GGUF version {version} (ftspec reads versions {' and '.join(map(str, VERSIONS))})")
        tensors, keys = r.number("Q"), r.number("Q")
        if keys > MAX_KEYS:
            raise GGUFError(f"its header claims {keys} metadata keys")
        values: dict[str, Any] = {}
        seen: set[str] = set()
        for _ in range(keys):
            key = r.string(most=MAX_KEY, what="a key")
            if key in seen:  # transformers' gguf reader refuses a key twice; so does validate
                raise GGUFError(f"its header holds the key {key[:80]!r} twice")
            seen.add(key)
            kind = r.number("I")
            keep = key in _KEPT or key.endswith(_KEPT_SUFFIXES)
            try:
                values[key] = r.value(kind, keep=keep)
            except GGUFError as exc:
                raise GGUFError(f"{exc} (key {key[:80]!r})") from None
    arch = values.get("general.architecture")
    arch = arch if isinstance(arch, str) else None

    def whole(key: str) -> int | None:
        v = values.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None

    name = values.get("general.name")
    template = values.get("tokenizer.chat_template")
    return GGUFHeader(
        version=version, tensor_count=tensors, architecture=arch, name=name if isinstance(name, str) else None,
        context_length=whole(f"{arch}.context_length") if arch else None,
        block_count=whole(f"{arch}.block_count") if arch else None,
        vocab_size=whole("tokenizer.ggml.tokens"),
        chat_template=template if isinstance(template, str) and template.strip() else None,
    )


def gguf_location(base: str, gguf_file: str | None) -> tuple[str, str | None]:
    """The model folder (or hub repository) and the GGUF file in it: ``base`` with
    ``gguf_file``, or a ``base`` that names the .gguf file itself."""
    # A local file: hub repositories name the file in gguf_file.
    if gguf_file is None and base.lower().endswith(".gguf"):
        folder, _, name = base.replace("\\", "/").rpartition("/")
        return folder or ".", name
    return base, gguf_file
