"""Named MiT configurations.

`tiny` and `small` are the published UniMiSS networks; `compact` is a small
variant for CPU demo models. One config describes the encoder and the U-like
Transformer decoder; which spatial dimensions a network accepts, and whether
it carries a class token, are chosen when the network is built.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace


class ImageSizes:
    """What the MiT and MiT+ configs share: the image sizes (`img_size_2d`, `img_size_3d`) their
    positional tables are made for, and their JSON form."""

    def img_size(self, spatial_dims: int) -> tuple[int, ...]:
        return self.img_size_2d if spatial_dims == 2 else self.img_size_3d

    def with_img_size(self, spatial_dims: int, size):
        size = tuple(int(s) for s in size)
        if len(size) != spatial_dims:
            raise ValueError(f"patch size {size} does not have {spatial_dims} dimensions")
        return replace(self, **{f"img_size_{spatial_dims}d": size})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class MiTConfig(ImageSizes):
    name: str
    embed_dims: tuple[int, ...] = (48, 128, 256, 512)
    depths: tuple[int, ...] = (1, 1, 1, 1)
    num_heads: tuple[int, ...] = (1, 2, 4, 8)
    sr_ratios: tuple[int, ...] = (6, 4, 2, 1)
    decoder_dims: tuple[int, ...] = (256, 128, 48)
    decoder_depths: tuple[int, ...] = (1, 1, 1)
    decoder_heads: tuple[int, ...] = (8, 4, 2)
    decoder_sr_ratios: tuple[int, ...] = (2, 4, 6)
    mlp_ratio: float = 4.0
    stem_channels: int = 32
    # Grids the positional embeddings were trained for (input size in voxels,
    # (y, x) for 2D and (z, y, x) for 3D); other sizes interpolate them.
    img_size_2d: tuple[int, int] = (224, 224)
    img_size_3d: tuple[int, int, int] = (16, 96, 96)
    drop_path_rate: float = 0.0

    def __post_init__(self):
        _check_bounds(self)
        if not (len(self.embed_dims) == len(self.depths) == len(self.num_heads) == len(self.sr_ratios) == 4):
            raise ValueError(f"MiT config {self.name!r}: the encoder needs exactly 4 stages")
        n_dec = len(self.decoder_dims)
        if not (n_dec == len(self.decoder_depths) == len(self.decoder_heads) == len(self.decoder_sr_ratios) == 3):
            raise ValueError(f"MiT config {self.name!r}: the decoder needs exactly 3 stages")
        for dim, heads in zip(self.embed_dims + self.decoder_dims, self.num_heads + self.decoder_heads):
            if dim % heads:
                raise ValueError(f"MiT config {self.name!r}: width {dim} is not divisible by {heads} heads")

    @classmethod
    def from_dict(cls, d: dict) -> "MiTConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown MiT config fields: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# Every size a config may take, so that a crafted model.json or checkpoint cannot ask for an
# absurd network: widths, depths, heads, ratios and grids far above the published ones are refused.
BOUNDS = {
    "embed_dims": (1, 2048), "decoder_dims": (1, 2048), "depths": (1, 32), "decoder_depths": (1, 32),
    "num_heads": (1, 64), "decoder_heads": (1, 64), "sr_ratios": (1, 16), "decoder_sr_ratios": (1, 16),
    "img_size_2d": (1, 4096), "img_size_3d": (1, 4096),
}
MAX_MLP_RATIO = 16.0


def _check_bounds(cfg) -> None:
    def fail(what):
        raise ValueError(f"MiT config {cfg.name!r}: {what}")

    for key, (low, high) in BOUNDS.items():
        values = getattr(cfg, key)
        if not isinstance(values, (tuple, list)):
            fail(f"{key} must be a list of whole numbers, not {values!r}")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                fail(f"{key} {list(values)}: each value must be a whole number from {low} to {high}")
    stem = cfg.stem_channels
    if isinstance(stem, bool) or not isinstance(stem, int) or not 1 <= stem <= 1024:
        fail(f"stem_channels {cfg.stem_channels!r} must be a whole number from 1 to 1024")
    ratio = cfg.mlp_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= MAX_MLP_RATIO:
        fail(f"mlp_ratio {cfg.mlp_ratio!r} must be above 0 and at most {MAX_MLP_RATIO:g}")
    if isinstance(cfg.drop_path_rate, bool) or not isinstance(cfg.drop_path_rate, (int, float)) \
            or not 0 <= cfg.drop_path_rate < 1:
        fail(f"drop_path_rate {cfg.drop_path_rate!r} must be in [0, 1)")


CONFIGS: dict[str, MiTConfig] = {
    "tiny": MiTConfig(name="tiny"),
    "small": MiTConfig(name="small", depths=(2, 3, 4, 3), decoder_depths=(3, 4, 3)),
    # About 2.8 M parameters (3D, at the default patch): narrower stages and smaller
    # spatial-reduction kernels, whose weights grow with the cube of the ratio.
    "compact": MiTConfig(
        name="compact",
        embed_dims=(32, 64, 128, 160),
        num_heads=(1, 2, 4, 5),
        sr_ratios=(4, 2, 2, 1),
        decoder_dims=(128, 64, 32),
        decoder_heads=(4, 2, 1),
        decoder_sr_ratios=(2, 2, 4),
        stem_channels=16,
    ),
}


def get_config(name_or_config) -> MiTConfig:
    if isinstance(name_or_config, MiTConfig):
        return name_or_config
    if isinstance(name_or_config, dict):
        return MiTConfig.from_dict(name_or_config)
    try:
        return CONFIGS[name_or_config]
    except KeyError:
        raise ValueError(f"unknown MiT config {name_or_config!r}; choose one of {', '.join(CONFIGS)}") from None


def stem_stride(spatial_dims: int) -> tuple[int, ...]:
    """The stem halves the in-plane resolution; a 3D stem keeps the slice count."""
    return (2, 2) if spatial_dims == 2 else (1, 2, 2)


def grid_after(img_size, spatial_dims: int, n_halvings: int) -> tuple[int, ...]:
    """Token grid after the stem and `n_halvings` stride-2 patch embeddings."""
    return tuple(s // st // 2**n_halvings for s, st in zip(img_size, stem_stride(spatial_dims)))


def size_multiple(spatial_dims: int) -> tuple[int, ...]:
    """Input sizes must be multiples of these so every skip connection lines up."""
    return tuple(st * 2**4 for st in stem_stride(spatial_dims))
