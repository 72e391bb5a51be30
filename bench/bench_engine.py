"""The inference engine against the usual way, on the `full` preset's architectures and the bundled model.

The hub models cannot be downloaded here, so their exact architectures are built from their
configurations (written below from the hub configs and MODELS.md) with random weights: the
arithmetic is the same, the outputs mean nothing. They are saved into a MODELS_DIR laid out as
``python -m emotion_service.download`` leaves it, and loaded from there through the registry and
``TransformersModel.load``, exactly as a user's downloaded models are.

Compared, each in its own subprocess (so that peak memory is its own):

- engine: one shared copy of each model behind a ``MicroBatcher`` per model, each request calling
  the models' batchers in turn as ``SpeechEmotionAnalyzer`` does; fp32 and/or int8 (``--quantize``);
  threads shared by the service's TORCH_THREADS plan (automatic unless ``--torch-threads``; ``-1``:
  no plan, torch's defaults, to see what the plan does).
- baseline: what a user would write: ``transformers.pipeline("audio-classification")`` per model
  (the bundled model: its own ``process_signals``), one request at a time behind a lock, fp32.

Requests are 5 s RAVDESS clips (``RAVDESS_DIR``, default ``../shared/data/ravdess``; generated
speech-like signals without it), from 1 and from 8 concurrent clients (closed loop). Peak memory is
the process's peak RSS while serving (VmHWM reset after loading), and the peak of loading. The
CPU's arithmetic peak is measured in this run with a large fp32 matmul on all the process's cores;
FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` around one 5 s request
through each fp32 model (the work actually done: windows included). int8 quality is the cosine
similarity of int8 and fp32 logits on real speech clips; with random weights it measures the
numerical error of the int8 path, not accuracy.

    python bench/bench_engine.py                      # full preset + bundled, engine fp32 and int8
    python bench/bench_engine.py --quick              # smaller copies of the same classes, < 1 min
    python bench/bench_engine.py --quantize none --models-dir /tmp/bench-models   # keep the models
    python bench/bench_engine.py --device cuda        # on a GPU machine (engine fp16, baseline fp32; no int8)

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Nothing here may reach the network: the models are built locally and loaded offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bundled import corpus_clips, synthetic_clips  # noqa: E402
from cpuinfo import cpu_info, describe  # noqa: E402

RATE = 16_000
CLIP_SECONDS = 5.0
BUILT_MARKER = "bench-models.json"
EXHUBERT_ID = "amiriparian/ExHuBERT"
HUBERT_ID = "superb/hubert-large-superb-er"
XLSR_ID = "ehcalabres/wav2vec2-lg-xlsr-en-speech-emotion-recognition"
HUBERT_BASE_ID = "facebook/hubert-base-ls960"  # ExHuBERT's card borrows this feature extractor
TARGETS = {"full_throughput_x": 3.0, "memory_over_weights": 1.3, "bundled_audio_s_per_s": 1000.0}


# -- the architectures ---------------------------------------------------------------------------

# HuBERT-Large / XLSR-53 encoder: 7 conv layers with layer norm (512 channels, 320x down-sampling
# to 50 frames a second), 24 pre-layer-norm transformer layers of 1024 with 16 heads and FFN 4096,
# convolutional position embedding 128 wide in 16 groups (values of the hub configs).
LARGE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "conv_dim": (512,) * 7,
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_bias": True,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "classifier_proj_size": 256,
    "layer_norm_eps": 1e-5,
}
# --quick: the same classes and layout, narrower and shallower.
QUICK = {
    **LARGE,
    "hidden_size": 256,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "conv_dim": (128,) * 7,
    "num_conv_pos_embeddings": 32,
    "num_conv_pos_embedding_groups": 4,
    "classifier_proj_size": 64,
}
QUICK_LAYERS = {"exhubert": 4, "hubert_large": 2, "wav2vec2_xlsr": 2}

SUPERB_LABELS = ("neu", "hap", "ang", "sad")
XLSR_LABELS = ("angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised")

# ExHuBERT's paper: each of HuBERT-Large's 24 layers is duplicated (48) and each gets an extra
# zero-initialised linear layer with a skip connection; 6 arousal x valence classes. 48 x (12.6M +
# 1.05M) + encoders = 668M parameters, the size of the hub checkpoint (2.67 GB in fp32). Like the
# real repository it is custom code loaded through config.json's auto_map (trust_remote_code).
EXHUBERT_CODE = '''
"""Benchmark stand-in for ExHuBERT's modelling code: HuBERT-Large with block extension."""

from torch import nn
from transformers import HubertConfig, HubertModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.hubert.modeling_hubert import HubertEncoderLayerStableLayerNorm


class ExHuBERTConfig(HubertConfig):
    model_type = "exhubert_bench"


class ExtendedLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = HubertEncoderLayerStableLayerNorm(config)
        self.extension = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        out = self.layer(hidden_states, attention_mask=attention_mask, **kwargs)
        hidden = out[0] if isinstance(out, tuple) else out
        hidden = hidden + self.extension(hidden)
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden


class ExHuBERTForAudioClassification(PreTrainedModel):
    config_class = ExHuBERTConfig
    base_model_prefix = "hubert"
    main_input_name = "input_values"

    def __init__(self, config):
        super().__init__(config)
        self.hubert = HubertModel(config)
        self.hubert.encoder.layers = nn.ModuleList(ExtendedLayer(config) for _ in range(config.num_hidden_layers))
        self.projector = nn.Linear(config.hidden_size, config.classifier_proj_size)
        self.classifier = nn.Linear(config.classifier_proj_size, config.num_labels)
        self.post_init()

    def forward(self, input_values, attention_mask=None, **kwargs):
        hidden = self.hubert(input_values, attention_mask=attention_mask).last_hidden_state
        return SequenceClassifierOutput(logits=self.classifier(self.projector(hidden).mean(dim=1)))
'''


def _extractor(directory: Path, *, do_normalize: bool, attention_mask: bool) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=RATE,
        padding_value=0.0,
        do_normalize=do_normalize,
        return_attention_mask=attention_mask,
    ).save_pretrained(directory)


def _trained_like(model: Any) -> Any:
    """Give every bias small random values, as a trained checkpoint has, instead of init's zeros.

    With zero biases, the digital silence in the clips (half the samples of a RAVDESS file are exact
    zeros) goes through the feature encoder as exact zeros and its layer norms turn out denormal
    floats, which CPUs compute many times slower (measured: one GELU 15 ms instead of 5.8 ms):
    a cost of random weights that real checkpoints do not pay, and that slowed both systems.
    """
    import torch

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.02)
    return model


def _labels(names: tuple[str, ...]) -> dict[str, Any]:
    return {"id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)}}


def build_hubert_large(directory: Path, shape: dict[str, Any], layers: int) -> int:
    """superb/hubert-large-superb-er: HubertForSequenceClassification, 4 IEMOCAP classes."""
    from transformers import HubertConfig, HubertForSequenceClassification

    config = HubertConfig(
        **{**shape, "num_hidden_layers": layers}, use_weighted_layer_sum=True, **_labels(SUPERB_LABELS)
    )
    model = _trained_like(HubertForSequenceClassification(config).eval())
    model.save_pretrained(directory)
    _extractor(directory, do_normalize=False, attention_mask=True)  # SUPERB: no normalisation
    return sum(p.numel() for p in model.parameters())


def build_xlsr(directory: Path, shape: dict[str, Any], layers: int) -> int:
    """ehcalabres/wav2vec2-lg-xlsr-en-speech-emotion-recognition: 8 RAVDESS classes."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    config = Wav2Vec2Config(**{**shape, "num_hidden_layers": layers}, **_labels(XLSR_LABELS))
    model = _trained_like(Wav2Vec2ForSequenceClassification(config).eval())
    model.save_pretrained(directory)
    _extractor(directory, do_normalize=True, attention_mask=True)
    return sum(p.numel() for p in model.parameters())


def build_exhubert(directory: Path, shape: dict[str, Any], layers: int) -> int:
    """amiriparian/ExHuBERT: custom code, 6 classes named LABEL_0..5, no preprocessor config."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ExHuBERT_model.py").write_text(EXHUBERT_CODE, "utf-8")
    spec = importlib.util.spec_from_file_location("exhubert_bench_build", directory / "ExHuBERT_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.ExHuBERTConfig(**{**shape, "num_hidden_layers": layers}, num_labels=6)
    model = _trained_like(module.ExHuBERTForAudioClassification(config).eval())
    model.save_pretrained(directory)
    saved = json.loads((directory / "config.json").read_text("utf-8"))
    saved["auto_map"] = {
        "AutoConfig": "ExHuBERT_model.ExHuBERTConfig",
        "AutoModelForAudioClassification": "ExHuBERT_model.ExHuBERTForAudioClassification",
    }
    (directory / "config.json").write_text(json.dumps(saved, indent=2), "utf-8")
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Architecture:
    name: str  # member of the `full` preset
    hub_id: str
    layers: int
    build: Callable[[Path, dict[str, Any], int], int]
    extractor: str | None = None  # hub id of a borrowed feature extractor


ARCHITECTURES = (
    Architecture("exhubert", EXHUBERT_ID, 48, build_exhubert, extractor=HUBERT_BASE_ID),
    Architecture("hubert_large", HUBERT_ID, 24, build_hubert_large),
    Architecture("wav2vec2_xlsr", XLSR_ID, 24, build_xlsr),
)


def build_models(models_dir: Path, quick: bool) -> dict[str, int]:
    """Write the three models into ``models_dir/<hub id>/`` (kept when already built the same way).

    Returns:
        Parameters per model.
    """
    import torch

    scale = "quick" if quick else "full"
    marker = models_dir / BUILT_MARKER
    if marker.is_file():
        built = json.loads(marker.read_text("utf-8"))
        if built.get("scale") == scale and built.get("biases") == "random":
            return built["parameters"]
    parameters = {}
    for number, arch in enumerate(ARCHITECTURES):
        torch.manual_seed(number)
        directory = models_dir / arch.hub_id
        shutil.rmtree(directory, ignore_errors=True)
        layers = QUICK_LAYERS[arch.name] if quick else arch.layers
        started = time.perf_counter()
        parameters[arch.name] = arch.build(directory, QUICK if quick else LARGE, layers)
        gc.collect()
        print(
            f"  built {arch.hub_id}: {layers} layers, {parameters[arch.name] / 1e6:.0f}M parameters"
            f" ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    _extractor(models_dir / HUBERT_BASE_ID, do_normalize=False, attention_mask=False)  # group-norm style
    marker.write_text(json.dumps({"scale": scale, "biases": "random", "parameters": parameters}), "utf-8")
    return parameters


# -- measuring ------------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def rss_mb() -> float:
    return (_status_kb("VmRSS") or 0) / 1024


def peak_rss_mb() -> float:
    return (_status_kb("VmHWM") or 0) / 1024


def reset_peak_rss() -> bool:
    """Start VmHWM afresh at the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def process_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def matmul_peak_gflops(device: str, size: int = 4096, repeats: int = 8) -> dict[str, Any]:
    """Arithmetic peak as this machine delivers it: a large square matmul (fp32; fp16 too on CUDA)."""
    import torch

    out: dict[str, Any] = {"method": f"torch.matmul {size}x{size} fp32, best of {repeats}", "device": device}
    dtypes = [("fp32", torch.float32)] + ([("fp16", torch.float16)] if device.startswith("cuda") else [])
    for label, dtype in dtypes:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        best = float("inf")
        for _ in range(repeats + 2):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            a @ b
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - started)
        out[f"{label}_gflops"] = round(2 * size**3 / best / 1e9, 1)
    if device == "cpu":
        out["threads"] = torch.get_num_threads()
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def run_clients(request: Callable[[np.ndarray], Any], clips: list[np.ndarray], clients: int) -> dict[str, float]:
    """Closed loop: ``clients`` threads send the clips, each waiting for its answer before the next."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one(clip: np.ndarray) -> None:
        started = time.perf_counter()
        request(clip)
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, clips))
    wall = time.perf_counter() - started
    audio = sum(len(c) for c in clips) / RATE
    return {
        "clients": clients,
        "requests": len(clips),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "throughput_audio_s_per_s": round(audio / wall, 3),
        "wall_s": round(wall, 2),
    }


def load_clips(n: int, seconds: float = CLIP_SECONDS) -> tuple[list[np.ndarray], str]:
    clips = corpus_clips(n)
    if clips:
        return [c[: int(seconds * RATE)] for c in clips], "ravdess"
    return [c[: int(seconds * RATE)] for c in synthetic_clips(n)], "synthetic"


def quality_clips(n: int) -> list[np.ndarray]:
    """Real speech at its own length (first n of every k-th manifest row), or generated speech."""
    import csv

    import soundfile as sf

    root = Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "data" / "ravdess"))
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        return synthetic_clips(n, seed=1)
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    step = max(1, len(rows) // n)
    clips = []
    for row in rows[step // 2 :: step][:n]:
        audio, rate = sf.read(root / row["path"], dtype="float32", always_2d=True)
        if rate == RATE:
            clips.append(audio.mean(axis=1))
    return clips


# -- the two systems (run in subprocesses) ----------------------------------------------------------


def _logits(model: Any, clip: np.ndarray) -> np.ndarray:
    """Raw logits of a transformers model on the first window of ``clip``, as the engine feeds it."""
    import torch

    if model.window_samples:
        clip = clip[: model.window_samples]
    features = model.feature_extractor([clip], sampling_rate=RATE, padding=True, return_tensors="pt")
    inputs = {"input_values": features["input_values"].to(model.device, model.dtype)}
    if "attention_mask" in features:
        inputs["attention_mask"] = features["attention_mask"].to(model.device)
    with torch.inference_mode():
        return model.module(**inputs).logits.float().cpu().numpy()[0]


def _network(model: Any) -> Any:
    """The torch module of a loaded model (transformers backend or bundled CNN)."""
    return model.module if hasattr(model, "module") else model.network


def count_flops(call: Callable[[], Any], modules: list[Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    # The counter's module tracker hooks parameters that require grad, which fails in inference mode.
    for module in modules:
        module.requires_grad_(False)
    with FlopCounterMode(display=False) as counter:
        call()
    return int(counter.get_total_flops())


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One system on one preset, in this (fresh) process; returns its figures."""
    import torch

    from emotion_service.analysis.batching import BatchOptions, MicroBatcher
    from emotion_service.config import load_models_config
    from emotion_service.models.registry import load_preset
    from emotion_service.models.threads import configure_torch_threads

    cuda = args.device.startswith("cuda")
    engine = args.worker == "engine"
    # The engine gets the service's thread plan (TORCH_THREADS); the baseline torch's default.
    # (--torch-threads -1: no plan, torch's defaults and ungated batchers, to measure what the plan does)
    use_plan = engine and args.torch_threads >= 0
    plan = configure_torch_threads(args.torch_threads, light_models=args.preset == "bundled") if use_plan else None
    result: dict[str, Any] = {
        "system": args.worker,
        "preset": args.preset,
        "quantize": args.quantize if engine else "none",
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
    }
    if plan:
        result["thread_plan"] = dataclasses.asdict(plan)
    clips, source = load_clips(args.requests)
    result["clips"] = source

    started = time.perf_counter()
    config = load_models_config()
    preset = "default" if args.preset == "bundled" else "full"
    report = load_preset(config, preset, models_dir=args.models_dir, device=args.device, quantize=result["quantize"])
    if report.failures:
        raise SystemExit(f"models failed to load: {[(f.name, f.reason) for f in report.failures]}")
    models = report.models
    lock = threading.Lock()
    per_model_seconds: dict[str, list[float]] = {name: [] for name in models}
    if engine:
        options = BatchOptions(max_batch=args.batch_max, max_wait=args.batch_wait_ms / 1000, max_queue=1024)
        batchers = {name: MicroBatcher(model, options) for name, model in models.items()}

        def request(clip: np.ndarray) -> list[Any]:
            # What SpeechEmotionAnalyzer._run_models does for a single clip with batching on.
            outputs = []
            for name, batcher in batchers.items():
                t0 = time.perf_counter()
                outputs.append(batcher.process_signals([clip])[0])
                per_model_seconds[name].append(time.perf_counter() - t0)
            return outputs
    else:
        calls: dict[str, Callable[[np.ndarray], Any]] = {}
        networks: dict[str, Any] = {}
        if preset == "default":
            calls = {name: (lambda clip, m=model: m.process_signals([clip])) for name, model in models.items()}
            networks = {name: _network(model) for name, model in models.items()}
        else:
            from transformers import AutoFeatureExtractor, pipeline

            del models  # the baseline holds the pipelines' copies only
            report.models.clear()
            gc.collect()
            for arch in ARCHITECTURES:
                path = os.path.join(args.models_dir, *arch.hub_id.split("/"))
                extractor = os.path.join(args.models_dir, *arch.extractor.split("/")) if arch.extractor else path
                pipe = pipeline(
                    "audio-classification",
                    model=path,
                    feature_extractor=AutoFeatureExtractor.from_pretrained(extractor),
                    trust_remote_code=True,
                    device=args.device,
                    dtype=torch.float32,
                )
                calls[arch.name] = lambda clip, p=pipe: p(clip, top_k=None)
                networks[arch.name] = pipe.model

        def request(clip: np.ndarray) -> list[Any]:
            with lock:  # one request at a time, as a plain Flask app around pipelines would
                outputs = []
                for name, call in calls.items():
                    t0 = time.perf_counter()
                    outputs.append(call(clip))
                    per_model_seconds[name].append(time.perf_counter() - t0)
                return outputs

    result["load_s"] = round(time.perf_counter() - started, 2)
    gc.collect()
    result["rss_loaded_mb"] = round(rss_mb(), 1)
    result["peak_rss_load_mb"] = round(peak_rss_mb(), 1)
    peak_reset = reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    for clip in clips[: args.warmup]:
        request(clip)
    for times in per_model_seconds.values():
        times.clear()
    single = run_clients(request, clips[: args.requests_1], 1)
    single["per_model_ms"] = {name: round(statistics.fmean(t) * 1000, 1) for name, t in per_model_seconds.items() if t}
    single["rtf_x"] = round(CLIP_SECONDS * 1000 / single["mean_ms"], 2)
    result["c1"] = single
    result["c8"] = run_clients(request, clips[: args.requests], args.clients)
    result["peak_rss_serving_mb"] = round(peak_rss_mb(), 1) if peak_reset else None
    result["peak_rss_process_mb"] = round((_status_kb("VmHWM") or 0) / 1024, 1)
    # RSS now, split: anonymous memory vs pages mapped from the checkpoint files (clean page cache
    # the kernel can reclaim, and shared between processes that map the same files).
    result["rss_anon_mb"] = round((_status_kb("RssAnon") or 0) / 1024, 1)
    result["rss_file_mb"] = round((_status_kb("RssFile") or 0) / 1024, 1)
    if cuda:
        result["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)

    # FLOPs of one 5 s request, per model, on the fp32 (or fp16) path that FlopCounterMode sees.
    if result["quantize"] == "none" and not args.no_flops:
        clip = clips[0]
        if engine:
            result["flops_per_request"] = {
                name: count_flops(lambda m=m: m.process_signals([clip]), [_network(m)]) for name, m in models.items()
            }
        else:
            result["flops_per_request"] = {
                name: count_flops(lambda c=c: c(clip), [networks[name]]) for name, c in calls.items()
            }

    # Logits on real speech for the int8-vs-fp32 comparison (made in the parent).
    if engine and args.logits_out and preset == "full":
        speech = quality_clips(args.quality_clips)
        logits = {name: np.stack([_logits(m, c) for c in speech]) for name, m in models.items()}
        np.savez(args.logits_out, **logits)
        result["quality_clips"] = len(speech)
    if engine:
        for batcher in batchers.values():
            batcher.close()
        result["batches"] = {name: b.batches for name, b in batchers.items()}
    return result


# -- the parent: build, run the subprocesses, compare -------------------------------------------------


def spawn(args: argparse.Namespace, system: str, preset: str, quantize: str, logits_out: str | None) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        system,
        "--preset",
        preset,
        "--quantize",
        quantize,
        "--device",
        args.device,
        "--models-dir",
        str(args.models_dir),
        "--requests",
        str(args.requests_bundled if preset == "bundled" else args.requests),
        "--requests-1",
        str(args.requests_1_bundled if preset == "bundled" else args.requests_1),
        "--warmup",
        str(args.warmup_bundled if preset == "bundled" else args.warmup),
        "--clients",
        str(args.clients),
        "--batch-max",
        str(args.batch_max),
        "--batch-wait-ms",
        str(args.batch_wait_ms),
        "--torch-threads",
        str(args.torch_threads),
        "--quality-clips",
        str(args.quality_clips),
    ]
    if logits_out:
        command += ["--logits-out", logits_out]
    if args.no_flops:
        command.append("--no-flops")
    label = f"{system} {preset}" + (f" {quantize}" if system == "engine" else "")
    print(f"  running {label} ...", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {label}: {time.perf_counter() - started:.0f} s", flush=True)
    return result


def precision(device: str, quantize: str) -> str:
    return quantize if quantize != "none" else "fp16" if device.startswith("cuda") else "fp32"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return round(a / b, 2)


def cosine_summary(fp32_file: str, int8_file: str) -> dict[str, Any]:
    fp32, int8 = np.load(fp32_file), np.load(int8_file)
    out: dict[str, Any] = {}
    for name in fp32.files:
        a, b = fp32[name].astype(np.float64), int8[name].astype(np.float64)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        pa = np.exp(a - a.max(1, keepdims=True))
        pb = np.exp(b - b.max(1, keepdims=True))
        pa, pb = pa / pa.sum(1, keepdims=True), pb / pb.sum(1, keepdims=True)
        out[name] = {
            "clips": int(a.shape[0]),
            "cosine_mean": round(float(cosine.mean()), 5),
            "cosine_min": round(float(cosine.min()), 5),
            "top1_agreement": round(float((a.argmax(1) == b.argmax(1)).mean()), 3),
            "max_prob_diff": round(float(np.abs(pa - pb).max()), 4),
        }
    return out


def summarise(system: dict[str, Any], flops: dict[str, int] | None, peak_gflops: float | None) -> dict[str, Any]:
    """The figures of one run that go in the table."""
    figures = {
        "rtf_x": system["c1"]["rtf_x"],
        "p50_ms_c1": system["c1"]["p50_ms"],
        "p95_ms_c1": system["c1"]["p95_ms"],
        "p50_ms_c8": system["c8"]["p50_ms"],
        "p95_ms_c8": system["c8"]["p95_ms"],
        "throughput_c1": system["c1"]["throughput_audio_s_per_s"],
        "throughput_c8": system["c8"]["throughput_audio_s_per_s"],
        "peak_rss_serving_mb": system["peak_rss_serving_mb"],
        "peak_rss_load_mb": system["peak_rss_load_mb"],
        "rss_anon_mb": system["rss_anon_mb"],
        "rss_file_mb": system["rss_file_mb"],
        "cuda_peak_allocated_mb": system.get("cuda_peak_allocated_mb"),
    }
    if flops and peak_gflops:
        per_audio_second = sum(flops.values()) / CLIP_SECONDS
        achieved = per_audio_second * system["c8"]["throughput_audio_s_per_s"] / 1e9
        figures["gflop_per_audio_s"] = round(per_audio_second / 1e9, 2)
        figures["achieved_gflops_c8"] = round(achieved, 1)
        figures["share_of_peak_c8"] = round(achieved / peak_gflops, 3)
    return figures


ROWS = (
    ("rtf_x", "real-time factor (1 client, x real time)"),
    ("p50_ms_c1", "p50 latency, 1 client (ms)"),
    ("p95_ms_c1", "p95 latency, 1 client (ms)"),
    ("p50_ms_c8", "p50 latency, 8 clients (ms)"),
    ("p95_ms_c8", "p95 latency, 8 clients (ms)"),
    ("throughput_c1", "throughput, 1 client (audio s/s)"),
    ("throughput_c8", "throughput, 8 clients (audio s/s)"),
    ("peak_rss_serving_mb", "peak RSS serving (MB)"),
    ("peak_rss_load_mb", "peak RSS while loading (MB)"),
    ("rss_anon_mb", "RSS after serving: anonymous (MB)"),
    ("rss_file_mb", "RSS after serving: checkpoint pages (MB)"),
    ("cuda_peak_allocated_mb", "GPU memory peak, torch allocated (MB)"),
    ("gflop_per_audio_s", "GFLOP per audio second"),
    ("share_of_peak_c8", "share of fp32 matmul peak, 8 clients"),
)


def print_table(title: str, columns: dict[str, dict[str, Any]], baseline: str) -> None:
    names = list(columns)
    header = f"{'':44}" + "".join(f"{n:>18}" for n in names)
    header += "".join(f"{n + '/base':>18}" for n in names if n != baseline)
    print(f"\n{title}\n{header}")
    for key, label in ROWS:
        values = [columns[n].get(key) for n in names]
        if all(v is None for v in values):
            continue
        line = f"{label:44}" + "".join(f"{'-' if v is None else v:>18}" for v in values)
        for n in names:
            if n != baseline:
                r = ratio(columns[n].get(key), columns[baseline].get(key))
                line += f"{'-' if r is None else r:>18}"
        print(line)


def parent(args: argparse.Namespace) -> int:
    import torch

    cores = process_cores()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    quantizes = ["none", "int8"] if args.quantize == "both" else [args.quantize]
    if args.device.startswith("cuda"):
        quantizes = ["none"]  # int8 is CPU only; on CUDA the engine runs fp16
    keep = args.models_dir is not None
    args.models_dir = Path(args.models_dir or tempfile.mkdtemp(prefix="bench-engine-models-"))
    args.models_dir.mkdir(parents=True, exist_ok=True)
    # trust_remote_code copies ExHuBERT's code here instead of ~/.cache/huggingface/modules.
    os.environ["HF_MODULES_CACHE"] = str(args.models_dir / ".hf_modules")
    print(f"cores {cores}; load average {load_before}; models in {args.models_dir}", flush=True)
    try:
        started = time.perf_counter()
        parameters = build_models(args.models_dir, args.quick)
        build_s = time.perf_counter() - started
        gc.collect()
        torch.set_num_threads(cores)
        peak = matmul_peak_gflops(args.device)
        peak_key = "fp16_gflops" if args.device.startswith("cuda") else "fp32_gflops"
        print(f"arithmetic peak: {peak}", flush=True)

        runs: dict[str, dict[str, Any]] = {}
        with tempfile.TemporaryDirectory(prefix="bench-engine-logits-") as scratch:
            runs["bundled/baseline"] = spawn(args, "baseline", "bundled", "none", None)
            runs["bundled/engine"] = spawn(args, "engine", "bundled", "none", None)
            runs["full/baseline"] = spawn(args, "baseline", "full", "none", None)
            logits = {}
            for q in quantizes:
                logits[q] = os.path.join(scratch, f"logits-{q}.npz")
                runs[f"full/engine-{precision(args.device, q)}"] = spawn(args, "engine", "full", q, logits[q])
            quality = cosine_summary(logits["none"], logits["int8"]) if set(quantizes) == {"none", "int8"} else None
    finally:
        if not keep:
            shutil.rmtree(args.models_dir, ignore_errors=True)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    peak_gflops = peak.get(peak_key)
    main_engine = f"engine-{precision(args.device, 'none')}"  # fp32 on CPU, fp16 on CUDA
    engine_flops = runs.get(f"full/{main_engine}", {}).get("flops_per_request")
    baseline_flops = runs["full/baseline"].get("flops_per_request")
    bundled_flops = runs["bundled/engine"].get("flops_per_request")
    full_cols = {"baseline": summarise(runs["full/baseline"], baseline_flops, peak_gflops)}
    for key, run in runs.items():
        if key.startswith("full/engine"):
            # int8 does the same work as fp32: its share is of the fp32 peak, in fp32-equivalent FLOPs
            # (the int8 units' own peak is higher).
            full_cols[key.split("/", 1)[1]] = summarise(run, engine_flops, peak_gflops)
    bundled_cols = {
        "baseline": summarise(runs["bundled/baseline"], runs["bundled/baseline"].get("flops_per_request"), peak_gflops),
        "engine": summarise(runs["bundled/engine"], bundled_flops, peak_gflops),
    }

    fp32_weights_mb = sum(parameters.values()) * 4 / 2**20
    best_engine = max(
        (k for k in full_cols if k != "baseline"), key=lambda k: full_cols[k]["throughput_c8"], default=None
    )
    ratios = {
        "full": {
            name: {key: ratio(col.get(key), full_cols["baseline"].get(key)) for key, _ in ROWS}
            for name, col in full_cols.items()
            if name != "baseline"
        },
        "bundled": {key: ratio(bundled_cols["engine"].get(key), bundled_cols["baseline"].get(key)) for key, _ in ROWS},
    }
    per_model_rtf = {
        key: {name: round(CLIP_SECONDS * 1000 / ms, 2) for name, ms in run["c1"]["per_model_ms"].items()}
        for key, run in runs.items()
    }
    engine_main = full_cols.get(main_engine)
    memory_x = engine_main["peak_rss_serving_mb"] / fp32_weights_mb if engine_main else None
    targets = {
        "full_throughput_c8_x_baseline": {
            "target": TARGETS["full_throughput_x"],
            "measured": {k: ratios["full"][k]["throughput_c8"] for k in ratios["full"]},
            "met": bool(best_engine and ratios["full"][best_engine]["throughput_c8"] >= TARGETS["full_throughput_x"]),
        },
        "full_peak_rss_over_fp32_weights": {
            "target": f"< {TARGETS['memory_over_weights']}",
            "fp32_weights_mb": round(fp32_weights_mb, 1),
            f"measured_{main_engine.replace('-', '_')}": round(memory_x, 3) if memory_x else None,
            "measured_engine_int8": round(full_cols["engine-int8"]["peak_rss_serving_mb"] / fp32_weights_mb, 3)
            if "engine-int8" in full_cols
            else None,
            "met": bool(memory_x and memory_x < TARGETS["memory_over_weights"]),
        },
        "bundled_audio_s_per_s_c8": {
            "target": TARGETS["bundled_audio_s_per_s"],
            "measured": bundled_cols["engine"]["throughput_c8"],
            "met": bundled_cols["engine"]["throughput_c8"] >= TARGETS["bundled_audio_s_per_s"],
        },
    }

    print(
        f"\n{'QUICK (small copies of the architectures) - ' if args.quick else ''}"
        f"5 s clips ({runs['full/baseline']['clips']}), device {args.device}, {cores} cores, "
        f"load average {load_before} before / {load_after} after; models built in {build_s:.0f} s"
    )
    print(f"parameters: {parameters}; fp32 weights {fp32_weights_mb:.0f} MB")
    print(f"peak: {peak}")
    print_table("full preset (ExHuBERT + HuBERT-Large + Wav2Vec2-XLSR, random weights)", full_cols, "baseline")
    print_table("bundled model", bundled_cols, "baseline")
    print("\nreal-time factor per model (1 client):")
    for key, values in per_model_rtf.items():
        print(f"  {key:24} {values}")
    if quality:
        print("\nint8 vs fp32 logits on real speech (random weights: numerical error of the int8 path):")
        for name, q in quality.items():
            print(f"  {name:16} {q}")
    print("\ntargets" + (" (they apply to the full-size run, not to --quick):" if args.quick else ":"))
    for name, target in targets.items():
        print(f"  {name}: {'MET' if target['met'] else 'MISSED'} {target}")
    summary = {
        "quick": args.quick,
        "device": args.device,
        "cores": cores,
        "load_average": {"before": load_before, "after": load_after},
        "clip_seconds": CLIP_SECONDS,
        "parameters": parameters,
        "fp32_weights_mb": round(fp32_weights_mb, 1),
        "peak": peak,
        "flops_method": "torch.utils.flop_counter.FlopCounterMode around one 5 s request per fp32 model "
        "(matmuls, convolutions, attention; elementwise ops not counted)",
        "full": full_cols,
        "bundled": bundled_cols,
        "ratios_engine_over_baseline": ratios,
        "rtf_per_model": per_model_rtf,
        "int8_quality": quality,
        "targets": targets,
        "targets_apply": not args.quick,
        "runs": runs,
    }
    print(describe(), flush=True)
    print(json.dumps({**summary, "cpu": cpu_info()}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small copies of the architectures, few requests")
    parser.add_argument("--quantize", choices=("none", "int8", "both"), default="both", help="engine precision")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--models-dir", default=None, help="build (or reuse) the models here and keep them")
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="engine TORCH_THREADS (0: automatic; -1: no thread plan)"
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=None, help="requests at 8 clients (full preset)")
    parser.add_argument("--batch-max", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--quality-clips", type=int, default=None, help="real clips for int8 vs fp32")
    parser.add_argument("--no-flops", action="store_true", help="skip counting FLOPs")
    # Used by the parent to start a worker subprocess.
    parser.add_argument("--worker", choices=("engine", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--preset", choices=("full", "bundled"), help=argparse.SUPPRESS)
    parser.add_argument("--requests-1", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--logits-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    quick = args.quick
    args.requests = args.requests or (8 if quick else 16)
    args.requests_1 = 2 if quick else 4
    args.warmup = 1
    args.requests_bundled, args.requests_1_bundled, args.warmup_bundled = (80, 20, 3) if quick else (800, 200, 20)
    args.quality_clips = args.quality_clips or (4 if quick else 12)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
