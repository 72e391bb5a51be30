"""How close an encoder head's int8 (or bf16) logits stay to its fp32 logits on held-out clips.

For ``--clips`` clips of the held-out speakers of each manifest (a fixed random draw, seed 0),
the cosine between the head's clip logits with the encoder in fp32 and in ``--quantize``, and how
often the top label is the same. The speakers are held out from training, so this is the figure
the README quotes against the issue's "cosine ≥ 0.999" goal.

    python bench/agreement.py --model emotion_service/resources/heads/default \\
        --manifest ../shared/data/ravdess/manifest.csv --manifest ../shared/data/crema-d/manifest.csv \\
        --speakers ravdess_21,...,crema_1091 --clips 200 --quantize int8

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpuinfo import cpu_info  # noqa: E402

from emotion_service.models.encoder import EncoderModel  # noqa: E402
from emotion_service.training.common import read_audio, read_manifest, select_speakers  # noqa: E402

ENCODER = ROOT / "emotion_service" / "resources" / "whisper-base-encoder"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a head folder (head.pt)")
    parser.add_argument("--manifest", action="append", required=True, help="a corpus manifest (repeat)")
    parser.add_argument("--speakers", required=True, help="held-out speakers, as train evaluate's --speakers")
    parser.add_argument("--clips", type=int, default=200, help="clips per manifest")
    parser.add_argument("--quantize", choices=("int8", "bf16"), default="int8")
    parser.add_argument("--encoder", type=Path, default=ENCODER)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fp32 = EncoderModel.load(args.model, encoder_dir=args.encoder)
    other = EncoderModel.load(args.model, encoder_dir=args.encoder, quantize=args.quantize)
    rng = np.random.default_rng(0)
    cosines: list[float] = []
    same = 0
    corpora = [read_manifest(m) for m in args.manifest]
    held = select_speakers([c for clips in corpora for c in clips], args.speakers)
    for manifest, clips in zip(args.manifest, corpora, strict=True):
        pool = [c for c in clips if c.speaker in held]
        if not pool:
            raise SystemExit(f"no clip of the --speakers in {manifest}: name its held-out speakers")
        for i in rng.choice(len(pool), min(args.clips, len(pool)), replace=False):
            audio = read_audio(pool[i].path)
            with torch.inference_mode():
                a = fp32.head(torch.from_numpy(fp32.standardised([audio])))[0]
                b = other.head(torch.from_numpy(other.standardised([audio])))[0]
            cosines.append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
            same += int(a.argmax() == b.argmax())
    values = np.asarray(cosines)
    print(
        json.dumps(
            {
                "model": fp32.info.version,
                "dtype": other.info.dtype,
                "clips": len(values),
                "mean_cosine": round(float(values.mean()), 5),
                "median_cosine": round(float(np.median(values)), 5),
                "min_cosine": round(float(values.min()), 5),
                "share_at_least_0.999": round(float((values >= 0.999).mean()), 3),
                "same_top_label": f"{same}/{len(values)}",
                "cpu": cpu_info(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
