"""The work of one ``/jobs`` job, the same for every backend: a whole recording in, its JSON out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..analysis.analyzer import SpeechEmotionAnalyzer
from ..analysis.interview import analyze_interview, parse_ranges
from ..audio.decode import AudioLimits
from ..audio.segmentation import SegmentOptions
from ..views import interview_json


def run_job(
    analyzer: SpeechEmotionAnalyzer,
    audio: bytes,
    options: dict[str, Any],
    progress: Callable[[float], None],
    *,
    segments: SegmentOptions | None = None,
) -> dict[str, Any]:
    """The work of one ``/jobs`` job: analyse a whole recording and return its JSON.

    Options: ``lang`` (advice), ``speech_lang`` (rate norms), ``ranges`` (question ranges),
    ``max_seconds`` (longest recording accepted). ``segments``: how the server cuts recordings
    (its ``VAD`` setting), not a client option.
    """
    lang = options.get("lang", "zh")
    limits = AudioLimits(
        max_bytes=max(analyzer.limits.max_bytes, len(audio)),
        min_seconds=analyzer.limits.min_seconds,
        max_seconds=float(options.get("max_seconds", 7200)),
    )
    result = analyze_interview(
        analyzer,
        audio,
        ranges=parse_ranges(options.get("ranges")),
        lang=lang,
        speech_lang=options.get("speech_lang", "zh"),
        limits=limits,
        segments=segments,
        progress=progress,
        candidate_key=options.get("candidate_key"),
    )
    return interview_json(result, lang)
