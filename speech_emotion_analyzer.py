"""The analyzer as a library, as the spec names it.

    from speech_emotion_analyzer import SpeechEmotionAnalyzer
    result = SpeechEmotionAnalyzer().analyze("answer.wav")      # or (array, sampling_rate)
    print(result.ensemble.label, result.ensemble.confidence, result.assessment.score)

``python speech_emotion_analyzer.py FILE [FILE ...]`` prints each file's result as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

from emotion_service.analysis.analyzer import AnalysisResult, SessionResult, SpeechEmotionAnalyzer

__all__ = ["AnalysisResult", "SessionResult", "SpeechEmotionAnalyzer", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Analyse the emotion of recorded speech.")
    parser.add_argument("files", nargs="+", help="audio files (WAV, FLAC, OGG, MP3, M4A, WebM...)")
    parser.add_argument("--preset", default="default", help="models preset (default: the bundled model)")
    parser.add_argument("--lang", default="zh", choices=["zh", "en"])
    args = parser.parse_args(argv)

    from emotion_service.errors import ServiceError
    from emotion_service.views import analysis_json

    analyzer = SpeechEmotionAnalyzer(args.preset)
    status = 0
    for path in args.files:
        try:
            result = analyzer.analyze(path, lang=args.lang)
        except ServiceError as exc:
            print(
                json.dumps(
                    {"file": path, "success": False, "error_code": exc.error_code, "message": exc.message},
                    ensure_ascii=False,
                )
            )
            status = 1
            continue
        print(json.dumps({"file": path, "success": True, **analysis_json(result, args.lang)}, ensure_ascii=False))
    return status


if __name__ == "__main__":
    sys.exit(main())
