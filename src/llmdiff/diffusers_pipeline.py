"""``LLMDiffPipeline``: ``TextToImage`` as a diffusers ``DiffusionPipeline``.

diffusers contributes ``save_pretrained`` / ``from_pretrained`` (``model_index.json`` and one folder per
component), ``components`` and its loading options (``torch_dtype``, passing components); generation itself
is ``TextToImage``'s. Import it as ``from llmdiff import LLMDiffPipeline``.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import DiffusionPipeline

from .integrity import MODEL_INFO, check_replaceable
from .model_folder import SAMPLE_DEFAULTS, read_model_index
from .pipelines import TextToImage


class LLMDiffPipeline(TextToImage, DiffusionPipeline):
    model_cpu_offload_seq = "denoiser->vae"
    _optional_components = ["vae"]

    def __init__(self, denoiser, scheduler, vae=None, sample_config: dict | None = None):
        DiffusionPipeline.__init__(self)
        self.register_modules(denoiser=denoiser, scheduler=scheduler, vae=vae)
        self.sample_config = {**SAMPLE_DEFAULTS, **(sample_config or {})}
        self._init_state()

    def __setattr__(self, name, value):
        if name == "sample_config":  # saved in model_index.json with the components
            self.register_to_config(sample_config=dict(value))
        super().__setattr__(name, value)

    def save_pretrained(self, save_directory, *args, overwrite: bool = False, **kwargs):
        """diffusers' save, into a new or empty folder or over a saved LLMDiffPipeline; a folder holding anything
        else (or a file) is refused unless ``overwrite``, since diffusers writes its files in among the others."""
        check_replaceable(save_directory, "save_directory", _is_pipeline_folder, overwrite,
                          remedy="pass overwrite=True to save into it anyway, or choose another folder")
        return DiffusionPipeline.save_pretrained(self, save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "LLMDiffPipeline":
        """diffusers' loader, after checking the folder's layout (a one-line error for an old or broken folder)."""
        from .denoisers import model_class

        path = Path(pretrained_model_name_or_path)
        scheduler = kwargs.pop("scheduler", None)
        if isinstance(scheduler, str):
            kind, scheduler = scheduler, None
        else:
            kind = None
        info = read_model_index(path, verify=True)
        model_class(info["denoiser"][1])  # imports its module: diffusers resolves only modules already imported
        if scheduler is not None:
            kwargs["scheduler"] = scheduler
        pipe = DiffusionPipeline.from_pretrained.__func__(cls, str(path), **kwargs)
        pipe.denoiser.eval()
        pipe.use_scheduler(kind)
        return pipe


def _is_pipeline_folder(path: Path) -> bool:
    """A folder an LLMDiffPipeline was saved to (its model_index.json names the class)."""
    try:
        info = json.loads((path / MODEL_INFO).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("_class_name") == LLMDiffPipeline.__name__
