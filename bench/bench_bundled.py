"""Real-time factor of the bundled model on this CPU, decoding included.

Each 5 s clip is encoded as FLAC bytes in memory; the timed path is what a request costs after
upload: decode (soundfile from bytes, mix to mono, resample to 16 kHz) + features + inference,
batch of one. The clips are RAVDESS recordings padded or cut to 5 s when the corpus is there
(``RAVDESS_DIR``, default ``../shared/data/ravdess``), else generated speech-like signals.

    python bench/bench_bundled.py [--clips 100] [--rate 16000] [--threads 2] [--onnx]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emotion_service.models.bundled import BundledModel  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpuinfo import cpu_info, describe  # noqa: E402

SECONDS = 5.0
RATE = 16_000


def corpus_clips(n: int) -> list[np.ndarray]:
    """Up to ``n`` RAVDESS clips (every k-th of the manifest), padded or cut to 5 s."""
    root = Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "data" / "ravdess"))
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    step = max(1, len(rows) // n)
    clips = []
    for row in rows[::step][:n]:
        audio, rate = sf.read(root / row["path"], dtype="float32", always_2d=True)
        audio = soxr.resample(audio.mean(axis=1), rate, RATE) if rate != RATE else audio.mean(axis=1)
        clips.append(
            np.resize(audio, int(SECONDS * RATE)) if audio.size < SECONDS * RATE else audio[: int(SECONDS * RATE)]
        )
    return clips


def synthetic_clips(n: int, seed: int = 0) -> list[np.ndarray]:
    """Voiced, syllable-rate-modulated harmonic signals with a gliding pitch, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SECONDS * RATE)) / RATE
    clips = []
    for _ in range(n):
        f0 = rng.uniform(100, 250) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
        phase = 2 * np.pi * np.cumsum(f0) / RATE
        voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t), 0, None)
        clips.append((0.1 * voiced * envelope + 0.003 * rng.standard_normal(t.size)).astype(np.float32))
    return clips


def encode(clip: np.ndarray, rate: int) -> bytes:
    if rate != RATE:
        clip = soxr.resample(clip, RATE, rate)
    buffer = io.BytesIO()
    sf.write(buffer, clip, rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    return soxr.resample(audio, rate, RATE) if rate != RATE else audio


def onnx_comparison(model: BundledModel, frames: int, repeats: int = 200) -> dict[str, float] | None:
    """Milliseconds per forward pass of the network alone: torch vs ONNX Runtime (if installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    x = torch.randn(1, model.mel.n_mels, frames)
    buffer = io.BytesIO()
    try:
        torch.onnx.export(
            model.network,
            (x,),
            buffer,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch", 2: "frames"}},
            dynamo=False,
        )
    except (ImportError, ModuleNotFoundError, RuntimeError) as exc:  # the exporter needs the onnx package
        print(f"ONNX export skipped: {exc}", file=sys.stderr)
        return None
    with torch.inference_mode():  # torch first: ONNX Runtime's spinning threads would slow it down
        for _ in range(10):
            model.network(x)
        started = time.perf_counter()
        for _ in range(repeats):
            model.network(x)
        torch_ms = (time.perf_counter() - started) / repeats * 1000
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    for _ in range(10):
        session.run(None, feed)
    started = time.perf_counter()
    for _ in range(repeats):
        session.run(None, feed)
    ort_ms = (time.perf_counter() - started) / repeats * 1000
    return {"torch_forward_ms": torch_ms, "onnxruntime_forward_ms": ort_ms, "frames": frames}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--rate", type=int, default=RATE, help="sample rate of the encoded FLAC (resampled back)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="model file (default: the shipped one)")
    parser.add_argument("--onnx", action="store_true", help="also time the network in ONNX Runtime")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    model = BundledModel.load(args.model)
    load_s = time.perf_counter() - started

    clips = corpus_clips(args.clips)
    source = "ravdess"
    if not clips:
        clips, source = synthetic_clips(args.clips), "synthetic"
    payloads = [encode(c, args.rate) for c in clips]
    for data in payloads[:5]:  # warm-up
        model.process_signals([decode(data)])

    times = []
    for data in payloads:
        t0 = time.perf_counter()
        model.process_signals([decode(data)])
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    result = {
        "model": model.info.version,
        "clips": len(payloads),
        "source": source,
        "clip_seconds": SECONDS,
        "encoded_rate": args.rate,
        "threads": args.threads,
        "load_s": round(load_s, 3),
        "mean_ms": round(float(ms.mean()), 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "rtf_x": round(SECONDS * 1000 / float(ms.mean()), 1),
        "model_file_mb": round(Path(model.info.source).stat().st_size / 1e6, 3),
    }
    if args.onnx:
        comparison = onnx_comparison(model, frames=int(SECONDS * RATE) // model.mel.hop_length)
        if comparison:
            result["network_only"] = {k: round(v, 2) for k, v in comparison.items()}
    print(
        f"load {result['load_s']} s; {len(payloads)} x 5 s {source} clips as FLAC at {args.rate} Hz, batch of one,"
        f" {args.threads} threads"
    )
    print(
        f"decode + features + inference: mean {result['mean_ms']} ms, p50 {result['p50_ms']} ms,"
        f" p95 {result['p95_ms']} ms -> {result['rtf_x']}x faster than real time"
    )
    print(describe(), flush=True)
    print(json.dumps({**result, "cpu": cpu_info()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
