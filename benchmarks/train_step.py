"""Training-step throughput and MFU of CMAN against a stock transformers dual encoder with the same towers.

    python benchmarks/train_step.py                 # batch 32, 2 threads: 2-5 minutes on 2 CPU cores
    python benchmarks/train_step.py --quick         # tiny towers, 1 thread, a few seconds (smoke test)

One step is forward + backward + `AdamW.step()` on random inputs with random weights (speed does not depend on
them), in float32. Both models have the same towers, frozen and adapted with LoRA (r=8, alpha=16) on the attention
query/value projections:

- text: the MiniLM-L6 config (BERT, 6 layers, 384 wide, 12 heads), read from `outputs/towers/minilm-l6` when that
  folder exists, built in code otherwise; captions of `--text_length` tokens at most, padded per batch;
- image: a ViT-S/16 at 224 px (12 layers, 384 wide, 6 heads, 197 tokens), a `ViTConfig` so that
  `VisionTextDualEncoderModel` can take it too;
- audio (CMAN text+audio+image row only): the Whisper tiny.en encoder on a 5 s window, tokens pooled by 4.

Rows:

- CMAN (`CmanModel.apply_lora`), fusion transformer of the demo recipe (256 wide, 2 layers, 4 heads, FFN 1024),
  512-d space, max-margin loss with the hardest negatives; text+image, then text+audio+image;
- baseline: `transformers.VisionTextDualEncoderModel` from the same text and vision configs, the same LoRA
  through PEFT on the same modules, projections and logit scale trained, CLIP loss (`return_loss=True`).

The models' steps are interleaved (one step of each per round) so that background load hits them alike: an untimed
round first (`--warmup`), then up to `--steps` timed rounds, no new one after `--budget` seconds once two have run.
The fastest step is reported, with the median next to it; the ratio is CMAN / baseline samples per second.

Model FLOPs per step are counted once per model, on forward + backward of the first untimed step, with
`torch.utils.flop_counter.FlopCounterMode`. Frozen weights get no weight gradients, so the backward costs about one
forward, not two. The CPU attention kernel (`_scaled_dot_product_flash_attention_for_cpu` and its backward) is
missing from FlopCounterMode's table, which would count attention as zero; it is added here with the CUDA SDPA
formulas. MFU = FLOPs per step / fastest step / peak, the peak being the best rate of a square float32 matmul
(2048) measured in the same process before and after the steps, in both operand layouts.

Training runs in float32. A bfloat16-autocast step of the text+image models is timed only when it can take less
than `--bf16_limit` seconds: the FLOPs at the best bfloat16 matmul rate must fit, and so must the full-batch time
predicted from a batch-of-one probe. On CPUs without native bfloat16 (no AVX512-BF16 / AMX; "oneDNN bf16 support:
False" in the header) bfloat16 is emulated: about 10x slower than float32 for `x @ w.T` (the forward of
`nn.Linear`) and 100x slower for `x @ w` (its input gradient), so these rows are skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import peft
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from transformers import (
    AutoConfig,
    BertConfig,
    PreTrainedConfig,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
    ViTConfig,
    WhisperConfig,
)
from transformers.utils import logging as hf_logging

from modeling.cman import CmanConfig, CmanModel
from modeling.common.towers import LORA_TARGETS, WHISPER_TOKENS_PER_SECOND

TOWERS = Path(__file__).resolve().parents[1] / "outputs" / "towers"
MODALITY_SETS = {"text+image": ("text", "image"), "text+audio+image": ("text", "audio", "image")}
LORA = dict(r=8, alpha=16, dropout=0.1)  # the demo recipe's LoRA
AUDIO_WINDOW_SECONDS, AUDIO_TOKEN_STRIDE = 5.0, 4

BASELINE = "VisionTextDualEncoder"

aten = torch.ops.aten


# --------------------------------------------------------------------------------------------------------------------
# FLOP counting
# --------------------------------------------------------------------------------------------------------------------
def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# FlopCounterMode knows the CUDA SDPA kernels but not the CPU one that `F.scaled_dot_product_attention` runs here;
# without these two entries every attention score and weighted sum would count as zero FLOPs.
CPU_SDPA_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}


def count_step_flops(step: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward + backward (what `step` runs), in total and per aten op."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS)
    with counter:
        step()
    per_op = {
        str(op).removeprefix("aten."): count for op, count in counter.get_flop_counts()["Global"].items()
    }
    return counter.get_total_flops(), per_op


def matmul_rates(
    dtype: torch.dtype, size: int, repeats: int, seconds: float = 0.5
) -> dict[str, tuple[float, int]]:
    """Best FLOP/s of a square `x @ w` and `x @ w.T` (the layout of `nn.Linear`'s forward; its input gradient is
    `grad @ w`) in `dtype` over `repeats` runs, with the size used: `size`, or less where one product would take
    longer than `seconds` (bfloat16 is emulated, and very slow in one layout, on CPUs without native support)."""
    rates = {}
    for layout in ("x @ w", "x @ w.T"):
        trial = min(size, 256)
        while True:
            x, w = torch.randn(trial, trial).to(dtype), torch.randn(trial, trial).to(dtype)
            w = w.T if layout == "x @ w.T" else w
            out = torch.empty(trial, trial, dtype=dtype)
            torch.mm(x, w, out=out)  # warm-up (threads, packing buffers)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                torch.mm(x, w, out=out)
                best = min(best, time.perf_counter() - start)
            if trial >= size or best * 8 > seconds:  # doubling the size multiplies the time by 8
                break
            trial *= 2
        rates[layout] = (2 * trial**3 / best, trial)
    return rates


def format_rates(rates: dict[str, tuple[float, int]]) -> str:
    return ", ".join(f"{layout} {rate / 1e9:.1f} ({size})" for layout, (rate, size) in rates.items())


# --------------------------------------------------------------------------------------------------------------------
# Towers and models
# --------------------------------------------------------------------------------------------------------------------
def _tower_config(folder: str, fallback: Callable[[], PreTrainedConfig]) -> tuple[PreTrainedConfig, str]:
    path = TOWERS / folder
    if (path / "config.json").is_file():
        return AutoConfig.from_pretrained(path), f"config of {path.relative_to(TOWERS.parents[1])}"
    return fallback(), "config built in code"


def tower_configs(quick: bool) -> dict[str, tuple[PreTrainedConfig, str]]:
    """Text (BERT), audio (Whisper encoder) and image (ViT) tower configs, with where each came from."""
    if quick:
        tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
        whisper = WhisperConfig(
            num_mel_bins=16,
            d_model=32,
            encoder_layers=2,
            encoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_layers=1,
            max_source_positions=50,
        )
        return {
            "text": (BertConfig(vocab_size=1000, **tiny), "tiny BERT"),
            "audio": (whisper, "tiny Whisper"),
            "image": (ViTConfig(image_size=32, patch_size=8, **tiny), "tiny ViT"),
        }
    text = _tower_config(
        "minilm-l6",
        lambda: BertConfig(
            hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
        ),
    )
    audio = _tower_config(
        "whisper-tiny-en",
        lambda: WhisperConfig(
            vocab_size=51864,
            num_mel_bins=80,
            d_model=384,
            encoder_layers=4,
            encoder_attention_heads=6,
            encoder_ffn_dim=1536,
            decoder_layers=4,
            decoder_attention_heads=6,
            decoder_ffn_dim=1536,
        ),
    )
    audio[0].is_encoder_decoder = False  # only the encoder is used
    audio[0].max_source_positions = round(AUDIO_WINDOW_SECONDS * WHISPER_TOKENS_PER_SECOND)
    image = ViTConfig(
        image_size=224,
        patch_size=16,
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
    )
    return {"text": text, "audio": audio, "image": (image, "ViT-S/16 config built in code")}


def build_cman(configs: dict, quick: bool) -> torch.nn.Module:
    fusion = (
        dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
        if quick
        else dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024)
    )
    config = CmanConfig.from_towers(
        text=configs["text"][0],
        audio=configs["audio"][0],
        image=configs["image"][0],
        audio_token_stride=AUDIO_TOKEN_STRIDE,
        fusion_encoder_config={**fusion, "dropout": 0.1},
        projection_dim=64 if quick else 512,
        loss_type="max_margin",
        margin=0.2,
        max_margin_negatives="hardest",
    )
    return CmanModel(config).apply_lora(**LORA)


def build_baseline(configs: dict, quick: bool) -> torch.nn.Module:
    """`VisionTextDualEncoderModel` with frozen towers, LoRA on the same query/value modules as CMAN's."""
    from peft import LoraConfig, get_peft_model

    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        configs["image"][0], configs["text"][0], projection_dim=64 if quick else 512
    )
    model = VisionTextDualEncoderModel(config)
    targets = []
    for prefix in ("text_model", "vision_model"):
        tower = getattr(model, prefix)
        suffixes = LORA_TARGETS[tower.config.model_type]
        targets += [
            f"{prefix}.{name}"
            for name, module in tower.named_modules()
            if name.rsplit(".", 1)[-1] in suffixes and isinstance(module, torch.nn.Linear)
        ]
    lora = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=targets,
        modules_to_save=["text_projection", "visual_projection"],
    )
    peft_model = get_peft_model(model, lora)
    model.logit_scale.requires_grad_(True)  # a bare parameter: PEFT freezes it, CLIP trains it
    return peft_model


def random_batch(
    configs: dict, modalities: tuple[str, ...], batch_size: int, text_length: int, seed: int = 0
) -> dict:
    """Captions of random lengths (right-padded), 5 s of log-mel frames, images at the tower's size."""
    generator = torch.Generator().manual_seed(seed)
    text_config = configs["text"][0]
    lengths = torch.randint(max(2, text_length // 3), text_length + 1, (batch_size,), generator=generator)
    lengths[0] = text_length
    input_ids = torch.randint(100, text_config.vocab_size, (batch_size, text_length), generator=generator)
    attention_mask = (torch.arange(text_length)[None] < lengths[:, None]).long()
    batch = {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask}
    if "audio" in modalities:
        audio = configs["audio"][0]
        frames = 2 * audio.max_source_positions  # Whisper: two 10 ms mel frames per encoder position
        batch["input_features"] = torch.randn(batch_size, audio.num_mel_bins, frames, generator=generator)
    if "image" in modalities:
        image = configs["image"][0]
        batch["pixel_values"] = torch.randn(
            batch_size, image.num_channels, image.image_size, image.image_size, generator=generator
        )
    return batch


# --------------------------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One model on one batch: its optimizer, step times and FLOPs per step."""

    name: str
    modalities: str
    model: torch.nn.Module
    batch: dict
    autocast: torch.dtype | None = None
    optimizer: torch.optim.Optimizer | None = None
    times: list[float] = field(default_factory=list)
    flops: int = 0
    flops_per_op: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        named = [(n, p) for n, p in self.model.named_parameters() if ".original_module." not in n]
        self.total = sum(p.numel() for _, p in named)
        self.lora = sum(p.numel() for n, p in named if "lora_" in n)
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)

    def variant(self, autocast: torch.dtype | None) -> Run:
        """The same model, batch and optimizer, under autocast to `autocast`."""
        return Run(self.name, self.modalities, self.model, self.batch, autocast, self.optimizer)

    @property
    def batch_size(self) -> int:
        return self.batch["input_ids"].shape[0]

    @property
    def dtype(self) -> str:
        return "fp32" if self.autocast is None else str(self.autocast).removeprefix("torch.")

    def forward_backward(self) -> None:
        with torch.autocast("cpu", dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            loss = self.model(**self.batch, return_loss=True).loss
        loss.backward()

    def step(self, count_flops: bool = False) -> float:
        """One training step, in seconds; with `count_flops`, forward + backward run under a FLOP counter."""
        start = time.perf_counter()
        if count_flops:
            self.flops, self.flops_per_op = count_step_flops(self.forward_backward)
        else:
            self.forward_backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def samples_per_second(self) -> float:
        return self.batch_size / self.best

    def mfu(self, peak: float) -> float:
        return self.flops / self.best / peak


def run_interleaved(
    runs: list[Run], warmup: int, steps: int, budget: float = float("inf"), limit: float = float("inf")
) -> str | None:
    """`max(warmup, 1)` untimed rounds, the first under the FLOP counter (timed only with `warmup=0`), then up to
    `steps` timed rounds of one step of each run; no new round starts after `budget` seconds of timed rounds once
    two have run. Stops, returning why, as soon as a step takes longer than `limit` seconds."""
    for round_ in range(max(warmup, 1)):
        for run in runs:
            seconds = run.step(count_flops=round_ == 0)
            if warmup == 0:
                run.times.append(seconds)
            if seconds > limit:
                return f"{run.name} ({run.dtype}): a step took {seconds:.0f} s (> {limit:.0f} s)"
    start = time.perf_counter()
    while len(runs[0].times) < steps:
        if len(runs[0].times) >= 2 and time.perf_counter() - start > budget:
            break
        for run in runs:
            run.times.append(run.step())
            if run.times[-1] > limit:
                return f"{run.name} ({run.dtype}): a step took {run.times[-1]:.0f} s (> {limit:.0f} s)"
    return None


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------
def print_table(runs: list[Run], peak: float) -> None:
    header = (
        f"{'model':<36} {'modalities':<17} {'dtype':<9} {'batch':>5} {'best s':>7} {'median s':>9} "
        f"{'samples/s':>10} {'GFLOP/step':>11} {'GFLOP/s':>8} {'MFU fp32':>9} {'vs baseline':>12}"
    )
    print(header + "\n" + "-" * len(header))
    for run in runs:
        baseline = next(
            (
                r
                for r in runs
                if r.name.startswith(BASELINE) and (r.modalities, r.dtype) == (run.modalities, run.dtype)
            ),
            None,
        )
        ratio = "-"
        if baseline is not None and baseline is not run:
            ratio = f"{run.samples_per_second / baseline.samples_per_second:.2f}x"
        print(
            f"{run.name:<36} {run.modalities:<17} {run.dtype:<9} {run.batch_size:>5} {run.best:>7.3f} "
            f"{run.median:>9.3f} {run.samples_per_second:>10.2f} {run.flops / 1e9:>11.2f} "
            f"{run.flops / run.best / 1e9:>8.1f} {run.mfu(peak):>9.1%} {ratio:>12}"
        )


def flop_breakdown(run: Run) -> str:
    kinds = {"matmul": 0, "convolution": 0, "SDPA kernels": 0}
    for op, count in run.flops_per_op.items():
        kind = "SDPA kernels" if "attention" in op else "convolution" if "conv" in op else "matmul"
        kinds[kind] += count
    return ", ".join(f"{kind} {count / 1e9:.1f}" for kind, count in kinds.items())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument(
        "--steps", type=int, default=5, help="timed steps per model (the fastest and the median are reported)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed steps per model first (the first counts the FLOPs)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=100.0,
        help="start no new timed round after this many seconds of them (at least 2 rounds run)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default 2; 1 with --quick, whose tiny ops stall on a busy second core)",
    )
    parser.add_argument(
        "--modalities",
        nargs="+",
        choices=list(MODALITY_SETS),
        default=list(MODALITY_SETS),
        help="CMAN rows; text+image also runs the baseline and the bf16 check",
    )
    parser.add_argument(
        "--text_length", type=int, default=32, help="longest caption in tokens (the padded length)"
    )
    parser.add_argument(
        "--bf16_limit",
        type=float,
        default=60.0,
        help="skip bf16 when one step takes (or would take) longer (s)",
    )
    parser.add_argument("--no_bf16", action="store_true", help="skip the bfloat16-autocast rows")
    parser.add_argument("--quick", action="store_true", help="tiny towers and batch, for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.text_length = min(args.batch_size, 8), min(args.text_length, 8)
        args.steps = min(args.steps, 2)
    if args.threads is None:
        args.threads = 1 if args.quick else 2
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices of PEFT / transformers

    peak_size = 1024 if args.quick else 2048
    fp32_rates = matmul_rates(torch.float32, peak_size, repeats=5)
    bf16_rates = matmul_rates(torch.bfloat16, peak_size, repeats=2)

    configs = tower_configs(args.quick)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    print(
        f"{args.threads} threads of {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}), batch "
        f"{args.batch_size}, captions <= {args.text_length} tokens; "
        f"oneDNN bf16 support: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}"
    )
    if args.threads > 1 and os.getloadavg()[0] > (os.cpu_count() or 1) - args.threads + 0.5:
        print(
            f"  note: other processes keep the CPUs busy; each of the {args.threads} threads waits for the others "
            "at every op, so steps can take several times longer (compare with --threads 1)"
        )
    for modality, (config, source) in configs.items():
        print(f"  {modality} tower: {config.model_type} ({source})")

    runs = []
    for key in args.modalities:
        batch = random_batch(configs, MODALITY_SETS[key], args.batch_size, args.text_length)
        cman = build_cman(configs, args.quick)
        fusion = cman.base_model.model.config.fusion_encoder_config
        name = f"CMAN (LoRA r{LORA['r']}, fusion {fusion.hidden_size}x{fusion.num_hidden_layers})"
        runs.append(Run(name, key, cman, batch))
        if key == "text+image":
            runs.append(
                Run(f"{BASELINE} (LoRA r{LORA['r']})", key, build_baseline(configs, args.quick), batch)
            )
    for run in runs:
        print(
            f"  {run.name} {run.modalities}: {run.total:,} parameters, {run.trainable:,} trainable "
            f"({run.lora:,} LoRA)"
        )
    if any(run.name.startswith("CMAN") for run in runs):
        print("  (CMAN always builds its three towers: the audio tower sits idle in text+image steps)")

    run_interleaved(runs, args.warmup, args.steps, budget=args.budget)

    bf16_runs, bf16_note = [], "bf16 rows skipped (--no_bf16)" if args.no_bf16 else None
    bf16_peak = max(rate for rate, _ in bf16_rates.values())
    candidates = [] if args.no_bf16 else [run for run in runs if run.modalities == "text+image"]
    for run in candidates:
        # A step cannot beat the best bf16 matmul rate; then probe the real slowdown on a batch of 1.
        bound = run.flops / bf16_peak
        if bound > args.bf16_limit:
            bf16_note = (
                f"bf16 autocast rows skipped: at the best bf16 matmul rate ({bf16_peak / 1e9:.1f} GFLOP/s) one "
                f"{run.name} step would take >= {bound:.0f} s (> {args.bf16_limit:.0f} s)"
            )
            bf16_runs = []
            break
        batch_of_one = {key: value[:1] for key, value in run.batch.items()}
        probe_fp32 = Run(run.name, run.modalities, run.model, batch_of_one, None, run.optimizer)
        probe_bf16 = probe_fp32.variant(torch.bfloat16)
        fp32_seconds, bf16_seconds = probe_fp32.step(), probe_bf16.step()
        # Emulated bf16 is compute-bound even at batch 1, so its time grows with the batch; fp32 at batch 1 is
        # not, so scaling the full-batch fp32 time by the batch-1 slowdown would understate it.
        predicted = bf16_seconds * run.batch_size
        if predicted > args.bf16_limit:
            bf16_note = (
                f"bf16 autocast rows skipped: at batch 1 a {run.name} {run.modalities} step takes "
                f"{bf16_seconds:.1f} s under bf16 autocast ({fp32_seconds:.2f} s in fp32), so one step at batch "
                f"{run.batch_size} would take ~{predicted:.0f} s (> {args.bf16_limit:.0f} s)"
            )
            bf16_runs = []
            break
        bf16_runs.append(run.variant(torch.bfloat16))
    if bf16_note is None and bf16_runs:
        stopped = run_interleaved(
            bf16_runs, 1, max(1, args.steps // 2), budget=args.budget / 2, limit=args.bf16_limit
        )
        if stopped:
            bf16_note = f"bf16 autocast rows stopped: {stopped}"
    bf16_runs = [run for run in bf16_runs if run.times]
    fp32_rates_after = matmul_rates(torch.float32, peak_size, repeats=5)  # again, after the steps
    fp32_peak = max(rate for rates in (fp32_rates, fp32_rates_after) for rate, _ in rates.values())

    print(f"\nSquare matmul GFLOP/s (size); load average now {os.getloadavg()[0]:.1f}:")
    print(f"  fp32 before the steps: {format_rates(fp32_rates)}")
    print(f"  fp32 after the steps:  {format_rates(fp32_rates_after)}")
    print(f"  bf16:                  {format_rates(bf16_rates)}")
    print(f"Peaks (best of these): fp32 {fp32_peak / 1e9:.1f} GFLOP/s, bf16 {bf16_peak / 1e9:.1f} GFLOP/s")
    print(
        f"Step = forward + backward + AdamW; best of {len(runs[0].times)} interleaved steps after "
        f"{args.warmup} untimed; GFLOP counted on forward + backward; MFU against the fp32 peak.\n"
    )
    print_table(runs + bf16_runs, fp32_peak)
    print("\nGFLOP per step by kind:")
    for run in runs:
        print(f"  {run.name} {run.modalities}: {flop_breakdown(run)}")
    if bf16_note:
        print(bf16_note)
    for run in bf16_runs:
        fp32 = next(r for r in runs if r.model is run.model)
        print(
            f"bf16 {run.name}: {run.best / fp32.best:.1f}x the fp32 step time; "
            f"MFU against the bf16 matmul peak {run.mfu(bf16_peak):.1%}"
        )

    summary = [
        f"{'CMAN ' + run.modalities if run.name.startswith('CMAN') else 'baseline'} "
        f"{run.samples_per_second:.1f} samples/s (MFU {run.mfu(fp32_peak):.1%})"
        for run in runs
    ]
    pair = [r for r in runs if r.modalities == "text+image"]
    if len(pair) == 2:
        summary.append(f"CMAN/baseline {pair[0].samples_per_second / pair[1].samples_per_second:.2f}x")
    print(f"\nSummary ({time.perf_counter() - started:.0f} s after imports): " + "; ".join(summary))


if __name__ == "__main__":
    main()
