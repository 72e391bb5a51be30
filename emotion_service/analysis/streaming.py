"""Live analysis of a stream of audio: frames in, typed events out.

A :class:`StreamSession` takes the binary frames of one live recording (16-bit PCM, or the WebM/Opus
chunks of a browser's MediaRecorder) and returns what happened as typed events: the loudness a few
times a second (:class:`Level`), each stretch of speech once the voice activity detector has
closed it (:class:`SegmentClosed`, analysed by the same :class:`.SpeechEmotionAnalyzer` as
``/analyze``), and the session summary at the end (:class:`StreamSummary`). The WebSocket layer
(:mod:`emotion_service.http.stream`) turns them into JSON; nothing here knows about Flask or sockets.

Speech is found as in whole recordings (:mod:`.segmentation`): Silero VAD probabilities every
32 ms, here computed window by window with the network's state carried from one frame to the next
(:func:`.vad.stream_probabilities`), and the same rules for gaps, short bursts and long speech
(:class:`.SegmentOptions`). A segment closes once ``min_silence`` of silence follows it. The audio
is kept in memory (16-bit, 32 kB a second, bounded by ``max_seconds``) for the delivery metrics of
the whole stream; nothing is written to disk.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import soxr

from ..audio.prosody import DeliveryMetrics, ProsodyOptions, measure
from ..audio.segmentation import SegmentOptions, SpeechSegment, _segments
from ..audio.vad import CONTEXT, FRAME_SECONDS, NEG_THRESHOLD, THRESHOLD, WINDOW, stream_probabilities
from ..config import LANGS, SAMPLING_RATE
from ..errors import ServiceError
from .analyzer import AnalysisResult, SpeechEmotionAnalyzer
from .assessment import SessionSummary, summarise_session

FORMATS = ("pcm16", "webm")
SAMPLE_RATES = (8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)
LEVEL_SECONDS = 0.25  # a level event per quarter second of audio: enough for a live meter
ENERGY_FLOOR_DB = -50.0  # VAD=energy: quieter windows are silence even before anything louder came
HEAD_START_SECONDS = 5.0  # audio a client may send ahead of the clock before the speed limit applies

# Close codes: 4000 + the HTTP status of the same error, or the standard codes.
CLOSE_NORMAL = 1000
CLOSE_TRY_AGAIN = 1013
CLOSE_INTERNAL = 1011


class StreamError(ServiceError):
    """A stream the service must end, with the WebSocket close code that goes with the error."""

    close_code: int = 4400

    def __init__(self, message: str, *, error_code: str, close_code: int = 4400) -> None:
        super().__init__(message, error_code=error_code)
        self.close_code = close_code


@dataclass(frozen=True)
class StreamLimits:
    """Limits of one stream (``STREAM_*`` settings).

    Attributes:
        max_seconds: Longest stream, seconds of audio.
        idle_seconds: A stream that sends nothing this long is closed (applied by the socket layer).
        max_frame_bytes: Largest binary message.
        max_speed: How much faster than real time audio may arrive, after a head start of
            ``HEAD_START_SECONDS``.
    """

    max_seconds: float = 1800.0
    idle_seconds: float = 30.0
    max_frame_bytes: int = 256_000
    max_speed: float = 4.0


# The segments of a live stream close sooner than those of a recording (0.6 s): the delay from
# the end of an answer to its result is this silence plus the analysis.
STREAM_SEGMENTS = SegmentOptions(min_silence=0.5)


@dataclass(frozen=True)
class StreamStart:
    """The client's ``start`` message."""

    sample_rate: int
    format: str
    lang: str
    candidate_id: str | None = None
    api_key: str | None = field(default=None, repr=False)


# -- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """Loudness of the last quarter second, and whether the VAD hears speech."""

    time: float
    speaking: bool
    db: float


@dataclass(frozen=True)
class SegmentClosed:
    """A stretch of speech the VAD has closed, with its analysis."""

    index: int
    start: float
    end: float
    result: AnalysisResult


@dataclass(frozen=True)
class StreamSummary:
    """The whole stream, after ``stop``."""

    duration: float
    segments: int
    summary: SessionSummary | None  # None: no segment, or emotion inference is off
    delivery: DeliveryMetrics | None  # None: too short to measure


Event = Level | SegmentClosed | StreamSummary


# -- messages -----------------------------------------------------------------------------------

_START_EXAMPLE = '{"type": "start", "sample_rate": 16000, "format": "pcm16", "lang": "en"}'


def parse_message(text: str) -> dict[str, Any]:
    """A client's text message: a JSON object with a ``type``.

    Raises:
        StreamError: Not JSON, not an object, or no ``type``.
    """
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise StreamError(
            f'A text message must be JSON such as {_START_EXAMPLE} or {{"type": "stop"}}.',
            error_code="INVALID_MESSAGE",
        ) from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise StreamError(
            'A text message must be a JSON object with a "type": "start" first, "stop" at the end.',
            error_code="INVALID_MESSAGE",
        )
    return message


def parse_start(message: dict[str, Any], default_lang: str) -> StreamStart:
    """Validate a ``start`` message (see :func:`parse_message`).

    Raises:
        StreamError: Not a start message, or a field is wrong; the message says which.
    """
    if message.get("type") != "start":
        raise StreamError(
            f"The first message must be the start message, e.g. {_START_EXAMPLE}; got type {message.get('type')!r}.",
            error_code="MISSING_START",
        )
    rate = message.get("sample_rate", SAMPLING_RATE)
    fmt = message.get("format", "pcm16")
    lang = message.get("lang") or default_lang
    candidate = message.get("candidate_id")
    key = message.get("api_key")
    if fmt not in FORMATS:
        raise StreamError(
            f"format {fmt!r} is not supported; use pcm16 (16-bit little-endian mono) or webm (MediaRecorder Opus).",
            error_code="INVALID_START",
        )
    if fmt == "pcm16" and (isinstance(rate, bool) or rate not in SAMPLE_RATES):
        rates = ", ".join(str(r) for r in SAMPLE_RATES)
        raise StreamError(f"sample_rate {rate!r} is not supported; use one of {rates}.", error_code="INVALID_START")
    if lang not in LANGS:
        raise StreamError(f"lang {lang!r} is not supported; use one of {', '.join(LANGS)}.", error_code="INVALID_LANG")
    if candidate is not None and not (isinstance(candidate, str) and len(candidate) <= 128):
        raise StreamError("candidate_id must be a string of at most 128 characters.", error_code="INVALID_START")
    if key is not None and not isinstance(key, str):
        raise StreamError("api_key must be a string.", error_code="INVALID_START")
    return StreamStart(int(rate) if fmt == "pcm16" else 0, fmt, lang, candidate, key)


# -- decoders -----------------------------------------------------------------------------------


class _PcmDecoder:
    """16-bit little-endian mono PCM at any of SAMPLE_RATES -> float32 at 16 kHz."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._odd = b""  # a frame may end in the middle of a sample
        self._resampler = (
            soxr.ResampleStream(rate, SAMPLING_RATE, 1, dtype="float32") if rate != SAMPLING_RATE else None
        )

    def feed(self, data: bytes) -> np.ndarray:
        data = self._odd + data
        whole = len(data) - len(data) % 2
        self._odd = data[whole:]
        samples = np.frombuffer(data[:whole], dtype="<i2").astype(np.float32) / 32768.0
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return samples

    def flush(self) -> np.ndarray:
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)

    def close(self) -> None:
        pass


class _Pipe:
    """A file that PyAV's demuxer reads in its own thread; reads block until the socket brings more."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes | None] = queue.Queue()
        self._buffer = b""
        self._ended = False

    def read(self, size: int) -> bytes:
        while not self._buffer and not self._ended:
            chunk = self.chunks.get()
            if chunk is None:
                self._ended = True
            else:
                self._buffer += chunk
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


class _WebmDecoder:
    """WebM/Opus chunks (a browser's MediaRecorder) -> float32 at 16 kHz, decoded as they arrive.

    PyAV's demuxer pulls its input, so it runs in a thread of its own that reads from a pipe the
    socket pushes into; :meth:`feed` returns what has been decoded so far without waiting.
    """

    def __init__(self) -> None:
        self._pipe = _Pipe()
        self._out: queue.Queue[np.ndarray] = queue.Queue()
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="webm-decoder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            # A small probe: the stream's first cluster is enough, and waiting for more would delay the first segment.
            with av.open(
                self._pipe, "r", format="webm", options={"probesize": "32", "analyzeduration": "0"}, buffer_size=4096
            ) as container:
                if not container.streams.audio:
                    self._error = "The WebM stream has no audio track; record audio with MediaRecorder (audio/webm)."
                    return
                resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLING_RATE)
                for frame in container.decode(audio=0):
                    for out in resampler.resample(frame):
                        self._out.put(out.to_ndarray().reshape(-1).copy())
                for out in resampler.resample(None):
                    self._out.put(out.to_ndarray().reshape(-1).copy())
        except (av.error.FFmpegError, ValueError) as exc:
            self._error = f"The audio frames are not a WebM/Opus stream ({exc}); send MediaRecorder's audio/webm chunks in order, or use format pcm16."

    def _drain(self) -> np.ndarray:
        parts = []
        while True:
            try:
                parts.append(self._out.get_nowait())
            except queue.Empty:
                break
        if self._error is not None:
            raise StreamError(self._error, error_code="INVALID_AUDIO")
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def feed(self, data: bytes) -> np.ndarray:
        self._pipe.chunks.put(data)
        return self._drain()

    def flush(self) -> np.ndarray:
        self._pipe.chunks.put(None)
        self._thread.join(timeout=30)
        return self._drain()

    def close(self) -> None:
        self._pipe.chunks.put(None)


# -- the session --------------------------------------------------------------------------------


class StreamSession:
    """One live stream: feed it binary frames, get events back.

    Args:
        analyzer: Loaded models (the same as ``/analyze``'s).
        start: The client's start message.
        limits: Length, frame size and speed limits.
        segments: How speech is cut (gaps, shortest speech, longest segment).
        clock: Seconds, monotonic (tests replace it).
    """

    def __init__(
        self,
        analyzer: SpeechEmotionAnalyzer,
        start: StreamStart,
        limits: StreamLimits | None = None,
        segments: SegmentOptions = STREAM_SEGMENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.analyzer = analyzer
        self.start = start
        self.limits = limits or StreamLimits()
        self.options = segments
        self._clock = clock
        self._started = clock()
        self._decoder: _PcmDecoder | _WebmDecoder = (
            _PcmDecoder(start.sample_rate) if start.format == "pcm16" else _WebmDecoder()
        )
        self._audio = bytearray()  # the whole stream, int16 at 16 kHz, for the summary's delivery metrics
        self._vad_pending = np.zeros(0, np.float32)  # samples not yet in a whole VAD window
        self._vad_context = np.zeros(CONTEXT, np.float32)
        self._vad_state: Any = None
        self._speaking = False
        self._loudest = -np.inf  # VAD=energy: the loudest window so far, dBFS
        self._base = 0  # first VAD frame not yet given to a segment
        self._speech: list[bool] = []  # per VAD frame from _base
        self._probabilities: list[float] = []
        self._level_at = 0  # samples already reported by level events
        self._index = 0
        self._results: list[AnalysisResult] = []
        self._closed_until = 0.0  # end of the last segment, s: no overlap with the next one's padding
        self.stopped = False

    @property
    def seconds(self) -> float:
        """Seconds of audio received so far."""
        return len(self._audio) / 2 / SAMPLING_RATE

    def feed(self, data: bytes) -> list[Event]:
        """Take one binary frame.

        Raises:
            StreamError: The frame is too large, the stream too long or too fast, or the audio
                cannot be decoded.
        """
        limits = self.limits
        if len(data) > limits.max_frame_bytes:
            raise StreamError(
                f"A binary frame of {len(data)} bytes is over the limit of {limits.max_frame_bytes} bytes "
                "(STREAM_MAX_FRAME_KB); send the audio in smaller frames, e.g. every 100-500 ms.",
                error_code="FRAME_TOO_LARGE",
                close_code=4413,
            )
        samples = self._decoder.feed(data)
        events = self._take(samples)
        elapsed = self._clock() - self._started
        if self.seconds > HEAD_START_SECONDS + limits.max_speed * elapsed:
            raise StreamError(
                f"Audio arrives faster than {limits.max_speed:g}x real time ({self.seconds:.1f} s of audio in "
                f"{elapsed:.1f} s, STREAM_MAX_SPEED); send a live recording as it is recorded, or a whole "
                "recording to POST /jobs.",
                error_code="STREAM_TOO_FAST",
                close_code=4429,
            )
        return events

    def stop(self) -> list[Event]:
        """End the stream: close the last segment and summarise the whole stream."""
        self.stopped = True
        events = self._take(self._decoder.flush())
        # Whatever speech is still open ends where the audio ends.
        events.extend(self._close_segments(final=True))
        signal = self._signal(0, len(self._audio) // 2)
        delivery = measure(signal) if len(signal) >= SAMPLING_RATE // 2 else None
        ensembles = [r.ensemble for r in self._results if r.ensemble is not None]
        summary = (
            summarise_session(ensembles, [r.audio.duration for r in self._results], lang=self.start.lang)
            if ensembles and len(ensembles) == len(self._results)
            else None
        )
        events.append(StreamSummary(self.seconds, len(self._results), summary, delivery))
        return events

    def close(self) -> None:
        """Release the decoder (a stream that ends without stop)."""
        self._decoder.close()

    # -- internals ------------------------------------------------------------------------------

    def _signal(self, first: int, last: int) -> np.ndarray:
        return np.frombuffer(self._audio, dtype=np.int16)[first:last].astype(np.float32) / 32768.0

    def _take(self, samples: np.ndarray) -> list[Event]:
        if samples.size == 0:
            return []
        if self.seconds + samples.size / SAMPLING_RATE > self.limits.max_seconds:
            raise StreamError(
                f"The stream is over the limit of {self.limits.max_seconds:g} s (STREAM_MAX_SECONDS); send "
                "stop before it, and start a new stream for the rest, or send the recording to POST /jobs.",
                error_code="STREAM_TOO_LONG",
                close_code=4413,
            )
        pcm = (np.clip(samples, -1.0, 32767 / 32768) * 32768).astype(np.int16)
        self._audio += pcm.tobytes()
        events: list[Event] = []
        self._run_vad(samples)
        level = self._level()
        if level is not None:
            events.append(level)
        events.extend(self._close_segments(final=False))
        return events

    def _run_vad(self, samples: np.ndarray) -> None:
        pending = np.concatenate([self._vad_pending, samples])
        count = len(pending) // WINDOW
        self._vad_pending = pending[count * WINDOW :]
        if count == 0:
            return
        block = np.concatenate([self._vad_context, pending[: count * WINDOW]]).astype(np.float32)
        self._vad_context = block[-CONTEXT:]
        if self.options.vad == "energy":
            self._energy_vad(block[CONTEXT:].reshape(count, WINDOW))
            return
        probabilities, self._vad_state = stream_probabilities(block, self._vad_state)
        for p in probabilities.tolist():
            # silero's hysteresis, as in vad.speech_frames
            if p >= THRESHOLD:
                self._speaking = True
            elif p < NEG_THRESHOLD:
                self._speaking = False
            self._speech.append(self._speaking)
            self._probabilities.append(p)

    def _energy_vad(self, windows: np.ndarray) -> None:
        """VAD=energy, live: the rule of the delivery metrics (speech lies within ``silence_db`` of the
        loudest moments), with the loudest moment so far as the reference, since the rest is not known yet."""
        db = 10 * np.log10(np.mean(windows.astype(np.float64) ** 2, axis=1) + 1e-12)
        for value in db.tolist():
            self._loudest = max(self._loudest, value)
            self._speaking = value > max(self._loudest - ProsodyOptions().silence_db, ENERGY_FLOOR_DB)
            self._speech.append(self._speaking)
            self._probabilities.append(value)  # the cut of a long segment goes to its quietest window

    def _level(self) -> Level | None:
        """One level event for the latest quarter second, however much audio the frame brought."""
        step = int(LEVEL_SECONDS * SAMPLING_RATE)
        total = len(self._audio) // 2
        if total - self._level_at < step:
            return None
        self._level_at = total - (total - self._level_at) % step
        chunk = self._signal(self._level_at - step, self._level_at)
        rms = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)))
        db = max(-100.0, 20 * np.log10(rms + 1e-10))
        return Level(round(self._level_at / SAMPLING_RATE, 3), self._speaking, round(db, 1))

    def _close_segments(self, *, final: bool) -> list[Event]:
        speech = np.asarray(self._speech, dtype=bool)
        if not speech.any():
            if not final:  # nothing said since the last segment: forget those frames
                self._base += len(speech)
                self._speech.clear()
                self._probabilities.clear()
            return []
        hop = FRAME_SECONDS
        trailing = len(speech) - 1 - int(np.flatnonzero(speech)[-1])
        first = int(np.flatnonzero(speech)[0])
        closed = final or trailing * hop >= self.options.min_silence
        too_long = (len(speech) - first) * hop >= self.options.max_segment
        if not (closed or too_long):
            return []
        duration = len(speech) * hop
        found = _segments(speech, np.asarray(self._probabilities), hop, duration, self.options)
        keep_from = len(speech)
        if not closed:
            # Speech goes on past max_segment: emit the pieces before the last cut, keep the rest open.
            if len(found) < 2:
                return []
            keep_from = int(round(found[-1].start / hop))
            found = found[:-1]
        offset = self._base * hop
        segments = [SpeechSegment(s.start + offset, s.end + offset) for s in found]
        self._base += keep_from
        del self._speech[:keep_from]
        del self._probabilities[:keep_from]
        return [event for segment in segments if (event := self._analyse(segment)) is not None]

    def _analyse(self, segment: SpeechSegment) -> SegmentClosed | None:
        start = max(segment.start, self._closed_until)
        end = min(segment.end, self.seconds)
        signal = self._signal(int(round(start * SAMPLING_RATE)), int(round(end * SAMPLING_RATE)))
        try:
            result = self.analyzer.analyze(signal, SAMPLING_RATE, lang=self.start.lang)
        except ServiceError as exc:
            if exc.status == 503:  # models unavailable: the stream cannot go on
                raise StreamError(exc.message, error_code=exc.error_code, close_code=CLOSE_TRY_AGAIN) from None
            return None  # e.g. shorter than MIN_AUDIO_SECONDS: not worth a result
        self._closed_until = end
        self._results.append(result)
        event = SegmentClosed(self._index, round(start, 3), round(end, 3), result)
        self._index += 1
        return event
