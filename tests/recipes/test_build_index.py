"""`recipes/build_index.py` on the tiny trained run: sharded embeddings equal one pass over the split, the flat index
is exact, a run killed by SIGKILL resumes with only the missing shards, and a folder of another build is refused."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recipes.evaluation.index import EmbeddingStore, ManifestMismatchError, embed_texts, load_index
from recipes.evaluation.ranking import search_topk
from tests.runs import ENV, REPO, run_ok
from tests.tiny import save_tiny_retrieval_dataset

ROWS, SHARD, BATCH, MODALITY = 160, 4, 4, "text+audio"  # 40 shards; a composed embedding with transcripts
SHARDS = ROWS // SHARD


def build_command(model: Path, dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "recipes/build_index.py"), "--model", str(model), "--dataset", str(dataset),
            "--split", "train", "--modality", MODALITY, "--output_dir", str(output_dir), "--shard_size", str(SHARD),
            "--batch_size", str(BATCH), *extra]  # fmt: skip


run = run_ok


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return save_tiny_retrieval_dataset(
        tmp_path_factory.mktemp("index_data") / "dataset", sizes={"train": ROWS}
    )


@pytest.fixture(scope="module")
def reference(tiny_run, dataset, tmp_path_factory) -> dict:
    """An unbroken build of the tiny run's text+audio embeddings, with a text query."""
    output_dir = tmp_path_factory.mktemp("reference") / "index"
    result = run(
        build_command(
            tiny_run["run"], dataset, output_dir, "--query_text", "a red circle number 7", "--k", "3"
        )
    )
    return {"dir": output_dir, "stdout": result.stdout, "stderr": result.stderr}


def shard_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    store = EmbeddingStore(folder)
    return (
        np.concatenate([block for _, block in store.embeddings().blocks()]),
        store.row_ids(),
        store.group_ids(),
    )


def test_sharded_embeddings_equal_one_pass_and_the_flat_index_is_exact(tiny_run, dataset, reference):
    from recipes.data.retrieval import (
        RetrievalCollator,
        RetrievalColumns,
        add_transcripts,
        load_retrieval_dataset,
        prepare_for_lazy_decoding,
    )
    from recipes.evaluation.retrieval import embed_dataset, load_model_and_processor

    folder = reference["dir"]
    assert "Embedded 40 shard(s) in this run, skipped 0" in reference["stderr"]
    assert len(list((folder / "embeddings").glob("shard-*.rows.npy"))) == SHARDS
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (
        manifest["num_rows"] == ROWS and manifest["shard_size"] == SHARD and manifest["modality"] == MODALITY
    )
    assert manifest["model_fingerprint"].startswith("sha256:") and manifest["dim"] == 16
    embeddings, rows, groups = shard_arrays(folder)

    # The whole split in one pass, as evaluation embeds it (transcripts first: the tiny run's Whisper transcribes).
    model, processor = load_model_and_processor(str(tiny_run["run"]), "cpu")
    columns = RetrievalColumns()
    split = prepare_for_lazy_decoding(load_retrieval_dataset(str(dataset), split="train"), columns)
    split = add_transcripts(split, model, processor, columns, BATCH)
    collator = RetrievalCollator(processor, columns=columns, modalities=("text", "audio"))
    expected, expected_groups = embed_dataset(model, collator, split, [("text", "audio")], BATCH)
    expected = expected[("text", "audio")]
    assert embeddings.shape == (ROWS, 16)
    np.testing.assert_allclose(embeddings, expected.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(groups, expected_groups.numpy())
    np.testing.assert_array_equal(rows, np.arange(ROWS))

    config = json.loads((folder / "index_config.json").read_text())
    assert config["index_type"] == "flat" and config["num_vectors"] == ROWS and config["dim"] == 16
    assert config["memory_bytes"] >= ROWS * 16 * 4 and config["build_seconds"] >= 0
    queries = torch.nn.functional.normalize(
        torch.randn(25, 16, generator=torch.Generator().manual_seed(0)), dim=1
    )
    exact_scores, exact_ids = search_topk(queries, expected, k=10)
    scores, ids = load_index(folder).search(queries, 10)
    np.testing.assert_allclose(scores, exact_scores.numpy(), atol=1e-5)
    np.testing.assert_array_equal(ids, exact_ids.numpy())
    # Re-ranking candidates with the shards' exact scores keeps the exact answer.
    reranked_scores, reranked_ids = load_index(folder).search(queries, 10, rerank=30)
    np.testing.assert_array_equal(reranked_ids, exact_ids.numpy())
    np.testing.assert_allclose(reranked_scores, exact_scores.numpy(), atol=1e-5)

    # --query_text: the printed top 3 are the index's answer to the model's text embedding.
    query_scores, query_ids = load_index(folder).search(
        embed_texts(model, processor, ["a red circle number 7"]), 3
    )
    printed = [int(m) for m in re.findall(r"^\s+\d\. row\s+(\d+)", reference["stdout"], re.MULTILINE)]
    assert printed == query_ids[0].tolist()
    assert "Top 3 for 'a red circle number 7' (flat index):" in reference["stdout"]


def test_a_build_killed_by_sigkill_resumes_with_only_the_missing_shards(
    tiny_run, dataset, reference, tmp_path
):
    folder = tmp_path / "index"
    command = build_command(tiny_run["run"], dataset, folder)
    log = open(tmp_path / "killed.log", "w")
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    first = folder / "embeddings" / "shard-00000.npy"
    try:
        started = time.monotonic()
        while not first.exists():
            assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() - started < 300, "no shard after 300 s"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)  # no clean-up of any kind
    finally:
        process.wait()
        log.close()
    assert process.returncode == -signal.SIGKILL
    assert not (folder / "index_config.json").exists(), "the build finished before it could be killed"
    store = EmbeddingStore(folder)
    finished = [shard for shard in range(SHARDS) if store.is_complete(shard)]
    assert finished and finished == list(range(len(finished))) and len(finished) < SHARDS
    before = {
        path: (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in (folder / "embeddings").glob("shard-*")
    }

    result = run(command)
    done, rest = len(finished), SHARDS - len(finished)
    assert (
        f"{done} of {SHARDS} shard(s) already embedded, skipped; embedding the other {rest}." in result.stderr
    )
    assert f"Embedded {rest} shard(s) in this run, skipped {done}" in result.stderr
    # The finished shards were not rewritten (os.replace would give them a new inode and mtime).
    for path, stamp in before.items():
        if int(path.name[len("shard-") :][:5]) in finished:  # shard-00003.npy, shard-00003.rows.npy...
            assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, path.name
    assert not list((folder / "embeddings").glob(".*tmp-*"))

    # Shards and index equal the unbroken build's.
    for resumed, unbroken in zip(shard_arrays(folder), shard_arrays(reference["dir"]), strict=True):
        np.testing.assert_array_equal(resumed, unbroken)
    np.testing.assert_array_equal(np.load(folder / "ids.npy"), np.load(reference["dir"] / "ids.npy"))
    queries = np.random.default_rng(0).standard_normal((25, 16)).astype(np.float32)
    for a, b in zip(
        load_index(folder).search(queries, 10), load_index(reference["dir"]).search(queries, 10), strict=True
    ):
        np.testing.assert_array_equal(a, b)

    again = run(command)  # nothing left to do: every shard skipped, the index kept
    assert f"{SHARDS} of {SHARDS} shard(s) already embedded, skipped; embedding the other 0." in again.stderr
    assert "The flat index in" in again.stderr and "is up to date: kept." in again.stderr


def test_a_folder_of_another_build_is_refused_with_the_field_and_the_fix(
    tiny_run, dataset, reference, tmp_path
):
    from recipes.build_index import main

    folder = tmp_path / "index"
    shutil.copytree(reference["dir"], folder)
    arguments = build_command(tiny_run["run"], dataset, folder)[2:]
    stamps = {path: path.stat().st_mtime_ns for path in (folder / "embeddings").iterdir()}

    with pytest.raises(ManifestMismatchError, match="disagrees with this run on shard_size") as error:
        main([*arguments, "--shard_size", "8"])
    assert "shard_size: 4 there, 8 in this run" in str(error.value) and "--overwrite" in str(error.value)

    other_model = tmp_path / "other_model"
    shutil.copytree(tiny_run["run"], other_model)
    config = json.loads((other_model / "config.json").read_text())
    (other_model / "config.json").write_text(json.dumps({**config, "margin": 0.5}))
    with pytest.raises(ManifestMismatchError, match=r"disagrees with this run on model_fingerprint \("):
        main([*arguments, "--model", str(other_model)])

    with pytest.raises(ManifestMismatchError, match="on max_items, modality, num_rows"):
        main([*arguments, "--modality", "image", "--max_items", "10"])
    assert {path: path.stat().st_mtime_ns for path in (folder / "embeddings").iterdir()} == stamps

    # The command line says the same and exits with status 2; --overwrite starts the folder afresh.
    refused = subprocess.run([*build_command(tiny_run["run"], dataset, folder), "--shard_size", "8"], cwd=REPO,
                             env=ENV, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert refused.returncode == 2 and "error: " in refused.stderr and "on shard_size" in refused.stderr
    summary = main(
        [*arguments, "--modality", "image", "--max_items", "10", "--shard_size", "8", "--overwrite"]
    )
    assert summary["num_shards"] == 2 and summary["shards_embedded"] == 2 and summary["shards_skipped"] == 0
    assert json.loads((folder / "manifest.json").read_text())["modality"] == "image"
    assert sorted(p.name for p in (folder / "embeddings").glob("shard-?????.npy")) == [
        "shard-00000.npy", "shard-00001.npy"
    ]  # fmt: skip
