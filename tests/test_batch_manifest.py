"""The batch manifest: JSON lines and CSV rows become checked jobs; every problem is a typed
`ManifestError` naming the file, the line and the column (no model, no video is needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sam3video.batch.manifest import ManifestError, VideoJob, read_manifest
from sam3video.errors import InvalidInputError


def write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_rows_resolve_paths_and_default_ids(tmp_path):
    manifest = write(
        tmp_path / "m.jsonl",
        [
            {"video": "clips/a.mp4", "text": "person"},
            "",
            {"video": "/abs/b.mp4", "id": "b-dogs", "text": "dog", "frame_index": 3},
            {"video": "c.mp4", "points": [[10, 20]], "point_labels": [1]},
            {"video": "d.mp4", "bounding_boxes": [[0.5, 0.5, 0.2, 0.2]], "text": "cup"},
            {"video": "e.mp4", "text": ["person", "dog"]},  # several concepts in one pass
        ],
    )
    jobs = read_manifest(manifest)
    assert [j.id for j in jobs] == ["a", "b-dogs", "c", "d", "e"]
    assert jobs[4].text == ["person", "dog"]
    assert jobs[0].video == str((tmp_path / "clips" / "a.mp4").resolve())
    assert jobs[1].video == "/abs/b.mp4" and jobs[1].frame_index == 3
    assert [j.line for j in jobs] == [1, 3, 4, 5, 6]  # blank line 2 skipped, lines counted
    assert jobs[2].prompts() == {"frame_index": 0, "points": [[10, 20]], "point_labels": [1]}
    assert VideoJob.from_dict(jobs[3].to_dict()) == jobs[3]


def test_csv_rows_with_json_cells(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "video,id,text,frame_index,points,point_labels\n"
        "a.mp4,,person,,,\n"
        'b.mp4,second,,2,"[[1, 2], [3, 4]]","[1, 0]"\n'
    )
    a, b = read_manifest(manifest)
    assert (a.id, a.text, a.frame_index, a.points) == ("a", "person", 0, None)
    assert (b.id, b.frame_index, b.point_labels) == ("second", 2, [1, 0])
    assert b.points == [[1, 2], [3, 4]]
    assert b.line == 3


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (['{"video": "a.mp4", "text": "x"}', '{"video": "b.mp4" "text": "y"}'],
         "line 2: not valid JSON"),
        (['{"text": "x"}'], "line 1: missing the required column 'video'"),
        (['{"video": "a.mp4", "txt": "x"}'], "line 1: unknown column 'txt' (did you mean 'text'?)"),
        (['[1, 2]'], "line 1: expected a JSON object, got list"),
        (['{"video": "a.mp4"}'], "line 1: no prompt"),
        (['{"video": 3, "text": "x"}'], "line 1: column 'video': expected a path"),
        (['{"video": "a.mp4", "text": "x"}', '{"video": "b/a.mp4", "text": "y"}'],
         "line 2: id 'a' is already the id of line 1"),
        (['{"video": "a.mp4", "id": "../up", "text": "x"}'], "path separator"),
        (['{"video": "a.mp4", "id": ".hidden", "text": "x"}'], "starts with '.'"),
        (['{"video": "a.mp4", "text": ["a", ""]}'], "a non-empty list of them"),
        (['{"video": "a.mp4", "text": []}'], "a non-empty list of them"),
        (['{"video": "a.mp4", "text": "x", "frame_index": -1}'], "line 1: frame_index"),
        (['{"video": "a.mp4", "points": [[1, 2]]}'], "line 1: point_labels"),
        (['{"video": "a.mp4", "bounding_boxes": [[0.5, 0.5, 2, 2]]}'], "line 1: bounding_boxes"),
        (['{"video": "a.mp4", "text": ""}'], "line 1: text"),
    ],
)  # fmt: skip
def test_jsonl_errors_name_the_line(tmp_path, rows, message):
    with pytest.raises(ManifestError) as caught:
        read_manifest(write(tmp_path / "m.jsonl", rows))
    assert message in str(caught.value)
    assert str(caught.value).startswith("m.jsonl")
    assert isinstance(caught.value, InvalidInputError)  # the CLI turns it into exit code 2


def test_csv_errors_name_the_line(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("video,text,points\na.mp4,x,\nb.mp4,,[[1 2]]\n")
    with pytest.raises(ManifestError, match=r"m.csv line 3: column 'points': expected a JSON"):
        read_manifest(manifest)
    manifest.write_text("video,text,frame_index\na.mp4,x,first\n")
    with pytest.raises(ManifestError, match=r"line 2: column 'frame_index': expected an int"):
        read_manifest(manifest)
    manifest.write_text("video,text\na.mp4,x,extra\n")
    with pytest.raises(ManifestError, match="line 2: more cells than header columns"):
        read_manifest(manifest)


def test_missing_or_empty_manifest(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="has no rows"):
        read_manifest(write(tmp_path / "empty.jsonl", [""]))
