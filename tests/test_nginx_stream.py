"""GET /stream through the shipped nginx config and gunicorn, with the guide's /api/emotion/ prefix."""

from __future__ import annotations

import requests
import websocket

from .server import free_port, running
from .stream_client import answers, pcm16, receive_all, start_message, stream_pcm
from .test_nginx import nginx


def test_stream_through_nginx_and_gunicorn(tmp_path):
    port = free_port()
    env = {"VAD": "energy", "RATE_LIMITS": "off", "THREADS": "4", "MAX_STREAMS": "2"}
    with running(["-m", "gunicorn", "emotion_api:app"], port, env=env), nginx(tmp_path, [port]) as (url, _):
        for path in ("/stream", "/api/emotion/stream"):
            ws = websocket.create_connection(url.replace("http://", "ws://") + path, timeout=30)
            try:
                ws.send(start_message(lang="zh"))
                stream_pcm(ws, pcm16(answers(2)), speed=4)
                messages, code = receive_all(ws)
            finally:
                ws.shutdown()
            assert code == 1000, messages
            assert messages[0]["type"] == "ready"
            segments = [m for m in messages if m["type"] == "segment"]
            assert len(segments) == 2 and all(s["final_result"]["recommended_emotion"] for s in segments)
            assert messages[-1]["type"] == "summary" and messages[-1]["session_summary"]["segments_analyzed"] == 2
        # Plain requests still reach the API with keepalive (no Upgrade: Connection "").
        assert requests.get(url + "/api/emotion/health", timeout=10).json()["data"]["status"] == "healthy"
        metrics = requests.get(url + "/metrics", timeout=10).text
        assert 'emotion_streams_total{outcome="ok"} 2.0' in metrics
        assert "emotion_stream_segments_total 4.0" in metrics
