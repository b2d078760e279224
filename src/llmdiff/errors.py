"""The one exception type for bad input: the CLI prints its message on one line, without a traceback."""


class LLMDiffError(ValueError):
    """Bad input or state that the user can fix; the message says how."""
