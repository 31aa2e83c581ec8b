"""Model construction, strict checkpoint loading and the official key manifest."""

from __future__ import annotations

import pytest
import torch
from _manifest import FIXTURES, official_manifest, read_manifest, state_manifest

from sam3video.errors import CheckpointError, SourceNotFoundError
from sam3video.model.build import (
    build_model_skeleton,
    build_sam3_video_model,
    load_state_dict_checked,
    read_checkpoint,
)
from sam3video.model.weights import synthetic_state_dict


def _subset(manifest: dict, prefix: str) -> dict:
    return {k: v for k, v in manifest.items() if k.startswith(prefix)}


def test_full_model_on_meta_matches_official_manifest():
    model = build_model_skeleton("full", device="meta")
    assert all(p.is_meta for p in model.parameters())
    ours = state_manifest(model.state_dict())
    official = official_manifest()
    assert len(official) == 1465
    assert len(_subset(ours, "detector.")) == 1156 and len(_subset(ours, "tracker.")) == 309
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k: v for k, v in ours.items() if official[k] != v} == {}


def test_tiny_model_matches_official_tiny_manifest():
    # written by tools/reference/official_builders.py from the official classes at tiny sizes
    official = read_manifest(FIXTURES / "manifest_tiny.tsv")
    ours = state_manifest(build_model_skeleton("tiny").state_dict())
    assert len(official) == 599
    assert ours == official


@pytest.fixture(scope="module")
def tiny_state():
    return synthetic_state_dict("tiny")


def test_checkpoint_round_trip_with_model_key(tmp_path, tiny_state):
    path = tmp_path / "sam3_tiny.pt"
    torch.save({"model": tiny_state, "epoch": 3}, path)
    model = build_sam3_video_model("tiny", checkpoint_path=path, device="cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(v, tiny_state[k]), k
    assert not model.training


def test_strict_load_lists_missing_unexpected_and_mismatched(tiny_state):
    state = dict(tiny_state)
    missing = sorted(state)[:7]
    for k in missing:
        del state[k]
    state["detector.not_a_module.weight"] = torch.zeros(3)
    key = "detector.geometry_encoder.final_proj.weight"
    state[key] = torch.zeros(5, 5)
    model = build_model_skeleton("tiny")
    with pytest.raises(CheckpointError) as err:
        load_state_dict_checked(model, state, strict=True)
    msg = str(err.value)
    assert "7 missing key(s)" in msg and missing[0] in msg
    assert "1 unexpected key(s): detector.not_a_module.weight" in msg
    assert f"{key} (checkpoint (5, 5) vs model (32, 32))" in msg
    # strict=False: loads what matches, reports the rest
    report = load_state_dict_checked(model, state, strict=False)
    assert len(report.missing) == 7 and len(report.unexpected) == 1
    assert [m[0] for m in report.mismatched] == [key]
    loaded = "detector.geometry_encoder.norm.weight"
    assert torch.equal(model.state_dict()[loaded], tiny_state[loaded])


def test_build_with_strict_false_warns_and_runs(tmp_path, tiny_state):
    state = {k: v for k, v in tiny_state.items() if "segmentation_head" not in k}
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="missing key"):
        model = build_sam3_video_model("tiny", checkpoint_path=path, device="cpu", strict=False)
    assert not any(p.is_meta for p in model.parameters())
    with pytest.raises(CheckpointError, match="missing key"):
        build_sam3_video_model("tiny", checkpoint_path=path, device="cpu")


def test_checkpoint_path_errors(tmp_path):
    with pytest.raises(SourceNotFoundError, match="nope.pt"):
        read_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt.*not a readable PyTorch checkpoint"):
        read_checkpoint(junk)
    with pytest.raises(CheckpointError, match="expected a file"):
        read_checkpoint(tmp_path)
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointError, match="1 unexpected key.*encoder.weight"):
        build_sam3_video_model("tiny", checkpoint_path=other, device="cpu")


def test_dtype_keeps_complex_rope_tables():
    model = build_sam3_video_model("tiny", device="cpu", dtype=torch.bfloat16)
    dtypes = {v.dtype for v in model.state_dict().values()}
    assert dtypes <= {torch.bfloat16, torch.complex64}
    assert torch.complex64 in dtypes
