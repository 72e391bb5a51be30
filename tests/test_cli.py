"""The offline command line: folders in, JSON/CSV out."""

from __future__ import annotations

import csv
import json

import pytest

import emotion_service.analysis.analyzer as analyzer_module
from emotion_service.cli import main

from .conftest import StandInModel
from .signals import encode, voice_like
from .test_interview import interview


@pytest.fixture(autouse=True)
def stand_in(monkeypatch):
    """The CLI builds its analyzer from a preset; here it gets the stand-in model instead."""
    real = analyzer_module.SpeechEmotionAnalyzer

    def build(preset, **kwargs):
        return real.from_models({"dims": StandInModel("dims", dims=True)}, limits=kwargs.get("limits"))

    monkeypatch.setattr(analyzer_module, "SpeechEmotionAnalyzer", build)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "answers" / "day2").mkdir(parents=True)
    (tmp_path / "answers" / "a.wav").write_bytes(encode(voice_like(2.0)))
    (tmp_path / "answers" / "day2" / "b.flac").write_bytes(encode(voice_like(2.0, seed=2), format="FLAC"))
    (tmp_path / "answers" / "broken.mp3").write_bytes(b"\xff\xfb" + bytes(100))
    (tmp_path / "answers" / "notes.txt").write_text("not audio")
    return tmp_path / "answers"


def read_csv(path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_folder_to_csv_and_json(folder, tmp_path):
    out = tmp_path / "results.csv"
    assert main([str(folder), "--out", str(out), "--no-progress"]) == 1  # one file is broken
    rows = read_csv(out)
    assert [r["file"].split("answers/")[1] for r in rows] == ["a.wav", "broken.mp3", "day2/b.flac"]
    assert rows[0]["success"] == "True" and float(rows[0]["duration"]) == pytest.approx(2.0)
    assert rows[1]["success"] == "False" and rows[1]["error_code"]
    out_json = tmp_path / "results.json"
    main([str(folder / "a.wav"), "--out", str(out_json), "--no-progress", "--lang", "en"])
    records = json.loads(out_json.read_text(encoding="utf-8"))
    assert records[0]["final_result"]["recommended_emotion"] == records[0]["final_result"]["recommended_emotion_label"]


def test_interview_mode_writes_a_row_per_segment(tmp_path, capsys, monkeypatch):
    signal, _ = interview()
    path = tmp_path / "interview.flac"
    path.write_bytes(encode(signal, format="FLAC"))
    out = tmp_path / "timeline.csv"
    # --vad energy: the generated answers are harmonic tones, which the silero VAD rightly ignores
    assert main([str(path), "--mode", "interview", "--vad", "energy", "--out", str(out), "--no-progress"]) == 0
    rows = read_csv(out)
    assert len(rows) == 12 and float(rows[-1]["end"]) > float(rows[0]["start"])
    monkeypatch.setenv("VAD", "energy")
    assert main([str(path), "--mode", "interview", "--no-progress"]) == 0  # JSON lines on stdout
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["assessment"]["recommendations"]


def test_bad_output_extension(folder):
    with pytest.raises(SystemExit):
        main([str(folder), "--out", "x.xlsx"])
