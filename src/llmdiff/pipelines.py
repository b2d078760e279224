"""Text-to-image generation with a trained llmdiff model, as a diffusers ``DiffusionPipeline``.

    pipe = LLMDiffPipeline.from_model_dir("models/shapes-lidit")
    images = pipe("a red circle to the left of a blue square", num_images_per_prompt=4,
                  guidance_scale=2.0, num_inference_steps=25, generator=torch.Generator().manual_seed(0)).images

The frozen prompt encoders are not stored with the model: its config records which ones it
was trained with (model, layers, template, ...), the pipeline loads exactly those, and it
refuses a mismatched encoder with a clear error.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

from .config import to_dict
from .diffusion import make_scheduler, sample, to_uint8
from .encoders import EncoderConfig, PromptEncoder, TextInput, load_encoder
from .errors import LLMDiffError

# Fields of an encoder config that change the features (the rest only change speed or strictness).
FEATURE_FIELDS = ("model", "layers", "mode", "normalize", "block_groups", "instruction", "chat_template",
                  "max_length", "padding_side", "keep_instruction")


def _feature_fields(cfg: dict) -> dict:
    d = {k: cfg.get(k) for k in FEATURE_FIELDS}
    d["layers"] = list(d["layers"]) if isinstance(d["layers"], (list, tuple)) else d["layers"]
    return d


class LLMDiffPipeline(DiffusionPipeline):
    def __init__(self, denoiser, scheduler):
        super().__init__()
        self.register_modules(denoiser=denoiser, scheduler=scheduler)
        self.encoders: list[PromptEncoder] | None = None
        self.codec = None  # a LatentCodec when the model denoises autoencoder latents
        self.defaults = {"guidance_scale": 2.0, "num_inference_steps": 25}

    @classmethod
    def from_model_dir(cls, path: Path | str, encoders: list[PromptEncoder] | None = None,
                       scheduler: str = "default") -> "LLMDiffPipeline":
        from .denoisers import load_denoiser

        path = Path(path)
        denoiser = load_denoiser(path).eval()
        pipe = cls(denoiser, make_scheduler(denoiser.config.objective, scheduler))
        if (path / "vae" / "config.json").is_file():
            from .autoencoder import LatentCodec

            pipe.codec = LatentCodec(path / "vae")
        info = path / "llmdiff.json"
        if info.is_file():
            s = json.loads(info.read_text()).get("sample", {})
            pipe.defaults = {"guidance_scale": s.get("guidance_scale", 2.0), "num_inference_steps": s.get("steps", 25)}
        if encoders is not None:
            pipe.set_encoders(encoders)
        return pipe

    @property
    def encoder_configs(self) -> list[dict]:
        return [dict(e) for e in self.denoiser.config.encoders]

    def set_encoders(self, encoders: list[PromptEncoder]) -> None:
        """Use these encoders; each must produce the features the model was trained on."""
        want = self.encoder_configs
        if len(encoders) != len(want):
            raise LLMDiffError(f"this model was trained with {len(want)} prompt encoder(s), got {len(encoders)}")
        for k, (enc, cfg) in enumerate(zip(encoders, want)):
            have = _feature_fields(to_dict(enc.config))
            if have != _feature_fields(cfg):
                diff = {f: (cfg.get(f), have[f]) for f in FEATURE_FIELDS if _feature_fields(cfg)[f] != have[f]}
                raise LLMDiffError(f"encoder {k} does not match the one this model was trained with: "
                                   + ", ".join(f"{f} trained={a!r} given={b!r}" for f, (a, b) in diff.items()))
        self.encoders = list(encoders)

    def load_encoders(self) -> list[PromptEncoder]:
        if self.encoders is None:
            self.set_encoders([load_encoder(EncoderConfig(**{k: v for k, v in cfg.items()}), self.device)
                               for cfg in self.encoder_configs])
        return self.encoders

    def encode(self, prompts: list[str], num_images_per_prompt: int = 1) -> list[TextInput]:
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise LLMDiffError(f"prompt {i} is empty: describe the image (e.g. 'a red circle above a blue square')")
        return [enc.encode(prompts).repeat(num_images_per_prompt).to(self.device, torch.float32)
                for enc in self.load_encoders()]

    def sample_images(self, texts: list[TextInput], steps: int, guidance_scale: float, generator=None,
                      noise: torch.Tensor | None = None, progress: bool = False, decode: bool = True) -> torch.Tensor:
        """Images in [-1, 1] (B, 3, H, W): denoise, then decode latents if the model works in latent space
        (``decode=False``: what the denoiser produced, latents for a latent model)."""
        size = self.denoiser.config.sample_size
        x = sample(self.denoiser, texts, self.scheduler, steps, guidance_scale, generator,
                   (self.denoiser.config.in_channels, size, size), progress, noise)
        return self.codec.decode(x) if self.codec is not None and decode else x

    def noise(self, seeds: list[int]) -> torch.Tensor:
        """Starting noise, one image per seed: the same seed gives the same image in any batch."""
        c, size = self.denoiser.config.in_channels, self.denoiser.config.sample_size
        return torch.cat([torch.randn((1, c, size, size), generator=torch.Generator().manual_seed(s)) for s in seeds])

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_images_per_prompt: int = 1, guidance_scale: float | None = None,
                 num_inference_steps: int | None = None, generator: torch.Generator | None = None,
                 output_type: str = "pil", progress: bool = False) -> ImagePipelineOutput:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise LLMDiffError("no prompt given")
        if num_images_per_prompt < 1:
            raise LLMDiffError("num_images_per_prompt must be at least 1")
        guidance_scale = self.defaults["guidance_scale"] if guidance_scale is None else guidance_scale
        steps = num_inference_steps or self.defaults["num_inference_steps"]
        texts = self.encode(prompts, num_images_per_prompt)
        x = self.sample_images(texts, steps, guidance_scale, generator=generator, progress=progress)
        if output_type == "pt":
            return ImagePipelineOutput(images=x)
        arrays = to_uint8(x)
        return ImagePipelineOutput(images=arrays if output_type == "np" else [Image.fromarray(a) for a in arrays])


def image_seed(seed: int, prompt_index: int, image_index: int) -> int:
    return (seed * 1_000_003 + prompt_index) * 1_009 + image_index


@torch.no_grad()
def generate_suite(pipe: LLMDiffPipeline, entries: list[dict], out: Path | str, images_per_prompt: int = 4,
                   seed: int = 0, guidance_scale: float | None = None, num_inference_steps: int | None = None,
                   prompts_per_batch: int = 16, progress: bool = True, overwrite: bool = False) -> Path:
    """Images for every entry in GenEval's folder layout; prompts already complete are skipped (resumable)
    when the folder's record says the same model and settings made them, else refused (or replaced: overwrite)."""
    from .evaluation.layout import claim_output, generation_record
    from .integrity import folder_lock

    out = Path(out)
    guidance_scale = pipe.defaults["guidance_scale"] if guidance_scale is None else guidance_scale
    steps = num_inference_steps or pipe.defaults["num_inference_steps"]
    with folder_lock(out, "images into"):
        claim_output(out, generation_record(pipe, entries, seed, steps, guidance_scale), overwrite)
        _generate_missing(pipe, entries, out, images_per_prompt, seed, guidance_scale, steps, prompts_per_batch,
                          progress)
    return out


def _generate_missing(pipe, entries, out, images_per_prompt, seed, guidance_scale, steps, prompts_per_batch,
                      progress) -> None:
    from tqdm.auto import tqdm

    from .evaluation.layout import write_prompt_folder

    todo = [i for i, _ in enumerate(entries)
            if len(list((out / f"{i:05d}" / "samples").glob("*.png"))) < images_per_prompt]
    for s in tqdm(range(0, len(todo), prompts_per_batch), desc="generating", unit="batch", disable=not progress):
        chunk = todo[s:s + prompts_per_batch]
        texts = pipe.encode([entries[i]["prompt"] for i in chunk], images_per_prompt)
        noise = pipe.noise([image_seed(seed, i, k) for i in chunk for k in range(images_per_prompt)])
        x = pipe.sample_images(texts, steps, guidance_scale, noise=noise)
        arrays = to_uint8(x)
        for j, i in enumerate(chunk):
            write_prompt_folder(out, i, entries[i], arrays[j * images_per_prompt:(j + 1) * images_per_prompt])
