"""`Sam3VideoPredictor`: the session-based request API of SAM 3's video predictor.

A thin layer over `sam3video.video.session.VideoSession`: requests (dicts, see the README) are
parsed and validated by `sam3video.requests` before any state changes, dispatched to the
session, and answered in the product's output format::

    {obj_id: {"mask": np.bool_ (H, W), "score": float, "bbox": [x0, y0, x1, y1]}}

with pixel boxes whose ``x1``/``y1`` are exclusive and computed from the returned mask.

Sessions belong to the predictor instance (not to the class, as upstream) and each is guarded
by a lock, so separate sessions can be used from different threads. ``close_session`` is
idempotent.
"""

from __future__ import annotations

import os
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from sam3video import checkpoints
from sam3video.errors import (
    CheckpointError,
    InvalidInputError,
    UnknownIdError,
    UnsupportedModelError,
)
from sam3video.io.frames import IMAGE_EXTENSIONS, open_frames
from sam3video.io.live import LiveFrames
from sam3video.io.streams import StreamReader, is_stream
from sam3video.model.build import Sam3VideoModel, build_sam3_video_model, resolve_model_config
from sam3video.model.config import get_config
from sam3video.model.detector import make_geometry_prompt
from sam3video.requests import (
    AddFrame,
    AddPrompt,
    CancelPropagation,
    CloseSession,
    PropagateInVideo,
    RemoveConcept,
    RemoveObject,
    ResetSession,
    StartSession,
    check_frame_index,
    check_known,
    check_points_in_frame,
    parse_request,
)
from sam3video.video.live import LiveSession
from sam3video.video.multiplex_live import LiveSession31
from sam3video.video.planner import VideoHeuristics
from sam3video.video.planner31 import VideoHeuristics31
from sam3video.video.session import Outputs, VideoSession, concept_tokens
from sam3video.video.session31 import VideoSession31, is_multiplex_model

_DEVICE_TYPES = ("cpu", "cuda", "mps")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA if available, then MPS, then CPU. Otherwise ``"cpu"``,
    ``"cuda"``, ``"cuda:N"``, ``"mps"`` (or a ``torch.device``), which must be available here;
    anything else raises `InvalidInputError` naming the accepted values."""
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    accepted = "'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device"
    if not isinstance(device, (str, torch.device)):
        raise InvalidInputError(
            f"device: expected {accepted}, got {type(device).__name__} {str(device)[:100]!r}"
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in _DEVICE_TYPES:
        raise InvalidInputError(f"device: expected {accepted}, got {str(device)[:100]!r}")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InvalidInputError(
                f"device: {str(dev)!r} asks for CUDA, but no CUDA device is available here "
                "(use 'auto' or 'cpu')"
            )
        if dev.index is not None and dev.index >= count:
            raise InvalidInputError(
                f"device: expected a CUDA index below {count} (this machine has {count} "
                f"CUDA device{'s' if count != 1 else ''}), got {str(dev)!r}"
            )
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidInputError(
                "device: 'mps' asks for Apple's Metal backend, which is not available here "
                "(use 'auto' or 'cpu')"
            )
    return dev


def pick_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """``None``/``"auto"``: bfloat16 on CUDA, float32 elsewhere (CPUs rarely have fast
    bfloat16). Otherwise one of float32, bfloat16, float16, as a ``torch.dtype`` or its name."""
    if dtype is None or (isinstance(dtype, str) and dtype == "auto"):
        return default_dtype(device)
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    raise InvalidInputError(
        "dtype: expected torch.float32, torch.bfloat16, torch.float16 (or their names, or "
        f"'auto'), got {type(dtype).__name__} {str(dtype)[:100]!r}"
    )


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA, float32 elsewhere (CPUs rarely have fast bfloat16)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def download_checkpoint(version: str = "sam3") -> str:
    """Fetch ``sam3.pt`` from the Hugging Face repo ``facebook/sam3`` (``version="sam3.1"``:
    ``sam3.1_multiplex.pt`` from ``facebook/sam3.1``), cached by the hub.

    `sam3video.checkpoints.download_checkpoint` does the work (it fails fast offline and
    keeps the hub's retry log quiet); its errors are given the Python way out as well.
    """
    try:
        return str(checkpoints.download_checkpoint(version=version))
    except CheckpointError as exc:
        raise CheckpointError(
            f"checkpoint_path: None asks for a download, which failed: {exc}. In Python, "
            "pass checkpoint_path='/path/to/sam3.pt', or model_config='tiny' to try the "
            "pipeline without weights."
        ) from exc


class Sam3VideoPredictor:
    """Session-based video segmentation and tracking with text, click and box prompts.

    Arguments as upstream (``checkpoint_path=None`` downloads ``facebook/sam3``, or
    ``facebook/sam3.1`` for ``model_config="sam3.1"``), plus ``model_config`` (``"full"``,
    ``"tiny"``, ``"demo"``, ``"sam3.1"`` or ``"sam3.1-tiny"``; a tiny one without a
    checkpoint runs on synthetic weights and warns that its masks are meaningless),
    ``device`` (default CUDA,
    then MPS, then CPU) and ``dtype`` (default bfloat16 on CUDA, float32 elsewhere).
    ``model_config="demo"`` is the tiny model with the weights that ship in the package
    (trained on the shapes world, `sam3video.data`); a ``checkpoint_path`` given wins.
    ``model`` may be passed to share one loaded model between predictors. ``version``
    (``"sam3"``/``"sam3.1"``) forces the checkpoint version, otherwise read from its keys:
    a SAM 3.1 checkpoint selects the SAM 3.1 config. A SAM 3.1 model serves its sessions
    with `VideoSession31` (the multiplex tracker, `VideoHeuristics31`); what it does not
    serve yet raises `UnsupportedModelError` (see `sam3video.video.session31`).

    ``pack_clicked_objects`` (SAM 3.1 only; ours, off by default = the official layout):
    officially every object created by clicks gets a tracker state of its own, so ``N``
    clicked objects cost ``N`` bucket passes per frame. With it, a new clicked object is first
    decoded alone exactly as officially (same reply), then joins a state of clicked objects
    that has the frame stored and a free slot, so ``N`` objects clicked on one frame share
    ``ceil(N / multiplex_count)`` states (one bucket pass each). Deviation: the objects of a
    state are tracked jointly (one bucket's memory), so masks differ from the official
    per-object states; a refinement click on such an object is decoded alone and written in
    place on a frame its state has stored, elsewhere the object is first extracted to a state
    of its own (docs/sam31_video_logic.md section 9). With a SAM 3 model it raises
    `UnsupportedModelError` (SAM 3 has no buckets to pack).
    """

    def __init__(
        self,
        checkpoint_path: str | os.PathLike | None = None,
        bpe_path: str | os.PathLike | None = None,
        has_presence_token: bool = True,
        geo_encoder_use_img_cross_attn: bool = True,
        strict_state_dict_loading: bool = True,
        async_loading_frames: bool = False,
        video_loader_type: str = "cv2",
        apply_temporal_disambiguation: bool = True,
        compile: bool = False,
        *,
        model_config: str = "full",
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        model: Sam3VideoModel | None = None,
        version: str | None = None,
        pack_clicked_objects: bool = False,
    ) -> None:
        if video_loader_type not in ("cv2", "pyav"):
            raise InvalidInputError(
                f"video_loader_type: expected 'cv2' or 'pyav', got {str(video_loader_type)[:100]!r}"
            )
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.async_loading_frames = bool(async_loading_frames)
        self.video_loader_type = video_loader_type
        if model is None:
            model = self._load_model(
                resolve_model_config(model_config, checkpoint_path, version),
                checkpoint_path,
                bpe_path,
                geo_encoder_use_img_cross_attn,
                strict_state_dict_loading,
            )
        self.model = model
        self.heuristics = self._heuristics(model, apply_temporal_disambiguation)
        if pack_clicked_objects and not is_multiplex_model(model):
            raise UnsupportedModelError(
                f"pack_clicked_objects: True needs a SAM 3.1 model (multiplex buckets), got "
                f"config {model.config.name!r}; pass False"
            )
        self.pack_clicked_objects = bool(pack_clicked_objects)
        # Upstream's flag only switches the video score to the presence-weighted joint logit.
        self.model.detector.joint_scores = bool(has_presence_token)
        if compile:
            self._compile()
        self._sessions: dict[str, VideoSession] = {}
        self._registry_lock = threading.Lock()

    def _load_model(self, config, checkpoint_path, bpe_path, use_img_cross_attn, strict):
        cfg = get_config(config)
        if not use_img_cross_attn:
            cfg = cfg.replace(detector=replace(cfg.detector, geo_use_img_cross_attn=False))
        if checkpoint_path is None:
            if cfg.name == "demo":  # the packaged shapes-world weights
                checkpoint_path = checkpoints.demo_weights()
            elif cfg.name in ("full", "sam3.1"):
                checkpoint_path = download_checkpoint(getattr(cfg, "version", "sam3"))
            else:
                warnings.warn(
                    f"Sam3VideoPredictor: model_config={cfg.name!r} without a checkpoint runs "
                    "on synthetic weights; the masks are meaningless (pipeline testing only)",
                    stacklevel=3,
                )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="build_sam3_video_model: no checkpoint")
            return build_sam3_video_model(
                cfg,
                checkpoint_path,
                device=self.device,
                dtype=self.dtype,
                strict=strict,
                bpe_path=bpe_path,
            )

    def _compile(self) -> None:
        """``torch.compile`` the per-frame hot modules in place (keys unchanged). Compilation
        happens lazily on first use; on CPU it needs a C++ compiler."""
        det = self.model.detector
        det.backbone.vision_backbone.trunk.compile(dynamic=False)
        det.transformer.encoder.compile(dynamic=False)
        tracker = self.model.tracker
        if is_multiplex_model(self.model):
            tracker = tracker.model  # SAM 3.1: the multiplex tracker's memory attention
        tracker.transformer.encoder.compile(dynamic=True)

    @staticmethod
    def _heuristics(model: Sam3VideoModel, apply_temporal_disambiguation: bool):
        """The video heuristics of the model's version (SAM 3.1: the 3.1 builder's)."""
        if not is_multiplex_model(model):
            if apply_temporal_disambiguation:
                return VideoHeuristics()
            return VideoHeuristics.ablation()
        if not apply_temporal_disambiguation:
            raise UnsupportedModelError(
                "apply_temporal_disambiguation: False is not supported for SAM 3.1 models (the "
                "3.1 builder has no ablation preset); pass True"
            )
        return VideoHeuristics31()

    # ------------------------------------------------------------------ dispatch

    def handle_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Dispatch ``start_session``, ``add_prompt``, ``remove_object``, ``reset_session``,
        ``close_session``, ``cancel_propagation``, ``remove_concept`` or ``add_frame`` (live
        sessions: ``start_session`` with ``live=True``).

        The request is validated, and everything it needs is read (the prompt frame decoded,
        the text tokenized), before the session changes: a failed request leaves the session
        as it was. Any state change makes the session's open propagation streams stale.
        """
        req = parse_request(request, stream=False)
        if isinstance(req, StartSession):
            return self._start_session(req)
        if isinstance(req, CloseSession):
            with self._registry_lock:
                session = self._sessions.pop(req.session_id, None)
            if session is not None:
                with session.lock:
                    session.close()
            return {"is_success": True}
        session = self._session(req.session_id)
        if isinstance(req, AddPrompt):
            return self._add_prompt(session, req)
        if isinstance(req, CancelPropagation):
            session.cancel()  # no lock: the running stream holds it during a frame
            return {"is_success": True}
        with session.lock, torch.inference_mode():
            self._check_open(session)
            if isinstance(req, RemoveObject):
                check_known(req.obj_id, session.obj_ids, "obj_id")
                session.remove_object(req.obj_id)
                return {"is_success": True}
            if isinstance(req, ResetSession):
                session.reset()
                return {"is_success": True}
            if isinstance(req, RemoveConcept):
                session.remove_concept(req.text)
                return {"is_success": True}
            if isinstance(req, AddFrame):
                if not isinstance(session, LiveSession):
                    raise InvalidInputError(
                        "add_frame: this session reads a video (resource_path); only a live "
                        "session (start_session with live=True) receives frames"
                    )
                index, outputs = session.add_frame(req.frame)
                return {"frame_index": index, "outputs": outputs}
        raise AssertionError(f"unhandled request {req!r}")  # pragma: no cover

    def handle_stream_request(self, request: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Dispatch ``propagate_in_video``: yields ``{"frame_index", "outputs"}`` per frame.

        The request is validated when this is called, before the first frame, and the stream
        makes the session's older streams stale. ``"both"`` runs forward, then backward from
        the same start. Propagation is transactional per frame: closing the generator early
        (or an error such as an undecodable frame) keeps every finished frame, and a later
        propagation computes only the rest. A stream whose session changed since it started
        raises `StaleStreamError` at its next frame and changes nothing.
        """
        req = parse_request(request, stream=True)
        assert isinstance(req, PropagateInVideo)
        session = self._session(req.session_id)
        directions = {"forward": [False], "backward": [True], "both": [False, True]}
        with session.lock:
            self._check_open(session)
            start = req.start_frame_index
            if start is not None:
                start = check_frame_index(start, session.num_frames, "start_frame_index")
            frames = session.propagate(
                start, req.max_frame_num_to_track, directions[req.propagation_direction]
            )
        return self._stream(session, frames)

    def _stream(
        self, session: VideoSession, frames: Iterator[tuple[int, Outputs]]
    ) -> Iterator[dict[str, Any]]:
        try:
            while True:
                # The lock is held per frame only: other requests may come between frames
                # (they make this stream stale if they change the session).
                with session.lock, torch.inference_mode():
                    item = next(frames, None)
                if item is None:
                    return
                yield {"frame_index": item[0], "outputs": item[1]}
        finally:
            frames.close()

    def _session_options(self, multiplex: bool) -> dict[str, Any]:
        """Constructor options of the model version's session class."""
        return {"pack_clicked_objects": self.pack_clicked_objects} if multiplex else {}

    # ------------------------------------------------------------------ requests

    def _start_session(self, req: StartSession) -> dict[str, Any]:
        session_id = req.session_id or str(uuid.uuid4())
        with self._registry_lock:
            if session_id in self._sessions:
                raise InvalidInputError(
                    f"session_id: expected a new session id, got {session_id[:100]!r} which "
                    "is already open (close it first or omit session_id)"
                )
        multiplex = is_multiplex_model(self.model)
        if req.live or is_stream(req.resource_path):
            # A camera or network stream is read on a thread into a live session.
            reader = None if req.live else StreamReader(req.resource_path)
            session: VideoSession = (LiveSession31 if multiplex else LiveSession)(
                session_id,
                self.model,
                LiveFrames(fps=None if reader is None else reader.fps),
                heuristics=self.heuristics,
                device=self.device,
                dtype=self.dtype,
                reader=reader,
                **self._session_options(multiplex),
            )
        else:
            frames = open_frames(
                req.resource_path,
                loader=self.video_loader_type,
                prefetch=self.async_loading_frames,
            )
            is_image = Path(req.resource_path).suffix.lower() in IMAGE_EXTENSIONS
            session = (VideoSession31 if multiplex else VideoSession)(
                session_id,
                self.model,
                frames,
                heuristics=self.heuristics,
                device=self.device,
                dtype=self.dtype,
                is_image_only=is_image,
                **self._session_options(multiplex),
            )
        with self._registry_lock:
            if session_id in self._sessions:  # lost a race with another thread
                session.close()
                raise InvalidInputError(
                    f"session_id: expected a new session id, got {session_id[:100]!r}"
                )
            self._sessions[session_id] = session
        return {"session_id": session_id}

    def _add_prompt(self, session: VideoSession, req: AddPrompt) -> dict[str, Any]:
        frame = check_frame_index(req.frame_index, session.num_frames)
        if req.points is not None:
            h, w = session.video_size
            check_points_in_frame(req.points, w, h)
            with session.lock, torch.inference_mode():
                self._check_open(session)
                _, outputs = session.add_points(frame, req.points, req.point_labels, req.obj_id)
            return {"frame_index": frame, "outputs": outputs}
        geometry = None
        if req.bounding_boxes is not None:
            geometry = make_geometry_prompt(
                boxes=req.bounding_boxes, box_labels=req.bounding_box_labels
            )
        texts = req.texts or [None]  # boxes only: one box-only concept
        prompts = [(text, geometry) for text in texts]  # boxes come with at most one text
        tokens = concept_tokens(self.model, texts)  # user input: outside the session lock
        with session.lock, torch.inference_mode():
            self._check_open(session)
            outputs = session.add_concepts(frame, prompts, tokens, mode=req.concept_mode)
        return {"frame_index": frame, "outputs": outputs}

    def _session(self, session_id: str) -> VideoSession:
        with self._registry_lock:
            check_known(session_id, self._sessions, "session_id", list_known=False)
            return self._sessions[session_id]

    @staticmethod
    def _check_open(session: VideoSession) -> None:
        """A session closed by another thread between lookup and lock is unknown."""
        if session.closed:
            raise UnknownIdError("session_id: this session was closed")

    def get_session(self, session_id: str) -> VideoSession:
        """The `VideoSession` behind a session id, for callers that build on the session
        (observers of propagation steps, `VideoSession.release_pending`). Hold
        ``session.lock`` while calling into it from several threads."""
        return self._session(session_id)

    def session_info(self, session_id: str) -> dict[str, Any]:
        """Frames, video size, tracked object ids and the memory a session holds."""
        session = self._session(session_id)
        with session.lock:
            return {
                "num_frames": session.num_frames,
                "video_size": session.video_size,
                "fps": session.frames.fps,
                "obj_ids": session.obj_ids,
                "concepts": list(session.concepts),
                "memory": session.memory_footprint(),
            }

    # ------------------------------------------------------------------ lifetime

    @property
    def session_ids(self) -> list[str]:
        with self._registry_lock:
            return list(self._sessions)

    def shutdown(self) -> None:
        """Close every session."""
        for session_id in self.session_ids:
            self.handle_request({"type": "close_session", "session_id": session_id})

    def __enter__(self) -> Sam3VideoPredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
