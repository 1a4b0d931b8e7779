"""Network tests: backbone features, controller and FiLM heads, baseline, deep supervision."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from textnnunet.errors import UserError
from textnnunet.network import (
    TextPromptedUNet,
    UNetFeatureExtractor,
    build_softmax_unet,
    count_parameters,
    deep_supervision_scales,
    deep_supervision_weights,
)
from textnnunet.network.backbone import build_library_unet
from textnnunet.network.controller import HEAD_NEGATIVE_SLOPE, dynamic_param_count

torch.set_num_threads(1)

EMBED = 12
ARCH_3D = {
    "conv_dims": 3,
    "n_stages": 3,
    "features_per_stage": [4, 8, 16],
    "kernel_sizes": [[3, 3, 3]] * 3,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    "n_conv_per_stage": [1, 1, 1],
    "n_conv_per_stage_decoder": [1, 1],
}
ARCH_2D = {
    "conv_dims": 2,
    "n_stages": 4,
    "features_per_stage": [4, 8, 16, 16],
    "kernel_sizes": [[3, 3]] * 4,
    "strides": [[1, 1], [2, 2], [2, 2], [2, 1]],
    "n_conv_per_stage": [1, 1, 1, 1],
    "n_conv_per_stage_decoder": [1, 1, 1],
}
PATCH_3D = (16, 16, 16)
PATCH_2D = (16, 8)


def make_net(conditioning: str = "controller", arch: dict = ARCH_3D, **kwargs) -> TextPromptedUNet:
    torch.manual_seed(0)
    return TextPromptedUNet(arch, in_channels=2, embed_dim=EMBED, conditioning=conditioning, **kwargs)


def inputs(b: int = 2, k: int = 3, patch: tuple = PATCH_3D, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(b, 2, *patch, generator=gen, dtype=dtype)
    text = torch.randn(k, EMBED, generator=gen, dtype=dtype)
    return x, text


def expected_shapes(b: int, k: int, patch: tuple, strides: list) -> list[tuple]:
    shapes, size = [], list(patch)
    for stride in strides[:-1]:
        size = [s // t for s, t in zip(size, stride)]
        shapes.append((b, k, *size))
    return shapes


def test_feature_extractor_matches_library_decoder():
    # Our decoder features, fed to the library's own seg layers, must reproduce the library's outputs:
    # this pins the stage order (highest resolution first) and that nothing in the decoder was skipped.
    torch.manual_seed(0)
    lib = build_library_unet(ARCH_3D, 2, num_classes=3, deep_supervision=True)
    ext = UNetFeatureExtractor(ARCH_3D, 2)
    ext.encoder.load_state_dict(lib.encoder.state_dict())
    ext.stages.load_state_dict(lib.decoder.stages.state_dict())
    ext.transpconvs.load_state_dict(lib.decoder.transpconvs.state_dict())
    x, _ = inputs()
    expected = lib(x)
    feats = ext(x)
    assert len(feats.decoder) == 2 and feats.bottleneck.shape == (2, 16, 4, 4, 4)
    for s, seg in enumerate(reversed(lib.decoder.seg_layers)):
        assert torch.allclose(seg(feats.decoder[s]), expected[s], atol=1e-5)


@pytest.mark.parametrize("prompts_per_block", [1, 2, 4])  # 2: the last block is zero-padded
def test_controller_matches_explicit_per_pair_loop(prompts_per_block):
    net = make_net().double()
    net.heads.prompts_per_block = prompts_per_block
    x, text = inputs(b=2, k=3, dtype=torch.float64)
    outputs = net(x, text)
    feats = net.encode(x)
    heads = net.heads
    image = heads.image_features(feats.bottleneck)
    organ = heads.text_proj(text)
    params = heads.dynamic_params(feats.bottleneck, text)
    assert params.shape == (2, 3, dynamic_param_count()) and dynamic_param_count() == 153
    for s in range(net.n_scales):
        reduced = heads.reductions[s](feats.decoder[s])
        for b in range(2):
            for k in range(3):
                p = heads.controller(torch.cat((image[b], organ[k])))
                assert torch.allclose(p, params[b, k])
                # layout: weights 8x8, 8x8, 1x8, then biases 8, 8, 1
                w1, w2, w3 = p[:64].view(8, 8), p[64:128].view(8, 8), p[128:136].view(1, 8)
                b1, b2, b3 = p[136:144], p[144:152], p[152:153]
                h = F.leaky_relu(F.conv3d(reduced[b : b + 1], w1[..., None, None, None], b1), HEAD_NEGATIVE_SLOPE)
                h = F.leaky_relu(F.conv3d(h, w2[..., None, None, None], b2), HEAD_NEGATIVE_SLOPE)
                logit = F.conv3d(h, w3[..., None, None, None], b3)[0, 0]
                assert torch.allclose(outputs[s][b, k], logit, atol=1e-10)
    assert outputs[0].std() > 0


def test_dynamic_head_gradients_are_exact():
    # the heads use in-place ReLU between batched matmuls; gradcheck proves the backward pass is still right
    heads = make_net().heads.double()
    heads.prompts_per_block = 2
    gen = torch.Generator().manual_seed(2)
    head_inputs = torch.randn(2, 8, 2, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    params = torch.randn(2, 3, 153, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(heads.apply_heads, (head_inputs, params), fast_mode=True)


def test_film_matches_literal_modulation():
    net = make_net("film").double()
    x, text = inputs(b=2, k=3, dtype=torch.float64)
    outputs = net(x, text)
    feats = net.encode(x)
    mods = net.heads.modulation(text)
    for s in range(net.n_scales):
        for k in range(3):
            gamma, beta = mods[s][0][k], mods[s][1][k]
            modulated = feats.decoder[s] * (1 + gamma[None, :, None, None, None]) + beta[None, :, None, None, None]
            expected = net.heads.heads[s](modulated)[:, 0]
            assert torch.allclose(outputs[s][:, k], expected, atol=1e-10)
    assert outputs[0].std() > 0


@pytest.mark.parametrize("conditioning", ["controller", "film"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_any_number_of_prompts_gives_matching_shapes(conditioning, k):
    net = make_net(conditioning)
    x, text = inputs(b=2, k=k)
    outputs = net(x, text)
    assert isinstance(outputs, list)
    assert [tuple(o.shape) for o in outputs] == expected_shapes(2, k, PATCH_3D, ARCH_3D["strides"])


@pytest.mark.parametrize("conditioning", ["controller", "film"])
def test_class_output_independent_of_other_prompts(conditioning):
    net = make_net(conditioning).double()
    x, text = inputs(b=2, k=5, dtype=torch.float64)
    full = net(x, text)
    perm = torch.tensor([3, 0, 4, 2, 1])
    permuted = net(x, text[perm])
    subset = net(x, text[[2]])
    for s in range(net.n_scales):
        assert torch.allclose(permuted[s], full[s][:, perm], atol=1e-10)
        assert torch.allclose(subset[s][:, 0], full[s][:, 2], atol=1e-10)
    # and different prompts really give different maps
    assert not torch.allclose(full[0][:, 0], full[0][:, 1])


@pytest.mark.parametrize("conditioning", ["controller", "film"])
def test_deep_supervision_switch_and_encode_once(conditioning):
    net = make_net(conditioning)
    x, text = inputs(b=1, k=2)
    with torch.no_grad():
        with_ds = net(x, text)
        net.deep_supervision = False
        single = net(x, text)
        feats = net.encode(x)
        again = net.decode_heads(feats, text[[1]])
    assert torch.is_tensor(single) and single.shape == (1, 2, *PATCH_3D)
    assert torch.allclose(single, with_ds[0])
    assert torch.allclose(again[:, 0], single[:, 1], atol=1e-6)


@pytest.mark.parametrize("conditioning", ["controller", "film"])
def test_2d_variant(conditioning):
    net = make_net(conditioning, arch=ARCH_2D)
    x, text = inputs(b=2, k=3, patch=PATCH_2D)
    outputs = net(x, text)
    assert net.n_scales == 3
    assert [tuple(o.shape) for o in outputs] == expected_shapes(2, 3, PATCH_2D, ARCH_2D["strides"])


def test_gradients_reach_text_projection_controller_and_backbone():
    net = make_net()
    x, text = inputs(b=2, k=3)
    sum(o.square().mean() for o in net(x, text)).backward()
    for name, param in [
        ("text_proj", net.heads.text_proj[0].weight),
        ("image_proj", net.heads.image_proj.weight),
        ("controller", net.heads.controller.weight),
        ("reduction low-res", net.heads.reductions[1].weight),
        ("encoder stem", next(net.backbone.encoder.parameters())),
    ]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_film_gradients_reach_text_mlp():
    net = make_net("film")
    x, text = inputs(b=1, k=2)
    sum(o.square().mean() for o in net(x, text)).backward()
    assert net.heads.text_mlp[0].weight.grad.abs().sum() > 0
    assert next(net.backbone.encoder.parameters()).grad.abs().sum() > 0


def test_residual_encoder_backbone_runs():
    net = make_net(backbone="ResidualEncoderUNet")
    x, text = inputs(b=1, k=2)
    outputs = net(x, text)
    assert [tuple(o.shape) for o in outputs] == expected_shapes(1, 2, PATCH_3D, ARCH_3D["strides"])
    base = build_softmax_unet(ARCH_3D, 2, 4, deep_supervision=False, backbone="ResidualEncoderUNet")
    assert base(x).shape == (1, 4, *PATCH_3D)


def test_softmax_baseline_shapes():
    torch.manual_seed(0)
    net = build_softmax_unet(ARCH_3D, 2, num_classes=3)
    x, _ = inputs(b=2)
    outputs = net(x)
    assert [tuple(o.shape) for o in outputs] == expected_shapes(2, 3, PATCH_3D, ARCH_3D["strides"])
    net.decoder.deep_supervision = False
    assert net(x).shape == (2, 3, *PATCH_3D)
    with pytest.raises(ValueError):
        build_softmax_unet(ARCH_3D, 2, num_classes=1)


def test_nnunet_initialisation():
    net = make_net()
    conv = net.backbone.encoder.stages[2][0].convs[0].conv  # 8 -> 16 channels, 3x3x3
    fan_in = conv.weight[0].numel()
    expected_std = np.sqrt(2.0 / (1 + 1e-2**2) / fan_in)
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.1
    assert torch.count_nonzero(conv.bias) == 0
    assert torch.count_nonzero(net.heads.reductions[0].bias) == 0


def test_no_library_seg_layers_and_params_identical_across_modes():
    net = make_net()
    assert not any("seg_layers" in key for key in net.state_dict())
    other = make_net(deep_supervision=False)
    assert net.state_dict().keys() == other.state_dict().keys()
    rebuilt = TextPromptedUNet(**net.init_kwargs)
    rebuilt.load_state_dict(copy.deepcopy(net.state_dict()))


def test_count_parameters():
    net = make_net()
    total = sum(p.numel() for p in net.parameters())
    assert count_parameters(net) == total
    for p in net.backbone.parameters():
        p.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == count_parameters(net.heads)
    assert count_parameters(net.heads.controller) == 2 * 256 * 153 + 153


def test_deep_supervision_weights_and_scales():
    assert np.allclose(deep_supervision_weights(3), [2 / 3, 1 / 3, 0])
    assert np.allclose(deep_supervision_weights(5), np.array([1, 0.5, 0.25, 0.125, 0]) / 1.875)
    assert np.allclose(deep_supervision_weights(1), [1.0])
    assert np.allclose(deep_supervision_weights(3, lowest=1e-6), np.array([1, 0.5, 1e-6]) / 1.500001)
    assert deep_supervision_scales(ARCH_2D["strides"]) == [[1.0, 1.0], [0.5, 0.5], [0.25, 0.25]]


def test_bad_inputs_are_reported():
    broken = dict(ARCH_3D, strides=ARCH_3D["strides"][:2])
    with pytest.raises(UserError, match="strides"):
        TextPromptedUNet(broken, 2, EMBED)
    with pytest.raises(UserError, match="conv_dims"):
        TextPromptedUNet(dict(ARCH_3D, conv_dims=4), 2, EMBED)
    with pytest.raises(UserError, match="conditioning"):
        TextPromptedUNet(ARCH_3D, 2, EMBED, conditioning="attention")
    with pytest.raises(UserError, match="backbone"):
        TextPromptedUNet(ARCH_3D, 2, EMBED, backbone="SwinUNETR")
    net = make_net()
    x, text = inputs(b=1, k=2)
    with pytest.raises(ValueError, match="text_embeddings"):
        net(x, text[:, :5])
    with pytest.raises(ValueError, match="text_embeddings"):
        net(x, text[:0])
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 2, 14, 16, 16), text)


def test_text_is_standardised_on_the_vocabulary_and_saved_with_the_weights():
    from textnnunet.network.universal import TEXT_RMS

    torch.manual_seed(0)
    net = TextPromptedUNet(ARCH_3D, 2, EMBED, deep_supervision=False).eval()
    x, text = inputs(b=1, k=3)
    vocabulary = 0.1 * torch.randn(5, EMBED) + 3.0
    net.set_text_normalization(vocabulary)
    standardised = (vocabulary - vocabulary.mean(0)) * net.text_scale
    assert standardised.pow(2).mean().sqrt() == pytest.approx(TEXT_RMS, rel=1e-5)
    out = net(x, text)
    plain = TextPromptedUNet(ARCH_3D, 2, EMBED, deep_supervision=False).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("text_")}, strict=False)
    assert torch.allclose(out, plain(x, (text - vocabulary.mean(0)) * net.text_scale), atol=1e-5)
    restored = TextPromptedUNet(ARCH_3D, 2, EMBED, deep_supervision=False).eval()
    restored.load_state_dict(net.state_dict())
    assert torch.allclose(restored(x, text), out)
    # a checkpoint from before prompts were scaled (no text_scale) loads strictly, with scale 1
    old = {k: v for k, v in net.state_dict().items() if k != "text_scale"}
    restored.load_state_dict(old)
    assert float(restored.text_scale) == 1.0


@pytest.mark.parametrize("conditioning", ["controller", "film"])
def test_untrained_heads_start_at_the_foreground_prior(conditioning):
    from textnnunet.network.universal import FOREGROUND_PRIOR

    torch.manual_seed(0)
    net = TextPromptedUNet(ARCH_3D, 1, EMBED, conditioning, deep_supervision=False)
    with torch.no_grad():
        probs = torch.sigmoid(net(torch.zeros(1, 1, 16, 16, 16), torch.zeros(3, EMBED)))
    assert torch.allclose(probs, torch.full_like(probs, FOREGROUND_PRIOR), atol=0.02)


@pytest.mark.parametrize("conditioning", ["controller", "film"])
def test_computing_only_annotated_pairs_gives_the_same_loss_and_gradients(conditioning):
    from textnnunet.training.loss import DeepSupervisionLoss, masked_bce_dice_loss

    torch.manual_seed(0)
    net = TextPromptedUNet(ARCH_3D, 2, EMBED, conditioning)
    x, text = inputs(b=3, k=4)
    pairs = torch.tensor([[True, False, True, False], [False, False, False, True], [False, False, False, False]])
    target = (torch.rand(3, 4, *x.shape[2:]) > 0.6).float()
    loss_fn = DeepSupervisionLoss(masked_bce_dice_loss, [1.0, 0.5])

    def loss_and_grads(selected):
        net.zero_grad()
        outs = net(x, text, selected)
        loss = loss_fn(outs, target, pairs)
        loss.backward()
        return outs, loss, {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    full_outs, full_loss, full_grads = loss_and_grads(None)
    outs, loss, grads = loss_and_grads(pairs)
    assert torch.allclose(loss, full_loss, atol=1e-6)
    assert full_grads.keys() == grads.keys()
    for name in grads:
        assert torch.allclose(grads[name], full_grads[name], atol=1e-6, rtol=1e-4), name
    for full, part in zip(full_outs, outs):
        assert torch.allclose(part[pairs], full[pairs], atol=1e-6)
        if conditioning == "controller":  # the pairs left out are not computed at all
            assert not part[~pairs].any()
    with pytest.raises(ValueError, match="pairs"):
        net(x, text, pairs[:, :2])


def test_per_item_prompts_equal_each_image_with_its_own_table():
    """(B, K, E) text (prompts naming each image's modality): item b's logits are those of image b alone with
    table b, with and without a pairs mask."""
    net = make_net("controller").double()
    x, text = inputs(b=2, k=3, dtype=torch.float64)
    other = text.flip(0) * 0.5 + 0.1
    per_item = torch.stack([text, other])
    pairs = torch.tensor([[True, False, True], [False, True, True]])
    with torch.no_grad():
        both = net(x, per_item)
        masked = net(x, per_item, pairs)
        alone = [net(x[[0]], text), net(x[[1]], other)]
    for s in range(net.n_scales):
        assert torch.allclose(both[s][0], alone[0][s][0], atol=1e-10)
        assert torch.allclose(both[s][1], alone[1][s][0], atol=1e-10)
        assert torch.allclose(masked[s][pairs], both[s][pairs], atol=1e-10)
    assert not torch.allclose(both[0][1], net(x, text)[0][1])  # the second table really changed image 1's maps


def test_per_item_prompts_are_refused_where_a_head_shares_one_table():
    x, text = inputs(b=2, k=3)
    with pytest.raises(ValueError, match="FiLMHeads conditioning takes one prompt table"):
        make_net("film")(x, torch.stack([text, text]))
    with pytest.raises(ValueError, match=r"expected \(B, K >= 1, E\)"):
        make_net("controller")(x, torch.stack([text, text, text]))
