from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emotion_service.config import SETTINGS, Settings, load_models_config
from emotion_service.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_embedded_ones():
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.model_preset, settings.device) == (
        "127.0.0.1",
        5000,
        "default",
        "auto",
    )


def test_environment_is_read():
    s = Settings.from_env({"PORT": "5002", "DEVICE": "CUDA:1", "LOG_LEVEL": "debug", "MODEL_PRESET": "full"})
    assert (s.port, s.device, s.log_level, s.model_preset) == (5002, "cuda:1", "DEBUG", "full")


@pytest.mark.parametrize(
    "env,value",
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("DEVICE", "tpu"),
        ("LOG_LEVEL", "loud"),
        ("THREADS", "0"),
        ("MAX_UPLOAD_MB", "-1"),
        ("DEFAULT_LANG", "fr"),
        ("MAX_BATCH_SEGMENTS", "1.5"),
    ],
)
def test_invalid_values_name_the_variable(env, value):
    with pytest.raises(ConfigError, match=env):
        Settings.from_env({env: value})


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text("utf-8")
    for setting in SETTINGS:
        assert f"`{setting.env}`" in readme, setting.env


def test_packaged_presets():
    config = load_models_config()
    assert config.preset("full") == {"exhubert": 1.0, "hubert_large": 1.0, "wav2vec2_xlsr": 1.0}
    assert config.models["hubert_large"].source == "superb/hubert-large-superb-er"
    assert config.models["exhubert"].revision == "5bc6f1536f60651e6818e34f5d524737e9e50a29"
    assert config.models["exhubert"].trust_remote_code
    with pytest.raises(ConfigError, match="MODEL_PRESET='nope'"):
        config.preset("nope")


def test_user_config_adds_a_model_by_id(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(
        '[models.mine]\nbackend = "transformers"\nsource = "org/my-model"\nlabels = ["neu", "hap"]\n'
        "[presets.mine]\nmine = 2\n"
    )
    config = load_models_config(path)
    assert config.models["mine"].labels == ("neu", "hap")
    assert config.preset("mine") == {"mine": 2.0}


@pytest.mark.parametrize(
    "text,match",
    [
        ("[models.x]\nsource='a'\n", "backend"),
        ("[presets.p]\nghost = 1\n", "ghost"),
        ("[models.x\n", "TOML"),
        ("[models.x]\nbackend='transformers'\nsource='a'\ncolour='red'\n", "colour"),
    ],
)
def test_bad_models_config(tmp_path, text, match):
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_models_config(path)


def test_start_script_refuses_bad_settings():
    for args, needle in ((["--port", "nope"], "PORT"), (["--model-preset", "ghost"], "MODEL_PRESET")):
        done = subprocess.run(
            [sys.executable, "start_api_server.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2
        assert needle in done.stderr
