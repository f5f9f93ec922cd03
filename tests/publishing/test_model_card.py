"""The model card the training recipe writes into its run folder (model_cards/card.py)."""

import json
import re
import shutil
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from model_cards import CardError, build_model_card, write_model_card
from model_cards.card import tower_base_model
from tests.runs import ENV


def eval_figures(run_dir) -> dict:
    """`(split, task type, metric type) -> value` for every indexed figure of eval_results.json, keyed as the card
    keys them (worked out here from the file, not with the card's code)."""
    results = json.loads((run_dir / "eval_results.json").read_text())["results"]
    figures = {}
    for split, split_results in results.items():
        for direction, metrics in {**split_results["directions"], **split_results["composed"]}.items():
            query, gallery = direction.split("_to_")
            task = f"{query.replace('+', '-and-')}-to-{gallery}-retrieval"
            for key, metric in (("R@1", "r_at_1"), ("R@5", "r_at_5"), ("R@10", "r_at_10"), ("median_rank", "median_rank")):  # fmt: skip
                figures[(split, task, metric)] = metrics[key]
    return figures


def test_the_recipe_writes_a_card_that_parses_and_whose_model_index_is_eval_results_json(tiny_run):
    card = ModelCard.load(tiny_run["run"] / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "feature-extraction"
    assert data.license == "apache-2.0" and "cman" in data.tags and "custom_code" in data.tags
    assert data.datasets == ["dataset"]
    expected = eval_figures(tiny_run["run"])
    indexed = {(r.dataset_split, r.task_type, r.metric_type): r.metric_value for r in data.eval_results}
    assert (
        len(data.eval_results) == len(indexed) == len(expected) == 7 * 4
    )  # 6 directions + 1 composed, 4 figures
    assert indexed == expected  # every number, exactly as measured
    # The prose shows the same figures beside chance, and the run's configuration.
    results = json.loads((tiny_run["run"] / "eval_results.json").read_text())["results"]["test"]
    row = results["directions"]["text_to_image"]
    assert f"| test | text → image | {row['R@1']:.3f} ({row['chance']['R@1']:.3f}) |" in card.text
    assert "learning rate 0.001" in card.text and "LoRA r=4, alpha=8" in card.text
    assert "`train` 16, `validation` 8" in card.text
    for plot in ("recall_at_k.png", "loss.png", "tsne.png", "fusion_attention.png"):
        assert f"]({plot})" in card.text


def test_the_load_snippet_of_the_card_runs_in_a_fresh_process_outside_the_repository(tiny_run, tmp_path):
    card = ModelCard.load(tiny_run["run"] / "README.md")
    snippet = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    assert f'model_id = "{tiny_run["run"]}"' in snippet
    script = tmp_path / "snippet.py"
    checks = """
assert type(model).__module__.startswith("transformers_modules"), type(model)  # the folder's code, not the repo's
for name, embeds, rows in (("text", text, 2), ("image", image, 2), ("audio", audio, 1), ("composed", composed, 1)):
    assert embeds.shape == (rows, model.config.projection_dim), (name, embeds.shape)
    assert torch.allclose(embeds.norm(dim=-1), torch.ones(rows), atol=1e-5), name
print("SNIPPET OK")
"""
    script.write_text(snippet + checks)
    env = {key: value for key, value in ENV.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SNIPPET OK" in result.stdout and "tensor([[" in result.stdout


def test_a_folder_without_results_or_config_gets_an_error_naming_the_fix(tiny_run, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_run["run"], folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    (folder / "eval_results.json").unlink()
    with pytest.raises(CardError, match="evaluate the model first"):
        build_model_card(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CardError, match="not a saved model folder"):
        build_model_card(folder)


def test_baselines_are_shown_beside_the_model_and_the_model_id_is_the_repository(tiny_run, tmp_path):
    results = json.loads((tiny_run["run"] / "eval_results.json").read_text())["results"]["test"]["directions"]
    weaker = {d: {**m, "R@1": m["R@1"] / 2, "R@10": m["R@10"] / 2} for d, m in results.items()}
    ablation = tmp_path / "ablation.json"
    ablation.write_text(json.dumps({"late fusion, seed 0": {"metrics": weaker}}))
    card = build_model_card(tiny_run["run"], "someone/tiny-cman", baselines=ablation)
    assert 'model_id = "someone/tiny-cman"' in card.text and card.data.model_name == "someone/tiny-cman"
    lines = card.text.split("### Beside simpler baselines")[1].splitlines()
    late = next(line for line in lines if line.startswith("| late fusion, seed 0 |"))
    text_to_image = weaker["text_to_image"]
    assert f"{text_to_image['R@1']:.3f} / {text_to_image['R@10']:.3f}" in late
    assert any(line.startswith("| **this model** |") for line in lines)
    assert any(line.startswith("| chance |") for line in lines)


def test_base_models_come_from_hub_ids_and_from_the_towers_own_cards(tmp_path):
    tower = tmp_path / "tower"
    tower.mkdir()
    (tower / "README.md").write_text(
        "---\nlicense: mit\nbase_model: openai/whisper-tiny.en\n---\n# A tower\n"
    )
    assert tower_base_model(str(tower)) == "openai/whisper-tiny.en"
    assert (
        tower_base_model("tower", base=tmp_path) == "openai/whisper-tiny.en"
    )  # relative to the run's directory
    assert tower_base_model("roberta-base") == "roberta-base"
    assert (
        tower_base_model("MIT/ast-finetuned-audioset-10-10-0.4593")
        == "MIT/ast-finetuned-audioset-10-10-0.4593"
    )
    (tmp_path / "bare").mkdir()
    assert tower_base_model(str(tmp_path / "bare")) is None  # a folder without a card names nothing
    assert tower_base_model("/no/such/folder/anywhere") is None
    assert tower_base_model("outputs/towers/no-such-tower") is None  # a local path, not an owner/name id


def test_write_model_card_round_trips(tiny_run, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_run["run"], folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    path = write_model_card(folder, "someone/tiny")
    assert ModelCard.load(path).data.model_name == "someone/tiny"
