"""Decode anything a client sends into 16 kHz mono float32, in memory, within limits.

WAV, FLAC, OGG (Vorbis/Opus), MP3 and AIFF are read by libsndfile (``soundfile``); M4A/AAC,
WebM/Opus and other containers by FFmpeg's libraries bundled in the PyAV wheel, so no system
``ffmpeg`` is needed and nothing touches the disk. Decoding is incremental: each block is mixed
to mono and resampled to 16 kHz as it arrives, and decoding stops at the duration limit, so what
a clip holds in memory is bounded by ``max_seconds`` at 16 kHz however small the file and
whatever rate, channel count or length it claims.

Every way an input can be unusable raises :class:`~emotion_service.errors.InvalidAudio` (or
:class:`~emotion_service.errors.PayloadTooLarge`) with a stable ``error_code`` and a message
that says how to fix it.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from ..config import SAMPLING_RATE
from ..errors import InvalidAudio, PayloadTooLarge

SUPPORTED_FORMATS = "WAV, FLAC, OGG (Vorbis/Opus), MP3, M4A/AAC, WebM/Opus or AIFF"
MIN_SAMPLING_RATE = 2_000
# Recorders stop at 192 kHz and the models need 16 kHz: a higher rate only makes decoding dearer.
MAX_SAMPLING_RATE = 192_000
# Decode work is counted in samples (frames x channels) at the input's rate. A file may cost up to
# DENSE_SAMPLES_PER_SECOND per second of audio (3x a 48 kHz stereo recording) whatever its size;
# beyond that (192 kHz stereo, 7.1...) the samples it decodes to must be paid for by its size,
# SAMPLES_PER_BYTE per byte (a 192 kHz stereo FLAC of a real recording holds about 1; Opus 7.1
# at 256 kbit/s 12). So decoding never costs more than a few times what the audio the service
# analyses costs, however little the file weighs: a few kB of constant FLAC frames declaring
# 192 kHz x 8 channels cannot buy minutes of decoding.
DENSE_SAMPLES_PER_SECOND = 3 * 48_000 * 2
SAMPLES_PER_BYTE = 16
# RMS below -70 dBFS: nothing a microphone picked up from a speaking person.
SILENCE_RMS = 10 ** (-70 / 20)
_BLOCK_FRAMES = 1 << 16
_UNKNOWN_FRAMES = 2**63 - 1  # libsndfile's frame count when the header does not say


@dataclass(frozen=True)
class AudioLimits:
    """What the service accepts; inputs outside these limits are refused with a 4xx.

    Attributes:
        max_bytes: Largest encoded input (``MAX_UPLOAD_MB``).
        min_seconds: Shortest audio (``MIN_AUDIO_SECONDS``).
        max_seconds: Longest audio (``MAX_AUDIO_SECONDS``); decoding stops there.
        max_channels: Most channels a file may declare.
    """

    max_bytes: int = 25_000_000
    min_seconds: float = 0.5
    max_seconds: float = 600.0
    max_channels: int = 32


@dataclass(frozen=True)
class DecodedAudio:
    """A validated clip, ready for the models.

    Attributes:
        signal: Mono float32 samples at ``sampling_rate``.
        original_sampling_rate: The rate of the input before resampling.
        channels: Channels of the input before the mix to mono.
        format: ``wav``, ``flac``, ``ogg``, ``mp3``, ``aiff``, ``m4a``, ``aac``, ``webm`` or
            ``array`` for arrays passed by library users.
        sampling_rate: Always 16000.
    """

    signal: np.ndarray
    original_sampling_rate: int
    channels: int
    format: str
    sampling_rate: int = SAMPLING_RATE

    @property
    def duration(self) -> float:
        return len(self.signal) / self.sampling_rate


# -- base64 -----------------------------------------------------------------------------------

_DATA_URI = re.compile(r"^data:[\w.+/-]*(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")


def decode_base64(value: str) -> bytes:
    """Decode base64 audio, with or without a ``data:audio/...;base64,`` prefix.

    Whitespace is ignored, the URL-safe alphabet is accepted and missing padding is restored.

    Raises:
        InvalidAudio: ``EMPTY_AUDIO`` or ``INVALID_BASE64``.
    """
    text = value.strip()
    match = _DATA_URI.match(text)
    if match:
        text = text[match.end() :]
    elif text.lower().startswith("data:"):
        raise InvalidAudio(
            "audio_data is a data URI without ';base64,'; send 'data:audio/wav;base64,<base64>' or the bare base64.",
            error_code="INVALID_BASE64",
        )
    raw = "".join(text.split()).encode("ascii", errors="replace").translate(bytes.maketrans(b"-_", b"+/"))
    if not raw:
        raise InvalidAudio("audio_data is empty; send the base64 of a recording.", error_code="EMPTY_AUDIO")
    bad = _NOT_BASE64.search(raw)
    if bad or len(raw.rstrip(b"=")) % 4 == 1:
        where = f" (character {raw[bad.start() : bad.start() + 1]!r} at position {bad.start()})" if bad else ""
        raise InvalidAudio(
            f"audio_data is not valid base64{where}; encode the file bytes with standard base64 "
            "(Python: base64.b64encode(open(path, 'rb').read()).decode()).",
            error_code="INVALID_BASE64",
        )
    raw = raw.rstrip(b"=")
    raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error as exc:
        raise InvalidAudio(
            f"audio_data is not valid base64 ({exc}); encode the file bytes with standard base64.",
            error_code="INVALID_BASE64",
        ) from exc


# -- format sniffing --------------------------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """Name the container of encoded audio from its first bytes, or None if it is not audio we read."""
    head = data[:16]
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "webm"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync; layer bits 00 are ADTS (AAC), anything else MPEG-1/2 layer I-III.
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    return None


_SOUNDFILE_FORMATS = {"wav", "flac", "ogg", "aiff", "mp3"}


def check_container(data: bytes, limits: AudioLimits | None = None) -> str:
    """The cheap checks that come before decoding: not empty, within the size limit, a known container.

    ``POST /jobs`` runs them at submission, so that what cannot be decoded at all is refused at
    once rather than failing the job later. Returns the container's name (see :func:`sniff_format`).

    Raises:
        PayloadTooLarge: Over ``limits.max_bytes``.
        InvalidAudio: Empty (``EMPTY_AUDIO``) or not an audio container we read (``UNSUPPORTED_FORMAT``).
    """
    limits = limits or AudioLimits()
    if not data:
        raise InvalidAudio("The audio is empty (0 bytes); send a recording.", error_code="EMPTY_AUDIO")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"The audio is {len(data) / 1e6:.1f} MB, over the limit of {limits.max_bytes / 1e6:g} MB "
            "(MAX_UPLOAD_MB); send a shorter or compressed recording."
        )
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidAudio(
            f"This is not an audio file we can read; send {SUPPORTED_FORMATS}.", error_code="UNSUPPORTED_FORMAT"
        )
    return fmt


# -- decoding ---------------------------------------------------------------------------------


class _Decoded:
    """Mono 16 kHz blocks gathered while decoding, with the input's properties.

    Each block is mixed to mono and resampled to 16 kHz as it arrives, so what is held is
    bounded by the duration limit at 16 kHz (64 kB per second of audio), whatever rate and
    channel count the file declares: a small FLAC that decodes to minutes at 655 kHz cannot
    exhaust memory.
    """

    def __init__(self, rate: int, channels: int, limits: AudioLimits, fmt: str, size: int | None = None) -> None:
        _check_stream(rate, channels, limits, fmt)
        self.rate = rate
        self.channels = channels
        self.fmt = fmt
        self.blocks: list[np.ndarray] = []
        self.frames = 0  # at the input's rate
        # Most samples (frames x channels) this input may decode to; None: bounded by the duration.
        self.budget = None
        if size is not None and rate * channels > DENSE_SAMPLES_PER_SECOND:
            self.budget = SAMPLES_PER_BYTE * size
        self._mix = np.full(channels, 1 / channels, np.float32)
        self.energy = 0.0  # sum of squared 16 kHz samples, for the silence check
        self.cap = int(limits.max_seconds * rate) + 1
        self.limits = limits
        self._resampler = None
        if rate != SAMPLING_RATE:
            self._resampler = soxr.ResampleStream(rate, SAMPLING_RATE, 1, dtype="float32", quality="HQ")

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    def check_frames(self, frames: int) -> None:
        """Refuse an input whose length (from its header, or decoded so far) is over a limit."""
        if self.budget is not None and frames * self.channels > self.budget:
            raise InvalidAudio(
                f"The {self.fmt} file declares {self.rate} Hz with {self.channels} channels and holds more "
                f"samples than a recording of its size can ({SAMPLES_PER_BYTE} per byte); the models analyse "
                "16 kHz mono, so re-export it at 48 kHz stereo or less (16 kHz mono is enough).",
                error_code="UNSUPPORTED_SAMPLE_RATE",
            )

    def add(self, block: np.ndarray) -> None:
        """Add a (frames, channels) or (frames,) float block; raise once over the duration limit."""
        if block.size == 0:
            return
        # A matrix-vector product mixes to mono ~15x faster than mean(axis=1) over short rows.
        if block.ndim == 1:
            mono = block.astype(np.float32, copy=False)
        elif block.shape[1] == 1:
            mono = block[:, 0].astype(np.float32, copy=False)
        else:
            with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf samples are refused later (INVALID_SAMPLES)
                mono = block.astype(np.float32, copy=False) @ self._mix
        # NaN and inf survive the mix (inf - inf is NaN), so the mono samples are enough to check.
        if not np.isfinite(mono).all():
            raise InvalidAudio(
                "The audio contains NaN or infinite samples; re-export it as 16-bit PCM WAV or FLAC.",
                error_code="INVALID_SAMPLES",
            )
        self.frames += len(mono)
        if self.frames > self.cap:
            raise _too_long(self.limits, more_than=True)
        self.check_frames(self.frames)
        self._keep(self._resampler.resample_chunk(np.ascontiguousarray(mono)) if self._resampler else mono)

    def _keep(self, mono: np.ndarray) -> None:
        self.blocks.append(mono)
        self.energy += float(np.square(mono, dtype=np.float64).sum())

    def signal(self) -> np.ndarray:
        """All samples at 16 kHz (the resampler's tail is flushed on the first call)."""
        if self._resampler is not None:
            self._keep(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            self._resampler = None
        return np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.float32)


def _check_stream(rate: int, channels: int, limits: AudioLimits, fmt: str) -> None:
    if not MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE:
        raise InvalidAudio(
            f"The {fmt} file declares a sampling rate of {rate} Hz; rates from {MIN_SAMPLING_RATE} to "
            f"{MAX_SAMPLING_RATE} Hz are accepted and the models analyse 16000 Hz. Re-export the recording "
            "at 16000 Hz (or 48000 Hz).",
            error_code="UNSUPPORTED_SAMPLE_RATE",
        )
    if not 1 <= channels <= limits.max_channels:
        raise InvalidAudio(
            f"The {fmt} file declares {channels} channels; at most {limits.max_channels} are accepted. "
            "Send a mono or stereo recording.",
            error_code="TOO_MANY_CHANNELS",
        )


def _too_long(limits: AudioLimits, seconds: float | None = None, *, more_than: bool = False) -> InvalidAudio:
    lasts = "more than " if more_than else ""
    lasts += f"{seconds:.1f} s" if seconds is not None else f"{limits.max_seconds:g} s"
    return InvalidAudio(
        f"The audio lasts {lasts}; the limit is {limits.max_seconds:g} s (MAX_AUDIO_SECONDS). "
        "Split the recording into answers and use /batch_analyze.",
        error_code="AUDIO_TOO_LONG",
    )


def _read_soundfile(data: bytes, fmt: str, limits: AudioLimits) -> _Decoded:
    with sf.SoundFile(io.BytesIO(data)) as file:
        decoded = _Decoded(file.samplerate, file.channels, limits, fmt, len(data))
        if fmt == "flac" and file.frames >= _UNKNOWN_FRAMES:
            # libsndfile decodes such a FLAC to its end and then fails to seek there, so that
            # PyAV decoded it a second time: let PyAV read it alone.
            raise _OtherReader("FLAC without its length in STREAMINFO")
        if fmt == "flac":
            # FLAC's header holds the exact length (or 0: unknown); refuse a long one without decoding it.
            if file.frames > decoded.cap:
                raise _too_long(limits, file.frames / file.samplerate)
            decoded.check_frames(file.frames)
        while True:
            block = file.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
            if len(block) == 0:
                return decoded
            decoded.add(block)


def _read_pyav(data: bytes, fmt: str, limits: AudioLimits) -> _Decoded:
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        streams = container.streams.audio
        if not streams:
            raise InvalidAudio(
                f"The {fmt} file has no audio track; send a recording in {SUPPORTED_FORMATS}.",
                error_code="NO_AUDIO_STREAM",
            )
        stream = streams[0]
        codec = stream.codec_context
        if codec is None or not codec.sample_rate:
            raise InvalidAudio(
                f"The {fmt} file's audio track has no codec we can decode; re-encode it as AAC, Opus, WAV or FLAC.",
                error_code="CORRUPT_AUDIO",
            )
        decoded = _Decoded(codec.sample_rate, codec.channels, limits, fmt, len(data))
        # Convert every frame to packed float at the stream's own rate: the mix to mono and the
        # resampling then happen in one place (_Decoded.add), whatever the decoder. Packed, not
        # planar: PyAV 18's to_ndarray() of a planar frame with 8 channels reads a ninth plane
        # and crashes the process (a 7.1 FLAC that libsndfile gave up on did).
        resampler = av.AudioResampler(format="flt", rate=decoded.rate)
        for frame in _frames(container, stream):
            for converted in resampler.resample(frame):
                decoded.add(_packed(converted))
        for converted in resampler.resample(None):
            decoded.add(_packed(converted))
        return decoded


def _packed(frame) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A packed float frame as (frames, channels)."""
    return frame.to_ndarray().reshape(-1, frame.layout.nb_channels)


class _OtherReader(Exception):
    """This reader should leave the input to the next one."""


def _frames(container, stream) -> Iterator:  # type: ignore[no-untyped-def]
    for packet in container.demux(stream):
        yield from packet.decode()


def decode_audio(data: bytes, limits: AudioLimits | None = None) -> DecodedAudio:
    """Decode encoded audio bytes to 16 kHz mono float32 and validate them.

    Raises:
        PayloadTooLarge: Over ``limits.max_bytes``.
        InvalidAudio: Empty, unknown format, corrupt, too many channels, too short, too long,
            silent or with NaN/inf samples; ``error_code`` says which.
    """
    import av

    limits = limits or AudioLimits()
    fmt = check_container(data, limits)
    readers = [_read_soundfile, _read_pyav] if fmt in _SOUNDFILE_FORMATS else [_read_pyav]
    errors = []
    for reader in readers:
        try:
            decoded = reader(data, fmt, limits)
            break
        except (sf.SoundFileError, RuntimeError, av.FFmpegError, ValueError, EOFError, _OtherReader) as exc:
            # Both libraries raise their own errors on corrupt input (and ValueError for odd
            # parameters); the next reader may still succeed (e.g. Ogg with a codec libsndfile lacks).
            errors.append(str(exc).strip() or type(exc).__name__)
    else:
        raise InvalidAudio(
            f"The {fmt} file could not be decoded ({errors[-1]}); it may be truncated or corrupt. "
            "Check that it plays, or re-encode it as WAV or FLAC.",
            error_code="CORRUPT_AUDIO",
        )
    return _finish(decoded, fmt, limits)


def _finish(decoded: _Decoded, fmt: str, limits: AudioLimits) -> DecodedAudio:
    if decoded.frames == 0:
        raise InvalidAudio(
            f"The {fmt} file holds no samples; it may be truncated. Send the complete recording.",
            error_code="EMPTY_AUDIO",
        )
    seconds = decoded.seconds
    if seconds > limits.max_seconds:
        raise _too_long(limits, seconds)
    if seconds < limits.min_seconds:
        raise InvalidAudio(
            f"The audio lasts {seconds:.2f} s; send at least {limits.min_seconds:g} s of speech (MIN_AUDIO_SECONDS).",
            error_code="AUDIO_TOO_SHORT",
        )
    signal = decoded.signal()
    if np.sqrt(decoded.energy / max(len(signal), 1)) < SILENCE_RMS:
        raise InvalidAudio(
            "The audio is silent (below -70 dBFS); check the microphone and that the right track was sent.",
            error_code="SILENT_AUDIO",
        )
    return DecodedAudio(
        np.ascontiguousarray(signal), original_sampling_rate=decoded.rate, channels=decoded.channels, format=fmt
    )


def prepare_signal(signal: np.ndarray, sampling_rate: int, limits: AudioLimits | None = None) -> DecodedAudio:
    """Validate an array (``(frames,)``, ``(frames, channels)`` or ``(channels, frames)``) and
    bring it to 16 kHz mono float32.

    Raises:
        InvalidAudio: As :func:`decode_audio`, for the samples themselves.
    """
    limits = limits or AudioLimits()
    array = np.asarray(signal)
    if array.ndim not in (1, 2) or array.size == 0:
        raise InvalidAudio(
            f"Expected a 1-D or 2-D array of samples, got shape {array.shape}.", error_code="INVALID_SAMPLES"
        )
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InvalidAudio(f"Expected real-valued samples, got dtype {array.dtype}.", error_code="INVALID_SAMPLES")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    if array.ndim == 2 and array.shape[0] < array.shape[1]:
        array = array.T  # (channels, frames) -> (frames, channels)
    channels = 1 if array.ndim == 1 else array.shape[1]
    decoded = _Decoded(int(sampling_rate), channels, limits, "array")
    for start in range(0, len(array), _BLOCK_FRAMES):
        decoded.add(np.asarray(array[start : start + _BLOCK_FRAMES], dtype=np.float32))
    return _finish(decoded, "array", limits)


def load_audio(
    audio: str | os.PathLike[str] | np.ndarray,
    sampling_rate: int | None = None,
    limits: AudioLimits | None = None,
) -> DecodedAudio:
    """Load a file path or an array (which needs ``sampling_rate``) as 16 kHz mono float32.

    Raises:
        InvalidAudio: The file is missing or unusable, or an array came without its rate.
        PayloadTooLarge: The file is over ``limits.max_bytes``.
    """
    limits = limits or AudioLimits()
    if isinstance(audio, np.ndarray):
        if sampling_rate is None:
            raise InvalidAudio(
                "An array of samples needs its rate: call analyze(signal, sampling_rate=16000).",
                error_code="MISSING_SAMPLING_RATE",
            )
        return prepare_signal(audio, sampling_rate, limits)
    if not isinstance(audio, str | os.PathLike):
        raise InvalidAudio(
            f"Expected a file path, encoded bytes or a numpy array, got {type(audio).__name__}.",
            error_code="INVALID_AUDIO_DATA",
        )
    try:
        size = os.path.getsize(audio)
        if size > limits.max_bytes:
            raise PayloadTooLarge(
                f"{os.fspath(audio)} is {size / 1e6:.1f} MB, over the limit of {limits.max_bytes / 1e6:g} MB; "
                "raise AudioLimits.max_bytes or split the file."
            )
        with open(audio, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise InvalidAudio(
            f"Cannot read {os.fspath(audio)!r}: {exc.strerror or exc}.", error_code="FILE_NOT_READABLE"
        ) from exc
    return decode_audio(data, limits)
