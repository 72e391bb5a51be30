"""JSON views of the typed results: the fields of the spec's response examples.

Kept apart from the HTTP layer so the command-line tools can print the same JSON.
"""

from __future__ import annotations

from typing import Any

from .analysis.analyzer import AnalysisResult, SessionResult
from .analysis.assessment import LEVELS, Assessment, SessionSummary
from .analysis.ensemble import EnsembleResult, ModelResult
from .analysis.interview import InterviewResult, TimelineEntry, Trend
from .audio.decode import DecodedAudio
from .audio.prosody import DeliveryMetrics
from .labels import display_name


def _probabilities(probabilities: dict[str, float]) -> dict[str, float]:
    return {label: round(p, 4) for label, p in probabilities.items()}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def basic_info_json(audio: DecodedAudio, models_count: int) -> dict[str, Any]:
    return {
        "duration": round(audio.duration, 3),
        "sample_rate": audio.sampling_rate,
        "models_count": models_count,
        "original_sample_rate": audio.original_sampling_rate,
        "channels": audio.channels,
        "format": audio.format,
    }


def model_result_json(result: ModelResult, lang: str) -> dict[str, Any]:
    output = result.output
    return {
        "model": result.name,
        "model_name": result.display_name,
        "emotion": display_name(output.top_label, lang),
        "emotion_label": output.top_label,
        "confidence": round(output.confidence, 4),
        "probabilities": _probabilities(output.probabilities),
        "arousal": _rounded(output.arousal),
        "valence": _rounded(output.valence),
        "inference_time": round(result.inference_time, 4),
    }


def final_result_json(result: EnsembleResult, lang: str) -> dict[str, Any]:
    return {
        "recommended_emotion": display_name(result.label, lang),
        "recommended_emotion_label": result.label,
        "confidence": round(result.confidence, 4),
        "best_model": result.best_model,
        "average_confidence": round(result.average_confidence, 4),
        "models_consensus": result.consensus,
        "agreement": round(result.agreement, 4),
        "probabilities": _probabilities(result.probabilities),
        "arousal": _rounded(result.arousal),
        "valence": _rounded(result.valence),
    }


def assessment_json(assessment: Assessment, lang: str) -> dict[str, Any]:
    return {
        "emotion_type": assessment.emotion_type,
        "score": assessment.score,
        "confidence_level": LEVELS[assessment.confidence_level][lang],
        "recommendations": assessment.recommendations,
    }


def delivery_json(metrics: DeliveryMetrics) -> dict[str, Any]:
    """Delivery metrics: seconds, syllables per second, Hz, semitones and dB."""
    return {
        "duration": round(metrics.duration, 3),
        "speaking_time": round(metrics.speaking_time, 3),
        "speaking_ratio": round(metrics.speaking_ratio, 4),
        "pause_count": metrics.pause_count,
        "mean_pause": round(metrics.mean_pause, 3),
        "longest_pause": round(metrics.longest_pause, 3),
        "pauses": [[round(p.start, 3), round(p.end, 3)] for p in metrics.pauses],
        "syllables": metrics.syllables,
        "speech_rate": round(metrics.speech_rate, 3),
        "articulation_rate": round(metrics.articulation_rate, 3),
        "pitch_median_hz": _rounded(metrics.pitch_median),
        "pitch_sd_semitones": _rounded(metrics.pitch_sd_semitones),
        "pitch_range_semitones": _rounded(metrics.pitch_range_semitones),
        "loudness_db": _rounded(metrics.loudness_db),
        "loudness_sd_db": round(metrics.loudness_sd_db, 2),
        "voiced_ratio": round(metrics.voiced_ratio, 4),
        "voice_breaks": metrics.voice_breaks,
    }


def analysis_json(result: AnalysisResult, lang: str) -> dict[str, Any]:
    data = {
        "basic_info": basic_info_json(result.audio, len(result.models)),
        "models_results": [model_result_json(r, lang) for r in result.models],
        "final_result": final_result_json(result.ensemble, lang) if result.ensemble else None,
        "interview_assessment": assessment_json(result.assessment, lang) if result.assessment else None,
        "processing_time": round(result.processing_time, 4),
        "cached": result.cached,
    }
    if result.delivery is not None:
        data["delivery"] = delivery_json(result.delivery)
    if result.baseline is not None:
        data["baseline"] = {
            "mode": result.baseline.mode,
            "clips": result.baseline.clips,
            "source": result.baseline.source,
        }
    return data


def summary_json(summary: SessionSummary, lang: str) -> dict[str, Any]:
    return {
        "segments_analyzed": summary.segments,
        "total_duration": round(summary.total_duration, 3),
        "dominant_emotion": display_name(summary.dominant_label, lang),
        "dominant_emotion_label": summary.dominant_label,
        "emotion_distribution": _probabilities(summary.distribution),
        "stability": {
            "score": round(summary.stability.score, 4),
            "dominant_share": round(summary.stability.dominant_share, 4),
            "emotion_changes": summary.stability.changes,
        },
        "average_score": summary.average_score,
        "emotion_type": summary.emotion_type,
        "recommendations": summary.recommendations,
    }


def session_json(result: SessionResult, lang: str) -> dict[str, Any]:
    segments = []
    for outcome in result.segments:
        if outcome.result is not None:
            segments.append({"index": outcome.index, "success": True, **analysis_json(outcome.result, lang)})
        else:
            assert outcome.error is not None
            segments.append(
                {
                    "index": outcome.index,
                    "success": False,
                    "error_code": outcome.error.error_code,
                    "message": outcome.error.message,
                }
            )
    return {
        "results": segments,
        "session_summary": summary_json(result.summary, lang) if result.summary else None,
        "segments_failed": sum(1 for s in segments if not s["success"]),
    }


def _trend_json(trend: Trend) -> dict[str, float]:
    return {
        "mean": round(trend.mean, 4),
        "sd": round(trend.sd, 4),
        "slope_per_minute": round(trend.slope_per_minute, 4),
        "first_third": round(trend.first_third, 4),
        "last_third": round(trend.last_third, 4),
    }


def _timeline_emotion(entry: TimelineEntry, lang: str) -> dict[str, Any]:
    ensemble = entry.result.ensemble
    if ensemble is None:
        return {"emotion": None, "emotion_label": None, "confidence": None, "probabilities": None,
                "valence": None, "arousal": None}  # fmt: skip
    return {
        "emotion": display_name(ensemble.label, lang),
        "emotion_label": ensemble.label,
        "confidence": round(ensemble.confidence, 4),
        "probabilities": _probabilities(ensemble.probabilities),
        "valence": _rounded(entry.valence),
        "arousal": _rounded(entry.arousal),
    }


def interview_json(result: InterviewResult, lang: str) -> dict[str, Any]:
    """A whole interview: timeline, per-question summaries, delivery and the session assessment."""
    a = result.assessment
    return {
        "basic_info": basic_info_json(result.audio, len(result.timeline[0].result.models) if result.timeline else 0),
        "delivery": delivery_json(result.delivery),
        "timeline": [
            {
                "index": e.index,
                "start": round(e.start, 3),
                "end": round(e.end, 3),
                "question": e.question,
                **_timeline_emotion(e, lang),
                "delivery": delivery_json(e.result.delivery) if e.result.delivery else None,
            }
            for e in result.timeline
        ],
        "questions": [
            {
                "index": q.index,
                "label": q.label,
                "start": round(q.start, 3),
                "end": round(q.end, 3),
                "segments": q.segments,
                "dominant_emotion_label": q.dominant_label,
                "dominant_emotion": display_name(q.dominant_label, lang) if q.dominant_label else None,
                "delivery": delivery_json(q.delivery),
            }
            for q in result.questions
        ],
        "session_summary": summary_json(result.summary, lang) if result.summary else None,
        "assessment": None
        if a is None
        else {
            "dominant_emotion_label": a.dominant_label,
            "dominant_emotion": display_name(a.dominant_label, lang) if a.dominant_label else None,
            "dominant_share": _rounded(a.dominant_share),
            "emotion_changes": a.emotion_changes,
            "changes_per_minute": _rounded(a.changes_per_minute),
            "dimensions": a.dimensions,
            "valence": _trend_json(a.valence) if a.valence else None,
            "arousal": _trend_json(a.arousal) if a.arousal else None,
            "direction": a.direction,
            "moments": [
                {
                    "segment": m.index,
                    "start": round(m.start, 3),
                    "end": round(m.end, 3),
                    "dimension": m.dimension,
                    "value": round(m.value, 4),
                    "z": round(m.z, 3),
                }
                for m in a.moments
            ],
            "average_score": a.average_score,
            "emotion_type": a.emotion_type,
            "recommendations": [{"code": r.code, "text": r.text, "evidence": r.evidence} for r in a.recommendations],
        },
        "segments_skipped": result.segments_skipped,
    }
