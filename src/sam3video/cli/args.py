"""The command line of ``sam3video``: the parser, its value parsers and the names it uses."""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
from typing import Any

from sam3video import __version__
from sam3video.model.config import PRESETS

__all__ = [
    "DEFAULT_OUT_ROOT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "FORMATS",
    "JSON_NAME",
    "MODEL_CHOICES",
    "MODEL_HELP",
    "OVERLAY_IMAGE_NAME",
    "OVERLAY_NAME",
    "PNG_DIR",
    "PROG",
    "build_parser",
    "parse_box",
    "parse_formats",
    "parse_point",
]

PROG = "sam3video"
FORMATS = ("ytvis", "png", "overlay")
DEFAULT_OUT_ROOT = "sam3video_out"
JSON_NAME, PNG_DIR = "results.json", "masks"
OVERLAY_NAME, OVERLAY_IMAGE_NAME = "overlay.mp4", "overlay.png"  # video / single image input
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# --model of every command (track, info, serve, batch): the config presets, by name.
MODEL_CHOICES = tuple(PRESETS)
MODEL_HELP = (
    "full = Meta's SAM 3 (sam3.pt from facebook/sam3); sam3.1 = Meta's SAM 3.1 multiplex "
    "model (sam3.1_multiplex.pt from facebook/sam3.1); demo = the tiny model with the "
    "packaged weights trained on the shapes world (sam3video demo); tiny / sam3.1-tiny = "
    "synthetic weights, run the pipeline anywhere, meaningless masks. A --checkpoint's "
    "version, read from its keys, wins (default full)"
)
_VIDEO_LIKE = re.compile(r"\.(mp4|mov|avi|mkv|webm|jpe?g|png|bmp|tiff?|webp)$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is on ``--help``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {text!r}")
    return value


def _split_label(text: str, form: str) -> tuple[str, int]:
    body, sep, label = text.partition(":")
    if not sep:
        return body, 1
    if label.strip() not in ("0", "1"):
        raise argparse.ArgumentTypeError(
            f"expected {form} with LABEL 1 (positive) or 0 (negative), got {text!r}"
        )
    return body, int(label)


def _hint(text: str) -> str:
    if _VIDEO_LIKE.search(text) or os.path.exists(text):
        return " (put VIDEO before the option, or end its values with --)"
    return ""


def _coordinates(text: str, body: str, form: str, count: int) -> list[float]:
    """``count`` comma-separated numbers of ``body``; an argparse error naming ``form``."""
    parts = body.split(",")
    try:
        if len(parts) != count:
            raise ValueError(f"{len(parts)} values")
        return [_number(p.strip(), "a coordinate") for p in parts]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected {form}, got {text!r} ({error}){_hint(text)}"
        ) from None


def parse_point(text: str) -> tuple[float, float, int]:
    """``"X,Y"`` or ``"X,Y:LABEL"`` (pixels; LABEL 1 foreground, 0 background) -> (x, y, label)."""
    form = "X,Y or X,Y:LABEL (pixels)"
    body, label = _split_label(text, form)
    x, y = _coordinates(text, body, form, 2)
    return x, y, label


def parse_box(text: str) -> tuple[tuple[float, float, float, float], int]:
    """``"CX,CY,W,H[:LABEL]"`` normalized to [0, 1] -> ((cx, cy, w, h), label)."""
    form = "CX,CY,W,H or CX,CY,W,H:LABEL (normalized to [0, 1])"
    body, label = _split_label(text, form)
    cx, cy, w, h = _coordinates(text, body, form, 4)
    return (cx, cy, w, h), label


def parse_formats(text: str) -> tuple[str, ...]:
    """``"ytvis,png"`` -> ``("ytvis", "png")`` (order kept, duplicates dropped)."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(FORMATS)}")
    for name in names:
        if name not in FORMATS:
            close = difflib.get_close_matches(name, FORMATS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise argparse.ArgumentTypeError(
                f"unknown format {name!r}{hint}; expected a comma-separated list of "
                f"{', '.join(FORMATS)}"
            )
    return tuple(dict.fromkeys(names))


def _frame_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a frame index (an int >= 0), got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a frame index (an int >= 0), got {value}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {value}")
    return value


def _device_name(text: str) -> str:
    if text in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The ``sam3video`` argument parser (subcommands ``track``, ``info`` and ``serve``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser = _Parser(
        prog=PROG,
        description="SAM 3 video: segment and track objects in a video from text, clicks and "
        "boxes.",
        epilog="Run 'sam3video COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    track = commands.add_parser(
        "track",
        parents=[common],
        help="segment and track objects in a video, writing the results as it goes",
        description="Segment and track objects in VIDEO from a text prompt, boxes and/or "
        "clicks on one frame, and write the results while tracking.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_TRACK_EPILOG,
    )
    track.add_argument(
        "video",
        metavar="VIDEO",
        help="a video (.mp4 .mov .avi .mkv .webm), a folder of frames, an image, or a stream "
        "followed until it ends, Ctrl-C or --max-frames (webcam:N, rtsp://, http(s)://, "
        "udp://, tcp://)",
    )
    prompts = track.add_argument_group("prompts (at least one)")
    prompts.add_argument(
        "--text",
        metavar="TEXT",
        action="append",
        help='a noun phrase, e.g. "person"; repeat it for several concepts in one pass',
    )
    prompts.add_argument(
        "--points",
        metavar="X,Y[:LABEL]",
        nargs="+",
        action="extend",
        type=parse_point,
        help="clicks in pixels for one new object; LABEL 1 = foreground (default), 0 = background",
    )
    prompts.add_argument(
        "--box",
        metavar="CX,CY,W,H[:LABEL]",
        nargs="+",
        action="extend",
        type=parse_box,
        help="exemplar boxes, center and size normalized to [0, 1]; LABEL 1 = positive "
        "(default), 0 = negative",
    )
    prompts.add_argument(
        "--frame",
        metavar="N",
        type=_frame_number,
        default=0,
        help="the frame the prompts are on (default 0)",
    )
    run = track.add_argument_group("tracking")
    run.add_argument(
        "--direction",
        choices=("forward", "backward", "both"),
        default="both",
        help="forward from --frame, backward, or forward then backward (default both)",
    )
    run.add_argument(
        "--max-frames",
        metavar="N",
        type=_positive,
        default=None,
        help="at most N frames per direction, counting --frame (default: to the video's end)",
    )
    model = track.add_argument_group("model")
    _add_model_arguments(model)
    add_pack_clicks_argument(model)
    model.add_argument(
        "--device",
        type=_device_name,
        default="auto",
        metavar="{auto,cpu,cuda,mps}",
        help="auto = CUDA, then MPS, then CPU (default auto)",
    )
    model.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="auto = bfloat16 on CUDA, float32 elsewhere (default auto)",
    )
    model.add_argument(
        "--threads",
        metavar="N",
        type=_positive,
        default=None,
        help="CPU threads for PyTorch (default: $OMP_NUM_THREADS when set, else the number "
        "of physical cores, not logical ones)",
    )
    model.add_argument(
        "--loader",
        choices=("cv2", "pyav"),
        default="cv2",
        help="video decoder (default cv2); both give the same frames",
    )
    output = track.add_argument_group("output")
    output.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help=f"output folder (default ./{DEFAULT_OUT_ROOT}/<video stem>)",
    )
    output.add_argument(
        "--format",
        metavar="LIST",
        type=parse_formats,
        default=("ytvis",),
        help="comma-separated: ytvis (results.json), png (masks/), overlay (overlay.mp4); "
        "default ytvis",
    )
    output.add_argument("--quiet", action="store_true", help="no progress output")

    info = commands.add_parser(
        "info",
        parents=[common],
        help="versions, devices, and which checkpoint would be used",
        description="Print versions, available devices, and which checkpoint 'track' would "
        "use and from where (nothing is loaded or downloaded).",
    )
    _add_model_arguments(info)

    from sam3video.server.cli import add_serve_parser  # light: FastAPI loads when it runs

    add_serve_parser(commands, parents=[common])

    from sam3video.batch.cli import add_batch_parser  # light: each loads its work when it runs
    from sam3video.evaluation.cli import add_eval_parser

    add_batch_parser(commands, parents=[common])
    add_eval_parser(commands, parents=[common])

    from sam3video.train.cli import add_train_parser  # light: torch loads when it runs

    add_train_parser(commands, parents=[common])

    from sam3video.cli.demo import add_demo_parser  # light: the world renders when it runs

    add_demo_parser(commands, parents=[common])
    return parser


def _add_model_arguments(group: Any) -> None:
    group.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        default="full",
        help=MODEL_HELP,
    )
    group.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=None,
        help="Meta's sam3.pt or sam3.1_multiplex.pt (default: $SAM3VIDEO_CHECKPOINT, the "
        "Hugging Face cache, then a download from facebook/sam3; --model sam3.1: the cache "
        "of facebook/sam3.1, then a download)",
    )


PACK_CLICKS_HELP = (
    "SAM 3.1 only: clicked objects share tracker states (up to multiplex_count per state, "
    "one bucket pass each) instead of one state per clicked object (the official layout); "
    "faster with many clicked objects, masks differ slightly; an error with a SAM 3 model"
)


def add_pack_clicks_argument(group: Any) -> None:
    """``--pack-clicks`` (``Sam3VideoPredictor(pack_clicked_objects=True)``), for the commands
    that load a model to track (track and serve; batch runs text prompts and has no clicks to
    pack from the command line)."""
    group.add_argument("--pack-clicks", action="store_true", help=PACK_CLICKS_HELP)


def pack_clicks_refusal(error: Exception, args: Any) -> Exception | None:
    """The command-line error (exit 2) for ``--pack-clicks`` with a SAM 3 model, when ``error``
    is the predictor's refusal of ``pack_clicked_objects``; None for any other error."""
    from sam3video.errors import InvalidInputError, UnsupportedModelError

    if not (
        getattr(args, "pack_clicks", False)
        and isinstance(error, UnsupportedModelError)
        and str(error).startswith("pack_clicked_objects")
    ):
        return None
    return InvalidInputError(
        f"--pack-clicks: expected a SAM 3.1 model (--model sam3.1 or sam3.1-tiny, or a 3.1 "
        f"checkpoint), got a SAM 3 model (--model {args.model}); drop --pack-clicks"
    )


_TRACK_EPILOG = f"""\
examples:
  sam3video track video.mp4 --text "person"
  sam3video track video.mp4 --text "dog" --format ytvis,png,overlay --out results/
  sam3video track video.mp4 --points 320,180 400,200:0 --frame 30 --direction both
  sam3video track video.mp4 --text "car" --model tiny --device cpu --max-frames 10
  sam3video track webcam:0 --text "hand" --format ytvis,overlay     (Ctrl-C to stop)

outputs (in --out):
  {JSON_NAME:<13} SA-Co/YTVIS JSON: one annotation per object, COCO RLE masks, boxes,
                areas, mean score and per-frame scores (null where not visible)
  {PNG_DIR + "/":<13} one palette PNG per frame, 00000.png...: pixel = obj_id + 1, 0 = none
  {OVERLAY_NAME:<13} the video with masks, contours and "#id score" labels drawn on it
                ({OVERLAY_IMAGE_NAME} for a single image)

Text and boxes form one concept prompt; points click one new object. With both, the
concept is tracked first, then the clicks (a second pass). Ctrl-C keeps every frame
computed so far. Threads: --threads N, or OMP_NUM_THREADS=N in the environment.
Exit codes: 0 ok, 2 bad command line or input, 1 runtime failure, 130 interrupted.
"""
