"""SimCMF: official checkpoint layout, variant detection, LoRA folding, the padding point and
mask token 0 against naive computations, windowed / relative-position attention, clear errors."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from models.checkpoint import CheckpointError
from models.demo_simcmf import BASE_NAME, DELTA_NAME, main as demo_main
from models.projector import PreConvProjector, SimCMFProjector
from models.sam_decoder import TwoWayAttentionBlock
from models.sam_encoder import Attention, Block, PatchEmbed, window_partition, window_unpartition
from models.simcmf import MODALITIES, SAM_VIT_B, SimCMF, SimCMFConfig
from models.simcmf_checkpoint import (detect_variant, expected_sam_shapes, load_simcmf, sam_state_dict,
                                      save_sam_base, save_simcmf, trained_parameter_names)

# A small SAM: 128 x 128 input, 8 x 8 tokens, 3 x 3 windows (the grid is padded to 9), last block global.
TINY = dict(SAM_VIT_B, img_size=128, encoder_embed_dim=64, encoder_depth=3, encoder_num_heads=2,
            encoder_global_attn_indexes=[1, 2], window_size=3, prompt_embed_dim=32, decoder_num_heads=2,
            decoder_mlp_dim=64, mask_in_chans=8, iou_head_hidden_dim=32)


def tiny_config(in_chans=4, **kw):
    return SimCMFConfig(in_chans=in_chans, lora_rank=4, adapter_dim=8, **{**TINY, **kw})


GAIN = 1.0


def randomize(model, seed=0):
    """Random values for every parameter (zero-initialised tables and LoRA factors included) and
    for the prompt encoder's Gaussian matrix, scaled so activations stay O(1): norms near 1,
    weights ~ 1 / sqrt(fan_in), small biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("positional_encoding_gaussian_matrix"):
                b.copy_(torch.randn(b.shape, generator=g))
        for module in model.modules():
            norm = "Norm" in type(module).__name__
            for name, p in module.named_parameters(recurse=False):
                r = torch.randn(p.shape, generator=g)
                if norm:
                    p.copy_(1 + 0.3 * r if name == "weight" else 0.1 * r)
                elif isinstance(module, torch.nn.Embedding) or name == "pos_embed":
                    p.copy_(0.5 * r)
                elif p.ndim >= 2:
                    p.copy_(GAIN * r / math.sqrt(p[0].numel()))
                else:
                    p.copy_(0.1 * r)
    return model.eval()


def tiny_model(seed=0, **kw):
    return randomize(SimCMF(tiny_config(**kw)), seed)


def inputs(cfg, batch=2, points=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    S = cfg.img_size
    x = torch.randn(batch, cfg.in_chans, S, S, generator=g)
    coords = torch.randint(0, S, (batch, points, 2), generator=g).float()
    labels = torch.ones(batch, points, dtype=torch.int64)
    return x, coords, labels


def write_pair(model, tmp_path, **extra):
    delta, base = tmp_path / "checkpoint_best.pth", tmp_path / "sam_base.pth"
    save_simcmf(model, delta, epoch=3, best_iou=0.7, **extra)
    save_sam_base(model, base)
    return delta, base


# ---- architecture facts ---------------------------------------------------------------------

def test_sam_vit_b_base_layout():
    shapes = expected_sam_shapes()
    assert len(shapes) == 314
    assert shapes["image_encoder.blocks.0.attn.qkv.weight"] == (2304, 768)
    assert shapes["image_encoder.blocks.0.attn.rel_pos_h"] == (27, 64)  # windowed: 2 * 14 - 1
    assert shapes["image_encoder.blocks.2.attn.rel_pos_h"] == (127, 64)  # global: 2 * 64 - 1
    assert shapes["image_encoder.pos_embed"] == (1, 64, 64, 768)
    assert shapes["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] == (2, 128)
    assert shapes["mask_decoder.transformer.layers.1.cross_attn_image_to_token.q_proj.weight"] == (128, 256)
    assert shapes["mask_decoder.output_hypernetworks_mlps.3.layers.2.weight"] == (32, 256)


def test_vit_b_trained_tensors_match_the_official_delta():
    """RGB-T LoRA with the simcmf projector: 17 projector + 48 encoder + 28 decoder LoRA tensors."""
    with torch.device("meta"):
        model = SimCMF(SimCMFConfig(in_chans=4))
    names = trained_parameter_names(model)
    assert len(names) == 93
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["image_encoder.blocks.5.attn.lora_q_a.weight"] == (100, 768)
    assert shapes["mask_decoder.transformer.final_attn_token_to_image.lora_v_b.weight"] == (128, 100)
    assert shapes["image_encoder.projector.moe.1.weight"] == (1, 16, 1, 1)
    assert shapes["image_encoder.projector.fc.weight"] == (1, 4)


# ---- checkpoints ----------------------------------------------------------------------------

@pytest.mark.parametrize("proj_type,tuning,in_chans", [
    ("simcmf", "lora", 4), ("preconvk3n2d64", "adapter", 1), ("simcmf", "adapter", 9),
    ("preconvk3n2d64", "lora", 6)])
def test_official_layout_round_trip(tmp_path, proj_type, tuning, in_chans):
    model = tiny_model(proj_type=proj_type, tuning=tuning, in_chans=in_chans)
    delta, base = write_pair(model, tmp_path)
    saved = torch.load(delta, weights_only=True)
    assert set(saved) == {"epoch", "model", "state_dict", "best_iou"}
    assert saved["model"] == {"lora": "sam_lora", "adapter": "sam_mlp_adapter"}[tuning]
    marker = "lora" if tuning == "lora" else "Adapter"
    assert all(marker in k or k.startswith("image_encoder.projector.") for k in saved["state_dict"])
    assert any(k.startswith("image_encoder.projector.") for k in saved["state_dict"])
    assert set(torch.load(base, weights_only=True)) == set(expected_sam_shapes(TINY))

    loaded, description = load_simcmf(delta, base=base, arch=TINY)
    assert detect_variant(saved["state_dict"]) == {
        "proj_type": proj_type, "in_chans": in_chans, "tuning": tuning,
        **({"lora_rank": 4} if tuning == "lora" else {"adapter_dim": 8})}
    assert f"projector {proj_type}, C={in_chans}" in description
    assert ("lora r=4" if tuning == "lora" else "adapter d=8") in description
    assert "epoch 3" in description
    x, coords, labels = inputs(model.config)
    with torch.no_grad():
        want, got = model(x, coords, labels), loaded(x, coords, labels)
    assert got[0].shape == (2, 1, 32, 32) and got[1].shape == (2, 1)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_full_fine_tuning_and_complete_state_dicts(tmp_path):
    model = tiny_model(tuning="full", in_chans=3)
    delta, base = write_pair(model, tmp_path)
    sd = torch.load(delta, weights_only=True)["state_dict"]
    # every parameter, but the prompt encoder's Gaussian matrix is a buffer: it comes from SAM's base
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" not in sd
    with pytest.raises(CheckpointError, match="positional_encoding_gaussian_matrix.*as the base"):
        load_simcmf(delta, arch=TINY)
    x, coords, labels = inputs(model.config)
    want = model(x, coords, labels)[0]
    loaded, description = load_simcmf(delta, base=base, arch=TINY)
    assert "tuning full fine-tuning" in description
    assert torch.equal(loaded(x, coords, labels)[0], want)
    # a complete state dict (every tensor, LoRA included) needs no base
    lora = tiny_model(seed=3)
    x, coords, labels = inputs(lora.config)
    loaded, description = load_simcmf(lora.state_dict(), arch=TINY)
    assert "lora r=4" in description
    assert torch.equal(loaded(x, coords, labels)[0], lora(x, coords, labels)[0])


def test_delta_overrides_the_base(tmp_path):
    """Projector and LoRA tensors come from the checkpoint, everything else from the base."""
    model = tiny_model(seed=0)
    other = tiny_model(seed=1)
    delta, _ = write_pair(model, tmp_path)
    loaded, _ = load_simcmf(delta, base=sam_state_dict(other), arch=TINY)
    sd = loaded.state_dict()
    assert torch.equal(sd["image_encoder.blocks.0.attn.qkv.weight"],
                       other.state_dict()["image_encoder.blocks.0.attn.qkv.weight"])
    assert torch.equal(sd["image_encoder.blocks.0.attn.lora_q_a.weight"],
                       model.state_dict()["image_encoder.blocks.0.attn.lora_q_a.weight"])
    assert torch.equal(sd["image_encoder.projector.fc.weight"], model.state_dict()["image_encoder.projector.fc.weight"])


def test_modality_sets_constants_and_checks_channels(tmp_path):
    delta, base = write_pair(tiny_model(in_chans=4), tmp_path)
    model, description = load_simcmf(delta, base=base, modality="rgbt", arch=TINY)
    assert "C=4 (rgbt)" in description
    assert model.config.pixel_mean == list(MODALITIES["rgbt"].mean)
    assert model.config.pixel_mean[0] == pytest.approx(0.37960503)
    assert "0-1" in model.config.pixel_scale
    with pytest.raises(CheckpointError, match="C=4 channels, but modality 't' has 1"):
        load_simcmf(delta, base=base, modality="t", arch=TINY)


def test_checkpoint_errors(tmp_path):
    model = tiny_model()
    delta, base = write_pair(model, tmp_path)
    obj = torch.load(delta, weights_only=True)
    base_sd = torch.load(base, weights_only=True)

    with pytest.raises(CheckpointError, match="image_encoder.blocks.0.attn.lora_k_a.weight"):
        bad = {**obj, "state_dict": {**obj["state_dict"],
                                     "image_encoder.blocks.0.attn.lora_k_a.weight": torch.zeros(4, 64)}}
        load_simcmf(bad, base=base_sd, arch=TINY)
    with pytest.raises(CheckpointError, match="fc.weight \\[1, 3\\] \\(expected \\[1, 4\\]\\)"):  # inconsistent C
        bad = {**obj, "state_dict": {**obj["state_dict"], "image_encoder.projector.fc.weight": torch.zeros(1, 3)}}
        load_simcmf(bad, base=base_sd, arch=TINY)
    with pytest.raises(CheckpointError, match="pass SAM's sam_vit_b_01ec64.pth as the base"):
        load_simcmf(delta, arch=TINY)
    with pytest.raises(CheckpointError, match="not a SAM ViT-B state dict"):
        load_simcmf(delta, base=base)  # a tiny SAM is not ViT-B
    with pytest.raises(CheckpointError, match="looks like SAM ViT-L"):
        load_simcmf(delta, base={"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16)})
    with pytest.raises(CheckpointError, match="training checkpoint"):
        load_simcmf(delta, base=obj, arch=TINY)
    with pytest.raises(CheckpointError, match="no image_encoder.projector"):
        load_simcmf(base_sd, arch=TINY)
    with pytest.raises(CheckpointError, match="neither 'simcmf'.*nor 'preconvk3n2d64'"):
        other_proj = {"image_encoder.projector.patch_embedding.weight": torch.zeros(64, 4, 16, 16)}
        load_simcmf({**obj, "state_dict": other_proj}, base=base_sd, arch=TINY)
    with pytest.raises(CheckpointError, match="preconv variant other than preconvk3n2d64"):
        k5 = {"image_encoder.projector.zip_proj.0.weight": torch.zeros(64, 4, 5, 5),
              "image_encoder.projector.zip_proj.0.bias": torch.zeros(64),
              "image_encoder.projector.zip_proj.1.weight": torch.zeros(3, 64, 1, 1),
              "image_encoder.projector.zip_proj.1.bias": torch.zeros(3)}
        load_simcmf({**obj, "state_dict": k5}, base=base_sd, arch=TINY)
    with pytest.raises(CheckpointError, match="says model='sam_mlp_adapter'"):
        load_simcmf({**obj, "model": "sam_mlp_adapter"}, base=base_sd, arch=TINY)
    with pytest.raises(CheckpointError, match="no such file"):
        load_simcmf(tmp_path / "missing.pth", base=base_sd, arch=TINY)


# ---- LoRA folding ---------------------------------------------------------------------------

def test_fold_lora_is_exact_to_fp32_rounding():
    model = tiny_model(seed=5)
    x, coords, labels = inputs(model.config, points=2)
    with torch.no_grad():
        logits, iou = model(x, coords, labels)
        model.fold_lora()
        folded_logits, folded_iou = model(x, coords, labels)
    assert model.config.lora_folded and "(folded)" in model.config.summary()
    assert not any("lora" in name for name, _ in model.named_modules())
    assert not any("lora" in key for key in model.state_dict())
    assert float(logits.abs().max()) > 0.2
    assert float((folded_logits - logits).abs().max()) < 1e-5
    assert float((folded_iou - iou).abs().max()) < 1e-5


def test_lora_branches_change_the_output():
    """The folding test is meaningful: dropping the LoRA updates changes the logits a lot."""
    model = tiny_model(seed=5)
    x, coords, labels = inputs(model.config)
    with torch.no_grad():
        logits, _ = model(x, coords, labels)
        for name, p in model.named_parameters():
            if "lora_q_b" in name or "lora_v_b" in name:
                p.zero_()
        without, _ = model(x, coords, labels)
    assert float((without - logits).abs().max()) > 0.1


def test_folded_model_cannot_be_saved_as_a_lora_delta(tmp_path):
    model = tiny_model().fold_lora()
    with pytest.raises(CheckpointError, match="before fold_lora"):
        save_simcmf(model, tmp_path / "x.pth")


# ---- padding point and mask token 0, against naive computations ------------------------------

def naive_point_tokens(pe_module, coords, labels, S):
    """One sample: the clicks' tokens and the padding point's, written out point by point."""
    G = pe_module.pe_layer.positional_encoding_gaussian_matrix.double()
    tokens = []
    for (x, y), label in zip(coords.tolist(), labels.tolist()):
        u = torch.tensor([(x + 0.5) / S, (y + 0.5) / S], dtype=torch.float64)
        f = 2 * math.pi * ((2 * u - 1) @ G)
        pe = torch.cat([f.sin(), f.cos()])
        tokens.append(pe + pe_module.point_embeddings[int(label)].weight[0].double())
    tokens.append(pe_module.not_a_point_embed.weight[0].double())  # (0, 0) with label -1
    return torch.stack(tokens)


def test_prompt_tokens_append_the_padding_point():
    model = tiny_model(seed=2)
    S = model.config.img_size
    coords = torch.tensor([[[5.0, 100.0], [127.0, 0.0], [64.0, 64.0]]])
    labels = torch.tensor([[1, 0, 1]])
    got = model.prompt_encoder.embed_points(coords, labels)
    assert got.shape == (1, 4, 32)
    want = naive_point_tokens(model.prompt_encoder, coords[0], labels[0], S)
    torch.testing.assert_close(got[0].double(), want, atol=1e-5, rtol=1e-5)


def test_decode_reads_mask_token_0_with_the_padding_point():
    """decode == SAM's decoder run by hand: all four mask tokens, explicit (0, 0) / -1, then token 0."""
    model = tiny_model(seed=4)
    cfg = model.config
    x, coords, labels = inputs(cfg, batch=2, points=2, seed=7)
    labels[1, 1] = 0
    md, pe = model.mask_decoder, model.prompt_encoder
    with torch.no_grad():
        emb = model.encode(x)
        logits, iou = model.decode(emb, coords, labels)

        sparse = torch.stack([naive_point_tokens(pe, coords[b], labels[b], cfg.img_size) for b in range(2)]).float()
        tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight])[None].expand(2, -1, -1)
        src = emb + pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(2, -1, cfg.grid, cfg.grid)
        image_pe = pe.pe_layer.dense(cfg.grid).expand(2, -1, -1, -1)
        hs, keys = md.transformer(src, image_pe, torch.cat([tokens, sparse], dim=1))
        up = md.output_upscaling(keys.transpose(1, 2).reshape(2, -1, cfg.grid, cfg.grid))
        masks = torch.stack([torch.einsum("bc,bchw->bhw", md.output_hypernetworks_mlps[i](hs[:, 1 + i]), up)
                             for i in range(4)], dim=1)
        all_iou = md.iou_prediction_head(hs[:, 0])

        no_pad = md(emb, pe.dense_pe(), sparse[:, :-1], pe.no_mask_embed.weight.reshape(1, -1, 1, 1))[0]
    assert logits.shape == (2, 1, 32, 32) and iou.shape == (2, 1)
    torch.testing.assert_close(logits, masks[:, :1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, all_iou[:, :1], atol=1e-6, rtol=1e-6)
    assert float((masks[:, 1:2] - logits).abs().max()) > 1e-2  # token 1 differs: the choice matters
    assert float((no_pad - logits).abs().max()) > 1e-3  # so does the padding point


def test_dense_pe_matches_the_cell_centres():
    model = tiny_model(seed=6)
    g = model.config.grid
    dense = model.prompt_encoder.dense_pe()[0]  # [C, g, g]
    for (i, j) in [(0, 0), (3, 5), (g - 1, 2)]:
        pt = torch.tensor([[[j * 16.0 + 7.5, i * 16.0 + 7.5]]])  # pixel whose centre is cell (i, j)'s centre
        token = model.prompt_encoder.pe_layer.encode((pt + 0.5) / model.config.img_size)[0, 0]
        torch.testing.assert_close(dense[:, i, j], token, atol=1e-5, rtol=1e-5)


# ---- encoder attention ----------------------------------------------------------------------

def test_rel_pos_terms_match_naive_loops():
    torch.manual_seed(0)
    attn = Attention(dim=8, num_heads=2, grid=5)
    with torch.no_grad():
        attn.rel_pos_h.normal_()
        attn.rel_pos_w.normal_()
    q = torch.randn(3, 25, 4)
    rel_h, rel_w = attn.rel_pos_bias(q, 5, 5)
    r = q.reshape(3, 5, 5, 4)
    for n, h, w, k in [(0, 0, 0, 4), (1, 2, 3, 0), (2, 4, 1, 2), (2, 4, 4, 4)]:
        torch.testing.assert_close(rel_h[n, h, w, k], r[n, h, w] @ attn.rel_pos_h[h - k + 4])
        torch.testing.assert_close(rel_w[n, h, w, k], r[n, h, w] @ attn.rel_pos_w[w - k + 4])


def test_window_partition_round_trip_with_padding():
    x = torch.randn(2, 8, 8, 5)
    windows = window_partition(x, 3)
    assert windows.shape == (2 * 9, 3, 3, 5)
    assert torch.equal(windows[2, :, 2:], torch.zeros(3, 1, 5))  # top-right window: padded column
    assert torch.equal(window_unpartition(windows, 3, 8, 8), x)


@pytest.mark.parametrize("window", [3, 0])
def test_windowed_blocks_only_mix_tokens_of_a_window(window):
    torch.manual_seed(1)
    block = randomize(Block(16, 2, 2.0, window, grid=8), seed=1)
    x = torch.randn(1, 8, 8, 16)
    x2 = x.clone()
    x2[0, 7, 7] += torch.randn(16)  # a token in the bottom-right window
    with torch.no_grad():
        diff = (block(x2) - block(x)).abs().amax(-1)[0]
    assert float(diff[6, 6]) > 1e-4  # same window (rows / cols 6-8)
    if window:
        assert float(diff[:6].max()) == 0.0 and float(diff[:, :6].max()) == 0.0
    else:
        assert float(diff[0, 0]) > 1e-4


def test_adapter_reads_the_post_attention_residual():
    torch.manual_seed(2)
    block = randomize(Block(16, 2, 2.0, 0, grid=4, adapter_dim=4), seed=2)
    x = torch.randn(1, 4, 4, 16)
    with torch.no_grad():
        h = x + block.attn(block.norm1(x))
        a = block.Adapter_mlp
        want = h + block.mlp(block.norm2(h)) + 0.1 * a.up_proj(torch.relu(a.down_proj(h)))
        torch.testing.assert_close(block(x), want, atol=1e-6, rtol=1e-6)


def test_decoder_adapter_reads_the_queries_before_norm2():
    torch.manual_seed(3)
    blk = randomize(TwoWayAttentionBlock(16, 2, 32, skip_first_layer_pe=False, adapter_dim=4), seed=3)
    queries, keys, query_pe, key_pe = (torch.randn(2, n, 16) for n in (5, 9, 5, 9))
    with torch.no_grad():
        got_q, got_k = blk(queries, keys, query_pe, key_pe)
        q = blk.norm1(queries + blk.self_attn(queries + query_pe, queries + query_pe, queries))
        q = q + blk.cross_attn_token_to_image(q + query_pe, keys + key_pe, keys)
        a = blk.Adapter_mlp
        q = blk.norm2(q) + blk.mlp(blk.norm2(q)) + 0.1 * a.up_proj(torch.relu(a.down_proj(q)))
        q = blk.norm3(q)
        k = blk.norm4(keys + blk.cross_attn_image_to_token(keys + key_pe, q + query_pe, q))
    torch.testing.assert_close(got_q, q, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_k, k, atol=1e-6, rtol=1e-6)


# ---- projectors, against the formulas written out ------------------------------------------

def conv(x, layer, **kw):
    return F.conv2d(x, layer.weight, layer.bias, **kw)


def test_simcmf_projector_matches_its_formula():
    torch.manual_seed(4)
    C, D = 3, 8
    proj, embed = randomize(SimCMFProjector(C, D), seed=4), randomize(PatchEmbed(D), seed=5)
    x = torch.randn(2, C, 32, 32)
    with torch.no_grad():
        h = conv(x, proj.moe[0], padding=1)  # [2, 4C, 32, 32]
        mu, var = h.mean(1, keepdim=True), h.var(1, unbiased=False, keepdim=True)
        h = torch.relu((h - mu) / torch.sqrt(var + 1e-6) * proj.moe[1].weight + proj.moe[1].bias)
        w = torch.sigmoid(conv(h, proj.moe[3], padding=1).mean((2, 3)))  # [2, C]
        kept = conv(conv(x * w[:, :, None, None], proj.zip_rgbx), embed.proj, stride=16)
        novel = sum(proj.fc.weight[0, i] * conv(x[:, i:i + 1] * (1 - w[:, i, None, None, None]),
                                                  proj.group_patch_embedding[i], stride=16) for i in range(C))
        want = (kept + novel).permute(0, 2, 3, 1)
        got = proj(x, embed)
    assert got.shape == (2, 2, 2, D)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_preconv_projector_matches_its_formula():
    torch.manual_seed(5)
    proj, embed = randomize(PreConvProjector(6), seed=6), randomize(PatchEmbed(8), seed=7)
    x = torch.randn(1, 6, 32, 32)
    assert proj.zip_proj[0].weight.shape == (64, 6, 3, 3) and proj.zip_proj[1].weight.shape == (3, 64, 1, 1)
    with torch.no_grad():
        want = conv(conv(conv(x, proj.zip_proj[0], padding=1), proj.zip_proj[1]), embed.proj, stride=16)
        torch.testing.assert_close(proj(x, embed), want.permute(0, 2, 3, 1), atol=1e-5, rtol=1e-5)


# ---- inputs ---------------------------------------------------------------------------------

def test_encode_decode_equals_forward():
    model = tiny_model(seed=8, tuning="adapter")
    x, coords, labels = inputs(model.config)
    with torch.no_grad():
        emb = model.encode(x)
        assert emb.shape == (2, 32, 8, 8)
        a, b = model(x, coords, labels), model.decode(emb, coords, labels)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    x, coords, labels = inputs(model.config)
    cases = [
        ((x[:, :3], coords, labels), "must have 4 channels.*got 3"),
        ((x[:, :, :64], coords, labels), "must be 128x128.*got 64x128"),
        ((x[0], coords, labels), r"x must be a \[B, 4, 128, 128\] tensor, got \[4, 128, 128\]"),
        ((x.long(), coords, labels), "floating-point"),
        ((x, coords + 128, labels), r"in \[0, 128\)"),
        ((x, coords - 129, labels), r"in \[0, 128\)"),
        ((x, coords[:1], labels[:1]), "point batch 1 does not match the image batch 2"),
        ((x, coords[0], labels), r"point_coords must be a \[B, N, 2\]"),
        ((x, coords, labels[0]), r"point_labels must be a \[B, N\]"),
        ((x, coords, labels[:, :0]), r"point_labels \[2, 0\] must be \[B, N\]"),
        ((x, coords, labels.float()), "integer tensor"),
        ((x, coords, labels + 1), r"got \[2\]"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            model(*args)
    emb = model.encode(x)
    with pytest.raises(ValueError, match=r"embeddings must be \[B, 32, 8, 8\]"):
        model.decode(emb[:, :16], coords, labels)
    with pytest.raises(ValueError, match="does not match"):
        model.decode(emb[:1], coords, labels)


# ---- config ---------------------------------------------------------------------------------

def test_config_round_trip_and_validation():
    cfg = SimCMFConfig(in_chans=9, modality="zju-rgbp", proj_type="preconvk3n2d64", tuning="adapter")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert SimCMFConfig.from_dict(d) == cfg
    assert cfg.pixel_mean[0] == pytest.approx(141.1251) and cfg.img_size == 1024
    assert "radians" in cfg.pixel_scale
    assert all(len(m.channels) == len(m.mean) == len(m.std) for m in MODALITIES.values())
    assert {n: len(m.channels) for n, m in MODALITIES.items()} == {
        "zju-rgbp": 9, "pgsnet_rgbp": 9, "pgsnet_p": 6, "rgbd": 4, "d": 1, "rgbhha": 6, "hha": 3, "nir": 1,
        "rgbnir": 4, "rgbt": 4, "rgbt_500": 4, "t": 1, "t_500": 1}
    with pytest.raises(ValueError, match="modality 'rgbt' has 4 channels"):
        SimCMFConfig(in_chans=1, modality="rgbt")
    with pytest.raises(ValueError, match="proj_type"):
        SimCMFConfig(in_chans=1, proj_type="baseline_a")
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        SimCMFConfig.from_dict({"in_chans": 1, "colour": 1})
    with pytest.raises(ValueError, match="ending with the last block"):
        SimCMFConfig(in_chans=1, encoder_global_attn_indexes=[2, 5, 8])


# ---- the demo pair at full ViT-B size -------------------------------------------------------

@pytest.mark.slow
def test_demo_pair_vit_b_1024(tmp_path, capsys):
    demo_main(["-o", str(tmp_path)])
    out = capsys.readouterr().out
    assert "UNTRAINED" in out and "projector simcmf, C=4 (rgbt), tuning lora r=100" in out
    base = torch.load(tmp_path / BASE_NAME, weights_only=True)
    delta = torch.load(tmp_path / DELTA_NAME, weights_only=True)
    assert len(base) == 314 and set(base) == set(expected_sam_shapes())
    assert delta["model"] == "sam_lora" and delta["untrained"] is True and "UNTRAINED" in delta["note"]
    assert len(delta["state_dict"]) == 93
    model, description = load_simcmf(tmp_path / DELTA_NAME, base=tmp_path / BASE_NAME)
    assert "[UNTRAINED]" in description and model.config.untrained and model.config.is_vit_b()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 1024, 1024, generator=g)
    with torch.no_grad():
        logits, iou = model(x, torch.tensor([[[517.0, 300.0]]]), torch.tensor([[1]]))
    assert logits.shape == (1, 1, 256, 256) and iou.shape == (1, 1)
    assert torch.isfinite(logits).all() and float(logits.std()) > 0
