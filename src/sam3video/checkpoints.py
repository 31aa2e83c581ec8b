"""Finding Meta's SAM 3 checkpoint (``sam3.pt``) for the ``full`` model.

Discovery order (the first that applies wins; nothing is loaded while looking):

1. an explicit path (the command line's ``--checkpoint``);
2. the environment variable ``SAM3VIDEO_CHECKPOINT`` (an empty value counts as unset);
3. the Hugging Face cache: a ``sam3.pt`` of ``facebook/sam3`` downloaded before, found with
   ``huggingface_hub.try_to_load_from_cache`` when huggingface_hub is installed, else (or when
   it finds none) by looking for ``models--facebook--sam3/snapshots/*/sam3.pt`` in the hub
   cache folder (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``; the snapshot
   ``refs/main`` names first);
4. a download through huggingface_hub (`download_checkpoint`).

The ``demo`` model needs none of this: its weights ship in the package (`demo_weights`,
``assets/demo.safetensors``, the tiny model trained on the shapes world).

Decisions
  * A path given explicitly or through the environment that does not exist is an error
    (`SourceNotFoundError`), never silently skipped: the user asked for that file.
  * Every file is checked cheaply before use (`verify_checkpoint`): it must be a non-empty
    file that looks like a PyTorch zip checkpoint (its central directory is readable, so a
    truncated download fails here), a legacy pickle, or a safetensors file with a sane
    header. Nothing is decoded; the model loader reports key or shape mismatches later.
  * Each failure (huggingface_hub missing, offline, gated repository without access, corrupt
    file) raises `CheckpointError` with one paragraph that says what to do. The login command
    is `hf auth login` (the ``hf`` command of recent huggingface_hub versions, which no longer
    ship the older login command).
  * Offline, the hub client retries for about 25 s and logs each retry. So a download first
    checks, within `PROBE_TIMEOUT` seconds, that the endpoint (``$HF_ENDPOINT``, default
    huggingface.co) answers on its port, and fails at once when it does not, or when
    ``HF_HUB_OFFLINE`` is set; the hub's own log lines are silenced while it downloads (its
    progress bar stays). Behind a proxy (``HTTPS_PROXY`` and the like) the direct check is
    skipped: only the hub knows how to reach the endpoint then.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sam3video.errors import CheckpointError, SourceNotFoundError

__all__ = [
    "ENV_VAR",
    "HF_FILENAME",
    "HF_REPO",
    "CheckpointLocation",
    "demo_weights",
    "download_checkpoint",
    "explain_download_error",
    "find_in_hf_cache",
    "hf_cache_dir",
    "load_predictor",
    "locate_checkpoint",
    "resolve_checkpoint",
    "verify_checkpoint",
]

ENV_VAR = "SAM3VIDEO_CHECKPOINT"
HF_REPO = "facebook/sam3"
HF_FILENAME = "sam3.pt"
# Hugging Face repository and file of each checkpoint version (SAM 3.1: the multiplex model).
HF_FILES = {"sam3": (HF_REPO, HF_FILENAME), "sam3.1": ("facebook/sam3.1", "sam3.1_multiplex.pt")}
LOGIN = "`hf auth login`"
PROBE_TIMEOUT = 3.0  # seconds to reach the hub endpoint before calling it offline
_HF_PAGE = f"https://huggingface.co/{HF_REPO}"
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_HOW_BY_HAND = (
    f"or download {HF_FILENAME} from {_HF_PAGE} yourself and pass it with --checkpoint "
    f"PATH (or set {ENV_VAR}=PATH); `--model tiny` runs the pipeline without weights "
    "(meaningless masks)"
)


# The packaged weights of the ``demo`` preset (written by tools/export_demo.py).
DEMO_WEIGHTS = Path(__file__).resolve().parent / "assets" / "demo.safetensors"


def demo_weights() -> Path:
    """The packaged weights of ``model_config="demo"`` (`DEMO_WEIGHTS`), verified.

    Raises:
        CheckpointError: the file is not in this installation (a source checkout without the
            asset, or a build that left the package data out) or is corrupt.
    """
    if not DEMO_WEIGHTS.is_file():
        raise CheckpointError(
            f"--model demo: the packaged demo weights are missing (expected "
            f"{str(DEMO_WEIGHTS)!r}); reinstall sam3video, or write them from a training run "
            "with `python tools/export_demo.py RUN/model.safetensors`, or pass --checkpoint"
        )
    return verify_checkpoint(DEMO_WEIGHTS, "package")


@dataclass(frozen=True)
class CheckpointLocation:
    """Where the checkpoint comes from.

    ``source`` is ``"argument"``, ``"environment"``, ``"hf-cache"`` or ``"download"``;
    ``path`` is ``None`` for ``"download"`` (not fetched yet); ``description`` says it in words.
    """

    source: str
    path: Path | None
    description: str


def hf_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face hub cache folder, resolved from the environment as huggingface_hub
    does."""
    env = os.environ if env is None else env
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(env[name]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def find_in_hf_cache(env: Mapping[str, str] | None = None, version: str = "sam3") -> Path | None:
    """A previously downloaded ``facebook/sam3`` ``sam3.pt`` in the hub cache, or ``None``
    (``version="sam3.1"``: ``sam3.1_multiplex.pt`` of ``facebook/sam3.1``, `HF_FILES`)."""
    cache = hf_cache_dir(env)
    hf_repo, hf_filename = HF_FILES[version]
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        pass
    else:
        found = try_to_load_from_cache(hf_repo, hf_filename, cache_dir=cache)
        # A str is a path; None or the hub's "known missing" sentinel mean not cached (by
        # the hub's reckoning: a snapshot without refs/main is found by the scan below).
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    repo = cache / ("models--" + hf_repo.replace("/", "--"))
    snapshots = repo / "snapshots"
    try:
        main = (repo / "refs" / "main").read_text().strip()
    except OSError:
        main = ""
    if main and (snapshots / main / hf_filename).is_file():
        return snapshots / main / hf_filename
    # No usable refs/main: the newest snapshot holding the file (is_file() skips dead links).
    candidates = [p for p in snapshots.glob(f"*/{hf_filename}") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def locate_checkpoint(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> CheckpointLocation:
    """Which checkpoint would be used, without downloading or reading it (see module notes).

    Raises:
        SourceNotFoundError: ``explicit`` or ``$SAM3VIDEO_CHECKPOINT`` names a missing path.
    """
    env = os.environ if env is None else env
    if explicit is not None and os.fspath(explicit) != "":
        path = Path(os.fspath(explicit)).expanduser()
        if not path.exists():
            raise SourceNotFoundError(
                f"--checkpoint: file not found: {str(path)!r}; expected the path of Meta's "
                f"{HF_FILENAME}"
            )
        return CheckpointLocation("argument", path, f"{path} (from --checkpoint)")
    if env.get(ENV_VAR):
        path = Path(env[ENV_VAR]).expanduser()
        if not path.exists():
            raise SourceNotFoundError(
                f"{ENV_VAR}: file not found: {str(path)!r}; set it to the path of Meta's "
                f"{HF_FILENAME} or unset it"
            )
        return CheckpointLocation("environment", path, f"{path} (from ${ENV_VAR})")
    cached = find_in_hf_cache(env)
    if cached is not None:
        return CheckpointLocation("hf-cache", cached, f"{cached} (Hugging Face cache)")
    return CheckpointLocation(
        "download",
        None,
        f"not found locally: {HF_FILENAME} will be downloaded from the gated Hugging Face "
        f"repository {HF_REPO} (about 3.5 GB; cache {hf_cache_dir(env)})",
    )


def resolve_checkpoint(
    explicit: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    download: bool = True,
) -> Path:
    """The checkpoint file to load: located, downloaded if needed, then verified.

    Raises:
        SourceNotFoundError: an explicit or environment path that does not exist.
        CheckpointError: nothing found and ``download=False``, a failed download or a
            corrupt file (one paragraph that says what to do).
    """
    location = locate_checkpoint(explicit, env)
    if location.path is None:
        if not download:
            raise CheckpointError(
                f"no SAM 3 checkpoint found ({ENV_VAR} unset, no {HF_FILENAME} in the Hugging "
                f"Face cache {hf_cache_dir(env)}); " + _HOW_BY_HAND
            )
        path = download_checkpoint(env)
        location = CheckpointLocation("hf-cache", path, f"{path} (downloaded)")
    return verify_checkpoint(location.path, location.source)


def download_checkpoint(
    env: Mapping[str, str] | None = None,
    probe_timeout: float = PROBE_TIMEOUT,
    version: str = "sam3",
) -> Path:
    """Download ``sam3.pt`` of ``facebook/sam3`` into the Hugging Face cache; its path.
    ``version="sam3.1"``: ``sam3.1_multiplex.pt`` of ``facebook/sam3.1`` (`HF_FILES`).

    Fails fast offline and keeps the hub client's retry messages off the terminal (see the
    module notes).

    Raises:
        CheckpointError: huggingface_hub missing, offline, no access, or another failure,
            with what to do.
    """
    env = os.environ if env is None else env
    if version not in HF_FILES:
        raise CheckpointError(f"version: expected one of {sorted(HF_FILES)}, got {version!r}")
    repo, filename = HF_FILES[version]
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:
        raise explain_download_error(error) from error
    if env.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise CheckpointError(
            f"could not download {filename} from {repo}: HF_HUB_OFFLINE is set (the "
            "Hugging Face hub is switched off); unset it, connect to the internet and run "
            "again, " + _HOW_BY_HAND
        )
    endpoint = env.get("HF_ENDPOINT") or "https://huggingface.co"
    behind_proxy = any(env.get(name) for name in _PROXY_VARS)
    problem = None if behind_proxy else _unreachable(endpoint, probe_timeout)
    if problem is not None:
        raise CheckpointError(
            f"could not download {filename} from {repo}: {endpoint} cannot be reached "
            f"({problem}; offline?); connect to the internet and run again, " + _HOW_BY_HAND
        )
    try:
        with _quiet_hub():
            return Path(hf_hub_download(repo, filename))
    except Exception as error:  # the hub's errors vary by version: explained by name
        raise explain_download_error(error) from error


def _unreachable(url: str, timeout: float) -> str | None:
    """Why ``url``'s host does not accept a connection within ``timeout`` s; None if it does.

    The name lookup has no timeout of its own, so the attempt runs in a daemon thread."""
    parts = urlsplit(url)
    host = parts.hostname or "huggingface.co"
    try:
        port = parts.port or (80 if parts.scheme == "http" else 443)
    except ValueError:  # a malformed port: let the hub report it
        return None
    outcome: list[OSError | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(error)

    worker = threading.Thread(target=attempt, name="sam3video-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return f"no answer from {host} within {timeout:g} s"
    error = outcome[0]
    if error is None:
        return None
    return f"{host}: {error.strerror or error}"


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """The hub client logs errors only (no "Retrying in 1s" lines) inside the block."""
    try:
        from huggingface_hub.utils import logging as hub_logging

        level = hub_logging.get_verbosity()
        hub_logging.set_verbosity_error()
    except (ImportError, AttributeError):  # a hub version without these: leave it as is
        yield
        return
    try:
        yield
    finally:
        hub_logging.set_verbosity(level)


def verify_checkpoint(path: str | os.PathLike[str], source: str = "argument") -> Path:
    """Cheap integrity check of a checkpoint file (no tensor is read); returns its path.

    ``source`` (as in `CheckpointLocation`) only shapes the advice of the error message.

    Raises:
        SourceNotFoundError: no such path.
        CheckpointError: a folder, an empty, truncated or foreign file.
    """
    file = Path(os.fspath(path)).expanduser()
    if not file.exists():
        raise SourceNotFoundError(f"checkpoint: file not found: {str(file)!r}")
    if not file.is_file():
        raise CheckpointError(
            f"checkpoint: expected a file, got the folder {str(file)!r}; pass the path of "
            f"{HF_FILENAME} itself"
        )
    problem = _format_problem(file)
    if problem is None:
        return file
    if source == "hf-cache":
        advice = (
            f"delete {str(file)!r} (and its blob in the cache) and run again to download it "
            f"anew, or pass a good copy with --checkpoint"
        )
    elif source == "package":
        advice = "reinstall sam3video, or write the file again with tools/export_demo.py"
    elif source == "environment":
        advice = f"download {HF_FILENAME} again from {_HF_PAGE} and point {ENV_VAR} at it"
    else:
        advice = f"download {HF_FILENAME} again from {_HF_PAGE} and pass that copy"
    raise CheckpointError(
        f"checkpoint {str(file)!r} is not a readable PyTorch checkpoint ({problem}); it is "
        f"probably truncated or corrupt (an interrupted download or copy): {advice}"
    )


def _format_problem(file: Path) -> str | None:
    """Why ``file`` cannot be a checkpoint, or ``None`` when it looks like one."""
    try:
        size = file.stat().st_size
        if size == 0:
            return "the file is empty"
        with open(file, "rb") as handle:
            head = handle.read(8)
            if file.suffix == ".safetensors":
                if len(head) < 8:
                    return "too short for a safetensors header"
                (length,) = struct.unpack("<Q", head)
                if length + 8 > size or handle.read(1) != b"{":
                    return "bad safetensors header"
                return None
        if head[:1] == b"\x80":  # a legacy (non-zip) torch.save pickle
            return None
        if not zipfile.is_zipfile(file):  # reads the central directory at the end only
            return "not a zip archive, or one cut short"
    except OSError as error:
        return f"cannot read it: {error.strerror or error}"
    return None


def explain_download_error(error: BaseException) -> CheckpointError:
    """One actionable paragraph for a failed download of ``sam3.pt``.

    The hub's exception classes are recognised by name (huggingface_hub is optional).
    """
    names = {cls.__name__ for cls in type(error).__mro__}
    detail = " ".join(f"{type(error).__name__}: {error}".split())
    if len(detail) > 300:
        detail = detail[:297] + "..."
    if isinstance(error, ImportError):
        return CheckpointError(
            f"no SAM 3 checkpoint found locally, and downloading {HF_FILENAME} needs "
            "huggingface_hub, which is not installed: `pip install 'sam3video[hub]'`, accept "
            f"the licence at {_HF_PAGE}, run {LOGIN}, then run again; " + _HOW_BY_HAND
        )
    if names & {"GatedRepoError", "RepositoryNotFoundError"}:
        return CheckpointError(
            f"the Hugging Face repository {HF_REPO} is gated and this machine has no access "
            f"to it ({detail}): open {_HF_PAGE}, accept the licence (approval can take a "
            f"while), log in with {LOGIN} (or set HF_TOKEN), then run again; " + _HOW_BY_HAND
        )
    offline = {
        "LocalEntryNotFoundError",
        "OfflineModeIsEnabled",
        "ConnectionError",
        "ConnectError",
        "Timeout",
        "TimeoutError",
        "TimeoutException",
    }
    if names & offline:
        return CheckpointError(
            f"could not download {HF_FILENAME} from {HF_REPO}: huggingface.co cannot be "
            f"reached (offline, a proxy, or HF_HUB_OFFLINE=1; {detail}); connect to the "
            "internet and run again, " + _HOW_BY_HAND
        )
    return CheckpointError(
        f"could not download {HF_FILENAME} from {HF_REPO} ({detail}); check your access at "
        f"{_HF_PAGE} and your login ({LOGIN}), then run again, " + _HOW_BY_HAND
    )


def load_predictor(
    model: str,
    checkpoint: str | os.PathLike[str] | None,
    *,
    device: Any = "auto",
    dtype: Any = "auto",
    loader: str = "cv2",
    async_loading_frames: bool = False,
    warn: Callable[[str], None] | None = None,
    on_loading: Callable[[Path | None], None] | None = None,
    pack_clicked_objects: bool = False,
) -> Any:
    """The `Sam3VideoPredictor` a command runs (``track``, ``serve``, ``batch``).

    ``model="full"`` needs a checkpoint, found as `resolve_checkpoint` says (argument,
    ``$SAM3VIDEO_CHECKPOINT``, the Hugging Face cache, a download); ``"sam3.1"`` takes the one
    given, else ``sam3.1_multiplex.pt`` of ``facebook/sam3.1`` (hub cache or download);
    ``"demo"`` takes one when given, else the packaged `demo_weights`;
    ``"tiny"``/``"sam3.1-tiny"`` take one when given (verified), else run on synthetic
    weights and say so through ``warn``.
    ``device``/``dtype`` as the predictor takes them (``"auto"`` or a name).
    ``on_loading(checkpoint)`` is called once the checkpoint is known, before the (long) load.
    ``pack_clicked_objects``: the predictor's option (``--pack-clicks``; SAM 3.1 only).
    """
    from sam3video.predictor import Sam3VideoPredictor  # torch: only when a model is wanted

    path = None
    if model == "full":
        path = resolve_checkpoint(checkpoint)
    elif model == "sam3.1" and not checkpoint:
        path = download_checkpoint(version="sam3.1")  # the hub's cache first
    elif checkpoint:
        location = locate_checkpoint(checkpoint)
        path = verify_checkpoint(location.path, location.source)
    elif model == "demo":
        path = demo_weights()
    elif warn is not None:
        warn(
            f"--model {model} runs on SYNTHETIC weights: the masks are meaningless (a test of "
            "the pipeline, not a segmentation)"
        )
    if on_loading is not None:
        on_loading(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*synthetic weights.*")
        return Sam3VideoPredictor(
            checkpoint_path=path,
            async_loading_frames=async_loading_frames,
            video_loader_type=loader,
            model_config=model,
            device=device,
            dtype=dtype,
            pack_clicked_objects=pack_clicked_objects,
        )
