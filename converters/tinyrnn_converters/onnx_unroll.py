"""Recover RNN cells that an exporter unrolled into per-step ops.

PyTorch's dynamo exporter (torch 2.13) writes ``nn.RNN`` not as an ``RNN`` node but as its
steps, fixed to the example's length::

    P      = MatMul(X_tm, W_ih^T) [+ b_ih]              # (T, B, H): every step's input term
    x_t    = Squeeze(Slice(P, t, t+1, axis 0), 0)       # or Gather(P, t)
    h_0    = act(Add(C, x_0))                           # C: h0 @ W_hh^T + b_hh folded (h0 = 0)
    h_t    = act(Add(Add(MatMul(h_{t-1}, W_hh^T), b_hh), x_t))
    Y      = Concat(h_0, ..., h_{T-1}, axis 0)          # (T, B, H)

``reroll`` finds such chains (forward direction, Tanh or Relu, any operand order of the
Adds) and replaces each with one ``RNN`` node and a Squeeze, so the import streams at any
length and batch size instead of replaying T baked-in steps. A chain whose pieces are read
elsewhere (other than the last step, which becomes ``Y_h``) is left alone.
"""

from __future__ import annotations

import numpy as np


def reroll(model):
    """``model`` with every recognised unrolled RNN replaced by an ``RNN`` node (a copy
    when something is replaced, ``model`` itself otherwise)."""
    import onnx
    from onnx import numpy_helper

    if not any(n.op_type == "Concat" for n in model.graph.node):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    g = copy.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    producer = {o: n for n in g.node for o in n.output if o}
    consumers: dict = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    found = []
    for n in g.node:
        if n.op_type == "Concat" and _attr(n, "axis") == 0 and len(n.input) >= 2:
            chain = _match(n, producer, consumers, consts, outputs)
            if chain is not None:
                found.append(chain)
    if not found:
        return model
    opset = next((o.version for o in copy.opset_import if o.domain in ("", "ai.onnx")), 20)
    for k, chain in enumerate(found):
        _rewrite(g, chain, k, opset, consumers)
    return copy


def _rewrite(g, chain, k, opset, consumers):
    from onnx import helper, numpy_helper

    W, R = chain["W"].astype(np.float32), chain["R"].astype(np.float32)  # (H, I), (H, H)
    H = R.shape[0]
    zeros = np.zeros(H, np.float32)
    b_ih = zeros if chain["b_ih"] is None else chain["b_ih"].reshape(-1).astype(np.float32)
    b_hh = zeros if chain["b_hh"] is None else chain["b_hh"].reshape(-1).astype(np.float32)
    base = f"tinyrnn_rerolled_{k}"
    for name, arr in ((f"{base}_W", W[None]), (f"{base}_R", R[None]), (f"{base}_B", np.concatenate([b_ih, b_hh])[None])):
        g.initializer.append(numpy_helper.from_array(arr, name))
    last = chain["acts"][-1].output[0]
    h_used = any(_key(c) != _key(chain["concat"]) for c in consumers.get(last, [])) or last in {o.name for o in g.output}
    y4, yh = f"{base}_Y", (f"{base}_Y_h" if h_used else "")
    new = [helper.make_node("RNN", [chain["x"], f"{base}_W", f"{base}_R", f"{base}_B"], [y4, yh],
                            name=f"{base}_RNN", hidden_size=H, activations=[chain["act"]])]

    def squeeze(src, dst, axis):
        if opset >= 13:
            g.initializer.append(numpy_helper.from_array(np.array([axis], np.int64), f"{dst}_axes"))
            return helper.make_node("Squeeze", [src, f"{dst}_axes"], [dst], name=f"{dst}_squeeze")
        return helper.make_node("Squeeze", [src], [dst], name=f"{dst}_squeeze", axes=[axis])

    new.append(squeeze(y4, chain["concat"].output[0], 1))  # (T, 1, B, H) -> (T, B, H)
    if h_used:
        if chain["h_rank"] == 3:
            new.append(helper.make_node("Identity", [yh], [last], name=f"{base}_h"))
        else:
            new.append(squeeze(yh, last, 0))
    drop = {_key(n) for n in chain["nodes"]}
    nodes = list(g.node)
    at = min(i for i, n in enumerate(nodes) if _key(n) in drop)
    kept = [n for n in nodes if _key(n) not in drop]
    before = [n for n in nodes[:at] if _key(n) not in drop]
    after = kept[len(before):]
    del g.node[:]
    g.node.extend(before + new + after)


def _key(node) -> tuple:
    """A node's identity: its outputs (protobuf wrappers are not stable objects)."""
    return tuple(node.output)


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _step_index(node, producer, consts):
    """(P, t) if ``node``'s output is step t of P: Squeeze(Slice(P, t, t+1, axis 0)) or
    Gather(P, t, axis 0); None otherwise."""
    if node is None:
        return None
    if node.op_type == "Gather" and _attr(node, "axis", 0) == 0 and node.input[1] in consts:
        idx = consts[node.input[1]]
        if idx.ndim == 0:
            return node.input[0], int(idx), [node]
    if node.op_type != "Squeeze":
        return None
    axes = _attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1] in consts:
        axes = consts[node.input[1]].reshape(-1).tolist()
    if axes != [0]:
        return None
    sl = producer.get(node.input[0])
    if sl is None or sl.op_type != "Slice" or any(i and i not in consts for i in sl.input[1:]):
        return None
    starts, ends = consts[sl.input[1]].reshape(-1), consts[sl.input[2]].reshape(-1)
    axes = consts[sl.input[3]].reshape(-1) if len(sl.input) > 3 and sl.input[3] else np.array([0])
    steps = consts[sl.input[4]].reshape(-1) if len(sl.input) > 4 and sl.input[4] else np.array([1])
    if len(starts) != 1 or axes.tolist() != [0] or steps.tolist() != [1] or ends[0] != starts[0] + 1:
        return None
    return sl.input[0], int(starts[0]), [node, sl]


def _linear(name, producer, consts):
    """(x, Wt, b, nodes) if ``name`` is MatMul(x, Wt) [+ b] with constant Wt (and b)."""
    node = producer.get(name)
    b = None
    nodes = []
    if node is not None and node.op_type == "Add":
        a0, a1 = node.input
        if a1 in consts and producer.get(a0) is not None and producer[a0].op_type == "MatMul":
            b, node, nodes = consts[a1], producer[a0], [node]
        elif a0 in consts and producer.get(a1) is not None and producer[a1].op_type == "MatMul":
            b, node, nodes = consts[a0], producer[a1], [node]
        else:
            return None
    if node is None or node.op_type != "MatMul" or node.input[1] not in consts:
        return None
    return node.input[0], consts[node.input[1]], b, nodes + [node]


def _match(concat, producer, consumers, consts, outputs):
    acts = [producer.get(i) for i in concat.input]
    if any(a is None for a in acts) or len({a.op_type for a in acts}) != 1 or acts[0].op_type not in ("Tanh", "Relu"):
        return None
    nodes = [concat]
    P = R = b_hh = None
    for t, act in enumerate(acts):
        add = producer.get(act.input[0])
        if add is None or add.op_type != "Add":
            return None
        nodes += [act, add]
        step = None
        for k in (0, 1):
            s = _step_index(producer.get(add.input[k]), producer, consts)
            if s is not None:
                step, other = s, add.input[1 - k]
                break
        if step is None or step[1] != t or (P is not None and step[0] != P):
            return None
        P = step[0]
        nodes += step[2]
        if t == 0:
            if other not in consts:
                return None
            c0 = consts[other]
            continue
        lin = _linear(other, producer, consts)
        if lin is None or lin[0] != acts[t - 1].output[0]:
            return None
        if R is None:
            R, b_hh = lin[1], lin[2]
        elif not (np.array_equal(R, lin[1]) and (b_hh is None) == (lin[2] is None)
                  and (b_hh is None or np.array_equal(b_hh, lin[2]))):
            return None
        nodes += lin[3]
    if R is None:
        return None  # one step: nothing says what the recurrent weights are
    H = R.shape[-1]
    # the folded first step must be h0 = 0: C equals b_hh (or 0) broadcast
    want = np.zeros(H, np.float32) if b_hh is None else b_hh.reshape(-1)
    if c0.shape[-1] != H or not np.allclose(c0.reshape(-1, H), want[None], atol=0):
        return None
    lin = _linear(P, producer, consts)
    if lin is None:
        return None
    x_tm, Wt, b_ih, p_nodes = lin
    # every intermediate value must be private to the chain (the last step may be h_n)
    inside = {_key(n) for n in nodes + p_nodes}
    for n in nodes + p_nodes:
        for o in n.output:
            if _key(n) in (_key(concat), _key(acts[-1])):
                continue
            if o in outputs or any(_key(c) not in inside for c in consumers.get(o, [])):
                return None
    return {"concat": concat, "acts": acts, "nodes": nodes + p_nodes, "x": x_tm, "W": Wt.T, "R": R.T,
            "b_ih": b_ih, "b_hh": b_hh, "act": acts[0].op_type, "h_rank": c0.ndim}
