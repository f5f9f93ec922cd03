"""The untrained ASR cascade, a reference for text <-> speech retrieval: Whisper transcribes the speech (greedy,
nothing trained) and frozen MiniLM compares transcript and description by the cosine of their mean-pooled
embeddings. What a model built on the same towers should at least reach on text <-> speech."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from modeling.common.processing import whisper_window_feature_extractor
from modeling.common.speech import load_pretrained_recognizer_state, quiet_generation_logs
from modeling.common.towers import WHISPER_TOKENS_PER_SECOND


def transcribe(
    waves: list[np.ndarray],
    whisper_dir: str,
    batch_size: int,
    window_seconds: float = 30.0,
    repetition_penalty: float = 1.0,
    max_new_tokens: int = 64,
) -> list[str]:
    """Greedy transcripts; a window under 30 s slices the encoder's positions as CMAN's recogniser does."""
    from transformers import (
        AutoConfig,
        AutoTokenizer,
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    config = AutoConfig.from_pretrained(whisper_dir)
    config.max_source_positions = round(window_seconds * WHISPER_TOKENS_PER_SECOND)
    model = WhisperForConditionalGeneration(config).eval()
    load_pretrained_recognizer_state(model, whisper_dir)
    model.generation_config = GenerationConfig.from_pretrained(whisper_dir)
    feature_extractor = whisper_window_feature_extractor(
        WhisperFeatureExtractor.from_pretrained(whisper_dir), window_seconds
    )
    tokenizer = AutoTokenizer.from_pretrained(whisper_dir)
    transcripts = []
    for start in tqdm(range(0, len(waves), batch_size), desc="Transcribing", unit="batch"):
        features = feature_extractor(
            waves[start : start + batch_size], sampling_rate=16_000, return_tensors="pt"
        ).input_features
        with torch.no_grad(), quiet_generation_logs():
            ids = model.generate(
                features,
                max_new_tokens=max_new_tokens,
                repetition_penalty=repetition_penalty,
                do_sample=False,
            )
        transcripts += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [t.strip() for t in transcripts]


def embed(text_lists: list[list[str]], minilm_dir: str) -> list[torch.Tensor]:
    """Mean-pooled, L2-normalised MiniLM embeddings of each list of texts (the model is loaded once)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(minilm_dir), AutoModel.from_pretrained(minilm_dir).eval()
    embeddings = []
    for texts in text_lists:
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None]
        embeddings.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return embeddings


def cascade_embeddings(
    texts: list[str],
    waves: list[np.ndarray],
    towers: str,
    window_seconds: float = 5.0,
    repetition_penalty: float = 1.5,
    max_new_tokens: int = 24,
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """`(text embeddings, speech embeddings, transcripts)` of the cascade; `towers` is the folder of
    `python -m recipes.towers`. The defaults are the settings of the recogniser inside the models of the zoo."""
    transcripts = transcribe(
        waves, f"{towers}/whisper-tiny-en", batch_size, window_seconds, repetition_penalty, max_new_tokens
    )
    text_embeds, speech_embeds = embed([texts, transcripts], f"{towers}/minilm-l6")
    return text_embeds, speech_embeds, transcripts
