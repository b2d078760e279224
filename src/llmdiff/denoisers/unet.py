"""A diffusers ``UNet2DConditionModel`` conditioned on a prompt encoder: our "Stable Diffusion with CLIP".

The U-Net keeps Stable Diffusion 1.5's layout (cross-attention down blocks, a mid block, cross-
attention up blocks) at widths sized for a CPU. As in SD, the encoder's last hidden states go
straight into cross-attention (``cross_attention_dim`` = the encoder width), behind one learnt
null token that is always attendable (the empty prompt would otherwise mask every key).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..encoders.base import TextInput
from ..errors import LLMDiffError
from ..layers import with_null_token
from ..utils import from_preset

PRESETS: dict[str, dict] = {
    # Stable Diffusion 1.5's block types at CPU widths, pixel space at 32 px: four levels (32, 16, 8, 4 px)
    # with cross-attention only at 8 and 4 px. Attention at 16 px costs several times the throughput
    # (docs/benchmarks/denoisers.md) while shapes are drawn by the convolutions anyway.
    "tiny": dict(block_out_channels=(16, 32, 64, 64), layers_per_block=1, attention_head_dim=8,
                 down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
    "sd15": dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
}


class TextUNet(ModelMixin, ConfigMixin):
    config_name = "config.json"
    # enable_gradient_checkpointing reaches the wrapped U-Net's blocks (diffusers' own flags in each block)
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, sample_size: int = 32, in_channels: int = 3, block_out_channels: tuple = (32, 64, 64),
                 layers_per_block: int = 1, attention_head_dim: int = 8, down_block_types: tuple = (),
                 up_block_types: tuple = (), norm_num_groups: int = 8, text_dims: tuple = (384,),
                 objective: str = "flow", encoders: tuple = ()):
        super().__init__()
        if len(text_dims) != 1:
            raise LLMDiffError("the U-Net base reads one prompt encoder")
        self.unet = UNet2DConditionModel(
            sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
            block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
            down_block_types=tuple(down_block_types), up_block_types=tuple(up_block_types),
            cross_attention_dim=text_dims[0], attention_head_dim=attention_head_dim, norm_num_groups=norm_num_groups)
        self.null_text = nn.Parameter(torch.randn(1, 1, text_dims[0]) * 0.02)

    def fit_text_statistics(self, texts: list[TextInput]) -> None:
        """Nothing to fit: as in Stable Diffusion, the encoder's hidden states go into cross-attention as they are."""

    def context(self, text: TextInput) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention context (B, 1 + L, D) and mask with the null token in front."""
        return with_null_token(self.null_text, text.features, text.mask)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, texts: list[TextInput]) -> torch.Tensor:
        ctx, mask = self.context(texts[0])
        return self.unet(sample, timestep, encoder_hidden_states=ctx, encoder_attention_mask=mask.long()).sample


def build_unet(preset: str, overrides: dict | None = None, **kwargs) -> TextUNet:
    return from_preset(TextUNet, PRESETS, preset, overrides, "U-Net", **kwargs)
