"""Offline analysis from the command line: files or folders in, JSON or CSV out.

    python -m emotion_service.cli answers/ --out results.csv
    python -m emotion_service.cli interview.m4a --mode interview --lang en --out interview.json

``--mode clip`` (default) analyses each file as one answer; ``--mode interview`` analyses each
file as a whole interview (segments, timeline, delivery, session assessment). The output format
follows the extension of ``--out``: ``.json`` (one list), ``.jsonl`` (a line per file) or
``.csv`` (a row per file in clip mode, a row per segment in interview mode); without ``--out``
JSON lines go to stdout. A progress bar goes to stderr. The exit status is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".webm", ".aif", ".aiff"}

CLIP_COLUMNS = [
    "file", "success", "error_code", "emotion_label", "confidence", "score", "emotion_type", "duration",
    "speaking_ratio", "pause_count", "mean_pause", "speech_rate", "pitch_median_hz", "pitch_sd_semitones",
    "loudness_db",
]  # fmt: skip
SEGMENT_COLUMNS = [
    "file", "segment", "question", "start", "end", "emotion_label", "confidence", "valence", "arousal",
    "speech_rate", "pause_count", "pitch_median_hz", "pitch_sd_semitones", "loudness_db",
]  # fmt: skip


def find_audio(inputs: Sequence[str]) -> list[Path]:
    """Files given directly, and the audio files inside given folders (recursively), sorted."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        else:
            found.append(path)
    return found


def _clip_row(record: dict[str, Any]) -> dict[str, Any]:
    if not record["success"]:
        return {"file": record["file"], "success": False, "error_code": record["error_code"]}
    final, delivery = record["final_result"], record.get("delivery") or {}
    assessment = record["interview_assessment"]
    return {
        "file": record["file"],
        "success": True,
        "emotion_label": final["recommended_emotion_label"],
        "confidence": final["confidence"],
        "score": assessment["score"],
        "emotion_type": assessment["emotion_type"],
        "duration": record["basic_info"]["duration"],
        **{key: delivery.get(key) for key in CLIP_COLUMNS[8:]},
    }


def _segment_rows(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if not record["success"]:
        yield {"file": record["file"], "segment": None, "emotion_label": f"ERROR {record['error_code']}"}
        return
    for entry in record["timeline"]:
        delivery = entry.get("delivery") or {}
        yield {
            "file": record["file"],
            "segment": entry["index"],
            **{
                key: entry[key]
                for key in ("question", "start", "end", "emotion_label", "confidence", "valence", "arousal")
            },
            **{key: delivery.get(key) for key in SEGMENT_COLUMNS[9:]},
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emotion_service.cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="audio files or folders")
    parser.add_argument("--mode", choices=["clip", "interview"], default="clip")
    parser.add_argument("--out", help="output file: .json, .jsonl or .csv (default: JSON lines on stdout)")
    parser.add_argument("--preset", default=os.environ.get("MODEL_PRESET", "default"), help="models preset")
    parser.add_argument("--models-dir", default=os.environ.get("MODELS_DIR"), help="pre-downloaded models")
    parser.add_argument("--device", default=os.environ.get("DEVICE", "auto"))
    parser.add_argument("--lang", choices=["zh", "en"], default="zh", help="language of the advice")
    parser.add_argument("--speech-lang", default="zh", help="language the candidates speak (speech-rate norms)")
    parser.add_argument("--max-seconds", type=float, default=7200, help="longest recording accepted")
    parser.add_argument(
        "--vad",
        default=os.environ.get("VAD", "").strip().lower(),
        help="voice activity detection of interview mode: silero or energy (default: $VAD, else the service's default)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from .audio.segmentation import VADS, SegmentOptions

    args.vad = args.vad or SegmentOptions().vad
    if args.vad not in VADS:
        parser.error(f"--vad (or VAD) must be one of {', '.join(VADS)}, not {args.vad!r}")

    from tqdm import tqdm

    from .analysis.analyzer import SpeechEmotionAnalyzer
    from .analysis.interview import analyze_interview
    from .audio.decode import AudioLimits
    from .errors import ServiceError
    from .views import analysis_json, interview_json

    files = find_audio(args.inputs)
    if not files:
        parser.error("no audio files found in the inputs")
    if args.out and Path(args.out).suffix.lower() not in (".json", ".jsonl", ".csv"):
        parser.error("--out must end in .json, .jsonl or .csv")
    limits = AudioLimits(max_bytes=2**40, max_seconds=args.max_seconds)
    analyzer = SpeechEmotionAnalyzer(args.preset, models_dir=args.models_dir, device=args.device, limits=limits)
    if not analyzer.models:
        reasons = "; ".join(f"{f.name}: {f.reason}" for f in analyzer.failures)
        print(f"No model of preset {args.preset!r} could be loaded ({reasons}).", file=sys.stderr)
        return 2

    records: list[dict[str, Any]] = []
    failed = 0
    for path in tqdm(files, unit="file", disable=args.no_progress, file=sys.stderr):
        try:
            if args.mode == "clip":
                record = {
                    "file": str(path),
                    "success": True,
                    **analysis_json(analyzer.analyze(path, lang=args.lang), args.lang),
                }
            else:
                result = analyze_interview(
                    analyzer,
                    path,
                    lang=args.lang,
                    speech_lang=args.speech_lang,
                    limits=limits,
                    segments=SegmentOptions(vad=args.vad),
                )
                record = {"file": str(path), "success": True, **interview_json(result, args.lang)}
        except ServiceError as exc:
            failed += 1
            record = {"file": str(path), "success": False, "error_code": exc.error_code, "message": exc.message}
        records.append(record)
        if not args.out:
            print(json.dumps(record, ensure_ascii=False), flush=True)

    if args.out:
        _write(Path(args.out), records, args.mode)
        print(f"{len(records) - failed} of {len(records)} files analysed; results in {args.out}", file=sys.stderr)
    return 1 if failed else 0


def _write(path: Path, records: list[dict[str, Any]], mode: str) -> None:
    suffix = path.suffix.lower()
    if suffix == ".json":
        path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    else:
        columns = CLIP_COLUMNS if mode == "clip" else SEGMENT_COLUMNS
        rows = [_clip_row(r) for r in records] if mode == "clip" else [row for r in records for row in _segment_rows(r)]
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
