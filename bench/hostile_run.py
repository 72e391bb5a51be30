"""A hostile-input run of 10,000+ cases, outside the CI test run (its CI subset: tests/test_hostile_run.py).

    python bench/hostile_run.py                 # 10,254 cases (about 45 s on 2 cores)
    python bench/hostile_run.py --scale 0.1     # a tenth of each part

Four parts, every case bounded in time:
- ``api``: schemathesis over every operation of /openapi.json, valid and invalid (POSITIVE and
  NEGATIVE) requests with a valid key, in process over WSGI with the tests' stand-in model;
  every answer must be < 500 and conform to the document (status, content type, schema).
- ``decoder``: mutated files of every format (byte flips, truncation, repeated and spliced
  chunks, header fields set to extremes), magic numbers followed by garbage, random bytes and
  lying WAV headers, decoded in child processes (a crash or a hang kills only the child and is
  reported with its case); each must decode within the limits or raise a 4xx error.
- ``http``: multipart and JSON abuse through the app: random boundaries, part counts, names,
  file names, headers and content types; random, deep and huge JSON; base64 of random and
  mutated audio; sent to /analyze, /batch_analyze and /jobs, each answer a 4xx/2xx envelope.
- ``stream``: hostile conversations on the /stream WebSocket (junk or wrong JSON first, starts
  with hostile fields, audio before the start, odd-length PCM, a frame over the limit, text that
  is not JSON mid-stream, random bytes announced as WebM); each must end with a close frame in
  time, every error message carries an ``error_code``, and /health answers afterwards.

Prints the totals per part, the slowest case, peak memory (this process and its children) and
every 5xx, crash or hang; the last line is one JSON object. Exit status 1 when any was found.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import resource
import select
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpuinfo import cpu_info, describe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASE_SECONDS = 10.0  # a case slower than this is a hang
KEY = "hostile-run-key-0f3e1b"


# -- decoder cases ---------------------------------------------------------------------------------


def _seeds() -> dict[str, bytes]:
    import numpy as np

    from tests.signals import encode, voice_like
    from tests.test_audio import pyav_encode, tone

    stereo = np.stack([voice_like(0.6), voice_like(0.6, seed=1)], axis=1)
    return {
        "wav": encode(voice_like(0.6), format="WAV"),
        "wav-float-stereo": encode(stereo, format="WAV", subtype="FLOAT"),
        "wav-adpcm": encode(voice_like(0.6), format="WAV", subtype="IMA_ADPCM"),
        "flac": encode(voice_like(0.6), format="FLAC"),
        "flac-stereo-48k": encode(np.repeat(stereo, 3, axis=0), 48_000, format="FLAC"),
        "mp3": encode(voice_like(0.6), format="MP3"),
        "ogg-vorbis": encode(voice_like(0.6), format="OGG", subtype="VORBIS"),
        "ogg-opus": encode(stereo, 16_000, format="OGG", subtype="OPUS"),
        "aiff": encode(voice_like(0.6), format="AIFF"),
        "m4a": pyav_encode(tone(0.6, 44_100), 44_100, "mp4", "aac"),
        "aac-adts": pyav_encode(tone(0.6, 44_100), 44_100, "adts", "aac"),
        "webm": pyav_encode(tone(0.6, 48_000), 48_000, "webm", "libopus"),
    }


MAGIC = [b"RIFF", b"RF64", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"\xff\xf1", b"\x1aE\xdf\xa3",
         b"FORM", b"\x00\x00\x00\x20ftypM4A "]  # fmt: skip


def decoder_case(index: int, seeds: dict[str, bytes]) -> tuple[str, bytes]:
    """Case ``index`` (deterministic): its kind and bytes."""
    rng = random.Random(index)
    names = sorted(seeds)
    roll = index % 10
    if roll < 6:  # mutate a real file
        name = names[(index // 10) % len(names)]
        data = bytearray(seeds[name])
        how = rng.choice(["flip", "truncate", "repeat", "splice", "extreme", "flip+truncate"])
        if "flip" in how:
            for _ in range(rng.randint(1, 40)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        if "truncate" in how:
            data = data[: rng.randint(1, len(data))]
        if how == "repeat":  # a chunk repeated many times (frames or boxes that loop)
            start = rng.randrange(len(data))
            chunk = data[start : start + rng.randint(1, 512)]
            data[start:start] = chunk * rng.randint(2, 200)
        if how == "splice":  # the head of one format on the body of another
            other = seeds[rng.choice(names)]
            cut = rng.randint(1, min(len(data), 200))
            data = data[:cut] + other[rng.randint(0, len(other) - 1) :]
        if how == "extreme":  # 1-4 byte fields in the first 200 bytes set to 0 or all ones
            for _ in range(rng.randint(1, 6)):
                width = rng.choice([1, 2, 4])
                at = rng.randrange(min(len(data), 200))
                data[at : at + width] = rng.choice([b"\x00", b"\xff", b"\x7f"]) * width
        return f"mutated {name} ({how})", bytes(data)
    if roll < 8:
        prefix = MAGIC[index % len(MAGIC)]
        return f"magic {prefix[:8]!r} + garbage", prefix + rng.randbytes(rng.randint(0, 4096))
    if roll == 8:
        return "random bytes", rng.randbytes(rng.randint(0, 4096))
    channels = rng.choice([0, 1, 2, 8, 33, 255, 65535])
    rate = rng.choice([0, 1, 1999, 8000, 16000, 192000, 192001, 768000, 2**31, 2**32 - 1])
    bits = rng.choice([0, 1, 8, 16, 24, 32, 64, 65535])
    fmt = rng.choice([1, 3, 0xFFFE, 0, 2, 0x11, 0x31])
    size = rng.choice([0, 1, 2**31, 2**32 - 1, rng.randrange(2**32)])
    block = (channels * bits // 8) & 0xFFFF
    header = struct.pack("<HHIIHH", fmt, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    payload = rng.randbytes(rng.randint(0, 8192))
    riff = b"RIFF" + struct.pack("<I", 36 + len(payload)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + header
    return "lying wav header", riff + b"data" + struct.pack("<I", size) + payload


def _decode_child(start: int, count: int) -> None:
    """Child process: decode cases start..start+count-1, one JSON line each, as soon as done."""
    import numpy as np

    from emotion_service.audio.decode import AudioLimits, decode_audio
    from emotion_service.errors import InvalidAudio, PayloadTooLarge

    limits = AudioLimits(max_bytes=2_000_000, min_seconds=0.2, max_seconds=20)
    seeds = _seeds()
    for index in range(start, start + count):
        kind, data = decoder_case(index, seeds)
        print(json.dumps({"index": index, "start": True}), flush=True)
        started = time.perf_counter()
        problem = None
        try:
            decoded = decode_audio(data, limits)
            if not (decoded.sampling_rate == 16_000 and np.isfinite(decoded.signal).all()
                    and decoded.duration <= limits.max_seconds + 0.5):  # fmt: skip
                problem = "decoded audio outside the limits"
            outcome = "ok"
        except (InvalidAudio, PayloadTooLarge) as error:
            outcome = error.error_code
            if not 400 <= error.status < 500:
                problem = f"status {error.status}"
        except Exception as error:  # noqa: BLE001 - what the run looks for: any other exception
            outcome = type(error).__name__
            problem = f"{type(error).__name__}: {error}"
        elapsed = time.perf_counter() - started
        print(json.dumps({"index": index, "kind": kind, "outcome": outcome, "seconds": elapsed,
                          "problem": problem}), flush=True)  # fmt: skip


def run_decoder(count: int, report) -> dict:  # type: ignore[no-untyped-def]
    """Decode ``count`` cases in child processes of 500; a crash or hang restarts after its case."""
    outcomes: dict[str, int] = {}
    slowest = (0.0, "")
    done = 0
    index = 0
    while index < count:
        chunk = min(500, count - index)
        process = subprocess.Popen([sys.executable, __file__, "--decode-child", str(index), str(chunk)],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
        assert process.stdout is not None
        fd = process.stdout.fileno()
        current = None
        last_line = time.monotonic()
        end = index + chunk
        buffer = b""
        while True:
            readable, _, _ = select.select([fd], [], [], 0.2)
            data = os.read(fd, 1 << 16) if readable else None
            if data == b"":  # the child exited (or crashed)
                process.wait()
                break
            buffer += data or b""
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                row = json.loads(line)
                last_line = time.monotonic()
                if "start" in row:
                    current = row["index"]
                    continue
                current = None
                done += 1
                outcomes[row["outcome"]] = outcomes.get(row["outcome"], 0) + 1
                if row["seconds"] > slowest[0]:
                    slowest = (row["seconds"], f"decoder case {row['index']}: {row['kind']} -> {row['outcome']}")
                if row["problem"] or row["seconds"] > CASE_SECONDS:
                    report("decoder", f"case {row['index']} ({row['kind']}): {row['problem'] or 'slow'} "
                                      f"in {row['seconds']:.1f} s")  # fmt: skip
            if current is not None and time.monotonic() - last_line > CASE_SECONDS:
                process.kill()
                process.wait()
                break
        process.stdout.close()
        if current is not None:  # crashed or hung on this case: report it, go on after it
            why = "hang" if process.returncode == -9 else f"crash (exit status {process.returncode})"
            report("decoder", f"case {current}: {why}")
            done += 1
            index = current + 1
        else:
            index = end
    return {"cases": done, "outcomes": outcomes, "slowest": slowest}


# -- the app ---------------------------------------------------------------------------------------


def make_app(job_dir: str):  # type: ignore[no-untyped-def]
    from emotion_service.analysis.analyzer import SpeechEmotionAnalyzer
    from emotion_service.audio.decode import AudioLimits
    from emotion_service.config import Settings
    from emotion_service.http.app import create_app
    from tests.conftest import StandInModel

    settings = Settings(max_upload_mb=1, max_request_mb=2, max_audio_seconds=30, api_keys=(KEY,),
                        rate_limits="off", job_dir=job_dir, log_level="ERROR")  # fmt: skip
    analyzer = SpeechEmotionAnalyzer.from_models(
        {"standin": StandInModel()}, {"standin": 1.0}, limits=AudioLimits(max_bytes=1_000_000, max_seconds=30)
    )
    return create_app(settings, analyzer)


def run_api(app, per_operation: int, report) -> dict:  # type: ignore[no-untyped-def]
    """schemathesis: ``per_operation`` cases for each operation and generation mode."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from emotion_service.http.docs import extra_paths
    from emotion_service.http.schemas import openapi_document

    schema = schemathesis.openapi.from_dict(openapi_document(extra_paths()))
    operations = {  # GET /stream is a WebSocket upgrade, not fuzzed over HTTP
        op.label: op for op in (result.ok() for result in schema.get_all_operations()) if op.label != "GET /stream"
    }
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    stats = {"cases": 0, "statuses": {}, "slowest": (0.0, ""), "operations": sorted(operations)}

    def fuzzer(label: str, mode: GenerationMode):  # type: ignore[no-untyped-def]
        @settings(max_examples=per_operation, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(data=st.data())
        def fuzz(data):  # type: ignore[no-untyped-def]
            case = data.draw(operations[label].as_strategy(generation_mode=mode))
            started = time.perf_counter()
            response = case.call(app=app, headers={"X-API-Key": KEY})
            elapsed = time.perf_counter() - started
            stats["cases"] += 1
            key = str(response.status_code)
            stats["statuses"][key] = stats["statuses"].get(key, 0) + 1
            if elapsed > stats["slowest"][0]:
                stats["slowest"] = (elapsed, f"{label} ({mode.value}) -> {response.status_code}")
            if response.status_code >= 500 or elapsed > CASE_SECONDS:
                report("api", f"{label} ({mode.value}): {response.status_code} in {elapsed:.1f} s: "
                              f"{response.text[:200]}")  # fmt: skip
                return
            try:
                case.validate_response(response, checks=checks, headers={"X-API-Key": KEY})
            except Exception as error:  # noqa: BLE001 - schemathesis raises its own failure groups
                report("api", f"{label} ({mode.value}): does not conform: {str(error)[:300]}")

        return fuzz

    for label in sorted(operations):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if (label, mode) != ("GET /metrics", GenerationMode.NEGATIVE):  # no input to make invalid
                fuzzer(label, mode)()
    return stats


def _multipart(rng: random.Random, audio: bytes) -> tuple[bytes, str]:
    boundary = rng.choice(["b", "x" * 70, '=_;"', "", "----" + str(rng.random())])
    parts = []
    for _ in range(rng.choice([0, 1, 2, 3, 50, 1000])):
        name = rng.choice(
            ['"audio"', '"audio_data"', '"audio_segments"', '"lang"', "", '"a\x00b"', '"' + "n" * 5000 + '"']
        )
        filename = rng.choice(
            ["", '; filename="a.wav"', '; filename="../../etc/passwd"', "; filename*=UTF-8''%e2%82%ac"]
        )
        disposition = rng.choice([f"form-data; name={name}{filename}", "attachment", "", "form-data"])
        headers = f"Content-Disposition: {disposition}\r\n"
        if rng.random() < 0.5:
            headers += f"Content-Type: {rng.choice(['audio/wav', 'text/plain', '', 'x' * 300])}\r\n"
        body = rng.choice([audio, b"", rng.randbytes(rng.randint(0, 2000)), audio[: rng.randint(0, len(audio))]])
        parts.append(f"--{boundary}\r\n{headers}\r\n".encode(errors="replace") + body + b"\r\n")
    ending = rng.choice([f"--{boundary}--\r\n", "", f"--{boundary}", "--other--\r\n"])
    content_type = rng.choice([f"multipart/form-data; boundary={boundary}", "multipart/form-data",
                               f"multipart/mixed; boundary={boundary}", f'multipart/form-data; boundary="{boundary}"'])  # fmt: skip
    return b"".join(parts) + ending.encode(errors="replace"), content_type


def _json_value(rng: random.Random, depth: int = 0):  # type: ignore[no-untyped-def]
    roll = rng.random()
    if depth > 4 or roll < 0.4:
        return rng.choice([None, True, 0, -1, 1e308, 2**70, "", "x" * rng.randint(0, 3000), "\ud800", "é",
                           float("inf") if rng.random() < 0.1 else 0.5])  # fmt: skip
    if roll < 0.7:
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(["audio_data", "audio_segments", "lang", "options", "webhook_url", "x"]): _json_value(rng, depth + 1)
            for _ in range(rng.randint(0, 5))}  # fmt: skip


def http_case(index: int, audio: list[bytes]) -> tuple[str, str, bytes, str]:
    """Case ``index``: path, kind, body and content type."""
    rng = random.Random(index)
    path = rng.choice(["/analyze", "/batch_analyze", "/jobs"])
    clip = rng.choice(audio)
    roll = index % 4
    if roll == 0:
        body, content_type = _multipart(rng, clip)
        return path, "multipart", body, content_type
    if roll == 1:
        value = _json_value(rng)
        if rng.random() < 0.5 and isinstance(value, dict):
            value["audio_data"] = base64.b64encode(clip).decode()
        text = json.dumps(value, allow_nan=True)
        return path, "json", text.encode("utf-8", errors="surrogatepass"), "application/json"
    if roll == 2:
        depth = rng.choice([100, 1000, 50_000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}"), ('{"audio_segments":[', "]}")])
        body = (opener * depth + "1" + closer * depth).encode()
        if rng.random() < 0.5:
            body = body[: rng.randint(0, len(body))]
        return path, "deep json", body, rng.choice(["application/json", "application/json; charset=latin-1"])
    body = rng.choice([clip, rng.randbytes(rng.randint(0, 5000)), b"\xff\xfe" + "{}".encode("utf-16-le")])
    content_type = rng.choice(["audio/wav", "application/octet-stream", "video/webm", "text/plain", "",
                               "application/json", "application/x-www-form-urlencoded", "audio/" + "x" * 500])  # fmt: skip
    return path, "raw body", body, content_type


def run_http(app, count: int, report) -> dict:  # type: ignore[no-untyped-def]
    import numpy as np

    seeds = _seeds()
    audio = list(seeds.values())
    rng = np.random.default_rng(0)
    for _ in range(4):  # mutated audio as well
        data = bytearray(rng.choice(audio))
        for at in rng.integers(0, len(data), 20):
            data[at] = int(rng.integers(0, 256))
        audio.append(bytes(data))
    client = app.test_client()
    stats = {"cases": 0, "statuses": {}, "slowest": (0.0, "")}
    for index in range(count):
        path, kind, body, content_type = http_case(index, audio)
        headers = {"X-API-Key": KEY}
        if content_type:
            headers["Content-Type"] = content_type
        started = time.perf_counter()
        response = client.post(path, data=body, headers=headers)
        elapsed = time.perf_counter() - started
        stats["cases"] += 1
        key = str(response.status_code)
        stats["statuses"][key] = stats["statuses"].get(key, 0) + 1
        if elapsed > stats["slowest"][0]:
            stats["slowest"] = (elapsed, f"http case {index}: {kind} to {path} -> {response.status_code}")
        envelope = response.get_json(silent=True)
        if response.status_code >= 500 or elapsed > CASE_SECONDS:
            report("http", f"case {index} ({kind} to {path}): {response.status_code} in {elapsed:.1f} s")
        elif (
            not isinstance(envelope, dict)
            or {"success", "message", "data"} - set(envelope)
            or (
                envelope["success"] is not (response.status_code < 400)
                or (response.status_code >= 400 and not envelope.get("error_code"))
            )
        ):
            report("http", f"case {index} ({kind} to {path}): {response.status_code} without the envelope")
    return stats


def stream_case(index: int, rng: random.Random) -> tuple[str, list[tuple[str, bytes | str]]]:
    """A hostile conversation on /stream: what is sent, message by message (kind, payload)."""
    start = {"type": "start", "sample_rate": 16000, "format": "pcm16", "lang": "en"}
    kind = index % 8
    if kind == 0:  # junk text first
        return "junk text", [("text", "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(1, 200))))]
    if kind == 1:  # JSON that is not a start
        return "wrong json", [("text", json.dumps(_json_value(rng)))]
    if kind == 2:  # a start with hostile fields
        bad = dict(start)
        bad[rng.choice(list(bad))] = _json_value(rng)
        audio = bytes(rng.randrange(256) for _ in range(3200))
        return "bad start", [("text", json.dumps(bad)), ("binary", audio), ("text", '{"type": "stop"}')]
    if kind == 3:  # audio before the start
        return "binary first", [("binary", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5000))))]
    if kind == 4:  # odd-length and random PCM, then stop
        frames = [("binary", bytes(rng.randrange(256) for _ in range(rng.choice((1, 3, 333, 6401))))) for _ in range(5)]
        return "odd pcm", [("text", json.dumps(start)), *frames, ("text", '{"type": "stop"}')]
    if kind == 5:  # a frame over the limit
        return "huge frame", [("text", json.dumps(start)), ("binary", b"\x00" * (2 << 20))]
    if kind == 6:  # text that is not JSON in the middle
        return "junk mid-stream", [("text", json.dumps(start)), ("binary", b"\x00\x01" * 800), ("text", "{not json")]
    webm = dict(start, format="webm")  # random bytes announced as WebM
    return "bad webm", [("text", json.dumps(webm)), ("binary", bytes(rng.randrange(256) for _ in range(4000))),
                        ("text", '{"type": "stop"}')]  # fmt: skip


def run_stream(app, count: int, report) -> dict:  # type: ignore[no-untyped-def]
    """Hostile conversations on the /stream WebSocket: each must end with a close, never hang or 5xx."""
    import websocket

    from tests.stream_client import serving

    rng = random.Random(0)
    stats = {"cases": 0, "close_codes": {}, "slowest": (0.0, "")}
    with serving(app) as url:
        for index in range(count):
            kind, messages = stream_case(index, rng)
            started = time.perf_counter()
            code = None
            try:
                ws = websocket.create_connection(url + "/stream", header=[f"X-API-Key: {KEY}"], timeout=CASE_SECONDS)
                for what, payload in messages:
                    with contextlib.suppress(websocket.WebSocketException, OSError):  # closed early: fine
                        ws.send_binary(payload) if what == "binary" else ws.send(payload)
                while True:
                    frame = ws.recv_frame()
                    if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                        code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
                        break
                    if frame.opcode == websocket.ABNF.OPCODE_TEXT:
                        message = json.loads(frame.data.decode("utf-8"))
                        if message.get("type") == "error" and not message.get("error_code"):
                            report("stream", f"case {index} ({kind}): an error without error_code")
                ws.close()
            except (websocket.WebSocketTimeoutException, TimeoutError):
                report("stream", f"case {index} ({kind}): no close within {CASE_SECONDS} s (a hang)")
            except (websocket.WebSocketException, OSError, ValueError) as exc:
                report("stream", f"case {index} ({kind}): {type(exc).__name__}: {exc}")
            elapsed = time.perf_counter() - started
            stats["cases"] += 1
            stats["close_codes"][str(code)] = stats["close_codes"].get(str(code), 0) + 1
            if elapsed > stats["slowest"][0]:
                stats["slowest"] = (elapsed, f"stream case {index}: {kind} -> close {code}")
        health = app.test_client().get("/health")
        if health.status_code != 200:
            report("stream", f"/health answered {health.status_code} after the stream cases")
    return stats


def main() -> int:
    if sys.argv[1:2] == ["--decode-child"]:
        _decode_child(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every part's case count")
    parser.add_argument("--api-per-operation", type=int, default=250, help="schemathesis cases per operation and mode")
    parser.add_argument("--decoder", type=int, default=5000, help="decoder cases")
    parser.add_argument("--http", type=int, default=2500, help="multipart and JSON cases")
    parser.add_argument("--stream", type=int, default=400, help="hostile conversations on the /stream WebSocket")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)  # the app logs every refused request; the run reports its own
    problems: list[dict] = []

    def report(part: str, text: str) -> None:
        problems.append({"part": part, "problem": text})
        print(f"PROBLEM [{part}] {text}", flush=True)

    started = time.monotonic()
    parts = {}
    with tempfile.TemporaryDirectory() as job_dir:
        app = make_app(job_dir)
        try:
            t = time.monotonic()
            parts["api"] = run_api(app, max(1, int(args.api_per_operation * args.scale)), report)
            parts["api"]["wall_s"] = round(time.monotonic() - t, 1)
            print(f"api: {parts['api']['cases']} cases, statuses {parts['api']['statuses']}", flush=True)
            t = time.monotonic()
            parts["http"] = run_http(app, max(1, int(args.http * args.scale)), report)
            parts["http"]["wall_s"] = round(time.monotonic() - t, 1)
            print(f"http: {parts['http']['cases']} cases, statuses {parts['http']['statuses']}", flush=True)
            t = time.monotonic()
            parts["stream"] = run_stream(app, max(1, int(args.stream * args.scale)), report)
            parts["stream"]["wall_s"] = round(time.monotonic() - t, 1)
            print(f"stream: {parts['stream']['cases']} cases, close codes {parts['stream']['close_codes']}", flush=True)
        finally:
            app.extensions["emotion_jobs"].close()
    t = time.monotonic()
    parts["decoder"] = run_decoder(max(1, int(args.decoder * args.scale)), report)
    parts["decoder"]["wall_s"] = round(time.monotonic() - t, 1)
    print(f"decoder: {parts['decoder']['cases']} cases, outcomes {parts['decoder']['outcomes']}", flush=True)
    slowest = max((part["slowest"] for part in parts.values()), key=lambda s: s[0])
    peak_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024  # fmt: skip
    total = sum(part["cases"] for part in parts.values())
    for part in parts.values():
        part["slowest"] = {"seconds": round(part["slowest"][0], 3), "case": part["slowest"][1]}
    print(f"total {total} cases in {time.monotonic() - started:.0f} s; slowest {slowest[0]:.2f} s ({slowest[1]}); "
          f"peak RSS {peak_mb:.0f} MB; {len(problems)} problems (5xx, crashes, hangs, non-conforming)")  # fmt: skip
    print(describe(), flush=True)
    print(json.dumps({"cpu": cpu_info(), "total_cases": total, "wall_s": round(time.monotonic() - started, 1),
                      "slowest": {"seconds": round(slowest[0], 3), "case": slowest[1]},
                      "peak_rss_mb": round(peak_mb, 1), "problems": problems, "parts": parts}))  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
