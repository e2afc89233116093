"""Optional cross-check against the independent ACE-Step 1.5 port in diffusers (>= 0.37:
`AceStepTransformer1DModel`, `AceStepConditionEncoder`, `AceStepAudioTokenizer`,
`AceStepAudioTokenDetokenizer`), loaded with the tiny checkpoint's weights. Skipped when the installed
diffusers has no ACE-Step modules (the pinned 0.35.2 has none). Last run with diffusers 0.42.1 on the path
(installed with `pip install --no-deps --target DIR diffusers==0.42.1`): all pass, max_abs <= 2.6e-6."""
from __future__ import annotations

import re

import pytest
import torch

from tools.onnx_export.acestep import load_acestep_checkpoint, write_tiny_acestep

ace_t = pytest.importorskip("diffusers.models.transformers.ace_step_transformer")
ace_m = pytest.importorskip("diffusers.pipelines.ace_step.modeling_ace_step")


def _rename(key: str) -> str:
    key = key.replace("proj_in.1.", "proj_in_conv.").replace("proj_out.1.", "proj_out_conv.")
    key = re.sub(r"\.(q|k|v)_proj\.", lambda m: f".to_{m.group(1)}.", key)
    key = key.replace(".o_proj.", ".to_out.0.")
    return re.sub(r"\.(q|k)_norm\.", lambda m: f".norm_{m.group(1)}.", key)


def _load(module, sd, prefix):
    sub = {_rename(k[len(prefix):]): v for k, v in sd.items() if k.startswith(prefix)}
    missing, unexpected = module.load_state_dict(sub, strict=False)
    assert not unexpected, unexpected
    assert all("silence_latent" in k or "null_condition_emb" in k for k in missing), missing
    return module.eval()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("ace_diffusers")
    write_tiny_acestep(d, seed=21, text_hidden_dim=64)
    m = load_acestep_checkpoint(d)
    c = m.config
    common = dict(hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                  num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
                  head_dim=c.head_dim, rope_theta=c.rope_theta, rms_norm_eps=c.rms_norm_eps,
                  sliding_window=c.sliding_window)
    sd = m.state_dict()
    dit = _load(ace_t.AceStepTransformer1DModel(num_hidden_layers=c.num_hidden_layers, in_channels=c.in_channels,
                                                audio_acoustic_hidden_dim=64, patch_size=c.patch_size,
                                                layer_types=c.layer_types, **common), sd, "decoder.")
    ce = _load(ace_m.AceStepConditionEncoder(text_hidden_dim=c.text_hidden_dim, timbre_hidden_dim=64,
                                             num_lyric_encoder_hidden_layers=c.num_lyric_encoder_hidden_layers,
                                             num_timbre_encoder_hidden_layers=c.num_timbre_encoder_hidden_layers,
                                             layer_types=c.layer_types, **common), sd, "encoder.")
    pool = dict(audio_acoustic_hidden_dim=64, pool_window_size=c.pool_window_size,
                num_attention_pooler_hidden_layers=c.num_attention_pooler_hidden_layers,
                layer_types=c.layer_types, **common)
    tok = _load(ace_m.AceStepAudioTokenizer(fsq_dim=c.fsq_dim, fsq_input_levels=c.fsq_input_levels, **pool),
                sd, "tokenizer.")
    detok = _load(ace_m.AceStepAudioTokenDetokenizer(**pool), sd, "detokenizer.")
    return m, dit, ce, tok, detok


def _maxabs(a, b):
    return float((a - b).abs().max())


@pytest.mark.parametrize("T", [251, 301])
def test_dit_matches_diffusers(pair, T):
    m, dit, *_ = pair
    g = torch.Generator().manual_seed(T)
    x, ctx = torch.randn(2, T, 64, generator=g), torch.randn(2, T, 128, generator=g)
    enc = torch.randn(2, 19, m.config.hidden_size, generator=g)
    t = torch.tensor([0.9, 0.4])
    with torch.no_grad():
        ours = m.decoder(x, t, t, ctx, enc)
        theirs = dit(x, t, t, enc, ctx, return_dict=False)[0]
    assert _maxabs(ours, theirs) <= 1e-4


def test_condition_encoder_matches_diffusers(pair):
    m, _, ce, *_ = pair
    c = m.config
    g = torch.Generator().manual_seed(2)
    B, Lt, Ll = 2, 9, 260
    tm = torch.ones(B, Lt, dtype=torch.int64)
    tm[1, 5:] = 0
    lm = torch.ones(B, Ll, dtype=torch.int64)
    lm[1, 40:] = 0
    args = (torch.randn(B, Lt, c.text_hidden_dim, generator=g), tm, torch.randn(B, Ll, c.text_hidden_dim, generator=g),
            lm, torch.randn(3, 750, 64, generator=g), torch.tensor([0, 1, 0]))
    with torch.no_grad():
        e1, m1 = m.encoder(*args)
        e2, m2 = ce(*args)
    assert e1.shape == e2.shape
    assert torch.equal(m1, m2.to(m1.dtype))
    assert _maxabs(e1, e2) <= 1e-4


def test_fsq_tokenizer_and_detokenizer_match_diffusers(pair):
    m, _, _, tok, detok = pair
    g = torch.Generator().manual_seed(4)
    lat = torch.randn(2, 100, 64, generator=g)
    with torch.no_grad():
        q1, i1 = m.tokenizer(lat)
        q2, i2 = tok(lat.reshape(2, 20, 5, 64))
        assert torch.equal(i1, i2.reshape(i1.shape))
        assert _maxabs(q1, q2) <= 1e-5
        codes = torch.randint(0, 64000, (2, 17), generator=g)
        h1 = m.detokenizer(m.tokenizer.quantizer.decode(codes))
        h2 = detok(tok.quantizer.get_output_from_indices(codes))
    assert _maxabs(h1, h2) <= 1e-4
