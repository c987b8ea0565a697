"""The MiT+ configuration (UniMiSS+, Xie et al., TPAMI 2024) and its grid arithmetic, without torch.

MiT+ has one published architecture. Its encoder has two convolutional stem levels (full
and half resolution, widths `stem_channels`) and four Transformer stages; its decoder has
three Transformer stages, each the width of the encoder stage it adds, and two transposed
convolutions back through the stem levels. Six levels in all, each with its own stride.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import BOUNDS, MAX_MLP_RATIO, ImageSizes

# Strides of the six encoder levels (stem 0, stem 1, stages 1-4); 3D keeps the slice count where
# the published network does.
LEVEL_STRIDES = {
    2: ((1, 1), (2, 2), (2, 2), (2, 2), (2, 2), (2, 2)),
    3: ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)),
}
IN_CHANNELS = {2: 3, 3: 1}  # published stems: RGB-replicated radiographs, single-channel CT


@dataclass(frozen=True)
class MiTPlusConfig(ImageSizes):
    name: str = "plus"
    stem_channels: tuple[int, int] = (32, 64)
    embed_dims: tuple[int, ...] = (128, 256, 320, 320)
    depths: tuple[int, ...] = (1, 2, 4, 2)
    num_heads: tuple[int, ...] = (1, 2, 4, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    decoder_depths: tuple[int, ...] = (1, 1, 1)
    decoder_heads: tuple[int, ...] = (4, 2, 1)
    decoder_sr_ratios: tuple[int, ...] = (2, 4, 8)
    mlp_ratio: float = 4.0
    img_size_2d: tuple[int, int] = (224, 224)
    img_size_3d: tuple[int, int, int] = (16, 96, 96)
    # As published, stochastic depth acts on the decoder's blocks only (the encoder is built without it).
    drop_path_rate: float = 0.0

    def __post_init__(self):
        _check(self)

    @property
    def decoder_dims(self) -> tuple[int, int, int]:
        """Each decoder stage has the width of the encoder stage whose output it adds."""
        return tuple(reversed(self.embed_dims[:3]))

    @classmethod
    def from_dict(cls, d: dict) -> "MiTPlusConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown MiT+ config fields: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _check(cfg: MiTPlusConfig) -> None:
    """The size bounds of MiT configs (config.BOUNDS), so a crafted file cannot ask for an absurd network."""
    def fail(what):
        raise ValueError(f"MiT+ config {cfg.name!r}: {what}")

    limits = {k: v for k, v in BOUNDS.items() if k != "decoder_dims"}
    limits["stem_channels"] = (1, 1024)
    lengths = {"stem_channels": 2, "embed_dims": 4, "depths": 4, "num_heads": 4, "sr_ratios": 4, "decoder_depths": 3,
               "decoder_heads": 3, "decoder_sr_ratios": 3, "img_size_2d": 2, "img_size_3d": 3}
    for key, (low, high) in limits.items():
        values = getattr(cfg, key)
        if not isinstance(values, (tuple, list)) or len(values) != lengths[key]:
            fail(f"{key} must be a list of {lengths[key]} whole numbers, not {values!r}")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                fail(f"{key} {list(values)}: each value must be a whole number from {low} to {high}")
    for dim, heads in zip(cfg.embed_dims + cfg.decoder_dims, cfg.num_heads + cfg.decoder_heads):
        if dim % heads:
            fail(f"width {dim} is not divisible by {heads} heads")
    ratio = cfg.mlp_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= MAX_MLP_RATIO:
        fail(f"mlp_ratio {ratio!r} must be above 0 and at most {MAX_MLP_RATIO:g}")
    rate = cfg.drop_path_rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        fail(f"drop_path_rate {rate!r} must be in [0, 1)")


PLUS = MiTPlusConfig()


def level_grid(img_size, spatial_dims: int, level: int) -> tuple[int, ...]:
    """Grid of encoder level `level` (0, 1: stems; 2-5: Transformer stages) for an input of `img_size`."""
    grid = tuple(img_size)
    for stride in LEVEL_STRIDES[spatial_dims][: level + 1]:
        grid = tuple(g // s for g, s in zip(grid, stride))
    return grid


def plus_size_multiple(spatial_dims: int) -> tuple[int, ...]:
    """Input sizes must be multiples of these so every skip connection lines up."""
    mult = (1,) * spatial_dims
    for stride in LEVEL_STRIDES[spatial_dims]:
        mult = tuple(m * s for m, s in zip(mult, stride))
    return mult
