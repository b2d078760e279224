"""The one exception type for bad input: the CLI prints its message on one line, without a traceback."""


class LLMDiffError(ValueError):
    """Bad input or state that the user can fix; the message says how."""


class LLMDiffTypeError(LLMDiffError, TypeError):
    """A value of the wrong type (a number given as text, a seed where a generator goes): a TypeError, as diffusers'
    `check_inputs` raises, and still one line in the CLI."""
