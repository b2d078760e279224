"""llmdiff: text-to-image diffusion conditioned on decoder-only LLMs (LLMDiff adapter, LI-DiT)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llmdiff")
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"
