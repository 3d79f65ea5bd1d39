"""The S4T multi-task model (DESIGN.md §2): backbone, fused main heads, ts_comp, aux heads and the
joint masked decoder.

The forward is written to be traced (torch.fx `make_fx`, `torch.export`) into the graphs the
runtime executes: no data-dependent Python control flow, no in-place ops on autograd tensors, no
`.item()`, the mask noise an explicit input, every resize through `ops.resize_bilinear`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from s4t_edge.errors import ConfigError
from s4t_edge.models.adapters import Adapter, adapter_width
from s4t_edge.models.backbones import check_backbone, create_backbone
from s4t_edge.models.config import ADAPTER_STAGES, ModelConfig
from s4t_edge.models.fusion import FusedConv1x1
from s4t_edge.models.joint_decoder import JointDecoder
from s4t_edge.models.norm import set_bn_mode
from s4t_edge.models.ops import resize_bilinear

Outputs = dict[str, dict[str, torch.Tensor]]


class S4TModel(nn.Module):
    """S4T model built from a `ModelConfig`; use `build_model` or `S4TModel.from_config`.

    Submodules (their names are part of the contract with export scopes and checkpoints):
    `backbone` (torchvision names), `heads.<task>`, `ts_comp`, `aux_heads.<task>`, `joint_decoder`,
    `adapters.<stage>`.

    Inputs are normalised float32 NCHW images at `config.input_size` (other multiples of 32 work;
    outputs follow the input size) and, for the full forward, uniform [0, 1) noise of shape
    `mask_noise_shape(N)`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        check_backbone(config.backbone)
        self._config = config
        self.backbone = create_backbone(config.backbone)
        splits = self.backbone.stage_channels
        ts = config.ts_channels
        self.heads = nn.ModuleDict({t: FusedConv1x1(splits, c) for t, c in config.tasks})
        self.ts_comp = FusedConv1x1(splits, ts * len(config.tasks))
        self.aux_heads = nn.ModuleDict({t: nn.Conv2d(ts, c, 1) for t, c in config.tasks})
        self.joint_decoder = JointDecoder(
            in_channels=ts * len(config.tasks),
            out_channels=config.total_channels,
            image_size=config.decoder_image_size,
            patch_size=config.patch_size,
            enc_depth=config.enc_depth,
            enc_dim=config.enc_dim,
            enc_heads=config.enc_heads,
            dec_depth=config.dec_depth,
            dec_dim=config.dec_dim,
            dec_heads=config.dec_heads,
            mlp_ratio=config.mlp_ratio,
            mask_ratio=config.mask_ratio,
            eps=config.ln_eps,
        )
        self.adapters = nn.ModuleDict()
        self._bn_mode: str | None = None
        self._insert_adapters(config.adapters, config.adapter_reduction, config.adapter_min_width)

    @classmethod
    def from_config(cls, config: ModelConfig) -> S4TModel:
        """Build a freshly initialised model (weights come from a checkpoint or training)."""
        return cls(config)

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> ModelConfig:
        """The frozen config; it follows post-hoc changes such as `add_adapters`."""
        return self._config

    @property
    def task_names(self) -> tuple[str, ...]:
        """Task names in channel-layout order."""
        return self._config.task_names

    @property
    def num_tokens(self) -> int:
        """Tokens L of the joint decoder."""
        return self.joint_decoder.num_tokens

    @property
    def len_keep(self) -> int:
        """Tokens the joint decoder's encoder keeps, int(L * (1 - mask_ratio))."""
        return self.joint_decoder.len_keep

    def mask_noise_shape(self, batch: int) -> tuple[int, int]:
        """Shape of the uniform [0, 1) noise the forward needs for a batch of `batch` images."""
        return (int(batch), self.num_tokens)

    # ------------------------------------------------------------------ modes
    def set_bn_mode(self, mode: str | None) -> S4TModel:
        """Choose where every BatchNorm takes its statistics from, overriding `train()`/`eval()`.

        Args:
            mode: ``"running"`` (running statistics, never updated), ``"batch"`` (current batch
                statistics computed with plain ops, running statistics untouched; the published
                test-time protocol and the export use this), or None to go back to standard PyTorch
                behaviour (train: batch stats + running-stat updates; eval: running stats).
        """
        set_bn_mode(self.modules(), mode)
        self._bn_mode = mode
        return self

    @property
    def bn_mode(self) -> str | None:
        """The explicit BatchNorm mode, or None when BatchNorm follows `train()`/`eval()`."""
        return self._bn_mode

    def use_reference_fusion(self, enabled: bool = True) -> S4TModel:
        """Switch heads and ts_comp to the published fusion (resize all scales, concatenate, 1x1).

        Numerically equal to the default factorised form and much slower; benchmarks use it as
        "the published forward".  Also switches the joint decoder back to the published
        resize-then-patch-embed (see `JointDecoder.embed_patches`).
        """
        for m in self.modules():
            if isinstance(m, FusedConv1x1):
                m.reference = bool(enabled)
        self.joint_decoder.fused_embed_disabled = bool(enabled)
        return self

    # ------------------------------------------------------------------ adapters
    def _insert_adapters(self, stages: Sequence[str], reduction: int, min_width: int) -> None:
        channels = dict(zip(self.backbone.stage_names, self.backbone.stage_channels))
        ref = next(self.backbone.parameters())
        for s in stages:
            if s in self.adapters:
                continue
            adapter = Adapter(channels[s], adapter_width(channels[s], reduction, min_width))
            self.adapters[s] = adapter.to(device=ref.device, dtype=ref.dtype)

    def add_adapters(self, stages: Sequence[str], reduction: int | None = None) -> S4TModel:
        """Insert zero-initialised residual adapters after backbone `stages` (outputs unchanged).

        Stages that already have an adapter keep it.  The config is updated so that a saved
        model rebuilds with the same modules.

        Args:
            stages: subset of layer1..layer4.
            reduction: bottleneck reduction; the config's `adapter_reduction` when None.

        Raises:
            ConfigError: unknown stage, or a reduction that differs from existing adapters'.
        """
        if isinstance(stages, str):
            stages = [stages]
        bad = [s for s in stages if s not in ADAPTER_STAGES]
        if bad:
            raise ConfigError(
                f"unknown adapter stage(s) {bad}; choose among {', '.join(ADAPTER_STAGES)}"
            )
        cfg = self._config
        if reduction is None:
            reduction = cfg.adapter_reduction
        elif reduction != cfg.adapter_reduction and cfg.adapters:
            raise ConfigError(
                f"the model already has adapters with reduction {cfg.adapter_reduction}; "
                f"add more with the same reduction (got {reduction})"
            )
        new_cfg = cfg.replace(
            adapters=tuple(cfg.adapters) + tuple(stages), adapter_reduction=reduction
        )
        self._insert_adapters(new_cfg.adapters, reduction, new_cfg.adapter_min_width)
        self._config = new_cfg
        return self

    # ------------------------------------------------------------------ forward
    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features C2..C5, with adapters applied after their stages."""
        bb = self.backbone
        x = bb.stem(image)
        feats = []
        for name in bb.stage_names:
            x = bb.stage(name)(x)
            if name in self.adapters:
                x = self.adapters[name](x)
            feats.append(x)
        return feats

    def main_outputs(
        self, feats: Sequence[torch.Tensor], size: tuple[int, int] | torch.Size
    ) -> dict[str, torch.Tensor]:
        """Main predictions at `size` from the backbone features."""
        return {t: resize_bilinear(self.heads[t](feats), size) for t in self.task_names}

    def task_features(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """ts_comp: (N, T * ts_channels, H/4, W/4); task i owns channels [i*ts, (i+1)*ts)."""
        return self.ts_comp(feats)

    def aux_outputs(
        self, ts_feat: torch.Tensor, size: tuple[int, int] | torch.Size
    ) -> dict[str, torch.Tensor]:
        """Aux predictions at `size`, each from its own task's slice of the ts_comp map."""
        k = self._config.ts_channels
        return {
            t: resize_bilinear(self.aux_heads[t](ts_feat[:, i * k : (i + 1) * k]), size)
            for i, t in enumerate(self.task_names)
        }

    def joint_outputs(
        self, ts_feat: torch.Tensor, mask_noise: torch.Tensor, size: tuple[int, int] | torch.Size
    ) -> dict[str, torch.Tensor]:
        """Joint-decoder predictions at `size`, split by task name from the ordered task list."""
        y = self.joint_decoder(ts_feat, mask_noise)
        out, start = {}, 0
        for t, c in self._config.tasks:
            out[t] = resize_bilinear(y[:, start : start + c], size)
            start += c
        return out

    def forward(self, image: torch.Tensor, mask_noise: torch.Tensor) -> Outputs:
        """Image (N, 3, H, W) and mask noise (N, L) -> {"main", "aux", "joint"} of {task: (N, C_t, H, W)}."""
        size = image.shape[-2:]
        feats = self.features(image)
        ts_feat = self.task_features(feats)
        return {
            "main": self.main_outputs(feats, size),
            "aux": self.aux_outputs(ts_feat, size),
            "joint": self.joint_outputs(ts_feat, mask_noise, size),
        }

    def predict(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Main-head predictions only (no ts_comp, no joint decoder): what deployment returns."""
        return self.main_outputs(self.features(image), image.shape[-2:])

    def token_mask(self, mask_noise: torch.Tensor) -> torch.Tensor:
        """(N, L) mask of the tokens hidden from the joint decoder's encoder (1 = hidden)."""
        return self.joint_decoder.token_mask(mask_noise)
