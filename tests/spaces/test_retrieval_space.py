"""The retrieval Space, served for real and driven through `gradio_client` on every endpoint."""

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from gradio_client import Client, handle_file
from PIL import Image

K = 4


@pytest.fixture(scope="module")
def client(retrieval_space):
    return Client(retrieval_space["url"], verbose=False)


@pytest.fixture(scope="module")
def index_files(retrieval_space):
    folders = list(Path(retrieval_space["cache"]).glob("test-*"))
    assert len(folders) == 1, folders  # one index, named by split and (model, dataset) digest
    items = json.loads((folders[0] / "items.json").read_text())
    return folders[0], items


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_uploads")
    files = {
        "not_an_image": root / "notes.png",
        "empty_audio": root / "empty.wav",
        "long_audio": root / "ten_minutes.wav",
        "silent_audio": root / "silence.wav",
        "huge_image": root / "huge.png",
        "not_audio": root / "notes.wav",
    }
    files["not_an_image"].write_text("these are notes, not pixels")
    files["not_audio"].write_text("these are notes, not samples")
    soundfile.write(files["empty_audio"], np.zeros(0, dtype=np.float32), 16000)
    soundfile.write(files["long_audio"], np.full(16000 * 600, 0.1, dtype=np.float32), 16000)
    soundfile.write(files["silent_audio"], np.zeros(16000, dtype=np.float32), 16000)
    Image.new("RGB", (8000, 6000), "white").save(files["huge_image"])  # 48 MP, compresses to a small file
    return files


def search(client, text="", audio=None, image=None, k=K):
    return client.predict(
        text, handle_file(str(audio)) if audio else None, handle_file(str(image)) if image else None, k,
        api_name="/search",
    )  # fmt: skip


def test_the_api_has_the_search_and_zero_shot_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/search", "/zero_shot"}
    assert [p["label"] for p in endpoints["/search"]["parameters"]] == [
        "Text", "Audio (record or upload)", "Image", "Results"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "parts", [c for n in (1, 2, 3) for c in combinations(("text", "audio", "image"), n)], ids="+".join
)
def test_any_subset_of_modalities_is_a_query(client, index_files, parts):
    folder, items = index_files
    item = items[3]
    status, gallery, table, *players = search(
        client,
        text=item["text"] if "text" in parts else "",
        audio=folder / item["audio"] if "audio" in parts else None,
        image=folder / item["image"] if "image" in parts else None,
    )
    assert f"Query: **{' + '.join(parts)}**" in status
    assert ("Heard in the audio" in status) == ("audio" in parts)  # the model transcribes the clip itself
    assert len(gallery) == K and len(table["data"]) == K
    scores = [float(entry["caption"].split(" · ")[1]) for entry in gallery]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    assert all(Path(entry["image"]).suffix == ".png" for entry in gallery)
    assert all(p["value"] for p in players)  # three playable audio results
    if parts == ("text",):  # the query's own description is in the index: it ranks first, at similarity 1
        assert table["data"][0][2] == item["text"] and table["data"][0][1] == pytest.approx(1.0, abs=1e-3)
    if parts == ("image",):
        assert gallery[0]["caption"].endswith(item["text"]) and scores[0] == pytest.approx(1.0, abs=2e-3)


def test_zero_shot_ranks_the_labels_of_an_image_and_of_a_sound(client, index_files):
    folder, items = index_files
    labels = "red, green, blue, yellow"
    for image, audio in ((folder / items[0]["image"], None), (None, folder / items[0]["audio"])):
        ranking = client.predict(
            handle_file(str(image)) if image else None, handle_file(str(audio)) if audio else None, labels,
            api_name="/zero_shot",
        )  # fmt: skip
        confidences = [c["confidence"] for c in ranking["confidences"]]
        assert sorted(c["label"] for c in ranking["confidences"]) == sorted(labels.split(", "))
        assert confidences == sorted(confidences, reverse=True) and sum(confidences) == pytest.approx(
            1.0, abs=1e-4
        )
        assert ranking["label"] == ranking["confidences"][0]["label"]


@pytest.mark.parametrize(
    "endpoint, inputs, message",
    [
        ("search", {"image": "not_an_image"}, "'notes.png' is not an image that can be read"),
        ("search", {"image": "huge_image"}, "'huge.png' is 8000×6000 (48 MP); the limit is 40 MP"),
        ("search", {"audio": "empty_audio"}, "'empty.wav' holds no samples"),
        ("search", {"audio": "long_audio"}, "'ten_minutes.wav' is 600.0 s long; the limit is 60 s"),
        ("search", {"audio": "silent_audio"}, "'silence.wav' is silent"),
        ("search", {"audio": "not_audio"}, "'notes.wav' is not audio that can be decoded"),
        ("search", {}, "Give a query"),
        ("zero_shot", {"image": "not_an_image", "labels": "cat, dog"}, "is not an image that can be read"),
        ("zero_shot", {"image": "index", "labels": "cat"}, "two or more candidate labels"),
        ("zero_shot", {"labels": "cat, dog"}, "Give either an image or a sound"),
    ],
    ids=lambda value: value if isinstance(value, str) and " " not in value else None,
)
def test_bad_inputs_get_a_readable_message_not_a_stack_trace(
    client, bad_files, index_files, endpoint, inputs, message
):
    folder, items = index_files
    files = {**bad_files, "index": folder / items[0]["image"]}
    image = handle_file(str(files[inputs["image"]])) if "image" in inputs else None
    audio = handle_file(str(files[inputs["audio"]])) if "audio" in inputs else None
    with pytest.raises(Exception) as raised:  # gradio_client's AppError carries the page's message
        if endpoint == "search":
            client.predict("", audio, image, K, api_name="/search")
        else:
            client.predict(image, audio, inputs["labels"], api_name="/zero_shot")
    text = str(raised.value)
    assert type(raised.value).__name__ == "AppError"
    assert message in text and "Traceback" not in text and 'File "' not in text


def test_twenty_concurrent_users_are_all_served(retrieval_space, index_files, artifacts_dir, capsys):
    folder, items = index_files
    url = retrieval_space["url"]

    def one_user(user: int) -> float:
        client = Client(url, verbose=False)
        item = items[user % len(items)]
        started = time.perf_counter()
        audio = folder / item["audio"] if user % 2 else None
        status, gallery, *_ = search(client, text=item["text"], audio=audio, k=3)
        assert len(gallery) == 3 and "Query:" in status
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=20) as pool:
        latencies = sorted(pool.map(one_user, range(20)))
    wall = time.perf_counter() - started
    assert len(latencies) == 20  # every query answered (an exception in a thread would have been raised here)
    percentiles = {f"p{p}": latencies[min(19, int(round(p / 100 * 20)) - 1)] for p in (50, 90, 95, 100)}
    record = {"users": 20, "wall_seconds": wall, "mean": statistics.mean(latencies), **percentiles}
    (Path(artifacts_dir) / "retrieval_space_concurrency.json").write_text(json.dumps(record, indent=2) + "\n")
    with capsys.disabled():
        print(
            "\n20 concurrent gradio_client queries (text, or text + speech; one at a time on the model, queued): "
            + ", ".join(f"{k} {v:.2f} s" for k, v in percentiles.items())
            + f", all done in {wall:.1f} s"
        )


@pytest.fixture(scope="module")
def service(retrieval_space, tiny_run, tmp_path_factory):
    """The service in this process, over the index the server built, with a tiny late-fusion model for zero-shot."""
    import torch

    from modeling.late_fusion import LateFusionModel, LateFusionProcessor
    from recipes.serving import RetrievalService
    from tests.tiny import tiny_late_fusion_config, tiny_processor

    root = tmp_path_factory.mktemp("late_fusion")
    torch.manual_seed(0)
    parts = tiny_processor(root / "parts")
    LateFusionModel(tiny_late_fusion_config()).save_pretrained(root / "model")
    LateFusionProcessor(
        tokenizer=parts.tokenizer,
        feature_extractor=parts.feature_extractor,
        image_processor=parts.image_processor,
    ).save_pretrained(root / "model")
    return RetrievalService(
        tiny_run["run"], tiny_run["dataset"], "test", retrieval_space["cache"], zero_shot_model=root / "model"
    )


def test_the_index_is_kept_on_disk_and_read_back(
    service, index_files, retrieval_space, tiny_run, monkeypatch
):
    from recipes.serving import RetrievalIndex, RetrievalService

    folder, items = index_files

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the index was rebuilt instead of read from the cache")

    monkeypatch.setattr(RetrievalIndex, "_build", no_rebuild)
    again = RetrievalService(tiny_run["run"], tiny_run["dataset"], "test", retrieval_space["cache"])
    assert again.index.folder == service.index.folder == folder and len(again.index) == len(items) == 8
    for modality in ("text", "audio", "image"):
        assert torch.equal(again.index.embeddings[modality], service.index.embeddings[modality])
    # Another split (or model, or dataset) is another index: built, not mistaken for this one.
    with pytest.raises(AssertionError, match="rebuilt"):
        RetrievalService(tiny_run["run"], tiny_run["dataset"], "validation", retrieval_space["cache"])


def test_zero_shot_with_a_late_fusion_model_is_the_stock_pipeline_even_for_44khz_audio(
    service, index_files, tmp_path
):
    import torch
    import torchaudio

    from recipes.evaluation.zero_shot import zero_shot_pipeline

    folder, items = index_files
    labels = ["red", "green", "blue"]
    modality, ranked = service.zero_shot(", ".join(labels), image_path=str(folder / items[1]["image"]))
    expected = zero_shot_pipeline(service.zero_shot_model, "image")(
        Image.open(folder / items[1]["image"]).convert("RGB"), candidate_labels=labels,
        hypothesis_template="This is a picture of {}.",
    )  # fmt: skip
    assert modality == "image"
    assert [(label, pytest.approx(score, abs=1e-6)) for label, score in ranked] == [
        (r["label"], r["score"]) for r in expected
    ]
    wave, rate = soundfile.read(folder / items[1]["audio"], dtype="float32")
    louder = torchaudio.functional.resample(torch.from_numpy(wave), rate, 44100).numpy()
    soundfile.write(tmp_path / "44k.wav", louder, 44100)
    modality, ranked = service.zero_shot("rain, siren, dog", audio_path=str(tmp_path / "44k.wav"))
    expected = zero_shot_pipeline(service.zero_shot_model, "audio")(
        wave, candidate_labels=["rain", "siren", "dog"], hypothesis_template="This is a sound of {}."
    )
    assert modality == "audio" and [label for label, _ in ranked] == [r["label"] for r in expected]
    assert [score for _, score in ranked] == pytest.approx([r["score"] for r in expected], abs=2e-2)


def test_zero_shot_without_a_late_fusion_model_is_the_retrieval_models_scaled_similarity(
    service, index_files
):
    import torch

    folder, items = index_files
    labels = ["red", "green", "blue", "yellow"]
    service.zero_shot_model, kept = None, service.zero_shot_model
    try:
        _, ranked = service.zero_shot(", ".join(labels), image_path=str(folder / items[1]["image"]))
    finally:
        service.zero_shot_model = kept
    model, processor = service.model, service.processor
    with torch.no_grad():
        text = model.get_text_features(
            **processor(text=[f"This is a picture of {x}." for x in labels])
        ).pooler_output
        image = Image.open(folder / items[1]["image"]).convert("RGB")
        picture = model.get_image_features(**processor(images=[image])).pooler_output
        expected = (model.inverse_temperature() * picture @ text.T).softmax(-1)[0].tolist()
    assert dict(ranked) == pytest.approx(dict(zip(labels, expected, strict=True)), abs=1e-5)


def test_the_space_card_has_the_spaces_metadata():
    import gradio
    from huggingface_hub import SpaceCard

    from tests.runs import REPO

    folder = REPO / "spaces" / "cman-retrieval"
    data = SpaceCard.load(folder / "README.md").data
    assert data.sdk == "gradio" and data.sdk_version == gradio.__version__  # the version the tests ran
    assert (folder / data.app_file).exists() and data.license == "apache-2.0" and data.models
