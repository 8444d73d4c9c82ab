"""Recover RNN cells that an exporter unrolled into per-step ops.

PyTorch's dynamo exporter (torch 2.13) writes ``nn.RNN`` not as an ``RNN`` node but as its
steps, fixed to the example's length::

    P      = MatMul(X_tm, W_ih^T) [+ b_ih]              # (T, B, H): every step's input term
    x_t    = Squeeze(Slice(P, t, t+1, axis 0), 0)       # or Gather(P, t)
    h_0    = act(Add(C, x_0))                           # C: h0 @ W_hh^T + b_hh folded (h0 = 0)
    h_t    = act(Add(Add(MatMul(h_{t-1}, W_hh^T), b_hh), x_t))
    Y      = Concat(h_0, ..., h_{T-1}, axis 0)          # (T, B, H)

``reroll`` finds such chains (Tanh or Relu, any operand order of the Adds) and replaces
each with one ``RNN`` node and a Squeeze, so the import streams at any length and batch
size instead of replaying T baked-in steps. A bidirectional layer is a forward chain and a
reverse one (run over ``flip(P)``, concatenated last step first) joined by a Concat along
the features: the pair becomes one bidirectional ``RNN`` node. A chain whose pieces are
read elsewhere (other than the last step, which becomes ``Y_h``) is left alone.
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
    found = {}
    for n in g.node:
        if n.op_type == "Concat" and _attr(n, "axis") == 0 and len(n.input) >= 2:
            chain = (_match(n, producer, consumers, consts, outputs)
                     or _match(n, producer, consumers, consts, outputs, reverse=True))
            if chain is not None:
                found[n.output[0]] = chain
    if not found:
        return model
    # a bidirectional layer: Concat(forward Y, reverse Y) along the features
    groups, used = [], set()
    for n in g.node:
        if (n.op_type == "Concat" and _attr(n, "axis") in (2, -1) and len(n.input) == 2
                and all(i in found for i in n.input)):
            f, r = found[n.input[0]], found[n.input[1]]
            private = all(len(consumers.get(i, [])) == 1 and i not in outputs for i in n.input)
            if (f["direction"], r["direction"]) == ("forward", "reverse") and f["x"] == r["x"] and private \
                    and f["R"].shape == r["R"].shape and f["act"] == r["act"] \
                    and not _h_used(f, consumers, outputs) and not _h_used(r, consumers, outputs):
                groups.append(([f, r], n))
                used.update(n.input)
    groups += [([c], None) for name, c in found.items() if name not in used and c["direction"] == "forward"]
    if not groups:
        return model
    opset = next((o.version for o in copy.opset_import if o.domain in ("", "ai.onnx")), 20)
    for k, (chains, cat) in enumerate(groups):
        _rewrite(g, chains, cat, k, opset, consumers, outputs)
    return copy


def _h_used(chain, consumers, outputs) -> bool:
    """True if the chain's last step (its final hidden state) is read outside the chain."""
    last = chain["acts"][-1].output[0]
    return any(_key(c) != _key(chain["concat"]) for c in consumers.get(last, [])) or last in outputs


def _rewrite(g, chains, cat, k, opset, consumers, outputs):
    """Replace ``chains`` (one forward chain, or forward + reverse joined by ``cat``) with
    one RNN node whose outputs take the names the chain's outputs had."""
    from onnx import helper, numpy_helper

    def bias(b, H):
        return np.zeros(H, np.float32) if b is None else b.reshape(-1).astype(np.float32)

    H = chains[0]["R"].shape[0]
    W = np.stack([c["W"].astype(np.float32) for c in chains])  # (D, H, I)
    R = np.stack([c["R"].astype(np.float32) for c in chains])  # (D, H, H)
    B = np.stack([np.concatenate([bias(c["b_ih"], H), bias(c["b_hh"], H)]) for c in chains])  # (D, 2H)
    base = f"tinyrnn_rerolled_{k}"
    for name, arr in ((f"{base}_W", W), (f"{base}_R", R), (f"{base}_B", B)):
        g.initializer.append(numpy_helper.from_array(arr, name))
    chain = chains[0]
    last = chain["acts"][-1].output[0]
    h_used = cat is None and _h_used(chain, consumers, outputs)
    y4, yh = f"{base}_Y", (f"{base}_Y_h" if h_used else "")
    direction = "bidirectional" if len(chains) == 2 else "forward"
    new = [helper.make_node("RNN", [chain["x"], f"{base}_W", f"{base}_R", f"{base}_B"], [y4, yh],
                            name=f"{base}_RNN", hidden_size=H, activations=[chain["act"]] * len(chains),
                            direction=direction)]

    def const(name, values):
        g.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    def squeeze(src, dst, axis):
        if opset >= 13:
            return helper.make_node("Squeeze", [src, const(f"{dst}_axes", [axis])], [dst], name=f"{dst}_squeeze")
        return helper.make_node("Squeeze", [src], [dst], name=f"{dst}_squeeze", axes=[axis])

    if cat is None:
        new.append(squeeze(y4, chain["concat"].output[0], 1))  # (T, 1, B, H) -> (T, B, H)
    else:  # (T, 2, B, H) -> (T, B, 2, H) -> (T, B, 2H), forward features first as Concat had them
        new.append(helper.make_node("Transpose", [y4], [f"{base}_YT"], perm=[0, 2, 1, 3], name=f"{base}_T"))
        new.append(helper.make_node("Reshape", [f"{base}_YT", const(f"{base}_shape", [0, 0, -1])],
                                    [cat.output[0]], name=f"{base}_reshape"))
    if h_used:
        if chain["h_rank"] == 3:
            new.append(helper.make_node("Identity", [yh], [last], name=f"{base}_h"))
        else:
            new.append(squeeze(yh, last, 0))
    drop = {_key(n) for c in chains for n in c["nodes"]}
    if cat is not None:
        drop.add(_key(cat))
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


def _is_zero(name, producer, consts, depth=0) -> bool:
    """True if ``name`` is all zeros: a zero constant, ConstantOfShape(0) or Expand of 0,
    possibly through Slice/Squeeze/Unsqueeze/Reshape/Identity."""
    if name in consts:
        return not np.any(consts[name])
    node = producer.get(name)
    if node is None or depth > 8:
        return False
    if node.op_type == "ConstantOfShape":
        v = _attr(node, "value")
        from onnx import numpy_helper

        return v is None or not np.any(numpy_helper.to_array(v))
    if node.op_type == "Expand":
        return _is_zero(node.input[0], producer, consts, depth + 1)
    if node.op_type in ("Slice", "Squeeze", "Unsqueeze", "Reshape", "Identity", "Cast"):
        return _is_zero(node.input[0], producer, consts, depth + 1)
    return False


def _is_flip(node, consts) -> bool:
    """Slice(P, -1, -inf, axis 0, step -1): P reversed in time."""
    if node.op_type != "Slice" or len(node.input) < 5 or any(i not in consts for i in node.input[1:5]):
        return False
    st, en, ax, sp = (consts[i].reshape(-1).tolist() for i in node.input[1:5])
    return st == [-1] and len(en) == 1 and en[0] <= -(2 ** 31) and ax == [0] and sp == [-1]


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


def _match(concat, producer, consumers, consts, outputs, reverse=False):
    """The chain ending in ``concat``, or None. ``reverse``: the reverse direction, which
    the exporter runs forward over ``flip(P)`` and concatenates last step first."""
    acts = [producer.get(i) for i in concat.input]
    if any(a is None for a in acts) or len({a.op_type for a in acts}) != 1 or acts[0].op_type not in ("Tanh", "Relu"):
        return None
    if reverse:
        acts = acts[::-1]
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
        lin = None if other in consts else _linear(other, producer, consts)
        if t == 0:
            if other in consts:
                c0 = consts[other]
                h_rank = c0.ndim
                continue
            # the first step kept its product with a zero h0: MatMul(zeros, R) [+ b_hh]
            if lin is None or not _is_zero(lin[0], producer, consts):
                return None
            src = producer.get(lin[0])
            h_rank = 3 if src is not None and src.op_type == "Unsqueeze" else 2
            c0 = None
        elif lin is None or lin[0] != acts[t - 1].output[0]:
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
    if c0 is not None and (c0.shape[-1] != H or not np.allclose(c0.reshape(-1, H), want[None], atol=0)):
        return None
    flip = []
    if reverse:
        fl = producer.get(P)
        if fl is None or not _is_flip(fl, consts):
            return None
        P, flip = fl.input[0], [fl]
    lin = _linear(P, producer, consts)
    if lin is None:
        return None
    x_tm, Wt, b_ih, p_nodes = lin
    p_nodes = p_nodes + flip
    # every intermediate value must be private to the chain (the last step may be h_n)
    inside = {_key(n) for n in nodes + p_nodes}
    for n in nodes + p_nodes:
        for o in n.output:
            if _key(n) in (_key(concat), _key(acts[-1])):
                continue
            if o in outputs or any(_key(c) not in inside for c in consumers.get(o, [])):
                return None
    return {"concat": concat, "acts": acts, "nodes": nodes + p_nodes, "x": x_tm, "W": Wt.T, "R": R.T,
            "b_ih": b_ih, "b_hh": b_hh, "act": acts[0].op_type, "h_rank": h_rank,
            "direction": "reverse" if reverse else "forward"}
