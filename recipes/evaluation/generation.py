"""Evaluation of the generator family: captions and open-ended answers generated with `generate()`, scored with the
captioning metrics (BLEU-4, METEOR, ROUGE-L, CIDEr-D) and VQA accuracy, beside two baselines run on the same rows:

- the **frozen decoder without the media** (the pretrained causal LM alone, prompted the same way): what the
  decoder says before it learnt to look;
- the **retrieval baseline** (captioning): the description of the nearest training image (or sound) under a
  retrieval model of this zoo (CMAN), i.e. no generation at all.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import datasets
import torch
from tqdm.auto import tqdm

from recipes.data.captioning import TASK_MEDIA, GenerationCollator
from recipes.evaluation.vqa import vqa_accuracy

logger = logging.getLogger(__name__)


@torch.no_grad()
def generate_texts(
    model,
    processor,
    dataset: datasets.Dataset,
    task: str,
    columns: dict,
    batch_size: int = 16,
    max_new_tokens: int = 24,
    num_beams: int = 1,
    without_media: bool = False,
    description: str | None = None,
) -> list[str]:
    """Greedy (or beam) generations of `model` for every row of `dataset`: the caption of its image or sound, or the
    answer to its question. `without_media=True` gives the same prompts and no media (the model then is its decoder:
    the closed-gate path); `model` may also be a plain causal LM, which never reads media."""
    model.eval()
    collator = GenerationCollator(processor, task, with_targets=False, **columns)
    eos = processor.end_of_turn_id
    outputs: list[str] = []
    for start in tqdm(
        range(0, len(dataset), batch_size), desc=description or f"Generating ({task})", leave=False
    ):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        if without_media:
            prompts, _ = collator.prompts_and_targets(rows)
            default = processor.image_prompt if TASK_MEDIA[task] == "image" else processor.audio_prompt
            batch = processor(text=prompts or [default] * len(rows), return_tensors="pt")
        else:
            batch = collator(rows)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        generated = model.generate(
            **batch, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False, eos_token_id=eos,
            pad_token_id=processor.tokenizer.pad_token_id,
        )  # fmt: skip
        new_tokens = generated[:, batch["input_ids"].shape[1] :]
        outputs += [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]
    return outputs


def references_of(dataset: datasets.Dataset, task: str, columns: dict) -> list[list[str]]:
    """The reference texts of every row: its description (captioning) or its ten answers (VQA)."""
    if task == "vqa":
        return [list(answers) for answers in dataset[columns["answers_column"]]]
    return [[text] for text in dataset[columns["text_column"]]]


def score(task: str, predictions: Sequence[str], references: list[list[str]], dataset=None) -> dict:
    """Captioning metrics, or VQA accuracy per answer type (with `answer_type` from `dataset`)."""
    if task == "vqa":
        types = (
            list(dataset["answer_type"])
            if dataset is not None and "answer_type" in dataset.column_names
            else None
        )
        return vqa_accuracy(predictions, references, types)
    from recipes.evaluation.captioning import caption_metrics

    return caption_metrics(list(predictions), references)


def evaluate_generation(
    model, processor, dataset, task: str, columns: dict, batch_size: int = 16, max_new_tokens: int = 24,
    num_beams: int = 1, without_media: bool = False, examples: int = 8,
) -> dict:  # fmt: skip
    """Generate for every row, score against the references, and keep a few examples."""
    predictions = generate_texts(
        model, processor, dataset, task, columns, batch_size, max_new_tokens, num_beams, without_media
    )
    references = references_of(dataset, task, columns)
    result = score(task, predictions, references, dataset)
    result["num_rows"] = len(dataset)
    result["examples"] = [
        {"prediction": p, "references": sorted(set(r))[:3], **({"question": q} if task == "vqa" else {})}
        for p, r, q in list(zip(predictions, references, _prompts(dataset, task, columns)))[:examples]
    ]
    result["predictions"] = predictions
    return result


def _prompts(dataset, task, columns) -> list[str | None]:
    return list(dataset[columns["text_column"]]) if task == "vqa" else [None] * len(dataset)


# ------------------------------------------------------------------------------------------------ baselines
@functools.lru_cache(maxsize=2)
def load_decoder(name_or_path: str):
    """The frozen decoder, loaded once for every task it answers."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(name_or_path).eval()


@functools.lru_cache(maxsize=2)
def load_retriever(name_or_path: str):
    """The retrieval model of the nearest-caption baseline and its processor, loaded once."""
    from recipes.evaluation.retrieval import load_model_and_processor

    return load_model_and_processor(name_or_path)


def frozen_decoder_baseline(
    decoder_name_or_path: str, processor, dataset, task: str, columns: dict, batch_size: int = 16,
    max_new_tokens: int = 24,
) -> dict:  # fmt: skip
    """The pretrained decoder alone, untouched, answering the same prompts without the image or sound."""
    decoder = load_decoder(decoder_name_or_path)
    return evaluate_generation(
        decoder, processor, dataset, task, columns, batch_size, max_new_tokens, without_media=True
    )


@torch.no_grad()
def retrieval_caption_baseline(
    retriever_name_or_path: str, train: datasets.Dataset, test: datasets.Dataset, task: str, columns: dict,
    batch_size: int = 32,
) -> dict:  # fmt: skip
    """Caption each test image (or sound) with the description of its nearest training one under a retrieval
    model's image (audio) embeddings."""
    from recipes.data.retrieval import RetrievalCollator, RetrievalColumns, prepare_for_lazy_decoding
    from recipes.evaluation.retrieval import embed_dataset

    retriever, processor = load_retriever(retriever_name_or_path)
    modality = TASK_MEDIA[task]
    media = columns["media_column"]
    layout = RetrievalColumns(
        text=None, audio=media if modality == "audio" else None, image=media if modality == "image" else None,
        id=None,
    )  # fmt: skip
    collator = RetrievalCollator(processor, layout, modalities=(modality,))

    def embed(dataset, name):
        dataset = prepare_for_lazy_decoding(dataset.select_columns([media]), layout)
        embeds, _ = embed_dataset(retriever, collator, dataset, [(modality,)], batch_size, description=name)
        return embeds[(modality,)]

    train_embeds, test_embeds = embed(train, "embedding train"), embed(test, "embedding test")
    nearest = (test_embeds @ train_embeds.T).argmax(-1).tolist()
    texts = train[columns["text_column"]]
    predictions = [texts[i] for i in nearest]
    references = references_of(test, task, columns)
    result = score(task, predictions, references)
    result["num_rows"] = len(test)
    result["retriever"] = retriever_name_or_path
    result["predictions"] = predictions
    return result


def format_generation_results(results: dict) -> str:
    """A Markdown table per task: the model and its baselines side by side."""
    lines = []
    for task, rows in results.items():
        if task == "vqa":
            keys = ["accuracy", "accuracy_yes_no", "accuracy_number", "accuracy_other"]
        else:
            keys = ["bleu_4", "meteor", "rouge_l", "cider_d"]
        lines += [f"\n{task}\n", "| model | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        for name, metrics in rows.items():
            cells = [f"{metrics[k]:.3f}" if isinstance(metrics.get(k), float | int) else "-" for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
