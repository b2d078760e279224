"""The sampling path checked against an oracle: a denoiser that knows the answer.

A denoiser that predicts, at every noise level, exactly the velocity (flow) or noise (eps) that leads to a fixed
target makes an exact sampler land on that target. The target is a latent whose values reach well beyond ±1, as
an autoencoder's normalised latents do, so any range operation on the way (a clamp, a rescale, a dtype round
trip) shows up as a difference; the pipeline's image must then be exactly the codec's decoding of the target.
"""

from types import SimpleNamespace

import pytest
import torch

from llmdiff.autoencoder import LatentCodec, build_autoencoder, register_latent_stats
from llmdiff.diffusion import _alphas_cumprod, make_scheduler, sample
from llmdiff.encoders.base import TextInput
from llmdiff.pipelines import TextToImage


class OracleDenoiser(torch.nn.Module):
    """Predicts the exact velocity (flow: v = eps - x0) or noise (eps) that points from x_t to ``target``."""

    def __init__(self, target: torch.Tensor, objective: str):
        super().__init__()
        self.register_buffer("target", target)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # the pipeline reads device and dtype from a parameter
        self.config = SimpleNamespace(objective=objective, in_channels=target.shape[1],
                                      sample_size=target.shape[-1], encoders=[{"model": "none"}])

    def forward(self, x_t, timestep, texts):
        x0 = self.target.expand_as(x_t)
        if self.config.objective == "flow":  # x_t = (1 - s) x0 + s eps  =>  v = (x_t - x0) / s
            s = (timestep / 1000).view(-1, 1, 1, 1)
            return (x_t - x0) / s
        ab = _alphas_cumprod(self.config.objective)[timestep.long()].view(-1, 1, 1, 1)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


def far_target(channels: int = 4, size: int = 8) -> torch.Tensor:
    """(1, C, H, W) values with standard deviation 2: about 60 % of them beyond ±1."""
    return torch.randn((1, channels, size, size), generator=torch.Generator().manual_seed(0)) * 2


def texts(batch: int = 1) -> list[TextInput]:
    return [TextInput(torch.randn(batch, 3, 8), torch.ones(batch, 3, dtype=torch.bool))]


@pytest.mark.parametrize("objective, tolerance", [("flow", 1e-4), ("eps", 2e-3)])
def test_sampler_lands_on_the_oracle_target_beyond_unit_range(objective, tolerance):
    target = far_target()
    assert (target.abs() > 1).float().mean() > 0.5
    model = OracleDenoiser(target, objective)
    out = sample(model, texts(), make_scheduler(objective), steps=12, guidance_scale=3.0,
                 noise=torch.randn(target.shape, generator=torch.Generator().manual_seed(1)))
    # nothing between the last model call and the caller may rescale or clip the state
    torch.testing.assert_close(out, target, atol=tolerance, rtol=0)


def test_pipeline_image_is_the_codec_decoding_of_the_sampled_latent():
    torch.manual_seed(0)
    vae = build_autoencoder().eval()
    with torch.no_grad():  # statistics of some latents, so the codec's per-channel normalisation is not identity
        register_latent_stats(vae, vae.encode(torch.rand(8, 3, 32, 32) * 2 - 1).latent_dist.mean * 3)
    codec = LatentCodec(vae)
    target = far_target(channels=vae.config.latent_channels, size=32 // codec.factor)
    pipe = TextToImage(OracleDenoiser(target, "flow"), make_scheduler("flow"), vae, {"steps": 10})
    pipe.set_progress_bar_config(disable=True)
    embeds = texts()

    latent = pipe(prompt_embeds=embeds, output_type="latent").images
    torch.testing.assert_close(latent, target, atol=1e-4, rtol=0)
    image = pipe(prompt_embeds=embeds, output_type="pt").images
    expected = (codec.decode(target) + 1) / 2  # the decoder's pixels, clamped to [-1, 1] there and only there
    torch.testing.assert_close(image, expected, atol=1e-4, rtol=0)
    assert image.min() >= 0 and image.max() <= 1
