"""Publish a run folder of a recipe to the Hugging Face Hub.

`stage_run` copies exactly what the Hub repository gets into a staging folder: the safetensors weights, `config.json`
(with its `auto_map`), the model's code, the processor's files (and the speech recogniser's tokenizers under
`transcription/`), the model card filled for the repository id, the plots and `eval_results.json`. Checkpoints, the
TensorBoard folder and the logs stay behind unless `include_logs`. `publish_run` then creates the repository and
uploads the staged folder with `huggingface_hub`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

#: Files of a saved model and its processor (the family's code files are the folder's top-level `*.py`).
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json")
PROCESSOR_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)
#: Folders a model loads from (the speech recogniser's tokenizers).
MODEL_FOLDERS = ("transcription",)
RESULT_FILES = ("eval_results.json", "run_config.json")
#: Written beside a staging folder (`.<name>.staged`), so that a later dry run only ever empties a folder it made
#: itself, while the folder holds exactly what would be uploaded.
STAGING_MARKER = ".{}.staged"
LOG_FILES = (
    "train.log",
    "train_log.jsonl",
    "trainer_state.json",
    "all_results.json",
    "train_results.json",
    "loss_diagnostics.jsonl",
    "run_timings.json",
    "frozen_prefix_cache.json",
)


class PublishError(RuntimeError):
    """A run folder that cannot be published, or a Hub that cannot be reached; the message says what to do."""


@dataclass
class StagedRun:
    folder: Path
    files: list[tuple[str, int]]  # (path relative to the folder, bytes)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def describe(self) -> str:
        lines = [f"{len(self.files)} files, {_human(self.total_bytes)} in {self.folder}:"]
        lines += [f"  {_human(size):>10}  {name}" for name, size in self.files]
        if self.left_out:
            lines.append("Left out:")
            lines += [f"  {name}: {reason}" for name, reason in self.left_out]
        return "\n".join(lines)


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _check_model_folder(run_dir: Path) -> dict:
    config_file = run_dir / "config.json"
    if not config_file.exists():
        raise PublishError(f"{run_dir} has no config.json: give the output_dir of a finished training run.")
    config = json.loads(config_file.read_text())
    if (
        not (run_dir / "model.safetensors").exists()
        and not (run_dir / "model.safetensors.index.json").exists()
    ):
        raise PublishError(f"{run_dir} has no model.safetensors: only safetensors weights are published.")
    auto_map = config.get("auto_map") or {}
    if "AutoModel" not in auto_map:
        raise PublishError(
            f"{run_dir / 'config.json'} has no auto_map['AutoModel']: the model would not load with "
            "trust_remote_code. Save it with the zoo's save_pretrained (models register their Auto classes)."
        )
    for reference in auto_map.values():
        module = reference.split("--")[-1].split(".")[0]
        if not (run_dir / f"{module}.py").exists():
            raise PublishError(f"auto_map names {reference!r}, but {module}.py is not in {run_dir}.")
    return config


def check_run_folder(run_dir: str | os.PathLike, force: bool = False) -> bool:
    """Raise `PublishError` unless `run_dir` is a model folder that loads with remote code and (unless `force`) has
    been evaluated; returns whether it has `eval_results.json`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PublishError(f"{run_dir} is not a folder.")
    _check_model_folder(run_dir)
    evaluated = (run_dir / "eval_results.json").exists()
    if not evaluated and not force:
        raise PublishError(
            f"{run_dir} has no eval_results.json: evaluate it first (python recipes/evaluate_retrieval.py --model "
            f"{run_dir} --dataset ... --output_dir {run_dir}) so that the card reports measured numbers, or pass "
            "--force to publish it without results."
        )
    return evaluated


def stage_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    staging_dir: str | os.PathLike,
    *,
    include_logs: bool = False,
    force: bool = False,
    baselines: str | os.PathLike | None = None,
    dataset_id: str | None = None,
) -> StagedRun:
    """Write the folder that `repo_id` would receive into `staging_dir` and describe it. `staging_dir` must be new,
    empty, or a folder an earlier call staged (it is emptied); it may neither hold nor sit inside the run folder."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from model_cards import build_model_card

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(f"{repo_id!r} is not a Hub repository id (owner/name): {error}") from error
    run_dir = Path(run_dir).resolve()
    staging = Path(staging_dir).resolve()
    if staging == run_dir or run_dir in staging.parents or staging in run_dir.parents:
        raise PublishError(
            f"The staging folder {staging} must be outside the run folder {run_dir} and must not contain it."
        )
    marker = staging.parent / STAGING_MARKER.format(staging.name)
    if staging.exists() and any(staging.iterdir()) and not marker.exists():
        raise PublishError(
            f"The staging folder {staging} exists and was not written by a dry run: give a new or empty folder."
        )
    evaluated = check_run_folder(run_dir, force)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    marker.write_text(f"{staging.name}/ was written by recipes/publish.py for {repo_id}.\n")

    wanted = set(MODEL_FILES) | set(PROCESSOR_FILES) | set(RESULT_FILES) | {"README.md"}
    wanted |= {p.name for p in run_dir.glob("*.py")} | {p.name for p in run_dir.glob("*.png")}
    wanted |= {p.name for p in run_dir.glob("*.safetensors")}  # the weights, one file or shards
    if include_logs:
        wanted |= set(LOG_FILES)
    left_out = []
    for entry in sorted(run_dir.iterdir()):
        name = entry.name
        if entry.is_dir():
            if name in MODEL_FOLDERS:
                shutil.copytree(entry, staging / name)
            elif name == "runs" and include_logs:  # TensorBoard
                shutil.copytree(entry, staging / name)
            elif name == "runs":
                left_out.append((name + "/", "TensorBoard logs (--include_logs to publish them)"))
            elif name.startswith("checkpoint-"):
                left_out.append(
                    (name + "/", "a training checkpoint (optimizer state; resume from the run folder)")
                )
            else:
                left_out.append((name + "/", "not part of the model"))
        elif name == "README.md":
            continue  # written below, for this repository id
        elif name in wanted:
            shutil.copy2(entry, staging / name)
        elif name.endswith((".bin", ".pt", ".pth", ".pkl")):
            left_out.append((name, "pickle-based file: only safetensors are published"))
        elif name in LOG_FILES:
            left_out.append((name, "a log (--include_logs to publish it)"))
        else:
            left_out.append((name, "not part of the model"))
    if evaluated:
        # The card is rebuilt from the staged files (the towers' and dataset's cards are read from the run's paths).
        card = build_model_card(run_dir, repo_id, baselines=baselines, dataset_id=dataset_id)
        card.save(staging / "README.md")
    elif (run_dir / "README.md").exists():
        shutil.copy2(run_dir / "README.md", staging / "README.md")
    files = sorted(
        (str(path.relative_to(staging)), path.stat().st_size) for path in staging.rglob("*") if path.is_file()
    )
    return StagedRun(staging, files, left_out)


def check_can_publish(token: str | None = None, verify: bool = False) -> str:
    """The token to publish with; raises `PublishError` (before any work is done) when there is none or the Hub is
    switched off. With `verify`, also asks the Hub who the token belongs to (a wrong or expired token, or an
    unreachable Hub, fails here)."""
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise PublishError(
            "HF_HUB_OFFLINE is set: nothing can be uploaded. Unset it (and log in) to publish, or use --dry-run to "
            "write the folder that would be uploaded."
        )
    token = token or get_token()
    if not token:
        raise PublishError(
            "No Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with write access "
            "(https://huggingface.co/settings/tokens), or use --dry-run to write the folder that would be uploaded."
        )
    if verify:
        with _hub_errors("your account"):
            HfApi(token=token).whoami()
    return token


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection and timeout errors of the HTTP client huggingface_hub uses (`httpx2` from huggingface_hub 2.x,
    `httpx` before)."""
    errors: list[type[BaseException]] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        errors += [module.ConnectError, module.TimeoutException]
    return tuple(errors) or (ConnectionError,)


@contextlib.contextmanager
def _hub_errors(repo_id: str):
    """Turn the Hub client's errors into a `PublishError` that says what to do."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        yield
    except (*_network_errors(), OfflineModeIsEnabled) as error:
        raise PublishError(
            f"Cannot reach the Hub at {constants.ENDPOINT} ({type(error).__name__}: {error}). Check the network "
            "or HF_ENDPOINT, or use --dry-run to write the folder that would be uploaded."
        ) from error
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status in (401, 403):
            raise PublishError(
                f"The Hub refused the token for {repo_id} (HTTP {status}): it needs write access to that "
                "namespace (https://huggingface.co/settings/tokens)."
            ) from error
        raise PublishError(f"The Hub refused the upload to {repo_id}: {error}") from error


def publish_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    include_logs: bool = False,
    force: bool = False,
    baselines: str | os.PathLike | None = None,
    dataset_id: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Create `repo_id` (if needed) and upload the staged run folder to it; returns the commit URL."""
    from huggingface_hub import HfApi

    token = check_can_publish(token)
    check_run_folder(run_dir, force)  # before the repository is created
    api = HfApi(token=token)
    with _hub_errors(repo_id):
        # The repository first: its full id (with the namespace the Hub fills in) is what the card's snippet loads.
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="publish-") as staging:
        staged = stage_run(
            run_dir, url.repo_id, Path(staging) / "repo", include_logs=include_logs, force=force,
            baselines=baselines, dataset_id=dataset_id,
        )  # fmt: skip
        logger.info("Uploading %s", staged.describe())
        with _hub_errors(url.repo_id):
            info = api.upload_folder(
                repo_id=url.repo_id,
                folder_path=staged.folder,
                commit_message=commit_message or f"Upload {Path(run_dir).name} with cross-modal-zoo",
            )
    logger.info("Published %s: %s", url, info.commit_url)
    return info.commit_url
