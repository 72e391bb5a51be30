"""Measure the activation peaks that smooth the shipped Whisper encoder for int8, and save them beside it.

``EncoderModel.load(..., quantize="int8")`` smooths the encoder with the file this writes
(``int8-calibration.safetensors`` in the encoder's folder; see ``WhisperEncoder.smooth``). The
peaks come from training speakers only: every speaker of the manifests but the held-out ones,
``--clips`` clips per manifest spread evenly over its rows. ``--alpha`` was chosen on other
clips of training speakers (logits' cosine int8 against fp32, ``default`` head).

    python bench/calibrate_int8.py --manifest ../shared/data/ravdess/manifest.csv \\
        --manifest ../shared/data/crema-d/manifest.csv --holdout 21,22,23,24,crema_1001,...

Prints the file written and its size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emotion_service.models.whisper_encoder import CALIBRATION_FILE, Int8Calibration, WhisperEncoder  # noqa: E402
from emotion_service.training.common import read_audio, read_manifest, select_speakers  # noqa: E402

ENCODER = ROOT / "emotion_service" / "resources" / "whisper-base-encoder"
ALPHA = 0.8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", action="append", required=True, help="a corpus manifest (repeat)")
    parser.add_argument("--holdout", required=True, help="held-out speakers, as train evaluate's --speakers")
    parser.add_argument("--clips", type=int, default=100, help="clips per manifest")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="SmoothQuant's migration strength")
    parser.add_argument("--encoder", type=Path, default=ENCODER)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    manifests = [read_manifest(m) for m in args.manifest]
    holdout = select_speakers([c for clips in manifests for c in clips], args.holdout)
    chosen = []
    for clips in manifests:
        training = [c for c in clips if c.speaker not in holdout]
        step = max(1, len(training) // args.clips)
        chosen += training[::step][: args.clips]
    encoder = WhisperEncoder.load(args.encoder)  # every layer, whatever depth a head uses
    peaks = encoder.activation_peaks([read_audio(c.path) for c in chosen])
    out = args.encoder / CALIBRATION_FILE
    command = " ".join(["python bench/calibrate_int8.py", *sys.argv[1:]])
    Int8Calibration(peaks, args.alpha).to_file(
        out, clips=str(len(chosen)), speakers=str(len({c.speaker for c in chosen})), command=command
    )
    print(f"{out}: {out.stat().st_size} bytes, {len(peaks)} layers' peaks from {len(chosen)} clips")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
