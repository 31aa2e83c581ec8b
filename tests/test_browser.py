"""The annotator page in a real headless browser (Debian's chromium driven by Playwright; no
browser download): open a video, type a concept, click a point, propagate, and check the
pixels of the masks the page draws against the masks the server tracked.

Skipped when Playwright or /usr/bin/chromium is missing (``.ci/run`` installs both).
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from test_server_harness import CLIP, TOKEN, make_media, serve

from sam3video.server.rle import decode_mask

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("SAM3VIDEO_CHROMIUM", "/usr/bin/chromium")
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason=f"no chromium at {CHROMIUM} (apt install chromium)"
    ),
]
CLICK = (40, 20)  # a video pixel
SHOWN = 5  # the frame whose drawn masks are checked


def _davis_color(obj_id: int) -> np.ndarray:
    index, rgb = obj_id % 255 + 1, [0, 0, 0]
    for bit in range(8):
        for channel in range(3):
            rgb[channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return np.array(rgb, float)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(make_media(tmp_path_factory.mktemp("media"))) as running:
        yield running


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def _canvas_pixels(page, width: int, height: int) -> np.ndarray:
    """The drawn canvas, one RGB value per video pixel (the centre of its screen block)."""
    shot = np.asarray(Image.open(io.BytesIO(page.locator("#view").screenshot())).convert("RGB"))
    ys = ((np.arange(height) + 0.5) * shot.shape[0] / height).astype(int)
    xs = ((np.arange(width) + 0.5) * shot.shape[1] / width).astype(int)
    return shot[ys][:, xs].astype(float)


def _wait_idle(page) -> None:
    page.wait_for_function(
        "document.body.dataset.busy === '0' && "
        "!/…$/.test(document.getElementById('status').textContent)"
    )


def test_annotate_in_a_browser(server, page):
    page.goto(f"{server.url}/?token={TOKEN}")
    assert "token" not in page.url  # the token is kept for the tab, not in the address bar
    page.wait_for_selector(f"#media option[value='{CLIP}']", state="attached")
    page.select_option("#media", CLIP)
    page.click("#open")
    page.wait_for_function("document.getElementById('session').textContent.includes('8 frames')")
    _wait_idle(page)

    page.fill("#concept", "person")
    page.click("#find")
    _wait_idle(page)
    assert "Error" not in page.inner_text("#status"), page.inner_text("#status")

    box = page.locator("#view").bounding_box()
    scale = box["width"] / 64
    page.mouse.click(box["x"] + (CLICK[0] + 0.5) * scale, box["y"] + (CLICK[1] + 0.5) * scale)
    page.wait_for_function("window.sam3.selected !== null")
    _wait_idle(page)
    clicked = page.evaluate("window.sam3.selected")
    assert page.locator(f"#objects li[data-obj-id='{clicked}']").count() == 1

    page.select_option("#direction", "forward")
    page.click("#propagate")
    page.wait_for_function("document.getElementById('status').textContent.includes('propagated')")
    _wait_idle(page)
    assert page.evaluate("window.sam3.results.size") == 8

    page.eval_on_selector(
        "#frame", f"el => {{ el.value = '{SHOWN}'; el.dispatchEvent(new Event('input')); }}"
    )
    page.wait_for_function(f"document.getElementById('frame-label').textContent === '{SHOWN} / 7'")
    page.wait_for_timeout(100)
    with_masks = _canvas_pixels(page, 64, 48)
    page.uncheck("#show-masks")
    page.wait_for_timeout(100)
    without = _canvas_pixels(page, 64, 48)

    # the masks the server tracked on that frame
    sid = page.evaluate("window.sam3.session.session_id")
    with server.client() as http:
        export = http.get(f"/v1/sessions/{sid}/export").json()
    masks = {
        a["obj_id"]: decode_mask(a["segmentations"][SHOWN])
        for a in export["annotations"]
        if a["segmentations"][SHOWN] is not None
    }
    assert clicked in masks and masks[clicked].sum() > 0
    covered = np.zeros((48, 64), bool)
    for obj_id, mask in masks.items():
        # drawn at half opacity in the object's colour where its mask is
        expected = 0.5 * without[mask] + 0.5 * _davis_color(obj_id)
        assert np.abs(with_masks[mask] - expected).max() <= 3, obj_id
        covered |= mask
    # and nothing is drawn anywhere else
    assert np.abs(with_masks[~covered] - without[~covered]).max() <= 1


def test_drag_a_box_and_remove_an_object(server, page):
    """Runs after the first test on the same page: a dragged box is an exemplar prompt (a new
    concept), the ✕ of an object removes it on the server."""
    page.check("#show-masks")
    box = page.locator("#view").bounding_box()
    scale = box["width"] / 64
    page.mouse.move(box["x"] + 10 * scale, box["y"] + 10 * scale)
    page.mouse.down()
    page.mouse.move(box["x"] + 30 * scale, box["y"] + 25 * scale, steps=5)
    page.mouse.move(box["x"] + 50 * scale, box["y"] + 40 * scale, steps=5)
    page.mouse.up()
    _wait_idle(page)
    assert "Error" not in page.inner_text("#status"), page.inner_text("#status")
    assert page.evaluate("window.sam3.results.size") == 1  # a new concept: old results gone

    box = page.locator("#view").bounding_box()
    page.click("#new-object")
    page.mouse.click(box["x"] + 20 * scale, box["y"] + 30 * scale)
    _wait_idle(page)
    obj_id = page.evaluate("window.sam3.selected")
    sid = page.evaluate("window.sam3.session.session_id")
    page.click(f"#objects li[data-obj-id='{obj_id}'] button")
    _wait_idle(page)
    assert page.locator(f"#objects li[data-obj-id='{obj_id}']").count() == 0
    with server.client() as http:
        assert obj_id not in http.get(f"/v1/sessions/{sid}").json()["obj_ids"]
