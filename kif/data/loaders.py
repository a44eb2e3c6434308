"""Read benchmark task files (``.json``, ``.jsonl``, each optionally gzipped) into :class:`Example`s.

Two native layouts are understood (see ``shared/benchmarks/README.md``):

* ``flat``   – a JSON list (or JSON Lines, one item a line) of ``{"id"?, "input", "output"}``
  (Long Sequence benchmark); the prompt is ``input`` as is, since it already holds the
  instruction and ``Answer:``.
* ``superni`` – one Super-NaturalInstructions task object with ``Definition`` and
  ``Instances``; the prompt is :data:`SUPERNI_TEMPLATE` filled with the definition and
  the instance input.

In both, ``output`` may be a string or a non-empty list of acceptable strings; the
first one is the training target, all of them are references when scoring. A task's
``prompt_template`` (e.g. ``"{instruction}\\n{input}"``) composes the prompt from any item
fields instead (and ``definition`` in the superni layout); fields that neither the prompt
nor kif uses are named in one warning line, never dropped silently. A task's ``group_by``
(:class:`GroupBy`) gives each example the group it is scored and sampled with.
"""
from __future__ import annotations

import json
import logging
import math
import random
import re
import string
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from kif.errors import ConfigError, DataError

LAYOUTS = ("auto", "flat", "superni")
GZIP_MAGIC = b"\x1f\x8b"
# Bounds on what a data file may cost: its text (after gunzip, inflated in bounded steps, so
# a gzip bomb stops at the cap) and each item's prompt and answer. The built-in splits are
# at most a few MB with items under 20 000 characters.
MAX_TEXT_BYTES = 256 * 2**20
MAX_ITEM_CHARS = 200_000
MAX_TEMPLATE_WIDTH = 1000  # a prompt_template field's width or precision ({input:>9999999} costs GBs)
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")  # one JSON item a line
log = logging.getLogger("kif")

# Prompt of a SuperNI instance: Definition + input, as in the SuperNI/O-LoRA/SAPT code
# (definition strings joined by a space; positive/negative examples are not used).
SUPERNI_TEMPLATE = (
    "Definition: {definition}\n\nNow complete the following example -\nInput: {input}\nOutput:"
)


@dataclass(frozen=True)
class Example:
    """One instance: ``references[0]`` is the training target, all are scored against.
    ``group``: the examples a joint metric scores together (None: not grouped)."""

    id: str
    prompt: str
    references: tuple[str, ...]
    group: Optional[str] = None


@dataclass(frozen=True)
class GroupBy:
    """How a task's examples group: by the value of an item ``field`` (e.g. a dialogue turn
    id), or by the id up to its last ``id_prefix_sep`` ("d12-t3-area" -> "d12-t3")."""

    field: Optional[str] = None
    id_prefix_sep: Optional[str] = None

    def __post_init__(self):
        given = [v for v in (self.field, self.id_prefix_sep) if v is not None]
        if len(given) != 1 or not all(isinstance(v, str) and v for v in given):
            raise ConfigError("group_by needs exactly one of field: NAME or id_prefix_sep: SEP "
                              "(a non-empty string)")

    def describe(self) -> str:
        return (f"field {self.field}" if self.field is not None
                else f"id up to its last {self.id_prefix_sep!r}")

    def key(self, p: Path, where: str, item: dict) -> str:
        if self.field is not None:
            if self.field not in item:
                raise DataError(f"{p}: {where} lacks '{self.field}' (the task's group_by field)")
            value = item[self.field]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise DataError(f"{p}: {where} '{self.field}' (group_by) must be a string or an "
                                f"integer, got {type(value).__name__}")
            return str(value)
        if "id" not in item:
            raise DataError(f"{p}: {where} lacks 'id' (group_by id_prefix_sep needs ids)")
        head, sep, _ = str(item["id"]).rpartition(self.id_prefix_sep)
        if not sep or not head:
            raise DataError(f"{p}: {where} id {str(item['id'])!r} has no group prefix before "
                            f"{self.id_prefix_sep!r} (group_by id_prefix_sep)")
        return head


def template_fields(template: str) -> list[str]:
    """The field names a prompt template uses; ValueError (with the reason) when it is not
    a template of named fields ("{instruction}\\n{input}"); never the answer, ``output``."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"not a valid template ({e}; write a literal brace as {{{{ or }}}})") from None
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"{{{name}}} is not a field name (write e.g. {{instruction}})")
        if name == "output":
            raise ValueError("{output} is the answer: it cannot be part of the prompt")
        if spec and "{" in spec:
            raise ValueError(f"{{{name}:{spec}}}: nested fields are not supported")
        if spec and any(int(n) > MAX_TEMPLATE_WIDTH for n in re.findall(r"\d+", spec)):
            raise ValueError(f"{{{name}:{spec}}}: a width or precision above {MAX_TEMPLATE_WIDTH} is refused")
        names.append(name)
    if not names:
        raise ValueError("uses no field (e.g. {input})")
    return list(dict.fromkeys(names))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _too_large(p: Path, limit: int) -> DataError:
    return DataError(f"{p}: more than {limit / 2**20:g} MB of text (after gunzip); refused unread "
                     "(split the data or sample it)")


_GUNZIP_STEP = 16 * 2**20


def _gunzip(p: Path, raw: bytes, limit: int) -> bytearray:
    """Every gzip member of ``raw``, inflated in steps of at most 16 MiB up to ``limit``
    bytes: a bomb stops at the cap, never holding more than the cap and one step."""
    out = bytearray()
    data = raw
    try:
        while data:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while not d.eof:
                chunk = d.decompress(data, min(_GUNZIP_STEP, limit + 1 - len(out)))
                data = d.unconsumed_tail
                out += chunk
                if len(out) > limit:
                    raise _too_large(p, limit)
                if not chunk and not data and not d.eof:  # no input left, no progress
                    raise DataError(f"{p}: corrupt or truncated gzip (ends inside a member)")
            data = d.unused_data.lstrip(b"\x00")  # a next member, or the zero padding gzip allows
    except zlib.error as e:
        raise DataError(f"{p}: corrupt or truncated gzip ({_first_line(e)})") from None
    return out


def _read_text(p: Path, limit: Optional[int] = None) -> str:
    """A file's text, gunzipped first when it starts with the gzip magic bytes (whatever its
    suffix), at most ``limit`` (default ``MAX_TEXT_BYTES``) bytes of it. Any failure is a
    one-line :class:`DataError` naming ``p``."""
    limit = MAX_TEXT_BYTES if limit is None else limit
    try:
        if p.stat().st_size > limit:
            raise _too_large(p, limit)
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or _first_line(e)})") from None
    if raw[:2] == GZIP_MAGIC:
        raw = _gunzip(p, raw, limit)
    try:
        return raw.decode("utf-8-sig")  # -sig: tolerate a BOM written by some editors
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text (bad byte at offset {e.start})") from None


def _json_problem(e: json.JSONDecodeError) -> str:
    """`` column C: msg``, or, for json's messages that end in a position ("Unterminated
    string starting at"), ``: msg column C``, so that the sentence is not cut off."""
    if e.msg.endswith(" at"):
        return f": {e.msg} column {e.colno}"
    return f" column {e.colno}: {e.msg}"


def _looks_like_jsonl(text: str) -> bool:
    """Two or more lines that each hold one JSON value: JSON Lines under a .json name."""
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) < 2:
        return False
    try:
        for line in lines[:2]:
            json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return False
    return True


_SURROGATE_ESCAPE = re.compile(r"\\[uU][dD][89a-fA-F]")


def _refuse_lone_surrogates(p: Path, text: str, obj: Any) -> Any:
    """JSON may spell a lone UTF-16 surrogate (``"\\ud800"``): not text, it fails wherever
    the string is encoded. Checked only when the text has such an escape (pairs are fine)."""
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise DataError(f"{p}: a string holds a lone surrogate ({e.object[e.start:e.end]!a}, "
                            "a UTF-16 half); not valid Unicode text") from None
    return obj


def read_json(path: str | Path, max_bytes: Optional[int] = None) -> Any:
    """Parse a JSON file (gzip or not) of at most ``max_bytes`` of text. Any failure is a
    one-line :class:`DataError` naming ``path``."""
    p = Path(path)
    text = _read_text(p, max_bytes)
    try:
        return _refuse_lone_surrogates(p, text, json.loads(text))
    except json.JSONDecodeError as e:
        hint = ""
        if e.msg == "Extra data" and _looks_like_jsonl(text):
            hint = " (this looks like JSON Lines, one item a line: name the file .jsonl or .jsonl.gz)"
        raise DataError(f"{p}: invalid JSON on line {e.lineno}{_json_problem(e)}{hint}") from None
    except RecursionError:
        raise DataError(f"{p}: JSON nested too deeply") from None


def read_jsonl(path: str | Path) -> list:
    """Parse a JSON Lines file (gzip or not): one JSON value a line, blank lines skipped."""
    p = Path(path)
    out = []
    # split at "\n" only: str.splitlines would also cut at U+2028 etc., legal inside JSON strings
    for n, line in enumerate(_read_text(p).split("\n"), 1):
        if not line.strip():
            continue
        try:
            out.append(_refuse_lone_surrogates(p, line, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: invalid JSON on line {n}{_json_problem(e)}") from None
        except RecursionError:
            raise DataError(f"{p}: JSON nested too deeply on line {n}") from None
    return out


def is_jsonl(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(JSONL_SUFFIXES)


def _stem(p: Path) -> str:
    """``test.json.gz`` -> ``test`` (used for default ids)."""
    name = p.name
    for suffix in (".gz", ".jsonl", ".json"):
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


class _Prompt:
    """Builds an item's prompt: ``default`` (from the item's ``input``) or a template over
    the item's fields plus ``context`` (e.g. the SuperNI definition)."""

    def __init__(self, default: Callable[[str], str], template: Optional[str] = None,
                 context: Optional[dict] = None):
        self.default, self.template, self.context = default, template, context or {}
        fields = template_fields(template) if template is not None else ["input"]
        self.fields = [f for f in fields if f not in self.context]

    def __call__(self, p: Path, where: str, item: dict) -> str:
        for key in self.fields:
            value = item[key]
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (isinstance(value, str) or (number and self.template is not None)):
                kind = "a string" if self.template is None else "a string or a number"
                raise DataError(f"{p}: {where} '{key}' must be {kind}, got {type(value).__name__}")
        if self.template is None:
            return self.default(item["input"])
        try:
            return self.template.format_map({**item, **self.context})
        except (ValueError, TypeError) as e:  # e.g. a format spec that does not fit the value
            raise DataError(f"{p}: {where}: prompt_template cannot format it ({_first_line(e)})") from None


def check_unicode(p: Path, where: str, *texts: str) -> None:
    """All text must be encodable: a JSON escape like "\\ud800" (a lone surrogate) reads fine but
    fails the tokenizer or the first write, after output exists. Checked when the data is read."""
    for t in texts:
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise DataError(f"{p}: {where}: text holds a lone surrogate ({t[e.start]!a} at character "
                            f"{e.start}), not valid Unicode") from None


def refuse_empty_labels(task, labels: list[str], test: list[Example]) -> None:
    """A classification task's labels must not be empty text: an empty gold label can never be
    scored (``task`` is a ``kif.data.benchmarks.TaskSpec``; free-form tasks may have empty targets)."""
    if not task.classification:
        return
    for where, golds in (("train", labels), ("test", [e.references[0] for e in test])):
        if any(not g.strip() for g in golds):
            raise DataError(f"{task.split_file(where)}: task '{task.name}' has an empty label (\"\"); "
                            "a classification label must be non-empty text")


def _parse_items(p: Path, items: Any, label: str, where_fmt: str, prompt: _Prompt,
                 group_by: Optional[GroupBy] = None) -> list[Example]:
    """Validate a list of ``{id?, input, output}`` items (``input``: the prompt's fields);
    ``label`` names the list and ``where_fmt`` (with ``{i}``) one item in error messages."""
    if not isinstance(items, list):
        raise DataError(f"{p}: {label} must be a JSON list, got {type(items).__name__}")
    if not items:
        raise DataError(f"{p}: no examples (empty {label})")
    known = {"id", "output", *prompt.fields} | ({group_by.field} if group_by and group_by.field else set())
    stem, out, ignored = _stem(p), [], set()
    for i, item in enumerate(items):
        where = where_fmt.format(i=i)
        if not isinstance(item, dict):
            raise DataError(f"{p}: {where} must be an object, got {type(item).__name__}")
        for key in (*prompt.fields, "output"):
            if key not in item:
                raise DataError(f"{p}: {where} lacks '{key}'")
        text = prompt(p, where, item)
        refs = _references(p, where, item["output"])
        ident = item.get("id", f"{stem}-{i}")
        if isinstance(ident, bool) or not isinstance(ident, (str, int)):
            raise DataError(f"{p}: {where} 'id' must be a string, got {type(ident).__name__}")
        group = group_by.key(p, where, item) if group_by is not None else None
        ignored.update(k for k in item if k not in known)
        check_unicode(p, where, text, *refs, str(ident))
        longest = max(len(text), *map(len, refs))
        if longest > MAX_ITEM_CHARS:
            raise DataError(f"{p}: {where} has a prompt or answer of {longest} characters (more than "
                            f"{MAX_ITEM_CHARS}); shorten it: the model reads at most data.max_input_length tokens")
        out.append(Example(str(ident), text, refs, group))
    if ignored:
        log.warning("%s: ignored field(s) %s (not in the prompt; a task's prompt_template can "
                    "compose them)", p, ", ".join(sorted(map(str, ignored))))
    return out


def _superni(p: Path, data: dict, template: Optional[str], group_by: Optional[GroupBy]) -> list[Example]:
    for key in ("Definition", "Instances"):
        if key not in data:
            raise DataError(f"{p}: SuperNI task lacks '{key}'")
    definition = data["Definition"]
    if isinstance(definition, str):  # lenient: a bare string is one definition line
        definition = [definition]
    if not isinstance(definition, list) or not all(isinstance(d, str) for d in definition):
        raise DataError(f"{p}: 'Definition' must be a list of strings")
    text = " ".join(definition)
    prompt = _Prompt(lambda x: SUPERNI_TEMPLATE.format(definition=text, input=x), template,
                     {"definition": text})
    return _parse_items(p, data["Instances"], "Instances", "Instances[{i}]", prompt, group_by)


def load_task_file(path: str | Path, layout: str = "auto", *, group_by: Optional[GroupBy] = None,
                   prompt_template: Optional[str] = None) -> list[Example]:
    """Load one split file (``.json``, ``.jsonl``, gzipped or not). ``layout="auto"`` picks
    ``flat`` for a JSON list (and any JSON Lines file) and ``superni`` for a JSON object.
    Malformed content raises :class:`DataError` naming the file, the item index and the key."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r} (expected one of {', '.join(LAYOUTS)})")
    if prompt_template is not None:
        try:
            template_fields(prompt_template)
        except ValueError as e:
            raise ConfigError(f"prompt_template {prompt_template!r}: {e}") from None
    p = Path(path)
    data = read_jsonl(p) if is_jsonl(p) else read_json(p)
    if layout == "auto":
        if isinstance(data, list):
            layout = "flat"
        elif isinstance(data, dict):
            layout = "superni"
        else:
            raise DataError(f"{p}: expected a JSON list (flat layout) or object (superni layout), "
                            f"got {type(data).__name__}")
    if layout == "flat":
        label = "JSON Lines file" if is_jsonl(p) else "list"
        return _parse_items(p, data, label, "item {i}", _Prompt(lambda x: x, prompt_template), group_by)
    if not isinstance(data, dict):
        raise DataError(f"{p}: superni layout needs a JSON object, got {type(data).__name__}")
    return _superni(p, data, prompt_template, group_by)


def sample(examples: Sequence[Example], n: int | None, seed: int, what: str = "") -> list[Example]:
    """Deterministic subset of about ``n`` examples drawn with ``random.Random(seed)``, kept in
    their original order. ``None`` or ``n >= len(examples)`` returns them all; ``what`` names
    the examples (e.g. "task dst test") in the one line said when no group fits under ``n``.

    Ungrouped examples: exactly ``n``, a uniform draw (the draw kif always made; pinned by a
    test, so a capped Long Sequence run sees the same examples as before).

    Grouped examples (``Example.group``; an ungrouped example among them is a group of its
    own) are kept or dropped a whole group at a time, and the cap is applied to groups:
    ``k = round(n * G / N)`` of the G groups (N examples), at least one, drawn uniformly.
    Every group is then equally likely to be kept, so the sampled group sizes follow the full
    set's and a joint score is unbiased; the sample holds ``n`` examples on average, not at
    most. (Filling the cap group by group, or stopping at the first group that does not fit,
    both favour small groups, the easiest to get jointly right.)"""
    if n is None or n >= len(examples):
        return list(examples)
    if n < 0:
        raise ConfigError(f"sample size must be >= 0, got {n}")
    if all(e.group is None for e in examples):
        chosen = sorted(random.Random(seed).sample(range(len(examples)), n))
        return [examples[i] for i in chosen]
    if n == 0:
        return []
    members: dict[tuple, list[int]] = {}
    for i, e in enumerate(examples):
        members.setdefault(("group", e.group) if e.group is not None else ("example", i), []).append(i)
    groups = list(members.values())
    k = max(1, math.floor(n * len(groups) / len(examples) + 0.5))
    picked = [groups[g] for g in random.Random(seed).sample(range(len(groups)), min(k, len(groups)))]
    smallest = min(len(m) for m in groups)
    if n < smallest:
        log.warning("%s: the sample cap %d is smaller than the smallest group (%d examples): "
                    "keeping %d whole group(s), %d examples", what or "sample", n, smallest,
                    len(picked), sum(map(len, picked)))
    return [examples[i] for i in sorted(i for m in picked for i in m)]
