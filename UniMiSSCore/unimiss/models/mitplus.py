"""MiT+: the networks of UniMiSS+ (Xie et al., TPAMI 2024), from the same parts as MiT, for 2D and 3D.

What MiT+ changes: a two-level convolutional stem whose outputs feed the decoder, a 3x3
refinement (`proj1`) after every patch embedding and expansion, depth-wise spatial reduction,
class tokens in the encoder only, and a U-shaped decoder that returns to full resolution.

- `MiTPlus`: the pretraining backbone (2D and 3D): `forward(x)` -> (reconstruction logits,
  encoder class token).
- `MiTPlusSegmentation`: a 2D or 3D segmentation network (logits at full resolution).
- `MiTPlusClassifier`: the encoder and a linear head on its class token.
"""
from __future__ import annotations

import torch
from torch import nn

from .heads import ClassificationHead
from .layers import ConvNormAct, Switchable, conv, conv_transpose
from .mit import TransformerStage, _channels_last_weights, _init_weights, channels_last
from .mitplus_config import IN_CHANNELS, LEVEL_STRIDES, PLUS, MiTPlusConfig, level_grid, plus_size_multiple


def get_plus_config(config=None) -> MiTPlusConfig:
    if config is None or config == "plus":
        return PLUS
    if isinstance(config, MiTPlusConfig):
        return config
    if isinstance(config, dict):
        return MiTPlusConfig.from_dict(config)
    raise ValueError(f"unknown MiT+ config {config!r}; the only published one is 'plus'")


class PatchEmbed(nn.Module):
    """A change of grid (strided or transposed convolution, `proj`), then a 3x3 convolution block (`proj1`)."""

    def __init__(self, proj: nn.Module, spatial_dims: int, channels: int):
        super().__init__()
        self.proj = proj
        self.proj1 = ConvNormAct(spatial_dims, channels, channels, 3, padding=1)

    def forward(self, x):
        return self.proj1(self.proj(x))


class MiTPlusEncoder(nn.Module):
    """Two convolutional stem levels and four Transformer stages."""

    def __init__(self, cfg: MiTPlusConfig, spatial_dims=(2, 3), class_token=True, in_channels=None):
        super().__init__()
        in_channels = {**IN_CHANNELS, **(in_channels or {})}
        c0, c1 = cfg.stem_channels
        self.stem = nn.ModuleList([
            Switchable({d: nn.Sequential(ConvNormAct(d, in_channels[d], c0, 3, padding=1)) for d in spatial_dims}),
            Switchable({d: nn.Sequential(ConvNormAct(d, c0, c1, 3, stride=LEVEL_STRIDES[d][1], padding=1),
                                         ConvNormAct(d, c1, c1, 3, padding=1)) for d in spatial_dims}),
        ])
        stages, prev = [], c1
        for i, dim in enumerate(cfg.embed_dims):
            embed = Switchable({
                d: PatchEmbed(ConvNormAct(d, prev, dim, 3, stride=LEVEL_STRIDES[d][i + 2], padding=1), d, dim)
                for d in spatial_dims
            })
            grids = {d: level_grid(cfg.img_size(d), d, i + 2) for d in spatial_dims}
            stages.append(TransformerStage(
                embed, dim, cfg.depths[i], cfg.num_heads[i], cfg.sr_ratios[i], cfg, grids, class_token,
                prev_dim=cfg.embed_dims[i - 1] if i else None, norm_eps=1e-6, qkv_bias=True, depthwise_sr=True,
            ))
            prev = dim
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        """The six level maps (two stems, four stages) and the last class token (or None)."""
        features = []
        for stem in self.stem:
            x = stem(x)
            features.append(x)
        cls = None
        for stage in self.stages:
            x, cls = stage(x, cls)
            features.append(x)
        return features, cls


class MiTPlusDecoder(nn.Module):
    """Three Transformer stages adding the encoder stages, then two transposed convolutions adding the stems.

    `bottleneck_quirk` reproduces the published 2D segmentation network, which reads its deepest encoder map
    (stored channels first) as if it were channels last, mixing channels and positions; its released
    weights were trained that way.
    """

    def __init__(self, cfg: MiTPlusConfig, spatial_dims=(2, 3), bottleneck_quirk=False):
        super().__init__()
        self.bottleneck_quirk = bottleneck_quirk
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.decoder_depths), device="cpu").tolist()
        stages, prev = [], cfg.embed_dims[-1]
        for j, dim in enumerate(cfg.decoder_dims):
            level = 4 - j  # the encoder level whose grid and output this stage meets
            embed = Switchable({
                d: PatchEmbed(conv_transpose(d, prev, dim, LEVEL_STRIDES[d][level + 1], stride=LEVEL_STRIDES[d][level + 1]),
                              d, dim)
                for d in spatial_dims
            })
            grids = {d: level_grid(cfg.img_size(d), d, level) for d in spatial_dims}
            start = sum(cfg.decoder_depths[:j])
            stages.append(TransformerStage(
                embed, dim, cfg.decoder_depths[j], cfg.decoder_heads[j], cfg.decoder_sr_ratios[j], cfg, grids,
                class_token=False, norm_eps=1e-5, qkv_bias=False, drop_path=dpr[start:start + cfg.decoder_depths[j]],
                final_norm=j == 2, depthwise_sr=True,
            ))
            prev = dim
        self.stages = nn.ModuleList(stages)
        c0, c1 = cfg.stem_channels
        self.expand1 = Switchable({d: conv_transpose(d, prev, c1, LEVEL_STRIDES[d][2], stride=LEVEL_STRIDES[d][2])
                                   for d in spatial_dims})
        self.refine1 = Switchable({d: ConvNormAct(d, c1, c1, 3, padding=1) for d in spatial_dims})
        self.expand2 = Switchable({d: conv_transpose(d, c1, c0, LEVEL_STRIDES[d][1], stride=LEVEL_STRIDES[d][1])
                                   for d in spatial_dims})

    def forward(self, features):
        """features: the six encoder maps. Returns five maps from coarse to full resolution."""
        x, outputs = features[-1], []
        if self.bottleneck_quirk:
            x = x.contiguous().reshape(x.shape[0], *x.shape[2:], x.shape[1]).movedim(-1, 1)
        for j, stage in enumerate(self.stages):
            x, _ = stage(x, skip=features[-2 - j])
            outputs.append(x)
        x = self.refine1(self.expand1(x) + features[1])
        outputs.append(x)
        outputs.append(self.expand2(x) + features[0])
        return outputs


def check_plus_input(x: torch.Tensor, spatial_dims) -> None:
    nd = x.ndim - 2
    if nd not in spatial_dims:
        raise ValueError(f"expected a (B, C, {'D, ' if 3 in spatial_dims else ''}H, W) tensor, got shape {tuple(x.shape)}")
    mult = plus_size_multiple(nd)
    if any(s % m for s, m in zip(x.shape[2:], mult)):
        raise ValueError(f"{nd}D input size {tuple(x.shape[2:])} must be a multiple of {mult}")


def _finish(model: nn.Module) -> None:
    _init_weights(model)
    _channels_last_weights(model)


class MiTPlus(nn.Module):
    """The UniMiSS+ pretraining backbone over 2D and 3D input: reconstruction logits and the encoder class token.

    The class token (no final norm) feeds the self-distillation head; the logits, through a sigmoid,
    the reconstruction loss. 2D input has 3 channels and is reconstructed in 3, CT has 1.
    """

    def __init__(self, config=None, spatial_dims=(2, 3), in_channels=None):
        super().__init__()
        self.config = get_plus_config(config)
        self.spatial_dims = tuple(spatial_dims)
        channels = {**IN_CHANNELS, **(in_channels or {})}
        self.encoder = MiTPlusEncoder(self.config, self.spatial_dims, class_token=True, in_channels=channels)
        self.decoder = MiTPlusDecoder(self.config, self.spatial_dims)
        c0 = self.config.stem_channels[0]
        self.recon = Switchable({d: conv(d, c0, channels[d], 1) for d in self.spatial_dims})
        self.embed_dim = self.config.embed_dims[-1]
        _finish(self)

    def forward(self, x):
        check_plus_input(x, self.spatial_dims)
        features, cls = self.encoder(channels_last(x))
        return self.recon(self.decoder(features)[-1]), cls


class MiTPlusSegmentation(nn.Module):
    """MiT+ with a segmentation head for one spatial dimension, as the published downstream networks.

    forward returns full-resolution logits; with `deep_supervision` set while training it returns
    [logits, ds4, ds3, ds2, ds1] from fine to coarse (the published 3D network's five outputs).
    `bottleneck_quirk`: see `MiTPlusDecoder`; only for the published 2D segmentation weights.
    """

    def __init__(self, config=None, num_classes=2, spatial_dims=3, in_channels=None, patch_size=None,
                 deep_supervision=False, bottleneck_quirk=False):
        super().__init__()
        cfg = get_plus_config(config)
        if patch_size is not None:
            cfg = cfg.with_img_size(spatial_dims, patch_size)
        self.config, self.spatial_dims, self.num_classes = cfg, spatial_dims, num_classes
        self.deep_supervision = deep_supervision
        channels = {spatial_dims: in_channels} if in_channels else None
        self.encoder = MiTPlusEncoder(cfg, (spatial_dims,), class_token=False, in_channels=channels)
        self.decoder = MiTPlusDecoder(cfg, (spatial_dims,), bottleneck_quirk)
        nd = spatial_dims
        self.aux_heads = nn.ModuleList(conv(nd, ch, num_classes, 1) for ch in (*cfg.decoder_dims, cfg.stem_channels[1]))
        self.classifier = conv(nd, cfg.stem_channels[0], num_classes, 1)
        _finish(self)

    @property
    def in_channels(self) -> int:
        return self.encoder.stem[0].branch(self.spatial_dims)[0].conv.in_channels

    def forward(self, x):
        check_plus_input(x, (self.spatial_dims,))
        features, _ = self.encoder(channels_last(x))
        decoded = self.decoder(features)
        logits = self.classifier(decoded[-1])
        if self.deep_supervision and self.training:
            return [logits, *(head(f) for head, f in zip(reversed(self.aux_heads), reversed(decoded[:-1])))]
        return logits


class MiTPlusClassifier(nn.Module):
    """The MiT+ encoder and a linear classifier on its last class token (the published 2D classifier)."""

    def __init__(self, config=None, num_classes=2, spatial_dims=2, in_channels=None, patch_size=None):
        super().__init__()
        cfg = get_plus_config(config)
        if patch_size is not None:
            cfg = cfg.with_img_size(spatial_dims, patch_size)
        self.config, self.spatial_dims, self.num_classes = cfg, spatial_dims, num_classes
        channels = {spatial_dims: in_channels} if in_channels else None
        self.encoder = MiTPlusEncoder(cfg, (spatial_dims,), class_token=True, in_channels=channels)
        self.head = ClassificationHead(cfg.embed_dims[-1], num_classes)
        _finish(self)

    def forward(self, x):
        check_plus_input(x, (self.spatial_dims,))
        _, cls = self.encoder(channels_last(x))
        return self.head(cls)
