"""The analyzer: decoded audio in, typed analysis results out.

``SpeechEmotionAnalyzer`` is what the HTTP layer and library users call. It owns one copy of
each model of a preset, shared by all threads; models load on :meth:`load` (the constructor
calls it unless ``load=False``), never at import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from ..audio.decode import AudioLimits, DecodedAudio, decode_audio, load_audio
from ..audio.decode_gate import DecodeGate
from ..audio.prosody import DeliveryMetrics, Pause, measure
from ..audio.segmentation import speech_only
from ..config import SAMPLING_RATE, ModelsConfig, Settings, load_models_config
from ..errors import BaselineUnavailable, ModelUnavailable, ServiceError
from ..models.base import EmotionModel, ModelOutput, SpeakerAdaptive
from ..models.registry import LoadFailure, LoadReport, load_preset
from .assessment import Assessment, SessionSummary, assess, summarise_session
from .baselines import BaselineStore, make_baseline_store
from .batching import BatchOptions, MicroBatcher
from .cache import ResultCache, cache_key, make_cache
from .ensemble import EnsembleResult, ModelResult, combine

logger = logging.getLogger(__name__)

AudioInput = Union[str, "os.PathLike[str]", bytes, np.ndarray]


@dataclass(frozen=True)
class AnalysisResult:
    """Everything known about one clip: the spec's ``data`` object, typed."""

    audio: DecodedAudio
    models: list[ModelResult]
    ensemble: EnsembleResult | None  # None when emotion inference is off (EMOTION_INFERENCE=off)
    assessment: Assessment | None
    processing_time: float
    delivery: DeliveryMetrics | None = None
    cached: bool = False
    baseline: BaselineUse | None = None  # None when no model of the preset uses speaker baselines


@dataclass(frozen=True)
class BaselineUse:
    """How a clip was judged by the models that know the speaker's usual voice.

    Attributes:
        mode: ``baseline`` (against the speaker's baseline) or ``clip`` (alone: no baseline, or
            one of fewer clips than the model needs).
        clips: Clips in the baseline (this request's included); 0 for a clip alone.
        source: ``candidate`` (the candidate's running statistics), ``session`` (this request's
            clips only) or None (a clip alone).
    """

    mode: str
    clips: int
    source: str | None


@dataclass(frozen=True)
class SegmentOutcome:
    """One segment of a session: its result, or the error that stopped it."""

    index: int
    result: AnalysisResult | None = None
    error: ServiceError | None = None


@dataclass(frozen=True)
class SessionResult:
    """The segments of one session and their summary (None when no segment could be analysed)."""

    segments: list[SegmentOutcome]
    summary: SessionSummary | None


class SpeechEmotionAnalyzer:
    """Analyse the emotion of speech with an ensemble of models.

    Example:
        >>> analyzer = SpeechEmotionAnalyzer()          # the offline default preset
        >>> result = analyzer.analyze("answer.wav")
        >>> result.ensemble.label, result.assessment.score

    Args:
        preset: Preset of the models config (``default``: Whisper encoder + head; ``fast``: the small CNN; ``full``: the spec's
            three hub models).
        models_config: A parsed models config; default the packaged one.
        models_dir: Directory of pre-downloaded models / hub cache.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        quantize: ``auto`` (each model as its models.toml entry says), ``none`` (fp32) or ``int8``
            (int8 linear layers on CPU for every model that has them).
        speech_only: The models hear only the speech of a clip: leading, trailing and long inner
            silences cut by the energy VAD (``MODEL_INPUT=speech``; delivery metrics see it all).
        limits: Limits on the audio accepted.
        cache: Where to keep model outputs of audio already analysed (None: no cache).
        batching: Group clips of concurrent requests per model (None: each request on its own).
        emotion_inference: False loads no emotion model and serves delivery metrics only
            (``EMOTION_INFERENCE=off``, for places where emotion recognition at work is forbidden).
        baselines: Where candidates' running statistics live (None: no candidate baselines).
        load: Load the models now (default). The server passes False and loads in the background.
    """

    def __init__(
        self,
        preset: str = "default",
        *,
        models_config: ModelsConfig | None = None,
        models_dir: str | None = None,
        device: str = "auto",
        quantize: str = "auto",
        speech_only: bool = False,
        limits: AudioLimits | None = None,
        cache: ResultCache | None = None,
        batching: BatchOptions | None = None,
        emotion_inference: bool = True,
        decode_gate: DecodeGate | None = None,
        baselines: BaselineStore | None = None,
        load: bool = True,
    ) -> None:
        self.preset = preset
        self.models_config = models_config or load_models_config()
        self.models_config.preset(preset)  # fail early on an unknown preset
        self.models_dir = models_dir
        self.device = device
        self.quantize = quantize
        self.speech_only = speech_only
        self.limits = limits or AudioLimits()
        self.cache = cache
        self.batching = batching
        self.emotion_inference = emotion_inference
        self.decode_gate = decode_gate
        self.baselines = baselines if emotion_inference else None  # never kept when emotions are off
        self._batchers: dict[str, MicroBatcher] = {}
        self._report: LoadReport | None = None
        self._lock = threading.Lock()
        self._loading = False
        if load:
            self.load()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        max_seconds: float | None = None,
        batching: bool = True,
        load: bool = True,
        on_cache_error: Callable[[], None] | None = None,
    ) -> SpeechEmotionAnalyzer:
        """The analyzer the service runs with ``settings`` (models, limits, cache, micro-batching).

        Args:
            settings: Service settings (``Settings.from_env()`` reads them from the environment).
            max_seconds: Longest recording accepted; default ``settings.max_audio_seconds``.
            batching: Group concurrent requests' clips per model (``BATCH_MAX`` > 1).
            load: Load the models now.
            on_cache_error: Called once each time the result cache fails (the server counts it in
                its metrics); the analysis goes on without the cache.
        """
        return cls(
            settings.model_preset,
            models_config=load_models_config(settings.models_config),
            models_dir=settings.models_dir,
            device=settings.device,
            quantize=settings.quantize,
            speech_only=settings.model_input == "speech",
            limits=AudioLimits(
                max_bytes=int(settings.max_upload_mb * 1_000_000),
                min_seconds=settings.min_audio_seconds,
                max_seconds=max_seconds or settings.max_audio_seconds,
            ),
            cache=make_cache(settings.cache_size, settings.redis_url, settings.cache_ttl, on_error=on_cache_error),
            batching=BatchOptions(
                max_batch=settings.batch_max, max_wait=settings.batch_wait_ms / 1000, max_queue=settings.max_queue
            )
            if batching and settings.batch_max > 1
            else None,
            emotion_inference=settings.emotion_inference,
            decode_gate=DecodeGate(settings.max_decodes),
            baselines=make_baseline_store(
                settings.baseline_ttl_hours, settings.redis_url, settings.baseline_secret, on_cache_error
            )
            if settings.emotion_inference
            else None,
            load=load,
        )

    @classmethod
    def from_models(
        cls,
        models: Mapping[str, EmotionModel],
        weights: Mapping[str, float] | None = None,
        *,
        limits: AudioLimits | None = None,
        cache: ResultCache | None = None,
        batching: BatchOptions | None = None,
        decode_gate: DecodeGate | None = None,
        baselines: BaselineStore | None = None,
    ) -> SpeechEmotionAnalyzer:
        """Build an analyzer around models that are already loaded (tests, custom backends)."""
        analyzer = cls.__new__(cls)
        analyzer.preset = "custom"
        analyzer.models_config = ModelsConfig(models={}, presets={}, path="(in memory)")
        analyzer.models_dir = None
        analyzer.device = "cpu"
        analyzer.quantize = "none"
        analyzer.speech_only = False
        analyzer.limits = limits or AudioLimits()
        analyzer.cache = cache
        analyzer.batching = batching
        analyzer.emotion_inference = True
        analyzer.decode_gate = decode_gate
        analyzer.baselines = baselines
        analyzer._batchers = {name: MicroBatcher(model, batching) for name, model in models.items()} if batching else {}
        analyzer._lock = threading.Lock()
        analyzer._loading = False
        analyzer._report = LoadReport(
            preset="custom", models=dict(models), weights={name: (weights or {}).get(name, 1.0) for name in models}
        )
        return analyzer

    # -- loading -------------------------------------------------------------------------------

    def load(self) -> LoadReport:
        """Load the preset's models (once; later calls return the same report)."""
        with self._lock:
            if self._report is None and not self.emotion_inference:
                self._report = LoadReport(preset=self.preset)
            if self._report is None:
                self._loading = True
                try:
                    report = load_preset(
                        self.models_config,
                        self.preset,
                        models_dir=self.models_dir,
                        device=self.device,
                        quantize=self.quantize,
                    )
                    if self.batching:
                        self._batchers = {name: MicroBatcher(m, self.batching) for name, m in report.models.items()}
                    self._report = report
                finally:
                    self._loading = False
            return self._report

    def load_in_background(self) -> threading.Thread:
        """Start loading the models in a daemon thread; /health says ``loading`` meanwhile."""
        thread = threading.Thread(target=self.load, name="model-loader", daemon=True)
        self._loading = True
        thread.start()
        return thread

    @property
    def loading(self) -> bool:
        return self._report is None and self._loading

    @property
    def models(self) -> dict[str, EmotionModel]:
        return self._report.models if self._report else {}

    @property
    def failures(self) -> list[LoadFailure]:
        return self._report.failures if self._report else []

    def _require_models(self) -> LoadReport:
        report = self._report
        if report is None:
            raise ModelUnavailable("The models are still loading; retry in a few seconds.", error_code="MODELS_LOADING")
        if not report.models and self.emotion_inference:
            reasons = "; ".join(f"{f.name}: {f.reason}" for f in report.failures) or "the preset has no models"
            raise ModelUnavailable(
                f"No emotion model is loaded ({reasons}). See /health, and the README section "
                "'Models' for how to pre-download models or use the bundled default preset."
            )
        return report

    # -- analysis ------------------------------------------------------------------------------

    def _decoding(self) -> AbstractContextManager[None]:
        """A slot of the decode gate (``MAX_DECODES``), or nothing when there is no gate."""
        return self.decode_gate.slot() if self.decode_gate is not None else contextlib.nullcontext()

    def decode(self, audio: AudioInput, sampling_rate: int | None = None) -> DecodedAudio:
        """Decode and validate one input: encoded bytes, a file path, or an array."""
        if isinstance(audio, bytes | bytearray | memoryview):
            return decode_audio(bytes(audio), self.limits)
        return load_audio(audio, sampling_rate, self.limits)

    def analyze(
        self,
        audio: AudioInput,
        sampling_rate: int | None = None,
        *,
        lang: str = "zh",
        candidate_id: str | None = None,
    ) -> AnalysisResult:
        """Analyse one clip.

        Args:
            audio: Encoded file bytes, a path, or a float array (then ``sampling_rate`` is needed).
            sampling_rate: Sampling rate of an array input.
            lang: ``zh`` or ``en`` for the advice.
            candidate_id: The platform's id for the speaker: the clip is judged against the
                candidate's baseline, which it then joins.

        Raises:
            InvalidAudio: The audio cannot be decoded or is unusable (the message says why).
            ModelUnavailable: No model is loaded.
        """
        started = time.perf_counter()
        report = self._require_models()
        with self._decoding():
            decoded = self.decode(audio, sampling_rate)
        return self._analyze_decoded(
            [decoded], report, lang=lang, same_speaker=False, started=started, candidate_id=candidate_id
        )[0]

    def analyze_session(
        self,
        segments: Sequence[AudioInput],
        sampling_rate: int | None = None,
        *,
        lang: str = "zh",
        candidate_id: str | None = None,
        candidate_key: str | None = None,
    ) -> SessionResult:
        """Analyse the segments of one interview session (one speaker), in order.

        A segment that cannot be decoded is reported in its :class:`SegmentOutcome` and left out
        of the summary; the others are analysed together, so models may normalise per speaker
        (against the candidate's baseline, which they then join, when ``candidate_id`` is given;
        ``candidate_key`` is the same as its keyed hash, :meth:`candidate_key`, for callers that
        keep only that, such as jobs).
        """
        started = time.perf_counter()
        report = self._require_models()
        outcomes: dict[int, SegmentOutcome] = {}
        decoded: list[tuple[int, DecodedAudio]] = []
        with self._decoding():  # one slot for the session: its segments decode one after another
            for index, segment in enumerate(segments):
                try:
                    decoded.append((index, self.decode(segment, sampling_rate)))
                except ServiceError as exc:
                    outcomes[index] = SegmentOutcome(index=index, error=exc)
        results = (
            self._analyze_decoded(
                [d for _, d in decoded],
                report,
                lang=lang,
                same_speaker=True,
                started=started,
                candidate_id=candidate_id,
                candidate_key=candidate_key,
            )
            if decoded
            else []
        )
        for (index, _), result in zip(decoded, results, strict=True):
            outcomes[index] = SegmentOutcome(index=index, result=result)
        ensembles = [r.ensemble for r in results if r.ensemble is not None]
        summary = (
            summarise_session(ensembles, [r.audio.duration for r in results], lang=lang)
            if results and len(ensembles) == len(results)
            else None
        )
        return SessionResult(segments=[outcomes[i] for i in range(len(segments))], summary=summary)

    def _analyze_decoded(
        self,
        clips: list[DecodedAudio],
        report: LoadReport,
        *,
        lang: str,
        same_speaker: bool,
        started: float,
        candidate_id: str | None = None,
        candidate_key: str | None = None,
    ) -> list[AnalysisResult]:
        signals = [clip.signal for clip in clips]
        if not report.models:  # emotion inference is off: delivery metrics only
            return [
                AnalysisResult(
                    clip, [], None, None, time.perf_counter() - started, measure(clip.signal, clip.sampling_rate)
                )
                for clip in clips
            ]
        # A candidate's clips depend on what the store holds for them: never served from the cache.
        candidate = self._candidate_key(candidate_id, report) if candidate_key is None else candidate_key
        if self.baselines is None:
            candidate = None
        cached = self._cached(signals, report, same_speaker) if candidate is None else [None] * len(signals)
        fresh, used = (
            self._run_models(signals, report, same_speaker, candidate)
            if any(c is None for c in cached)
            else (None, None)
        )
        adaptive = [m for m in report.models.values() if isinstance(m, SpeakerAdaptive)]
        if used is None and adaptive:
            needed = min(m.min_baseline for m in adaptive)
            on_session = same_speaker and len(signals) >= needed
            used = BaselineUse("baseline" if on_session else "clip", len(signals) if same_speaker else 0,
                               "session" if same_speaker else None)  # fmt: skip
        analyses = []
        for i, clip in enumerate(clips):
            hit = cached[i]
            if hit is not None:
                results, delivery = hit
            else:
                assert fresh is not None
                results, delivery = fresh[i], measure(clip.signal, clip.sampling_rate)
                if candidate is None:
                    self._store(signals, i, report, same_speaker, results, delivery)
            verdict = combine(results, report.weights)
            analyses.append(
                AnalysisResult(
                    audio=clip,
                    models=results,
                    ensemble=verdict,
                    assessment=assess(verdict, lang=lang),
                    processing_time=time.perf_counter() - started,
                    delivery=delivery,
                    cached=hit is not None,
                    baseline=used,
                )
            )
        return analyses

    def _candidate_key(self, candidate_id: str | None, report: LoadReport) -> str | None:
        if candidate_id is None or self.baselines is None:
            return None
        if not any(isinstance(m, SpeakerAdaptive) for m in report.models.values()):
            return None
        try:
            return self.baselines.key(candidate_id)
        except BaselineUnavailable:
            return None  # logged and counted by the store; the clip is judged on its own or in its session

    def candidate_key(self, candidate_id: str) -> str | None:
        """The keyed hash under which a candidate's baseline is kept (None: baselines are off).

        Raises:
            BaselineUnavailable: The store cannot be reached.
        """
        return None if self.baselines is None else self.baselines.key(candidate_id)

    def forget_candidate(self, candidate_id: str) -> bool:
        """Delete what is kept about a candidate (every model's baseline); True if there was any.

        Raises:
            BaselineUnavailable: The store cannot be reached.
        """
        if self.baselines is None:
            return False
        names = [name for name, m in self.models.items() if isinstance(m, SpeakerAdaptive)]
        return self.baselines.delete(names, self.baselines.key(candidate_id))

    def _run_models(
        self, signals: list[np.ndarray], report: LoadReport, same_speaker: bool, candidate: str | None = None
    ) -> tuple[list[list[ModelResult]], BaselineUse | None]:
        per_clip: list[list[ModelResult]] = [[] for _ in signals]
        used: BaselineUse | None = None
        if self.speech_only:  # MODEL_INPUT=speech: the models hear no leading, trailing or long inner silence
            signals = [speech_only(s) for s in signals]
        for name, model in report.models.items():
            t0 = time.perf_counter()
            batcher = self._batchers.get(name)
            if isinstance(model, SpeakerAdaptive) and candidate is not None and self.baselines is not None:
                features = model.standardised(signals)
                session = model.baseline_stats(features)
                prior = self.baselines.get(name, candidate)
                baseline = session if prior is None or not prior.fits(session) else prior + session
                # A single clip without a history is judged alone, as it would be without an id.
                judged = baseline if same_speaker or baseline.clips > len(signals) else None
                outputs = model.score(features, judged)
                self.baselines.add(name, candidate, session)
                on_baseline = judged is not None and judged.clips >= model.min_baseline
                used = BaselineUse("baseline" if on_baseline else "clip", baseline.clips, "candidate")
            elif batcher is not None and not same_speaker:
                # Independent clips may share a batch with other requests' clips; one speaker's
                # clips are normalised together, so they go through the model on their own.
                outputs = batcher.process_signals(signals)
            else:
                outputs = model.process_signals(signals, SAMPLING_RATE, same_speaker=same_speaker)
            seconds = (time.perf_counter() - t0) / len(signals)
            for results, output in zip(per_clip, outputs, strict=True):
                results.append(ModelResult(name, model.info.display_name, output, seconds))
        return per_clip, used

    # -- result cache ---------------------------------------------------------------------------

    def _key(self, signals: list[np.ndarray], index: int, report: LoadReport, same_speaker: bool) -> str:
        # An int8 model's outputs differ slightly from its fp32 ones: the dtype is part of the version.
        versions = [(name, f"{m.info.version}:{m.info.extra.get('dtype', '')}") for name, m in report.models.items()]
        weights = ",".join(f"{name}={weight}" for name, weight in sorted(report.weights.items()))
        weights += ";speech" if self.speech_only else ""
        if same_speaker:
            return cache_key(signals, index, versions, f"session;{weights}")
        return cache_key([signals[index]], 0, versions, f"clip;{weights}")

    def _cached(
        self, signals: list[np.ndarray], report: LoadReport, same_speaker: bool
    ) -> list[tuple[list[ModelResult], DeliveryMetrics] | None]:
        if self.cache is None:
            return [None] * len(signals)
        hits = [_from_cache(self.cache.get(self._key(signals, i, report, same_speaker))) for i in range(len(signals))]
        # Clips of one speaker are normalised together: a partial hit means recomputing them all.
        if same_speaker and any(hit is None for hit in hits):
            return [None] * len(signals)
        return hits

    def _store(
        self,
        signals: list[np.ndarray],
        index: int,
        report: LoadReport,
        same_speaker: bool,
        results: list[ModelResult],
        delivery: DeliveryMetrics,
    ) -> None:
        if self.cache is not None:
            self.cache.set(self._key(signals, index, report, same_speaker), _to_cache(results, delivery))


def _to_cache(results: list[ModelResult], delivery: DeliveryMetrics) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": r.name,
                "display_name": r.display_name,
                "probabilities": r.output.probabilities,
                "arousal": r.output.arousal,
                "valence": r.output.valence,
                "inference_time": r.inference_time,
            }
            for r in results
        ],
        "delivery": dataclasses.asdict(delivery),
    }


def _from_cache(value: dict[str, Any] | None) -> tuple[list[ModelResult], DeliveryMetrics] | None:
    if value is None:
        return None
    results = [
        ModelResult(
            m["name"],
            m["display_name"],
            ModelOutput(m["probabilities"], m["arousal"], m["valence"]),
            m["inference_time"],
        )
        for m in value["models"]
    ]
    delivery = dict(value["delivery"])
    delivery["pauses"] = tuple(Pause(**p) for p in delivery["pauses"])
    return results, DeliveryMetrics(**delivery)
