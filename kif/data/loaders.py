"""Read benchmark task files (plain ``.json`` or gzip ``.json.gz``) into :class:`Example`s.

Two native layouts are understood (see ``shared/benchmarks/README.md``):

* ``flat``   – a JSON list of ``{"id"?, "input", "output"}`` (Long Sequence benchmark);
  the prompt is ``input`` as is, since it already holds the instruction and ``Answer:``.
* ``superni`` – one Super-NaturalInstructions task object with ``Definition`` and
  ``Instances``; the prompt is :data:`SUPERNI_TEMPLATE` filled with the definition and
  the instance input.

In both, ``output`` may be a string or a non-empty list of acceptable strings; the
first one is the training target, all of them are references when scoring.
"""
from __future__ import annotations

import gzip
import json
import random
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from kif.errors import ConfigError, DataError

LAYOUTS = ("auto", "flat", "superni")
GZIP_MAGIC = b"\x1f\x8b"

# Prompt of a SuperNI instance: Definition + input, as in the SuperNI/O-LoRA/SAPT code
# (definition strings joined by a space; positive/negative examples are not used).
SUPERNI_TEMPLATE = (
    "Definition: {definition}\n\nNow complete the following example -\nInput: {input}\nOutput:"
)


@dataclass(frozen=True)
class Example:
    """One instance: ``references[0]`` is the training target, all are scored against."""

    id: str
    prompt: str
    references: tuple[str, ...]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def read_json(path: str | Path) -> Any:
    """Parse a JSON file, gunzipping it first when it starts with the gzip magic bytes
    (whatever its suffix). Any failure is a one-line :class:`DataError` naming ``path``."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or _first_line(e)})") from None
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(f"{p}: corrupt or truncated gzip ({_first_line(e)})") from None
    try:
        text = raw.decode("utf-8-sig")  # -sig: tolerate a BOM written by some editors
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text (bad byte at offset {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def _stem(p: Path) -> str:
    """``test.json.gz`` -> ``test`` (used for default ids)."""
    name = p.name
    for suffix in (".gz", ".json"):
        name = name.removesuffix(suffix)
    return name


def _references(p: Path, where: str, output: Any) -> tuple[str, ...]:
    if isinstance(output, str):
        return (output,)
    if not isinstance(output, list):
        raise DataError(f"{p}: {where} 'output' must be a string or a list of strings, "
                        f"got {type(output).__name__}")
    if not output:
        raise DataError(f"{p}: {where} 'output' is an empty list")
    for j, ref in enumerate(output):
        if not isinstance(ref, str):
            raise DataError(f"{p}: {where} 'output'[{j}] must be a string, "
                            f"got {type(ref).__name__}")
    return tuple(output)


def _parse_items(p: Path, items: Any, label: str, where_fmt: str, prompt_of) -> list[Example]:
    """Validate a list of ``{id?, input, output}`` items; ``label`` names the list and
    ``where_fmt`` (with ``{i}``) one item in error messages."""
    if not isinstance(items, list):
        raise DataError(f"{p}: {label} must be a JSON list, got {type(items).__name__}")
    if not items:
        raise DataError(f"{p}: no examples (empty {label})")
    stem, out = _stem(p), []
    for i, item in enumerate(items):
        where = where_fmt.format(i=i)
        if not isinstance(item, dict):
            raise DataError(f"{p}: {where} must be an object, got {type(item).__name__}")
        for key in ("input", "output"):
            if key not in item:
                raise DataError(f"{p}: {where} lacks '{key}'")
        if not isinstance(item["input"], str):
            raise DataError(f"{p}: {where} 'input' must be a string, "
                            f"got {type(item['input']).__name__}")
        refs = _references(p, where, item["output"])
        ident = item.get("id", f"{stem}-{i}")
        if isinstance(ident, bool) or not isinstance(ident, (str, int)):
            raise DataError(f"{p}: {where} 'id' must be a string, got {type(ident).__name__}")
        out.append(Example(str(ident), prompt_of(item["input"]), refs))
    return out


def _superni(p: Path, data: dict) -> list[Example]:
    for key in ("Definition", "Instances"):
        if key not in data:
            raise DataError(f"{p}: SuperNI task lacks '{key}'")
    definition = data["Definition"]
    if isinstance(definition, str):  # lenient: a bare string is one definition line
        definition = [definition]
    if not isinstance(definition, list) or not all(isinstance(d, str) for d in definition):
        raise DataError(f"{p}: 'Definition' must be a list of strings")
    text = " ".join(definition)
    return _parse_items(p, data["Instances"], "Instances", "Instances[{i}]",
                        lambda x: SUPERNI_TEMPLATE.format(definition=text, input=x))


def load_task_file(path: str | Path, layout: str = "auto") -> list[Example]:
    """Load one split file. ``layout="auto"`` picks ``flat`` for a JSON list and
    ``superni`` for a JSON object. Malformed content raises :class:`DataError`
    naming the file, the item index and the key."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r} (expected one of {', '.join(LAYOUTS)})")
    p = Path(path)
    data = read_json(p)
    if layout == "auto":
        if isinstance(data, list):
            layout = "flat"
        elif isinstance(data, dict):
            layout = "superni"
        else:
            raise DataError(f"{p}: expected a JSON list (flat layout) or object (superni layout), "
                            f"got {type(data).__name__}")
    if layout == "flat":
        return _parse_items(p, data, "list", "item {i}", lambda x: x)
    if not isinstance(data, dict):
        raise DataError(f"{p}: superni layout needs a JSON object, got {type(data).__name__}")
    return _superni(p, data)


def sample(examples: Sequence[Example], n: int | None, seed: int) -> list[Example]:
    """Deterministic subset of ``n`` examples drawn with ``random.Random(seed)``, kept in
    their original order. ``None`` or ``n >= len(examples)`` returns them all."""
    if n is None or n >= len(examples):
        return list(examples)
    if n < 0:
        raise ConfigError(f"sample size must be >= 0, got {n}")
    chosen = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in chosen]
