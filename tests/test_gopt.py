"""GoPT against the spec: each equation against a naive loop, the frozen-backbone identity,
determinism, checkpoints, and clear errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from models import CheckpointError, GoPT, GoPTConfig, gopt_vit_b, load_gopt, save_gopt
from models.prompter import ACP, CUP, straight_through_assign
from models.vit import resize_pos_embed


def tiny_config(**kw):
    base = dict(embed_dim=64, depth=2, num_heads=2, num_classes=5, aux_channels=1, img_size=(32, 48),
                prompt_dim=16)
    base.update(kw)
    return GoPTConfig(**base)


def randomize(module, seed=0):
    """Random values for every parameter, the zero-initialised up-projections included."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    if hasattr(module, "backbone"):
        module.backbone.refresh_pos_embed()
    return module


def inputs(cfg, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    H, W = cfg.img_size
    return torch.randn(batch, 3, H, W, generator=g), torch.randn(batch, cfg.aux_channels, H, W, generator=g)


def lin(layer, x):
    return layer.weight.double() @ x + layer.bias.double()


# ---- naive loops, float64, written straight from the equations -------------------------------

def naive_cup(cup, a, c):
    """eq. 4-6 then 8-10 for one sample: a [S, d], c [C, d] -> (a', P)."""
    a, c = a.double(), c.double()
    Z = torch.cat([a, c])
    d = Z.shape[1]
    Zp = torch.zeros_like(Z)
    for i in range(len(Z)):
        w = torch.softmax(torch.stack([Z[i] @ Z[j] / math.sqrt(d) for j in range(len(Z))]), 0)
        Zp[i] = sum(w[j] * Z[j] for j in range(len(Z)))
    a2, c2 = Zp[: len(a)], Zp[len(a):]
    g = []
    for i in range(len(a2)):
        scores = [float((lin(cup.q, a2[i]) @ lin(cup.k, c2[j])).detach()) for j in range(len(c2))]
        g.append(scores.index(max(scores)))  # first index on ties
    P = torch.zeros_like(c2)
    for j in range(len(c2)):
        members = [i for i in range(len(a2)) if g[i] == j]
        # projected first, then averaged: the equation as written
        mean_v = sum(lin(cup.v, a2[i]) for i in members) / len(members) if members else torch.zeros(d).double()
        P[j] = c2[j] + lin(cup.o, mean_v)
    return a2, P, g


def naive_acp(acp, f, P):
    """eq. 11-14 and eq. 3 for one sample: f [S, D], P [C, d] -> f * (1 + up(p))."""
    f, P = f.double(), P.double()
    d = P.shape[1]
    out = torch.zeros_like(f)
    for i in range(len(f)):
        q = lin(acp.down, f[i])
        w = torch.softmax(torch.stack([q @ P[j] / math.sqrt(d) for j in range(len(P))]), 0)
        r = sum(w[j] * P[j] for j in range(len(P)))
        scores = [float((lin(acp.q, r) @ lin(acp.k, P[j])).detach()) for j in range(len(P))]
        h = scores.index(max(scores))
        p = r + lin(acp.o, lin(acp.v, P[h]))
        out[i] = f[i] * (1 + lin(acp.up, p))
    return out


def test_cup_matches_naive_loops():
    torch.manual_seed(0)
    cup = randomize(CUP(16)).eval()
    a, c = torch.randn(2, 23, 16), torch.randn(2, 5, 16)
    a_out, P = cup(a, c, "torch")
    for b in range(2):
        a_ref, P_ref, _ = naive_cup(cup, a[b], c[b])
        torch.testing.assert_close(a_out[b].double(), a_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(P[b].double(), P_ref, atol=1e-5, rtol=1e-5)


def test_cup_empty_group_gets_only_o_bias():
    torch.manual_seed(1)
    cup = randomize(CUP(8)).eval()
    a, c = torch.randn(1, 10, 8), torch.randn(1, 4, 8)
    c[0, 3] = c[0, 2]  # group 3 duplicates group 2: every tie goes to 2, so 3 stays empty
    a_out, P = cup(a, c, "torch")
    _, P_ref, g = naive_cup(cup, a[0], c[0])
    assert 3 not in g
    z = torch.cat([a, c], 1)[:, None]
    c_att = F.scaled_dot_product_attention(z, z, z)[0, 0, 10:]
    torch.testing.assert_close(P[0, 3], c_att[3] + cup.o.bias, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(P[0].double(), P_ref, atol=1e-5, rtol=1e-5)


def test_acp_matches_naive_loops():
    torch.manual_seed(2)
    acp = randomize(ACP(48, 16)).eval()
    f, P = torch.randn(2, 19, 48), torch.randn(2, 6, 16)
    out = acp(f, P, "torch")
    for b in range(2):
        torch.testing.assert_close(out[b].double(), naive_acp(acp, f[b], P[b]), atol=1e-5, rtol=1e-5)


def test_prompter_layer_inherits_a_prime_and_P():
    """eq. 15: the next prompter receives c <- P and a <- a'."""
    torch.manual_seed(3)
    model = randomize(GoPT(tiny_config())).eval()
    layer = model.prompter.layers[0]
    f, a, c = torch.randn(1, 6, 64), torch.randn(1, 6, 16), torch.randn(1, 5, 16)
    f2, a2, P = layer(f, a, c)
    a_ref, P_ref, _ = naive_cup(layer.cup, a[0], c[0])
    torch.testing.assert_close(a2[0].double(), a_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(P[0].double(), P_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f2[0].double(), naive_acp(layer.acp, f[0], P_ref.float()), atol=1e-5, rtol=1e-5)


def plain_foundation_forward(model, rgb):
    """The frozen ViT and head alone, no prompter."""
    f = model.backbone.patch_embed(rgb) + resize_pos_embed(model.backbone.pos_embed, model.backbone.grid)
    for block in model.backbone.blocks:
        f = block(f)
    return model.head(model.backbone.norm(f), model.backbone.grid, rgb.shape[2:])


def test_zero_initialised_prompter_is_the_foundation_model():
    torch.manual_seed(4)
    model = GoPT(tiny_config()).eval()  # fresh init: acp.up is zero
    with torch.no_grad():
        model.backbone.pos_embed.normal_(0, 0.5)
        model.backbone.refresh_pos_embed()
    rgb, aux = inputs(model.config)
    with torch.no_grad():
        prompted = model(rgb, aux)
        aux2 = torch.randn_like(aux) * 10  # a different auxiliary image changes nothing
        assert torch.equal(model(rgb, aux2), prompted)
        torch.testing.assert_close(prompted, plain_foundation_forward(model, rgb), atol=1e-6, rtol=1e-6)


def test_prompter_changes_output_once_trained():
    model = randomize(GoPT(tiny_config())).eval()
    rgb, aux = inputs(model.config)
    with torch.no_grad():
        assert not torch.allclose(model(rgb, aux), model(rgb, aux + 1.0))


def test_inference_is_deterministic_and_batch_independent():
    model = randomize(GoPT(tiny_config())).eval()
    rgb, aux = inputs(model.config, batch=3)
    with torch.no_grad():
        a, b = model(rgb, aux), model(rgb, aux)
        single = model(rgb[1:2], aux[1:2])
    assert torch.equal(a, b)
    torch.testing.assert_close(single[0], a[1], atol=1e-5, rtol=1e-5)
    assert torch.equal(model.predict(rgb, aux), a.argmax(1))


def test_label_map_ties_go_to_lowest_index():
    model = randomize(GoPT(tiny_config(num_classes=3))).eval()
    with torch.no_grad():
        model.head.classifier.weight[2] = model.head.classifier.weight[1]
        model.head.classifier.bias[2] = model.head.classifier.bias[1]
        model.head.classifier.weight[0] = 0
        model.head.classifier.bias[0] = -1e4
    labels = model.predict(*inputs(model.config))
    assert (labels == 1).all()


# ---- training mode ------------------------------------------------------------------------------

def test_straight_through_is_one_hot_with_soft_gradient():
    torch.manual_seed(5)
    logits = torch.randn(4, 7, 6, requires_grad=True)
    noise = -torch.empty(4, 7, 6).exponential_().log()
    weights = torch.randn(4, 7, 6)
    assign = straight_through_assign(logits, noise)
    assert set(assign.detach().unique().tolist()) == {0.0, 1.0}
    assert torch.equal(assign.detach().sum(-1), torch.ones(4, 7))
    assert torch.equal(assign.detach().argmax(-1), (logits + noise).argmax(-1))
    (assign * weights).sum().backward()
    grad_st = logits.grad.clone()
    logits.grad = None
    (torch.softmax(logits + noise, -1) * weights).sum().backward()
    torch.testing.assert_close(grad_st, logits.grad)


def test_training_mode_trains_prompter_and_head_only():
    torch.manual_seed(6)
    model = randomize(GoPT(tiny_config())).train()
    model.backbone.requires_grad_(False)
    rgb, aux = inputs(model.config)
    model(rgb, aux).square().mean().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    prompter_grads = [p.grad for p in model.prompter.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in prompter_grads)
    assert model.prompter.layers[0].cup.q.weight.grad.abs().sum() > 0  # through the soft assignment
    assert model.head.classifier.weight.grad is not None


def test_training_mode_is_stochastic_and_eval_is_not():
    model = randomize(GoPT(tiny_config())).train()
    rgb, aux = inputs(model.config)
    torch.manual_seed(0)
    a = model(rgb, aux)
    b = model(rgb, aux)
    assert not torch.equal(a, b)  # Gumbel noise (and BN batch statistics)


# ---- checkpoints --------------------------------------------------------------------------------

SPEC_KEYS_PER_LAYER = [f"{m}.{p}.{t}" for m, ps in (("cup", "qkvo"), ("acp", ["down", *"qkvo", "up"]))
                       for p in ps for t in ("weight", "bias")]


def test_state_dict_keys_are_the_spec_layout():
    cfg = tiny_config()
    keys = set(GoPT(cfg).state_dict())
    expected = {"backbone.cls_token", "backbone.pos_embed", "backbone.patch_embed.proj.weight",
                "backbone.patch_embed.proj.bias", "backbone.norm.weight", "backbone.norm.bias",
                "prompter.aux_embed.weight", "prompter.aux_embed.bias", "prompter.class_tokens",
                "head.proj.weight", "head.bn.weight", "head.bn.bias", "head.bn.running_mean",
                "head.bn.running_var", "head.bn.num_batches_tracked", "head.classifier.weight",
                "head.classifier.bias"}
    for i in range(cfg.depth):
        expected |= {f"backbone.blocks.{i}.{n}.{t}" for n in ("norm1", "attn.qkv", "attn.proj", "norm2",
                                                              "mlp.fc1", "mlp.fc2") for t in ("weight", "bias")}
    for l in range(len(cfg.prompt_layers)):
        expected |= {f"prompter.layers.{l}.{k}" for k in SPEC_KEYS_PER_LAYER}
    assert keys == expected
    sd = GoPT(cfg).state_dict()
    assert sd["backbone.pos_embed"].shape == (1, 1 + 14 * 14, 64)
    assert sd["prompter.layers.0.acp.up.weight"].shape == (64, 16)
    assert sd["head.proj.weight"].shape == (256, 64, 1, 1)


def test_checkpoint_round_trip(tmp_path):
    model = randomize(GoPT(tiny_config(class_names=list("abcde"), modality="depth")))
    path = tmp_path / "m.pt"
    save_gopt(model, path)
    loaded = load_gopt(path)
    assert loaded.config == model.config
    rgb, aux = inputs(model.config)
    with torch.no_grad():
        assert torch.equal(loaded(rgb, aux), model.eval()(rgb, aux))


def test_prompts_only_file_with_mae_backbone_and_pos_embed_resize(tmp_path):
    model = randomize(GoPT(tiny_config(img_size=(48, 64))))
    grid16 = torch.randn(1, 1 + 16 * 16, 64)  # an MAE checkpoint pre-trained on a 16x16 grid
    mae = {k.removeprefix("backbone."): v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    mae["pos_embed"] = grid16
    mae.update({"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, 64),
                "decoder_blocks.0.norm1.weight": torch.zeros(32), "decoder_pred.bias": torch.zeros(768)})
    torch.save({"model": mae}, tmp_path / "mae.pth")
    save_gopt(model, tmp_path / "prompts.pt", prompts_only=True)
    assert not any(k.startswith("backbone.") for k in torch.load(tmp_path / "prompts.pt")["state_dict"])

    loaded = load_gopt(tmp_path / "prompts.pt", backbone=tmp_path / "mae.pth")
    assert loaded.backbone.pos_embed.shape == (1, 257, 64)
    expected = F.interpolate(grid16[:, 1:].reshape(1, 16, 16, 64).permute(0, 3, 1, 2), size=(3, 4),
                             mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 12, 64)
    torch.testing.assert_close(loaded.backbone.pos_embed_grid, expected)
    with pytest.raises(CheckpointError, match="prompts-only"):
        load_gopt(tmp_path / "prompts.pt")


def test_pos_embed_is_resized_once_not_per_forward(monkeypatch):
    import models.vit as vit

    model = randomize(GoPT(tiny_config()))
    calls = []
    monkeypatch.setattr(vit, "resize_pos_embed", lambda *a: calls.append(1) or torch.zeros(1))
    with torch.no_grad():
        model.eval()(*inputs(model.config))
    assert calls == []


def test_unknown_missing_and_misshaped_keys_are_listed(tmp_path):
    model = GoPT(tiny_config())
    sd = model.state_dict()
    sd["prompter.layers.0.extra.weight"] = torch.zeros(1)
    del sd["head.bn.running_var"]
    sd["prompter.class_tokens"] = torch.zeros(7, 16)
    torch.save({"format": "gopt/1", "config": model.config.to_dict(), "state_dict": sd}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as e:
        load_gopt(tmp_path / "bad.pt")
    msg = str(e.value)
    assert "prompter.layers.0.extra.weight" in msg and "head.bn.running_var" in msg
    assert "prompter.class_tokens [7, 16] (expected [5, 16])" in msg


def test_bad_checkpoint_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_gopt(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a gopt/1"):
        load_gopt(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        load_gopt(tmp_path / "missing.pt")
    cfg = tiny_config().to_dict()
    del cfg["num_classes"]
    torch.save({"format": "gopt/1", "config": cfg, "state_dict": {}}, tmp_path / "cfg.pt")
    with pytest.raises(ValueError, match=r"missing keys \['num_classes'\]"):
        load_gopt(tmp_path / "cfg.pt")


# ---- bad configs and bad inputs -----------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    (dict(img_size=(30, 48)), "multiples of patch_size 16"),
    (dict(embed_dim=65), "not divisible by num_heads"),
    (dict(prompt_layers=[0, 2]), r"prompt_layers must be sorted, unique block indices in \[0, 2\)"),
    (dict(prompt_layers=[1, 0]), "prompt_layers must be sorted"),
    (dict(class_names=["a"]), "class_names has 1 names for 5 classes"),
    (dict(aux_mean=[0.0, 0.0]), "aux_mean needs 1 values, got 2"),
    (dict(modality="lidar"), "modality must be one of"),
    (dict(rgb_std=[1.0, 0.0, 1.0]), "must be positive"),
    (dict(num_classes=0), "num_classes must be >= 1"),
])
def test_bad_configs(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**kw)


def test_bad_inputs_raise_clear_errors():
    model = GoPT(tiny_config()).eval()
    rgb, aux = inputs(model.config)
    cases = [
        ((rgb, torch.randn(2, 3, 32, 48)), r"aux must be \[B, 1, H, W\] \(thermal\), got shape \[2, 3, 32, 48\]"),
        ((rgb[:, :1], aux), r"rgb must be \[B, 3, H, W\]"),
        ((rgb, aux[:, :, :16]), "rgb and aux must have the same batch and size"),
        ((rgb, aux[:1]), "rgb and aux must have the same batch and size"),
        ((rgb[:, :, :30], aux[:, :, :30]), "input size 30x48 is not a multiple of the patch size 16"),
        ((rgb[:, :, :16], aux[:, :, :16]), "model is built for 32x48 inputs, got 16x48"),
        ((rgb.to(torch.uint8), aux), "normalised floating-point tensor"),
        ((rgb[0], aux[0]), r"rgb must be \[B, 3, H, W\]"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            model(*args)


def test_set_img_size_rebuilds_grid_once():
    model = randomize(GoPT(tiny_config()))
    model.set_img_size((64, 64))
    assert model.backbone.pos_embed_grid.shape == (1, 16, 64)
    rgb, aux = torch.randn(1, 3, 64, 64), torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert model.eval()(rgb, aux).shape == (1, 5, 64, 64)
    with pytest.raises(ValueError, match="multiples"):
        model.set_img_size((60, 64))


def test_kernel_backend_is_validated():
    with pytest.raises(ValueError, match="kernel_backend must be one of"):
        GoPT(tiny_config(), kernel_backend="cuda")


# ---- real ViT-B size ----------------------------------------------------------------------------

def test_vit_b_trainable_parameters_near_paper():
    model = GoPT(gopt_vit_b(num_classes=40, aux_channels=1))
    n = model.trainable_parameters()
    print(f"\nGoPT ViT-B, K=40, d=32, 12 prompters, thermal: {n:,} trainable parameters (paper: 0.97M)")
    assert n == 917_704  # the spec's widths, counted by hand: 8,224 + 1,280 + 12 x 58,400 + 207,400
    assert abs(n - 0.97e6) / 0.97e6 < 0.10
    assert sum(p.numel() for p in model.backbone.parameters()) > 85e6  # frozen ViT-B


@pytest.mark.slow
def test_vit_b_forward_480x640():
    import time

    torch.manual_seed(0)
    model = randomize(GoPT(gopt_vit_b(num_classes=9)), seed=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.1)
        model.backbone.refresh_pos_embed()
    rgb, aux = inputs(model.config, batch=1)
    with torch.inference_mode():
        t0 = time.perf_counter()
        logits = model(rgb, aux)
        dt = time.perf_counter() - t0
    print(f"\nGoPT ViT-B forward at 480x640, batch 1, CPU: {dt * 1e3:.0f} ms")
    assert logits.shape == (1, 9, 480, 640)
    assert torch.isfinite(logits).all()


def test_pickled_objects_need_trust(tmp_path):
    import argparse

    model = randomize(GoPT(tiny_config()))
    sd = {k: v for k, v in model.state_dict().items()}
    torch.save({"format": "gopt/1", "config": model.config.to_dict(), "state_dict": sd,
                "args": argparse.Namespace(lr=1)}, tmp_path / "ns.pt")
    with pytest.raises(CheckpointError, match=r"pickled Python object \(argparse.Namespace\)"):
        load_gopt(tmp_path / "ns.pt")
    assert load_gopt(tmp_path / "ns.pt", trust_pickle=True).config == model.config
