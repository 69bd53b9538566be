class KssError(Exception):
    """A user-facing error: printed as one line, no traceback."""
