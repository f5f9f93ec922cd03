"""recipes/publish.py: the dry run writes exactly what the Hub would get, and that folder stands on its own."""

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from tests.runs import ENV, REPO

EMBED = """
import sys, torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoProcessor
from PIL import Image
import numpy as np
folder, out = sys.argv[1], sys.argv[2]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert "modeling" not in sys.modules and "recipes" not in sys.modules  # nothing of the repository was imported
rng = np.random.default_rng(0)
inputs = processor(text=["a red circle", "a blue square number 3"],
                   audio=[rng.standard_normal(8000).astype(np.float32) * 0.1] * 2, sampling_rate=16000,
                   images=[Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))] * 2,
                   return_tensors="pt")
with torch.no_grad():
    embeds = model.encode([("text",), ("audio",), ("image",), ("text", "audio")], **inputs)
save_file({"+".join(k): v.contiguous() for k, v in embeds.items()}, out)
"""


def publish(*args, env=None):
    return subprocess.run(
        [sys.executable, str(REPO / "recipes/publish.py"), *map(str, args)],
        cwd=REPO,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def embed_elsewhere(folder, out, cwd):
    env = {key: value for key, value in ENV.items() if key != "PYTHONPATH"}
    script = cwd / "embed.py"
    script.write_text(EMBED)
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(out)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    from safetensors.torch import load_file

    return load_file(out)


def test_the_dry_run_folder_reloads_outside_the_repository_with_identical_embeddings(tiny_run, tmp_path):
    staging = tmp_path / "staged"
    result = publish(tiny_run["run"], "someone/tiny-cman", "--dry-run", "--staging_dir", staging)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = result.stdout
    files = {str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file()}
    for name in ("model.safetensors", "config.json", "modeling_cman.py", "configuration_cman.py", "towers.py",
                 "processing_cman.py", "processor_config.json", "tokenizer.json", "README.md", "eval_results.json",
                 "run_config.json", "loss.png", "recall_at_k.png", "transcription/recognizer/tokenizer.json",
                 "transcription/text/tokenizer.json"):  # fmt: skip
        assert name in files, name
        assert name in listed, name
    # No checkpoints, no logs, nothing pickled.
    assert not any(name.startswith(("checkpoint-", "runs/")) for name in files)
    assert not files & {"train.log", "train_log.jsonl", "trainer_state.json", "all_results.json"}
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    assert "checkpoint-4/: a training checkpoint" in listed and "train.log: a log" in listed
    assert f"{len(files)} files" in listed and "Dry run: nothing was uploaded" in listed
    config = json.loads((staging / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_cman.CmanModel"
    card = ModelCard.load(staging / "README.md")
    assert card.data.model_name == "someone/tiny-cman" and 'model_id = "someone/tiny-cman"' in card.text

    # The staged folder alone, in a fresh process from another directory, embeds exactly as the run folder does.
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    shutil.move(str(staging), cwd / "model")  # the run folder's path is nowhere in the copy's reach
    published = embed_elsewhere(cwd / "model", cwd / "published.safetensors", cwd)
    original = embed_elsewhere(tiny_run["run"], cwd / "original.safetensors", cwd)
    assert set(published) == {"text", "audio", "image", "text+audio"}
    for key in published:
        assert published[key].shape == original[key].shape
        assert (published[key] - original[key]).abs().max().item() == 0.0, key


def test_logs_are_published_only_when_asked(tiny_run, tmp_path):
    result = publish(
        tiny_run["run"], "someone/x", "--dry-run", "--staging_dir", tmp_path / "s", "--include_logs"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "s" / "train_log.jsonl").exists() and (tmp_path / "s" / "trainer_state.json").exists()
    assert not list((tmp_path / "s").glob("checkpoint-*"))


def test_a_folder_without_eval_results_is_refused_unless_forced(tiny_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(
        tiny_run["run"], folder, ignore=shutil.ignore_patterns("checkpoint-*", "eval_results.json")
    )
    result = publish(folder, "someone/x", "--dry-run", "--staging_dir", tmp_path / "s")
    assert (
        result.returncode == 2 and "has no eval_results.json" in result.stderr and "--force" in result.stderr
    )
    result = publish(folder, "someone/x", "--dry-run", "--staging_dir", tmp_path / "s", "--force")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "s" / "model.safetensors").exists()


def test_a_folder_that_would_not_load_is_refused(tiny_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run["run"], folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    (folder / "modeling_cman.py").unlink()
    result = publish(folder, "someone/x", "--dry-run", "--staging_dir", tmp_path / "s")
    assert result.returncode == 2 and "modeling_cman.py is not in" in result.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the socket is: nothing listens there


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        ({"HF_HUB_OFFLINE": "0", "HF_TOKEN": ""}, "No Hugging Face token"),
        (
            {"HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_not_a_real_token"},
            "Cannot reach the Hub at http://127.0.0.1:",
        ),
    ],
    ids=["offline", "no-token", "unreachable"],
)
def test_publishing_fails_with_a_clear_message_when_it_cannot_upload(tiny_run, tmp_path, setting, message):
    env = {**ENV, "HF_HOME": str(tmp_path / "hf_home"), "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}
    env.pop("HF_TOKEN", None)
    env.update({k: v for k, v in setting.items() if v})
    if setting.get("HF_TOKEN") == "":
        env.pop("HF_TOKEN", None)
    result = publish(tiny_run["run"], "someone/tiny-cman", env=env)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "--dry-run" in result.stderr


def test_the_training_recipe_checks_the_token_before_it_trains(tiny_run, tmp_path):
    output_dir = tmp_path / "run"
    command = [
        sys.executable, "recipes/train_retrieval.py", str(REPO / "recipes/configs/cman_tiny_test.yaml"),
        "--text_tower", str(tiny_run["text"]), "--audio_tower", str(tiny_run["audio"]),
        "--image_tower", str(tiny_run["image"]), "--dataset_name", str(tiny_run["dataset"]),
        "--output_dir", str(output_dir), "--push_to_hub", "true", "--hub_model_id", "someone/tiny",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=REPO, env={**ENV, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True
    )
    assert result.returncode != 0 and "HF_HUB_OFFLINE is set" in result.stderr
    assert not list(output_dir.glob("checkpoint-*")) and not (output_dir / "model.safetensors").exists()


def test_the_hub_token_never_reaches_the_recorded_command():
    from recipes.train_retrieval import redact_secrets

    assert redact_secrets(["a.yaml", "--hub_token", "hf_secret", "--hub_token=hf_other", "--seed", "1"]) == [
        "a.yaml", "--hub_token", "***", "--hub_token=***", "--seed", "1"
    ]  # fmt: skip


def test_a_dry_run_never_empties_a_folder_it_did_not_write(tiny_run, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    result = publish(tiny_run["run"], "someone/x", "--dry-run", "--staging_dir", precious)
    assert result.returncode == 2 and "was not written by a dry run" in result.stderr
    assert (precious / "thesis.tex").exists()
    # A folder holding the run is refused too, and so is a repository id that is not one.
    result = publish(tiny_run["run"], "someone/x", "--dry-run", "--staging_dir", tiny_run["run"].parent)
    assert result.returncode == 2 and "must not contain it" in result.stderr
    result = publish(tiny_run["run"], "..", "--dry-run")
    assert result.returncode == 2 and "is not a Hub repository id" in result.stderr
    # A folder an earlier dry run wrote is replaced.
    for _ in range(2):
        result = publish(tiny_run["run"], "someone/x", "--dry-run", "--staging_dir", tmp_path / "staged")
        assert result.returncode == 0, result.stderr[-2000:]


class StandInHub:
    """Records what `publish_run` asks of the Hub (none can be reached here): the real `HfApi` methods are replaced
    for one test, everything else (staging, the card, the error handling) runs as it does against the Hub."""

    def __init__(self, refuse_with: int | None = None):
        self.calls, self.refuse_with, self.uploaded = [], refuse_with, None

    def create_repo(self, repo_id, private=False, exist_ok=False, repo_type=None, **kwargs):
        from huggingface_hub import RepoUrl

        self.calls.append(("create_repo", repo_id, private))
        return RepoUrl(f"https://huggingface.co/{'someone/' if '/' not in repo_id else ''}{repo_id}")

    def upload_folder(self, repo_id, folder_path, commit_message=None, ignore_patterns=None, **kwargs):
        from types import SimpleNamespace

        import httpx2
        from huggingface_hub.errors import HfHubHTTPError

        if self.refuse_with:
            response = httpx2.Response(
                self.refuse_with, request=httpx2.Request("POST", "https://huggingface.co")
            )
            raise HfHubHTTPError("refused", response=response)
        self.calls.append(("upload_folder", repo_id))
        self.uploaded = {
            str(p.relative_to(folder_path)): p.read_bytes()
            for p in Path(folder_path).rglob("*")
            if p.is_file()
        }
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")


@pytest.mark.parametrize("refuse_with", [None, 403])
def test_publishing_creates_the_repository_then_uploads_the_staged_folder(tiny_run, monkeypatch, refuse_with):
    from huggingface_hub import HfApi, constants

    from recipes.hub import PublishError, publish_run

    hub = StandInHub(refuse_with)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: hub.create_repo(*a, **k))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, *a, **k: hub.upload_folder(*a, **k))
    if refuse_with:
        with pytest.raises(PublishError, match="HTTP 403.*write access"):
            publish_run(tiny_run["run"], "tiny-cman", token="hf_test")
        return
    url = publish_run(tiny_run["run"], "tiny-cman", token="hf_test", private=True)
    assert url == "https://huggingface.co/someone/tiny-cman/commit/abc"
    assert hub.calls[0] == ("create_repo", "tiny-cman", True)
    assert hub.calls[1][:2] == ("upload_folder", "someone/tiny-cman")  # the namespaced id the Hub returned
    card = hub.uploaded["README.md"].decode()
    assert 'model_id = "someone/tiny-cman"' in card  # the snippet loads what was created
    assert "model.safetensors" in hub.uploaded and not any(n.startswith("checkpoint-") for n in hub.uploaded)
