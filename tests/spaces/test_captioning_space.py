"""The captioning / VQA Space, served for real (a tiny random generator) and driven through `gradio_client` on every
endpoint. The tiny model writes random tokens: the tests check that the Space says exactly what the documented
`generate()` call says, and how it behaves, not the wording."""

import json
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from gradio_client import Client, handle_file
from PIL import Image

ENDPOINTS = {"/caption_image": ["Image"], "/answer_question": ["Image", "Question"], "/caption_sound": ["Sound (record or upload)"]}  # fmt: skip


@pytest.fixture(scope="module")
def client(captioning_space):
    return Client(captioning_space["url"], verbose=False)


@pytest.fixture(scope="module")
def examples(captioning_space):
    folders = list(Path(captioning_space["cache"]).glob("captioning-examples-test-*"))
    assert len(folders) == 1, folders  # one folder, named by split and the dataset's fingerprint
    saved = json.loads((folders[0] / "examples.json").read_text())
    return {
        "folder": folders[0],
        "images": [folders[0] / name for name in saved["images"]],
        "sounds": [folders[0] / name for name in saved["sounds"]],
        "references": saved["references"],
    }


@pytest.fixture(scope="module")
def reference(captioning_space):
    """What the model card's `generate()` call gives, in this process, for the same inputs."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = captioning_space["model"]
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)

    def generate(**media) -> str:
        inputs = processor(**media, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(
                **inputs, max_new_tokens=24, do_sample=False, eos_token_id=processor.end_of_turn_id,
                pad_token_id=processor.tokenizer.pad_token_id,
            )  # fmt: skip
        return processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[
            0
        ].strip()

    return generate


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_uploads")
    files = {
        "not_an_image": root / "notes.png",
        "huge_image": root / "huge.png",
        "empty_audio": root / "empty.wav",
        "long_audio": root / "ten_minutes.wav",
        "silent_audio": root / "silence.wav",
        "not_audio": root / "notes.wav",
        "zero_bytes": root / "nothing.png",
    }
    files["not_an_image"].write_text("these are notes, not pixels")
    files["not_audio"].write_text("these are notes, not samples")
    files["zero_bytes"].write_bytes(b"")
    soundfile.write(files["empty_audio"], np.zeros(0, dtype=np.float32), 16000)
    soundfile.write(files["long_audio"], np.full(16000 * 600, 0.1, dtype=np.float32), 16000)
    soundfile.write(files["silent_audio"], np.zeros(16000, dtype=np.float32), 16000)
    Image.new("RGB", (8000, 6000), "white").save(files["huge_image"])  # 48 MP, compresses to a small file
    return files


def caption_image(client, image):
    return client.predict(handle_file(str(image)) if image else None, api_name="/caption_image")


def answer_question(client, image, question):
    return client.predict(handle_file(str(image)) if image else None, question, api_name="/answer_question")


def caption_sound(client, audio):
    return client.predict(handle_file(str(audio)) if audio else None, api_name="/caption_sound")


def test_the_api_has_the_three_named_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == set(ENDPOINTS)  # the examples' events are not endpoints of their own
    for name, labels in ENDPOINTS.items():
        assert [p["label"] for p in endpoints[name]["parameters"]] == labels
        assert [r["label"] for r in endpoints[name]["returns"]] == [
            "Answer" if name == "/answer_question" else "Caption", "Status"
        ]  # fmt: skip


def test_caption_image_is_what_generate_says(client, examples, reference):
    for path in examples["images"]:
        caption, status = caption_image(client, path)
        assert caption == reference(images=[Image.open(path).convert("RGB")], text=None)
        assert caption and "Describe the image." not in caption  # only the new tokens, not the prompt
        assert status.startswith("Caption of the image · prompt “Describe the image.” · 24 tokens in ")
        assert "Stopped at the limit of 24 tokens." in status
    captions = {caption_image(client, path)[0] for path in examples["images"]}
    assert len(captions) > 1  # the gates are open: what the model writes depends on the image


def test_answer_question_is_what_generate_says_for_that_question(client, examples, reference):
    image = examples["images"][0]
    picture = Image.open(image).convert("RGB")
    answers = {}
    for question in ("What colour is the background?", "Is this an animal?"):
        answer, status = answer_question(client, image, f"  {question} \n")  # surrounding space is dropped
        assert answer == reference(images=[picture], text=[question])
        assert status.startswith(f"Answer · prompt “{question}” · ")
        answers[question] = answer
    assert answers["What colour is the background?"] != answers["Is this an animal?"]
    assert answers["Is this an animal?"] != caption_image(client, image)[0]


def test_caption_sound_is_what_generate_says_even_for_44khz_stereo(client, examples, reference, tmp_path):
    import torchaudio

    for path in examples["sounds"]:
        caption, status = caption_sound(client, path)
        wave, rate = soundfile.read(path, dtype="float32")
        assert caption == reference(audio=[wave], sampling_rate=rate)
        assert status.startswith("Caption of the sound · prompt “Describe the sound.” · ")
        assert "hears the first" not in status  # the tiny clips fit the tower's window
    wave, rate = soundfile.read(examples["sounds"][0], dtype="float32")
    louder = torchaudio.functional.resample(torch.from_numpy(wave), rate, 44100).numpy()
    soundfile.write(tmp_path / "stereo44k.wav", np.stack([louder, louder], axis=1), 44100)
    caption, _ = caption_sound(client, tmp_path / "stereo44k.wav")
    stereo, rate = soundfile.read(tmp_path / "stereo44k.wav", dtype="float32")  # as written: 16-bit samples
    assert rate == 44100 and caption == reference(audio=[stereo.mean(axis=1)], sampling_rate=rate)


def test_a_clip_longer_than_the_towers_window_is_captioned_with_a_note(client, tmp_path):
    rng = np.random.default_rng(0)
    soundfile.write(tmp_path / "two_seconds.wav", rng.standard_normal(32000).astype(np.float32) * 0.1, 16000)
    caption, status = caption_sound(client, tmp_path / "two_seconds.wav")
    assert caption and "The model hears the first 0.48 s of this 2.0 s clip." in status


@pytest.mark.parametrize(
    "endpoint, inputs, message",
    [
        ("caption_image", {"image": "not_an_image"}, "'notes.png' is not an image that can be read"),
        ("caption_image", {"image": "huge_image"}, "'huge.png' is 8000×6000 (48 MP); the limit is 40 MP"),
        ("caption_image", {"image": "zero_bytes"}, "'nothing.png' is empty (0 bytes); upload another file"),
        ("caption_image", {}, "Upload an image to caption"),
        ("answer_question", {"image": "not_an_image", "question": "What is this?"}, "is not an image that can be read"),  # fmt: skip
        ("answer_question", {"image": "example", "question": ""}, "Type a question about the image"),
        ("answer_question", {"image": "example", "question": " \n\t "}, "Type a question about the image"),
        ("answer_question", {"image": "example", "question": "why " * 100}, "The question is 399 characters long; the limit is 300"),  # fmt: skip
        ("answer_question", {"question": "What is this?"}, "Upload the image the question is about"),
        ("caption_sound", {"audio": "empty_audio"}, "'empty.wav' holds no samples"),
        ("caption_sound", {"audio": "long_audio"}, "'ten_minutes.wav' is 600.0 s long; the limit is 60 s"),
        ("caption_sound", {"audio": "silent_audio"}, "'silence.wav' is silent"),
        ("caption_sound", {"audio": "not_audio"}, "'notes.wav' is not audio that can be decoded"),
        ("caption_sound", {}, "Record or upload a sound to caption"),
    ],
    ids=[
        "image-not-an-image", "image-huge", "image-zero-bytes", "image-missing", "vqa-not-an-image",
        "vqa-empty-question", "vqa-blank-question", "vqa-long-question", "vqa-no-image", "sound-empty",
        "sound-too-long", "sound-silent", "sound-not-audio", "sound-missing",
    ],
)  # fmt: skip
def test_bad_inputs_get_a_readable_message_not_a_stack_trace(
    client, bad_files, examples, endpoint, inputs, message
):
    files = {**bad_files, "example": examples["images"][0]}
    image = files[inputs["image"]] if "image" in inputs else None
    audio = files[inputs["audio"]] if "audio" in inputs else None
    with pytest.raises(Exception) as raised:  # gradio_client's AppError carries the page's message
        if endpoint == "caption_image":
            caption_image(client, image)
        elif endpoint == "answer_question":
            answer_question(client, image, inputs["question"])
        else:
            caption_sound(client, audio)
    text = str(raised.value)
    assert type(raised.value).__name__ == "AppError"
    assert message in text and "Traceback" not in text and 'File "' not in text


def test_the_space_still_answers_after_the_bad_inputs(client, examples, reference):
    caption, _ = caption_image(client, examples["images"][1])
    assert caption == reference(images=[Image.open(examples["images"][1]).convert("RGB")], text=None)


def test_twenty_concurrent_users_are_all_served(captioning_space, examples, artifacts_dir, capsys):
    url = captioning_space["url"]
    expected = {}
    solo = Client(url, verbose=False)
    for index, path in enumerate(examples["images"]):
        expected[("image", index)] = caption_image(solo, path)[0]
        expected[("vqa", index)] = answer_question(solo, path, "What is this?")[0]
    for index, path in enumerate(examples["sounds"]):
        expected[("sound", index)] = caption_sound(solo, path)[0]

    def one_user(user: int) -> float:
        client = Client(url, verbose=False)
        kind = ("image", "vqa", "sound")[user % 3]
        index = user % len(examples["sounds" if kind == "sound" else "images"])
        started = time.perf_counter()
        if kind == "image":
            text, status = caption_image(client, examples["images"][index])
        elif kind == "vqa":
            text, status = answer_question(client, examples["images"][index], "What is this?")
        else:
            text, status = caption_sound(client, examples["sounds"][index])
        assert text == expected[(kind, index)] and " tokens in " in status  # no request saw another's media
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=20) as pool:
        latencies = sorted(pool.map(one_user, range(20)))
    wall = time.perf_counter() - started
    assert (
        len(latencies) == 20
    )  # every request answered (an exception in a thread would have been raised here)
    percentiles = {f"p{p}": latencies[min(19, int(round(p / 100 * 20)) - 1)] for p in (50, 90, 95, 100)}
    record = {"users": 20, "wall_seconds": wall, "mean": statistics.mean(latencies), **percentiles}
    (Path(artifacts_dir) / "captioning_space_concurrency.json").write_text(
        json.dumps(record, indent=2) + "\n"
    )
    with capsys.disabled():
        print(
            "\n20 concurrent gradio_client requests (image captions, answers, sound captions; queued, one at a time "
            "on the model): "
            + ", ".join(f"{k} {v:.2f} s" for k, v in percentiles.items())
            + f", all done in {wall:.1f} s"
        )


def test_every_tab_has_examples_from_the_dataset_that_run_on_click(captioning_space, examples):
    assert len(examples["images"]) == 3 and len(examples["sounds"]) == 3
    assert all(path.exists() for path in examples["images"] + examples["sounds"])
    assert examples["references"] == [
        "a red circle number 0",
        "a yellow square number 7",
        "a blue square number 6",
    ]
    with urllib.request.urlopen(captioning_space["url"] + "config", timeout=10) as response:
        config = json.load(response)
    datasets = [c for c in config["components"] if c.get("type") == "dataset"]
    assert len(datasets) == 3  # one per tab
    samples = [d["props"]["samples"] for d in datasets]
    assert [len(s) for s in samples] == [3, 3, 3]
    assert [row[1] for row in samples[1]] == [
        "What is this?",
        "What colour is the background?",
        "Is this an animal?",
    ]
    assert datasets[2]["props"]["sample_labels"] == [f"🔊 {text}" for text in examples["references"]]
    # run_on_click: a click on an example loads it, then runs the tab's function (an event chained to the load).
    ids = {d["id"] for d in datasets}
    loads = [i for i, dep in enumerate(config["dependencies"]) if any(t[0] in ids for t in dep["targets"])]
    assert len(loads) == 3
    chained = [dep for dep in config["dependencies"] if dep.get("trigger_after") in loads]
    assert sorted(dep["api_name"].rsplit("_", 1)[0] for dep in chained) == sorted(
        ["caption_image", "answer_question", "caption_sound"]
    )


def test_the_examples_are_written_once_and_read_back(captioning_space, examples, monkeypatch):
    from recipes.serving import captioning

    def no_rewrite(*args, **kwargs):
        raise AssertionError("the examples were written again instead of read from the cache")

    monkeypatch.setattr(captioning, "_write_examples", no_rewrite)
    again = captioning.load_or_write_examples(captioning_space["dataset"], "test", captioning_space["cache"], audio_column="audio")  # fmt: skip
    assert again.folder == examples["folder"] and [Path(p) for p in again.images] == examples["images"]
    with pytest.raises(AssertionError, match="written again"):  # another split is other examples
        captioning.load_or_write_examples(
            captioning_space["dataset"], "validation", captioning_space["cache"]
        )


@pytest.mark.parametrize(
    "model, message",
    [
        ("not-trained-yet", "Cannot load a generator from"),
        ("run-under-way", "holds no saved model (no config.json): wait for its training run to finish"),
    ],
)
def test_a_missing_model_stops_the_space_with_a_readable_message(tmp_path, model, message):
    from tests.runs import ENV, REPO

    (tmp_path / "run-under-way").mkdir()  # a training run's output_dir before the model is saved
    (tmp_path / "run-under-way" / "train.log").write_text("step 1\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "spaces/captioning-vqa/app.py"), "--model", str(tmp_path / model),
         "--dataset", ""],
        cwd=REPO, env={**ENV, "GRADIO_ANALYTICS_ENABLED": "False"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert message in result.stderr and "--model" in result.stderr


def test_the_space_card_has_the_spaces_metadata():
    import gradio
    from huggingface_hub import SpaceCard

    from tests.runs import REPO

    folder = REPO / "spaces" / "captioning-vqa"
    data = SpaceCard.load(folder / "README.md").data
    assert data.sdk == "gradio" and data.sdk_version == gradio.__version__  # the version the tests ran
    assert (folder / data.app_file).exists() and data.license == "apache-2.0" and data.models
    assert data.title and data.emoji and data.colorFrom and data.colorTo
