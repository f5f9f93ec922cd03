"""Plots of a retrieval run: loss curves, the loss diagnostics per step, recall@K per direction, a t-SNE of the shared space and, for a model with
a fusion transformer, its attention map. Each function writes one PNG and returns its path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

logger = logging.getLogger(__name__)

MODALITY_COLOURS = {
    "text": "tab:blue",
    "audio": "tab:orange",
    "transcript": "tab:purple",
    "image": "tab:green",
    "pooling": "tab:gray",
}
LEGEND_NAMES = {
    "pooling": "pooling",
    "text": "text",
    "audio": "audio",
    "transcript": "transcript",
    "image": "image",
}


def plot_loss(log_history: list[dict], path: Path, title: str = "Retrieval loss") -> Path:
    """Training loss per logging step and validation loss per evaluation."""
    train = [(r["step"], r["loss"]) for r in log_history if "loss" in r and "step" in r]
    evals = [(r["step"], r["eval_loss"]) for r in log_history if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="training loss", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation loss", color="tab:red")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


DIAGNOSTICS = {
    "similarity_spread": "similarity spread (std of cosines; ~0 = collapsed)",
    "positive_similarity": "mean cosine of positive pairs",
    "hardest_negative_margin": "positive - hardest negative (mean)",
    "active_hinges": "share of negatives inside the margin",
}


def plot_loss_diagnostics(records: list[dict], path: Path, title: str = "Loss diagnostics") -> Path:
    """The four loss diagnostics (`loss_diagnostics.jsonl`) per optimizer step, the loss module of each step marked
    (a warm-up shows where the model's own loss takes over)."""
    if not records:
        raise ValueError("No loss diagnostics to plot (loss_diagnostics.jsonl is empty).")
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    steps = [record["step"] for record in records]
    switches = [b["step"] for a, b in zip(records, records[1:]) if a["loss"] != b["loss"]]
    for ax, (key, label) in zip(axes.flat, DIAGNOSTICS.items()):
        ax.plot(steps, [record[key] for record in records], color="tab:blue")
        for step in switches:
            ax.axvline(step, color="tab:red", linestyle="--", alpha=0.6)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 1].axhline(0, color="black", linewidth=0.5)
    axes[1, 0].axhline(0, color="black", linewidth=0.5)
    for ax in axes[1]:
        ax.set_xlabel("optimizer step")
    losses = " then ".join(dict.fromkeys(record["loss"] for record in records))
    fig.suptitle(f"{title} ({losses}{'; dashed: loss switch' if switches else ''})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_recall(split_results: dict, path: Path, title: str) -> Path:
    """Grouped bars of R@1/5/10 per direction (composed queries included), chance as black ticks."""
    rows = {**split_results["directions"], **split_results.get("composed", {})}
    names = [name.replace("_to_", "→") for name in rows]
    ks = ("R@1", "R@5", "R@10")
    x = np.arange(len(rows))
    width = 0.26
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(rows)), 4.2))
    for offset, k in enumerate(ks):
        values = [m[k] for m in rows.values()]
        chance = [m["chance"][k] for m in rows.values()]
        ax.bar(x + (offset - 1) * width, values, width, label=k)
        ax.scatter(x + (offset - 1) * width, chance, marker="_", s=200, color="black", zorder=3)
    ax.scatter([], [], marker="_", s=200, color="black", label="chance")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("recall")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_tsne(embeddings: dict[str, torch.Tensor], path: Path, seed: int = 0) -> Path:
    """t-SNE of the embeddings of each modality in the shared space, coloured by modality; thin lines join the
    text, audio and image of the same item."""
    from sklearn.manifold import TSNE

    modalities = list(embeddings)
    stacked = torch.cat([embeddings[m] for m in modalities]).numpy()
    perplexity = float(min(30, max(5, len(stacked) // 10)))
    points = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(stacked)
    count = len(embeddings[modalities[0]])
    fig, ax = plt.subplots(figsize=(6.5, 6))
    per_modality = np.split(points, len(modalities))
    for item in range(min(count, 40)):
        ax.plot(*np.stack([p[item] for p in per_modality]).T, color="lightgray", linewidth=0.5, zorder=1)
    for modality, coords in zip(modalities, per_modality):
        ax.scatter(
            coords[:, 0], coords[:, 1], s=10, label=modality, color=MODALITY_COLOURS[modality], zorder=2
        )
    ax.set_title(f"t-SNE of the shared {stacked.shape[1]}-d space ({count} items)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_fusion_attention(
    attentions: tuple[torch.Tensor, ...],
    type_ids: torch.Tensor,
    type_names: dict[int, str],
    caption: str,
    path: Path,
) -> Path:
    """Last fusion layer: the pooling token's attention over every token (top) and the full map (bottom),
    averaged over heads, with tokens coloured by their type (`type_names`: type id -> modality name)."""
    last = attentions[-1][0].float().mean(0).numpy()  # (S, S)
    types = [type_names[int(t)] for t in type_ids]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8), gridspec_kw={"height_ratios": [1, 3]})
    top.bar(range(len(types)), last[0], color=[MODALITY_COLOURS[t] for t in types], width=1.0)
    top.set_ylabel("attention")
    top.set_title(f"Pooling token attention, last fusion layer\n{caption[:90]!r}", fontsize=10)
    shown = [name for name in LEGEND_NAMES if name in types]
    handles = [plt.Rectangle((0, 0), 1, 1, color=MODALITY_COLOURS[name]) for name in shown]
    top.legend(handles, [LEGEND_NAMES[name] for name in shown], ncol=len(shown), fontsize=8)
    top.set_xlim(-0.5, len(types) - 0.5)
    image = bottom.imshow(last, aspect="auto", cmap="viridis")
    bounds = [i for i in range(1, len(types)) if types[i] != types[i - 1]]
    for b in bounds:
        bottom.axhline(b - 0.5, color="white", linewidth=0.6)
        bottom.axvline(b - 0.5, color="white", linewidth=0.6)
    bottom.set_xlabel(f"key token ({' | '.join(LEGEND_NAMES[name] for name in dict.fromkeys(types))})")
    bottom.set_ylabel("query token")
    fig.colorbar(image, ax=bottom, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def write_run_plots(
    output_dir: Path,
    model,
    processor,
    dataset,
    split: str | None,
    columns,
    max_items: int = 200,
    cache_dir=None,
) -> list[Path]:
    """All plots of a finished run, from `trainer_state.json`, `eval_results.json` and the model itself. The
    attention map needs a model with a fusion transformer (a `fusion_token_types` table and `fused_model_output`)."""
    from recipes.data.retrieval import (
        RetrievalCollator,
        add_transcripts,
        prepare_for_lazy_decoding,
        resolve_columns,
    )
    from recipes.evaluation.retrieval import embed_dataset
    from recipes.utils.models import transcribes_audio

    output_dir = Path(output_dir)
    written = []
    state_file = output_dir / "trainer_state.json"
    if state_file.exists():
        title = f"{type(model).__name__.removesuffix('Model')} retrieval loss"
        written.append(
            plot_loss(json.loads(state_file.read_text())["log_history"], output_dir / "loss.png", title)
        )
    diagnostics_file = output_dir / "loss_diagnostics.jsonl"
    if diagnostics_file.exists() and diagnostics_file.stat().st_size:
        records = [json.loads(line) for line in diagnostics_file.read_text().splitlines() if line.strip()]
        written.append(plot_loss_diagnostics(records, output_dir / "loss_diagnostics.png"))
    results_file = output_dir / "eval_results.json"
    if results_file.exists() and split:
        results = json.loads(results_file.read_text())["results"]
        if split in results:
            written.append(
                plot_recall(results[split], output_dir / "recall_at_k.png", f"Retrieval on {split!r}")
            )
    if split and split in dataset:
        subset = dataset[split].select(range(min(max_items, len(dataset[split]))))
        subset = prepare_for_lazy_decoding(subset, columns)
        if transcribes_audio(model) and columns.audio in subset.column_names:
            subset = add_transcripts(
                subset, model, processor, columns, description="transcribing (plots)", cache_dir=cache_dir
            )
        collator = RetrievalCollator(processor, columns=columns)
        modalities = resolve_columns(subset, columns, None)
        embeds, _ = embed_dataset(model, collator, subset, [(m,) for m in modalities], description="t-SNE")
        written.append(plot_tsne({m: embeds[(m,)] for m in modalities}, output_dir / "tsne.png"))
        token_types = getattr(model, "fusion_token_types", None)
        if len(modalities) > 1 and token_types:
            batch = collator([subset[0]])
            batch.pop("group_ids")
            device = next(model.parameters()).device
            output = model(**{k: v.to(device) for k, v in batch.items()}, fuse=True, output_attentions=True)
            caption = subset[0][columns.text] if columns.text in subset.column_names else ""
            written.append(
                plot_fusion_attention(
                    output.fused_model_output.attentions,
                    output.fused_model_output.token_type_ids.cpu(),
                    {type_id: name for name, type_id in token_types.items()},
                    caption,
                    output_dir / "fusion_attention.png",
                )
            )
    logger.info("Plots: %s", ", ".join(p.name for p in written))
    return written


def _image_grid(weights: torch.Tensor) -> torch.Tensor:
    """Attention over an image's tokens as a square grid (a ViT's leading [CLS] token dropped)."""
    count = weights.shape[-1]
    side = int(round(count**0.5))
    if side * side != count:
        side = int(round((count - 1) ** 0.5))
        if side * side != count - 1:
            raise ValueError(f"{count} image tokens do not form a square grid.")
        weights = weights[..., 1:]
    return weights.reshape(side, side)


@torch.no_grad()
def plot_matching_attention(model, processor, examples: list[dict], path: Path) -> Path:
    """
    For each example (`image`: a PIL image, `question`: text, `answer`: the expected answer), the image with the
    last layer's attention over its tokens, averaged over heads: the pooling token's (early fusion) or the text
    stream's pooling token's cross-attention (two streams); titled with the question, the model's answer (when it
    has an answer head) and the expected one.
    """
    model.eval()
    device = next(model.parameters()).device
    fig, axes = plt.subplots(1, len(examples), figsize=(3.4 * len(examples), 3.9), squeeze=False)
    for axis, example in zip(axes[0], examples, strict=True):
        image = example["image"].convert("RGB")
        inputs = processor(text=[example["question"]], images=[image], return_tensors="pt")
        output = model(**{k: v.to(device) for k, v in inputs.items()}, output_attentions=True)
        if output.cross_attentions:  # two streams: the text stream's pooling token over the image stream
            weights = output.cross_attentions[-1][0].float().mean(0)[0, 1:]
        else:  # one stream: the pooling token over the image tokens (type 2)
            types = output.token_type_ids.cpu()
            weights = output.attentions[-1][0].float().mean(0)[0][types == 2]
        grid = _image_grid(weights.cpu())
        axis.imshow(image.resize((224, 224)))
        axis.imshow(
            torch.nn.functional.interpolate(grid[None, None], size=(224, 224), mode="bilinear")[0, 0].numpy(),
            cmap="inferno", alpha=0.55,
        )  # fmt: skip
        answer = ""
        if getattr(model, "vqa_head", None) is not None:
            answer = f"\nmodel: {model.config.id2label[int(output.logits.argmax(-1))]!r}"
        axis.set_title(f"{example['question']}{answer}\nexpected: {example['answer']!r}", fontsize=8)
        axis.axis("off")
    fig.suptitle(f"{type(model).__name__}: last layer's attention over the image tokens", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_caption_examples(
    dataset, predictions: list[str], path: Path, image_column: str = "image", text_column: str = "text",
    count: int = 8, baselines: dict[str, list[str]] | None = None,
) -> Path:  # fmt: skip
    """Test images (evenly spread over `dataset`) with their reference description, the model's caption and, when
    given, each baseline's caption underneath."""
    import textwrap

    from recipes.data.retrieval import _load_image

    picks = list(range(0, len(dataset), max(1, len(dataset) // count)))[:count]
    columns = 4
    rows = (len(picks) + columns - 1) // columns
    lines = 3 + len(baselines or {})
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, (3.2 + 0.45 * lines) * rows), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")

    def bad(column, cause, fix=""):
        return ValueError(f"{column}: {cause}")

    for ax, index in zip(axes.flat, picks):
        row = dataset[index]
        ax.imshow(_load_image(row[image_column], image_column, bad))
        label = [f"reference: {row[text_column]}", f"model: {predictions[index]}"]
        label += [f"{name}: {texts[index]}" for name, texts in (baselines or {}).items()]
        wrapped = "\n".join(textwrap.shorten(t, 80) for t in label)
        ax.set_title(wrapped, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
