"""The captioning / VQA Space in a real headless Chromium (Playwright driving the system's /usr/bin/chromium): a person
uploads an image and reads its caption, asks a question, plays a sound example with one click, and sees the readable
message of a bad upload."""

import json
import re
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


@pytest.fixture(scope="module")
def examples(captioning_space):
    folder = next(Path(captioning_space["cache"]).glob("captioning-examples-test-*"))
    saved = json.loads((folder / "examples.json").read_text())
    return {"images": [folder / name for name in saved["images"]], "references": saved["references"]}


def test_a_person_uploads_an_image_and_reads_its_caption(page, captioning_space, examples, artifacts_dir):
    from playwright.sync_api import expect

    page.goto(captioning_space["url"], wait_until="networkidle")
    page.locator("#caption-image input[type=file]").set_input_files(str(examples["images"][0]))
    page.locator("#caption-image img").first.wait_for(timeout=30_000)  # the upload is shown
    page.locator("#caption-button").click()
    status = page.locator("#image-status")
    status.get_by_text("Caption of the image").wait_for(timeout=60_000)
    caption = page.locator("#image-caption textarea")
    expect(caption).not_to_have_value("", timeout=10_000)
    assert "prompt “Describe the image.”" in status.inner_text()
    assert re.search(r"\d+ tokens in \d+ ms", status.inner_text())
    page.screenshot(path=str(Path(artifacts_dir) / "captioning_space.png"), full_page=True)


def test_a_person_asks_a_question_about_an_image(page, captioning_space, examples):
    from playwright.sync_api import expect

    page.goto(captioning_space["url"], wait_until="networkidle")
    page.get_by_role("tab", name="Ask about an image").click()
    page.locator("#vqa-image input[type=file]").set_input_files(str(examples["images"][1]))
    page.locator("#vqa-image img").first.wait_for(timeout=30_000)
    page.locator("#vqa-question textarea").fill("Is this an animal?")
    page.locator("#vqa-button").click()
    page.locator("#vqa-status").get_by_text("prompt “Is this an animal?”").wait_for(timeout=60_000)
    expect(page.locator("#vqa-answer textarea")).not_to_have_value("", timeout=10_000)


def test_one_click_on_a_sound_example_captions_it(page, captioning_space, examples):
    from playwright.sync_api import expect

    page.goto(captioning_space["url"], wait_until="networkidle")
    page.get_by_role("tab", name="Caption a sound").click()
    page.get_by_text(f"🔊 {examples['references'][0]}").click()
    page.locator("#sound-status").get_by_text("Caption of the sound").wait_for(timeout=60_000)
    expect(page.locator("#sound-caption textarea")).not_to_have_value("", timeout=10_000)
    assert page.locator("#sound-audio audio, #sound-audio [data-testid^='waveform']").count() >= 1  # loaded


def test_a_bad_upload_shows_a_readable_message_in_the_page(page, captioning_space, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("these are notes, not pixels")
    page.goto(captioning_space["url"], wait_until="networkidle")
    page.locator("#caption-image input[type=file]").set_input_files(str(bad))
    page.locator("#caption-button").click()
    message = page.get_by_text("is not an image that can be read")
    message.first.wait_for(timeout=30_000)
    assert "Traceback" not in page.content()
