"""The parser of kif's tagged generation formats (``gen_format: conditioned`` and ``tagged``): is a
generated text ``[<task>] <input>`` a usable input of the task, and if not, why not.

A text is **well-formed** (the numerator of the fill rate) when ``verdict`` returns ``"ok"`` and the
task's answer path then gives it an answer (inside the label set for a closed one). A text ends where
a line starts with the task's tag again: the model went on to write another example, and only the
first is judged (a stop sequence, as the end token is one; SmolLM2 wrote several examples in a row in
5 of 96 texts on sst2). The reasons, checked in this order (the first that applies is the one counted):

- ``unfinished``: no end token within the token limit, and no sentence or line end to cut the text
  at. A text that ran to the limit and has one is cut there (``sentence_head``) and then judged like
  any other: it is the head of a longer input, as the generation targets of long inputs are (they
  are cut to the limit). SmolLM2 trained on agnews' and dbpedia's 1,000 examples ran 29 and 32 of
  96 texts past the limit, most of them news items and articles that went on;
- ``no_tag``: the text does not start with the asked task's tag (a chat reply, another task's input);
- ``empty``: nothing after the tag;
- ``tag_again``: the input holds a tag-like bracketed word, ``[word]`` or ``[/word]`` (a word spelt as
  task names are: a lower-case ASCII letter, then lower-case ASCII letters, digits, ``_`` or ``-``),
  e.g. the tag repeated, misspelt ("[adnews]") or closed ("[/dbpedia]"), all of which SmolLM2 wrote;
- ``cue``: the input holds the answer cue followed by nothing or by a label only (it carries its own
  answer); a cue followed by more text is kept, as yahoo's real inputs hold "Question: … Answer: …";
- ``instruction``: the input holds the generation request ("Write a new input", any case) or a
  sentence of the task's instruction of at least 3 words (the template's prefix, split at ``.?!``,
  ``:`` and line ends; compared case- and whitespace-insensitively);
- ``options``: the input lists labels, two different labels of the set separated only by a comma,
  "or", "and" or "/" (the instruction's option list echoed, e.g. "World, Sports, Business");
- ``label_only``: the input is a label and nothing else (letters and digits compared, any case:
  "Good.", "bad"): it replays the answer, not an input;
- ``fields``: the input lacks a line-start field that every real input of the task has
  (``task_fields``: "Text:" for agnews' "Title\nText: …", "sentence 2:" for a sentence pair): a
  title alone, or a premise without its hypothesis, is not an input of the task. After the full
  data, at ``data.max_target_length`` 64, SmolLM2 wrote 23 such agnews texts of 96, 16 of them cut
  back to the title at the token limit (9 of 96 at the default 128); after 96 × 2 most of its
  agnews and dbpedia texts were a title alone (fifth and sixth measurements).

Applied to the 6,000 real training inputs of sst2, agnews, dbpedia, yelp, amazon and yahoo (as
``[<task>] <input>``), the parser refuses 18 (0.3 %): 5 hold a bracketed word ("[e]", "[s]",
"[money]", "[hurricanes]", "[only]") and 13 of yahoo's end with an empty "Answer:"
(``docs/results/generative_replay/README.md``).
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

REQUEST = "Write a new input for this task."  # the tagged format's generation request
REQUEST_CORE = "write a new input"  # what an echo of it holds (normalised)
REASONS = ("unfinished", "no_tag", "empty", "tag_again", "cue", "instruction", "options", "label_only", "fields")
TAG_LIKE = re.compile(r"\[/?[a-z][a-z0-9_-]*\]")  # ASCII, lower case: how task names are spelt


def task_tag(task: str) -> str:
    """What a tagged generation target starts with."""
    return f"[{task}]"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _alnum(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def instruction_pieces(prefix: str) -> list[str]:
    """The sentences of the instruction ``prefix`` of at least 3 words, normalised (``_norm``)."""
    pieces = re.split(r"[.?!:\n]", prefix)
    return [_norm(p) for p in pieces if len(p.split()) >= 3]


def lists_labels(body: str, labels: Sequence[str]) -> bool:
    """Two different ``labels`` side by side as a list (", ", " or ", " and ", "/"), any case."""
    low = " ".join(body.lower().split())
    names = sorted({lab.strip().lower() for lab in labels if lab.strip()}, key=len, reverse=True)
    if len(names) < 2:
        return False
    alt = "|".join(re.escape(n) for n in names)
    for m in re.finditer(rf"(?<!\w)({alt})(?:\s*,\s*|\s*/\s*|\s+or\s+|\s+and\s+)({alt})(?!\w)", low):
        if m.group(1) != m.group(2):
            return True
    return False


def _answers_itself(body: str, cue: str, labels: Optional[Sequence[str]]) -> bool:
    """After the input's last ``cue``: nothing, or a label (any case, letters and digits compared)."""
    after = _alnum(body.rsplit(cue, 1)[1])
    return not after or bool(labels) and after in {_alnum(lab) for lab in labels}


FIELD = re.compile(r"^[ \t]*([A-Za-z][A-Za-z0-9 ]*):", re.M)  # "Text: …", "sentence 2: …" at a line start


def input_fields(body: str) -> set[str]:
    """The line-start fields of an input, lower case: {"text"} for "Title\nText: …"."""
    return {f.lower() for f in FIELD.findall(body)}


def body_of(prompt: str, prefix: str, suffix: str) -> str:
    """The variable part of ``prompt`` (its input), the template taken off."""
    end = len(prompt) - len(suffix) if suffix and prompt.endswith(suffix) else len(prompt)
    start = len(prefix) if prompt.startswith(prefix) else 0
    return prompt[start:max(start, end)].strip()


def task_fields(prompts: Sequence[str], prefix: str, suffix: str) -> tuple[str, ...]:
    """The fields every real input of a task has: the ``body_of`` each of ``prompts`` (its real
    prompts) under the task template (``kif.replay.pseudo.prompt_template``), sorted."""
    common: Optional[set[str]] = None
    for p in prompts:
        found = input_fields(body_of(p, prefix, suffix))
        common = found if common is None else common & found
    return tuple(sorted(common or ()))


SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)|\n")  # "end." / 'end!"' before a space; a line break


def sentence_head(text: str) -> str:
    """``text`` up to its last sentence end ("." "!" "?", with any closing quotes or brackets,
    before whitespace) or line break, stripped; all of it when it has none: where a text that ran
    to the token limit is cut (``verdict``). "U.S. to" counts as an end: a cut there still ends on
    a word."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    head = text[:ends[-1]].strip() if ends else ""
    return head or text.strip()


def verdict(text: str, task: str, prefix: str, cue: str, finished: bool = True,
            labels: Optional[Sequence[str]] = None, fields: Sequence[str] = ()) -> tuple[Optional[str], str]:
    """``(input, "ok")`` for a usable tagged text, else ``(None, reason)`` (``REASONS``, module doc).
    ``cue``: the task's answer cue ("Answer:"); ``labels``: the closed label set, if any; ``fields``:
    the line-start fields every real input has (``task_fields``; none: not checked)."""
    tag = task_tag(task)
    text = text.strip()
    next_example = text.find("\n" + tag)
    if next_example >= 0:  # a line that starts with the tag again begins another example: this one ended
        text, finished = text[:next_example].strip(), True
    if not finished:  # ran to the token limit: keep its head up to a sentence end
        cut = sentence_head(text)
        if cut == text:
            return None, "unfinished"
        text = cut
    if not text.startswith(tag):
        return None, "no_tag"
    body = text[len(tag):].strip()
    if not body:
        return None, "empty"
    if TAG_LIKE.search(body):
        return None, "tag_again"
    if cue and cue in body and _answers_itself(body, cue, labels):
        return None, "cue"
    low = _norm(body)
    if REQUEST_CORE in low or any(p in low for p in instruction_pieces(prefix)):
        return None, "instruction"
    if labels and lists_labels(body, labels):
        return None, "options"
    if labels and _alnum(body) in {_alnum(lab) for lab in labels}:
        return None, "label_only"
    if not set(fields) <= input_fields(body):
        return None, "fields"
    return body, "ok"
