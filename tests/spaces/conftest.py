"""A real retrieval Space server (spaces/cman-retrieval/app.py in a subprocess on 127.0.0.1) over the tiny run."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.runs import ENV, REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_space(
    app: str, arguments: list[str], log_path, timeout: float = 300
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **ENV,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "OMP_NUM_THREADS": "2",
    }
    log = open(log_path, "w")  # noqa: SIM115  (closed when the server stops)
    process = subprocess.Popen(
        [sys.executable, str(REPO / app), *arguments, "--port", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.close()
            raise RuntimeError(
                f"The Space exited with {process.returncode}:\n{open(log_path).read()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"The Space did not answer within {timeout} s:\n{open(log_path).read()[-4000:]}")


@pytest.fixture(scope="session")
def retrieval_space(tiny_run, tmp_path_factory):
    """`{"url", "log", "cache"}` of a running retrieval Space over the tiny run and its dataset's `test` split."""
    root = tmp_path_factory.mktemp("retrieval_space")
    log = root / "space.log"
    process, url = start_space(
        "spaces/cman-retrieval/app.py",
        ["--model", str(tiny_run["run"]), "--dataset", str(tiny_run["dataset"]), "--split", "test",
         "--cache_dir", str(root / "cache"), "--concurrency", "1"],
        log,
    )  # fmt: skip
    yield {"url": url, "log": log, "cache": root / "cache", "process": process}
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def artifacts_dir():
    """Where tests leave files for people to look at (screenshots, latency figures): $TEST_ARTIFACTS_DIR, else
    outputs/test-artifacts."""
    folder = os.environ.get("TEST_ARTIFACTS_DIR") or str(REPO / "outputs" / "test-artifacts")
    os.makedirs(folder, exist_ok=True)
    return folder


def save_tiny_captioning_model(folder) -> None:
    """A random tiny generator of the gated cross-attention family with its processor, saved to `folder`. Its head is
    untied from the embeddings (a tied random head repeats the prompt's last token, a newline: an empty caption) and
    its gates are opened (tanh(1)), so it writes visible tokens that depend on the image or the sound."""
    from pathlib import Path

    import torch

    from modeling.gated_xattn import GatedXAttnForConditionalGeneration
    from tests.tiny import tiny_decoder_config, tiny_gated_xattn_config, tiny_gated_xattn_processor

    torch.manual_seed(0)
    config = tiny_gated_xattn_config(
        text_config=tiny_decoder_config(tie_word_embeddings=False), tie_word_embeddings=False
    )
    model = GatedXAttnForConditionalGeneration(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("_gate"):
                parameter.fill_(1.0)
    model.save_pretrained(folder)
    tiny_gated_xattn_processor(Path(folder).parent / "processor_parts").save_pretrained(folder)


@pytest.fixture(scope="session")
def captioning_space(tmp_path_factory):
    """`{"url", "log", "cache", "model", "dataset"}` of a running captioning / VQA Space over a tiny random generator,
    with examples from the tiny tri-modal dataset's `test` split (its sounds are in the `audio` column)."""
    from tests.tiny import save_tiny_retrieval_dataset

    root = tmp_path_factory.mktemp("captioning_space")
    save_tiny_captioning_model(root / "model")
    dataset = save_tiny_retrieval_dataset(root / "dataset")
    log = root / "space.log"
    process, url = start_space(
        "spaces/captioning-vqa/app.py",
        ["--model", str(root / "model"), "--dataset", str(dataset), "--split", "test", "--audio_column", "audio",
         "--cache_dir", str(root / "cache"), "--concurrency", "1"],
        log,
    )  # fmt: skip
    yield {"url": url, "log": log, "cache": root / "cache", "model": root / "model", "dataset": dataset,
           "process": process}  # fmt: skip
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
