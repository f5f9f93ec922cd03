import pytest
import torch
from transformers import AutoModel, AutoModelForZeroShotImageClassification

from modeling.late_fusion import LateFusionConfig, LateFusionModel
from tests.cman.test_modeling_cman import cman_inputs
from tests.modeling_common import RetrievalModelTesterMixin
from tests.tiny import tiny_late_fusion_config, tiny_transcribing_config, tiny_whisper_config

BATCH = 4


class TestLateFusionModel(RetrievalModelTesterMixin):
    model_class = LateFusionModel

    def get_config(self):
        return tiny_late_fusion_config()

    def get_inputs(self, config, batch_size=BATCH, seed=0):
        return cman_inputs(config, batch_size, seed)

    def expected_layers(self, config, modality):
        return getattr(config, f"{modality}_config").num_hidden_layers


class TestSigmoidLateFusionModel(TestLateFusionModel):
    """The SigLIP variant: a learned bias next to the temperature, the pairwise sigmoid loss."""

    def get_config(self):
        return tiny_late_fusion_config(loss_type="sigmoid", temperature=0.1)


def test_embeddings_are_projected_masked_means_of_the_tower_tokens():
    config = tiny_late_fusion_config()
    model = LateFusionModel(config).eval()
    inputs = cman_inputs(config)
    with torch.no_grad():
        output = model(**inputs)
        hidden = model.text_model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).last_hidden_state
    mask = inputs["attention_mask"][..., None].float()
    expected = torch.nn.functional.normalize(
        model.text_projection((hidden * mask).sum(1) / mask.sum(1)), dim=-1
    )
    torch.testing.assert_close(output.text_embeds, expected)


def test_the_temperature_and_bias_follow_the_loss():
    infonce = LateFusionModel(tiny_late_fusion_config())
    assert isinstance(infonce.logit_scale, torch.nn.Parameter) and infonce.logit_bias is None
    sigmoid = LateFusionModel(tiny_late_fusion_config(loss_type="sigmoid", temperature=0.1))
    assert torch.isclose(sigmoid.logit_scale.exp(), torch.tensor(10.0)) and sigmoid.logit_bias.item() == -10.0
    frozen = LateFusionModel(tiny_late_fusion_config(learn_temperature=False, temperature=0.05))
    assert "logit_scale" not in dict(
        frozen.named_parameters()
    ) and frozen.inverse_temperature() == pytest.approx(20.0)


def test_a_composed_query_is_the_normalised_sum_of_its_parts():
    config = tiny_late_fusion_config()
    model = LateFusionModel(config).eval()
    inputs = cman_inputs(config)
    with torch.no_grad():
        encoded = model.encode([("text",), ("audio",), ("text", "audio")], **inputs)
    expected = torch.nn.functional.normalize(encoded[("text",)] + encoded[("audio",)], dim=-1)
    torch.testing.assert_close(encoded[("text", "audio")], expected)


def test_a_transcript_adds_its_projected_text_embedding_to_the_audio(tmp_path):
    from tests.tiny import save_tiny_whisper

    whisper = save_tiny_whisper(tmp_path / "whisper")
    cman = tiny_transcribing_config(whisper)
    config = LateFusionConfig.from_towers(
        cman.text_config, str(whisper), cman.image_config, transcribe_audio=True,
        speech_recognizer_config={"max_new_tokens": 6}, projection_dim=16,
    )  # fmt: skip
    model = LateFusionModel.from_encoders_pretrained(config).eval()
    features = torch.randn(2, 16, 100)
    ids = torch.randint(5, 300, (2, 5))
    with torch.no_grad():
        output = model.get_audio_features(input_features=features, transcript_input_ids=ids)
        audio = model.audio_model(features).last_hidden_state.mean(1)
        text = model.text_model(input_ids=ids).last_hidden_state.mean(1)
    expected = torch.nn.functional.normalize(
        model.audio_projection(audio) + model.text_projection(text), dim=-1
    )
    torch.testing.assert_close(output.pooler_output, expected)
    plain = LateFusionModel(tiny_late_fusion_config(audio_config=tiny_whisper_config())).eval()
    with pytest.raises(ValueError, match="does not read transcripts"):
        plain.get_audio_features(input_features=features, transcript_input_ids=ids)


def test_a_saved_folder_names_the_zero_shot_auto_class(tmp_path):
    model = LateFusionModel(tiny_late_fusion_config())
    model.save_pretrained(tmp_path)
    import json

    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert (
        auto_map["AutoModel"]
        == auto_map["AutoModelForZeroShotImageClassification"]
        == "modeling_late_fusion.LateFusionModel"
    )
    assert isinstance(AutoModelForZeroShotImageClassification.from_pretrained(tmp_path), LateFusionModel)
    assert isinstance(AutoModel.from_pretrained(tmp_path), LateFusionModel)


@pytest.mark.parametrize(
    ("field", "value"), [("loss_type", "triplet"), ("temperature", 0.0), ("projection_dim", 0)]
)
def test_invalid_config_values_raise_an_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"LateFusionConfig.{field}"):
        tiny_late_fusion_config(**{field: value})
