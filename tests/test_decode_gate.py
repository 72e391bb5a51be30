"""MAX_DECODES: a flood of expensive uploads is answered 503 OVERLOADED with Retry-After at once,
and the decodes already running are not slowed by it."""

from __future__ import annotations

import threading
import time

import pytest

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.audio.decode_gate import DecodeGate
from emotion_service.config import Settings
from emotion_service.errors import Overloaded
from emotion_service.http.app import create_app

from .conftest import StandInModel
from .signals import wav


def test_a_gate_refuses_beyond_its_slots_after_its_wait_and_frees_them():
    gate = DecodeGate(2, wait=0.05)
    with gate.slot(), gate.slot():
        started = time.perf_counter()
        with pytest.raises(Overloaded) as caught, gate.slot():
            pass
        assert 0.04 < time.perf_counter() - started < 0.5
        assert caught.value.retry_after == 1 and "MAX_DECODES" in caught.value.message
    with gate.slot(), gate.slot():  # both slots were given back, also by the refused caller
        pass


def test_max_decodes_is_a_setting():
    assert Settings().max_decodes == 2
    assert Settings.from_env({"MAX_DECODES": "5"}).max_decodes == 5


class SlowDecodes(SpeechEmotionAnalyzer):
    """Decoding that takes 0.6 s, as an expensive upload would."""

    def decode(self, audio, sampling_rate=None):
        time.sleep(0.6)
        return super().decode(audio, sampling_rate)


def test_a_flood_of_uploads_beyond_max_decodes_gets_503_with_retry_after():
    analyzer = SlowDecodes.from_models({"standin": StandInModel()})
    analyzer.decode_gate = DecodeGate(2, wait=0.1)
    app = create_app(Settings(auth="off", rate_limits="off", max_decodes=2), analyzer)
    body = wav(1.0)
    answers: list[tuple[int, str | None, str | None, float]] = []
    lock = threading.Lock()

    def client() -> None:
        started = time.perf_counter()
        response = app.test_client().post("/analyze", data=body, content_type="audio/wav")
        with lock:
            answers.append((response.status_code, (response.get_json() or {}).get("error_code"),
                            response.headers.get("Retry-After"), time.perf_counter() - started))  # fmt: skip

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
        time.sleep(0.01)
    for thread in threads:
        thread.join(10)
    served = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] == 503]
    assert len(served) == 2 and len(refused) == 4, answers
    assert all(code == "OVERLOADED" and retry == "1" and took < 0.5 for _, code, retry, took in refused), refused
    response = app.test_client().post("/analyze", data=body, content_type="audio/wav")
    assert response.status_code == 200  # served again once the flood is over
