"""The retrieval Space in a real headless Chromium (Playwright driving the system's /usr/bin/chromium): a person types
a query, uploads an image and a WAV, and sees ranked results; a bad upload shows a readable message."""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    from recipes.utils.browser import launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        yield page
        browser.close()


def test_a_person_searches_with_text_an_image_and_a_wav_and_sees_ranked_results(
    page, retrieval_space, artifacts_dir
):
    folder = next(Path(retrieval_space["cache"]).glob("test-*"))
    item = json.loads((folder / "items.json").read_text())[2]
    page.goto(retrieval_space["url"], wait_until="networkidle")
    page.locator("#query-text textarea").fill(item["text"])
    page.locator("#query-image input[type=file]").set_input_files(str(folder / item["image"]))
    page.locator("#query-audio input[type=file]").set_input_files(str(folder / item["audio"]))
    page.locator(
        "#query-audio audio, #query-audio [data-testid='waveform-Audio (record or upload)']"
    ).first.wait_for(timeout=30_000)
    page.locator("#search-button").click()
    status = page.locator("#search-status")
    status.get_by_text("text + audio + image").wait_for(timeout=60_000)
    images = page.locator("#result-images img")
    images.first.wait_for(timeout=30_000)
    assert images.count() >= 1
    assert "Heard in the audio" in status.inner_text()
    assert page.locator("#result-images").get_by_text("#1 · ").count() == 1  # ranked, with scores
    lines = page.locator("#result-texts").inner_text().split("description", 1)[1].split("\n")
    cells = [line.strip() for line in lines if line.strip()]
    rows = [cells[i : i + 3] for i in range(0, len(cells), 3)]  # rank, score, description
    assert [int(rank) for rank, _, _ in rows] == [1, 2, 3, 4, 5, 6]
    scores = [float(score) for _, score, _ in rows]
    assert scores == sorted(scores, reverse=True) and all(description for _, _, description in rows)
    page.screenshot(path=str(Path(artifacts_dir) / "retrieval_space.png"), full_page=True)


def test_a_bad_upload_shows_a_readable_message_in_the_page(page, retrieval_space, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("these are notes, not pixels")
    page.goto(retrieval_space["url"], wait_until="networkidle")
    page.locator("#query-image input[type=file]").set_input_files(str(bad))
    page.locator("#search-button").click()
    message = page.get_by_text("is not an image that can be read")
    message.first.wait_for(timeout=30_000)
    assert "Traceback" not in page.content()
