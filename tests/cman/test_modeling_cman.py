import itertools

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, BertConfig

from modeling.cman import TOKEN_TYPE_IDS, CmanConfig, CmanModel
from modeling.common.retrieval import parameter_counts
from tests.modeling_common import RetrievalModelTesterMixin
from tests.tiny import (
    AUDIO_FRAMES,
    IMAGE_SIZE,
    MEL_BINS,
    TINY_FUSION,
    TINY_PROJECTION_DIM,
    save_tiny_pretrained_towers,
    save_tiny_whisper,
    tiny_cman_config,
    tiny_transcribing_model,
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


class TestCmanModel(RetrievalModelTesterMixin):
    model_class = CmanModel
    forward_kwargs = {"fuse": True}

    def get_config(self):
        return tiny_cman_config()

    def get_inputs(self, config, batch_size=BATCH, seed=0):
        return cman_inputs(config, batch_size, seed)

    def expected_layers(self, config, modality):
        return config.fusion_encoder_config.num_hidden_layers

    def get_training_config(self):
        # From random features the default hardest-negative loss collapses the space (the loss sticks at
        # 2 x margin per pair; see test_losses.py); the tiny batch trains with InfoNCE.
        return tiny_cman_config(loss_type="infonce")


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
        partners = {"text": ("image", "audio"), "audio": ("text", "image"), "image": ("text", "audio")}
        for modality in modalities:
            partner = next(p for p in partners[modality] if p in modalities)
            torch.testing.assert_close(
                getattr(output, f"logits_per_{modality}"),
                getattr(output, f"{modality}_embeds")
                @ getattr(output, f"{partner}_embeds").T
                * model.inverse_temperature(),
            )
    else:
        assert output.fused_embeds is None and output.loss is None
        assert all(getattr(output, f"logits_per_{m}") is None for m in ("text", "audio", "image"))


def test_texts_and_images_of_different_counts_are_scored_like_clip():
    """As CLIP: 5 candidate labels against 2 images give `logits_per_image` (2, 5) and `logits_per_text` (5, 2)."""
    config = tiny_cman_config()
    model = CmanModel(config).eval()
    inputs = cman_inputs(config, batch_size=5)
    with torch.no_grad():
        output = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"][:2])
    assert output.logits_per_image.shape == (2, 5) and output.logits_per_text.shape == (5, 2)
    torch.testing.assert_close(output.logits_per_image, output.logits_per_text.T)
    with pytest.raises(ValueError, match="same batch size"):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"][:2], fuse=True)
    with pytest.raises(ValueError, match="one row per item"):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"][:2], return_loss=True)


def test_single_modality_embedding_does_not_depend_on_the_other_modalities():
    config = tiny_cman_config()
    model = CmanModel(config).eval()
    inputs = cman_inputs(config)
    with torch.no_grad():
        all_three = model(**inputs)
        text_only = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        image_only = model.get_image_features(inputs["pixel_values"]).pooler_output
        audio_only = model.get_audio_features(input_values=inputs["input_values"]).pooler_output
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
            model.get_text_features(ids).pooler_output,
            model.get_text_features(padded, mask).pooler_output,
            atol=1e-5,
            rtol=0,
        )


def test_forward_loss_is_the_configured_loss_module_on_the_embeddings():
    from modeling.cman.losses import InfoNCELoss, MaxMarginLoss  # the family's own copy

    for config in (tiny_cman_config(loss_type="infonce", temperature=0.1), tiny_cman_config(margin=0.3)):
        model = CmanModel(config).eval()
        inputs = {k: v for k, v in cman_inputs(config).items() if k != "input_values"}
        output = model(**inputs, return_loss=True)
        loss = model.retrieval_loss()
        assert isinstance(loss, InfoNCELoss if config.loss_type == "infonce" else MaxMarginLoss)
        embeds = {"text": output.text_embeds, "image": output.image_embeds}
        torch.testing.assert_close(output.loss, loss(embeds, model.inverse_temperature()))
    assert isinstance(CmanModel(tiny_cman_config(loss_type="infonce")).logit_scale, torch.nn.Parameter)
    assert "logit_scale" not in dict(
        CmanModel(tiny_cman_config()).named_parameters()
    )  # max-margin: no temperature


@pytest.mark.parametrize(("loss_type", "negatives"), [("max_margin", "all"), ("infonce", "hardest")])
def test_loss_decreases_over_twenty_steps_on_a_fixed_batch(loss_type, negatives):
    config = tiny_cman_config(loss_type=loss_type, max_margin_negatives=negatives)
    model = CmanModel(config).train()
    inputs = cman_inputs(config, batch_size=8)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(20):
        loss = model(**inputs, return_loss=True).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < 0.5 * losses[0], losses


def train_with_max_margin(config, warmup_steps: int, steps: int = 40) -> tuple[list[float], list[float]]:
    """Losses and similarity spreads of `steps` AdamW steps with the hardest-negative loss (all negatives for the first
    `warmup_steps`) on one batch of 8."""
    from modeling.cman.losses import MaxMarginLoss

    inputs = cman_inputs(config, batch_size=8)
    torch.manual_seed(0)
    model = CmanModel(config).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses, spreads = [], []
    for step in range(steps):
        output = model(**inputs)
        embeds = {m: output[f"{m}_embeds"] for m in ("text", "audio", "image")}
        loss_module = MaxMarginLoss(config.margin, "all" if step < warmup_steps else "hardest")
        loss = loss_module(embeds)
        losses.append(loss.item())
        spreads.append(loss_module.diagnostics["similarity_spread"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return losses, spreads


def test_hardest_negatives_collapse_a_fusion_only_cman_and_a_warm_up_avoids_it():
    """From random features the fusion-only CMAN embeds everything alike (its pooling token, random, dominates), and
    the hardest-negative loss pulls every embedding onto one point: loss = 2 x margin per pair, no spread. Warmed up
    with all negatives, it goes on decreasing below that level."""
    config = tiny_cman_config(late_fusion_residual=False)
    collapsed = 3 * 2 * config.margin
    cold, spreads = train_with_max_margin(config, warmup_steps=0)
    assert cold[-1] == pytest.approx(collapsed, abs=0.02) and spreads[-1] < 0.01, (cold[-5:], spreads[-1])
    warm, _ = train_with_max_margin(config, warmup_steps=20)
    assert warm[-1] < warm[20] and warm[-1] < 0.8 * collapsed, warm[20:]


def test_the_late_fusion_residual_trains_with_hardest_negatives_from_the_start():
    """With the late-fusion residual an untrained CMAN already tells its inputs apart (the projected tower means
    differ), so the hardest-negative loss has a spread to work with and trains without a warm-up."""
    config = tiny_cman_config()
    assert config.late_fusion_residual
    losses, spreads = train_with_max_margin(config, warmup_steps=0)
    _, fusion_only_spreads = train_with_max_margin(tiny_cman_config(late_fusion_residual=False), 0, steps=1)
    assert spreads[0] > 5 * fusion_only_spreads[0], (spreads[0], fusion_only_spreads[0])
    assert losses[-1] < 0.1 * losses[0], losses[::10]


def test_an_untrained_residual_cman_embeds_a_composed_query_as_late_fusion_does():
    """The fusion output starts at zero, so before training a composed query is late fusion's: the normalised sum of
    its parts' normalised embeddings, each part weighing the same whatever the norm of its tower's projection."""
    config = tiny_cman_config()
    torch.manual_seed(0)
    model = CmanModel(config).eval()
    with torch.no_grad():
        model.image_pooled_projection.weight.mul_(
            10.0
        )  # a part with a much larger raw norm must not dominate
        embeds = model.encode([("text",), ("audio",), ("image",), ("audio", "image"), ("text", "audio", "image")],
                              **cman_inputs(config))  # fmt: skip
    for combination in [("audio", "image"), ("text", "audio", "image")]:
        expected = F.normalize(sum(embeds[(modality,)] for modality in combination), dim=-1)
        torch.testing.assert_close(embeds[combination], expected, rtol=0, atol=1e-6)


def test_towers_are_frozen_and_new_parts_trainable():
    model = CmanModel(tiny_cman_config())
    for name, parameter in model.named_parameters():
        is_tower = name.split(".")[0] in ("text_model", "audio_model", "image_model")
        assert parameter.requires_grad != is_tower, name
    unfrozen = CmanModel(tiny_cman_config(freeze_encoders=False))
    assert all(p.requires_grad for p in unfrozen.parameters())


def test_lora_targets_every_attention_query_and_value_and_an_adapter_reloads(tmp_path):
    from peft import PeftModel

    config = tiny_cman_config()
    model = CmanModel(config)
    assert len(model.lora_target_modules()) == 3 * 2 * 2  # three towers x two layers x (query, value)
    peft_model = model.apply_lora(r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    peft_model.eval()
    inputs = cman_inputs(config)
    with torch.no_grad():
        expected = peft_model(**inputs, fuse=True)
    peft_model.save_pretrained(tmp_path / "adapter")
    torch.manual_seed(0)
    reloaded = PeftModel.from_pretrained(CmanModel(config), tmp_path / "adapter").eval()
    with torch.no_grad():
        again = reloaded(**inputs, fuse=True)
    for key in ("text_embeds", "audio_embeds", "image_embeds", "fused_embeds"):
        torch.testing.assert_close(again[key], expected[key], rtol=1e-4, atol=1e-5)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(
            AutoModel.from_pretrained(tmp_path / "merged").eval()(**inputs).image_embeds,
            expected.image_embeds,
            rtol=1e-4,
            atol=1e-5,
        )


def test_parameter_table_counts_every_parameter_once():
    model = CmanModel(tiny_cman_config())
    peft_model = model.apply_lora(r=4, alpha=8)
    from modeling.cman.modeling_cman import PARAMETER_GROUPS

    counts = parameter_counts(peft_model, PARAMETER_GROUPS)
    total = sum(p.numel() for n, p in peft_model.named_parameters() if ".original_module." not in n)
    assert sum(row["total"] for row in counts.values()) == total
    assert counts["text tower"]["trainable"] == counts["text tower"]["lora"] > 0
    assert counts["fusion transformer"]["trainable"] == counts["fusion transformer"]["total"]
    table = model.parameter_table()
    assert "| **total** |" in table and "fusion transformer" in table and "image tower" in table


def test_pretrained_towers_load_from_checkpoints_in_the_hub_format(tmp_path):
    """The seed's path (roberta-base, AST, ViT-B/16 by name) exercised with tiny random checkpoints saved locally."""
    paths = save_tiny_pretrained_towers(tmp_path)
    config = CmanConfig.from_towers(
        text=str(paths["text"]),
        audio=str(paths["audio"]),
        image=str(paths["image"]),
        fusion_encoder_config=TINY_FUSION,
        projection_dim=TINY_PROJECTION_DIM,
    )
    assert config.text_model_name_or_path == str(paths["text"])
    model = CmanModel.from_encoders_pretrained(config)
    for modality, attribute in (("text", "text_model"), ("audio", "audio_model"), ("image", "image_model")):
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
        image=config.image_config,
        audio_window_seconds=0.5,
        fusion_encoder_config=TINY_FUSION,
        projection_dim=TINY_PROJECTION_DIM,
    )
    assert config.audio_config.max_source_positions == 25 and config.audio_window_seconds == 0.5
    model = CmanModel.from_encoders_pretrained(config).eval()
    full = AutoModel.from_pretrained(whisper).get_encoder()
    torch.testing.assert_close(model.audio_model.embed_positions.weight, full.embed_positions.weight[:25])
    embeds = model.get_audio_features(input_features=torch.randn(2, MEL_BINS, 50)).pooler_output
    assert embeds.shape == (2, 16)
    with pytest.raises(ValueError, match="frames"):
        model.get_audio_features(input_features=torch.randn(2, MEL_BINS, 100))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fusion_encoder_config": {"norm": "batchnorm"}}, "FusionTransformerConfig.norm"),
        ({"fusion_encoder_config": {"ffn": "moe"}}, "FusionTransformerConfig.ffn"),
        (
            {"fusion_encoder_config": {"position_embedding": "alibi"}},
            "FusionTransformerConfig.position_embedding",
        ),
        ({"fusion_encoder_config": {"num_attention_heads": 7}}, "num_attention_heads"),
        ({"fusion_encoder_config": {"dropout": 1.5}}, "FusionTransformerConfig.dropout"),
        ({"loss_type": "triplet"}, "CmanConfig.loss_type"),
        ({"max_margin_negatives": "some"}, "CmanConfig.max_margin_negatives"),
        ({"margin": -0.1}, "CmanConfig.margin"),
        ({"temperature": 0.0}, "CmanConfig.temperature"),
        ({"speech_recognizer_config": {"max_new_tokens": 0}}, "max_new_tokens"),
    ],
)
def test_invalid_config_values_raise_an_error_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        CmanConfig(
            text_config=tiny_cman_config().text_config,
            audio_config=tiny_whisper_config(),
            image_config=tiny_cman_config().image_config,
            **fields,
        )


def test_a_tower_config_of_the_wrong_kind_is_refused():
    with pytest.raises(ValueError, match="image_config"):
        tiny_cman_config(image_config=BertConfig())


def test_loading_a_checkpoint_of_another_model_gives_a_clear_error(tmp_path):
    paths = save_tiny_pretrained_towers(tmp_path)
    with pytest.raises(ValueError, match="a 'roberta' model, not a 'cman' one"):
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
    with pytest.raises(ValueError, match="two or more"):
        model(pixel_values=inputs["pixel_values"], fuse=True)
    with pytest.raises(ValueError, match="input_values"):
        model(input_features=torch.randn(2, 80, 3000))
    with pytest.raises(TypeError, match="'texts'"):
        model(texts=inputs["input_ids"])


@pytest.mark.parametrize(
    "fusion",
    [
        {"norm": "rmsnorm", "ffn": "swiglu", "position_embedding": "rotary"},
        {"norm": "scalenorm", "ffn": "glu", "position_embedding": "sinusoidal"},
        {"pooling": "mean"},
    ],
)
def test_fusion_layer_variants_train(fusion):
    config = tiny_cman_config(fusion=fusion)
    model = CmanModel(config).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(
        2
    ):  # the zero-initialised output projection moves first, then the fusion layers get gradients
        optimizer.zero_grad()
        loss = model(**cman_inputs(config), fuse=True, return_loss=True).loss
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    assert model.fusion_encoder.layers[0].attention.q_proj.weight.grad.abs().sum() > 0


def test_fusion_attention_map_covers_every_token_of_the_fused_sequence():
    config = tiny_cman_config()
    model = CmanModel(config).eval()
    output = model(**cman_inputs(config), fuse=True, output_attentions=True).fused_model_output
    assert len(output.attentions) == config.fusion_encoder_config.num_hidden_layers
    types = output.token_type_ids
    assert types[0] == TOKEN_TYPE_IDS["pooling"] and set(types.tolist()) == {0, 1, 2, 3}
    attention = output.attentions[-1]
    assert attention.shape[-1] == attention.shape[-2] == len(types)
    torch.testing.assert_close(attention.sum(-1), torch.ones_like(attention.sum(-1)))
    padded_key = 1 + 6  # the first caption is padded from position 6
    assert attention[0, :, :, padded_key].abs().max() == 0


def test_encode_gives_every_combination_with_the_towers_run_once():
    config = tiny_cman_config()
    model = CmanModel(config).eval()
    inputs = cman_inputs(config)
    calls = []
    model.image_model.embeddings.register_forward_hook(lambda *args: calls.append("image"))
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
def transcribing(tmp_path_factory):
    return tiny_transcribing_model(tmp_path_factory.mktemp("transcribing"))


def transcript_inputs(batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    transcript_ids = torch.randint(5, 300, (batch_size, 5), generator=generator)
    return {
        "input_features": torch.randn(batch_size, MEL_BINS, 100, generator=generator),
        "transcript_input_ids": transcript_ids,
        "transcript_attention_mask": torch.ones_like(transcript_ids),
    }


def test_transcription_needs_a_pretrained_whisper_tower():
    with pytest.raises(ValueError, match="needs a Whisper audio tower"):
        tiny_cman_config(speech_recognizer_config={})  # AST audio tower
    config = tiny_cman_config(audio_config=tiny_whisper_config(), speech_recognizer_config={})
    with pytest.raises(ValueError, match="audio_model_name_or_path"):
        CmanModel.from_encoders_pretrained(config)
    with pytest.raises(ValueError, match="pretrained Whisper checkpoint"):
        CmanConfig.from_towers(
            tiny_cman_config().text_config, tiny_whisper_config(), None, transcribe_audio=True
        )


def test_the_transcript_joins_the_audio_as_its_own_fusion_segment(transcribing):
    model, _ = transcribing
    inputs = transcript_inputs()
    with torch.no_grad():
        output = model.get_audio_features(**inputs, output_attentions=True)
        other = model.get_audio_features(
            **{**inputs, "transcript_input_ids": inputs["transcript_input_ids"].flip(0)}
        )
    types = output.token_type_ids.tolist()
    assert types.count(TOKEN_TYPE_IDS["transcript"]) == 5 and TOKEN_TYPE_IDS["audio"] in types
    assert not torch.allclose(
        other.pooler_output, output.pooler_output
    )  # what was said changes the embedding
    plain = CmanModel(tiny_cman_config(audio_config=tiny_whisper_config())).eval()
    with pytest.raises(ValueError, match="does not read transcripts"):
        plain.get_audio_features(**inputs)
    with pytest.raises(ValueError, match="no speech recogniser"):
        plain.transcribe(inputs["input_features"])


def test_audio_alone_is_transcribed_inside_and_embeds_as_with_the_transcript_given(transcribing):
    """One call for audio: without `transcript_input_ids` the model transcribes the clips itself, and the embedding
    equals the one from passing its transcripts through the processor."""
    model, processor = transcribing
    waves = [
        torch.randn(8000).numpy() * 0.1,
        torch.randn(12000).numpy() * 0.1,
        torch.randn(4000).numpy() * 0.1,
    ]
    inputs = processor(audio=waves, sampling_rate=16000)
    transcripts = model.transcribe(**inputs)
    assert (
        len(transcripts) == 3 and all(isinstance(t, str) for t in transcripts) and len(set(transcripts)) > 1
    )
    given = processor(audio=waves, sampling_rate=16000, transcripts=transcripts)
    with torch.no_grad():
        alone = model.get_audio_features(**inputs).pooler_output
        with_transcripts = model.get_audio_features(**given).pooler_output
        from_forward = model(**inputs).audio_embeds
        from_encode = model.encode([("audio",)], **inputs)[("audio",)]
    torch.testing.assert_close(alone, with_transcripts, rtol=0, atol=0)
    torch.testing.assert_close(from_forward, with_transcripts, rtol=0, atol=0)
    torch.testing.assert_close(from_encode, with_transcripts, rtol=0, atol=0)


def test_the_speech_recognizer_is_the_pretrained_whisper_and_never_trains(transcribing, tmp_path):
    from transformers import WhisperForConditionalGeneration

    model, processor = transcribing
    whisper = model.config.audio_model_name_or_path
    pretrained = WhisperForConditionalGeneration.from_pretrained(whisper)
    torch.testing.assert_close(model.speech_recognizer.state_dict(), pretrained.state_dict())
    features = transcript_inputs()["input_features"]
    expected = pretrained.generate(
        input_features=features,
        max_new_tokens=6,
        repetition_penalty=model.config.speech_recognizer_config.repetition_penalty,
    )
    before = model.transcribe_ids(features)
    assert torch.equal(before, expected)
    assert not torch.equal(model.transcribe_ids(features + torch.randn_like(features)), before)  # it listens
    with torch.no_grad():
        tower_before = model.audio_model(features).last_hidden_state
    peft_model = model.apply_lora(r=4, alpha=8, dropout=0.0)
    try:
        assert not any("speech_recognizer" in n for n, p in peft_model.named_parameters() if p.requires_grad)
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:  # adapters that change the audio tower
                torch.nn.init.normal_(parameter, std=1.0)
        with torch.no_grad():
            assert not torch.allclose(
                model.audio_model(features).last_hidden_state, tower_before
            )  # LoRA acts
        peft_model.train()
        assert not model.speech_recognizer.training
        peft_model(
            **transcript_inputs(), input_ids=torch.randint(5, 300, (3, 7)), return_loss=True
        ).loss.backward()
        assert all(p.grad is None for p in model.speech_recognizer.parameters())
        merged = peft_model.merge_and_unload()
    finally:
        model.eval()
    assert torch.equal(
        merged.transcribe_ids(features), before
    )  # merging LoRA leaves the recogniser untouched
    merged.save_pretrained(tmp_path / "cman")
    assert (tmp_path / "cman" / "transcription" / "recognizer" / "tokenizer_config.json").exists()
    reloaded = CmanModel.from_pretrained(tmp_path / "cman").eval()
    assert torch.equal(reloaded.transcribe_ids(features), before)
    assert reloaded.transcribe(features) == merged.transcribe(features)  # the saved tokenizers read them
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.get_audio_features(**transcript_inputs()).pooler_output,
            merged.eval().get_audio_features(**transcript_inputs()).pooler_output,
        )
