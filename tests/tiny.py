"""Tiny towers and CMAN configs built in code, and tiny random checkpoints saved in the real formats.

Nothing here downloads: the tokenizer is a byte-level BPE trained on a few sentences, the towers are random.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTModel,
    RobertaConfig,
    RobertaModel,
    RobertaTokenizer,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
    WhisperConfig,
    WhisperFeatureExtractor,
)

from modeling.cman import CmanConfig, CmanProcessor

CORPUS = [
    "a dog barks at the red fire truck",
    "a cat sleeps on a chair in the sun",
    "the bird sings a song in the tree",
    "seven horses run across a green field",
    "an old car drives down the wet street at night",
]
TINY_TOWER = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
AUDIO_FRAMES, MEL_BINS, IMAGE_SIZE = 48, 16, 32
# The fusion transformer of every tiny CMAN (one layer; `tiny_cman_config` uses two) and its shared space.
TINY_FUSION = dict(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
    dropout=0.0,
)  # fmt: skip
TINY_PROJECTION_DIM = 16


def tiny_text_config() -> RobertaConfig:
    return RobertaConfig(
        vocab_size=300, max_position_embeddings=40, type_vocab_size=1, pad_token_id=1, **TINY_TOWER
    )


def tiny_audio_config() -> ASTConfig:
    return ASTConfig(
        max_length=AUDIO_FRAMES, num_mel_bins=MEL_BINS, frequency_stride=8, time_stride=8, **TINY_TOWER
    )


def tiny_whisper_config(max_source_positions: int = 50) -> WhisperConfig:
    return WhisperConfig(
        vocab_size=100,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        num_mel_bins=MEL_BINS,
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=37,
        decoder_layers=1,
        decoder_attention_heads=4,
        decoder_ffn_dim=37,
        max_source_positions=max_source_positions,
        max_target_positions=20,
        init_std=0.5,  # large random weights: the decoder's output then depends on the audio
    )


def tiny_image_config() -> ViTConfig:
    return ViTConfig(image_size=IMAGE_SIZE, patch_size=8, **TINY_TOWER)


def tiny_cman_config(fusion: dict | None = None, **overrides) -> CmanConfig:
    """A tiny CMAN on random RoBERTa / AST / ViT towers; `fusion` overrides fields of the fusion transformer."""
    fields = dict(
        text_config=tiny_text_config(),
        audio_config=tiny_audio_config(),
        image_config=tiny_image_config(),
        fusion_encoder_config={**TINY_FUSION, "num_hidden_layers": 2, **(fusion or {})},
        projection_dim=TINY_PROJECTION_DIM,
    )
    fields.update(overrides)
    return CmanConfig(**fields)


def tiny_late_fusion_config(**overrides):
    """A tiny late-fusion model on random RoBERTa / AST / ViT towers."""
    from modeling.late_fusion import LateFusionConfig

    fields = dict(
        text_config=tiny_text_config(),
        audio_config=tiny_audio_config(),
        image_config=tiny_image_config(),
        projection_dim=TINY_PROJECTION_DIM,
    )
    fields.update(overrides)
    return LateFusionConfig(**fields)


def tiny_tokenizer(folder: str | Path) -> RobertaTokenizer:
    """A byte-level BPE tokenizer (RoBERTa format) trained on `CORPUS`, saved to `folder`."""
    from tokenizers import ByteLevelBPETokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS * 4, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    vocab, merges = bpe.get_vocab(), _merges(bpe)
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _merges(bpe) -> list[tuple[str, str]]:
    import json

    return [
        tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
        for m in json.loads(bpe.to_str())["model"]["merges"]
    ]


def tiny_processor(folder: str | Path) -> CmanProcessor:
    return CmanProcessor(
        tokenizer=tiny_tokenizer(Path(folder) / "tokenizer"),
        feature_extractor=ASTFeatureExtractor(num_mel_bins=MEL_BINS, max_length=AUDIO_FRAMES),
        image_processor=ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
    )


def save_tiny_pretrained_towers(root: str | Path) -> dict[str, Path]:
    """Save random tiny RoBERTa / AST / ViT checkpoints (+ preprocessing) in the formats of the seed's Hub models."""
    root = Path(root)
    paths = {"text": root / "roberta", "audio": root / "ast", "image": root / "vit"}
    RobertaModel(tiny_text_config()).save_pretrained(paths["text"])
    tiny_tokenizer(paths["text"])
    ASTModel(tiny_audio_config()).save_pretrained(paths["audio"])
    ASTFeatureExtractor(num_mel_bins=MEL_BINS, max_length=AUDIO_FRAMES).save_pretrained(paths["audio"])
    ViTModel(tiny_image_config()).save_pretrained(paths["image"])
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(paths["image"])
    return paths


def save_tiny_whisper(folder: str | Path, max_source_positions: int = 50) -> Path:
    """A random tiny full Whisper (encoder + decoder) checkpoint with its generation config, feature extractor and
    a tokenizer (the tiny byte-level BPE: it decodes the decoder's ids, all below its vocabulary size)."""
    from transformers import WhisperForConditionalGeneration

    folder = Path(folder)
    WhisperForConditionalGeneration(tiny_whisper_config(max_source_positions)).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=MEL_BINS, chunk_length=max_source_positions // 50).save_pretrained(
        folder
    )
    tiny_tokenizer(folder)
    return folder


def tiny_transcribing_config(whisper: str | Path, text: str | Path | None = None, **overrides) -> CmanConfig:
    """A tiny CMAN whose Whisper tower (saved by `save_tiny_whisper`) also transcribes the audio; `text` names a
    saved tiny text tower (its tokenizer reads the transcripts), else a random one is built."""
    fields = dict(
        fusion_encoder_config=TINY_FUSION,
        projection_dim=TINY_PROJECTION_DIM,
        transcribe_audio=True,
        speech_recognizer_config={"max_new_tokens": 6},
    )
    fields.update(overrides)
    return CmanConfig.from_towers(
        text=str(text) if text else tiny_text_config(),
        audio=str(whisper),
        image=tiny_image_config(),
        **fields,
    )


def tiny_transcribing_processor(folder: str | Path, whisper: str | Path) -> CmanProcessor:
    """The processor of `tiny_transcribing_config`: tiny text tokenizer, the Whisper folder's feature extractor, tiny
    ViT image processor."""
    return CmanProcessor(
        tokenizer=tiny_tokenizer(Path(folder) / "tokenizer"),
        feature_extractor=WhisperFeatureExtractor.from_pretrained(whisper),
        image_processor=ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
    )


def tiny_transcribing_model(root: str | Path):
    """A tiny CMAN whose random tiny Whisper transcribes (deterministically), with its processor; the model reads
    its transcripts with the processor's tokenizer."""
    from transformers import AutoTokenizer

    from modeling.cman import CmanModel

    root = Path(root)
    whisper = save_tiny_whisper(root / "whisper")
    processor = tiny_transcribing_processor(root / "processor", whisper)
    model = CmanModel.from_encoders_pretrained(tiny_transcribing_config(whisper)).eval()
    model.set_transcription_tokenizers(AutoTokenizer.from_pretrained(whisper), processor.tokenizer)
    return model, processor


def random_batch(batch_size: int = 3, seed: int = 0) -> dict:
    """Raw inputs for the processor: captions, 16 kHz waves of different lengths, RGB images."""
    rng = np.random.default_rng(seed)
    texts = [CORPUS[i % len(CORPUS)] for i in range(batch_size)]
    waves = [
        rng.standard_normal(int(16000 * (0.2 + 0.1 * i))).astype(np.float32) * 0.1 for i in range(batch_size)
    ]
    images = [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(batch_size)]
    return {"text": texts, "audio": waves, "images": images, "sampling_rate": 16000}


COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (240, 220, 30)}
SHAPES = ("circle", "square", "stripe")


def tiny_retrieval_rows(count: int, seed: int = 0) -> list[dict]:
    """Rows of a small tri-modal dataset: a caption, a 16 kHz tone whose pitch follows the colour, and an image of
    the coloured shape. Encoded as WAV / PNG bytes, as a `datasets` Audio / Image column stores them."""
    import io

    import soundfile
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        colour = list(COLOURS)[index % len(COLOURS)]
        shape = SHAPES[(index // len(COLOURS)) % len(SHAPES)]
        image = Image.new("RGB", (48, 48), "white")
        draw = ImageDraw.Draw(image)
        if shape == "circle":
            draw.ellipse((8, 8, 40, 40), fill=COLOURS[colour])
        elif shape == "square":
            draw.rectangle((10, 10, 38, 38), fill=COLOURS[colour])
        else:
            draw.rectangle((0, 18, 48, 30), fill=COLOURS[colour])
        png = io.BytesIO()
        image.save(png, format="PNG")
        seconds = 0.3 + 0.1 * rng.random()
        t = np.arange(int(16000 * seconds)) / 16000
        tone = (
            0.3
            * np.sin(2 * np.pi * (220 + 110 * list(COLOURS).index(colour)) * t)
            * (1 + SHAPES.index(shape))
        )
        wav = io.BytesIO()
        soundfile.write(wav, (tone / 3).astype(np.float32), 16000, format="WAV")
        rows.append(
            {
                "id": f"item-{seed}-{index}",
                "text": f"a {colour} {shape} number {index}",
                "audio": {"bytes": wav.getvalue(), "path": None},
                "image": {"bytes": png.getvalue(), "path": None},
            }
        )
    return rows


def save_tiny_retrieval_dataset(folder: str | Path, sizes: dict[str, int] | None = None) -> Path:
    """A `DatasetDict` with text / Audio / Image columns saved with `save_to_disk`."""
    import datasets

    sizes = sizes or {"train": 16, "validation": 8, "test": 8}
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "audio": datasets.Audio(sampling_rate=16000),
            "image": datasets.Image(),
        }
    )
    splits = {
        name: datasets.Dataset.from_list(tiny_retrieval_rows(count, seed=i), features=features)
        for i, (name, count) in enumerate(sizes.items())
    }
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return Path(folder)


def tiny_vqa_rows(count: int, seed: int = 0) -> list[dict]:
    """Questions about the images of `tiny_retrieval_rows` (colour, shape, a yes/no and a count), with 10 answers
    each, in the stamps VQA layout."""
    rows = []
    for index, item in enumerate(tiny_retrieval_rows(count, seed)):
        _, colour, shape, _, _ = item["text"].split()
        kind = index % 3
        if kind == 0:
            question, answers, answer_type = "what colour is it?", [colour] * 9 + ["dark"], "other"
        elif kind == 1:
            yes = shape == "circle"
            question, answers, answer_type = "is it a circle?", ["yes" if yes else "no"] * 10, "yes/no"
        else:
            number = str(1 + SHAPES.index(shape))
            question, answers, answer_type = "how many things are there?", [number] * 10, "number"
        rows.append(
            {
                "question_id": f"q-{seed}-{index}",
                "image": item["image"],
                "question": question,
                "answers": answers,
                "multiple_choice_answer": answers[0],
                "answer_type": answer_type,
            }
        )
    return rows


def save_tiny_vqa_dataset(folder: str | Path, sizes: dict[str, int] | None = None) -> Path:
    """A VQA `DatasetDict` (question, 10 answers, answer type, Image) saved with `save_to_disk`."""
    import datasets

    sizes = sizes or {"train": 24, "validation": 9, "test": 9}
    features = datasets.Features(
        {
            "question_id": datasets.Value("string"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answers": datasets.List(datasets.Value("string")),
            "multiple_choice_answer": datasets.Value("string"),
            "answer_type": datasets.Value("string"),
        }
    )
    splits = {
        name: datasets.Dataset.from_list(tiny_vqa_rows(count, seed=i), features=features)
        for i, (name, count) in enumerate(sizes.items())
    }
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return Path(folder)


# ----------------------------------------------------------------------------------------------- generator family
#: SmolLM2-135M-Instruct's chat template (ChatML with a default system turn), which the tiny decoder tokenizer carries.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_decoder_tokenizer(folder: str | Path):
    """A byte-level BPE (GPT-2 / SmolLM format) trained on `CORPUS` and the chat words, with ChatML special tokens
    (`<|im_end|>` ends a turn and pads) and SmolLM2's chat template, saved to `folder`."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [*CORPUS, "system user assistant You are a helpful assistant describe the image sound what colour"]
        * 4,
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_decoder_config(**overrides):
    """A 4-layer Llama decoder over the tiny decoder tokenizer's 300 ids (`<|im_end|>` = 2 ends and pads)."""
    from transformers import LlamaConfig

    fields = dict(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, bos_token_id=1,
        eos_token_id=2, pad_token_id=2,
    )  # fmt: skip
    fields.update(overrides)
    return LlamaConfig(**fields)


def tiny_gated_xattn_config(**overrides):
    """A tiny generator: the tiny Llama decoder with gated blocks before layers 1 and 3, tiny AST / ViT towers."""
    from modeling.gated_xattn import GatedXAttnConfig

    block = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, dropout=0.0)
    fields = dict(
        text_config=tiny_decoder_config(),
        audio_config=tiny_audio_config(),
        image_config=tiny_image_config(),
        resampler_config={**block, "num_hidden_layers": 2},
        cross_attention_config={**block, "num_hidden_layers": 1},
        num_latents=4,
        cross_attention_every=2,
    )
    fields.update(overrides)
    return GatedXAttnConfig(**fields)


def tiny_gated_xattn_processor(folder: str | Path):
    from modeling.gated_xattn import GatedXAttnProcessor

    return GatedXAttnProcessor(
        tokenizer=tiny_decoder_tokenizer(Path(folder) / "tokenizer"),
        feature_extractor=ASTFeatureExtractor(num_mel_bins=MEL_BINS, max_length=AUDIO_FRAMES),
        image_processor=ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
    )


def save_tiny_decoder(folder: str | Path) -> Path:
    """A random tiny Llama causal LM with the tiny decoder tokenizer, in the Hub layout of SmolLM2-135M-Instruct."""
    from transformers import LlamaForCausalLM

    folder = Path(folder)
    LlamaForCausalLM(tiny_decoder_config()).save_pretrained(folder)
    tiny_decoder_tokenizer(folder)
    return folder
