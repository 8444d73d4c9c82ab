"""A slow numpy reference for every layer, written from the ONNX operator pages.

It deliberately shares no code with tinyrnn: it takes weights in ONNX's own layout
(``W (D, G*H, I)``, ``R (D, G*H, H)``, ``B (D, 2*G*H)``, ``P (D, 3*H)``), works in float64,
loops over time in Python and uses ONNX's time-major shapes (``X (T, B, I)``, ``Y (T, D,
B, H)``). Sequence lengths follow onnxruntime: steps at or past a sequence's length leave
its state alone and output zeros; the reverse direction starts at ``length - 1``.
"""

from __future__ import annotations

import numpy as np


def activation(name: str, alpha: float = 0.0, beta: float = 0.0):
    """The ONNX activation ``name`` as a float64 numpy function."""
    return {
        "relu": lambda x: np.maximum(x, 0.0),
        "tanh": np.tanh,
        "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
        "affine": lambda x: alpha * x + beta,
        "leakyrelu": lambda x: np.where(x >= 0, x, alpha * x),
        "thresholdedrelu": lambda x: np.where(x >= alpha, x, 0.0),
        "scaledtanh": lambda x: alpha * np.tanh(beta * x),
        "hardsigmoid": lambda x: np.clip(alpha * x + beta, 0.0, 1.0),
        "elu": lambda x: np.where(x >= 0, x, alpha * (np.exp(np.minimum(x, 0)) - 1.0)),
        "softsign": lambda x: x / (1.0 + np.abs(x)),
        "softplus": lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0),
        "identity": lambda x: x,
        "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0))),
        "silu": lambda x: x / (1.0 + np.exp(-x)),
        "exp": np.exp,
        "abs": np.abs,
        "neg": lambda x: -x,
        "square": lambda x: x * x,
    }[name]


def _erf(x):
    from math import erf

    return np.vectorize(erf)(x)


def _clip(x, clip):
    return x if clip is None else np.clip(x, -clip, clip)


def _acts(activations, defaults, d):
    """Direction d's activation functions from ``[name, alpha, beta]`` triples.

    ``activations`` lists one triple per activation, or (as ONNX allows for bidirectional
    layers) the forward direction's followed by the reverse's; None means the defaults.
    """
    n = len(defaults)
    triples = activations or [[a, None, None] for a in defaults]
    if len(triples) == 2 * n:
        triples = triples[n * d:n * (d + 1)]
    out = []
    for name, alpha, beta in triples:
        da, db = {"leakyrelu": (0.01, 0), "thresholdedrelu": (1.0, 0), "scaledtanh": (1.0, 1.0),
                  "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0), "affine": (1.0, 0.0)}.get(name, (0, 0))
        out.append(activation(name, da if alpha is None else alpha, db if beta is None else beta))
    return out


def _directions(direction):
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]


def _scan(X, seq_lens, reverse, state, step):
    """Run ``step(x_t, state) -> (h_out, state)`` over time, honouring lengths.

    X: (T, B, I). Returns outputs (T, B, Hout) and the final state tuple.
    """
    T, B, _ = X.shape
    lens = np.full(B, T) if seq_lens is None else np.asarray(seq_lens)
    outs = None
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        active = (t < lens)[:, None]  # (B, 1)
        h_out, new = step(X[t], state)
        if outs is None:
            outs = np.zeros((T, B, h_out.shape[1]))
        outs[t] = np.where(active, h_out, 0.0)
        state = tuple(np.where(active, n, s) for n, s in zip(new, state))
    return outs, state


def rnn(X, W, R, B=None, initial_h=None, seq_lens=None, direction="forward", activations=None, clip=None):
    """ONNX RNN. Returns ``Y (T, D, B, H)`` and ``Y_h (D, B, H)``."""
    X, W, R = (np.asarray(a, np.float64) for a in (X, W, R))
    D, H = W.shape[0], R.shape[-1]
    Bsz = X.shape[1]
    Bias = np.zeros((D, 2 * H)) if B is None else np.asarray(B, np.float64)
    h0 = np.zeros((D, Bsz, H)) if initial_h is None else np.asarray(initial_h, np.float64)
    Ys, Hs = [], []
    for d, reverse in enumerate(_directions(direction)):
        (f,) = _acts(activations, ["tanh"], d)
        Wb, Rb = Bias[d, :H], Bias[d, H:]

        def step(x, st, d=d, f=f, Wb=Wb, Rb=Rb):
            (h,) = st
            h = f(_clip(x @ W[d].T + h @ R[d].T + Wb + Rb, clip))
            return h, (h,)

        y, (h,) = _scan(X, seq_lens, reverse, (h0[d],), step)
        Ys.append(y)
        Hs.append(h)
    return np.stack(Ys, 1), np.stack(Hs, 0)


def lstm(X, W, R, B=None, P=None, initial_h=None, initial_c=None, seq_lens=None, direction="forward",
         activations=None, clip=None, input_forget=False, proj=None):
    """ONNX LSTM (gates i, o, f, c), plus PyTorch's projection ``proj (D, P, H)``.

    Returns ``Y (T, D, B, Hr)``, ``Y_h (D, B, Hr)``, ``Y_c (D, B, H)``.
    """
    X, W, R = (np.asarray(a, np.float64) for a in (X, W, R))
    D, H = W.shape[0], W.shape[1] // 4
    Hr = R.shape[-1]
    Bsz = X.shape[1]
    Bias = np.zeros((D, 8 * H)) if B is None else np.asarray(B, np.float64)
    Pp = np.zeros((D, 3 * H)) if P is None else np.asarray(P, np.float64)
    h0 = np.zeros((D, Bsz, Hr)) if initial_h is None else np.asarray(initial_h, np.float64)
    c0 = np.zeros((D, Bsz, H)) if initial_c is None else np.asarray(initial_c, np.float64)
    Ys, Hs, Cs = [], [], []
    for d, reverse in enumerate(_directions(direction)):
        f, g, hf = _acts(activations, ["sigmoid", "tanh", "tanh"], d)
        Wb, Rb = Bias[d, :4 * H], Bias[d, 4 * H:]
        p_i, p_o, p_f = np.split(Pp[d], 3)

        def step(x, st, d=d, f=f, g=g, hf=hf, Wb=Wb, Rb=Rb, p_i=p_i, p_o=p_o, p_f=p_f):
            h, c = st
            gates = x @ W[d].T + h @ R[d].T + Wb + Rb
            gi, go, gf, gc = np.split(gates, 4, axis=-1)
            i = f(_clip(gi + p_i * c, clip))
            fg = 1.0 - i if input_forget else f(_clip(gf + p_f * c, clip))
            c_new = fg * c + i * g(_clip(gc, clip))
            o = f(_clip(go + p_o * c_new, clip))
            h_new = o * hf(c_new)
            if proj is not None:
                h_new = h_new @ np.asarray(proj[d], np.float64).T
            return h_new, (h_new, c_new)

        y, (h, c) = _scan(X, seq_lens, reverse, (h0[d], c0[d]), step)
        Ys.append(y)
        Hs.append(h)
        Cs.append(c)
    return np.stack(Ys, 1), np.stack(Hs, 0), np.stack(Cs, 0)


def gru(X, W, R, B=None, initial_h=None, seq_lens=None, direction="forward", activations=None, clip=None,
        linear_before_reset=False):
    """ONNX GRU (gates z, r, h). Returns ``Y (T, D, B, H)`` and ``Y_h (D, B, H)``."""
    X, W, R = (np.asarray(a, np.float64) for a in (X, W, R))
    D, H = W.shape[0], W.shape[1] // 3
    Bsz = X.shape[1]
    Bias = np.zeros((D, 6 * H)) if B is None else np.asarray(B, np.float64)
    h0 = np.zeros((D, Bsz, H)) if initial_h is None else np.asarray(initial_h, np.float64)
    Ys, Hs = [], []
    for d, reverse in enumerate(_directions(direction)):
        f, g = _acts(activations, ["sigmoid", "tanh"], d)
        Wz, Wr, Wh = np.split(W[d], 3)
        Rz, Rr, Rh = np.split(R[d], 3)
        Wbz, Wbr, Wbh, Rbz, Rbr, Rbh = np.split(Bias[d], 6)

        def step(x, st, f=f, g=g, Wz=Wz, Wr=Wr, Wh=Wh, Rz=Rz, Rr=Rr, Rh=Rh, Wbz=Wbz, Wbr=Wbr, Wbh=Wbh,
                 Rbz=Rbz, Rbr=Rbr, Rbh=Rbh):
            (h,) = st
            z = f(_clip(x @ Wz.T + h @ Rz.T + Wbz + Rbz, clip))
            r = f(_clip(x @ Wr.T + h @ Rr.T + Wbr + Rbr, clip))
            if linear_before_reset:
                n = g(_clip(x @ Wh.T + r * (h @ Rh.T + Rbh) + Wbh, clip))
            else:
                n = g(_clip(x @ Wh.T + (r * h) @ Rh.T + Rbh + Wbh, clip))
            h_new = (1.0 - z) * n + z * h
            return h_new, (h_new,)

        y, (h,) = _scan(X, seq_lens, reverse, (h0[d],), step)
        Ys.append(y)
        Hs.append(h)
    return np.stack(Ys, 1), np.stack(Hs, 0)


# --- feed-forward layers -----------------------------------------------------------------


def dense(x, W_torch, b):
    """PyTorch Linear: ``x @ W.T + b`` with ``W (out, in)``."""
    return np.asarray(x, np.float64) @ np.asarray(W_torch, np.float64).T + b


def embedding(ids, table):
    return np.asarray(table, np.float64)[np.asarray(ids)]


def softmax(x, log=False):
    x = np.asarray(x, np.float64)
    z = x - x.max(-1, keepdims=True)
    lse = np.log(np.exp(z).sum(-1, keepdims=True))
    return z - lse if log else np.exp(z - lse)
