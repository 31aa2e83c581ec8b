"""SAM 3.1: presets, construction on ``meta``, strict loading of the official keys, versions."""

from __future__ import annotations

import pytest
import torch
from _manifest import FIXTURES, MANIFEST, read_manifest, state_manifest

from sam3video.errors import CheckpointError, ConfigError, UnsupportedModelError
from sam3video.model.build import (
    build_model_skeleton,
    build_sam3_video_model,
    checkpoint_version,
    load_state_dict_checked,
    official_key_names,
    resolve_model_config,
)
from sam3video.model.config import get_config
from sam3video.model.weights import detect_checkpoint_version, synthetic_state_dict

MANIFEST_31 = FIXTURES / "sam31_official_state_dict.tsv.gz"
MANIFEST_31_TINY = FIXTURES / "manifest_31_tiny.tsv"
DTYPES = {"float32": torch.float32, "complex64": torch.complex64}


def _official_format_state(manifest: dict, device: str) -> dict[str, torch.Tensor]:
    """A checkpoint with exactly the manifest's keys, shapes and dtypes: random values
    (complex64 RoPE tables included) on ``device`` (``meta`` costs nothing at full size)."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, (shape, dtype) in manifest.items():
        if device == "meta":
            state[key] = torch.empty(shape, dtype=DTYPES[dtype], device="meta")
        else:
            state[key] = torch.randn(shape, generator=gen, dtype=DTYPES[dtype])
    return state


def test_presets_describe_sam31():
    full, tiny = get_config("sam3.1"), get_config("sam3.1-tiny")
    assert (full.version, tiny.version, get_config("full").version) == ("sam3.1", "sam3.1", "sam3")
    assert full.multiplex.multiplex_count == 16 and full.multiplex.mask_in_slots == 32
    assert (full.image_size, full.d_model, full.vit.depth) == (1008, 256, 32)
    assert tiny.image_size == 224 and tiny.multiplex.multiplex_count == 4


def test_full_model_on_meta_matches_official_31_manifest():
    model = build_model_skeleton("sam3.1", device="meta")
    assert all(p.is_meta for p in model.parameters())
    ours = state_manifest(model.state_dict())
    official = read_manifest(MANIFEST_31)
    assert len(official) == 1623
    assert sum(k.startswith("detector.") for k in official) == 1166
    assert sum(k.startswith("tracker.") for k in official) == 457
    assert sum(d == "complex64" for _, d in official.values()) == 32
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k: v for k, v in ours.items() if official[k] != v} == {}


def test_full_official_format_checkpoint_loads_strictly_on_meta():
    official = read_manifest(MANIFEST_31)
    state = _official_format_state(official, "meta")
    model = build_model_skeleton("sam3.1", device="meta")
    report = load_state_dict_checked(model, state, strict=True)
    assert report.ok
    # assigned: every tensor now has the checkpoint's shape and dtype (complex64 tables too)
    assert state_manifest(model.state_dict()) == official


def test_tiny_model_matches_official_tiny_31_manifest():
    # written by the reference helper from the official 3.1 classes at the tiny sizes
    official = read_manifest(MANIFEST_31_TINY)
    ours = state_manifest(build_model_skeleton("sam3.1-tiny").state_dict())
    assert len(official) == 749  # fewer ViT, text and transformer layers than the full model
    assert ours == official


def test_tiny_official_format_checkpoint_round_trip(tmp_path):
    model = build_model_skeleton("sam3.1-tiny", device="meta")
    state = _official_format_state(state_manifest(model.state_dict()), "cpu")
    path = tmp_path / "sam3.1_tiny.pt"
    torch.save({"model": state}, path)
    loaded = build_sam3_video_model("sam3.1-tiny", checkpoint_path=path, device="cpu")
    got = loaded.state_dict()
    assert sorted(got) == sorted(state)
    for k, v in state.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
    # one RoPE table per ViT block, as in the full checkpoint (32)
    assert sum(v.dtype == torch.complex64 for v in got.values()) == loaded.config.vit.depth
    assert not loaded.training


def test_synthetic_sam31_tiny_builds_and_keeps_complex_tables():
    model = build_sam3_video_model("sam3.1-tiny", device="cpu", dtype=torch.bfloat16)
    dtypes = {v.dtype for v in model.state_dict().values()}
    assert dtypes == {torch.bfloat16, torch.complex64}
    assert type(model.tracker).__name__ == "Sam3MultiplexTracker"


def test_a_sam3_checkpoint_does_not_fit_the_sam31_model():
    state = synthetic_state_dict("tiny")
    model = build_model_skeleton("sam3.1-tiny")
    with pytest.raises(CheckpointError, match="SAM 3.1 checkpoint .*sam3.1-tiny"):
        load_state_dict_checked(model, state, strict=True)


# ----------------------------------------------------------------------------- versions


def test_version_from_the_official_manifests():
    assert detect_checkpoint_version(read_manifest(MANIFEST_31)) == "sam3.1"
    assert detect_checkpoint_version(read_manifest(MANIFEST)) == "sam3"


def test_version_of_unknown_or_mixed_keys_is_an_error():
    with pytest.raises(CheckpointError, match="expected SAM 3 or SAM 3.1 keys.*2 keys"):
        detect_checkpoint_version(["encoder.weight", "decoder.bias"])
    with pytest.raises(CheckpointError, match="got 0 keys"):
        detect_checkpoint_version([])
    mixed = ["tracker.sam_mask_decoder.iou_token.weight", "tracker.model.sam_mask_decoder.x"]
    with pytest.raises(CheckpointError, match="both SAM 3 .*tracker.sam_mask_decoder.*SAM 3.1"):
        detect_checkpoint_version(mixed)


def test_checkpoint_version_of_files(tmp_path):
    for preset, version in (("tiny", "sam3"), ("sam3.1-tiny", "sam3.1")):
        path = tmp_path / f"{preset}.pt"
        torch.save({"model": synthetic_state_dict(preset)}, path)
        assert checkpoint_version(path) == version


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for preset in ("tiny", "sam3.1-tiny"):
        paths[preset] = root / f"{preset}.pt"
        torch.save(synthetic_state_dict(preset), paths[preset])
    return paths


def test_config_follows_the_checkpoint_version(tiny_checkpoints):
    v31, v3 = tiny_checkpoints["sam3.1-tiny"], tiny_checkpoints["tiny"]
    assert resolve_model_config("tiny", v31).name == "sam3.1-tiny"
    assert resolve_model_config("sam3.1-tiny", v3).name == "tiny"
    assert resolve_model_config("tiny", v3).name == "tiny"
    assert resolve_model_config("full", version="sam3.1").name == "sam3.1"
    assert resolve_model_config("sam3.1").name == "sam3.1"  # nothing to read: as given
    custom = get_config("tiny").replace(name="mine")
    with pytest.raises(ConfigError, match="expected a sam3.1 config .* got the sam3 config 'mine'"):
        resolve_model_config(custom, v31)
    with pytest.raises(ConfigError, match="version: expected None, 'sam3' or 'sam3.1', got '3.1'"):
        resolve_model_config("tiny", version="3.1")


def test_predictor_detects_sam31_and_serves_it(tiny_checkpoints):
    from sam3video.predictor import Sam3VideoPredictor
    from sam3video.video.planner31 import VideoHeuristics31

    predictor = Sam3VideoPredictor(
        checkpoint_path=tiny_checkpoints["sam3.1-tiny"], model_config="tiny", device="cpu"
    )
    assert predictor.model.config.name == "sam3.1-tiny"
    assert isinstance(predictor.heuristics, VideoHeuristics31)
    with pytest.warns(UserWarning, match="synthetic weights"):
        forced = Sam3VideoPredictor(model_config="tiny", version="sam3.1", device="cpu")
    assert forced.model.config.name == "sam3.1-tiny"
    with pytest.raises(UnsupportedModelError, match="apply_temporal_disambiguation"):
        Sam3VideoPredictor(model=forced.model, apply_temporal_disambiguation=False)
    # a SAM 3 checkpoint still gives a SAM 3 predictor
    predictor = Sam3VideoPredictor(
        checkpoint_path=tiny_checkpoints["tiny"], model_config="sam3.1-tiny", device="cpu"
    )
    assert predictor.model.config.name == "tiny"


def test_internal_key_names_are_renamed(tmp_path):
    state = synthetic_state_dict("sam3.1-tiny")
    internal = {
        k.replace("detector.", "sam3_model.", 1).replace("tracker.", "sam2_predictor.", 1): v
        for k, v in state.items()
    }
    assert not any(k.startswith(("detector.", "tracker.")) for k in internal)
    path = tmp_path / "internal.pt"
    torch.save({"model": internal}, path)
    assert checkpoint_version(path) == "sam3.1"
    model = build_sam3_video_model("sam3.1-tiny", checkpoint_path=path, device="cpu")
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())
    plain = {"detector.x": torch.zeros(1)}
    assert official_key_names(plain) is plain


def test_version_from_safetensors_header_and_unknown_keys_keep_the_config(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "sam31.safetensors"
    save_file(synthetic_state_dict("sam3.1-tiny"), str(path))
    assert checkpoint_version(path) == "sam3.1"
    assert resolve_model_config("tiny", path).name == "sam3.1-tiny"
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, other)
    assert resolve_model_config("tiny", other).name == "tiny"
    with pytest.raises(CheckpointError, match="expected SAM 3 or SAM 3.1 keys"):
        checkpoint_version(other)
