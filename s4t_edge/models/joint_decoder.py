"""The S4T joint decoder: an MAE-style masked autoencoder over the task-specific features.

It sees a random 20 % of the patches of all tasks' features together and must predict every task's
output everywhere, so it learns how the tasks relate; at test time its disagreement with the main
heads is the self-supervised signal.

Export-driven choices (the gradient of this module is traced into an ONNX graph):
- the masking noise is an explicit input, never drawn inside the module;
- keeping and unshuffling tokens are batched matmuls with one-hot permutation matrices built from
  `argsort(noise)` -- their backward is a matmul, not a scatter;
- attention is written in math form (q @ k^T * scale, softmax, @ v), not
  `F.scaled_dot_product_attention`, whose fused kernels do not trace to standard ops;
- GELU is the exact (erf) form, as in the published ViT blocks (ONNX: Erf, or Gelu at opset 20).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from s4t_edge.errors import ConfigError
from s4t_edge.models.ops import resize_bilinear


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (grid*grid, dim), tokens in row-major order.

    Half of the channels encode the column, half the row; each half is [sin, cos] of the position
    times frequencies 1 / 10000^(k / (dim/4)).
    """
    if dim % 4:
        raise ValueError(f"sin-cos embedding dim must be a multiple of 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

    def embed(pos: np.ndarray) -> np.ndarray:
        angles = pos.reshape(-1, 1).astype(np.float64) * omega[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    emb = np.concatenate([embed(cols), embed(rows)], axis=1)
    return torch.from_numpy(emb.astype(np.float32))


def permutation_matrix(noise: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One-hot (N, L, L) matrix P with P[n, j, l] = 1 iff ids_shuffle[n, j] == l.

    ids_shuffle = argsort(noise) ascending, as in MAE: `P @ x` puts the tokens in shuffled order
    (the first len_keep are the kept ones) and `P^T @ y` undoes it (P^T is the one-hot matrix of
    ids_restore = argsort(ids_shuffle)).
    """
    ids_shuffle = torch.argsort(noise, dim=1)
    positions = torch.arange(noise.shape[1], device=noise.device)
    return (ids_shuffle.unsqueeze(-1) == positions).to(dtype)


class Attention(nn.Module):
    """Multi-head self-attention in math form (see the module docstring for why)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.matmul(q * self.scale, k.transpose(-2, -1)).softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(n, length, dim)
        return self.proj(out)


class Mlp(nn.Module):
    """Linear - GELU (exact) - Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block (timm parameter names: norm1, attn, norm2, mlp)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class JointDecoder(nn.Module):
    """Masked autoencoder from the ts_comp map to every task's output.

    Args:
        in_channels: ts_comp channels (tasks * ts_channels).
        out_channels: total output channels of all tasks.
        image_size: side the input map is resized to before patch embedding.
        patch_size: patch side; tokens L = (image_size / patch_size) ** 2.
        enc_depth, enc_dim, enc_heads: encoder blocks, width and heads.
        dec_depth, dec_dim, dec_heads: decoder blocks, width and heads.
        mlp_ratio: ViT MLP hidden width / token width.
        mask_ratio: fraction of tokens hidden from the encoder.
        eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int,
        patch_size: int,
        enc_depth: int,
        enc_dim: int,
        enc_heads: int,
        dec_depth: int,
        dec_dim: int,
        dec_heads: int,
        mlp_ratio: float,
        mask_ratio: float,
        eps: float,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.patch_size = patch_size
        self.out_channels = out_channels
        self.grid = image_size // patch_size
        self.num_tokens = self.grid * self.grid
        self.len_keep = int(self.num_tokens * (1 - mask_ratio))
        self.patch_embed = nn.Conv2d(in_channels, enc_dim, patch_size, stride=patch_size)
        # Fixed, derivable from the config: not part of checkpoints.
        self.register_buffer(
            "pos_embed", sincos_pos_embed_2d(enc_dim, self.grid)[None], persistent=False
        )
        self.blocks = nn.ModuleList(
            [Block(enc_dim, enc_heads, mlp_ratio, eps) for _ in range(enc_depth)]
        )
        self.norm = nn.LayerNorm(enc_dim, eps=eps)
        self.decoder_embed = nn.Linear(enc_dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.register_buffer(
            "decoder_pos_embed", sincos_pos_embed_2d(dec_dim, self.grid)[None], persistent=False
        )
        self.decoder_blocks = nn.ModuleList(
            [Block(dec_dim, dec_heads, mlp_ratio, eps) for _ in range(dec_depth)]
        )
        self.decoder_norm = nn.LayerNorm(dec_dim, eps=eps)
        self.decoder_pred = nn.Linear(dec_dim, patch_size * patch_size * out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        # MAE's initialisation: xavier-uniform linears (and the patch embedding seen as a linear).
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def token_mask(self, noise: torch.Tensor) -> torch.Tensor:
        """(N, L) float mask, 1 where a token is hidden from the encoder (MAE convention)."""
        perm = permutation_matrix(noise, torch.float32)
        keep, length = self.len_keep, noise.shape[1]
        shuffled = torch.cat(
            [torch.zeros(keep, device=noise.device), torch.ones(length - keep, device=noise.device)]
        )
        return torch.matmul(perm.transpose(1, 2), shuffled)

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """ts_comp map (N, C_in, h, w), noise (N, L) -> all tasks (N, C_out, S, S), S = image_size."""
        n = x.shape[0]
        if tuple(noise.shape) != (n, self.num_tokens):
            raise ConfigError(
                f"mask noise must have shape {(n, self.num_tokens)}, got {tuple(noise.shape)}; "
                "draw it with torch.rand(model.mask_noise_shape(batch))"
            )
        x = self.embed_patches(x).flatten(2).transpose(1, 2)  # (N, L, D), row-major tokens
        x = x + self.pos_embed
        perm = permutation_matrix(noise, x.dtype)  # (N, L, L)
        x = torch.matmul(perm[:, : self.len_keep], x)  # kept tokens, (N, K, D)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        masked = self.mask_token.expand(n, self.num_tokens - self.len_keep, x.shape[-1])
        x = torch.cat([x, masked], dim=1)  # shuffled order
        x = torch.matmul(perm.transpose(1, 2), x)  # original order
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))  # (N, L, p*p*C)
        return self.unpatchify(x)

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """patch_embed(resize(x, image_size)), computed without forming the resized map.

        Resizing and the stride-p patch convolution are both linear, so when the resize factor s
        is an integer dividing p their composition is one convolution on the small map: stride
        q = p/s, kernel q + 2 over the map padded by one replicated row/column (bilinear clamping
        at the borders equals replicate padding), with weights W' = W contracted with the
        interpolation weights of one patch.  Exact up to rounding; the published form (resize
        256 channels to 256x256 on the paper preset, and its gradient) took most of the step.
        """
        h, w = x.shape[-2:]
        size, p = self.image_size, self.patch_size
        if (
            self.fused_embed_disabled
            or h != w
            or size % h
            or p % (size // h)
            or h // (p // (size // h)) < 3
        ):
            return self.patch_embed(resize_bilinear(x, (size, size)))
        q = p // (size // h)
        a = self._patch_interp(h, x.dtype, x.device)  # (p, q + 2)
        weight = torch.einsum("ocuv,ut,vr->octr", self.patch_embed.weight, a, a)
        x = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)  # replicate padding as slices:
        x = torch.cat([x[:, :, :, :1], x, x[:, :, :, -1:]], dim=3)  # plain ops for TensorRT
        return F.conv2d(x, weight, self.patch_embed.bias, stride=q)

    fused_embed_disabled = False  # set True to run the published resize + patch_embed

    def _patch_interp(self, h: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Bilinear weights from one interior patch's p pixels to its q + 2 padded source rows."""
        from s4t_edge.models.ops import _interp_matrix_np

        size, p = self.image_size, self.patch_size
        q = p // (size // h)
        # Built in numpy: one constant in a traced graph (no in-place ops for tracing to drop).
        full = _interp_matrix_np(size, h)  # (size, h), clamped at the borders
        padded = np.zeros((size, h + 2))
        padded[:, 1:-1] = full
        i = 1  # an interior patch: its rows never touch the clamped border
        a = padded[i * p : i * p + p, i * q : i * q + q + 2]
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype=dtype, device=device)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, p*p*C) -> (N, C, S, S), patch pixels in (row, col, channel) order as MAE."""
        n, g, p, c = x.shape[0], self.grid, self.patch_size, self.out_channels
        x = x.reshape(n, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(n, c, g * p, g * p)
