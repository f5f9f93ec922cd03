"""How well does Whisper tiny.en understand a split's speech? An ASR-cascade reference for text <-> speech retrieval.

Transcribes the ``audio`` of a stamps split with the offline Whisper tiny.en tower (greedy decoding, the standard
30 s window, nothing trained), then ranks speech against descriptions by the cosine of frozen MiniLM-L6 embeddings
of transcript and description. It prints the word error rate and text -> speech / speech -> text R@1 and R@10 per
speech source (piper-tts, espeak-ng, a person), with the same pessimistic tie rule and duplicate-description
positives as ``recipes/evaluate_retrieval.py``. With ``--tts espeak-ng`` the split's descriptions are spoken again
by espeak-ng with the builder's voices, to compare the two synthetic voices on the same texts.

No model is trained here: the figures say how much of the speech a pretrained recogniser gets right, which bounds
what a text <-> speech model built on the same audio tower can be expected to reach.

Usage::

    python benchmarks/speech_transcripts.py --dataset outputs/data/stamps --split test
    python benchmarks/speech_transcripts.py --dataset outputs/data/stamps --split test --tts espeak-ng
    python benchmarks/speech_transcripts.py --split test --window_seconds 5 --repetition_penalty 1.5  # CMAN's

``--window_seconds 5 --repetition_penalty 1.5 --max_new_tokens 24`` are the settings of the recogniser inside the main
job's CMAN (``transcribe_audio``): the encoder's positions are sliced to the window, as there.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import soundfile as sf
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.data.stamps import espeak_voice, normalize_description, synthesize  # noqa: E402
from recipes.evaluation.asr_cascade import embed, transcribe  # noqa: E402
from recipes.evaluation.ranking import positives_from_ids, rank_of_positives, retrieval_metrics  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="outputs/data/stamps")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--towers", default="outputs/towers", help="Output folder of `python -m recipes.towers`."
    )
    parser.add_argument("--tts", choices=["dataset", "espeak-ng"], default="dataset")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument(
        "--window_seconds", type=float, default=30.0, help="Whisper window; CMAN's main job uses 5 s."
    )
    parser.add_argument(
        "--repetition_penalty", type=float, default=1.0, help="CMAN's recogniser uses 1.5 on its 5 s window."
    )
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="Greedy decoding is fastest on one thread.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import datasets
    import jiwer

    split = datasets.load_from_disk(args.dataset)[args.split]
    texts, ids = list(split["text"]), [normalize_description(t) for t in split["text"]]
    if args.tts == "espeak-ng":
        waves, sources = [], []
        for row_id, text in zip(tqdm(split["id"], desc="espeak-ng", unit="row"), texts, strict=True):
            voice, rate = espeak_voice(row_id)
            waves.append(sf.read(io.BytesIO(synthesize(text, voice, rate)), dtype="float32")[0])
            sources.append("espeak-ng")
    else:
        waves = [row["audio"]["array"] for row in split]
        sources = [source.split(":")[0] for source in split["audio_source"]]
    started = time.perf_counter()
    transcripts = transcribe(
        waves,
        f"{args.towers}/whisper-tiny-en",
        args.batch_size,
        args.window_seconds,
        args.repetition_penalty,
        args.max_new_tokens,
    )
    seconds = time.perf_counter() - started
    text_embeds, speech_embeds = embed([texts, transcripts], f"{args.towers}/minilm-l6")

    print(
        f"\n{args.split} of {args.dataset}, speech from {args.tts}: {len(texts)} rows; Whisper window "
        f"{args.window_seconds:g} s, repetition penalty {args.repetition_penalty:g}: transcribed in {seconds:.1f} s "
        f"({torch.get_num_threads()} threads)"
    )
    print("| speech | rows | WER | text→speech R@1 | R@10 | speech→text R@1 | R@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    groups = {"all": list(range(len(texts)))}
    for source in sorted(set(sources)):
        groups[source] = [i for i, s in enumerate(sources) if s == source]
    for name, rows in groups.items():
        # Queries are this group's rows; the gallery is always the whole split.
        cells = []
        for query, gallery in ((text_embeds, speech_embeds), (speech_embeds, text_embeds)):
            positives = positives_from_ids([ids[i] for i in rows], ids)
            ranks = rank_of_positives(query[rows], gallery, positives)
            metrics = retrieval_metrics(ranks)
            cells += [f"{metrics['R@1']:.3f}", f"{metrics['R@10']:.3f}"]
        wer = jiwer.wer(
            [normalize_description(texts[i]) for i in rows],
            [normalize_description(transcripts[i]) or "-" for i in rows],
        )
        print(f"| {name} | {len(rows)} | {wer:.3f} | " + " | ".join(cells) + " |")
    print("\nFirst transcripts:")
    for text, transcript, source in list(zip(texts, transcripts, sources, strict=True))[:8]:
        print(f"  [{source}] {text!r} -> {transcript!r}")


if __name__ == "__main__":
    main()
