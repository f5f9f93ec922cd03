"""The arguments of the retrieval training recipe, as dataclasses read from a YAML file and the command line
(see `recipes.utils.arguments.parse_recipe_arguments`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class ModelArguments:
    # Model
    model_type: str = field(
        default="cman",
        metadata={
            "help": "The family to train (a registered model type: 'cman', ...); ignored with model_name_or_path."
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A saved folder or Hub id to fine-tune (else the model is built from the towers)."},
    )
    text_tower: str | None = field(
        default=None, metadata={"help": "Text tower: Hub id or folder (BERT/RoBERTa)."}
    )
    audio_tower: str | None = field(
        default=None, metadata={"help": "Audio tower: Hub id or folder (AST/Whisper)."}
    )
    image_tower: str | None = field(
        default=None, metadata={"help": "Image tower: Hub id or folder (ViT/timm)."}
    )
    load_tower_weights: bool = field(
        default=True,
        metadata={"help": "Load the towers' pretrained weights; False trains the same shapes from scratch."},
    )
    tower_config_overrides: dict = field(
        default_factory=dict,
        metadata={
            "help": "Per tower ('text'/'audio'/'image') config fields to change, e.g. smaller scratch towers."
        },
    )
    audio_window_seconds: float | None = field(default=None, metadata={"help": "Whisper encoder window (s)."})
    model_config: dict = field(
        default_factory=dict,
        metadata={
            "help": "Fields of the family's config (e.g. fusion_encoder_config, projection_dim, loss_type, "
            "transcribe_audio), passed to its `from_towers`."
        },
    )
    # LoRA
    use_lora: bool = field(default=True, metadata={"help": "Adapt the frozen towers with PEFT LoRA."})
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.2
    lora_towers: list[str] = field(
        default_factory=lambda: ["text", "audio", "image"],
        metadata={"help": "Towers that get LoRA; the others stay fully frozen."},
    )
    lora_last_n: int | None = field(
        default=None,
        metadata={
            "help": "Adapt only the last N target modules of each tower (the backward pass then stops there); "
            "None adapts every attention query/value projection."
        },
    )
    lora_last_n_per_tower: dict = field(
        default_factory=dict,
        metadata={
            "help": "Per tower ('text'/'audio'/'image'): overrides lora_last_n for that tower; null adapts all."
        },
    )
    save_adapter: bool = field(
        default=False, metadata={"help": "Also save the PEFT adapter in output_dir/adapter."}
    )


@dataclass
class DataArguments:
    # Dataset
    dataset_name: str = field(metadata={"help": "A folder written by save_to_disk, or a Hub dataset name."})
    dataset_config_name: str | None = None
    train_split: str = "train"
    eval_split: str | None = "validation"
    test_splits: list[str] = field(default_factory=lambda: ["test"])
    text_column: str | None = "text"
    audio_column: str | None = "audio"
    image_column: str | None = "image"
    id_column: str | None = "id"
    composed_queries: list[str] = field(default_factory=lambda: ["text+audio:image"])
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    skip_bad_rows: bool = field(
        default=False,
        metadata={
            "help": "Skip undecodable rows instead of failing; the run logs and records how many it skipped."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the training split (a Hub dataset or a folder of Parquet shards, see "
            "recipes/data/streaming.py) instead of loading it: each process reads its own shards; max_steps is "
            "derived from num_train_epochs and the number of rows."
        },
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={
            "help": "Rows in the streaming shuffle buffer (0: the shards' order). Ignored without streaming."
        },
    )
    augment_audio: bool = field(
        default=False,
        metadata={
            "help": "Random gain and window crops of training audio (resumed runs then differ from unbroken ones)."
        },
    )

    def retrieval_columns(self):
        """The dataset's column names as a `RetrievalColumns`."""
        from recipes.data.retrieval import RetrievalColumns

        return RetrievalColumns(
            text=self.text_column, audio=self.audio_column, image=self.image_column, id=self.id_column
        )


@dataclass
class RecipeTrainingArguments(TrainingArguments):
    """What every training recipe of the zoo adds to `TrainingArguments`."""

    auto_resume: bool = field(
        default=True, metadata={"help": "Continue from the last complete checkpoint found in output_dir."}
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Evaluations without improvement."}
    )
    make_plots: bool = field(default=True, metadata={"help": "Write the run's plots."})
    precision: str = field(
        default="auto",
        metadata={
            "help": "'auto' (bfloat16 autocast where the device computes it natively, else float32), 'bf16' or 'fp32'."
        },
    )
    cache_frozen_prefix: bool = field(
        default=True,
        metadata={
            "help": "Compute the states of each tower's frozen prefix (the layers below its first trainable one) once "
            "per input and reuse them across epochs, and across runs in cache_dir."
        },
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where transcripts and frozen-prefix states are kept (default: $CROSS_MODAL_ZOO_CACHE, else "
            "~/.cache/cross-modal-zoo)."
        },
    )
    remove_unused_columns: bool = False
    report_to: str | list[str] = "tensorboard"


@dataclass
class RetrievalTrainingArguments(RecipeTrainingArguments):
    # Training
    loss_warmup_steps: int = field(
        default=0,
        metadata={
            "help": "Steps trained with `loss_warmup` before the model's own loss (config.loss_type) takes over."
        },
    )
    loss_warmup: str = field(
        default="all_negatives",
        metadata={"help": "'all_negatives' (max-margin over every negative) or 'infonce'."},
    )
    composed_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "Also train composed queries: each pair of modalities (e.g. text+speech), embedded together, "
            "against the third, with this weight (0: only the pairs of single modalities)."
        },
    )
    make_plots: bool = field(
        default=True, metadata={"help": "Write loss, recall, t-SNE and attention plots."}
    )


@dataclass
class MatchingDataArguments:
    """The data of the matching / VQA recipe: a VQA dataset, a dataset of matched pairs, or both (multi-task)."""

    tasks: list[str] = field(
        default_factory=lambda: ["vqa"],
        metadata={
            "help": "'vqa' (the answer head on dataset_name), 'matching' (the pair objectives on pairs_dataset_name), "
            "or both: a multi-task model whose batches interleave the two, weighted by the config's *_weight."
        },
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "The VQA dataset: a save_to_disk folder or a Hub name."}
    )
    pairs_dataset_name: str | None = field(
        default=None,
        metadata={"help": "The matched pairs (e.g. the stamps): a save_to_disk folder or a Hub name."},
    )
    train_split: str = "train"
    eval_split: str | None = "validation"
    test_splits: list[str] = field(default_factory=lambda: ["test"])
    question_column: str = "question"
    answers_column: str = "answers"
    image_column: str = "image"
    pairs_text_column: str = "text"
    pairs_other_column: str = "image"
    pairs_other_modality: str = field(default="image", metadata={"help": "'image' or 'audio'."})
    answer_min_count: int = field(
        default=1, metadata={"help": "Keep answers given at least this often in train (by any annotator)."}
    )
    question_only: bool = field(
        default=False,
        metadata={"help": "Blank every image (plain grey): the question-only baseline of the same model."},
    )
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    rerank_with: str | None = field(
        default=None,
        metadata={
            "help": "A retriever folder (e.g. the main job's outputs/demo) whose text<->image top-k the matching head "
            "re-ranks on the test split after training."
        },
    )
    rerank_top_k: int = 16


@dataclass
class CaptioningTrainingArguments(RecipeTrainingArguments):
    """The recipe's training arguments plus the gates' own learning rate."""

    gate_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the gated blocks' tanh gates (no weight decay); default: learning_rate."
        },
    )


@dataclass
class GeneratorModelArguments:
    """The generator (`model_type: gated_xattn`): a pretrained causal LM as the decoder and the two towers."""

    model_type: str = field(default="gated_xattn", metadata={"help": "A generator family (`gated_xattn`)."})
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A saved generator folder or Hub id to fine-tune instead of a new one."},
    )
    text_decoder: str | None = field(
        default="outputs/towers/smollm2-135m-instruct",
        metadata={
            "help": "A causal LM checkpoint (folder or Hub id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct)."
        },
    )
    audio_tower: str | None = field(
        default="outputs/towers/whisper-tiny-en", metadata={"help": "Audio tower."}
    )
    image_tower: str | None = field(
        default="outputs/towers/efficientnet-lite0", metadata={"help": "Image tower."}
    )
    audio_window_seconds: float | None = field(default=5.0, metadata={"help": "Whisper encoder window (s)."})
    model_config: dict = field(
        default_factory=dict,
        metadata={
            "help": "Fields of the family's config (num_latents, cross_attention_every, resampler_config...)."
        },
    )
    use_lora: bool = field(default=True, metadata={"help": "Adapt the frozen decoder with PEFT LoRA."})
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    save_adapter: bool = field(
        default=False, metadata={"help": "Also keep the PEFT adapter in output_dir/adapter (LoRA is merged)."}
    )


@dataclass
class CaptioningDataArguments:
    """Captioning (image or sound -> description) and open-ended VQA data for the generator."""

    tasks: list[str] = field(
        default_factory=lambda: ["image_captioning"],
        metadata={
            "help": "Any of image_captioning, audio_captioning, vqa (single-task batches interleaved)."
        },
    )
    dataset_name: str | None = field(
        default="outputs/data/stamps",
        metadata={"help": "Captioning data: a `text` column with an `image` and/or a sound column."},
    )
    vqa_dataset_name: str | None = field(
        default=None,
        metadata={"help": "A VQA dataset (question, answers, image), e.g. outputs/data/stamps_vqa."},
    )
    train_split: str = "train"
    eval_split: str | None = "validation"
    test_splits: list[str] = field(default_factory=lambda: ["test"])
    text_column: str = "text"
    image_column: str = "image"
    audio_column: str = field(default="sound_effect", metadata={"help": "The sound described by `text`."})
    question_column: str = "question"
    answers_column: str = "answers"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_test_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on the first n test rows."}
    )
    max_new_tokens: int = field(default=24, metadata={"help": "Generation length at evaluation."})
    num_beams: int = field(default=1, metadata={"help": "Beam search width at evaluation (1: greedy)."})
