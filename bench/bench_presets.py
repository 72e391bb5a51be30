"""Speed of each preset on this CPU, what a request costs outside the model, and int8 against fp32.

For every preset (and, for the encoder presets, fp32, bf16 and int8; bf16 is fp32 on a CPU without
native bf16, as the ``dtype`` field says): the real-time factor of a 5 s clip,
batch 1, decoding included (FLAC bytes in memory → ``decode_audio`` → the model), with the model
alone beside it; for speech-only input (leading, trailing and long inner silences cut by the
energy VAD before the model) too. Then, for the default preset, a request's CPU outside the
model, part by part, as the analyzer and the HTTP layer spend it; and the cosine between the int8
(and bf16) and fp32 logits on real clips.

    python bench/bench_presets.py [--clips 30] [--presets default,commercial,fast]

Clips are RAVDESS recordings (``RAVDESS_DIR``, default ``../shared/data/ravdess``) padded or cut
to 5 s, else generated speech-like signals. Throughput through HTTP and serving memory:
``python bench/load_test.py --clients 8 --requests 400 --env MODEL_PRESET=default``.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_bundled import SECONDS, corpus_clips, encode, synthetic_clips  # noqa: E402
from cpuinfo import cpu_info, describe  # noqa: E402

from emotion_service.analysis.cache import cache_key  # noqa: E402
from emotion_service.analysis.ensemble import combine  # noqa: E402
from emotion_service.audio.decode import AudioLimits, decode_audio  # noqa: E402
from emotion_service.audio.prosody import measure  # noqa: E402
from emotion_service.audio.segmentation import SegmentOptions, speech_only  # noqa: E402
from emotion_service.config import SAMPLING_RATE, load_models_config  # noqa: E402
from emotion_service.models.registry import load_preset  # noqa: E402

LIMITS = AudioLimits()


def timed(function, repeats: int) -> float:
    """Median seconds of ``function()`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def preset_speed(preset: str, quantize: str, payloads: list[bytes]) -> dict[str, object]:
    started = time.perf_counter()
    report = load_preset(load_models_config(), preset, device="cpu", quantize=quantize)
    load_s = time.perf_counter() - started
    if report.failures:
        return {"error": "; ".join(f.reason for f in report.failures)}
    models = list(report.models.values())
    signals = [decode_audio(p, LIMITS).signal for p in payloads]
    trimmed = [speech_only(s, SegmentOptions(vad="energy")) for s in signals]
    for s in signals[:3]:
        for m in models:
            m.process_signals([s])
    per_clip, model_only, speech = [], [], []
    for payload, signal, short in zip(payloads, signals, trimmed, strict=True):

        def request(payload: bytes = payload) -> None:
            decoded = decode_audio(payload, LIMITS)
            for m in models:
                m.process_signals([decoded.signal])

        per_clip.append(timed(request, 1))
        model_only.append(timed(lambda s=signal: [m.process_signals([s]) for m in models], 1))
        speech.append(timed(lambda s=short: [m.process_signals([s]) for m in models], 1))
    dtype = models[0].info.extra.get("dtype", "fp32")
    return {
        "preset": preset,
        "dtype": dtype,
        "load_seconds": round(load_s, 2),
        "ms_per_clip_decoding_included": round(1000 * float(np.mean(per_clip)), 1),
        "realtime_factor": round(SECONDS / float(np.mean(per_clip)), 1),
        "realtime_factor_model_only": round(SECONDS / float(np.mean(model_only)), 1),
        "speech_only_share_of_audio": round(float(np.mean([len(t) for t in trimmed])) / (SECONDS * SAMPLING_RATE), 3),
        "realtime_factor_speech_only": round(SECONDS / float(np.mean(speech)), 1),
    }


def parts(payloads: list[bytes]) -> dict[str, float]:
    """Milliseconds per 5 s request spent outside the model, by part (default preset's analyzer)."""
    from emotion_service.analysis.assessment import assess
    from emotion_service.analysis.ensemble import ModelResult
    from emotion_service.models.base import ModelOutput

    signals = [decode_audio(p, LIMITS).signal for p in payloads]
    fake = [ModelResult("m", "M", ModelOutput({"neutral": 0.6, "happy": 0.4}), 0.01)]
    out = {
        "decode_ms": 1000 * float(np.mean([timed(lambda p=p: decode_audio(p, LIMITS), 3) for p in payloads])),
        "delivery_metrics_ms": 1000 * float(np.mean([timed(lambda s=s: measure(s), 3) for s in signals])),
        "cache_key_ms": 1000 * float(np.mean([timed(lambda s=s: cache_key([s], 0, [("m", "1")]), 3) for s in signals])),
        "ensemble_and_assessment_ms": 1000 * timed(lambda: assess(combine(fake, {"m": 1.0})), 50),
    }
    return {k: round(v, 3) for k, v in out.items()}


def agreement(payloads: list[bytes], quantize: str) -> dict[str, float | str]:
    """Cosine of the default head's logits, ``quantize`` (int8, bf16) encoder against fp32, on real clips."""
    config = load_models_config()
    fp32 = next(iter(load_preset(config, "default", device="cpu", quantize="none").models.values()))
    other = next(iter(load_preset(config, "default", device="cpu", quantize=quantize).models.values()))
    cosines, same = [], 0
    for payload in payloads:
        signal = decode_audio(payload, LIMITS).signal
        with torch.inference_mode():
            a = fp32.head(torch.from_numpy(fp32.standardised([signal])))[0]
            b = other.head(torch.from_numpy(other.standardised([signal])))[0]
        cosines.append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
        same += int(a.argmax() == b.argmax())
    return {"dtype": other.info.dtype, "mean_cosine": round(float(np.mean(cosines)), 5),
            "min_cosine": round(float(np.min(cosines)), 5), "same_top_label": f"{same}/{len(payloads)}"}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=30)
    parser.add_argument("--presets", default="default,commercial,fast")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe(), flush=True)
    clips = corpus_clips(args.clips) or synthetic_clips(args.clips)
    payloads = [encode(c, SAMPLING_RATE) for c in clips]
    results = []
    for preset in args.presets.split(","):
        encoder = any(
            load_models_config().models[name].backend == "encoder" for name in load_models_config().preset(preset)
        )
        for quantize in ("none", "bf16", "int8") if encoder else ("none",):
            result = preset_speed(preset, quantize, payloads)
            print(json.dumps(result), flush=True)
            results.append(result)
    outside = parts(payloads)
    print("outside the model, per 5 s request:", json.dumps(outside), flush=True)
    agreements = {q: agreement(payloads, q) for q in ("bf16", "int8")} if "default" in args.presets else None
    print("int8 and bf16 vs fp32 logits (default preset):", json.dumps(agreements), flush=True)
    print(json.dumps({"cpu": cpu_info(), "clips": len(payloads), "presets": results, "outside_model": outside,
                      "vs_fp32": agreements}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
