"""Text-to-image generation with a trained llmdiff model, in diffusers' pipeline layout.

    from llmdiff import LLMDiffPipeline

    pipe = LLMDiffPipeline.from_pretrained("models/shapes-lidit")
    images = pipe("a red circle to the left of a blue square", negative_prompt="a green square",
                  num_images_per_prompt=4, generator=torch.Generator().manual_seed(0)).images

A model folder is a diffusers pipeline folder (``model_folder.py``: its layout, export and conversion).

The frozen prompt encoders are not stored: the denoiser's config records which ones it was trained
with (model, layers, template, ...), the pipeline loads exactly those, and refuses a mismatched one.

Two classes share one implementation. ``TextToImage`` (here) loads the folder itself and imports only
what sampling needs; ``LLMDiffPipeline`` (``diffusers_pipeline.py``, above this module) adds diffusers'
``DiffusionPipeline`` (``save_pretrained``, ``from_pretrained``, ``DiffusionPipeline.from_pretrained(dir,
custom_pipeline=CUSTOM_PIPELINE, trust_remote_code=True)``); ``llmdiff.LLMDiffPipeline`` imports it on first use,
because diffusers' pipeline module imports every diffusers model class (seconds of a cold start the command line
does not need).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from diffusers.utils import BaseOutput

from .config import check_guidance_scale, check_steps
from .diffusion import empty_like
from .encoders.base import TextInput
from .errors import LLMDiffError, LLMDiffTypeError
from .model_folder import checked_sample_config, load_scheduler, read_model_index, sample_config_of

# Fields of an encoder config that change the features (the rest only change speed or strictness).
FEATURE_FIELDS = ("model", "layers", "mode", "normalize", "block_groups", "instruction", "chat_template",
                  "max_length", "padding_side", "keep_instruction")
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
MAX_SIZE = 4096  # the largest height or width __call__ takes, in pixels
# The file diffusers' custom-pipeline loader imports: it only re-exports LLMDiffPipeline (nothing is downloaded).
CUSTOM_PIPELINE = str(Path(__file__).with_name("diffusers_custom_pipeline.py"))


def _feature_fields(cfg: dict) -> dict:
    d = {k: cfg.get(k) for k in FEATURE_FIELDS}
    d["layers"] = list(d["layers"]) if isinstance(d["layers"], (list, tuple)) else d["layers"]
    return d


def image_seed(seed: int, prompt_index: int, image_index: int) -> int:
    """The seed of image `image_index` of prompt `prompt_index`: the same image in any batch or command."""
    return (seed * 1_000_003 + prompt_index) * 1_009 + image_index


def generators_for(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


class TextToImage:
    """Generation with an llmdiff model: prompt encoders -> denoiser + scheduler -> (vae) -> images.

    Components: ``denoiser`` (LIDiT, TextUNet or AdaptedUNet), ``scheduler`` (a diffusers scheduler), ``vae``
    (an ``AutoencoderKL`` for a latent model, else None) and ``sample_config`` (default steps, guidance scale
    and scheduler name). ``LLMDiffPipeline`` is this class with diffusers' ``DiffusionPipeline`` on top.
    """

    _callback_tensor_inputs = ["latents"]

    def __init__(self, denoiser, scheduler, vae=None, sample_config: dict | None = None):
        self.denoiser, self.scheduler, self.vae = denoiser, scheduler, vae
        self.sample_config = checked_sample_config(sample_config, "sample_config")
        self._init_state()

    def _init_state(self) -> None:
        self._guidance_scale, self._num_timesteps = None, None  # of the sampling under way (diffusers' names)
        self.encoders = None  # list[PromptEncoder], loaded on first use
        self.llm_adapter = None  # an LLMAdapter loaded with load_llm_adapter
        self._codec = None
        self._progress_bar_config = {}

    # --- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: Path | str, torch_dtype: torch.dtype | None = None,
                        scheduler: str | None = None) -> "TextToImage":
        """A model folder (see the module docstring); ``scheduler`` names another scheduler kind to sample with."""
        from .denoisers import model_class

        path = Path(path)
        info = read_model_index(path, verify=True)
        denoiser = model_class(info["denoiser"][1]).from_pretrained(path / "denoiser").eval()
        sched = load_scheduler(path / "scheduler", info["scheduler"][1])
        vae = None
        if (info.get("vae") or [None, None])[1]:
            from diffusers import AutoencoderKL

            vae = AutoencoderKL.from_pretrained(path / "vae").eval()
        pipe = cls(denoiser, sched, vae, sample_config_of(info))
        pipe.use_scheduler(scheduler)
        return pipe.to(dtype=torch_dtype) if torch_dtype is not None else pipe

    def sampling(self, num_inference_steps: int | None = None, guidance_scale: float | None = None
                 ) -> tuple[int, float]:
        """(steps, guidance scale): the ones given, else the model's ``sample_config`` (the one place defaults
        live)."""
        steps = num_inference_steps or self.sample_config["steps"]
        return steps, self.sample_config["guidance_scale"] if guidance_scale is None else guidance_scale

    def use_scheduler(self, kind: str | None) -> None:
        """Sample with another scheduler kind (default, flow_euler, dpm_solver, ddim); None keeps the saved one."""
        if kind is not None and kind != self.sample_config["scheduler"]:
            from .diffusion import make_scheduler

            self.scheduler = make_scheduler(self.denoiser.config.objective, kind)
            self.sample_config = {**self.sample_config, "scheduler": kind}

    # --- devices, progress -------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def execution_device(self) -> torch.device:
        """Where sampling runs: the denoiser's device (``LLMDiffPipeline``: under diffusers' offloading, the
        accelerator its hooks move each model to, while the weights rest on the CPU)."""
        return self.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.denoiser.parameters()).dtype

    def to(self, *args, **kwargs):
        """Move or cast every component, called as diffusers' ``DiffusionPipeline.to``: ``to(dtype)``,
        ``to(device)``, ``to(device, dtype)``, ``to(device=..., dtype=...)``. The denoiser, the autoencoder and a
        loaded adapter move now; the prompt encoders (frozen, kept in the dtype they were trained in) are loaded on
        the new device at the next prompt. Sampling keeps its state (noise, scheduler steps) in float32 and calls the
        denoiser in its dtype."""
        device, dtype = _to_arguments(args, kwargs)
        moved = device is not None and torch.device(device) != self.device
        dtype = None if dtype == self.dtype else dtype
        # only the arguments given: diffusers' ModelMixin.to warns about float32 modules whenever `dtype` is passed
        args = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for module in (self.denoiser, self.vae, self.llm_adapter):
            if module is not None and args:
                _move(module, args)
        if moved:
            self.encoders = None
        self._codec = None
        return self

    def progress_bar(self, iterable=None, total: int | None = None):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, **{"desc": "sampling", "leave": False, **self._progress_bar_config})

    def set_progress_bar_config(self, **kwargs) -> None:
        self._progress_bar_config = kwargs

    @property
    def codec(self):
        """Images <-> normalised latents through ``vae`` (None for a pixel model)."""
        if self.vae is not None and self._codec is None:
            from .autoencoder import LatentCodec

            self._codec = LatentCodec(self.vae, self.device)
        return self._codec

    # --- prompt encoders ---------------------------------------------------------------------------

    @property
    def encoder_configs(self) -> list[dict]:
        """What each prompt encoder must be: the denoiser's, then a loaded adapter's."""
        extra = list(self.llm_adapter.config["encoders"]) if self.llm_adapter is not None else []
        return [dict(e) for e in self.denoiser.config.encoders] + [dict(e) for e in extra]

    def set_encoders(self, encoders) -> None:
        """Use these encoders; each must produce the features the model was trained on."""
        from .config import to_dict

        want = self.encoder_configs
        if len(encoders) != len(want):
            raise LLMDiffError(f"this model was trained with {len(want)} prompt encoder(s), got {len(encoders)}")
        for k, (enc, cfg) in enumerate(zip(encoders, want)):
            have, need = _feature_fields(to_dict(enc.config)), _feature_fields(cfg)
            if have != need:
                raise LLMDiffError(f"encoder {k} does not match the one this model was trained with: "
                                   + ", ".join(f"{f} trained={need[f]!r} given={have[f]!r}"
                                               for f in FEATURE_FIELDS if need[f] != have[f]))
        self.encoders = list(encoders)

    def load_encoders(self):
        """The prompt encoders, loaded on first use: from the pipeline's ``text_encoder``/``tokenizer`` components
        where it has them (``text_encoder_2``... for a second LLM), else what the denoiser's config names."""
        from .encoders import EncoderConfig, load_encoder

        have = self.encoders or []
        want = self.encoder_configs
        if len(have) != len(want):
            new = []
            for k in range(len(have), len(want)):
                model, tokenizer = self._encoder_components(k)
                encoder = load_encoder(EncoderConfig(**want[k]), self.device, model, tokenizer)
                self._check_width(k, encoder)
                if model is None:
                    self._register_encoder(k, encoder)
                new.append(encoder)
            self.set_encoders(have + new)
        return self.encoders

    def _encoder_components(self, k: int):
        """(model, tokenizer) given for prompt encoder k, or (None, None): this class has no such components."""
        return None, None

    def _register_encoder(self, k: int, encoder) -> None:
        """Record an encoder loaded from the denoiser's config (``LLMDiffPipeline`` makes it a component)."""

    def _check_width(self, k: int, encoder) -> None:
        """A given LLM must be as wide as the one the denoiser was trained on (its features' last dimension)."""
        dims = getattr(self.denoiser.config, "text_dims", None)
        if dims is not None and k < min(len(dims), len(self.denoiser.config.encoders)) and \
                int(dims[k]) != encoder.hidden_size:
            raise LLMDiffError(f"prompt encoder {k} gives {encoder.hidden_size}-wide features; this denoiser was trained "
                               f"on {dims[k]}-wide ones from {self.encoder_configs[k]['model']!r}: pass that model")

    def encode_prompt(self, prompt: str | list[str] | None = None, negative_prompt: str | list[str] | None = None,
                      do_classifier_free_guidance: bool = True, num_images_per_prompt: int = 1,
                      prompt_embeds: list[TextInput] | None = None,
                      negative_prompt_embeds: list[TextInput] | None = None):
        """(prompt_embeds, negative_prompt_embeds): one ``TextInput`` per prompt encoder, each row repeated
        ``num_images_per_prompt`` times. Without a negative prompt the unconditional branch is the empty prompt
        (all tokens masked), as caption dropout trained it; ``negative_prompt_embeds`` is None without guidance.
        """
        if prompt_embeds is None:
            prompts = _prompt_list(prompt)
            negatives = _negative_list(negative_prompt, len(prompts)) if do_classifier_free_guidance else []
            if negative_prompt_embeds is not None:
                negatives = []
            texts = self._encode(prompts + [n for n in negatives if n])
            prompt_embeds = [t.select(slice(0, len(prompts))) for t in texts]
            if any(negatives):
                negative_prompt_embeds = _negative_rows(texts, negatives, len(prompts))
        elif prompt is not None:
            raise LLMDiffError("give prompt or prompt_embeds, not both")
        elif negative_prompt is not None and negative_prompt_embeds is None and do_classifier_free_guidance:
            negatives = _negative_list(negative_prompt, prompt_embeds[0].features.shape[0])
            if any(negatives):
                negative_prompt_embeds = _negative_rows(self._encode([n for n in negatives if n]), negatives, 0)
        if len(prompt_embeds) != len(self.encoder_configs):
            raise LLMDiffError(f"prompt_embeds holds {len(prompt_embeds)} encoder output(s); this model reads "
                               f"{len(self.encoder_configs)}")
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative_prompt_embeds = empty_like(prompt_embeds)
        if negative_prompt_embeds is not None and negative_prompt_embeds[0].features.shape[0] != \
                prompt_embeds[0].features.shape[0]:
            raise LLMDiffError("negative_prompt_embeds must have as many rows as prompt_embeds")
        prompt_embeds = [t.repeat(num_images_per_prompt).to(self.execution_device, self.dtype) for t in prompt_embeds]
        if negative_prompt_embeds is not None:
            negative_prompt_embeds = [t.repeat(num_images_per_prompt).to(self.execution_device, self.dtype)
                                      for t in negative_prompt_embeds]
        return prompt_embeds, negative_prompt_embeds

    def _encode(self, prompts: list[str]) -> list[TextInput]:
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise LLMDiffError(f"prompt {i} is empty: describe the image (e.g. 'a red circle above a blue square')")
        return [enc.encode(prompts) for enc in self.load_encoders()]

    # --- latents -----------------------------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel along each side: 2 ** (len(block_out_channels) - 1) of the autoencoder, 1 for a
        pixel model (diffusers' name)."""
        if self.vae is None:
            return 1
        from .autoencoder import downsample_factor

        return downsample_factor(self.vae)

    @property
    def default_sample_size(self) -> int:
        """The denoiser's trained sample size, in its own units (latent pixels for a latent model; diffusers' name):
        ``height`` and ``width`` default to this times ``vae_scale_factor``."""
        return self.denoiser.config.sample_size

    def size_multiple(self) -> tuple[int, str]:
        """(m, why): the denoiser generates images whose height and width are multiples of m pixels."""
        scale, why = self.vae_scale_factor, []
        if scale > 1:
            why.append(f"the autoencoder's scale {scale}")
        unet = getattr(self.denoiser, "unet", None)
        if unet is not None:  # a TextUNet or AdaptedUNet: the size is halved at each level but the last
            halvings = len(unet.config.block_out_channels) - 1
            why.append(f"the U-Net halving the size {halvings} times")
            return scale * 2 ** halvings, " x ".join(why)
        cfg = self.denoiser.config  # LI-DiT: patches, merged 2x2 in an hourglass
        merge = 2 if cfg.get("outer_depth") else 1
        why.append(f"the patch size {cfg.patch_size}" + (" with its hourglass merging 2x2 patches" * (merge > 1)))
        return scale * cfg.patch_size * merge, " x ".join(why)

    def prepare_latents(self, batch_size: int, generator=None, latents: torch.Tensor | None = None,
                        height: int | None = None, width: int | None = None) -> torch.Tensor:
        """Starting noise (B, C, H, W) for images of height x width pixels (default: the trained size), in float32;
        a list of generators gives one image per generator, whatever the batch."""
        scale = self.vae_scale_factor
        size = self.default_sample_size * scale
        shape = (batch_size, self.denoiser.config.in_channels, (height or size) // scale, (width or size) // scale)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise LLMDiffError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
            return latents.to(self.execution_device, torch.float32)
        if isinstance(generator, (list, tuple)):
            if len(generator) != batch_size:
                raise LLMDiffError(f"got {len(generator)} generators for {batch_size} images: give one per image")
            return torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generator]).to(self.execution_device)
        return torch.randn(shape, generator=generator).to(self.execution_device)

    def postprocess(self, x: torch.Tensor, output_type: str):
        """Denoiser output -> images: "latent" as is, "pt" (B, 3, H, W) in [0, 1], "np" (B, H, W, 3) float in
        [0, 1], "pil" PIL images (diffusers' conventions)."""
        if output_type == "latent":
            return x
        if self.codec is not None:
            x = self.codec.decode(x)
            _check_finite(x, "the autoencoder")
        x = x.float().clamp(-1, 1)
        if output_type == "pt":
            return (x + 1) / 2
        if output_type == "np":
            return ((x + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        from PIL import Image

        from .diffusion import to_uint8

        return [Image.fromarray(a) for a in to_uint8(x)]

    # --- sampling ----------------------------------------------------------------------------------

    def _model(self):
        """What the sampler calls: the denoiser, or the U-Net base with a loaded LLM adapter."""
        if self.llm_adapter is None:
            return self.denoiser
        from .denoisers.adapter import AdaptedDenoiser

        return AdaptedDenoiser(self.denoiser, self.llm_adapter)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, negative_prompt: str | list[str] | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 num_images_per_prompt: int = 1, generator: torch.Generator | list[torch.Generator] | None = None,
                 latents: torch.Tensor | None = None, prompt_embeds: list[TextInput] | None = None,
                 negative_prompt_embeds: list[TextInput] | None = None, output_type: str = "pil",
                 return_dict: bool = True, callback_on_step_end: Callable | None = None,
                 callback_on_step_end_tensor_inputs: list[str] = ("latents",), height: int | None = None,
                 width: int | None = None):
        """Images for prompts (or ``prompt_embeds`` from ``encode_prompt``), as diffusers' PixArt/SD3 pipelines.

        ``num_inference_steps`` and ``guidance_scale`` default to the model's ``sample_config``; guidance 1 turns
        classifier-free guidance off. ``generator``: one, or a list with one per image (per-image seeds that do
        not depend on the batch). ``height`` / ``width``: the image size in pixels, by default the size the model was
        trained at; other sizes are multiples of ``size_multiple()[0]`` pixels (the patch size of a transformer,
        the downsampling of a U-Net, times the autoencoder's scale). ``callback_on_step_end(pipe, step, timestep,
        {"latents": ...})`` may return a dict with new ``latents``, and may change ``pipe._guidance_scale`` for the
        steps after it (as in diffusers' pipelines; ``guidance_scale`` and ``num_timesteps`` are readable while
        sampling). Returns ``ImagePipelineOutput(images=...)``, or ``(images,)`` with ``return_dict=False``.
        """
        from .diffusion import sample

        self.check_inputs(prompt, negative_prompt, num_inference_steps, guidance_scale, num_images_per_prompt,
                          generator, latents, prompt_embeds, negative_prompt_embeds, output_type,
                          callback_on_step_end_tensor_inputs, height, width)
        steps, guidance_scale = self.sampling(num_inference_steps, guidance_scale)
        self._guidance_scale, self._num_timesteps = guidance_scale, steps
        texts, uncond = self.encode_prompt(prompt, negative_prompt, guidance_scale != 1.0, num_images_per_prompt,
                                           prompt_embeds, negative_prompt_embeds)
        noise = self.prepare_latents(texts[0].features.shape[0], generator, latents, height, width)
        callback = None
        if callback_on_step_end is not None:
            def callback(i, t, x):
                out = callback_on_step_end(self, i, t, {"latents": x}) or {}
                return out.get("latents", x)

        bar = None if self._progress_bar_config.get("disable") else self.progress_bar
        x = sample(self._model(), texts, self.scheduler, steps, lambda: self._guidance_scale, noise=noise,
                   uncond=uncond, progress=bar, callback=callback)
        _check_finite(x, "the denoiser")
        images = self.postprocess(x, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    @property
    def guidance_scale(self) -> float:
        """The guidance scale of the sampling under way (or last run); a step-end callback may change
        ``_guidance_scale``."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale is not None and self._guidance_scale != 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    def check_inputs(self, prompt, negative_prompt, num_inference_steps, guidance_scale, num_images_per_prompt,
                     generator, latents, prompt_embeds, negative_prompt_embeds, output_type,
                     callback_on_step_end_tensor_inputs, height=None, width=None) -> None:
        """``__call__``'s arguments, before any work (diffusers' convention): a TypeError for a wrong type, a
        ValueError for a value out of range, each naming the argument and what it may be. Steps and guidance have
        the command line's limits (config.py)."""
        if output_type not in OUTPUT_TYPES:
            raise LLMDiffError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if prompt is None and prompt_embeds is None:
            raise LLMDiffError("no prompt given: pass prompt or prompt_embeds")
        _check_texts("prompt", prompt, none_ok=False)
        _check_texts("negative_prompt", negative_prompt, none_ok=True)
        for name, embeds in (("prompt_embeds", prompt_embeds), ("negative_prompt_embeds", negative_prompt_embeds)):
            if embeds is not None and not (isinstance(embeds, (list, tuple)) and embeds
                                           and all(isinstance(t, TextInput) for t in embeds)):
                raise LLMDiffTypeError(f"{name} must be a list of TextInput, one per prompt encoder (what "
                                       f"encode_prompt returns), got {type(embeds).__name__}")
        if num_inference_steps is not None:
            check_steps("num_inference_steps", num_inference_steps)
        if guidance_scale is not None:
            check_guidance_scale("guidance_scale", guidance_scale)
        if not isinstance(num_images_per_prompt, int) or isinstance(num_images_per_prompt, bool):
            raise LLMDiffTypeError(f"num_images_per_prompt must be a whole number, at least 1, got "
                                   f"{num_images_per_prompt!r}")
        if num_images_per_prompt < 1:
            raise LLMDiffError(f"num_images_per_prompt must be at least 1, got {num_images_per_prompt}")
        generators = generator if isinstance(generator, (list, tuple)) else [generator]
        if generator is not None and not all(isinstance(g, torch.Generator) for g in generators):
            raise LLMDiffTypeError("generator must be a torch.Generator or a list of them, one per image (for a seed "
                                   f"s: torch.Generator().manual_seed(s)), got {_describe(generator)}")
        if latents is not None:
            if not isinstance(latents, torch.Tensor):
                raise LLMDiffTypeError(f"latents must be a torch.Tensor (B, C, H, W), got {type(latents).__name__}")
            if not torch.isfinite(latents).all():
                raise LLMDiffError("latents must be finite: they hold NaN or inf values")
        for name, size in (("height", height), ("width", width)):
            if size is not None:
                self._check_size(name, size)
        bad = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if bad:
            raise LLMDiffError(f"callback_on_step_end_tensor_inputs may name {self._callback_tensor_inputs}, got {bad}")

    def _check_size(self, name: str, size) -> None:
        """``height`` or ``width``: a whole number of pixels, a multiple of what the denoiser can generate."""
        m, why = self.size_multiple()
        what = f"{name} must be a whole number of pixels, a multiple of {m} from {m} to {MAX_SIZE} ({why})"
        if not isinstance(size, int) or isinstance(size, bool):
            raise LLMDiffTypeError(f"{what}, e.g. {self.default_sample_size * self.vae_scale_factor}; got {size!r}")
        if not m <= size <= MAX_SIZE or size % m:
            raise LLMDiffError(f"{what}, e.g. {self.default_sample_size * self.vae_scale_factor}; got {size}")

    # --- the LLMDiff adapter, loaded like an IP-Adapter ----------------------------------------------------

    def load_llm_adapter(self, path: Path | str, scale: float = 1.0) -> None:
        """Attach an adapter saved by ``AdaptedUNet.save_adapter`` to this pipeline's U-Net base (a TextUNet).

        The adapter brings its own prompt encoder (loaded on first use) and installs a processor on every
        cross-attention that blends the base's attention and the adapter's: ``set_llm_adapter_scale``.
        """
        from .denoisers import KIND_OF_CLASS
        from .denoisers.adapter import LLMAdapter, check_adapter_scale

        check_adapter_scale(scale)
        if self.llm_adapter is not None:
            raise LLMDiffError("an LLM adapter is already loaded; unload_llm_adapter() first")
        if KIND_OF_CLASS.get(type(self.denoiser).__name__) != "unet":
            raise LLMDiffError(f"an LLM adapter plugs into a U-Net base (model.kind=unet); this pipeline's denoiser "
                               f"is a {type(self.denoiser).__name__}")
        adapter = LLMAdapter.load(path).to(self.device, self.dtype)
        adapter.attach(self.denoiser.unet)
        self.llm_adapter = adapter
        adapter.set_scale(scale)

    def set_llm_adapter_scale(self, scale: float) -> None:
        """How much of each cross-attention comes from the adapter: 0 is the base exactly, 1 the adapter's."""
        if self.llm_adapter is None:
            raise LLMDiffError("no LLM adapter loaded; call load_llm_adapter(dir) first")
        self.llm_adapter.set_scale(scale)

    def unload_llm_adapter(self) -> None:
        """Remove the adapter: the U-Net gets back the very processors it had, and its encoder is dropped."""
        if self.llm_adapter is None:
            return
        self.llm_adapter.detach(self.denoiser.unet)
        n = len(self.denoiser.config.encoders)
        self.encoders = None if self.encoders is None else self.encoders[:n]
        self.llm_adapter = None


def load_pipeline(path: Path | str, scheduler: str | None = None, device: str | None = None,
                  torch_dtype: torch.dtype | None = None) -> TextToImage:
    """A model folder for sampling, without diffusers' pipeline machinery (the command line's loader)."""
    pipe = TextToImage.from_pretrained(path, scheduler=scheduler)
    return pipe.to(device, torch_dtype) if device is not None or torch_dtype is not None else pipe


@dataclass
class ImagePipelineOutput(BaseOutput):
    """diffusers' ``ImagePipelineOutput``, defined here so that sampling does not import diffusers' pipelines."""

    images: list | np.ndarray | torch.Tensor


def _prompt_list(prompt) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
    if not prompts:
        raise LLMDiffError("no prompt given")
    return prompts


def _check_texts(name: str, texts, none_ok: bool) -> None:
    """A string or a list of strings (in a list of negative prompts, None stands for no negative prompt)."""
    if texts is None or isinstance(texts, str):
        return
    if isinstance(texts, (list, tuple)):
        for i, text in enumerate(texts):
            if not isinstance(text, str) and not (none_ok and text is None):
                raise LLMDiffTypeError(f"{name}[{i}] must be a string, got {type(text).__name__}")
        return
    raise LLMDiffTypeError(f"{name} must be a string or a list of strings, got {type(texts).__name__}")


def _describe(value) -> str:
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of " + ", ".join(sorted({type(v).__name__ for v in value}))
    return f"{value!r}" if isinstance(value, (int, float, str)) else type(value).__name__


def _to_arguments(args: tuple, kwargs: dict) -> tuple:
    """(device, dtype) from ``to``'s arguments, read as diffusers' ``DiffusionPipeline.to`` reads them."""
    kwargs = dict(kwargs)
    kwargs.pop("silence_dtype_warnings", None)  # diffusers' option; nothing here warns about a dtype
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    if kwargs:
        raise LLMDiffTypeError(f"to() takes device and dtype, got {', '.join(map(repr, kwargs))}")
    if len(args) > 2:
        raise LLMDiffTypeError(f"to() takes at most two arguments (a device and a dtype), got {len(args)}")
    if len(args) == 2 and isinstance(args[0], torch.dtype):
        raise LLMDiffTypeError("to(device, dtype): the device comes first, e.g. pipe.to('cpu', torch.bfloat16)")
    given_device, given_dtype = (None, args[0]) if len(args) == 1 and isinstance(args[0], torch.dtype) else \
        (list(args) + [None, None])[:2]
    for name, kw, pos in (("device", device, given_device), ("dtype", dtype, given_dtype)):
        if kw is not None and pos is not None:
            raise LLMDiffTypeError(f"to() got {name} twice, as an argument and as a keyword")
    device = device if device is not None else given_device
    dtype = dtype if dtype is not None else given_dtype
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise LLMDiffTypeError(f"dtype must be a floating-point torch.dtype (e.g. torch.bfloat16), got {dtype!r}")
    if device is not None:
        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            raise LLMDiffTypeError(f"device must be a torch.device or a name such as 'cpu' or 'cuda:0', got {device!r}"
                                   ) from None
    return device, dtype


def _move(module: torch.nn.Module, args: dict) -> None:
    """``module.to(**args)``, without the warning diffusers' ModelMixin.to logs on every cast even for a model that
    keeps no module in float32 (its ``_keep_in_fp32_modules`` is empty)."""
    if "dtype" not in args or getattr(module, "_keep_in_fp32_modules", None):
        module.to(**args)
        return
    import logging

    log = logging.getLogger("diffusers.models.modeling_utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        module.to(**args)
    finally:
        log.setLevel(level)


def _check_finite(x: torch.Tensor, producer: str) -> None:
    """One reduction after sampling (and after decoding): NaN or inf would otherwise become an all-black image."""
    if not torch.isfinite(x).all():
        raise LLMDiffError(f"{producer} produced non-finite values (NaN or inf), which would be a black image: check "
                           "the model's weights (damaged, or diverged in training) and the dtype (float16 can "
                           "overflow; try torch_dtype=torch.float32)")


def _negative_list(negative, n: int) -> list[str]:
    negatives = [negative] * n if isinstance(negative, str) or negative is None else list(negative)
    if len(negatives) != n:
        raise LLMDiffError(f"got {len(negatives)} negative prompts for {n} prompts")
    return [x if x and x.strip() else "" for x in negatives]


def _negative_rows(texts: list[TextInput], negatives: list[str], start: int) -> list[TextInput]:
    """Rows start.. of `texts` are the non-empty negatives, in order; an empty negative is the empty prompt."""
    empty = empty_like([t.select(slice(0, 1)) for t in texts])
    rows, j = [], start
    for neg in negatives:
        rows.append([t.select(slice(j, j + 1)) for t in texts] if neg else empty)
        j += bool(neg)
    return [TextInput.cat([r[k] for r in rows]) for k in range(len(texts))]
