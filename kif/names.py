"""Names that become path components (a task's ``tasks/NN_<task>/``,
``predictions/<task>.jsonl``, the unseen folders, a sweep's cell labels).

Such a name must be one plain path component: a name like ``../../x`` or ``a/b`` would
write outside the run folder or nest folders. It is refused when the config or the
benchmark file is read, before anything is written.
"""
from __future__ import annotations

from kif.errors import ConfigError

MAX_NAME_BYTES = 200  # a path component is at most 255 bytes on common file systems


def path_component_problem(name: object) -> str | None:
    """Why ``name`` cannot be one plain path component, or None when it can."""
    if not isinstance(name, str):
        return "must be a string"
    if not name:
        return "is empty"
    if name in (".", ".."):
        return f"{name!r} is not a plain name"
    if "/" in name or "\\" in name:
        return "contains a path separator ('/' or '\\')"
    if not name.isprintable():
        return "contains a non-printable character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def check_path_component(name: object, where: str) -> str:
    """``name`` itself when it is one plain path component; otherwise a
    :class:`ConfigError` naming ``where`` (e.g. ``bench.yaml: task name``)."""
    problem = path_component_problem(name)
    if problem:
        raise ConfigError(f"{where} {name!r} {problem}: it names a folder or file, so it must be "
                          "one plain path component")
    return name
