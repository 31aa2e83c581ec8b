"""User-facing detector prompts: validation, devices/dtypes, and the convenience forward."""

from __future__ import annotations

import math

import pytest
import torch

from sam3video.errors import InvalidInputError
from sam3video.model.build import build_sam3_video_model
from sam3video.model.detector import make_geometry_prompt, validate_text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"boxes": [[0.5, 0.5, 0.2]]}, r"bounding_boxes: expected shape \(N, 4\)"),
        ({"boxes": "abc"}, "bounding_boxes: expected a list"),
        ({"boxes": [[0.5, 0.5, 0.0, 0.2]]}, "width and height > 0"),
        ({"boxes": [[0.5, 0.5, 0.2, -0.1]]}, "width and height > 0"),
        ({"boxes": [[1.2, 0.5, 0.2, 0.2]]}, "inside the image"),
        ({"boxes": [[0.05, 0.5, 0.2, 0.2]]}, "inside the image"),
        ({"boxes": [[math.nan, 0.5, 0.2, 0.2]]}, "finite"),
        ({"boxes": [[0.5, 0.5, math.inf, 0.2]]}, "finite"),
        ({"boxes": [[0.5, 0.5, 0.2, 0.2]], "box_labels": [1, 0]}, "expected 1 label"),
        ({"boxes": [[0.5, 0.5, 0.2, 0.2]], "box_labels": [2]}, "labels 0 or 1"),
        ({"boxes": [[0.5, 0.5, 0.2, 0.2]], "box_labels": [0.5]}, "labels 0 or 1"),
        ({"box_labels": [1]}, "without bounding_boxes"),
        ({"points": [[0.5, 1.5]]}, r"points: expected normalised"),
        ({"points": [[0.5, 0.5]], "point_labels": [1, 1]}, "expected 1 label"),
        ({"point_labels": [1]}, "without points"),
    ],
)
def test_bad_geometry_raises_typed_error(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        make_geometry_prompt(**kwargs)


def test_geometry_prompt_shapes_and_defaults():
    g = make_geometry_prompt(boxes=[[0.5, 0.5, 0.2, 0.4], [0.2, 0.3, 0.1, 0.1]], box_labels=[1, 0])
    assert g.boxes.shape == (1, 2, 4) and g.boxes.dtype == torch.float32
    assert g.box_labels.tolist() == [[1, 0]] and not g.box_mask.any()
    g = make_geometry_prompt(points=[0.25, 0.75])
    assert g.points.shape == (1, 1, 2) and g.point_labels.tolist() == [[1]]
    # a box touching the border is fine
    make_geometry_prompt(boxes=[[0.1, 0.5, 0.2, 1.0]])


@pytest.mark.parametrize("text", ["", "   ", None, 3, ["person"]])
def test_bad_text(text):
    with pytest.raises(InvalidInputError, match="text: expected"):
        validate_text(text)


def test_long_text_is_truncated_to_context_length():
    model = build_sam3_video_model("tiny", device="cpu")
    tok = model.detector.backbone.language_backbone.tokenizer
    ids = tok("word " * 100)[0]
    assert ids.shape == (32,) and ids[0] == 49406 and ids[-1] == 49407 and (ids != 0).all()


@pytest.fixture(scope="module")
def tiny():
    return build_sam3_video_model("tiny", device="cpu")


def _image(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 224, 224, generator=g) * 2 - 1


def test_forward_with_text_and_exemplars(tiny):
    g = make_geometry_prompt(boxes=[[0.5, 0.5, 0.3, 0.3], [0.2, 0.2, 0.1, 0.1]], box_labels=[1, 0])
    with torch.inference_mode():
        out = tiny.detector(_image(), ["person"], g)
        plain = tiny.detector(_image(), ["person"])
    q = tiny.config.detector.num_queries
    assert out.pred_logits.shape == (1, q) and out.pred_masks.shape == (1, q, 64, 64)
    assert out.pred_boxes.shape == (1, q, 4) and out.presence_logit.shape == (1, 1)
    # the exemplars change the prompt and hence the scores
    assert not torch.allclose(out.pred_logits, plain.pred_logits)
    x0, y0, x1, y1 = out.pred_boxes_xyxy.unbind(-1)
    assert (x1 >= x0).all() and (y1 >= y0).all()


def test_bfloat16_close_to_float32(tiny):
    bf16 = build_sam3_video_model("tiny", device="cpu", dtype=torch.bfloat16)
    with torch.inference_mode():
        ref = tiny.detector(_image(1), ["a red car"])
        out = bf16.detector(_image(1).bfloat16(), ["a red car"])
    assert torch.isfinite(out.pred_masks.float()).all()
    assert (out.pred_boxes.float() - ref.pred_boxes).abs().max() < 0.05
    assert (out.pred_logits.float() - ref.pred_logits).abs().max() < 0.5
    agree = ((out.pred_masks > 0) == (ref.pred_masks > 0)).float().mean()
    assert agree > 0.95
