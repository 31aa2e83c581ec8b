"""What the README promises a newcomer: the install blocks, the login command, and that code
written for the official predictor runs with one changed import."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from _media import VIDEOS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()

pytestmark = pytest.mark.usefixtures("one_thread")


def test_install_blocks_and_login():
    assert "--index-url https://download.pytorch.org/whl/cpu" in README
    for step in ("git clone", "cd sam3video", "python3 -m venv .venv", 'pip install -e ".[hub]"'):
        assert README.count(step) >= 3, f"{step!r} in each of the three install blocks"
    assert "torch==" not in README, "the machine-specific pin belongs to .ci/run"
    assert "huggingface-cli" not in README and "hf auth login" in README


def test_porting_needs_only_the_import():
    assert "the only change is the import, `from sam3video import Sam3VideoPredictor`" in README
    from sam3video import Sam3VideoPredictor

    # The constructor exactly as the official documentation writes it (tiny weights here).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = Sam3VideoPredictor(
            checkpoint_path=None,
            bpe_path=None,
            has_presence_token=True,
            geo_encoder_use_img_cross_attn=True,
            strict_state_dict_loading=True,
            async_loading_frames=True,
            video_loader_type="cv2",
            apply_temporal_disambiguation=True,
            compile=False,
            model_config="tiny",
            device="cpu",
        )
    with predictor:
        response = predictor.handle_request(
            {"type": "start_session", "resource_path": str(VIDEOS / "bikes.mp4")}
        )
        session_id = response["session_id"]
        predictor.handle_request(
            {"type": "add_prompt", "session_id": session_id, "frame_index": 0, "text": "person"}
        )
        frames = [
            response["frame_index"]
            for response in predictor.handle_stream_request(
                {
                    "type": "propagate_in_video",
                    "session_id": session_id,
                    "propagation_direction": "forward",
                    "max_frame_num_to_track": 3,
                }
            )
        ]
        predictor.handle_request({"type": "close_session", "session_id": session_id})
    assert frames == [0, 1, 2, 3]


def test_cli_options_are_documented():
    from sam3video.cli import build_parser

    track = build_parser()._subparsers._group_actions[0].choices["track"]
    options = {o for action in track._actions for o in action.option_strings}
    documented = set(re.findall(r"`(--[a-z-]+)", README))
    assert options - {"-h", "--help", "--debug", "--quiet"} <= documented
