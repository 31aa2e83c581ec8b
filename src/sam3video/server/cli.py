"""``sam3video serve`` (also ``python -m sam3video.server``): load the model once, serve it.

`add_serve_parser` adds the ``serve`` subcommand to the ``sam3video`` parser; it imports
nothing heavy, so the other commands work without the ``server`` extra.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from sam3video.cli.args import (
    MODEL_CHOICES,
    MODEL_HELP,
    add_pack_clicks_argument,
    pack_clicks_refusal,
)
from sam3video.errors import InvalidInputError, Sam3VideoError
from sam3video.server.config import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_SESSION_TTL,
)

TOKEN_ENV = "SAM3VIDEO_TOKEN"
_DTYPES = ("auto", "float32", "bfloat16", "float16")
_EPILOG = f"""\
examples:
  sam3video serve --model tiny --media-root ~/videos             # http://127.0.0.1:8000/
  sam3video serve --model sam3.1 --media-root ~/videos           # SAM 3.1 (facebook/sam3.1)
  SAM3VIDEO_TOKEN=secret sam3video serve --host 0.0.0.0 --media-root /data/videos

Without a token the server binds loopback addresses only; with one, every /v1 route and
/metrics need 'Authorization: Bearer <token>' (open the page as /?token=<token> or type it in).
The token may come from ${TOKEN_ENV} instead of --token (which shows in the process list).
"""


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``serve`` (model options as ``track``)."""
    model = parser.add_argument_group("model (as 'track')")
    model.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        default="full",
        help=MODEL_HELP,
    )
    model.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=None,
        help="Meta's sam3.pt or sam3.1_multiplex.pt (default as 'track': "
        "$SAM3VIDEO_CHECKPOINT, the Hugging Face cache, then a download)",
    )
    add_pack_clicks_argument(model)
    model.add_argument(
        "--device",
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N,mps}",
        help="auto = CUDA, then MPS, then CPU (default auto)",
    )
    model.add_argument(
        "--dtype",
        choices=_DTYPES,
        default="auto",
        help="auto = bfloat16 on CUDA, float32 elsewhere (default auto)",
    )
    model.add_argument(
        "--loader", choices=("cv2", "pyav"), default="cv2", help="video decoder (default cv2)"
    )
    net = parser.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    net.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    net.add_argument(
        "--media-root",
        metavar="DIR",
        default=".",
        help="the only folder resource_path may point into (default: the current folder)",
    )
    net.add_argument(
        "--token", default=None, help=f"bearer token required by the API (default ${TOKEN_ENV})"
    )
    net.add_argument(
        "--max-sessions",
        type=_positive_int,
        default=DEFAULT_MAX_SESSIONS,
        help=f"open sessions at most; more answer 429 (default {DEFAULT_MAX_SESSIONS})",
    )
    net.add_argument(
        "--session-ttl",
        type=_positive_number,
        default=DEFAULT_SESSION_TTL,
        metavar="SECONDS",
        help=f"close sessions idle this long (default {DEFAULT_SESSION_TTL:g})",
    )
    net.add_argument(
        "--max-upload-mb",
        type=_positive_number,
        default=DEFAULT_MAX_UPLOAD_MB,
        metavar="MB",
        help=f"largest request body / upload; more answer 413 (default {DEFAULT_MAX_UPLOAD_MB:g})",
    )
    net.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="threads running model work (default: 2 on CUDA, 1 on MPS, 2-4 on CPU)",
    )
    net.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )


def add_serve_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``serve`` to the ``sam3video`` subcommands (it sets ``func=run_serve``)."""
    serve = subparsers.add_parser(
        "serve",
        parents=list(parents),
        help="serve SAM 3 sessions over HTTP (API, streamed masks, browser annotator)",
        description="Load the model once and serve the request protocol over HTTP, with "
        "masks streamed as they are tracked and an annotator page at /.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    add_arguments(serve)
    serve.set_defaults(func=run_serve)


def _load_predictor(args: argparse.Namespace) -> Any:
    from sam3video.checkpoints import load_predictor

    try:
        return load_predictor(
            args.model,
            args.checkpoint,
            device=args.device,
            dtype=args.dtype,
            loader=args.loader,
            warn=lambda message: print(f"sam3video serve: warning: {message}", file=sys.stderr),
            pack_clicked_objects=args.pack_clicks,
        )
    except Sam3VideoError as error:
        refusal = pack_clicks_refusal(error, args)
        if refusal is not None:  # a flag that does not fit the model: exit 2
            raise refusal from None
        raise


def model_name(predictor: Any) -> str:
    """The name /healthz reports: the preset that was built (a checkpoint's version, read
    from its keys, may differ from --model) and its SAM version, e.g. ``"sam3.1-tiny
    (sam3.1)"``."""
    config = predictor.model.config
    return f"{config.name} ({config.version})"


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted; the exit code."""
    try:
        import uvicorn

        from sam3video.server.app import create_app
    except ImportError as exc:
        raise InvalidInputError(
            f"serve: the server needs FastAPI and uvicorn ({exc}); pip install 'sam3video[server]'"
        ) from exc
    from sam3video.server.config import ServerConfig, check_bind

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    check_bind(args.host, token)
    config = ServerConfig(
        media_root=os.path.expanduser(args.media_root),
        token=token,
        max_sessions=args.max_sessions,
        session_ttl=args.session_ttl,
        max_upload_mb=args.max_upload_mb,
        workers=args.workers,
    )
    predictor = _load_predictor(args)
    app = create_app(predictor, config, model_name=model_name(predictor))
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"sam3video serve: media root {config.media_root}; open http://{host}:{args.port}/"
        + (" (token required)" if token else ""),
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sam3video.server [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m sam3video.server",
        description="Serve SAM 3 sessions over HTTP (as 'sam3video serve').",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_serve(args)
    except KeyboardInterrupt:
        return 130
    except Sam3VideoError as exc:
        print(f"sam3video serve: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidInputError) else 1
