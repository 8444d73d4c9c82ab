"""Stream a WAV file through Silero VAD on tinyrnn and print speech segments as they end.

    python examples/vad_stream.py speech.wav                 # converts silero-vad's own ONNX
    python examples/vad_stream.py speech.wav --model vad.trnn  # made by `tinyrnn convert
                                                             #   silero_vad.onnx --constant sr=16000 -o vad.trnn`

The WAV is read with the standard library (16-bit PCM, mono or the first channel, 8 or 16
kHz, or a multiple of 16 kHz, decimated the way silero-vad does). Audio goes in 512-sample
windows (256 at 8 kHz) with the previous 64 (32) samples as context, exactly as
silero-vad's ``OnnxWrapper`` feeds its model, and the probabilities go through
``Segmenter``: the rules of silero-vad's ``get_speech_timestamps`` (threshold, negative
threshold, minimum speech and silence, speech padding) applied incrementally, so each
segment is printed as soon as no later audio can change it.
"""

from __future__ import annotations

import argparse
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Segment:
    start: int  # samples
    end: int
    sampling_rate: int

    def seconds(self, resolution: int = 1) -> tuple[float, float]:
        return round(self.start / self.sampling_rate, resolution), round(self.end / self.sampling_rate, resolution)


class Segmenter:
    """``get_speech_timestamps``'s rules, fed one probability at a time.

    ``push(p)`` returns the segments that became final with this window (padding included);
    ``finish(audio_length_samples)`` closes the stream and returns the rest. The result is
    the same list ``get_speech_timestamps_from_probs`` gives for the whole sequence (with
    ``max_speech_duration_s`` left at infinity, its default).
    """

    def __init__(self, sampling_rate: int = 16000, threshold: float = 0.5, min_speech_duration_ms: int = 250,
                 min_silence_duration_ms: int = 100, speech_pad_ms: int = 30, neg_threshold: float | None = None):
        self.sr = sampling_rate
        self.window = 512 if sampling_rate == 16000 else 256
        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01) if neg_threshold is None else neg_threshold
        self.min_speech = sampling_rate * min_speech_duration_ms / 1000
        self.min_silence = sampling_rate * min_silence_duration_ms / 1000
        self.pad = sampling_rate * speech_pad_ms / 1000
        self.i = 0
        self.triggered = False
        self.start = None  # raw start of the segment in progress
        self.temp_end = 0
        self.raw: list[list[int]] = []  # raw segments not printed yet, [start, end]
        self.next_start = None  # raw start -> padded start of the next segment (None: the first)

    def push(self, prob: float) -> list[Segment]:
        cur = self.window * self.i
        self.i += 1
        if prob >= self.threshold and self.temp_end:
            self.temp_end = 0
        if prob >= self.threshold and not self.triggered:
            self.triggered, self.start = True, cur
            return self._release(cur)
        if prob < self.neg_threshold and self.triggered:
            if not self.temp_end:
                self.temp_end = cur
            if cur - self.temp_end >= self.min_silence:
                if self.temp_end - self.start > self.min_speech:
                    self.raw.append([self.start, self.temp_end])
                self.start, self.temp_end, self.triggered = None, 0, False
        return self._release(cur)

    def finish(self, audio_length_samples: int) -> list[Segment]:
        if self.start is not None and audio_length_samples - self.start > self.min_speech:
            self.raw.append([self.start, audio_length_samples])
        self.start = None
        out = []
        while self.raw:
            out.append(self._emit(self.raw[1][0] if len(self.raw) > 1 else None, audio_length_samples))
        return out

    def _release(self, cur: int) -> list[Segment]:
        # A segment is final once a kept successor exists, or once any successor would start
        # at least two paddings after it (then its end gets the full padding whatever comes).
        out = []
        while self.raw:
            if len(self.raw) > 1:
                out.append(self._emit(self.raw[1][0]))
                continue
            earliest = self.start if self.start is not None else cur + self.window
            if earliest - self.raw[0][1] < 2 * self.pad:
                break
            out.append(self._emit(None))
        return out

    def _emit(self, nxt, length=None) -> Segment:
        start, end = self.raw.pop(0)
        start = int(max(0, start - self.pad)) if self.next_start is None else self.next_start(start)
        gap = None if nxt is None else nxt - end
        if gap is not None and gap < 2 * self.pad:
            # a short silence is shared: each side takes half of it
            ns = int(max(0, nxt - gap // 2))
            self.next_start = lambda raw, ns=ns: ns
            end += int(gap // 2)
        else:
            self.next_start = lambda raw: int(max(0, raw - self.pad))
            end = int(end + self.pad) if length is None else int(min(length, end + self.pad))
        return Segment(int(start), int(end), self.sr)


# --- audio -------------------------------------------------------------------------------


def read_wav(path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sampling rate (16-bit PCM WAV)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise SystemExit(f"{path}: only 16-bit PCM WAV files are read, found {8 * w.getsampwidth()}-bit")
        sr, ch = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, ch)[:, 0]
    audio = data.astype(np.float32) / 32768.0
    if sr > 16000 and sr % 16000 == 0:
        audio, sr = audio[::sr // 16000].copy(), 16000
    if sr not in (8000, 16000):
        raise SystemExit(f"{path}: Silero VAD runs at 8000 or 16000 Hz (or multiples of 16000), found {sr}")
    return audio, sr


def load_model(model_path=None, sampling_rate: int = 16000):
    """A ``.trnn`` file, or silero-vad's own ``silero_vad.onnx`` converted on the spot."""
    import tinyrnn

    if model_path:
        return tinyrnn.load(model_path)
    try:
        import silero_vad
        from tinyrnn_converters.onnx_step import from_onnx_step
    except ImportError as e:
        raise SystemExit(f"no --model given and the silero-vad wheel or converters are missing ({e}); "
                         f"pip install silero-vad, or pass a .trnn file") from None
    onnx_path = Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"
    return from_onnx_step(onnx_path, constants={"sr": sampling_rate})


def stream_segments(model, pieces, sampling_rate: int = 16000, **rules):
    """Yield ``Segment``s as they become final while ``pieces`` (arrays of samples, any
    length) stream through ``model`` one window at a time."""
    window = 512 if sampling_rate == 16000 else 256
    context = 64 if sampling_rate == 16000 else 32
    if model.input.shape != (window + context,):
        raise SystemExit(f"the model takes {model.input.shape} per step; {sampling_rate} Hz needs "
                         f"({window + context},): convert it with --constant sr={sampling_rate}")
    stream = model.stream()
    seg = Segmenter(sampling_rate, **rules)
    step = np.zeros(window + context, np.float32)  # [context | window]
    pending = np.zeros(0, np.float32)
    total = 0
    for piece in pieces:
        pending = np.concatenate([pending, np.asarray(piece, np.float32)])
        total += len(piece)
        n = len(pending) // window
        if n:
            block = pending[:n * window].reshape(n, window)
            X = np.empty((n, window + context), np.float32)
            X[:, context:] = block
            X[0, :context] = step[-context:]
            X[1:, :context] = block[:-1, -context:]
            step = X[-1]
            for p in stream.process(X)[:, 0]:  # one compiled call for the whole block
                yield from seg.push(float(p))
            pending = pending[n * window:]
    if len(pending):  # the last partial window, zero padded as get_speech_timestamps does
        x = np.zeros(window + context, np.float32)
        x[:context] = step[-context:]
        x[context:context + len(pending)] = pending
        yield from seg.push(float(stream.step(x)[0]))
    yield from seg.finish(total)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wav", help="16-bit PCM WAV file")
    ap.add_argument("--model", help=".trnn file (default: convert silero-vad's silero_vad.onnx)")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--min-speech-ms", type=int, default=250)
    ap.add_argument("--min-silence-ms", type=int, default=100)
    ap.add_argument("--speech-pad-ms", type=int, default=30)
    args = ap.parse_args(argv)
    audio, sr = read_wav(args.wav)
    model = load_model(args.model, sr)
    rules = dict(threshold=args.threshold, min_speech_duration_ms=args.min_speech_ms,
                 min_silence_duration_ms=args.min_silence_ms, speech_pad_ms=args.speech_pad_ms)
    pieces = (audio[i:i + sr // 10] for i in range(0, len(audio), sr // 10))  # 100 ms as from a microphone
    count = 0
    for s in stream_segments(model, pieces, sr, **rules):
        a, b = s.seconds()
        print(f"speech {a:7.1f}s - {b:7.1f}s   (samples {s.start}-{s.end})", flush=True)
        count += 1
    print(f"{count} speech segments in {len(audio) / sr:.1f} s of audio", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
