"""llmdiff: text-to-image diffusion conditioned on decoder-only LLMs (LLMDiff adapter, LI-DiT)."""


def __getattr__(name: str):
    if name == "__version__":  # read on demand: importlib.metadata costs a cold start tenths of a second
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("llmdiff")
        except PackageNotFoundError:  # a source tree on sys.path without an install
            return "0+unknown"
    raise AttributeError(f"module 'llmdiff' has no attribute {name!r}")
