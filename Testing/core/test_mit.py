"""Behaviour of the generic MiT that the reference vectors do not cover."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unimiss.models import MiT, MiTClassifier, MiTConfig, MiTSegmentation, get_config
from unimiss.models.layers import interpolate_grid


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_one_backbone_switches_between_2d_and_3d_stems():
    model = MiT("compact").eval()
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 64, 96)).shape == (2, 32)
        assert model(torch.randn(1, 1, 16, 64, 96)).shape == (1, 32)
    # Shared Transformer weights, separate stems and reduction convolutions.
    names = [n for n, _ in model.named_parameters()]
    assert any("stem.branches.2d" in n for n in names) and any("stem.branches.3d" in n for n in names)
    assert not any("blocks.0.mlp" in n and ("2d" in n or "3d" in n) for n in names)


def test_depth_other_than_the_trained_one_works():
    # The published code can only interpolate positional embeddings in-plane.
    model = MiT("compact").eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 1, 48, 64, 64))
    assert out.shape == (1, 32) and torch.isfinite(out).all()


def test_positional_embeddings_are_untouched_on_the_trained_grid_and_smooth_elsewhere():
    grid = (4, 6, 6)
    z, y, x = torch.meshgrid(*(torch.linspace(0, 1, g) for g in grid), indexing="ij")
    table = torch.stack([z, y, x], -1).reshape(1, -1, 3)
    assert interpolate_grid(table, grid, grid) is table
    bigger = interpolate_grid(table, grid, (8, 12, 12))
    assert bigger.shape == (1, 8 * 12 * 12, 3)
    # A linear ramp stays monotone along each axis after trilinear resampling.
    ramp = bigger.reshape(8, 12, 12, 3)
    assert (ramp[1:, :, :, 0] >= ramp[:-1, :, :, 0] - 1e-6).all()
    assert (ramp[:, :, 1:, 2] >= ramp[:, :, :-1, 2] - 1e-6).all()


def test_wrong_inputs_get_clear_errors():
    seg2d = MiTSegmentation("compact", num_classes=3, spatial_dims=2)
    with pytest.raises(ValueError, match="expected a"):
        seg2d(torch.randn(1, 1, 16, 64, 64))
    with pytest.raises(ValueError, match=r"must be a multiple of \(32, 32\)"):
        seg2d(torch.randn(1, 3, 100, 64))
    seg3d = MiTSegmentation("compact", num_classes=3, spatial_dims=3)
    with pytest.raises(ValueError, match=r"multiple of \(16, 32, 32\)"):
        seg3d(torch.randn(1, 1, 8, 64, 64))
    with pytest.raises(ValueError, match="unknown MiT config 'huge'"):
        get_config("huge")
    with pytest.raises(ValueError, match="not divisible"):
        MiTConfig(name="bad", embed_dims=(32, 64, 130, 512))


@pytest.mark.parametrize("spatial_dims, size", [(2, (64, 96)), (3, (16, 64, 96))])
def test_segmentation_outputs_and_deep_supervision(spatial_dims, size):
    model = MiTSegmentation("compact", num_classes=4, spatial_dims=spatial_dims, in_channels=1, deep_supervision=True)
    x = torch.randn(2, 1, *size)
    model.train()
    outs = model(x)
    assert [tuple(o.shape[1:2]) for o in outs] == [(4,)] * 5
    stride = (1, 2, 2) if spatial_dims == 3 else (2, 2)
    assert outs[0].shape[2:] == size
    assert outs[1].shape[2:] == tuple(s // t for s, t in zip(size, stride))  # ds3 at the stem grid
    assert all(a.numel() > b.numel() for a, b in zip(outs[1:], outs[2:]))  # fine to coarse
    sum(o.float().mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.inference_mode():
        assert model(x).shape == (2, 4, *size)


def test_samples_in_a_batch_do_not_mix():
    model = MiTSegmentation("compact", num_classes=3, spatial_dims=3).eval()
    x = torch.randn(2, 1, 16, 64, 64)
    with torch.inference_mode():
        together = model(x)
        alone = torch.cat([model(x[:1]), model(x[1:])])
    assert torch.allclose(together, alone, atol=1e-4)


@pytest.mark.parametrize("num_classes", [3, 40])  # fewer and more classes than head channels
def test_classifying_before_or_after_upsampling_agree(num_classes):
    model = MiTSegmentation("compact", num_classes=num_classes, spatial_dims=3).eval()
    y = torch.randn(1, model.config.stem_channels, 8, 16, 16)
    reference = model.classifier(F.interpolate(y, scale_factor=(1, 2, 2), mode="trilinear", align_corners=False))
    with torch.inference_mode():
        assert torch.allclose(model._classify_and_upsample(y), reference, atol=1e-5)


def test_configs_sizes():
    assert n_params(MiTSegmentation("compact", num_classes=9, spatial_dims=3)) <= 3_000_000
    assert n_params(MiTSegmentation("compact", num_classes=4, spatial_dims=2)) <= 3_000_000
    assert n_params(MiT("tiny")) < n_params(MiT("small"))


def test_stochastic_depth_only_while_training():
    model = MiT(MiTConfig(name="dp", embed_dims=(32, 64, 128, 160), num_heads=(1, 2, 4, 5),
                          decoder_dims=(128, 64, 32), decoder_heads=(4, 2, 1), stem_channels=16, drop_path_rate=0.5))
    x = torch.randn(4, 1, 16, 64, 64)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(x), model(x))


def test_classification_head_on_the_class_token():
    model = MiTClassifier(MiT("compact", spatial_dims=(3,)), num_classes=2).eval()
    with torch.inference_mode():
        assert model(torch.randn(3, 1, 16, 64, 64)).shape == (3, 2)


def bf16_forward(net, x):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return net(x).float()


@pytest.mark.parametrize("spatial_dims, size", [(3, (16, 64, 64)), (2, (64, 64))])
def test_weights_stored_in_bf16_give_the_same_output_as_autocast(spatial_dims, size):
    import copy

    from unimiss.models.layers import cast_for_inference

    net = MiTSegmentation("compact", 3, spatial_dims).eval()
    x = torch.randn(1, 1 if spatial_dims == 3 else 3, *size)
    cast = cast_for_inference(copy.deepcopy(net), torch.bfloat16)
    assert cast.decoder.stages[0].blocks[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert cast.decoder.stages[0].blocks[0].norm1.weight.dtype == torch.float32  # norms stay fp32
    assert torch.equal(bf16_forward(cast, x), bf16_forward(net, x))


def test_few_channel_stem_in_fp32_where_the_cpu_policy_says_so(monkeypatch):
    import copy

    from unimiss import cpu
    from unimiss.models.layers import cast_for_inference

    net = MiTSegmentation("compact", 3, 3).eval()
    x = torch.randn(1, 1, 16, 64, 64)
    stem = net.encoder.stem.branch(3)
    seen = []
    stem.norm.register_forward_hook(lambda m, inp, out: seen.append(inp[0].dtype))
    monkeypatch.setattr(cpu, "fp32_few_channel_convs", lambda: True)
    cast = cast_for_inference(copy.deepcopy(net), torch.bfloat16)
    assert cast.encoder.stem.branch(3).conv.weight.dtype == torch.float32
    assert cast.encoder.stages[0].embed.branch(3).conv.weight.dtype == torch.bfloat16
    out = bf16_forward(net, x)
    assert seen == [torch.float32]
    with torch.inference_mode():
        reference = net(x)
    assert (out.argmax(1) == reference.argmax(1)).float().mean() > 0.95
    monkeypatch.setattr(cpu, "fp32_few_channel_convs", lambda: False)
    bf16_forward(net, x)
    assert seen[-1] == torch.bfloat16
