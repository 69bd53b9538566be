class KssError(Exception):
    """A user-facing error: printed as one line, no traceback; exit code 2."""


class Interrupted(KssError):
    """Ctrl-C: what finished is kept; the message says how to resume. Exit code 130."""
