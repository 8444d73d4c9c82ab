"""Long streams: an edge script steps one stream for months. Memory must not grow, steps must
not slow down, the state must stay finite and bounded, and a snapshot taken in the middle
must reproduce the rest bit for bit.

The full check (10 million steps, through ``step`` and through ``process``) is marked
``slow``: ``pytest -m slow tests/test_long_stream.py -s`` prints the numbers recorded in
tests/SLOW_RESULTS.md. The normal suite runs the same check scaled down.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from builders import random_recurrent
from tinyrnn import InputSpec, Model

I, H = 2, 8
BLOCK = 4096  # distinct input rows, cycled through


def _rss() -> int | None:
    """Resident set size of this process in bytes (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _model(seed: int = 3) -> Model:
    rng = np.random.default_rng(seed)
    layer, _ = random_recurrent(rng, "lstm", I, H, name="lstm", scale=0.8)
    return Model([layer], InputSpec.features(I))


def _inputs(seed: int = 4) -> np.ndarray:
    """(BLOCK, I): mostly unit noise, with bursts 20x larger to drive the gates to saturation."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (BLOCK, I)).astype(np.float32)
    x[rng.random(BLOCK) < 0.02] *= 20
    return x


def long_run(total: int, mode: str, chunk: int, snap_at: int, replay: int) -> dict:
    """Drive one stream ``total`` steps (``mode`` "step" or "process" in blocks of ``chunk``).

    Checks every ``chunk`` steps that the state is finite and |h| <= 1; records RSS and the
    seconds per chunk; snapshots at ``snap_at`` and keeps the next ``replay`` outputs.
    Returns the measurements, the snapshot and the kept outputs.
    """
    m = _model()
    xs = _inputs()
    s = m.stream()
    out = np.empty(H, np.float32)
    # the outputs kept for the replay check: allocated and touched up front, so that the
    # RSS measured during the run is the stream's alone
    kept, snap = np.full((replay, H), np.nan, np.float32), None
    kept_n = 0
    rss, secs, cmax = [], [], 0.0
    t = 0
    while t < total:
        n = min(chunk, total - t)
        t0 = time.perf_counter()
        if mode == "step":
            for k in range(t, t + n):
                if k == snap_at:
                    snap = s.state
                y = s.step(xs[k % BLOCK], out=out)
                if snap_at <= k < snap_at + replay:
                    kept[k - snap_at] = y
        else:
            rows = np.take(xs, np.arange(t, t + n) % BLOCK, axis=0)  # (n, I)
            if t <= snap_at < t + n:  # split the block at the snapshot
                a = snap_at - t
                s.process(rows[:a])
                snap = s.state
                ys = s.process(rows[a:])
            elif snap is not None and kept_n < replay:
                ys = s.process(rows)
            else:
                ys = None
                s.process(rows)
            if ys is not None:
                take = min(replay - kept_n, len(ys))
                kept[kept_n:kept_n + take] = ys[:take]
                kept_n += take
        secs.append(time.perf_counter() - t0)
        t += n
        st = s.state
        assert all(np.isfinite(v).all() for v in st.values()), f"state not finite after {t} steps"
        assert np.abs(st["lstm.h"]).max() <= 1.0, f"|h| > 1 after {t} steps"
        cmax = max(cmax, float(np.abs(st["lstm.c"]).max()))
        rss.append(_rss())
    assert not np.isnan(kept).any(), "the replay window was not filled"
    return {"rss": rss, "secs": secs, "cmax": cmax, "snap": snap, "kept": kept, "model": m, "xs": xs}


def replay_from(r: dict, snap_at: int, replay: int) -> np.ndarray:
    """The ``replay`` steps after ``snap_at``, re-run from the snapshot on a fresh stream."""
    s = r["model"].stream()
    s.state = r["snap"]
    rows = np.take(r["xs"], np.arange(snap_at, snap_at + replay) % BLOCK, axis=0)
    return s.process(rows)


def check(r: dict, snap_at: int, replay: int, rss_slack: int, label: str) -> str:
    np.testing.assert_array_equal(replay_from(r, snap_at, replay), r["kept"])
    rss = [v for v in r["rss"] if v is not None]
    growth = None
    if len(rss) >= 3:
        # from the end of the first chunk (compilation, plans, allocator warm-up) to the end;
        # the chunk holding the snapshot allocates its replay outputs for a moment
        growth = rss[-1] - rss[1]
        assert growth <= rss_slack, f"RSS grew by {growth / 1e6:.1f} MB over the run"
    secs = np.array(r["secs"][1:-1] or r["secs"])
    summary = (f"{label}: {len(r['secs'])} chunks, {sum(r['secs']):.1f} s, per chunk median "
               f"{np.median(secs):.3f} s (first {secs[0]:.3f}, last {secs[-1]:.3f}, max {secs.max():.3f}); "
               f"RSS start {rss[0] / 1e6 if rss else float('nan'):.1f} MB, growth after chunk 1 "
               f"{(growth or 0) / 1e3:.0f} kB; max|c| {r['cmax']:.2f}; replay of {replay} steps from the "
               f"snapshot at step {snap_at}: bit-exact")
    print("\n" + summary)
    return summary


@pytest.mark.parametrize("mode, total, chunk", [("step", 20_000, 2_000), ("process", 400_000, 4096)])
def test_long_stream_scaled_down(mode, total, chunk):
    snap_at, replay = total // 2 + 17, 1000
    r = long_run(total, mode, chunk, snap_at, replay)
    check(r, snap_at, replay, rss_slack=2 << 20, label=f"{mode} x {total}")


@pytest.mark.slow
@pytest.mark.parametrize("mode, chunk", [("step", 250_000), ("process", 4096 * 61)])
def test_ten_million_steps(mode, chunk):
    total = 10_000_000
    snap_at, replay = 5_000_003, 100_000
    r = long_run(total, mode, chunk, snap_at, replay)
    check(r, snap_at, replay, rss_slack=4 << 20, label=f"{mode} x {total}")
    secs = np.array(r["secs"][1:-1])
    # no slowdown: the second half runs at the first half's pace (generous: a shared machine)
    first, second = np.median(secs[:len(secs) // 2]), np.median(secs[len(secs) // 2:])
    assert second < 2.0 * first, (first, second)
