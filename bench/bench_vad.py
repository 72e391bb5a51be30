"""Accuracy and speed of the two VADs (``energy``, ``silero``) on real speech in noise.

Sessions are built from the RAVDESS held-out actors 21-24 only (``RAVDESS_DIR``, default
``../shared/data/ravdess``), one actor per session, with a fixed seed:

- every clip is trimmed to its reference speech (below) plus 50 ms, and the clips of one actor are
  joined with pauses drawn uniformly from 0.3-3 s, so some pauses are shorter than ``min_silence``
  (they must not split a segment) and most are longer (they must);
- reference speech: 10 ms frames of the *clean* clip whose power is within 35 dB of the clip's
  loudest frame; the reference segments then follow the same rules as the VADs (pauses shorter than
  ``min_silence`` bridged, speech shorter than ``min_speech`` dropped);
- noise is added at a signal-to-noise ratio over the active speech (the reference frames): white,
  pink (1/f), brown (1/f^2), and hum + fan (50 Hz mains and harmonics plus low-passed, slowly
  swelling noise), at 20, 10 and 5 dB; "clean" has a white floor 60 dB under the speech; "talker"
  adds another held-out actor speaking 15 dB under the candidate (not in the reference: a VAD that
  finds the second voice loses precision).

Both VADs use the service's ``SegmentOptions`` (min_silence 0.6 s, min_speech 0.3 s) with no padding
and no length cap, so the measure is the detection itself. Reported per VAD and condition:
frame precision / recall / F1 (10 ms frames, summed over sessions), segment-count error (mean
|found - reference| / reference per session), boundary error (median distance in ms from each
reference start/end to the nearest found start/end), and speed (x real time) on a long recording
made of the sessions, with the process on one thread and at its default thread count.

    python bench/bench_vad.py [--quick] [--sessions 12] [--clips 12] [--seed 0]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emotion_service.audio.segmentation import VADS, SegmentOptions, find_speech  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpuinfo import cpu_info, describe  # noqa: E402

RATE = 16_000
HOP = 160  # 10 ms reference frames
HELD_OUT = ("ravdess_21", "ravdess_22", "ravdess_23", "ravdess_24")
REFERENCE_DB = 35.0
MARGIN = 0.05
GAPS = (0.3, 3.0)
OPTIONS = SegmentOptions(padding=0.0, max_segment=1e9)
NOISES = ("white", "pink", "brown", "hum")
SNRS = (20, 10, 5)
TALKER_DB = 15.0


def corpus_dir() -> Path:
    return Path(os.environ.get("RAVDESS_DIR", ROOT.parent / "shared" / "data" / "ravdess"))


def held_out_clips(root: Path) -> dict[str, list[Path]]:
    """Clip paths of each held-out actor, in manifest order."""
    with (root / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["speaker"] in HELD_OUT]
    return {actor: [root / row["path"] for row in rows if row["speaker"] == actor] for actor in HELD_OUT}


def _read(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != RATE:
        raise SystemExit(f"{path} is at {rate} Hz; the corpus README promises 16 kHz")
    return audio.mean(axis=1)


def _frame_power_db(x: np.ndarray) -> np.ndarray:
    n = len(x) // HOP
    return 10 * np.log10(np.mean(x[: n * HOP].reshape(n, HOP) ** 2, axis=1) + 1e-12)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def reference_segments(mask: np.ndarray, options: SegmentOptions = OPTIONS) -> list[tuple[float, float]]:
    """Reference frames to segments by the VADs' rules: short pauses bridged, short bursts dropped."""
    mask = mask.copy()
    step = HOP / RATE
    for a, b in _runs(~mask):
        if a > 0 and b < len(mask) and (b - a) * step < options.min_silence:
            mask[a:b] = True
    return [(a * step, b * step) for a, b in _runs(mask) if (b - a) * step >= options.min_speech]


@dataclass(frozen=True)
class Session:
    """Clean speech of one actor with known pauses, and its reference."""

    actor: str
    clean: np.ndarray
    speech: np.ndarray  # bool per 10 ms frame
    reference: list[tuple[float, float]]

    @property
    def seconds(self) -> float:
        return len(self.clean) / RATE


def build_session(clips: list[Path], rng: np.random.Generator, actor: str) -> Session:
    """Trim each clip to its reference speech and join the clips with random pauses (0.5 s before and after)."""
    edge = np.zeros(int(0.5 * RATE), np.float32)
    pieces: list[np.ndarray] = [edge]
    masks: list[np.ndarray] = [np.zeros(len(edge) // HOP, bool)]
    margin = int(MARGIN * RATE)
    fade = np.linspace(0.0, 1.0, HOP, dtype=np.float32)
    for i, path in enumerate(clips):
        x = _read(path)
        db = _frame_power_db(x)
        active = np.flatnonzero(db > db.max() - REFERENCE_DB)
        start = max(0, active[0] * HOP - margin)
        start -= start % HOP  # the piece's 10 ms frames are the clip's
        end = min(len(x), (active[-1] + 1) * HOP + margin)
        piece = x[start : end - (end - start) % HOP].copy()
        piece[:HOP] *= fade
        piece[-HOP:] *= fade[::-1]
        pieces.append(piece)
        masks.append(_frame_power_db(piece) > db.max() - REFERENCE_DB)
        gap = np.zeros(int(round(rng.uniform(*GAPS) * RATE / HOP)) * HOP, np.float32) if i < len(clips) - 1 else edge
        pieces.append(gap)
        masks.append(np.zeros(len(gap) // HOP, bool))
    speech = np.concatenate(masks)
    return Session(actor, np.concatenate(pieces), speech, reference_segments(speech))


def build_sessions(root: Path, sessions: int, clips: int, seed: int) -> list[Session]:
    """``sessions`` sessions of ``clips`` clips each, the actors taken in turn."""
    rng = np.random.default_rng(seed)
    by_actor = held_out_clips(root)
    out = []
    for i in range(sessions):
        actor = HELD_OUT[i % len(HELD_OUT)]
        chosen = rng.choice(len(by_actor[actor]), size=clips, replace=False)
        out.append(build_session([by_actor[actor][k] for k in chosen], rng, actor))
    return out


# -- noise ------------------------------------------------------------------------------------------


def _coloured(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    f[0] = f[1]
    return np.fft.irfft(spectrum / f ** (exponent / 2), n)


def _hum_fan(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / RATE
    hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 8))
    # A fan: noise low-passed around 400 Hz (one pole) that swells slowly.
    white = rng.standard_normal(n)
    pole = np.exp(-2 * np.pi * 400 / RATE)
    from scipy.signal import lfilter

    fan = lfilter([1 - pole], [1, -pole], white) * (1 + 0.3 * np.sin(2 * np.pi * 0.4 * t))
    return hum / np.std(hum) + fan / np.std(fan)


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "hum":
        return _hum_fan(n, rng)
    return _coloured(n, rng, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])


def speech_power(session: Session) -> float:
    frames = session.clean[: len(session.speech) * HOP].reshape(-1, HOP)
    return float(np.mean(frames[session.speech] ** 2))


def mix(session: Session, condition: str, rng: np.random.Generator, talker: np.ndarray | None = None) -> np.ndarray:
    """The session's speech with the condition's noise ('clean', 'talker' or 'kind@snr')."""
    n = len(session.clean)
    power = speech_power(session)
    if condition == "clean":
        extra, snr = noise("white", n, rng), 60.0
    elif condition == "talker":
        if talker is None:
            raise ValueError("the talker condition needs a second voice")
        extra, snr = np.resize(talker, n), TALKER_DB
    else:
        kind, snr_text = condition.split("@")
        extra, snr = noise(kind, n, rng), float(snr_text)
    gain = np.sqrt(power / 10 ** (snr / 10) / max(float(np.mean(extra**2)), 1e-20))
    return (session.clean + gain * extra).astype(np.float32)


def conditions(quick: bool = False) -> list[str]:
    snrs = (20, 5) if quick else SNRS
    return ["clean", *(f"{kind}@{snr}" for kind in NOISES for snr in snrs), "talker"]


# -- scores -----------------------------------------------------------------------------------------


def frames_of(segments: list[tuple[float, float]], count: int) -> np.ndarray:
    mask = np.zeros(count, bool)
    for a, b in segments:
        mask[int(round(a * RATE / HOP)) : int(round(b * RATE / HOP))] = True
    return mask


@dataclass
class Score:
    """Running totals of one VAD in one condition."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    count_errors: list[float] | None = None
    boundary_ms: list[float] | None = None
    seconds_audio: float = 0.0
    seconds_vad: float = 0.0

    def add(self, session: Session, found: list[tuple[float, float]], seconds_vad: float) -> None:
        reference = frames_of(session.reference, len(session.speech))
        hypothesis = frames_of(found, len(session.speech))
        self.tp += int(np.sum(reference & hypothesis))
        self.fp += int(np.sum(~reference & hypothesis))
        self.fn += int(np.sum(reference & ~hypothesis))
        self.count_errors = (self.count_errors or []) + [
            abs(len(found) - len(session.reference)) / len(session.reference)
        ]
        distances = []
        if found:
            starts, ends = np.array([a for a, _ in found]), np.array([b for _, b in found])
            for a, b in session.reference:
                distances += [np.min(np.abs(starts - a)), np.min(np.abs(ends - b))]
        self.boundary_ms = (self.boundary_ms or []) + [1000 * d for d in distances]
        self.seconds_audio += session.seconds
        self.seconds_vad += seconds_vad

    def summary(self) -> dict[str, float | None]:
        precision = self.tp / max(1, self.tp + self.fp)
        recall = self.tp / max(1, self.tp + self.fn)
        return {
            "precision": round(precision, 3),
            "recall": round(recall, 3),
            "f1": round(2 * precision * recall / max(1e-9, precision + recall), 3),
            "count_error": round(float(np.mean(self.count_errors or [1.0])), 3),
            "boundary_ms": round(float(np.median(self.boundary_ms)), 1) if self.boundary_ms else None,
            "x_realtime": round(self.seconds_audio / max(self.seconds_vad, 1e-9), 1),
        }


def detect(signal: np.ndarray, vad: str, options: SegmentOptions = OPTIONS) -> tuple[list[tuple[float, float]], float]:
    """Segments found by ``vad`` and the seconds it took."""
    started = time.perf_counter()
    segments = find_speech(signal, RATE, replace(options, vad=vad))
    return [(s.start, s.end) for s in segments], time.perf_counter() - started


def evaluate(
    sessions: list[Session], condition_names: list[str], seed: int, vads: tuple[str, ...] = VADS
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Scores of each VAD in each condition; the noise of a session is the same for every VAD."""
    scores = {vad: {c: Score() for c in condition_names} for vad in vads}
    for number, session in enumerate(sessions):
        other = sessions[(number + 1) % len(sessions)] if len(sessions) > 1 else None
        talker = None if other is None or other.actor == session.actor else other.clean
        for c_index, condition in enumerate(condition_names):
            if condition == "talker" and talker is None:
                continue
            noisy = mix(session, condition, np.random.default_rng([seed, number, c_index]), talker)
            for vad in vads:
                found, seconds = detect(noisy, vad)
                scores[vad][condition].add(session, found, seconds)
    return {vad: {c: s.summary() for c, s in per.items() if s.seconds_audio} for vad, per in scores.items()}


def speed(signal: np.ndarray, vads: tuple[str, ...] = VADS, repeats: int = 3) -> dict[str, dict[str, float]]:
    """x real time of each VAD on ``signal``: the whole process on one thread, and at its defaults.

    One thread: torch and the BLAS/OpenMP pools limited to 1. ``silero`` always runs on a single
    torch thread of its own (see emotion_service/vad.py), so only ``energy`` can differ. Also
    ``silero_streaming``: the package's own per-32-ms call, on 30 s, for comparison.
    """
    from threadpoolctl import threadpool_limits  # comes with librosa (scikit-learn)

    default = torch.get_num_threads()
    out: dict[str, dict[str, float]] = {vad: {} for vad in vads}
    for label, threads in (("threads_1", 1), ("default", None)):
        with threadpool_limits(limits=threads):
            torch.set_num_threads(threads or default)
            for vad in vads:
                best = min(detect(signal, vad)[1] for _ in range(repeats))
                out[vad][label] = round(len(signal) / RATE / best, 1)
    torch.set_num_threads(default)

    from silero_vad import load_silero_vad  # sets torch to one thread when first imported

    model = load_silero_vad()
    torch.set_num_threads(default)
    piece = torch.from_numpy(signal[: 30 * RATE].copy())
    out["silero_streaming"] = {}
    for label, threads in (("threads_1", 1), ("default", default)):
        torch.set_num_threads(threads)
        model.reset_states()
        started = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(piece) - 511, 512):
                model(piece[i : i + 512], RATE)
        out["silero_streaming"][label] = round(len(piece) / RATE / (time.perf_counter() - started), 1)
    torch.set_num_threads(default)
    return out


def _table(results: dict[str, dict[str, dict[str, float | None]]], print_: Callable[[str], None]) -> None:
    print_("| condition | VAD | precision | recall | F1 | count error | boundary (median ms) | x real time |")
    print_("|---|---|---|---|---|---|---|---|")
    conditions_seen = list(next(iter(results.values())))
    for condition in conditions_seen:
        for vad, per in results.items():
            r = per[condition]
            print_(
                f"| {condition} | {vad} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
                f"{100 * r['count_error']:.0f}% | {r['boundary_ms']} | {r['x_realtime']:.0f} |"  # type: ignore[operator]
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 sessions of 6 clips, SNR 20 and 5 dB (< 1 min)")
    parser.add_argument("--sessions", type=int, default=12)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sessions_n, clips_n = (4, 6) if args.quick else (args.sessions, args.clips)

    root = corpus_dir()
    if not (root / "manifest.csv").is_file():
        print(f"RAVDESS not found at {root}: set RAVDESS_DIR to the folder holding manifest.csv", file=sys.stderr)
        return 2
    started = time.perf_counter()
    sessions = build_sessions(root, sessions_n, clips_n, args.seed)
    audio = sum(s.seconds for s in sessions)
    references = sum(len(s.reference) for s in sessions)
    print(
        f"{len(sessions)} sessions of {clips_n} clips (actors {', '.join(HELD_OUT)}), {audio:.0f} s, "
        f"{references} reference segments; torch threads {torch.get_num_threads()}",
        file=sys.stderr,
    )
    for vad in VADS:
        detect(sessions[0].clean, vad)  # load the models outside the timing
    results = evaluate(sessions, conditions(args.quick), args.seed)
    _table(results, print)

    # Speed on one long recording: the sessions in pink noise at 10 dB, end to end.
    long = np.concatenate(
        [mix(s, "pink@10", np.random.default_rng([args.seed, i, 99])) for i, s in enumerate(sessions)]
    )
    speeds = speed(long)
    print(describe())
    print(f"speed on {len(long) / RATE:.0f} s (x real time): {json.dumps(speeds)}")
    print(
        json.dumps(
            {
                "bench": "vad",
                "cpu": cpu_info(),
                "quick": args.quick,
                "sessions": len(sessions),
                "clips_per_session": clips_n,
                "audio_seconds": round(audio, 1),
                "reference_segments": references,
                "options": {"min_silence": OPTIONS.min_silence, "min_speech": OPTIONS.min_speech, "padding": 0.0},
                "results": results,
                "speed": speeds,
                "cpu_threads_default": torch.get_num_threads(),
                "wall_seconds": round(time.perf_counter() - started, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
