"""from_torch and load_checkpoint against PyTorch itself (float32, within 1e-4)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from tinyrnn.errors import ModelFormatError, UnsupportedModelError  # noqa: E402
from tinyrnn.cli import main  # noqa: E402
from tinyrnn_converters import from_torch, load_checkpoint  # noqa: E402
from tinyrnn_converters.torch import reorder_gates  # noqa: E402

TOL = 1e-4


def _configs():
    rng = np.random.default_rng(7)
    out = []
    for i in range(14):
        kind = ["lstm", "gru", "rnn"][i % 3]
        cfg = dict(kind=kind, input_size=int(rng.integers(1, 5)), hidden_size=int(rng.integers(1, 6)),
                   num_layers=int(rng.integers(1, 3)), bidirectional=bool(rng.random() < 0.4),
                   batch_first=bool(rng.random() < 0.5), bias=bool(rng.random() < 0.8))
        if kind == "rnn":
            cfg["nonlinearity"] = ["tanh", "relu"][int(rng.integers(0, 2))]
        if kind == "lstm" and cfg["hidden_size"] > 1 and rng.random() < 0.5:
            cfg["proj_size"] = int(rng.integers(1, cfg["hidden_size"]))
        out.append(cfg)
    return out


def _make(cfg, seed=0):
    torch.manual_seed(seed)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cfg["kind"]]
    return cls(**{k: v for k, v in cfg.items() if k != "kind"}).eval()


@pytest.mark.parametrize("cfg", _configs(), ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_recurrent_module_matches_torch(cfg, rng):
    mod = _make(cfg)
    m = from_torch(mod)
    B, T = 3, 6
    x = rng.normal(0, 1, (B, T, cfg["input_size"])).astype(np.float32)
    xt = torch.from_numpy(x if cfg["batch_first"] else np.ascontiguousarray(x.transpose(1, 0, 2)))
    with torch.no_grad():
        y, state = mod(xt)
    y = y.numpy() if cfg["batch_first"] else y.numpy().transpose(1, 0, 2)
    got, final = m.run(x, return_state=True)
    np.testing.assert_allclose(got, y, atol=TOL)
    # the final state of every torch layer and direction: h_n (L*D, B, Hr)
    h_n = state[0] if cfg["kind"] == "lstm" else state
    D = 2 if cfg["bidirectional"] else 1
    for k, layer in enumerate(m.recurrent_layers):
        np.testing.assert_allclose(final[f"{layer.name}.h"], h_n[k * D:(k + 1) * D].numpy().transpose(1, 0, 2),
                                   atol=TOL)
        if cfg["kind"] == "lstm":
            np.testing.assert_allclose(final[f"{layer.name}.c"],
                                       state[1][k * D:(k + 1) * D].numpy().transpose(1, 0, 2), atol=TOL)
    if not cfg["bidirectional"]:
        s = m.stream(batch=B)
        np.testing.assert_allclose(np.stack([s.step(x[:, t]) for t in range(T)], axis=1), y, atol=TOL)


def test_gate_reorder():
    w = np.arange(8).reshape(4, 2)  # PyTorch LSTM blocks i, f, g, o (2 rows... 1 row each here)
    assert reorder_gates(w, "lstm")[:, 0].tolist() == [0, 6, 2, 4]  # ONNX i, o, f, c
    assert reorder_gates(np.arange(3)[:, None], "gru")[:, 0].tolist() == [1, 0, 2]  # z, r, n


class CharNet(nn.Module):
    """Registered in an order unlike its dataflow: the trace, not the registry, decides."""

    def __init__(self, bidirectional=False):
        super().__init__()
        self.out = nn.Linear(6, 5)
        self.mid = nn.Linear(8 if bidirectional else 4, 6)
        self.rnn = nn.GRU(3, 4, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.emb = nn.Embedding(10, 3)
        self.drop = nn.Dropout(0.3)

    def forward(self, ids):
        h, _ = self.rnn(self.drop(self.emb(ids)))
        return torch.softmax(self.out(torch.relu(self.mid(h))), dim=-1)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_model_around_recurrent_layers(bidirectional):
    torch.manual_seed(3)
    net = CharNet(bidirectional).eval()
    m = from_torch(net)  # no example: made up from the embedding the input reaches
    assert [layer.type for layer in m.layers] == ["embedding", "gru", "gru", "dense", "activation", "dense",
                                                  "softmax"]
    assert m.metadata["converter"].endswith("(torch, torch.fx)") and "CharNet" in m.metadata["source"]
    ids = torch.randint(0, 10, (2, 9))
    with torch.no_grad():
        want = net(ids).numpy()
    np.testing.assert_allclose(m.run(ids.numpy()), want, atol=TOL)


def test_model_fx_cannot_map_goes_through_the_onnx_trace():
    """``view`` with sizes read from the tensor: fx records it, the ONNX trace folds it."""
    torch.manual_seed(9)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(3, 4, batch_first=True, bidirectional=True)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            y, _ = self.gru(x)
            y = y.view(y.shape[0], y.shape[1], 2, 4).flatten(2)
            return self.head(y)

    net = Net().eval()
    m = from_torch(net, example_input=torch.randn(2, 5, 3))
    assert m.metadata["converter"].endswith("(torch, traced)")
    x = np.random.default_rng(1).normal(0, 1, (3, 8, 3)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(m.run(x), net(torch.from_numpy(x)).numpy(), atol=TOL)


def test_time_major_model_with_example():
    torch.manual_seed(4)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 5, proj_size=3)
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            y, _ = self.lstm(x)
            return torch.tanh(self.head(y)) * 2.0 + 1.0

    net = Net().eval()
    m = from_torch(net, example_input=torch.randn(6, 2, 4))
    x = np.random.default_rng(5).normal(0, 1, (7, 3, 4)).astype(np.float32)  # (T, B, F)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(m.run(x.transpose(1, 0, 2)), want.transpose(1, 0, 2), atol=TOL)


def test_forward_taking_state_streams_with_it():
    """forward(x, (h0, c0)) -> (y, (h, c)): the state inputs and outputs become the stream's."""
    torch.manual_seed(10)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True)
            self.head = nn.Linear(4, 2)

        def forward(self, x, h0, c0):
            y, (h, c) = self.lstm(x, (h0, c0))
            return self.head(y), h, c

    net = Net().eval()
    m = from_torch(net, example_input=(torch.randn(2, 3, 3), torch.randn(2, 2, 4), torch.randn(2, 2, 4)))
    assert {pair[0] for pair in m.metadata["onnx"]["state_pairs"]} == {"state1", "state2"}
    rng = np.random.default_rng(6)
    s = m.stream(batch=2)
    h = c = torch.zeros(2, 2, 4)
    for _ in range(4):
        x = torch.from_numpy(rng.normal(0, 1, (2, 1, 3)).astype(np.float32))
        with torch.no_grad():
            y, h, c = net(x, h, c)
        np.testing.assert_allclose(s.step(x[:, 0].numpy()), y[:, 0].numpy(), atol=TOL)


def test_unsupported_op_is_named():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.RNN(2, 3, batch_first=True)

        def forward(self, x):
            y, _ = self.rnn(x)
            return torch.cumsum(y, dim=1)

    with pytest.raises(UnsupportedModelError, match="CumSum"):
        from_torch(Net().eval())
    with pytest.raises(UnsupportedModelError, match="nn.Module"):
        from_torch(object())


# --- checkpoints ---------------------------------------------------------------------------


class TextNet(nn.Module):
    def __init__(self, cell=nn.LSTM, heads=1, mid=7, **kw):
        super().__init__()
        self.embedding = nn.Embedding(12, 4)
        self.rnn = cell(4, 6, num_layers=2, batch_first=True, **kw)
        out = 6 * (2 if kw.get("bidirectional") else 1)
        self.fc1 = nn.Linear(out, mid)
        self.fc2 = nn.Linear(mid, mid) if heads > 1 else None

    def forward(self, ids):
        y, _ = self.rnn(self.embedding(ids))
        y = self.fc1(y)
        return self.fc2(torch.relu(y)) if self.fc2 is not None else y


@pytest.mark.parametrize("cell,kw", [(nn.LSTM, {}), (nn.GRU, {"bidirectional": True}),
                                     (nn.RNN, {"nonlinearity": "relu"})])
def test_checkpoint_matches_module(tmp_path, cell, kw):
    torch.manual_seed(5)
    net = TextNet(cell, **kw).eval()
    path = tmp_path / "ckpt.pt"
    torch.save(net.state_dict(), path)
    flags = {"rnn_nonlinearity": "relu"} if cell is nn.RNN else {}
    m = load_checkpoint(path, **flags)
    ids = torch.randint(0, 12, (2, 8))
    with torch.no_grad():
        want = net(ids).numpy()
    np.testing.assert_allclose(m.run(ids.numpy()), want, atol=TOL)


def test_checkpoint_ambiguities_need_flags(tmp_path):
    torch.manual_seed(6)
    rnn = tmp_path / "rnn.pt"
    torch.save(TextNet(nn.RNN).state_dict(), rnn)
    with pytest.raises(UnsupportedModelError, match="--rnn-nonlinearity"):
        load_checkpoint(rnn)
    two = tmp_path / "two.pt"
    net = TextNet(nn.GRU, heads=2).eval()  # fc1 reads 6, fc2 reads 7: the sizes give the order
    torch.save(net.state_dict(), two)
    with pytest.raises(UnsupportedModelError, match="--head-activation"):
        load_checkpoint(two)
    m = load_checkpoint(two, head_activation="relu")
    ids = torch.randint(0, 12, (1, 5))
    with torch.no_grad():
        np.testing.assert_allclose(m.run(ids.numpy()), net(ids).numpy(), atol=TOL)
    same = tmp_path / "same.pt"
    net = TextNet(nn.GRU, heads=2, mid=6).eval()  # both heads 6 -> 6: the order is not in the file
    torch.save(net.state_dict(), same)
    with pytest.raises(UnsupportedModelError, match="--head-order"):
        load_checkpoint(same, head_activation="relu")
    m = load_checkpoint(same, head_activation="relu", head_order=["fc1", "fc2"])
    with torch.no_grad():
        np.testing.assert_allclose(m.run(ids.numpy()), net(ids).numpy(), atol=TOL)


def test_not_a_state_dict(tmp_path):
    full = tmp_path / "module.pt"
    torch.save(TextNet(), full)  # a pickled module: refused, never unpickled
    with pytest.raises(ModelFormatError, match="weights_only"):
        load_checkpoint(full)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(pickle.dumps({"a": [1, 2, 3]}))
    with pytest.raises(ModelFormatError):
        load_checkpoint(junk)
    lst = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], lst)
    with pytest.raises(ModelFormatError, match="not a state_dict"):
        load_checkpoint(lst)


def test_cli_convert_checkpoint_and_info(tmp_path, capsys):
    torch.manual_seed(8)
    net = TextNet(nn.GRU).eval()
    ckpt, out = tmp_path / "net.pt", tmp_path / "net.trnn"
    torch.save(net.state_dict(), ckpt)
    assert main(["convert", str(ckpt), "-o", str(out), "--quantize", "fp16"]) == 0
    cap = capsys.readouterr()
    assert "[1/3]" in cap.err and "[3/3]" in cap.err and "parameters" in cap.out and "bytes" in cap.out
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "source: net.pt" in info and "converter: tinyrnn_converters" in info and "quantization" in info
    assert main(["convert", str(tmp_path / "missing.pt"), "-o", str(out)]) == 1
    assert "no such file" in capsys.readouterr().err
