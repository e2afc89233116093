"""The VAE's Snake activations as one node each: `ai.acestep.Snake`, a model-local ONNX function.

torch exports FoldedSnake (`(x + c) − c·cos(a·x)`, see vae.py) as five nodes — Mul, Cos, Mul, Add, Sub —
which ONNX Runtime runs as five passes over the tensor. `fuse_snakes` replaces each such group by one
`ai.acestep.Snake(x, scale, half_inv_beta)` node and adds the function whose body is those same five
nodes. A runtime that knows nothing of the domain inlines the function and computes exactly what the
unfused graph did; a host that registers the core library's custom ops with ONNX Runtime
(`RegisterCustomOps`, runtime_rust_dll/src/ffi/ort_ops.rs) gets one fused kernel per Snake instead.
"""

from __future__ import annotations

from pathlib import Path

DOMAIN = "ai.acestep"
OP = "Snake"
INPUTS = ("x", "scale", "half_inv_beta")


def snake_function(opset: int):
    """The FunctionProto of `ai.acestep.Snake`: y = (x + half_inv_beta) − half_inv_beta·cos(scale·x),
    in the operand order torch exports, so that inlining it reproduces the unfused graph's nodes."""
    from onnx import helper

    body = [
        helper.make_node("Add", ["x", "half_inv_beta"], ["shifted"]),
        helper.make_node("Mul", ["scale", "x"], ["phase"]),
        helper.make_node("Cos", ["phase"], ["cosine"]),
        helper.make_node("Mul", ["half_inv_beta", "cosine"], ["ripple"]),
        helper.make_node("Sub", ["shifted", "ripple"], ["y"]),
    ]
    return helper.make_function(DOMAIN, OP, list(INPUTS), ["y"], body, [helper.make_opsetid("", opset)])


def _default_opset(model) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ValueError("the graph imports no default ONNX opset")


def fuse_snakes(model) -> int:
    """Rewrites `model` (an onnx.ModelProto) in place; returns how many Snakes were fused.

    A group is fused only when it is exactly FoldedSnake's: `Sub(Add(x, c), Mul(c, Cos(Mul(a, x))))`
    (either operand order of the commutative ops) with `a` and `c` initializers and every intermediate
    used by that group alone.
    """
    from onnx import helper

    graph = model.graph
    constants = {t.name for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    for out in graph.output:
        uses[out.name] = uses.get(out.name, 0) + 1

    def made_by(name: str, op_type: str):
        node = producer.get(name)
        return node if node is not None and node.op_type == op_type and uses.get(name) == 1 else None

    def split(node, const_names):
        """(constant operand, other operand) of a binary node, or None."""
        a, b = node.input
        if a in const_names and b not in const_names:
            return a, b
        if b in const_names and a not in const_names:
            return b, a
        return None

    replaced: dict[int, object] = {}  # id(Sub node) -> Snake node
    removed: set[int] = set()
    for sub in graph.node:
        if sub.op_type != "Sub" or len(sub.input) != 2:
            continue
        add, ripple = made_by(sub.input[0], "Add"), made_by(sub.input[1], "Mul")
        if add is None or ripple is None:
            continue
        add_parts, ripple_parts = split(add, constants), split(ripple, constants)
        if add_parts is None or ripple_parts is None:
            continue
        (c, x), (c2, cosine_name) = add_parts, ripple_parts
        cosine = made_by(cosine_name, "Cos")
        if c2 != c or cosine is None:
            continue
        phase = made_by(cosine.input[0], "Mul")
        phase_parts = split(phase, constants) if phase is not None else None
        if phase_parts is None or phase_parts[1] != x:
            continue
        scale = phase_parts[0]
        name = sub.name or sub.output[0]
        replaced[id(sub)] = helper.make_node(OP, [x, scale, c], [sub.output[0]], name=f"{name}/snake", domain=DOMAIN)
        removed.update(id(n) for n in (add, ripple, cosine, phase))
    if not replaced:
        return 0
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in removed]
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(f.domain == DOMAIN and f.name == OP for f in model.functions):
        model.functions.append(snake_function(_default_opset(model)))
    if not any(entry.domain == DOMAIN for entry in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return len(replaced)


def fuse_snakes_in_file(path: Path) -> int:
    """`fuse_snakes` on a saved graph, rewritten in place; its external weight file is left as it is."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    count = fuse_snakes(model)
    if count:
        tmp = path.with_name(path.name + ".tmp")
        onnx.save(model, str(tmp))
        tmp.replace(path)
    return count


def count_snake_nodes(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(1 for n in model.graph.node if n.domain == DOMAIN and n.op_type == OP)
