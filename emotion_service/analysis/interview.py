"""Whole interviews: segmentation, a timeline, delivery metrics and a session assessment.

A recording (or the client's own question/answer time ranges) is cut into speech segments
(:mod:`emotion_service.audio.segmentation`), every segment gets emotion probabilities, valence/arousal and delivery
metrics, and the session is assessed against the candidate's **own baseline** where that is fairer
than fixed thresholds: moments that stand out are the segments furthest from the candidate's mean;
pitch variability and speaking rate are compared between the candidate's own answers. Every
recommendation carries the measurement behind it (``evidence``) and names the answers or the
moments it is about. All numbers live in :class:`InterviewRules`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..audio.decode import AudioLimits, DecodedAudio, decode_audio, load_audio
from ..audio.prosody import DeliveryMetrics, measure
from ..audio.segmentation import SegmentOptions, SpeechSegment, find_speech
from ..config import SAMPLING_RATE
from ..errors import InvalidAudio, InvalidRequest
from ..labels import CANONICAL_LABELS, display_name
from .analyzer import AnalysisResult, AudioInput, SpeechEmotionAnalyzer
from .assessment import DEFAULT_RULES, AssessmentRules, SessionSummary, emotion_type, summarise_session

# Where each category sits on the valence (0 negative .. 1 positive) x arousal (0 low .. 1 high)
# plane, after Russell's circumplex (1980). Used only when no model estimates the dimensions
# directly; the result then says ``dimensions: "derived"``.
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "neutral": (0.50, 0.40),
    "calm": (0.65, 0.25),
    "happy": (0.85, 0.70),
    "sad": (0.20, 0.25),
    "angry": (0.15, 0.85),
    "fearful": (0.20, 0.75),
    "disgust": (0.20, 0.55),
    "surprised": (0.60, 0.85),
}


@dataclass(frozen=True)
class InterviewRules:
    """Every number the interview assessment uses (defaults from DELIVERY.md).

    Attributes:
        long_pause: A pause at least this long (s) reads as hesitation (DELIVERY.md: > 1 s).
        rate_norms: Normal speech rate (syllables/s, pauses included) per language of the
            answers: outside it, the rate is mentioned.
        rate_change: An answer whose rate differs from the candidate's own median by more than
            this share is mentioned (the just-noticeable difference is about 10%).
        flat_pitch: An answer whose pitch variability is below this share of the candidate's
            own median variability is mentioned as flatter than usual.
        moment_z: A segment stands out when its valence or arousal is this many standard
            deviations from the candidate's own mean.
        max_moments: Most moments reported.
        trend_change: A change of valence/arousal (0..1 scale) between the first and last third
            of the interview larger than this is reported as settling down or tensing up.
        chunk_segments: Segments analysed together (one speaker: models may normalise over them).
        assessment: The per-clip rules (scores per emotion, confidence levels).
    """

    long_pause: float = 1.0
    rate_norms: dict[str, tuple[float, float]] = field(default_factory=lambda: {"zh": (3.0, 4.5), "en": (3.3, 5.0)})
    rate_change: float = 0.2
    flat_pitch: float = 0.5
    moment_z: float = 1.5
    max_moments: int = 3
    trend_change: float = 0.1
    chunk_segments: int = 32
    assessment: AssessmentRules = DEFAULT_RULES


DEFAULT_INTERVIEW_RULES = InterviewRules()


@dataclass(frozen=True)
class QuestionRange:
    """A client's time range for one question and its answer, seconds from the start."""

    start: float
    end: float
    label: str | None = None


@dataclass(frozen=True)
class TimelineEntry:
    """One speech segment of the interview."""

    index: int
    start: float
    end: float
    question: int | None  # 1-based index of the client's range it belongs to
    result: AnalysisResult
    valence: float | None  # None when emotion inference is off
    arousal: float | None


@dataclass(frozen=True)
class QuestionSummary:
    """One of the client's ranges: its segments, dominant emotion and delivery."""

    index: int
    start: float
    end: float
    label: str | None
    segments: int
    dominant_label: str | None
    delivery: DeliveryMetrics


@dataclass(frozen=True)
class Trend:
    """A dimension (0..1) over the interview: level, spread and direction."""

    mean: float
    sd: float
    slope_per_minute: float
    first_third: float
    last_third: float


@dataclass(frozen=True)
class Moment:
    """A segment whose valence or arousal departs most from the candidate's own baseline."""

    index: int
    start: float
    end: float
    dimension: str  # valence / arousal
    value: float
    z: float


@dataclass(frozen=True)
class Recommendation:
    """Advice, with the measurement it rests on."""

    code: str
    text: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class InterviewAssessment:
    """The session assessment: stability, trends, moments and advice."""

    recommendations: list[Recommendation]
    # The emotion findings; all None (moments empty) when emotion inference is off.
    dominant_label: str | None = None
    dominant_share: float | None = None
    emotion_changes: int | None = None
    changes_per_minute: float | None = None
    dimensions: str | None = None  # "model" (estimated by a model) or "derived" (from the categories)
    valence: Trend | None = None
    arousal: Trend | None = None
    direction: str | None = None  # settled / tensed / steady
    moments: list[Moment] = field(default_factory=list)
    average_score: float | None = None
    emotion_type: str | None = None


@dataclass(frozen=True)
class InterviewResult:
    """Everything known about one interview recording."""

    audio: DecodedAudio
    delivery: DeliveryMetrics
    timeline: list[TimelineEntry]
    questions: list[QuestionSummary]
    summary: SessionSummary | None
    assessment: InterviewAssessment | None
    segments_skipped: int


# -- analysis ---------------------------------------------------------------------------------


def _dimensions(result: AnalysisResult) -> tuple[float, float, bool]:
    """Valence and arousal of a segment, and whether a model estimated them."""
    ensemble = result.ensemble
    if ensemble.valence is not None and ensemble.arousal is not None:
        return ensemble.valence, ensemble.arousal, True
    p = ensemble.probabilities
    valence = sum(p[label] * CIRCUMPLEX[label][0] for label in CANONICAL_LABELS)
    arousal = sum(p[label] * CIRCUMPLEX[label][1] for label in CANONICAL_LABELS)
    return valence, arousal, False


def parse_ranges(value: Any) -> list[QuestionRange]:
    """Read ``[{"start": s, "end": e, "label": "..."}, ...]`` or ``[[s, e], ...]``.

    Raises:
        InvalidRequest: Not a list of ranges with 0 <= start < end.
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(
            'ranges must be a list such as [{"start": 0, "end": 95.5}, ...].', error_code="INVALID_RANGES"
        )
    ranges = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            start, end, label = item.get("start"), item.get("end"), item.get("label")
        elif isinstance(item, list | tuple) and len(item) == 2:
            (start, end), label = item, None
        else:
            start = end = label = None
        valid = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (start, end))
        if not valid or not 0 <= start < end or (label is not None and not isinstance(label, str)):  # type: ignore[operator]
            raise InvalidRequest(
                f'ranges[{i}] must be {{"start": seconds, "end": seconds}} with 0 <= start < end.',
                error_code="INVALID_RANGES",
            )
        ranges.append(QuestionRange(float(start), float(end), label))  # type: ignore[arg-type]
    return ranges


def analyze_interview(
    analyzer: SpeechEmotionAnalyzer,
    audio: AudioInput,
    sampling_rate: int | None = None,
    *,
    ranges: Sequence[QuestionRange] = (),
    lang: str = "zh",
    speech_lang: str = "zh",
    limits: AudioLimits | None = None,
    segments: SegmentOptions | None = None,
    rules: InterviewRules = DEFAULT_INTERVIEW_RULES,
    progress: Callable[[float], None] | None = None,
    candidate_key: str | None = None,
) -> InterviewResult:
    """Analyse a whole interview recording.

    Args:
        analyzer: Loaded models.
        audio: Encoded bytes, a path, or an array with ``sampling_rate``.
        ranges: The client's question/answer time ranges; segments are then found inside each
            range and results are grouped per question. Empty: the whole recording.
        lang: Language of the advice (``zh`` or ``en``).
        speech_lang: Language the candidate speaks, for the speech-rate norms.
        limits: Limits on the recording (longer than for single clips).
        segments: How speech is cut into segments.
        rules: Every number of the assessment.
        progress: Called with 0..1 as the work advances.
        candidate_key: The candidate's keyed hash (:meth:`SpeechEmotionAnalyzer.candidate_key`):
            segments are judged against, and join, the candidate's baseline.

    Raises:
        InvalidAudio: The recording is unusable, or has no speech.
        InvalidRequest: A range lies outside the recording.
    """
    report = progress or (lambda fraction: None)
    decoded = _decode(audio, sampling_rate, limits or analyzer.limits)
    signal = decoded.signal
    report(0.05)
    pieces = _pieces(signal, ranges, decoded.duration, segments)
    delivery = measure(signal)
    report(0.15)

    timeline: list[TimelineEntry] = []
    skipped = 0
    chunk = max(1, rules.chunk_segments)
    any_model_dimensions = False
    for first in range(0, len(pieces), chunk):
        batch = pieces[first : first + chunk]
        session = analyzer.analyze_session(
            [seg.slice(signal) for seg, _ in batch], SAMPLING_RATE, lang=lang, candidate_key=candidate_key
        )
        for (seg, question), outcome in zip(batch, session.segments, strict=True):
            if outcome.result is None:
                skipped += 1  # e.g. shorter than MIN_AUDIO_SECONDS
                continue
            valence = arousal = None
            if outcome.result.ensemble is not None:
                valence, arousal, from_model = _dimensions(outcome.result)
                any_model_dimensions |= from_model
            timeline.append(
                TimelineEntry(len(timeline), seg.start, seg.end, question, outcome.result, valence, arousal)
            )
        report(0.15 + 0.8 * min(1.0, (first + len(batch)) / max(1, len(pieces))))

    questions = [_question(i + 1, r, signal, timeline) for i, r in enumerate(ranges)]
    summary = assessment = None
    if timeline:
        if analyzer.emotion_inference:
            summary = summarise_session(
                [e.result.ensemble for e in timeline],  # type: ignore[misc]
                [e.end - e.start for e in timeline],
                lang=lang,
                rules=rules.assessment,
            )
        assessment = assess_interview(
            timeline,
            questions,
            delivery,
            summary,
            lang=lang,
            speech_lang=speech_lang,
            rules=rules,
            dimensions="model" if any_model_dimensions else "derived",
        )
    report(1.0)
    return InterviewResult(decoded, delivery, timeline, questions, summary, assessment, skipped)


def _decode(audio: AudioInput, sampling_rate: int | None, limits: AudioLimits) -> DecodedAudio:
    if isinstance(audio, bytes | bytearray | memoryview):
        return decode_audio(bytes(audio), limits)
    return load_audio(audio, sampling_rate, limits)


def _pieces(
    signal: np.ndarray, ranges: Sequence[QuestionRange], duration: float, options: SegmentOptions | None
) -> list[tuple[SpeechSegment, int | None]]:
    if not ranges:
        found = [(s, None) for s in find_speech(signal, options=options)]
    else:
        found = []
        for number, r in enumerate(ranges, start=1):
            if r.start >= duration:
                raise InvalidRequest(
                    f"Range {number} starts at {r.start:g} s but the recording lasts {duration:.1f} s; "
                    "send ranges in seconds from the start of this recording.",
                    error_code="INVALID_RANGES",
                )
            end = min(r.end, duration)
            part = signal[int(r.start * SAMPLING_RATE) : int(end * SAMPLING_RATE)]
            for s in find_speech(part, options=options):
                found.append((SpeechSegment(r.start + s.start, r.start + s.end), number))
    if not found:
        raise InvalidAudio("No speech was found in the recording; check the microphone track.", error_code="NO_SPEECH")
    return found


def _question(number: int, r: QuestionRange, signal: np.ndarray, timeline: list[TimelineEntry]) -> QuestionSummary:
    entries = [e for e in timeline if e.question == number]
    part = signal[int(r.start * SAMPLING_RATE) : int(r.end * SAMPLING_RATE)]
    weights: dict[str, float] = {}
    for e in entries:
        if e.result.ensemble is not None:
            label = e.result.ensemble.label
            weights[label] = weights.get(label, 0.0) + e.end - e.start
    return QuestionSummary(
        index=number,
        start=r.start,
        end=min(r.end, len(signal) / SAMPLING_RATE),
        label=r.label,
        segments=len(entries),
        dominant_label=max(weights, key=weights.__getitem__) if weights else None,
        delivery=measure(part)
        if len(part) > SAMPLING_RATE // 10
        else measure(np.zeros(SAMPLING_RATE // 10, np.float32)),
    )


# -- assessment -------------------------------------------------------------------------------


def _trend(times: np.ndarray, values: np.ndarray, weights: np.ndarray) -> Trend:
    mean = float(np.average(values, weights=weights))
    sd = float(np.sqrt(np.average((values - mean) ** 2, weights=weights)))
    slope = (
        float(np.polyfit(times / 60.0, values, 1, w=np.sqrt(weights))[0])
        if len(values) >= 3 and np.ptp(times) > 0
        else 0.0
    )
    third = max(1, len(values) // 3)
    return Trend(mean, sd, slope, float(np.mean(values[:third])), float(np.mean(values[-third:])))


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60:02d}:{seconds % 60:02d}"
    )


def _answers(numbers: Sequence[int], lang: str) -> str:
    """[1, 2, 3, 5] -> 'answers 1–3, 5' ('第 1–3、5 题'); [2] -> 'answer 2' ('第 2 题')."""
    spans = _spans(numbers, lang)
    if lang == "zh":
        return f"第 {spans} 题"
    return f"answer {spans}" if len(numbers) == 1 else f"answers {spans}"


def _spans(numbers: Sequence[int], lang: str) -> str:
    """[1, 2, 3, 5] -> '1–3, 5' (or '1–3、5')."""
    spans: list[str] = []
    start = prev = None
    for n in sorted(numbers):
        if start is None:
            start = prev = n
        elif n == prev + 1:  # type: ignore[operator]
            prev = n
        else:
            spans.append(f"{start}–{prev}" if prev != start else f"{start}")
            start = prev = n
    if start is not None:
        spans.append(f"{start}–{prev}" if prev != start else f"{start}")
    return ("、" if lang == "zh" else ", ").join(spans)


_TEXT: dict[str, dict[str, str]] = {
    "dominant": {
        "zh": "整场面试以{name}为主（占说话时长的 {share:.0%}），情绪每分钟变化 {cpm:.1f} 次",
        "en": "The interview was mostly {name} ({share:.0%} of speaking time), with {cpm:.1f} emotion changes per minute",
    },
    "settled": {
        "zh": "随着面试进行逐渐放松：唤醒度从前三分之一的 {a:.2f} 降到最后三分之一的 {b:.2f}",
        "en": "You settled down as the interview went on: arousal fell from {a:.2f} in the first third to {b:.2f} in the last",
    },
    "tensed": {
        "zh": "后半程紧张度上升：唤醒度从前三分之一的 {a:.2f} 升到最后三分之一的 {b:.2f}；后面的问题可以放慢节奏、稍作停顿",
        "en": "Tension rose later on: arousal went from {a:.2f} in the first third to {b:.2f} in the last; slow down and pause briefly on later questions",
    },
    "valence_down": {
        "zh": "情绪效价从前三分之一的 {a:.2f} 降到最后三分之一的 {b:.2f}；可以为后面的问题准备更积极的结尾",
        "en": "Valence fell from {a:.2f} in the first third to {b:.2f} in the last; prepare positive closing points for the later questions",
    },
    "moment": {
        "zh": "{start}–{end} 这一段的{dim}明显{dir}于你自己的平均水平（{value:.2f}，偏离 {z:.1f} 个标准差）",
        "en": "At {start}–{end} your {dim} was well {dir} your own average ({value:.2f}, {z:.1f} SD away)",
    },
    "long_pauses_q": {
        "zh": "{answers}回答中的停顿平均 {mean:.1f} 秒（整场平均 {overall:.1f} 秒）；可以先用一句话概括要点，再展开",
        "en": "Your pauses averaged {mean:.1f} s in {answers} (overall {overall:.1f} s); open with a one-sentence summary, then expand",
    },
    "long_pauses": {
        "zh": "有 {n} 次超过 {limit:.0f} 秒的停顿，最长 {longest:.1f} 秒（{at}）；可以先用一句话概括要点，再展开",
        "en": "There were {n} pauses longer than {limit:.0f} s, the longest {longest:.1f} s (at {at}); open with a one-sentence summary, then expand",
    },
    "rate_slow": {
        "zh": "整体语速约每秒 {rate:.1f} 个音节，低于常见范围（{low:.1f}–{high:.1f}）；可以适当加快节奏",
        "en": "Overall you spoke at about {rate:.1f} syllables per second, below the usual {low:.1f}–{high:.1f}; a slightly brisker pace would help",
    },
    "rate_fast": {
        "zh": "整体语速约每秒 {rate:.1f} 个音节，高于常见范围（{low:.1f}–{high:.1f}）；放慢一些会更清晰",
        "en": "Overall you spoke at about {rate:.1f} syllables per second, above the usual {low:.1f}–{high:.1f}; slowing down a little will sound clearer",
    },
    "rate_fast_q": {
        "zh": "{answers}语速比你自己的平均水平快 {pct:.0%} 以上（平均每秒 {rate:.1f} 个音节）",
        "en": "{answers}: more than {pct:.0%} faster than your own average ({rate:.1f} syllables per second)",
    },
    "rate_slow_q": {
        "zh": "{answers}语速比你自己的平均水平慢 {pct:.0%} 以上（平均每秒 {rate:.1f} 个音节）",
        "en": "{answers}: more than {pct:.0%} slower than your own average ({rate:.1f} syllables per second)",
    },
    "flat_q": {
        "zh": "{answers}的语调起伏比你自己的平均水平平淡（音高变化 {sd:.1f} 个半音，你的平均为 {own:.1f}）；讲到重点时可以加强语调变化",
        "en": "{answers}: flatter intonation than your own usual (pitch variation {sd:.1f} semitones vs your {own:.1f}); vary your intonation on key points",
    },
    "weak_signal": {
        "zh": "模型把握不大（平均置信度 {p:.0%}），以上情绪相关结论仅供参考",
        "en": "The models are unsure (mean confidence {p:.0%}); treat the emotion findings as indicative only",
    },
}

_DIM = {"valence": {"zh": "情绪效价", "en": "valence"}, "arousal": {"zh": "唤醒度", "en": "arousal"}}
_DIR = {"above": {"zh": "高", "en": "above"}, "below": {"zh": "低", "en": "below"}}


def assess_interview(
    timeline: Sequence[TimelineEntry],
    questions: Sequence[QuestionSummary],
    delivery: DeliveryMetrics,
    summary: SessionSummary | None,
    *,
    lang: str = "zh",
    speech_lang: str = "zh",
    rules: InterviewRules = DEFAULT_INTERVIEW_RULES,
    dimensions: str = "derived",
) -> InterviewAssessment:
    """Assess the interview from its timeline, relative to the candidate's own baseline.

    ``summary`` is None when emotion inference is off: the assessment then has delivery advice only.
    """
    advice: list[Recommendation] = []

    def add(code: str, evidence: dict[str, Any], **fmt: Any) -> None:
        text = _TEXT[code][lang].format(**fmt)
        advice.append(Recommendation(code, text[:1].upper() + text[1:], evidence))

    findings = _emotion_findings(add, timeline, delivery, summary, lang, rules, dimensions) if summary else {}
    _delivery_advice(add, timeline, questions, delivery, speech_lang, rules, lang)
    if summary:
        durations = np.array([e.end - e.start for e in timeline])
        confidence = float(np.average([e.result.ensemble.confidence for e in timeline], weights=durations))  # type: ignore[union-attr]
        if confidence < rules.assessment.medium_confidence:
            add("weak_signal", {"mean_confidence": round(confidence, 3)}, p=confidence)
    return InterviewAssessment(recommendations=advice, **findings)


def _emotion_findings(
    add: Callable[..., None],
    timeline: Sequence[TimelineEntry],
    delivery: DeliveryMetrics,
    summary: SessionSummary,
    lang: str,
    rules: InterviewRules,
    dimensions: str,
) -> dict[str, Any]:
    durations = np.array([e.end - e.start for e in timeline])
    times = np.array([(e.start + e.end) / 2 for e in timeline])
    valence = _trend(times, np.array([e.valence for e in timeline]), durations)
    arousal = _trend(times, np.array([e.arousal for e in timeline]), durations)
    minutes = max(delivery.duration / 60.0, 1e-9)
    changes = summary.stability.changes
    name = display_name(summary.dominant_label, lang)
    add(
        "dominant",
        {
            "label": summary.dominant_label,
            "share": round(summary.stability.dominant_share, 4),
            "changes_per_minute": round(changes / minutes, 3),
        },
        name=name,
        share=summary.stability.dominant_share,
        cpm=changes / minutes,
    )

    direction = "steady"
    if len(timeline) >= 3:
        delta = arousal.last_third - arousal.first_third
        if delta <= -rules.trend_change:
            direction = "settled"
        elif delta >= rules.trend_change:
            direction = "tensed"
        if direction != "steady":
            add(
                direction,
                {
                    "arousal_first_third": round(arousal.first_third, 3),
                    "arousal_last_third": round(arousal.last_third, 3),
                },
                a=arousal.first_third,
                b=arousal.last_third,
            )
        if valence.last_third - valence.first_third <= -rules.trend_change:
            add(
                "valence_down",
                {
                    "valence_first_third": round(valence.first_third, 3),
                    "valence_last_third": round(valence.last_third, 3),
                },
                a=valence.first_third,
                b=valence.last_third,
            )

    moments = _moments(timeline, valence, arousal, rules)
    for m in moments:
        add(
            "moment",
            {
                "segment": m.index,
                "start": round(m.start, 2),
                "end": round(m.end, 2),
                "dimension": m.dimension,
                "value": round(m.value, 3),
                "z": round(m.z, 2),
            },
            start=_clock(m.start),
            end=_clock(m.end),
            dim=_DIM[m.dimension][lang],
            dir=_DIR["above" if m.z > 0 else "below"][lang],
            value=m.value,
            z=abs(m.z),
        )

    return {
        "dominant_label": summary.dominant_label,
        "dominant_share": summary.stability.dominant_share,
        "emotion_changes": changes,
        "changes_per_minute": changes / minutes,
        "dimensions": dimensions,
        "valence": valence,
        "arousal": arousal,
        "direction": direction,
        "moments": moments,
        "average_score": summary.average_score,
        "emotion_type": emotion_type(summary.distribution),
    }


def _moments(timeline: Sequence[TimelineEntry], valence: Trend, arousal: Trend, rules: InterviewRules) -> list[Moment]:
    if len(timeline) < 3:
        return []
    found = []
    for e in timeline:
        for dim, trend, value in (("valence", valence, e.valence), ("arousal", arousal, e.arousal)):
            if trend.sd > 1e-6:
                z = (value - trend.mean) / trend.sd
                if abs(z) >= rules.moment_z:
                    found.append(Moment(e.index, e.start, e.end, dim, value, z))
    found.sort(key=lambda m: -abs(m.z))
    chosen: list[Moment] = []
    for m in found:  # one moment per segment
        if all(m.index != c.index for c in chosen):
            chosen.append(m)
    return sorted(chosen[: rules.max_moments], key=lambda m: m.start)


def _delivery_advice(
    add: Callable[..., None],
    timeline: Sequence[TimelineEntry],
    questions: Sequence[QuestionSummary],
    delivery: DeliveryMetrics,
    speech_lang: str,
    rules: InterviewRules,
    lang: str,
) -> None:
    long = [p for p in delivery.pauses if p.duration >= rules.long_pause]
    answered = [q for q in questions if q.delivery.speaking_time > 0]
    hesitant = [q for q in answered if q.delivery.pause_count and q.delivery.mean_pause >= rules.long_pause]
    if hesitant:
        mean = float(np.mean([q.delivery.mean_pause for q in hesitant]))
        add(
            "long_pauses_q",
            {
                "answers": [q.index for q in hesitant],
                "mean_pause": round(mean, 3),
                "overall_mean_pause": round(delivery.mean_pause, 3),
            },
            answers=_answers([q.index for q in hesitant], lang),
            mean=mean,
            overall=delivery.mean_pause,
        )
    elif long and not questions:
        longest = max(long, key=lambda p: p.duration)
        add(
            "long_pauses",
            {"count": len(long), "longest": round(longest.duration, 3), "at": round(longest.start, 2)},
            n=len(long),
            limit=rules.long_pause,
            longest=longest.duration,
            at=_clock(longest.start),
        )

    # The norms count pauses inside a turn but not the silences between turns (the interviewer's
    # questions): the rate is taken over the answers, or over the speech segments.
    low, high = rules.rate_norms.get(speech_lang, rules.rate_norms["zh"])
    spans = [q.delivery for q in answered] or [e.result.delivery for e in timeline if e.result.delivery]
    syllables = sum(d.syllables for d in spans)
    seconds = sum(d.duration for d in spans)
    if syllables >= 20 and seconds > 0:
        rate = syllables / seconds
        evidence = {"speech_rate": round(rate, 3), "norm": [low, high], "speech_lang": speech_lang}
        if rate < low:
            add("rate_slow", evidence, rate=rate, low=low, high=high)
        elif rate > high:
            add("rate_fast", evidence, rate=rate, low=low, high=high)

    rated = [q for q in answered if q.delivery.syllables >= 10]
    if len(rated) >= 3:
        own = float(np.median([q.delivery.articulation_rate for q in rated]))
        fast = [q for q in rated if q.delivery.articulation_rate > own * (1 + rules.rate_change)]
        slow = [q for q in rated if q.delivery.articulation_rate < own * (1 - rules.rate_change)]
        for code, group in (("rate_fast_q", fast), ("rate_slow_q", slow)):
            if group:
                rate = float(np.mean([q.delivery.articulation_rate for q in group]))
                add(
                    code,
                    {
                        "answers": [q.index for q in group],
                        "articulation_rate": round(rate, 3),
                        "own_median": round(own, 3),
                    },
                    answers=_answers([q.index for q in group], lang),
                    pct=rules.rate_change,
                    rate=rate,
                )
    pitched = [q for q in answered if q.delivery.pitch_sd_semitones is not None]
    if len(pitched) >= 3:
        own_sd = float(np.median([q.delivery.pitch_sd_semitones for q in pitched]))
        flat = [q for q in pitched if q.delivery.pitch_sd_semitones < rules.flat_pitch * own_sd]  # type: ignore[operator]
        if flat:
            sd = float(np.mean([q.delivery.pitch_sd_semitones for q in flat]))
            add(
                "flat_q",
                {
                    "answers": [q.index for q in flat],
                    "pitch_sd_semitones": round(sd, 3),
                    "own_median": round(own_sd, 3),
                },
                answers=_answers([q.index for q in flat], lang),
                sd=sd,
                own=own_sd,
            )
