"""Building blocks of MiT, each written once for 2D and 3D.

Feature maps travel as (B, C, *grid) tensors, token sequences as (B, N, C).
A "switchable" module holds one branch per spatial dimension and picks it from
the input's rank, which is how UniMiSS shares one Transformer between
radiographs and CT.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def conv(spatial_dims: int, *args, **kwargs) -> nn.Module:
    return _CONV[spatial_dims](*args, **kwargs)


def conv_transpose(spatial_dims: int, *args, **kwargs) -> nn.Module:
    return _CONV_T[spatial_dims](*args, **kwargs)


def norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    if kind == "instance":
        # Instance norm with affine parameters is group norm with one channel per group:
        # the same parameters and output, and a kernel that is fast on channels-last maps.
        return nn.GroupNorm(channels, channels, eps=1e-5)
    if kind == "batch":
        return _BATCH_NORM[spatial_dims](channels)
    raise ValueError(f"unknown normalisation {kind!r}")


def to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, *grid) -> (B, N, C)."""
    return feature_map.flatten(2).transpose(1, 2)


def to_map(tokens: torch.Tensor, grid) -> torch.Tensor:
    """(B, N, C) -> (B, C, *grid), a channels-last view of the tokens (no copy)."""
    b, _, c = tokens.shape
    nd = len(grid)
    return tokens.reshape(b, *grid, c).permute(0, nd + 1, *range(1, nd + 1))


FEW_CHANNELS = 4  # convolutions with fewer input channels may run in fp32 under autocast (unimiss.cpu)


class ConvNormAct(nn.Sequential):
    """Convolution (no bias), normalisation, LeakyReLU: the CNN unit of the MiT stems."""

    def __init__(self, spatial_dims, in_ch, out_ch, kernel_size, stride=1, padding=0, norm_kind="instance"):
        super().__init__()
        self.conv = conv(spatial_dims, in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False)
        self.norm = norm(norm_kind, spatial_dims, out_ch)
        self.nonlin = nn.LeakyReLU(negative_slope=1e-2, inplace=True)

    def forward(self, x):
        if fp32_under_autocast(self.conv, x):
            with torch.autocast(x.device.type, enabled=False):
                x = self.conv(x.float())
        else:
            x = self.conv(x)
        return self.nonlin(self.norm(x))


def fp32_under_autocast(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether this convolution runs in fp32 although bf16 autocast is on: one with few input channels,
    on a CPU whose bf16 kernels are slow for it (see unimiss.cpu)."""
    if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu") or module.in_channels >= FEW_CHANNELS:
        return False
    from .. import cpu

    return cpu.fp32_few_channel_convs()


def cast_for_inference(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store the weights and biases of linear and convolution layers in `dtype` (in place), for inference
    under autocast to that dtype: autocast would otherwise cast them again at every call. Outputs are
    unchanged, since autocast computes these layers in `dtype` anyway. Norms, positional embeddings and
    the convolutions that `fp32_under_autocast` keeps in fp32 keep their fp32 parameters."""
    layers = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    probe = torch.empty(0)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        for m in model.modules():
            if not isinstance(m, layers) or (isinstance(m, nn.modules.conv._ConvNd) and fp32_under_autocast(m, probe)):
                continue
            for p in m.parameters(recurse=False):
                p.data = p.data.to(dtype)
    return model


class Switchable(nn.Module):
    """One branch per spatial dimension, chosen by the input's rank."""

    def __init__(self, branches: dict[int, nn.Module]):
        super().__init__()
        self.branches = nn.ModuleDict({f"{d}d": m for d, m in branches.items()})

    @property
    def spatial_dims(self) -> tuple[int, ...]:
        return tuple(int(k[0]) for k in self.branches)

    def branch(self, spatial_dims: int) -> nn.Module:
        try:
            return self.branches[f"{spatial_dims}d"]
        except KeyError:
            raise ValueError(
                f"this network takes {' or '.join(f'{d}D' for d in self.spatial_dims)} input, not {spatial_dims}D"
            ) from None

    def forward(self, x):
        return self.branch(x.ndim - 2)(x)


def interpolate_grid(values: torch.Tensor, old_grid, new_grid) -> torch.Tensor:
    """Resample a (1, N, C) table laid out on old_grid to new_grid.

    Bicubic in 2D and trilinear in 3D with the scale factor (new + 0.1) / old,
    exactly as the published UniMiSS code (after DINO) does, so that official
    weights behave as published on off-size inputs.
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid == new_grid:
        return values
    nd = len(old_grid)
    c = values.shape[-1]
    table = to_map(values, old_grid).float()
    scale = tuple((n + 0.1) / o for n, o in zip(new_grid, old_grid))
    out = F.interpolate(table, scale_factor=scale, mode="bicubic" if nd == 2 else "trilinear", align_corners=False)
    assert tuple(out.shape[2:]) == new_grid, (out.shape, new_grid)
    return to_tokens(out).reshape(1, -1, c).to(values.dtype)


class PositionalEmbedding(nn.Module):
    """Learned positional embeddings, one table per spatial dimension.

    Each table is laid out on the grid the network was trained at and is
    interpolated to other grids; the class-token position (if any) is kept.
    """

    def __init__(self, dim: int, grids: dict[int, tuple[int, ...]], num_prefix: int):
        super().__init__()
        self.num_prefix = num_prefix
        self.grids = {f"{d}d": tuple(g) for d, g in grids.items()}
        self.tables = nn.ParameterDict(
            {
                k: nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, num_prefix + _numel(g), dim), std=0.02))
                for k, g in self.grids.items()
            }
        )

    def table(self, grid) -> torch.Tensor:
        key = f"{len(grid)}d"
        table = self.tables[key]
        if tuple(grid) == self.grids[key]:
            return table
        prefix, patches = table[:, : self.num_prefix], table[:, self.num_prefix :]
        patches = interpolate_grid(patches, self.grids[key], grid)
        return torch.cat((prefix, patches), dim=1) if self.num_prefix else patches

    def forward(self, tokens: torch.Tensor, grid) -> torch.Tensor:
        return tokens + self.table(grid)


def _numel(grid) -> int:
    n = 1
    for g in grid:
        n *= g
    return n


class Attention(nn.Module):
    """Multi-head attention whose keys and values come from a spatially reduced grid.

    The reduction convolution is switchable (2D and 3D); queries, keys, values,
    output projection and the reduction's LayerNorm are shared. With `depthwise_sr`
    the reduction convolves each channel on its own (MiT+), not all channels together (MiT).
    """

    def __init__(self, dim, num_heads, sr_ratio, spatial_dims, qkv_bias, depthwise_sr=False):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            groups = dim if depthwise_sr else 1
            self.sr = Switchable({d: conv(d, dim, dim, sr_ratio, stride=sr_ratio, groups=groups) for d in spatial_dims})
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, grid, num_prefix: int):
        b, n, c = x.shape
        h = self.num_heads
        q = self.q(x).reshape(b, n, h, c // h).transpose(1, 2)
        if self.sr_ratio > 1:
            reduced = to_tokens(self.sr.branch(len(grid))(to_map(x[:, num_prefix:], grid)))
            kv_in = self.norm(torch.cat((x[:, :num_prefix], reduced), dim=1))
        else:
            kv_in = x
        k, v = self.kv(kv_in).reshape(b, -1, 2, h, c // h).permute(2, 0, 3, 1, 4)
        if q.device.type == "cpu" and q.dtype == torch.bfloat16 and not torch.is_grad_enabled():
            out = chunked_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def chunked_attention(q, k, v, max_scores: int = 1 << 21):
    """Softmax attention by blocks of queries with plain matrix products.

    For CPU inference in bfloat16: with the few keys that spatial reduction leaves, this runs
    about twice as fast as the CPU kernel of scaled_dot_product_attention on an idle AMD EPYC
    (7.2 vs 16.3 ms on the finest MiT-small grid, Testing/benchmarks/bench_mit.py), and its
    matrix products are what AMX units accelerate.
    """
    n, m = q.shape[-2], k.shape[-2]
    chunk = max(1, max_scores // max(1, m * q.shape[0] * q.shape[1]))
    kt = k.transpose(-1, -2) * q.shape[-1] ** -0.5
    out = torch.empty_like(q)
    for start in range(0, n, chunk):
        scores = torch.matmul(q[..., start:start + chunk, :], kt)
        torch.matmul(scores.softmax(dim=-1), v, out=out[..., start:start + chunk, :])
    return out


class Mlp(nn.Sequential):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)


class DropPath(nn.Module):
    """Stochastic depth: drops the residual branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """Pre-norm Transformer block with spatial-reduction attention."""

    def __init__(self, dim, num_heads, sr_ratio, spatial_dims, mlp_ratio=4.0, qkv_bias=True, norm_eps=1e-6, drop_path=0.0,
                 depthwise_sr=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, sr_ratio, spatial_dims, qkv_bias, depthwise_sr)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x, grid, num_prefix: int):
        x = x + self.drop_path(self.attn(self.norm1(x), grid, num_prefix))
        return x + self.drop_path(self.mlp(self.norm2(x)))
