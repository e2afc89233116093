"""ai.acestep.Snake: the exporter's rewrite (tools/onnx_export/snake_op.py) and the core library's ONNX
Runtime kernel (runtime_rust_dll/src/ffi/ort_ops.rs) against the five-op form and a float64 reference."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.inliner
import pytest
from onnx import TensorProto, helper, numpy_helper

from tools.onnx_export import snake_op

ort = pytest.importorskip("onnxruntime")

CHANNELS = 5


def _five_op_snake_graph(scale, c, *, reuse_cosine: bool = False):
    """FoldedSnake as torch exports it: y = (x + c) − c·cos(scale·x); with ``reuse_cosine`` the cosine
    is also a graph output, so the group must not be fused."""
    nodes = [
        helper.make_node("Add", ["x", "c"], ["shifted"]),
        helper.make_node("Mul", ["scale", "x"], ["phase"]),
        helper.make_node("Cos", ["phase"], ["cosine"]),
        helper.make_node("Mul", ["c", "cosine"], ["ripple"]),
        helper.make_node("Sub", ["shifted", "ripple"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", CHANNELS, "l"])]
    if reuse_cosine:
        outputs.append(helper.make_tensor_value_info("cosine", TensorProto.FLOAT, ["b", CHANNELS, "l"]))
    graph = helper.make_graph(
        nodes, "snake", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", CHANNELS, "l"])], outputs,
        [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(c, "c")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _params(seed=0):
    rng = np.random.default_rng(seed)
    scale = (2.0 * np.exp(rng.normal(0, 1, (1, CHANNELS, 1)))).astype(np.float32)
    c = (0.5 / (np.exp(rng.normal(0, 1, (1, CHANNELS, 1))) + 1e-9)).astype(np.float32)
    return scale, c


def _session(model, fused_ops: bool, profile_dir=None):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    if fused_ops:
        from acestep_runtime.ort_ops import ops_library_path

        opts.register_custom_ops_library(str(ops_library_path()))
    if profile_dir is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_dir / "snake")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _kernel_ops(sess) -> set[str]:
    events = json.loads(open(sess.end_profiling()).read())
    return {e["args"]["op_name"] for e in events if e.get("cat") == "Node" and "op_name" in e.get("args", {})}


def test_fusing_turns_the_five_nodes_into_one_function_call():
    scale, c = _params()
    model = _five_op_snake_graph(scale, c)
    assert snake_op.fuse_snakes(model) == 1
    assert [(n.domain, n.op_type, list(n.input)) for n in model.graph.node] == [
        ("ai.acestep", "Snake", ["x", "scale", "c"])]
    onnx.checker.check_model(model, full_check=True)
    assert snake_op.fuse_snakes(model) == 0, "a second pass must find nothing"


def test_a_group_whose_intermediate_is_used_elsewhere_is_left_alone():
    scale, c = _params()
    model = _five_op_snake_graph(scale, c, reuse_cosine=True)
    assert snake_op.fuse_snakes(model) == 0
    assert len(model.graph.node) == 5 and not model.functions


def test_the_function_inlined_is_the_unfused_graph_bit_for_bit():
    scale, c = _params(1)
    plain = _five_op_snake_graph(scale, c)
    fused = _five_op_snake_graph(scale, c)
    snake_op.fuse_snakes(fused)
    x = np.random.default_rng(2).normal(0, 3, (2, CHANNELS, 999)).astype(np.float32)
    (want,) = _session(plain, False).run(None, {"x": x})
    (got,) = _session(fused, False).run(None, {"x": x})
    (inlined,) = _session(onnx.inliner.inline_local_functions(fused), False).run(None, {"x": x})
    assert np.array_equal(got, want) and np.array_equal(inlined, want)


@pytest.mark.parametrize("length", [1, 7, 4099])
def test_the_core_kernel_runs_and_matches_float64(tmp_path, length):
    scale, c = _params(3)
    model = _five_op_snake_graph(scale, c)
    snake_op.fuse_snakes(model)
    x = np.random.default_rng(length).normal(0, 4, (3, CHANNELS, length)).astype(np.float32)
    x[0, 0, 0] = 5e4 / scale[0, 0, 0]  # past the kernel's fast range reduction: the libm path
    fused = _session(model, True, tmp_path)
    (got,) = fused.run(None, {"x": x})
    assert _kernel_ops(fused) == {"Snake"}, "ORT inlined the function instead of running the registered kernel"
    plain = _session(model, False, tmp_path)
    (body,) = plain.run(None, {"x": x})
    assert "Cos" in _kernel_ops(plain)
    xd = x.astype(np.float64)
    ref = (xd + c) - c * np.cos(scale.astype(np.float64) * xd)
    bound = 4 * np.finfo(np.float32).eps * (np.abs(ref) + c + np.abs(xd))
    assert (np.abs(got - ref) <= bound).all(), float(np.abs(got - ref).max())
    assert np.abs(got - body).max() <= 1e-5


def test_the_kernel_names_a_parameter_of_the_wrong_size():
    scale, c = _params()
    model = _five_op_snake_graph(scale, c)
    snake_op.fuse_snakes(model)
    short = [t for t in model.graph.initializer if t.name == "c"][0]
    short.CopyFrom(numpy_helper.from_array(c[:, :3], "c"))
    x = np.ones((1, CHANNELS, 8), dtype=np.float32)
    with pytest.raises(Exception, match=r"ai\.acestep\.Snake: x has 5 channels .* half_inv_beta \[1, 3, 1\]"):
        _session(model, True).run(None, {"x": x})


def test_the_core_library_exports_the_ort_entry_point():
    from acestep_runtime.ort_ops import ops_library_path

    opts = ort.SessionOptions()
    opts.register_custom_ops_library(str(ops_library_path()))  # raises if ORT cannot find RegisterCustomOps
