"""Speech segments of generated recordings with known speech and silences, for both VADs.

The ``energy`` tests use harmonic tones (``voice_like``), which only an energy VAD takes for
speech. The ``silero`` rules are checked with a stand-in for the network (known probabilities from
the same tones), and the network itself on what it must ignore and against its own streaming call.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from emotion_service.audio import vad
from emotion_service.audio.segmentation import SegmentOptions, find_speech
from emotion_service.config import Settings
from emotion_service.errors import ConfigError

from .signals import voice_like

RATE = 16_000


def quiet(seconds: float) -> np.ndarray:
    return (1e-4 * np.random.default_rng(0).standard_normal(int(seconds * RATE))).astype(np.float32)


def test_segments_follow_known_speech():
    # speech 2 s, silence 1.5 s, speech 3 s, silence 0.3 s (too short to split), speech 1 s, silence 2 s
    x = np.concatenate(
        [quiet(0.5), voice_like(2.0), quiet(1.5), voice_like(3.0), quiet(0.3), voice_like(1.0), quiet(2.0)]
    )
    segments = find_speech(x, options=SegmentOptions(padding=0.0, vad="energy"))
    assert len(segments) == 2
    # voice_like fades in and out over ~0.1 s: boundaries within 0.15 s
    assert segments[0].start == pytest.approx(0.5, abs=0.15) and segments[0].end == pytest.approx(2.5, abs=0.15)
    assert segments[1].start == pytest.approx(4.0, abs=0.15) and segments[1].end == pytest.approx(8.3, abs=0.15)


def test_long_speech_is_cut_without_overlap():
    x = np.concatenate([voice_like(47.0), quiet(1.0)])
    segments = find_speech(x, options=SegmentOptions(max_segment=10.0, vad="energy"))
    assert all(s.duration <= 10.0 + 1e-6 for s in segments)
    assert sum(s.duration for s in segments) == pytest.approx(47.0, abs=0.3)
    for a, b in zip(segments, segments[1:], strict=False):
        assert b.start >= a.end - 1e-9


def test_clicks_are_dropped_and_padding_stays_inside():
    click = np.zeros(RATE, np.float32)
    click[RATE // 2 : RATE // 2 + 80] = 0.8
    x = np.concatenate([voice_like(1.0), quiet(1.0), click, quiet(1.0)])
    segments = find_speech(x, options=SegmentOptions(padding=0.2, vad="energy"))
    assert len(segments) == 1 and segments[0].start == 0.0
    assert len(segments[0].slice(x)) == pytest.approx(segments[0].duration * RATE, abs=2)


# -- silero ---------------------------------------------------------------------------------------


class StandInNetwork:
    """Probability 0.9 for 32 ms windows louder than -40 dBFS, else 0.05: speech where the tones are."""

    def __call__(self, signal: np.ndarray) -> np.ndarray:
        windows = np.resize(signal, -(-len(signal) // vad.WINDOW) * vad.WINDOW).reshape(-1, vad.WINDOW)
        return np.where(np.sqrt(np.mean(windows**2, axis=1)) > 0.01, 0.9, 0.05)


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(vad, "speech_probabilities", StandInNetwork())


def test_silero_rules_match_energy(stand_in):
    # speech 2 s, silence 1.5 s (splits), speech 3 s, silence 0.3 s (merged), speech 1 s, then a click
    click = np.zeros(RATE, np.float32)
    click[RATE // 2 : RATE // 2 + 80] = 0.8
    x = np.concatenate([quiet(0.5), voice_like(2.0), quiet(1.5), voice_like(3.0), quiet(0.3), voice_like(1.0), click])
    for options in (SegmentOptions(padding=0.0), SegmentOptions(padding=0.2), SegmentOptions(min_silence=0.2)):
        silero = find_speech(x, options=options)
        energy = find_speech(x, options=replace(options, vad="energy"))
        assert len(silero) == len(energy) == (3 if options.min_silence < 0.3 else 2)
        for s, e in zip(silero, energy, strict=True):  # the same speech within a 32 ms window and the tone's fades
            assert s.start == pytest.approx(e.start, abs=0.1) and s.end == pytest.approx(e.end, abs=0.1)


def test_silero_caps_segments_without_overlap(stand_in):
    x = np.concatenate([quiet(0.7), voice_like(47.0), quiet(1.0)])
    segments = find_speech(x, options=SegmentOptions(max_segment=10.0, padding=0.25))
    assert len(segments) >= 5 and all(s.duration <= 10.0 + 1e-6 for s in segments)
    assert all(s.duration >= 4.7 for s in segments[:-1])  # cut in the second half of (10 s - 2 x padding)
    assert segments[0].start == pytest.approx(0.7 - 0.25, abs=0.1) and segments[-1].end == pytest.approx(47.95, abs=0.1)
    for a, b in zip(segments, segments[1:], strict=False):
        assert b.start == a.end  # cut inside speech: no padding, no overlap, nothing lost


def test_silero_padding_stays_inside_and_other_rates(stand_in):
    x = np.concatenate([voice_like(1.0), quiet(1.0), voice_like(1.0, seed=1)])
    found = find_speech(x, options=SegmentOptions(padding=0.3))
    assert found[0].start == 0.0 and found[-1].end == pytest.approx(len(x) / RATE)
    assert found[0].end <= found[1].start
    # 8 kHz in, seconds out: resampled to the model's 16 kHz first
    slow = find_speech(x[::2].copy(), 8_000, SegmentOptions(padding=0.3))
    assert [(round(s.start, 1), round(s.end, 1)) for s in slow] == [(round(s.start, 1), round(s.end, 1)) for s in found]


def test_silero_hysteresis():
    p = np.array([0.1, 0.6, 0.4, 0.4, 0.3, 0.4, 0.6, 0.45, 0.2])
    assert vad.speech_frames(p).tolist() == [False, True, True, True, False, False, True, True, False]
    assert vad.speech_frames(np.zeros(0)).tolist() == []


def test_vad_setting():
    assert Settings().vad == SegmentOptions().vad == "silero"  # one default for the service and the library
    assert Settings.from_env({"VAD": " Energy "}).vad == "energy"
    with pytest.raises(ConfigError, match="VAD"):
        Settings.from_env({"VAD": "webrtc"})
    with pytest.raises(ValueError, match="energy, silero"):
        SegmentOptions(vad="webrtc")
    with pytest.raises(ConfigError, match="VAD=energy"):  # a silero-vad whose model is laid out differently
        vad.SileroVAD(object())


def vowels(seconds: float, f0: float = 100.0, seed: int = 0) -> np.ndarray:
    """Glottal pulses through three formant resonators, a new vowel every 120-250 ms."""
    rng = np.random.default_rng(seed)
    formants = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480)]
    out = []
    while sum(map(len, out)) < seconds * RATE:
        n = int(rng.uniform(0.12, 0.25) * RATE)
        t = np.arange(n) / RATE
        phase = np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * t + rng.uniform(0, 6)))) / RATE
        source = lfilter([1], [1, -0.97], np.diff(np.floor(phase), prepend=0.0))
        voiced = np.zeros(n)
        for f, bandwidth in zip(formants[rng.integers(len(formants))], (80, 100, 120), strict=True):
            r = np.exp(-np.pi * bandwidth / RATE)
            voiced += lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / RATE), r * r], source)
        out.append(voiced * np.sqrt(np.abs(np.sin(np.pi * t / t[-1]))))
    x = np.concatenate(out)[: int(seconds * RATE)]
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.mark.parametrize("block", [2048, 32])  # one block of windows through the encoder, or several
def test_silero_network_matches_its_streaming_call(monkeypatch, block):
    monkeypatch.setattr(vad, "_BLOCK", block)
    x = np.concatenate([quiet(0.5), vowels(2.0), quiet(1.0), vowels(1.5, f0=180, seed=1), quiet(0.3)])
    x = x[: len(x) - len(x) % vad.WINDOW - 100]  # a tail shorter than a window
    x[: RATE // 10] += 0.05  # a step at the start
    fast = vad.speech_probabilities(x)
    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            model = load_silero_vad()
        chunks = torch.nn.functional.pad(torch.from_numpy(x), (0, 100)).split(vad.WINDOW)
        with torch.inference_mode():
            streaming = np.array([model(chunk, RATE).item() for chunk in chunks])
    finally:
        torch.set_num_threads(threads)  # importing silero_vad sets it to 1
    assert fast.shape == streaming.shape == ((len(x) + 100) // vad.WINDOW,)
    assert np.abs(fast - streaming).max() < 1e-4
    assert streaming.max() > 0.5 > streaming.min()  # the signal tells the network something


def test_silero_ignores_noise_and_hum_that_energy_takes_for_speech():
    rng = np.random.default_rng(0)
    t = np.arange(10 * RATE) / RATE
    for x in (0.2 * rng.standard_normal(t.size), 0.2 * np.sin(2 * np.pi * 50 * t) + 0.01 * rng.standard_normal(t.size)):
        x = x.astype(np.float32)
        assert find_speech(x, options=SegmentOptions(vad="silero")) == []
        assert len(find_speech(x, options=SegmentOptions(vad="energy"))) == 1


def test_silero_keeps_the_thread_count_of_the_process(monkeypatch):
    monkeypatch.setattr(vad, "_runner", None)  # load it here, whatever ran before
    before = torch.get_num_threads()
    find_speech(vowels(1.0), options=SegmentOptions(vad="silero"))
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert torch.get_num_threads() == before and seen == [before]


def test_silero_is_fast_on_one_thread():
    x = np.tile(vowels(5.0), 24)  # two minutes
    find_speech(x[:RATE], options=SegmentOptions(vad="silero"))  # loaded
    started = time.perf_counter()
    find_speech(x, options=SegmentOptions(vad="silero"))
    assert 120 / (time.perf_counter() - started) > 100  # bench/bench_vad.py: ~1000x; room for busy CI
