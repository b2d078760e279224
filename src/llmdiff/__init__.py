"""llmdiff: text-to-image diffusion conditioned on decoder-only LLMs (LLMDiff adapter, LI-DiT).

    from llmdiff import LLMDiffPipeline  # a model folder as a diffusers pipeline (see llmdiff.pipelines)
"""


def __getattr__(name: str):
    if name == "LLMDiffPipeline":  # imported on first use: diffusers' pipeline module imports every diffusers model
        from .diffusers_pipeline import LLMDiffPipeline

        return LLMDiffPipeline
    if name == "__version__":  # read on demand: importlib.metadata costs a cold start tenths of a second
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("llmdiff")
        except PackageNotFoundError:  # a source tree on sys.path without an install
            return "0+unknown"
    raise AttributeError(f"module 'llmdiff' has no attribute {name!r}")
