import itertools

import pytest
import torch
from transformers import AutoModel, BertConfig

from modeling.cman import CmanConfig, CmanModel, format_parameter_table, parameter_counts
from modeling.cman.modeling_cman import MODALITY_TYPE_IDS, max_margin_loss
from tests.modeling_common import ModelTesterMixin
from tests.tiny import (
    AUDIO_FRAMES,
    IMAGE_SIZE,
    MEL_BINS,
    TINY_FUSION,
    save_tiny_pretrained_towers,
    save_tiny_whisper,
    tiny_cman_config,
    tiny_transcribing_config,
    tiny_whisper_config,
)

BATCH = 4
MODALITY_INPUTS = {
    "text": ("input_ids", "attention_mask"),
    "audio": ("input_values",),
    "image": ("pixel_values",),
}


def cman_inputs(config: CmanConfig, batch_size: int = BATCH, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, config.text_config.vocab_size, (batch_size, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 6:] = 0  # one padded caption
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "input_values": torch.randn(batch_size, AUDIO_FRAMES, MEL_BINS, generator=generator),
        "pixel_values": torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
    }


class TestCmanModel(ModelTesterMixin):
    model_class = CmanModel
    forward_kwargs = {"fuse": True, "return_loss": True}

    def get_config(self):
        return tiny_cman_config()

    def get_inputs(self, config):
        return cman_inputs(config)


SUBSETS = [s for n in (1, 2, 3) for s in itertools.combinations(("text", "audio", "image"), n)]


@pytest.mark.parametrize("modalities", SUBSETS, ids=lambda s: "+".join(s))
def test_forward_with_any_subset_of_modalities(modalities):
    config = tiny_cman_config()
    model = CmanModel(config).eval()
    inputs = {k: v for m in modalities for k, v in cman_inputs(config).items() if k in MODALITY_INPUTS[m]}
    output = model(**inputs, fuse=len(modalities) > 1, return_loss=len(modalities) > 1)
    for modality in ("text", "audio", "image"):
        embeds = getattr(output, f"{modality}_embeds")
        if modality in modalities:
            assert embeds.shape == (BATCH, config.projection_dim)
            torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(BATCH))
        else:
            assert embeds is None
    if len(modalities) > 1:
        assert output.fused_embeds.shape == (BATCH, config.projection_dim)
        torch.testing.assert_close(output.fused_embeds.norm(dim=-1), torch.ones(BATCH))
        assert torch.isfinite(output.loss)
        first, second = modalities[:2]
        logits = getattr(output, f"logits_{first}_{second}")
        torch.testing.assert_close(
            logits, getattr(output, f"{first}_embeds") @ getattr(output, f"{second}_embeds").T
        )
    else:
        assert output.fused_embeds is None and output.loss is None


def test_single_modality_embedding_does_not_depend_on_the_other_modalities():
    config = tiny_cman_config()
    model = CmanModel(config).eval()
    inputs = cman_inputs(config)
    with torch.no_grad():
        all_three = model(**inputs)
        text_only = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        image_only = model.get_image_features(inputs["pixel_values"])
        audio_only = model.get_audio_features(input_values=inputs["input_values"])
    torch.testing.assert_close(all_three.text_embeds, text_only)
    torch.testing.assert_close(all_three.image_embeds, image_only)
    torch.testing.assert_close(all_three.audio_embeds, audio_only)


def test_padding_tokens_do_not_change_the_text_embedding():
    config = tiny_cman_config()
    model = CmanModel(config).eval()
    ids = torch.randint(3, 300, (1, 6))
    padded = torch.cat([ids, torch.full((1, 4), config.text_config.pad_token_id)], dim=1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_text_features(ids), model.get_text_features(padded, mask), atol=1e-5, rtol=0
        )


def brute_force_max_margin(scores: torch.Tensor, margin: float, hardest: bool) -> torch.Tensor:
    n = scores.shape[0]
    total_rows, total_cols = 0.0, 0.0
    for i in range(n):
        row = [max(0.0, margin + scores[i, j].item() - scores[i, i].item()) for j in range(n) if j != i]
        col = [max(0.0, margin + scores[j, i].item() - scores[i, i].item()) for j in range(n) if j != i]
        total_rows += max(row) if hardest else sum(row)
        total_cols += max(col) if hardest else sum(col)
    return torch.tensor((total_rows + total_cols) / n)


@pytest.mark.parametrize("negatives", ["hardest", "all"])
def test_max_margin_loss_equals_brute_force_reference(negatives):
    torch.manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    scores = a @ b.T
    expected = brute_force_max_margin(scores, 0.2, negatives == "hardest")
    torch.testing.assert_close(
        max_margin_loss(scores, 0.2, negatives), expected.float(), rtol=1e-5, atol=1e-6
    )


def test_duplicated_items_are_never_negatives():
    scores = torch.tensor([[0.9, 0.9, 0.1], [0.9, 0.9, 0.2], [0.0, 0.1, 0.8]])
    groups = torch.tensor([7, 7, 3])
    masked = max_margin_loss(scores, 0.2, "hardest", groups[:, None] == groups[None, :])
    # Without the duplicate rows 0/1, the hardest violations: row0 -> col2 (0.1), row1 -> col2 (0.2), row2 -> col1.
    expected = (0.0 + 0.0 + 0.0) / 3 + (0.0 + 0.0 + max(0, 0.2 + 0.2 - 0.8)) / 3
    torch.testing.assert_close(masked, torch.tensor(expected))
    assert max_margin_loss(scores, 0.2, "hardest") > masked


def test_infonce_loss_matches_cross_entropy():
    config = tiny_cman_config(loss_type="infonce", temperature=0.1)
    model = CmanModel(config).eval()
    inputs = {k: v for k, v in cman_inputs(config).items() if k != "input_values"}
    output = model(**inputs, return_loss=True)
    logits = output.logits_text_image / 0.1
    labels = torch.arange(BATCH)
    expected = (
        torch.nn.functional.cross_entropy(logits, labels)
        + torch.nn.functional.cross_entropy(logits.T, labels)
    ) / 2
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)
    assert isinstance(model.logit_scale, torch.nn.Parameter)


def train_steps(model, inputs, steps: int, lr: float = 1e-3, schedule=None) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for step in range(steps):
        if schedule is not None:
            schedule(step)
        loss = model(**inputs, return_loss=True).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return losses


@pytest.mark.parametrize(("loss_type", "negatives"), [("max_margin", "all"), ("infonce", "hardest")])
def test_loss_decreases_over_twenty_steps_on_a_fixed_batch(loss_type, negatives):
    config = tiny_cman_config(loss_type=loss_type, max_margin_negatives=negatives)
    losses = train_steps(CmanModel(config).train(), cman_inputs(config, batch_size=8), steps=20)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], losses


def test_hardest_negatives_keep_improving_after_an_all_negatives_warm_up():
    """From random features the hardest-negative loss alone collapses every embedding onto one point (loss =
    2 * margin per pair); warmed up with all negatives, it then goes on decreasing below that level."""
    config = tiny_cman_config(max_margin_negatives="hardest")
    model = CmanModel(config).train()

    def warm_up(step):
        model.config.max_margin_negatives = "all" if step < 20 else "hardest"

    losses = train_steps(model, cman_inputs(config, batch_size=8), steps=40, schedule=warm_up)
    collapsed = 3 * 2 * config.margin
    assert losses[-1] < losses[20] and losses[-1] < collapsed, losses[20:]


def test_towers_are_frozen_and_new_parts_trainable():
    model = CmanModel(tiny_cman_config())
    for name, parameter in model.named_parameters():
        is_tower = name.split(".")[0] in ("text_model", "audio_model", "vision_model")
        assert parameter.requires_grad != is_tower, name
    unfrozen = CmanModel(tiny_cman_config(freeze_encoders=False))
    assert all(p.requires_grad for p in unfrozen.parameters())


def test_lora_trains_only_adapters_projections_and_fusion_and_merges_exactly(tmp_path):
    config = tiny_cman_config()
    model = CmanModel(config)
    targets = model.lora_target_modules()
    assert len(targets) == 3 * 2 * 2  # three towers x two layers x (query, value)
    peft_model = model.apply_lora(r=4, alpha=8, dropout=0.0)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable)
    for name in trainable:
        assert "lora_" in name or "modules_to_save" in name, name
    for module in model.trainable_modules():
        assert any(f"{module}.modules_to_save" in n for n in trainable), module
    # Make LoRA non-trivial, then check save/load of the adapter and merging keep the outputs.
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    peft_model.eval()
    inputs = cman_inputs(config)
    with torch.no_grad():
        expected = peft_model(**inputs, fuse=True)
    peft_model.save_pretrained(tmp_path / "adapter")
    from peft import PeftModel

    torch.manual_seed(0)
    reloaded = PeftModel.from_pretrained(CmanModel(config), tmp_path / "adapter").eval()
    merged = peft_model.merge_and_unload()
    assert isinstance(merged, CmanModel) and not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        for candidate in (reloaded(**inputs, fuse=True), merged(**inputs, fuse=True)):
            for key in ("text_embeds", "audio_embeds", "image_embeds", "fused_embeds"):
                torch.testing.assert_close(candidate[key], expected[key], rtol=1e-4, atol=1e-5)
    # The merged model saves and reloads as a plain CMAN.
    merged.save_pretrained(tmp_path / "merged")
    again = AutoModel.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs).image_embeds, expected.image_embeds, rtol=1e-4, atol=1e-5)


def test_parameter_table_counts_every_parameter_once():
    model = CmanModel(tiny_cman_config())
    peft_model = model.apply_lora(r=4, alpha=8)
    counts = parameter_counts(peft_model)
    total = sum(p.numel() for n, p in peft_model.named_parameters() if ".original_module." not in n)
    assert sum(row["total"] for row in counts.values()) == total
    assert counts["text tower"]["trainable"] == counts["text tower"]["lora"] > 0
    assert counts["fusion transformer"]["trainable"] == counts["fusion transformer"]["total"]
    table = format_parameter_table(peft_model)
    assert "| **total** |" in table and "fusion transformer" in table


def test_pretrained_towers_load_from_checkpoints_in_the_hub_format(tmp_path):
    """The seed's path (roberta-base, AST, ViT-B/16 by name) exercised with tiny random checkpoints saved locally."""
    paths = save_tiny_pretrained_towers(tmp_path)
    config = CmanConfig.from_towers(
        text=str(paths["text"]),
        audio=str(paths["audio"]),
        vision=str(paths["vision"]),
        **TINY_FUSION,
    )
    assert config.text_model_name_or_path == str(paths["text"])
    model = CmanModel.from_encoders_pretrained(config)
    for modality, attribute in (("text", "text_model"), ("audio", "audio_model"), ("vision", "vision_model")):
        reference = AutoModel.from_pretrained(paths[modality]).state_dict()
        for key, value in getattr(model, attribute).state_dict().items():
            torch.testing.assert_close(value, reference[key], rtol=0, atol=0, msg=f"{modality}: {key}")
        assert not any(p.requires_grad for p in getattr(model, attribute).parameters())
    # Saving keeps the tower weights inside CMAN's own safetensors: reloading needs no tower checkpoint.
    model.save_pretrained(tmp_path / "cman")
    for path in paths.values():
        for file in path.glob("*.safetensors"):
            file.unlink()
    reloaded = AutoModel.from_pretrained(tmp_path / "cman")
    torch.testing.assert_close(reloaded.text_model.state_dict(), model.text_model.state_dict())


def test_whisper_tower_runs_on_a_short_window_with_the_position_table_sliced(tmp_path):
    whisper = save_tiny_whisper(tmp_path / "whisper", max_source_positions=50)
    config = tiny_cman_config()
    config = CmanConfig.from_towers(
        text=config.text_config,
        audio=str(whisper),
        vision=config.vision_config,
        audio_window_seconds=0.5,
        **TINY_FUSION,
    )
    assert config.audio_config.max_source_positions == 25 and config.audio_window_seconds == 0.5
    model = CmanModel.from_encoders_pretrained(config).eval()
    full = AutoModel.from_pretrained(whisper).get_encoder()
    torch.testing.assert_close(model.audio_model.embed_positions.weight, full.embed_positions.weight[:25])
    embeds = model.get_audio_features(input_features=torch.randn(2, MEL_BINS, 50))
    assert embeds.shape == (2, 16)
    with pytest.raises(ValueError, match="frames"):
        model.get_audio_features(input_features=torch.randn(2, MEL_BINS, 100))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fusion_norm", "batchnorm"),
        ("fusion_ffn", "moe"),
        ("fusion_position_embedding", "alibi"),
        ("loss_type", "triplet"),
        ("max_margin_negatives", "some"),
        ("fusion_num_attention_heads", 7),
        ("fusion_dropout", 1.5),
        ("margin", -0.1),
        ("temperature", 0.0),
    ],
)
def test_invalid_config_values_raise_an_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_cman_config(**{field: value})


def test_a_tower_config_of_the_wrong_kind_is_refused():
    with pytest.raises(ValueError, match="vision_config"):
        tiny_cman_config(vision_config=BertConfig())


def test_loading_a_checkpoint_of_another_model_gives_a_clear_error(tmp_path):
    paths = save_tiny_pretrained_towers(tmp_path)
    with pytest.raises(ValueError, match="not a CMAN"):
        CmanModel.from_pretrained(paths["text"])


def test_a_checkpoint_with_missing_weights_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    CmanModel(tiny_cman_config()).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    save_file(
        {k: v for k, v in state.items() if not k.startswith("fusion_encoder.layers.1")},
        tmp_path / "model.safetensors",
        metadata={"format": "pt"},
    )
    with pytest.raises(ValueError, match="complete CmanModel checkpoint"):
        CmanModel.from_pretrained(tmp_path)


def test_bad_forward_inputs_raise_clear_errors():
    config = tiny_cman_config()
    model = CmanModel(config)
    inputs = cman_inputs(config)
    with pytest.raises(ValueError, match="at least one modality"):
        model()
    with pytest.raises(ValueError, match="same batch size"):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"][:2])
    with pytest.raises(ValueError, match="two or more"):
        model(pixel_values=inputs["pixel_values"], fuse=True)
    with pytest.raises(ValueError, match="input_values"):
        model(input_features=torch.randn(2, 80, 3000))


@pytest.mark.parametrize(
    "overrides",
    [
        {"fusion_norm": "rmsnorm", "fusion_ffn": "swiglu", "fusion_position_embedding": "rotary"},
        {"fusion_norm": "scalenorm", "fusion_ffn": "glu", "fusion_position_embedding": "sinusoidal"},
        {"fusion_pooling": "mean"},
    ],
)
def test_fusion_layer_variants_train(overrides):
    config = tiny_cman_config(**overrides)
    model = CmanModel(config).train()
    inputs = cman_inputs(config)
    loss = model(**inputs, fuse=True, return_loss=True).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.fusion_encoder.layers[0].attention.q_proj.weight.grad.abs().sum() > 0


def test_fusion_attention_map_covers_every_token_of_the_fused_sequence():
    config = tiny_cman_config()
    model = CmanModel(config).eval()
    inputs = cman_inputs(config)
    output = model(**inputs, fuse=True, output_attentions=True)
    assert len(output.fusion_attentions) == config.fusion_num_hidden_layers
    types = output.fusion_token_type_ids
    assert types[0] == 3 and set(types.tolist()) == {0, 1, 2, 3}
    attention = output.fusion_attentions[-1]
    assert attention.shape[-1] == attention.shape[-2] == len(types)
    torch.testing.assert_close(attention.sum(-1), torch.ones_like(attention.sum(-1)))
    padded_key = 1 + 6  # the first caption is padded from position 6
    assert attention[0, :, :, padded_key].abs().max() == 0


def test_encode_gives_every_combination_with_the_towers_run_once():
    config = tiny_cman_config()
    model = CmanModel(config).eval()
    inputs = cman_inputs(config)
    calls = []
    model.vision_model.register_forward_hook(lambda *args: calls.append("image"))
    with torch.no_grad():
        encoded = model.encode(
            [("text",), ("image",), ("text", "audio"), ("text", "audio", "image")], **inputs
        )
        assert calls == ["image"]
        single = model(**inputs)
        fused = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                      input_values=inputs["input_values"], fuse=True)  # fmt: skip
    torch.testing.assert_close(encoded[("text",)], single.text_embeds)
    torch.testing.assert_close(encoded[("image",)], single.image_embeds)
    torch.testing.assert_close(encoded[("text", "audio")], fused.fused_embeds)
    with pytest.raises(ValueError, match="needs inputs"):
        model.encode([("audio",)], input_ids=inputs["input_ids"])


# ---------------------------------------------------------------------------------------------- transcripts
@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    return save_tiny_whisper(tmp_path_factory.mktemp("whisper"), max_source_positions=50)


def transcript_inputs(batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    transcript_ids = torch.randint(5, 300, (batch_size, 5), generator=generator)
    return {
        "input_features": torch.randn(batch_size, MEL_BINS, 100, generator=generator),
        "transcript_input_ids": transcript_ids,
        "transcript_attention_mask": torch.ones_like(transcript_ids),
    }


def test_transcribe_audio_needs_a_whisper_tower_and_its_checkpoint():
    with pytest.raises(ValueError, match="transcribe_audio=True needs a Whisper audio tower"):
        tiny_cman_config(transcribe_audio=True)  # AST audio tower
    config = tiny_cman_config(audio_config=tiny_whisper_config(), transcribe_audio=True)
    with pytest.raises(ValueError, match="audio_model_name_or_path"):
        CmanModel.from_encoders_pretrained(config)


def test_the_transcript_joins_the_audio_as_its_own_fusion_segment(tiny_whisper):
    model = CmanModel.from_encoders_pretrained(tiny_transcribing_config(tiny_whisper)).eval()
    inputs = transcript_inputs()
    with torch.no_grad():
        output = model(**inputs, output_attentions=True)
        other = model.get_audio_features(
            **{**inputs, "transcript_input_ids": inputs["transcript_input_ids"].flip(0)}
        )
    types = output.fusion_token_type_ids.tolist()
    assert types.count(MODALITY_TYPE_IDS["transcript"]) == 5 and MODALITY_TYPE_IDS["audio"] in types
    torch.testing.assert_close(output.audio_embeds, model.get_audio_features(**inputs))
    assert not torch.allclose(other, output.audio_embeds)  # what was said changes the audio embedding
    with pytest.raises(ValueError, match="transcript_input_ids.*processor.decode_transcripts"):
        model.get_audio_features(input_features=inputs["input_features"])
    plain = CmanModel(tiny_cman_config(audio_config=tiny_whisper_config())).eval()
    with pytest.raises(ValueError, match="does not read transcripts"):
        plain.get_audio_features(**inputs)
    with pytest.raises(ValueError, match="no speech recogniser"):
        plain.transcribe(inputs["input_features"])


def test_the_speech_recognizer_is_the_pretrained_whisper_and_never_trains(tiny_whisper, tmp_path):
    from transformers import WhisperForConditionalGeneration

    model = CmanModel.from_encoders_pretrained(tiny_transcribing_config(tiny_whisper))
    pretrained = WhisperForConditionalGeneration.from_pretrained(tiny_whisper)
    torch.testing.assert_close(model.speech_recognizer.state_dict(), pretrained.state_dict())
    features = transcript_inputs()["input_features"]
    expected = pretrained.generate(
        input_features=features,
        max_new_tokens=6,
        repetition_penalty=model.config.transcript_repetition_penalty,
    )
    before = model.transcribe(features)
    assert torch.equal(before, expected)
    assert not torch.equal(model.transcribe(features + torch.randn_like(features)), before)  # it listens
    with torch.no_grad():
        tower_before = model.audio_model(features).last_hidden_state
    peft_model = model.apply_lora(r=4, alpha=8, dropout=0.0)
    assert not any(
        "speech_recognizer" in name for name, p in peft_model.named_parameters() if p.requires_grad
    )
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # adapters that change the audio tower
            torch.nn.init.normal_(parameter, std=1.0)
    with torch.no_grad():
        assert not torch.allclose(model.audio_model(features).last_hidden_state, tower_before)  # LoRA acts
    peft_model.train()
    assert not model.speech_recognizer.training
    peft_model(
        **transcript_inputs(), input_ids=torch.randint(5, 300, (3, 7)), return_loss=True
    ).loss.backward()
    assert all(p.grad is None for p in model.speech_recognizer.parameters())
    merged = peft_model.merge_and_unload()
    assert torch.equal(merged.transcribe(features), before)  # merging LoRA leaves the recogniser untouched
    merged.save_pretrained(tmp_path / "cman")
    reloaded = CmanModel.from_pretrained(tmp_path / "cman").eval()
    assert torch.equal(reloaded.transcribe(features), before)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.get_audio_features(**transcript_inputs()),
            merged.eval().get_audio_features(**transcript_inputs()),
        )
