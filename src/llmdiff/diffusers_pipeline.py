"""``LLMDiffPipeline``: ``TextToImage`` as a diffusers ``DiffusionPipeline``.

diffusers contributes ``save_pretrained`` / ``from_pretrained`` (``model_index.json`` and one folder per
component), ``components``, offloading and its loading options (``torch_dtype``, passing components);
generation itself is ``TextToImage``'s. Import it as ``from llmdiff import LLMDiffPipeline``.

The LLMs are components with diffusers' names: ``text_encoder`` and ``tokenizer`` (``text_encoder_2`` and
``tokenizer_2`` for a collaborative model's second LLM). Pass them to ``from_pretrained`` to read prompts with a
model you loaded yourself (any dtype, ``device_map`` or ``quantization_config``); otherwise the ones the
denoiser's config names are loaded on first use (or by ``load_text_encoders()``) and registered, so that
``enable_model_cpu_offload`` moves them in turn. ``save_pretrained`` writes the ones you passed; the ones loaded
from the config's reference stay references unless ``save_text_encoders=True``.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import DiffusionPipeline

from .integrity import MODEL_INFO, check_replaceable
from .errors import LLMDiffError
from .model_folder import SAMPLE_DEFAULTS, TEXT_ENCODER_COMPONENTS, read_model_index
from .pipelines import TextToImage


class LLMDiffPipeline(TextToImage, DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->text_encoder_2->denoiser->vae"
    _optional_components = ["vae", *TEXT_ENCODER_COMPONENTS]

    def __init__(self, denoiser, scheduler, vae=None, sample_config: dict | None = None, text_encoder=None,
                 tokenizer=None, text_encoder_2=None, tokenizer_2=None):
        DiffusionPipeline.__init__(self)
        self.register_modules(denoiser=denoiser, scheduler=scheduler, vae=vae, text_encoder=_base_model(text_encoder),
                              tokenizer=tokenizer, text_encoder_2=_base_model(text_encoder_2), tokenizer_2=tokenizer_2)
        self.sample_config = {**SAMPLE_DEFAULTS, **(sample_config or {})}
        self._init_state()
        self._referenced_encoders = set()  # components loaded from the denoiser config's reference

    # --- the LLMs as components ----------------------------------------------------------------------

    @staticmethod
    def _component_names(k: int) -> tuple[str, str] | None:
        """The (model, tokenizer) component names of prompt encoder k, or None beyond the named slots."""
        suffix = "" if k == 0 else f"_{k + 1}"
        names = (f"text_encoder{suffix}", f"tokenizer{suffix}")
        return names if names[0] in TEXT_ENCODER_COMPONENTS else None

    def _encoder_components(self, k: int):
        names = self._component_names(k) if k < len(self.denoiser.config.encoders) else None
        if names is None:
            return None, None
        model, tokenizer = (getattr(self, n, None) for n in names)
        if (model is None) != (tokenizer is None):
            raise LLMDiffError(f"{names[0]} and {names[1]} go together: pass both, or neither to load the LLM the "
                               "model was trained with")
        return model, tokenizer

    def _register_encoder(self, k: int, encoder) -> None:
        names = self._component_names(k) if k < len(self.denoiser.config.encoders) else None
        if names is not None:
            model = encoder.core if hasattr(encoder, "core") else encoder.model  # the transformers model it runs
            self.register_modules(**{names[0]: model, names[1]: encoder.tokenizer})
            self._referenced_encoders.update(names)

    @property
    def execution_device(self):
        return DiffusionPipeline._execution_device.fget(self)

    def load_text_encoders(self) -> None:
        """Load the prompt encoders now (they are otherwise loaded by the first prompt), e.g. before
        ``enable_model_cpu_offload`` so that the offload order includes them."""
        self.load_encoders()

    def enable_model_cpu_offload(self, *args, **kwargs):
        self.load_text_encoders()
        return DiffusionPipeline.enable_model_cpu_offload(self, *args, **kwargs)

    def enable_sequential_cpu_offload(self, *args, **kwargs):
        self.load_text_encoders()
        return DiffusionPipeline.enable_sequential_cpu_offload(self, *args, **kwargs)

    def __setattr__(self, name, value):
        if name == "sample_config":  # saved in model_index.json with the components
            self.register_to_config(sample_config=dict(value))
        super().__setattr__(name, value)

    def save_pretrained(self, save_directory, *args, overwrite: bool = False, save_text_encoders: bool = False,
                        **kwargs):
        """diffusers' save, into a new or empty folder or over a saved LLMDiffPipeline; a folder holding anything
        else (or a file) is refused unless ``overwrite``, since diffusers writes its files in among the others.
        LLMs loaded from the denoiser config's reference are saved only with ``save_text_encoders`` (the folder
        names them already; an LLM is often a thousand times the denoiser's size)."""
        check_replaceable(save_directory, "save_directory", _is_pipeline_folder, overwrite,
                          remedy="pass overwrite=True to save into it anyway, or choose another folder")
        skipped = {} if save_text_encoders else {n: getattr(self, n) for n in self._referenced_encoders}
        self.register_modules(**dict.fromkeys(skipped))  # saved as [null, null], as export writes them
        try:
            return DiffusionPipeline.save_pretrained(self, save_directory, *args, **kwargs)
        finally:
            self.register_modules(**skipped)

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


def _base_model(model):
    """A causal LM's decoder stack without its LM head, which prompt encoding never runs: the module the encoder
    calls is then the component, so offload hooks see every call (and a saved folder holds no unused head)."""
    inner = getattr(model, "model", None)
    return inner if inner is not None and hasattr(inner, "layers") and not hasattr(model, "layers") else model


def _is_pipeline_folder(path: Path) -> bool:
    """A folder an LLMDiffPipeline was saved to (its model_index.json names the class)."""
    try:
        info = json.loads((path / MODEL_INFO).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("_class_name") == LLMDiffPipeline.__name__
