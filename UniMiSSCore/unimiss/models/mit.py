"""MiT: the pyramid Transformer encoder and U-like Transformer decoder of UniMiSS.

One implementation for 2D and 3D. `MiT` is the self-distillation backbone
(switchable 2D/3D, class token carried through every stage); `MiTSegmentation`
adds the segmentation head for one spatial dimension, as the published
downstream networks do.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MiTConfig, get_config, grid_after, size_multiple, stem_stride
from .layers import Block, ConvNormAct, PositionalEmbedding, Switchable, conv, conv_transpose, to_map, to_tokens

IN_CHANNELS = {2: 3, 3: 1}  # published stems: RGB-replicated radiographs, single-channel CT


class TransformerStage(nn.Module):
    """Patch embedding (or expansion), optional skip addition, class token, positional embedding, blocks."""

    def __init__(self, embed: Switchable, dim, depth, heads, sr_ratio, cfg: MiTConfig, grids, class_token,
                 prev_dim=None, norm_eps=1e-6, qkv_bias=True, drop_path=(), final_norm=False, depthwise_sr=False):
        super().__init__()
        self.embed = embed
        self.num_prefix = 1 if class_token else 0
        if class_token and prev_dim is None:
            self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, 1, dim), std=0.02))
        elif class_token:
            self.cls_proj = nn.Linear(prev_dim, dim)
        self.pos = PositionalEmbedding(dim, grids, self.num_prefix)
        dims = tuple(grids)
        drop_path = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            Block(dim, heads, sr_ratio, dims, cfg.mlp_ratio, qkv_bias, norm_eps, drop_path[i], depthwise_sr)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim) if final_norm else None

    def forward(self, x, cls=None, skip=None):
        x = self.embed(x)
        if skip is not None:
            x = x + skip
        grid = tuple(x.shape[2:])
        tokens = to_tokens(x)
        if self.num_prefix:
            cls = self.cls_token.expand(x.shape[0], -1, -1) if cls is None else self.cls_proj(cls).unsqueeze(1)
            tokens = torch.cat((cls, tokens), dim=1)
        tokens = self.pos(tokens, grid)
        for blk in self.blocks:
            tokens = blk(tokens, grid, self.num_prefix)
        if self.norm is not None:
            tokens = self.norm(tokens)
        cls = tokens[:, 0] if self.num_prefix else None
        return to_map(tokens[:, self.num_prefix:], grid), cls


class MiTEncoder(nn.Module):
    """CNN stem and four Transformer stages, each halving the grid."""

    def __init__(self, cfg: MiTConfig, spatial_dims=(2, 3), class_token=True, in_channels=None):
        super().__init__()
        in_channels = {**IN_CHANNELS, **(in_channels or {})}
        self.stem = Switchable({
            d: ConvNormAct(d, in_channels[d], cfg.stem_channels, 7, stride=stem_stride(d), padding=3)
            for d in spatial_dims
        })
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()
        stages, prev = [], cfg.stem_channels
        for i, dim in enumerate(cfg.embed_dims):
            embed = Switchable({d: ConvNormAct(d, prev, dim, 3, stride=2, padding=1) for d in spatial_dims})
            grids = {d: grid_after(cfg.img_size(d), d, i + 1) for d in spatial_dims}
            start = sum(cfg.depths[:i])
            stages.append(TransformerStage(
                embed, dim, cfg.depths[i], cfg.num_heads[i], cfg.sr_ratios[i], cfg, grids, class_token,
                prev_dim=cfg.embed_dims[i - 1] if i else None, norm_eps=1e-6, qkv_bias=True,
                drop_path=dpr[start:start + cfg.depths[i]],
            ))
            prev = dim
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        """Returns the stem map, the four stage maps, and the last class token (or None)."""
        features = [self.stem(x)]
        cls = None
        for stage in self.stages:
            fmap, cls = stage(features[-1], cls)
            features.append(fmap)
        return features, cls


class MiTDecoder(nn.Module):
    """Three Transformer stages, each doubling the grid by transposed convolution and adding the encoder skip."""

    def __init__(self, cfg: MiTConfig, spatial_dims=(2, 3), class_token=True):
        super().__init__()
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.decoder_depths), device="cpu").tolist()
        stages, prev = [], cfg.embed_dims[-1]
        for j, dim in enumerate(cfg.decoder_dims):
            expand = Switchable({d: conv_transpose(d, prev, dim, 2, stride=2) for d in spatial_dims})
            grids = {d: grid_after(cfg.img_size(d), d, 3 - j) for d in spatial_dims}
            start = sum(cfg.decoder_depths[:j])
            stages.append(TransformerStage(
                expand, dim, cfg.decoder_depths[j], cfg.decoder_heads[j], cfg.decoder_sr_ratios[j], cfg, grids,
                class_token, prev_dim=prev, norm_eps=1e-5, qkv_bias=False,
                drop_path=dpr[start:start + cfg.decoder_depths[j]], final_norm=j == len(cfg.decoder_dims) - 1,
            ))
            prev = dim
        self.stages = nn.ModuleList(stages)

    def forward(self, features, cls):
        """features: encoder outputs (stem, stage 1..4). Returns the three decoder maps and the class token."""
        x, outputs = features[-1], []
        for j, stage in enumerate(self.stages):
            x, cls = stage(x, cls, skip=features[-2 - j])
            outputs.append(x)
        return outputs, cls


_CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Feature maps are kept channels-last: token sequences reshape to them without copies,
    and the CPU convolution, transposed-convolution and group-norm kernels are fastest on them."""
    fmt = _CHANNELS_LAST[x.ndim - 2]
    if x.is_contiguous(memory_format=fmt) and x.stride(1) == 1:
        return x
    # With one channel both layouts claim the tensor; give it channels-last strides
    # explicitly so the stem's output, and everything after it, is channels-last.
    return torch.empty_like(x, memory_format=fmt).copy_(x)


def _channels_last_weights(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim in (4, 5):
                p.data = p.data.contiguous(memory_format=_CHANNELS_LAST[p.ndim - 2])


def _check_input(x: torch.Tensor, spatial_dims) -> None:
    nd = x.ndim - 2
    if nd not in spatial_dims:
        raise ValueError(f"expected a (B, C, {'D, ' if 3 in spatial_dims else ''}H, W) tensor, got shape {tuple(x.shape)}")
    mult = size_multiple(nd)
    if any(s % m for s, m in zip(x.shape[2:], mult)):
        raise ValueError(f"{nd}D input size {tuple(x.shape[2:])} must be a multiple of {mult}")


class MiT(nn.Module):
    """The UniMiSS backbone: encoder + decoder over 2D and 3D input, returning the normalised class token."""

    def __init__(self, config="tiny", spatial_dims=(2, 3), in_channels=None):
        super().__init__()
        self.config = get_config(config)
        self.spatial_dims = tuple(spatial_dims)
        self.encoder = MiTEncoder(self.config, self.spatial_dims, class_token=True, in_channels=in_channels)
        self.decoder = MiTDecoder(self.config, self.spatial_dims, class_token=True)
        self.embed_dim = self.config.decoder_dims[-1]
        _init_weights(self)
        _channels_last_weights(self)

    def forward(self, x):
        _check_input(x, self.spatial_dims)
        features, cls = self.encoder(channels_last(x))
        _, cls = self.decoder(features, cls)
        return cls


class MiTSegmentation(nn.Module):
    """MiT with a segmentation head for one spatial dimension, as the published downstream network.

    forward returns full-resolution logits; with `deep_supervision` set while
    training it returns [logits, ds3, ds2, ds1, ds0] from fine to coarse.
    """

    def __init__(self, config="tiny", num_classes=2, spatial_dims=3, in_channels=None, patch_size=None,
                 class_token=False, deep_supervision=False):
        super().__init__()
        cfg = get_config(config)
        if patch_size is not None:
            cfg = cfg.with_img_size(spatial_dims, patch_size)
        self.config, self.spatial_dims, self.num_classes = cfg, spatial_dims, num_classes
        self.deep_supervision = deep_supervision
        channels = {spatial_dims: in_channels} if in_channels else None
        self.encoder = MiTEncoder(cfg, (spatial_dims,), class_token, channels)
        self.decoder = MiTDecoder(cfg, (spatial_dims,), class_token)
        c, nd = cfg.stem_channels, spatial_dims
        self.head_expand = conv_transpose(nd, cfg.decoder_dims[-1], c, 2, stride=2)
        self.head_conv = ConvNormAct(nd, c, c, 3, padding=1)
        self.aux_heads = nn.ModuleList(conv(nd, ch, num_classes, 1) for ch in (*cfg.decoder_dims, c))
        self.classifier = conv(nd, c, num_classes, 1)
        _init_weights(self)
        _channels_last_weights(self)

    @property
    def in_channels(self) -> int:
        return self.encoder.stem.branch(self.spatial_dims).conv.in_channels

    def forward(self, x):
        _check_input(x, (self.spatial_dims,))
        features, cls = self.encoder(channels_last(x))
        decoded, _ = self.decoder(features, cls)
        y = self.head_conv(self.head_expand(decoded[-1]) + features[0])
        logits = self._classify_and_upsample(y)
        if self.deep_supervision and self.training:
            aux = [head(f) for head, f in zip(self.aux_heads, (*decoded, y))]
            return [logits, aux[3], aux[2], aux[1], aux[0]]
        return logits

    def _classify_and_upsample(self, y):
        # A 1x1 convolution commutes with linear interpolation, so classify at the
        # cheaper side: before upsampling when there are fewer classes than channels.
        scale = stem_stride(self.spatial_dims)
        if self.num_classes <= y.shape[1]:
            return upsample_linear(self.classifier(y), scale)
        return self.classifier(upsample_linear(y, scale))


def upsample_linear(x: torch.Tensor, scale) -> torch.Tensor:
    """Linear interpolation by integer factors (align_corners=False), one axis at a time.

    Each axis is a product with the 1D interpolation matrix that F.interpolate
    itself produces, so results equal bilinear/trilinear interpolation; on the CPU
    this is several times faster than F.interpolate (Testing/benchmarks/bench_mit.py).
    """
    for axis, factor in enumerate(scale):
        if factor == 1:
            continue
        dim = 2 + axis
        eye = torch.eye(x.shape[dim], device=x.device)[None]
        matrix = F.interpolate(eye, scale_factor=factor, mode="linear", align_corners=False)[0].to(x.dtype)
        x = torch.movedim(torch.movedim(x, dim, -1) @ matrix, -1, dim)
    return x


def _init_weights(model: nn.Module) -> None:
    """Initialisation of the published code: truncated normal for linear layers, Kaiming for convolutions."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.BatchNorm3d)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
