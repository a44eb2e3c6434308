"""User-facing errors: one line naming the culprit, exit code 2 from the CLI."""


class KifError(Exception):
    """Bad input (data, config, artifact). The CLI prints ``kif: error: <msg>`` and exits 2."""


class ConfigError(KifError):
    pass


class DataError(KifError):
    pass


class ArtifactError(KifError):
    pass
