"""Per-candidate baselines: only statistics are kept, under a keyed hash, for a while, deletable."""

from __future__ import annotations

import base64
import time
from dataclasses import replace

import numpy as np
import pytest
import redis

from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
from emotion_service.analysis.baselines import MemoryBaselineStore, RedisBaselineStore, make_baseline_store
from emotion_service.audio.decode import AudioLimits
from emotion_service.config import Settings
from emotion_service.http.app import create_app
from emotion_service.models.base import BaselineStats, EmotionModel, ModelInfo, ModelOutput

from .server import free_port, redis_server
from .signals import voice_like, wav

LABELS = ("neutral", "happy", "sad")


class Adaptive(EmotionModel):
    """A speaker-adaptive stand-in: loudness as its feature; louder than the baseline reads happy."""

    min_baseline = 3

    def __init__(self) -> None:
        self.info = ModelInfo("adaptive", "Adaptive", "memory", "test", "MIT", LABELS)
        self.baselines_seen: list[int | None] = []

    def standardised(self, signals):
        return np.array([[[float(np.sqrt(np.mean(s**2))) * 10, 1.0]] for s in signals], dtype=np.float32)

    def baseline_stats(self, features):
        return BaselineStats.of(features)

    def score(self, features, baseline=None):
        self.baselines_seen.append(None if baseline is None else baseline.clips)
        reference = 1.0
        if baseline is not None and baseline.clips >= self.min_baseline:
            reference = float(baseline.total[0, 0] / baseline.clips)
        outputs = []
        for level in features[:, 0, 0]:
            lean = np.tanh(4 * (level - reference))
            p = np.array([1 - abs(lean), max(lean, 0), max(-lean, 0)]) + 1e-3
            outputs.append(ModelOutput(dict(zip(LABELS, (p / p.sum()).tolist(), strict=True))))
        return outputs

    def process_signals(self, signals, sampling_rate=16_000, *, same_speaker=False):
        features = self.standardised(signals)
        return self.score(features, self.baseline_stats(features) if same_speaker else None)


def _analyzer(store) -> SpeechEmotionAnalyzer:
    return SpeechEmotionAnalyzer.from_models(
        {"adaptive": Adaptive()}, limits=AudioLimits(max_bytes=2_000_000, max_seconds=30), baselines=store
    )


def _clip(gain: float, seed: int) -> np.ndarray:
    return voice_like(1.0, seed=seed) * gain


def test_the_store_keeps_statistics_under_a_keyed_hash_and_forgets_them():
    store = MemoryBaselineStore(ttl_seconds=0.3, secret=b"k" * 32)
    key = store.key("cand-7")
    assert "cand-7" not in key and key == MemoryBaselineStore(1, secret=b"k" * 32).key("cand-7")
    assert key != MemoryBaselineStore(1, secret=b"x" * 32).key("cand-7")
    store.add("m", key, BaselineStats(2, np.ones((1, 2), np.float32)))
    store.add("m", key, BaselineStats(1, np.full((1, 2), 3, np.float32)))
    kept = store.get("m", key)
    assert kept.clips == 3 and kept.total.tolist() == [[4.0, 4.0]]
    assert store.get("other-model", key) is None
    time.sleep(0.35)
    assert store.get("m", key) is None  # past its time to live
    store.add("m", key, BaselineStats(1, np.ones((1, 2), np.float32)))
    assert store.delete(["m"], key) and store.get("m", key) is None and not store.delete(["m"], key)


def _per_label(clips: int, level: float, source: str = "head-1") -> BaselineStats:
    return BaselineStats(clips, np.full((3, 1, 2), level, np.float32), np.full(3, level, np.float32), source)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_per_label_statistics_add_up_and_a_change_of_kind_starts_afresh(kind, request):
    store = (
        MemoryBaselineStore(60, secret=b"k" * 32)
        if kind == "memory"
        else make_baseline_store(1, request.getfixturevalue("redis_url"))
    )
    key = store.key("cand-labels")
    store.add("m", key, _per_label(2, 1.0))
    store.add("m", key, _per_label(1, 2.0))
    kept = store.get("m", key)
    assert kept.clips == 3 and kept.total.shape == (3, 1, 2) and kept.mass.tolist() == [3.0, 3.0, 3.0]
    assert kept.total[2, 0].tolist() == [3.0, 3.0] and kept.source == "head-1"
    # A new head whose statistics have the same shape does not add to the old head's.
    store.add("m", key, _per_label(1, 5.0, source="head-2"))
    kept = store.get("m", key)
    assert kept.clips == 1 and kept.source == "head-2" and kept.mass.tolist() == [5.0, 5.0, 5.0]
    # A head that changed to plain sums (another shape, no mass) does not add to the old kind.
    store.add("m", key, BaselineStats(1, np.ones((1, 2), np.float32)))
    kept = store.get("m", key)
    assert kept.clips == 1 and kept.mass is None and kept.total.tolist() == [[1.0, 1.0]]
    store.delete(["m"], key)


def test_a_candidate_is_judged_against_their_usual_voice():
    analyzer = _analyzer(MemoryBaselineStore(3600))
    first = analyzer.analyze(_clip(0.3, 1), 16_000, candidate_id="c1")
    assert (first.baseline.mode, first.baseline.clips, first.baseline.source) == ("clip", 1, "candidate")
    analyzer.analyze(_clip(0.3, 2), 16_000, candidate_id="c1")
    third = analyzer.analyze(_clip(0.3, 3), 16_000, candidate_id="c1")
    assert (third.baseline.mode, third.baseline.clips) == ("baseline", 3)
    # A loud clip of a quiet candidate leans happy against their baseline; alone, it does not know.
    loud = _clip(0.6, 4)
    judged = analyzer.analyze(loud, 16_000, candidate_id="c1")
    alone = analyzer.analyze(loud, 16_000)
    assert judged.baseline.clips == 4 and alone.baseline.mode == "clip" and alone.baseline.source is None
    assert judged.ensemble.probabilities["happy"] > alone.ensemble.probabilities["happy"] + 0.05
    # Another candidate has their own baseline; deleting one forgets only that one.
    assert analyzer.analyze(loud, 16_000, candidate_id="c2").baseline.clips == 1
    assert analyzer.forget_candidate("c1") and not analyzer.forget_candidate("c1")
    assert analyzer.analyze(_clip(0.3, 5), 16_000, candidate_id="c1").baseline.clips == 1
    assert analyzer.analyze(_clip(0.3, 6), 16_000, candidate_id="c2").baseline.clips == 2


def test_a_session_without_an_id_uses_its_own_clips_and_keeps_nothing():
    store = MemoryBaselineStore(3600)
    analyzer = _analyzer(store)
    session = analyzer.analyze_session([wav(1.0), wav(1.0, seed=2), wav(1.0, seed=3)])
    assert {(o.result.baseline.mode, o.result.baseline.source, o.result.baseline.clips) for o in session.segments} == {
        ("baseline", "session", 3)
    }
    assert len(store._items) == 0
    batch = analyzer.analyze_session([wav(1.0), wav(1.0, seed=2)], candidate_id="c9")
    assert all(o.result.baseline.source == "candidate" for o in batch.segments)
    assert store.get("adaptive", store.key("c9")).clips == 2


def test_no_baseline_is_kept_when_emotion_inference_is_off():
    analyzer = SpeechEmotionAnalyzer.from_settings(Settings(emotion_inference=False, baseline_ttl_hours=24), load=True)
    assert analyzer.baselines is None
    result = analyzer.analyze(wav(1.0), candidate_id="c1")
    assert result.ensemble is None and result.baseline is None
    assert analyzer.forget_candidate("c1") is False


def test_a_candidate_is_never_served_from_the_result_cache():
    from emotion_service.analysis.cache import MemoryCache

    analyzer = SpeechEmotionAnalyzer.from_models(
        {"adaptive": Adaptive()}, cache=MemoryCache(), baselines=MemoryBaselineStore(3600)
    )
    clip = wav(1.0)
    assert not analyzer.analyze(clip).cached and analyzer.analyze(clip).cached
    assert not analyzer.analyze(clip, candidate_id="c1").cached
    assert not analyzer.analyze(clip, candidate_id="c1").cached


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    port = free_port()
    with redis_server(port, tmp_path_factory.mktemp("redis")):
        yield f"redis://127.0.0.1:{port}/5"


def test_redis_shares_baselines_and_their_key_between_workers(redis_url):
    one, two = make_baseline_store(1, redis_url), make_baseline_store(1, redis_url)
    assert isinstance(one, RedisBaselineStore)
    key = one.key("cand-1")
    assert two.key("cand-1") == key  # the secret chosen by the first worker is read by the second
    one.add("m", key, BaselineStats(2, np.ones((1, 3), np.float32)))
    two.add("m", key, BaselineStats(1, np.ones((1, 3), np.float32)))
    kept = one.get("m", key)
    assert kept.clips == 3 and kept.total.tolist() == [[2.0, 2.0, 2.0]]
    client = redis.Redis.from_url(redis_url)
    names = [n.decode() for n in client.keys("emotion:baseline:v1:m:*")]
    assert names == [f"emotion:baseline:v1:m:{key}"] and "cand-1" not in names[0]
    assert 0 < client.ttl(names[0]) <= 3600
    assert two.delete(["m"], key) and one.get("m", key) is None


def test_an_unreachable_redis_degrades_to_the_session(caplog):
    errors = []
    store = RedisBaselineStore(f"redis://127.0.0.1:{free_port()}/0", 3600, on_error=lambda: errors.append(1))
    analyzer = _analyzer(store)
    result = analyzer.analyze(wav(1.0), candidate_id="c1")
    assert result.baseline.source is None and result.ensemble is not None
    assert errors


# -- HTTP ----------------------------------------------------------------------------------------


@pytest.fixture
def client(settings, tmp_path):
    app = create_app(
        replace(settings, rate_limits="off", job_dir=str(tmp_path / "jobs")), _analyzer(MemoryBaselineStore(3600))
    )
    yield app.test_client()
    app.extensions["emotion_jobs"].close()


def test_http_candidate_id_in_every_form_and_delete(client):
    a = client.post("/analyze", data={"audio": (__import__("io").BytesIO(wav(1.0)), "a.wav"), "candidate_id": "p-1"})
    assert a.status_code == 200 and a.json["data"]["baseline"] == {"mode": "clip", "clips": 1, "source": "candidate"}
    b = client.post("/analyze", json={"audio_data": base64.b64encode(wav(1.0, seed=2)).decode(), "candidate_id": "p-1"})
    c = client.post("/analyze?candidate_id=p-1", data=wav(1.0, seed=3), content_type="audio/wav")
    assert b.json["data"]["baseline"]["clips"] == 2
    assert c.json["data"]["baseline"] == {"mode": "baseline", "clips": 3, "source": "candidate"}
    batch = client.post(
        "/batch_analyze",
        json={"audio_segments": [base64.b64encode(wav(1.0, seed=s)).decode() for s in (4, 5)], "candidate_id": "p-1"},
    )
    assert [r["baseline"]["clips"] for r in batch.json["data"]["results"]] == [5, 5]
    gone = client.delete("/candidates/p-1")
    assert gone.status_code == 200 and gone.json["data"] == {"deleted": True}
    assert client.delete("/candidates/p-1").json["data"] == {"deleted": False}
    fresh = client.post("/analyze?candidate_id=p-1", data=wav(1.0, seed=6), content_type="audio/wav")
    assert fresh.json["data"]["baseline"]["clips"] == 1


@pytest.mark.parametrize("bad", ["x" * 257, "tab\there"])
def test_http_a_bad_candidate_id_says_what_to_send(client, bad):
    response = client.post("/analyze", json={"audio_data": base64.b64encode(wav(1.0)).decode(), "candidate_id": bad})
    assert response.status_code == 400
    assert response.json["error_code"] in ("INVALID_CANDIDATE_ID", "INVALID_REQUEST")
    assert "candidate_id" in response.json["message"]
    assert client.get("/health").status_code == 200


def test_a_job_with_a_candidate_id_joins_their_baseline_and_stores_only_its_hash(settings, tmp_path):
    from .test_jobs import wait_for

    store = MemoryBaselineStore(3600)
    analyzer = _analyzer(store)
    app = create_app(replace(settings, rate_limits="off", job_dir=str(tmp_path / "jobs")), analyzer)
    client = app.test_client()
    try:
        answered = client.post(
            "/jobs", data={"audio": (__import__("io").BytesIO(wav(3.0)), "a.wav"), "candidate_id": "cand-job-1"}
        )
        assert answered.status_code == 202, answered.get_json()
        job_id = answered.json["data"]["job_id"]
        done = wait_for(
            lambda: client.get(f"/jobs/{job_id}").json["data"]["status"] in ("done", "failed"), what="the job"
        )
        assert done and client.get(f"/jobs/{job_id}").json["data"]["status"] == "done"
        kept = store.get("adaptive", store.key("cand-job-1"))
        assert kept is not None and kept.clips >= 1
        stored = (tmp_path / "jobs").rglob("*")
        raw = b"".join(p.read_bytes() for p in stored if p.is_file())
        assert b"cand-job-1" not in raw  # the job store holds the keyed hash, never the id
    finally:
        app.extensions["emotion_jobs"].close()
