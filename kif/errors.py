"""User-facing errors: one line naming the culprit, exit code 2 from the CLI."""


class KifError(Exception):
    """Bad input (data, config, artifact). The CLI prints ``kif: error: <msg>`` and exits 2."""


class ConfigError(KifError):
    pass


class DataError(KifError):
    pass


class ArtifactError(KifError):
    pass


def validation_message(err, prefix: str = "", quote: bool = False) -> str:
    """A pydantic ``ValidationError`` as one line: the first problem's dotted key (under
    ``prefix``; quoted with ``quote``) and what is wrong with it."""
    first = err.errors()[0]
    key = ".".join([prefix] * bool(prefix) + [str(p) for p in first["loc"]])
    if first["type"] == "missing":
        return f"missing key {key!r}"
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    if not key:
        return msg
    return f"{key!r}: {msg}" if quote else f"{key}: {msg}"


class OutputError(KifError):
    """The output cannot be written (folder not creatable, disk full, owned by another run)."""


class Stopped(KeyboardInterrupt):
    """A termination signal (SIGTERM): unwinds like KeyboardInterrupt so that temporary files
    are removed and locks released; the CLI says how to resume."""
