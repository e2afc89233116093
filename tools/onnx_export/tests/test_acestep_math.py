"""ACE-Step module math against an independent float64 numpy implementation written here from the spec
(§1.5, §1.6, §1.7, §3.4, §8, §10). Weights come from the tiny checkpoint; every formula is re-derived here.
Each reference also has deliberately wrong variants (sin-first, no band, band 127, tiled GQA, swapped AdaLN
order) that must land far outside the tolerance, so these tests can fail."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tools.onnx_export.acestep import load_acestep_checkpoint, write_tiny_acestep
from tools.onnx_export.acestep.condition import pack_sequences, unpack_timbre
from tools.onnx_export.acestep.dit import timestep_sinusoid
from tools.onnx_export.acestep.fsq import fsq_basis
from tools.onnx_export.acestep.layers import Attention

NEG32 = float(np.finfo(np.float32).min)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("acestep_tiny")
    write_tiny_acestep(d, seed=1234, text_hidden_dim=48)
    return load_acestep_checkpoint(d)


def npsd(model):
    return {k: v.detach().double().numpy() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------- reference
class Ref:
    """float64 reference; `variant` switches on one deliberate mistake."""

    def __init__(self, sd, cfg, variant: str = ""):
        self.sd, self.cfg, self.v = sd, cfg, variant
        self.window = cfg.sliding_window - (1 if variant == "band127" else 0)

    def rms(self, x, w):
        return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + self.cfg.rms_norm_eps))

    def rope(self, x):  # x [L, D], NeoX rotate-half, positions 0..L-1
        L, D = x.shape
        inv = self.cfg.rope_theta ** (-np.arange(0, D, 2) / D)
        ang = np.arange(L)[:, None] * inv[None, :]
        c, s = np.cos(ang), np.sin(ang)
        x1, x2 = x[:, : D // 2], x[:, D // 2:]
        return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)

    def band(self, n):
        i = np.arange(n)
        return np.abs(i[:, None] - i[None, :]) <= self.window

    def attn(self, p, xq, xkv, use_rope, keep):
        sd, cfg = self.sd, self.cfg
        nh, nkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        q = (xq @ sd[p + "q_proj.weight"].T).reshape(len(xq), nh, d)
        k = (xkv @ sd[p + "k_proj.weight"].T).reshape(len(xkv), nkv, d)
        v = (xkv @ sd[p + "v_proj.weight"].T).reshape(len(xkv), nkv, d)
        heads = []
        for h in range(nh):
            g = h % nkv if self.v == "gqa_tiled" else h // (nh // nkv)
            qh, kh = self.rms(q[:, h], sd[p + "q_norm.weight"]), self.rms(k[:, g], sd[p + "k_norm.weight"])
            if use_rope:
                qh, kh = self.rope(qh), self.rope(kh)
            s = qh @ kh.T / math.sqrt(d)
            if keep is not None:
                s = np.where(keep, s, NEG32)
            s = np.exp(s - s.max(-1, keepdims=True))
            heads.append((s / s.sum(-1, keepdims=True)) @ v[:, g])
        return np.concatenate(heads, axis=-1) @ sd[p + "o_proj.weight"].T

    def mlp(self, p, x):
        sd = self.sd
        g = x @ sd[p + "gate_proj.weight"].T
        return (g / (1 + np.exp(-g)) * (x @ sd[p + "up_proj.weight"].T)) @ sd[p + "down_proj.weight"].T

    def lin(self, p, x):
        y = x @ self.sd[p + "weight"].T
        return y + self.sd[p + "bias"] if p + "bias" in self.sd else y

    def encoder_stack(self, p, x, n_layers, key_valid=None):
        L = len(x)
        for i in range(n_layers):
            keep = np.ones((L, L), bool) if key_valid is None else np.broadcast_to(key_valid[None, :], (L, L))
            if self.cfg.layer_types[i] == "sliding_attention" and self.v != "noband":
                keep = keep & self.band(L)
            lp = f"{p}layers.{i}."
            x = x + self.attn(lp + "self_attn.", self.rms(x, self.sd[lp + "input_layernorm.weight"]),
                              self.rms(x, self.sd[lp + "input_layernorm.weight"]), True, keep)
            x = x + self.mlp(lp + "mlp.", self.rms(x, self.sd[lp + "post_attention_layernorm.weight"]))
        return self.rms(x, self.sd[p + "norm.weight"])

    # -- DiT (§1.6)
    def sinusoid(self, t):
        f = np.exp(-math.log(10000.0) * np.arange(128) / 128)
        a = 1000.0 * t * f
        return np.concatenate([np.sin(a), np.cos(a)] if self.v == "sin_first" else [np.cos(a), np.sin(a)])

    def temb(self, p, t):
        e = self.lin(p + "linear_2.", self.silu(self.lin(p + "linear_1.", self.sinusoid(t))))
        return e, self.lin(p + "time_proj.", self.silu(e)).reshape(6, -1)

    @staticmethod
    def silu(x):
        return x / (1 + np.exp(-x))

    def dit(self, x, t, r, ctx, enc):
        sd, cfg = self.sd, self.cfg
        e_t, p_t = self.temb("decoder.time_embed.", t)
        e_r, p_r = self.temb("decoder.time_embed_r.", t - r)
        temb, tproj = e_t + e_r, p_t + p_r
        T = len(x)
        h = np.concatenate([ctx, x], axis=-1)
        if T % 2:
            h = np.concatenate([h, np.zeros((1, h.shape[1]))])
        W, bias = sd["decoder.proj_in.1.weight"], sd["decoder.proj_in.1.bias"]  # [H, 192, 2]
        S = len(h) // 2
        h = np.stack([np.einsum("ock,kc->o", W, h[2 * s: 2 * s + 2]) for s in range(S)]) + bias
        encp = self.lin("decoder.condition_embedder.", enc)
        for i in range(cfg.num_hidden_layers):
            lp = f"decoder.layers.{i}."
            m = sd[lp + "scale_shift_table"][0] + tproj
            order = [1, 0, 2, 4, 3, 5] if self.v == "adaln_swap" else [0, 1, 2, 3, 4, 5]
            sh_sa, sc_sa, g_sa, sh_ff, sc_ff, g_ff = (m[j] for j in order)
            keep = self.band(S) if (cfg.layer_types[i] == "sliding_attention" and self.v != "noband") else None
            n = self.rms(h, sd[lp + "self_attn_norm.weight"]) * (1 + sc_sa) + sh_sa
            h = h + self.attn(lp + "self_attn.", n, n, True, keep) * g_sa
            n = self.rms(h, sd[lp + "cross_attn_norm.weight"])
            h = h + self.attn(lp + "cross_attn.", n, encp, False, None)
            n = self.rms(h, sd[lp + "mlp_norm.weight"]) * (1 + sc_ff) + sh_ff
            h = h + self.mlp(lp + "mlp.", n) * g_ff
        so = sd["decoder.scale_shift_table"][0] + temb
        shift, scale = so[0], so[1]
        h = self.rms(h, sd["decoder.norm_out.weight"]) * (1 + scale) + shift
        Wo, bo = sd["decoder.proj_out.1.weight"], sd["decoder.proj_out.1.bias"]  # [H, 64, 2]
        y = np.zeros((2 * S, Wo.shape[1]))
        for s in range(S):
            for k in range(2):
                y[2 * s + k] = h[s] @ Wo[:, :, k] + bo
        return y[:T]

    # -- condition encoder (§1.5)
    def condition(self, text, tmask, lyr, lmask, ref, order):
        cfg = self.cfg
        nl = min(cfg.num_lyric_encoder_hidden_layers, cfg.num_hidden_layers)
        nt = min(cfg.num_timbre_encoder_hidden_layers, cfg.num_hidden_layers)
        clips = [self.encoder_stack("encoder.timbre_encoder.", self.lin("encoder.timbre_encoder.embed_tokens.", c),
                                    nt)[0] for c in ref]
        B = len(text)
        per_item = [[clips[n] for n in range(len(ref)) if order[n] == b] for b in range(B)]
        M = max(len(s) for s in per_item)
        outs, masks = [], []
        for b in range(B):
            lyric = self.encoder_stack("encoder.lyric_encoder.",
                                       self.lin("encoder.lyric_encoder.embed_tokens.", lyr[b]), nl, lmask[b] != 0)
            txt = text[b] @ self.sd["encoder.text_projector.weight"].T
            rows = [(lyric[i], lmask[b, i] != 0) for i in range(len(lyric))]
            rows += [(per_item[b][j] if j < len(per_item[b]) else np.zeros(cfg.hidden_size), j < len(per_item[b]))
                     for j in range(M)]
            rows += [(txt[i], tmask[b, i] != 0) for i in range(len(txt))]
            valid = [r for r, ok in rows if ok]
            pad = [r for r, ok in rows if not ok]
            outs.append(np.stack(valid + pad))
            masks.append(np.array([1] * len(valid) + [0] * len(pad)))
        return np.stack(outs), np.stack(masks)


def rel_err(a, ref):
    return float(np.abs(np.asarray(a, np.float64) - ref).max() / max(1.0, np.abs(ref).max()))


TOL = 5e-5


# ----------------------------------------------------------------------------------------- tests
def test_timestep_sinusoid_is_cos_first_times_1000():
    t = torch.tensor([0.0, 0.3, 0.875, 1.0])
    f = np.exp(-np.log(10000.0) * np.arange(128) / 128)
    for i, tv in enumerate(t.tolist()):
        ref = np.concatenate([np.cos(1000 * tv * f), np.sin(1000 * tv * f)])
        np.testing.assert_allclose(timestep_sinusoid(t)[i].numpy(), ref, atol=2e-4)
    # t - r = 0 gives cos = 1, sin = 0 (spec §1.6)
    z = timestep_sinusoid(torch.zeros(1))[0].numpy()
    assert np.all(z[:128] == 1.0) and np.all(z[128:] == 0.0)


@pytest.mark.parametrize("T", [251, 301])
def test_dit_matches_reference(tiny, T):
    cfg = tiny.config
    g = torch.Generator().manual_seed(T)
    x, ctx = torch.randn(1, T, 64, generator=g), torch.randn(1, T, 128, generator=g)
    enc = torch.randn(1, 23, cfg.hidden_size, generator=g)
    t = torch.tensor([0.7])
    with torch.no_grad():
        out = tiny.decoder(x, t, t, ctx, enc)[0].numpy()
    assert out.shape == (T, 64)
    sd = npsd(tiny)
    args = (x[0].double().numpy(), 0.7, 0.7, ctx[0].double().numpy(), enc[0].double().numpy())
    ref = Ref(sd, cfg).dit(*args)
    assert rel_err(out, ref) < TOL
    # r != t exercises time_embed_r
    r = torch.tensor([0.2])
    with torch.no_grad():
        out_r = tiny.decoder(x, t, r, ctx, enc)[0].numpy()
    assert rel_err(out_r, Ref(sd, cfg).dit(args[0], 0.7, 0.2, *args[3:])) < TOL
    if T == 301:  # S = 151 > 128: the band and its width are observable
        for variant in ("sin_first", "noband", "band127", "gqa_tiled", "adaln_swap"):
            assert rel_err(out, Ref(sd, cfg, variant).dit(*args)) > 10 * TOL, variant


def test_adaln_order_and_raw_gates_with_hand_set_tables(tiny):
    """One DiT layer with zero attention/MLP weights except hand-set tables: the output must follow
    x + MLP(RMSNorm(x)(1+scale_ff)+shift_ff)*gate_ff with gates used raw (no sigmoid)."""
    import copy

    cfg = tiny.config
    layer = copy.deepcopy(tiny.decoder.layers[1])
    H = cfg.hidden_size
    with torch.no_grad():
        for p in (layer.self_attn.o_proj.weight, layer.cross_attn.o_proj.weight):
            p.zero_()  # isolate the MLP branch
        table = torch.zeros(1, 6, H)
        table[0, 3] = 0.3   # shift_ff
        table[0, 4] = -0.5  # scale_ff
        table[0, 5] = 2.0   # gate_ff (raw; sigmoid would cap it at 1)
        table[0, 0:3] = 7.0  # self-attn slots must not leak into the MLP branch
        layer.scale_shift_table.copy_(table)
        x = torch.randn(1, 10, H)
        tproj = torch.zeros(1, 6, H)
        out = layer(x, tproj, None, None, torch.randn(1, 3, H)).double().numpy()[0]
    sd = {k: v.double().numpy() for k, v in layer.state_dict().items()}
    xn = x[0].double().numpy()
    n = xn / np.sqrt((xn ** 2).mean(-1, keepdims=True) + cfg.rms_norm_eps) * sd["mlp_norm.weight"]
    n = n * (1 - 0.5) + 0.3
    gte = n @ sd["mlp.gate_proj.weight"].T
    mlp = (gte / (1 + np.exp(-gte)) * (n @ sd["mlp.up_proj.weight"].T)) @ sd["mlp.down_proj.weight"].T
    np.testing.assert_allclose(out, xn + 2.0 * mlp, atol=2e-5)


def test_band_mask_only_on_even_layers_and_width_128(tiny):
    """Perturbing one patched position changes outputs 128 away on an even (sliding) layer, not 129."""
    from tools.onnx_export.acestep.layers import rope_tables

    cfg = tiny.config
    assert cfg.layer_types[0] == "sliding_attention" and cfg.layer_types[1] == "full_attention"
    enc_layers = tiny.encoder.timbre_encoder
    S = 300
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, S, cfg.hidden_size, generator=g)
    x2 = x.clone()
    x2[0, 0] += 1.0
    from tools.onnx_export.acestep.layers import encoder_masks

    with torch.no_grad():
        rope = rope_tables(x, cfg.head_dim, cfg.rope_theta)
        full, sliding = encoder_masks(x, cfg, None)
        for idx, mask in ((0, sliding), (1, full)):
            layer = enc_layers.layers[idx]
            d = (layer(x2, rope, mask) - layer(x, rope, mask))[0].abs().amax(-1)
            if idx == 0:
                assert d[128] > 0 and torch.all(d[129:] == 0)
            else:
                assert torch.all(d[129:] > 0)


def test_gqa_query_head_reads_kv_head_h_div_group(tiny):
    cfg = tiny.config
    attn = Attention(cfg)
    torch.manual_seed(0)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(1, 6, cfg.hidden_size)
    with torch.no_grad():
        out = attn(x).double().numpy()[0]
    sd = {"a." + k: v.double().numpy() for k, v in attn.state_dict().items()}
    xn = x[0].double().numpy()
    ref = Ref(sd, cfg).attn("a.", xn, xn, False, None)
    assert rel_err(out, ref) < TOL
    assert rel_err(out, Ref(sd, cfg, "gqa_tiled").attn("a.", xn, xn, False, None)) > 1e-3


def test_condition_encoder_matches_reference_with_padding(tiny):
    cfg = tiny.config
    g = torch.Generator().manual_seed(7)
    B, Lt, Ll = 2, 6, 300
    text = torch.randn(B, Lt, cfg.text_hidden_dim, generator=g)
    lyr = torch.randn(B, Ll, cfg.text_hidden_dim, generator=g)
    tm = torch.ones(B, Lt, dtype=torch.int64)
    tm[1, 4:] = 0
    lm = torch.ones(B, Ll, dtype=torch.int64)
    lm[1, 10:] = 0  # rows >= 139 of item 1 are fully masked on sliding layers (finfo.min semantics)
    ref_clips = torch.randn(3, cfg.timbre_fix_frame, 64, generator=g)
    order = torch.tensor([1, 0, 1])
    with torch.no_grad():
        enc, mask = tiny.encoder(text, tm, lyr, lm, ref_clips, order)
    r_enc, r_mask = Ref(npsd(tiny), cfg).condition(text.double().numpy(), tm.numpy(), lyr.double().numpy(),
                                                   lm.numpy(), ref_clips.double().numpy(), order.numpy())
    assert enc.shape == (B, Ll + 2 + Lt, cfg.hidden_size)
    np.testing.assert_array_equal(mask.numpy(), r_mask)
    assert rel_err(enc.numpy(), r_enc) < TOL


def test_pack_sequences_order_and_mask():
    B, D = 3, 2
    m1 = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    m2 = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1]])
    h1 = torch.arange(B * 4 * D, dtype=torch.float32).reshape(B, 4, D) + 1
    h2 = -torch.arange(B * 3 * D, dtype=torch.float32).reshape(B, 3, D) - 1
    out, mask = pack_sequences(h1, h2, m1, m2)
    for b in range(B):
        rows = list(zip(torch.cat([h1[b], h2[b]]).tolist(), torch.cat([m1[b], m2[b]]).tolist()))
        want = [r for r, ok in rows if ok] + [r for r, ok in rows if not ok]  # stable, valid first
        assert out[b].tolist() == want
        n = int(torch.cat([m1[b], m2[b]]).sum())
        assert mask[b].tolist() == [1] * n + [0] * (7 - n)


def test_unpack_timbre_slots_follow_clip_order():
    emb = torch.arange(5 * 3, dtype=torch.float32).reshape(5, 3)
    order = torch.tensor([2, 0, 2, 2, 0])
    out, mask = unpack_timbre(emb, order, torch.zeros(3, 1))
    assert out.shape == (3, 3, 3)
    assert mask.tolist() == [[1, 1, 0], [0, 0, 0], [1, 1, 1]]
    assert out[0, 0].tolist() == emb[1].tolist() and out[0, 1].tolist() == emb[4].tolist()
    assert out[2].tolist() == emb[[0, 2, 3]].tolist()
    assert out[1].abs().sum() == 0 and out[0, 2].abs().sum() == 0


# ----------------------------------------------------------------------------------------- FSQ
SPEC_BASIS = [1, 8, 64, 512, 2560, 12800]
SPEC_LEVELS = [8, 8, 8, 5, 5, 5]


def test_fsq_basis_and_all_codes_round_trip(tiny):
    q = tiny.tokenizer.quantizer
    assert fsq_basis(SPEC_LEVELS) == SPEC_BASIS and q.basis == SPEC_BASIS and q.codebook_size == 64000
    codes = torch.arange(64000)
    values = q.indices_to_values(codes).double().numpy()
    L = np.array(SPEC_LEVELS)
    lv = (np.arange(64000)[:, None] // np.array(SPEC_BASIS)) % L
    np.testing.assert_allclose(values, 2 * lv / (L - 1) - 1, atol=1e-7)
    assert values.min() == -1.0 and values.max() == 1.0
    # quantising the decoded values (hard clamp + floor(+0.5), after the soft clamp is inverted) gives the codes back
    c = 1 + 1 / (L - 1)
    pre = torch.from_numpy(c * np.arctanh(np.clip(values, -0.999999, 0.999999) / c)).float()
    lev = q.quantize_levels(pre)
    assert torch.equal(q.levels_to_indices(lev), codes)


def test_fsq_encode_matches_reference(tiny):
    q = tiny.tokenizer.quantizer
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 50, tiny.config.fsq_dim, generator=g) * 3
    with torch.no_grad():
        quant, idx = q(x)
    sd = npsd(tiny)
    L = np.array(SPEC_LEVELS, dtype=np.float64)
    z = x.double().numpy() @ sd["tokenizer.quantizer.project_in.weight"].T + sd["tokenizer.quantizer.project_in.bias"]
    c = 1 + 1 / (L - 1)
    u = np.clip(c * np.tanh(z / c), -1, 1)
    lev = np.floor((L - 1) * (u + 1) / 2 + 0.5)
    want = (lev * np.array(SPEC_BASIS)).sum(-1).astype(np.int64)
    assert (idx.numpy() != want).sum() == 0
    assert len(np.unique(want)) > 50  # the tiny weights spread over many codes
    vals = 2 * lev / (L - 1) - 1
    ref_q = vals @ sd["tokenizer.quantizer.project_out.weight"].T + sd["tokenizer.quantizer.project_out.bias"]
    assert rel_err(quant.numpy(), ref_q) < TOL
    # top level is reachable through the soft clamp (c > 1), i.e. no plain-tanh edge shift
    assert q.quantize_levels(torch.full((1, 6), 50.0)).tolist() == [[7, 7, 7, 4, 4, 4]]


def test_detokenizer_matches_reference(tiny):
    cfg = tiny.config
    codes = torch.tensor([[0, 63999, 12345, 777], [5, 6, 7, 8]])
    with torch.no_grad():
        out = tiny.detokenizer(tiny.tokenizer.quantizer.decode(codes)).numpy()
    assert out.shape == (2, 20, 64)
    ref = Ref(npsd(tiny), cfg)
    sd = ref.sd
    L = np.array(SPEC_LEVELS)
    for b in range(2):
        for j, n in enumerate(codes[b].tolist()):
            lv = (n // np.array(SPEC_BASIS)) % L
            v = 2 * lv / (L - 1) - 1
            h = ref.lin("tokenizer.quantizer.project_out.", v)
            e = ref.lin("detokenizer.embed_tokens.", h)
            x = e[None, :] + sd["detokenizer.special_tokens"][0]
            x = ref.encoder_stack("detokenizer.", x, cfg.num_attention_pooler_hidden_layers)
            y = ref.lin("detokenizer.proj_out.", x)
            assert rel_err(out[b, 5 * j: 5 * j + 5], y) < TOL


@pytest.mark.parametrize("s", [1, 3, 4, 5, 8, 11, 16, 23])
def test_band_attention_equals_masked_full_attention(s):
    """The blockwise band attention (window w = 4 here: blocks of 4 queries against 12 keys) against the
    full softmax with the additive band mask |i − j| <= w, in float64 numpy, for S below, at and above
    one or several blocks."""
    from tools.onnx_export.acestep.layers import band_attention

    w, h, d = 4, 2, 8
    g = torch.Generator().manual_seed(s)
    q, k, v = (torch.randn(2, h, s, d, generator=g) for _ in range(3))
    out = band_attention(q, k, v, w, d ** -0.5).double().numpy()
    qn, kn, vn = (t.double().numpy() for t in (q, k, v))
    scores = qn @ kn.transpose(0, 1, 3, 2) * d ** -0.5
    i = np.arange(s)
    scores = np.where(np.abs(i[:, None] - i[None]) <= w, scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    ref = (p / p.sum(-1, keepdims=True)) @ vn
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-6)
    if s > w + 1:  # a band one wider is visibly different: the comparison can fail
        wider = band_attention(q, k, v, w + 1, d ** -0.5).double().numpy()
        assert np.abs(wider - ref).max() > 1e-3
