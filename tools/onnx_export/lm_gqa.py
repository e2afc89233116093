"""The 5 Hz LM graphs written directly as ONNX with ONNX Runtime's fused operators, weights streamed
from the checkpoint (no torch model, no tracing).

`write_lm_graphs(ckpt_dir, out_dir)` writes `lm_prefill.onnx` and `lm_decode.onnx` with exactly the I/O of
`docs/io_contract_lm.md` (the same names, left padding, per-row positions from 0, last-position logits
[B, V], presents [B, kv, T, hd] fp32), built from the operators onnxruntime-genai's model builder uses
for Qwen3:

* `com.microsoft.GroupQueryAttention` (KV heads shared without repetition, the causal mask inside) after
  `com.microsoft.RotaryEmbedding` on Q and K with the contract's `position_ids`; the contract's mask
  enters as an additive `attention_bias`, so left-padded rows work;
* `SimplifiedLayerNormalization` / `com.microsoft.SkipSimplifiedLayerNormalization` (RMSNorm with the
  residual add fused), one packed Q|K|V MatMul and one packed gate|up MatMul per layer;
* logits of the last position only; the head is a `Gemm(transB=1)` on the embedding table itself, so the
  tied table is stored once;
* opt-in weight-only `com.microsoft.MatMulNBits` (`weights="int8"` or `"int4"`, blockwise symmetric
  round-to-nearest) for the projections and a quantized copy of the head; activations and the KV cache
  stay fp32.

Weights go tensor by tensor from the safetensors into ONE external data file shared by both graphs,
so the peak memory is a few layers' tensors, whatever the model size (1.7B: 8 GB of fp32 on disk).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import lm

OPSET = 18  # the package's opset (package.DEFAULT_OPSET)
MS = "com.microsoft"
WEIGHT_FORMATS = ("fp32", "int8", "int4")
DEFAULT_BLOCK_SIZE = 32
_ALIGN = 4096


# --------------------------------------------------------------------------------------------------
# Checkpoint access: strict like `lm.load_lm_state_dict`, one tensor at a time
# --------------------------------------------------------------------------------------------------


class _LazyCheckpoint:
    """The checkpoint's tensors by official key, read on demand as fp32 numpy arrays."""

    def __init__(self, ckpt_dir: Path):
        from safetensors import safe_open

        self.dir = Path(ckpt_dir)
        self.cfg = lm.read_lm_config(self.dir)
        single, index = self.dir / lm.WEIGHTS_FILE, self.dir / lm.WEIGHTS_INDEX_FILE
        if single.is_file():
            files = [single]
        elif index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map")
            if not isinstance(weight_map, dict):
                raise lm.LmCheckpointError(f"LM checkpoint: {index} has no 'weight_map'")
            files = [self.dir / f for f in sorted(set(weight_map.values()))]
            for f in files:
                if not f.is_file():
                    raise FileNotFoundError(f"LM checkpoint: shard {f} (listed in {index}) does not exist")
        else:
            raise FileNotFoundError(f"LM checkpoint: {single} does not exist (nor {index})")
        self._handles = [safe_open(str(f), "pt") for f in files]
        self._where: dict[str, tuple[int, str]] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for i, h in enumerate(self._handles):
            for raw in h.keys():
                key = lm._canonical_key(raw)
                if key in self._where:
                    raise lm.LmCheckpointError(f"LM checkpoint {self.dir}: key {raw!r} appears twice (shards or 'model.' prefix)")
                self._where[key] = (i, raw)
                shapes[key] = tuple(h.get_slice(raw).get_shape())
        expected = lm.expected_lm_keys(self.cfg)
        if self.cfg["tie_word_embeddings"] and "lm_head.weight" in shapes:
            head, emb = self.get("lm_head.weight"), self.get("model.embed_tokens.weight")
            if head.shape != emb.shape or not np.array_equal(head, emb):
                raise lm.LmCheckpointError(
                    f"LM checkpoint {self.dir}: unexpected key 'lm_head.weight' differs from "
                    "'model.embed_tokens.weight' while tie_word_embeddings is true"
                )
            del shapes["lm_head.weight"], self._where["lm_head.weight"]
        missing = [k for k in expected if k not in shapes]
        unexpected = [k for k in shapes if k not in expected]
        if missing:
            raise lm.LmCheckpointError(f"LM checkpoint {self.dir}: missing key {missing[0]!r}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
        if unexpected:
            raise lm.LmCheckpointError(f"LM checkpoint {self.dir}: unexpected key {unexpected[0]!r}" + (f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
        for k, shape in expected.items():
            if shapes[k] != shape:
                raise lm.LmCheckpointError(f"LM checkpoint {self.dir}: key {k!r} has shape {list(shapes[k])}, expected {list(shape)} from config")

    def get(self, key: str) -> np.ndarray:
        import torch

        i, raw = self._where[key]
        t = self._handles[i].get_tensor(raw)
        if t.dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise lm.LmCheckpointError(f"LM checkpoint {self.dir}: key {raw!r} has dtype {t.dtype}, expected a float")
        return t.to(torch.float32).numpy()


# --------------------------------------------------------------------------------------------------
# Blockwise weight-only quantization in MatMulNBits' layout
# --------------------------------------------------------------------------------------------------


def quantize_nbits(w_kn: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric round-to-nearest quantization of a MatMul weight [K, N] in `MatMulNBits` layout.

    Returns (B uint8 [N, ceil(K / block), block * bits / 8], scales fp32 [N * ceil(K / block)]). No
    zero-point input: the operator's default, 2^(bits-1), is the symmetric centre, so
    w ≈ (q − 2^(bits−1)) · scale. 4-bit values are packed two per byte, the lower index in the low nibble.
    """
    k, n = w_kn.shape
    n_blocks = -(-k // block_size)
    qmax = 2 ** (bits - 1) - 1
    b = np.empty((n, n_blocks, block_size * bits // 8), np.uint8)
    scales = np.empty((n, n_blocks), np.float32)
    for lo in range(0, n, 8192):  # in column chunks: the 217,204-column head never needs 3 fp32 copies
        hi = min(n, lo + 8192)
        wt = np.zeros((hi - lo, n_blocks * block_size), np.float32)
        wt[:, :k] = w_kn[:, lo:hi].T
        wt = wt.reshape(hi - lo, n_blocks, block_size)
        amax = np.abs(wt).max(axis=2, keepdims=True)
        scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
        q = (np.clip(np.rint(wt / scale), -qmax - 1, qmax) + 2 ** (bits - 1)).astype(np.uint8)
        b[lo:hi] = q[..., 0::2] | (q[..., 1::2] << 4) if bits == 4 else q
        scales[lo:hi] = scale[..., 0]
    return b, scales.reshape(-1)


def dequantize_nbits(b: np.ndarray, scales: np.ndarray, bits: int, k: int, block_size: int) -> np.ndarray:
    """Inverse of `quantize_nbits` (what MatMulNBits computes with): the [K, N] fp32 weight."""
    n, n_blocks = b.shape[0], b.shape[1]
    if bits == 4:
        q = np.empty((n, n_blocks, block_size), np.uint8)
        q[..., 0::2], q[..., 1::2] = b & 0x0F, b >> 4
    else:
        q = b
    w = (q.astype(np.float32) - 2 ** (bits - 1)) * scales.reshape(n, n_blocks, 1)
    return w.reshape(n, n_blocks * block_size)[:, :k].T


# --------------------------------------------------------------------------------------------------
# Graph writer
# --------------------------------------------------------------------------------------------------


class _WeightsFile:
    """Appends initializers to one external data file; the same name is written once for both graphs."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "wb")
        self._written: dict[str, tuple[int, int, int, tuple[int, ...]]] = {}

    def tensor(self, name: str, array: np.ndarray):
        import onnx
        from onnx import helper

        if name not in self._written:
            array = np.ascontiguousarray(array)
            pad = (-self._f.tell()) % _ALIGN
            self._f.write(b"\0" * pad)
            offset = self._f.tell()
            self._f.write(array.tobytes())
            self._written[name] = (offset, array.nbytes, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape)
        offset, length, dtype, shape = self._written[name]
        t = onnx.TensorProto()
        t.name, t.data_type = name, dtype
        t.dims.extend(shape)
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", self.path.name), ("offset", str(offset)), ("length", str(length))):
            e = t.external_data.add()
            e.key, e.value = k, v
        return t

    def close(self) -> None:
        self._f.close()


class _Graph:
    def __init__(self, weights: _WeightsFile, loader, prefix: str):
        self.nodes, self.inits, self.weights, self.loader = [], [], weights, loader
        self._names: set[str] = set()
        self._n = 0
        self.prefix = prefix

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", hint: str | None = None, **attrs) -> list[str]:
        from onnx import helper

        base = self.name(hint or op_type)
        outs = [f"{base}/out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=base, domain=domain or None, **attrs))
        return outs

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        if name not in self._names:
            self._names.add(name)
            self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, name: str, make) -> str:
        """An external initializer; `make()` is only called the first time the name is written."""
        if name not in self._names:
            self._names.add(name)
            cached = name in self.weights._written
            self.inits.append(self.weights.tensor(name, None if cached else make()))
        return name


def _rope_caches(cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [max_positions, head_dim / 2] for GQA's fused rotary (Qwen3: rotate-half, fp32)."""
    hd = cfg["head_dim"]
    inv_freq = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd))
    pos = np.arange(cfg["max_position_embeddings"], dtype=np.float32)
    freqs = np.outer(pos, inv_freq).astype(np.float32)
    return np.cos(freqs).astype(np.float32), np.sin(freqs).astype(np.float32)


def _linear(g: _Graph, x: str, name: str, make_kn, k: int, n: int, fmt: str, block: int, level: int = 4) -> str:
    """x [.., K] @ W [K, N]; W from `make_kn()` (fp32 [K, N]), stored fp32 or as MatMulNBits blocks."""
    if fmt == "fp32":
        return g.op("MatMul", [x, g.weight(name, make_kn)], hint=name)[0]
    bits = 8 if fmt == "int8" else 4
    cache: dict[str, np.ndarray] = {}

    def part(i):
        def make():
            if not cache:
                cache["b"], cache["s"] = quantize_nbits(make_kn(), bits, block)
            return cache.pop("b") if i == 0 else cache.pop("s")

        return make

    b = g.weight(f"{name}.qweight", part(0))
    s = g.weight(f"{name}.scales", part(1))
    return g.op("MatMulNBits", [x, b, s], domain=MS, hint=name, K=k, N=n, bits=bits, block_size=block, accuracy_level=level)[0]


def _build(cfg: dict, ckpt: _LazyCheckpoint, weights: _WeightsFile, *, decode: bool, fmt: str, block: int, level: int):
    from onnx import TensorProto, helper

    n_layers, h, inter = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]
    nq, nkv, hd, v = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["vocab_size"]
    eps = float(cfg["rms_norm_eps"])
    g = _Graph(weights, ckpt, "decode" if decode else "prefill")
    get = ckpt.get
    L = lambda i, s: f"model.layers.{i}.{s}"  # noqa: E731

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 1 if decode else "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total" if decode else "seq"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", 1 if decode else "seq"]),
    ]
    past_dim, total_dim = ("past", "total") if decode else (None, "seq")
    if decode:
        for name in lm.kv_names("past", n_layers):
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", nkv, past_dim, hd]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", v])]
    for name in lm.kv_names("present", n_layers):
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", nkv, total_dim, hd]))

    # GQA's view of the batch: every row fills the whole [0, T) window (seqlens_k = T − 1), so it writes
    # the new K/V at column T − S for all rows; which columns are real is the additive bias below, from the
    # contract's mask (left padding), and the rotary positions are the contract's position_ids.
    i64 = lambda *x: np.array(x, np.int64)  # noqa: E731
    mask_shape = g.op("Shape", ["attention_mask"])[0]
    total = g.op("Gather", [mask_shape, g.const("one_i64", i64(1))], axis=0)[0]  # [1]
    total_i32 = g.op("Cast", [total], to=TensorProto.INT32)[0]
    total_scalar = g.op("Squeeze", [total_i32, g.const("axis0", i64(0))])[0]  # GQA wants a scalar
    batch = g.op("Gather", [mask_shape, g.const("zero_i64", i64(0))], axis=0)[0]
    seqlens = g.op("Expand", [g.op("Sub", [total_i32, g.const("one_i32", np.array([1], np.int32))])[0], batch])[0]
    # attention_bias [B, 1, 1, T]: 0 for real keys, the fp32 minimum (finite, so a padded query row that
    # sees nothing stays finite) for padding. GQA adds the causal mask itself.
    keep = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.const("axes12", i64(1, 2))])[0]], to=TensorProto.FLOAT)[0]
    bias = g.op("Mul", [g.op("Sub", [g.const("one_f32", np.array(1.0, np.float32)), keep])[0],
                        g.const("neg_big", np.array(np.finfo(np.float32).min, np.float32))])[0]
    # GQA wants the bias as [B, 1, S, T].
    seq = g.op("Gather", [g.op("Shape", ["input_ids"])[0], g.const("one_i64", i64(1))], axis=0)[0]
    bias_shape = g.op("Concat", [batch, g.const("one_i64", i64(1)), seq, total], axis=0)[0]
    bias = g.op("Expand", [bias, bias_shape])[0]
    cos, sin = _rope_caches(cfg)
    cos_name, sin_name = g.const("cos_cache", cos), g.const("sin_cache", sin)

    emb = g.weight("model.embed_tokens.weight", lambda: get("model.embed_tokens.weight"))
    x = g.op("Gather", [emb, "input_ids"], axis=0, hint="embed")[0]
    ln = lambda name: g.weight(name, lambda: get(name))  # noqa: E731
    normed = g.op("SimplifiedLayerNormalization", [x, ln(L(0, "input_layernorm.weight"))], axis=-1, epsilon=eps, stash_type=1)[0]
    qkv_n = (nq + 2 * nkv) * hd
    for i in range(n_layers):
        qkv = _linear(
            g, normed, L(i, "self_attn.qkv_proj.weight"),
            lambda i=i: np.concatenate([get(L(i, f"self_attn.{p}_proj.weight")) for p in "qkv"], axis=0).T,
            h, qkv_n, fmt, block, level,
        )
        q, k, val = g.op("Split", [qkv, g.const(f"split_qkv", i64(nq * hd, nkv * hd, nkv * hd))], n_out=3, axis=-1)
        # q_norm / k_norm: RMSNorm over each head's head_dim, before the rotary embedding (Qwen3).
        q = g.op("Reshape", [q, g.const("shape_q", i64(0, 0, nq, hd))])[0]
        q = g.op("SimplifiedLayerNormalization", [q, ln(L(i, "self_attn.q_norm.weight"))], axis=-1, epsilon=eps, stash_type=1)[0]
        q = g.op("Reshape", [q, g.const("shape_q_flat", i64(0, 0, nq * hd))])[0]
        k = g.op("Reshape", [k, g.const("shape_k", i64(0, 0, nkv, hd))])[0]
        k = g.op("SimplifiedLayerNormalization", [k, ln(L(i, "self_attn.k_norm.weight"))], axis=-1, epsilon=eps, stash_type=1)[0]
        k = g.op("Reshape", [k, g.const("shape_k_flat", i64(0, 0, nkv * hd))])[0]
        # Rotary as its own fused op: GQA's built-in rotary ignores position_ids on a first prompt (it
        # rotates by column), which would break the contract's per-row positions under left padding.
        q = g.op("RotaryEmbedding", [q, "position_ids", cos_name, sin_name], domain=MS, interleaved=0, num_heads=nq)[0]
        k = g.op("RotaryEmbedding", [k, "position_ids", cos_name, sin_name], domain=MS, interleaved=0, num_heads=nkv)[0]
        pk, pv = (f"past_key_{i}", f"past_value_{i}") if decode else ("", "")
        attn, _, _ = g.op(
            "GroupQueryAttention",
            [q, k, val, pk, pv, seqlens, total_scalar, "", "", "", bias],
            n_out=3, domain=MS, hint=f"attn{i}",
            num_heads=nq, kv_num_heads=nkv, scale=float(hd**-0.5),
        )
        # Name the presents as the contract says.
        g.nodes[-1].output[1], g.nodes[-1].output[2] = f"present_key_{i}", f"present_value_{i}"
        o = _linear(g, attn, L(i, "self_attn.o_proj.weight"), lambda i=i: get(L(i, "self_attn.o_proj.weight")).T, nq * hd, h, fmt, block, level)
        normed, _, _, x = g.op(
            "SkipSimplifiedLayerNormalization", [o, x, ln(L(i, "post_attention_layernorm.weight"))],
            n_out=4, domain=MS, epsilon=eps,
        )
        gu = _linear(
            g, normed, L(i, "mlp.gate_up_proj.weight"),
            lambda i=i: np.concatenate([get(L(i, "mlp.gate_proj.weight")), get(L(i, "mlp.up_proj.weight"))], axis=0).T,
            h, 2 * inter, fmt, block, level,
        )
        gate, up = g.op("Split", [gu, g.const("split_gu", i64(inter, inter))], n_out=2, axis=-1)
        act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])[0]])[0], up])[0]
        down = _linear(g, act, L(i, "mlp.down_proj.weight"), lambda i=i: get(L(i, "mlp.down_proj.weight")).T, inter, h, fmt, block, level)
        next_ln = L(i + 1, "input_layernorm.weight") if i + 1 < n_layers else "model.norm.weight"
        normed, _, _, x = g.op("SkipSimplifiedLayerNormalization", [down, x, ln(next_ln)], n_out=4, domain=MS, epsilon=eps)
    # Last position only: with left padding column S − 1 is every row's newest token.
    last = g.op("Gather", [normed, g.const("minus_one", np.array(-1, np.int64))], axis=1)[0]  # [B, H]
    head_key = "model.embed_tokens.weight" if cfg["tie_word_embeddings"] else "lm_head.weight"
    if fmt == "fp32":
        head = g.weight(head_key, lambda: get(head_key))
        g.op("Gemm", [last, head], transB=1, hint="lm_head")
    else:
        _linear(g, last, "lm_head.weight", lambda: get(head_key).T, h, v, fmt, block, level)
    g.nodes[-1].output[0] = "logits"
    graph = helper.make_graph(g.nodes, f"acestep_lm_{g.prefix}", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
                              producer_name="acestep-runtime tools.onnx_export.lm_gqa")
    model.ir_version = 9
    return model


def write_lm_graphs(ckpt_dir: Path, out_dir: Path, *, weights: str = "fp32", block_size: int = DEFAULT_BLOCK_SIZE,
                    accuracy_level: int = 4) -> dict[str, str]:
    """Writes `lm_prefill.onnx`, `lm_decode.onnx` and their shared `lm_weights.onnx.data` into `out_dir`
    from an `acestep-5Hz-lm-*` checkpoint directory. `weights`: "fp32" (default) or the weight-only
    "int8" / "int4" profiles, with `block_size` weights per scale and MatMulNBits' `accuracy_level`
    (4: activations quantized to int8 per block for the integer kernels, the fast CPU path; 0: fp32
    activations, the weights dequantized exactly). Returns {"lm_prefill": file, "lm_decode": file}."""
    import onnx

    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"LM weights {weights!r}: expected one of {', '.join(WEIGHT_FORMATS)}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"LM block_size {block_size}: expected a power of two ≥ 16")
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise ValueError(f"LM accuracy_level {accuracy_level}: expected 0..4")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = _LazyCheckpoint(ckpt_dir)
    data = _WeightsFile(out_dir / lm.SHARED_WEIGHTS_FILE)
    try:
        for decode, file in ((False, lm.PREFILL_FILE), (True, lm.DECODE_FILE)):
            model = _build(ckpt.cfg, ckpt, data, decode=decode, fmt=weights, block=block_size, level=accuracy_level)
            onnx.save(model, str(out_dir / file))
    finally:
        data.close()
    return {"lm_prefill": lm.PREFILL_FILE, "lm_decode": lm.DECODE_FILE}
