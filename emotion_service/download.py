"""Download the hub models of a preset into a directory to copy to offline servers.

    python -m emotion_service.download --preset full --models-dir models
    MODEL_PRESET=full MODELS_DIR=models python start_api_server.py

Each model lands in ``<models dir>/<hub id>/`` at its pinned revision, where the transformers
backend looks first. Repositories used only for their feature extractor (ExHuBERT borrows
``facebook/hubert-base-ls960``'s) are fetched without weights. ``--dry-run`` prints the plan only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from .config import ModelsConfig, load_models_config
from .errors import ConfigError

# Weights for other frameworks that the PyTorch backend never reads; skipping them saves gigabytes.
IGNORE_PATTERNS = ("*.h5", "*.msgpack", "*.ot", "*.onnx", "tf_model*", "flax_model*", "rust_model*")
# A feature-extractor-only repository needs its configs, not its weights.
CONFIG_PATTERNS = ("*.json",)


@dataclass(frozen=True)
class Download:
    """One repository to fetch."""

    repo_id: str
    revision: str | None
    local_dir: str
    configs_only: bool  # feature extractor only: configs, no weights
    needed_by: tuple[str, ...]  # model names of the preset that need it


def plan(config: ModelsConfig, preset: str, models_dir: str) -> list[Download]:
    """The repositories the transformers models of ``preset`` need, in first-use order.

    Models whose ``source`` is an existing local directory need nothing and are left out.

    Raises:
        ConfigError: The preset does not exist.
    """
    wanted: dict[str, Download] = {}
    for name in config.preset(preset):
        spec = config.models[name]
        if spec.backend != "transformers" or os.path.isdir(spec.source):
            continue
        repos = [(spec.source, spec.revision, False)]
        if spec.feature_extractor and not os.path.isdir(spec.feature_extractor):
            repos.append((spec.feature_extractor, None, True))
        for repo_id, revision, configs_only in repos:
            previous = wanted.get(repo_id)
            if previous is not None:
                # A repository needed in full by one model and for configs by another is fetched in full.
                configs_only = configs_only and previous.configs_only
                needed_by = (*previous.needed_by, name)
                revision = previous.revision or revision
            else:
                needed_by = (name,)
            local_dir = os.path.join(models_dir, *repo_id.split("/"))
            wanted[repo_id] = Download(repo_id, revision, local_dir, configs_only, needed_by)
    return list(wanted.values())


def _download_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, ValueError]
    try:  # huggingface_hub >= 1.0 talks HTTP through httpx, whose errors are not OSErrors
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m emotion_service.download",
        description="Download the hub models of a preset for offline use (MODELS_DIR).",
    )
    parser.add_argument("--preset", default="full", help="preset of the models config (default: full)")
    parser.add_argument(
        "--models-dir",
        default=os.environ.get("MODELS_DIR") or "models",
        help="directory to download into (default: $MODELS_DIR, else ./models)",
    )
    parser.add_argument(
        "--models-config",
        default=os.environ.get("MODELS_CONFIG") or None,
        help="models.toml to read (default: $MODELS_CONFIG, else the packaged one)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would be downloaded, download nothing")
    args = parser.parse_args(argv)

    try:
        config = load_models_config(args.models_config)
        downloads = plan(config, args.preset, args.models_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    models_dir = os.path.abspath(args.models_dir)
    if not downloads:
        print(f"Preset {args.preset!r} has no hub models to download (its models are bundled or local).")
        return 0

    for item in downloads:
        what = "configs only" if item.configs_only else "model"
        print(
            f"{'would download' if args.dry_run else 'downloading'} {item.repo_id} "
            f"@ {item.revision or 'main'} ({what}, for {', '.join(item.needed_by)}) -> {item.local_dir}"
        )
        if args.dry_run:
            continue
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(
                item.repo_id,
                revision=item.revision,
                local_dir=item.local_dir,
                allow_patterns=list(CONFIG_PATTERNS) if item.configs_only else None,
                ignore_patterns=None if item.configs_only else list(IGNORE_PATTERNS),
            )
        except _download_errors() as exc:
            print(
                f"error: {item.repo_id} could not be downloaded: {exc}\n"
                "Check the internet connection (or HF_ENDPOINT / HTTPS_PROXY) and the hub id and revision "
                "in the models config, then run this again: finished files are kept.",
                file=sys.stderr,
            )
            return 1

    print(
        f"\n{'After downloading, start' if args.dry_run else 'Done. Start'} the service with:\n"
        f"  MODELS_DIR={models_dir} MODEL_PRESET={args.preset} python start_api_server.py\n"
        f"(copy {models_dir} to offline machines and set MODELS_DIR to where it lies there)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
