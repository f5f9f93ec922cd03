"""The matching families (early fusion, cross-attention fusion): the shared tester mixin on every head, and the
objectives checked against their definitions."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForPreTraining, AutoModelForVisualQuestionAnswering

from modeling.cross_attention import (
    CrossAttentionConfig,
    CrossAttentionForImageTextMatching,
    CrossAttentionForQuestionAnswering,
    CrossAttentionModel,
)
from modeling.early_fusion import (
    EarlyFusionConfig,
    EarlyFusionForImageTextMatching,
    EarlyFusionForQuestionAnswering,
    EarlyFusionModel,
)
from tests.cman.test_modeling_cman import cman_inputs
from tests.modeling_common import ModelTesterMixin
from tests.tiny import TINY_FUSION, tiny_audio_config, tiny_image_config, tiny_text_config

ANSWERS = ["yes", "no", "2", "3", "dog"]
AUDIO_KEYS = ("input_features", "input_values", "audio_attention_mask")


def tiny_matching_config(config_class, **overrides):
    """A tiny early-fusion or cross-attention config on random RoBERTa / AST / ViT towers."""
    stack = "fusion_encoder_config" if config_class is EarlyFusionConfig else "cross_attention_config"
    fields = dict(
        text_config=tiny_text_config(),
        audio_config=tiny_audio_config(),
        image_config=tiny_image_config(),
        projection_dim=16,
        id2label=dict(enumerate(ANSWERS)),
        label2id={a: i for i, a in enumerate(ANSWERS)},
        **{stack: {**TINY_FUSION, "num_hidden_layers": 2}},
    )
    fields.update(overrides)
    return config_class(**fields)


def pair_inputs(config, batch_size=4, seed=0, other="image"):
    inputs = cman_inputs(config, batch_size, seed)
    drop = AUDIO_KEYS if other == "image" else ("pixel_values",)
    return {k: v for k, v in inputs.items() if k not in drop}


def mlm_inputs(inputs, seed=0):
    """A hand-masked text (every third real token masked, the labels the original ids elsewhere -100)."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
    chosen = torch.zeros_like(mask)
    chosen[:, 1::3] = True
    chosen &= mask
    return {
        "mlm_input_ids": ids.masked_fill(chosen, 4),
        "mlm_labels": ids.masked_fill(~chosen, -100),
    }


class MatchingTesterMixin(ModelTesterMixin):
    config_class = EarlyFusionConfig
    training_learning_rate = 5e-3
    # Random towers on random inputs: the masked-token and in-batch objectives have high floors (seen: 20 steps take
    # the loss to 0.53-0.65 of its first value).
    training_loss_ratio = 0.7
    other = "image"
    modalities = ("text", "image")

    def get_config(self, **overrides):
        return tiny_matching_config(self.config_class, **overrides)

    def get_inputs(self, config, batch_size=4, seed=0):
        return pair_inputs(config, batch_size, seed, self.other)

    def batch_keys(self, config):
        return ["logits", "pooler_output", "text_embeds", f"{self.other}_embeds"]

    @property
    def parameters_without_gradient(self):
        unused = "audio" if self.other == "image" else "image"
        reasons = {
            f"{unused}_projection.weight": f"a batch of {self.other} pairs never reads the {unused} tower",
            f"{unused}_projection.bias": "idem",
            f"{unused}_itc_projection.weight": "idem",
        }
        if self.other == "audio":
            reasons.update({n: "masked patch modelling runs on images only" for n in self._mpm_names()})
        return reasons

    def _mpm_names(self):
        model = self.model_class(self.get_training_config())
        return [n for n, _ in model.named_parameters() if n.startswith("mpm_head.")]


class ItmTesterMixin(MatchingTesterMixin):
    auto_class = "AutoModelForPreTraining"

    def get_training_config(self):
        return self.get_config(mlm_weight=1.0, mpm_weight=1.0, itm_negatives="hardest")

    def get_config(self, **overrides):
        overrides = {"mlm_weight": 1.0, "mpm_weight": 1.0, **overrides}
        return tiny_matching_config(self.config_class, **overrides)

    def loss_for_gradients(self, model, inputs):
        return model(**inputs, **mlm_inputs(inputs), return_loss=True).loss


class VqaTesterMixin(MatchingTesterMixin):
    auto_class = "AutoModelForVisualQuestionAnswering"

    def batch_keys(self, config):
        return ["logits", "pooler_output"]

    def loss_for_gradients(self, model, inputs):
        batch = inputs["input_ids"].shape[0]
        generator = torch.Generator().manual_seed(1)
        labels = (torch.rand(batch, len(ANSWERS), generator=generator) > 0.6).float()
        return model(**inputs, labels=labels).loss


class TestEarlyFusionModel(MatchingTesterMixin):
    model_class = EarlyFusionModel

    def batch_keys(self, config):
        return ["pooler_output", "text_embeds", "image_embeds"]

    def get_training_config(self):
        pytest.skip("the bare model has no head to train")

    test_loss_decreases_on_a_tiny_batch = test_every_trainable_parameter_gets_a_gradient = None
    test_gradient_checkpointing_gives_the_same_gradients = None


class TestEarlyFusionForImageTextMatching(ItmTesterMixin):
    model_class = EarlyFusionForImageTextMatching


class TestEarlyFusionForImageTextMatchingOnAudio(ItmTesterMixin):
    """Text with sound instead of images: the same model, the audio tower's tokens in the sequence."""

    model_class = EarlyFusionForImageTextMatching
    other = "audio"
    modalities = ("text", "audio")


class TestEarlyFusionForQuestionAnswering(VqaTesterMixin):
    model_class = EarlyFusionForQuestionAnswering


class TestCrossAttentionForImageTextMatching(ItmTesterMixin):
    model_class = CrossAttentionForImageTextMatching
    config_class = CrossAttentionConfig


class TestCrossAttentionForImageTextMatchingOnAudio(ItmTesterMixin):
    model_class = CrossAttentionForImageTextMatching
    config_class = CrossAttentionConfig
    other = "audio"
    modalities = ("text", "audio")


class TestCrossAttentionForQuestionAnswering(VqaTesterMixin):
    model_class = CrossAttentionForQuestionAnswering
    config_class = CrossAttentionConfig


# ------------------------------------------------------------------------------------------------ objectives
FAMILIES = [
    (EarlyFusionConfig, EarlyFusionModel, EarlyFusionForImageTextMatching, EarlyFusionForQuestionAnswering),
    (CrossAttentionConfig, CrossAttentionModel, CrossAttentionForImageTextMatching, CrossAttentionForQuestionAnswering),
]  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES, ids=["early_fusion", "cross_attention"])
def test_vqa_loss_is_binary_cross_entropy_on_soft_scores_times_the_answers(family):
    config_class, _, _, answering = family
    torch.manual_seed(0)
    model = answering(tiny_matching_config(config_class)).eval()
    inputs = pair_inputs(model.config)
    labels = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0.3, 0.6, 0, 0], [0, 0, 0, 0, 1.0], [0.3, 0.3, 0, 0, 0]])
    output = model(**inputs, labels=labels)
    logits = output.logits.detach()
    by_hand = -(labels * F.logsigmoid(logits) + (1 - labels) * F.logsigmoid(-logits)).mean() * len(ANSWERS)
    torch.testing.assert_close(output.vqa_loss.detach(), by_hand)
    torch.testing.assert_close(output.loss.detach(), by_hand)  # vqa_weight 1, no other objective


@pytest.mark.parametrize("family", FAMILIES, ids=["early_fusion", "cross_attention"])
def test_itm_loss_scores_the_pairs_and_the_hardest_in_batch_negatives(family):
    """In eval the negatives are the hardest by `itc` similarity (never a row of the same group); the loss is the
    cross-entropy of match for the B pairs and of no match for the 2B negative pairs, recomputed here by hand."""
    config_class, _, matching, _ = family
    torch.manual_seed(0)
    model = matching(tiny_matching_config(config_class, itc_weight=0.0)).eval()
    inputs = pair_inputs(model.config, batch_size=5)
    groups = torch.tensor([0, 0, 1, 2, 3])  # rows 0 and 1 describe the same thing
    with torch.no_grad():
        output = model(**inputs, group_ids=groups, return_loss=True)
        similarity = output.text_embeds @ output.image_embeds.T
        same = groups[:, None] == groups[None, :]
        negative_image = similarity.masked_fill(same, -2).argmax(1)
        negative_text = similarity.T.masked_fill(same, -2).argmax(1)
        assert (
            not same[torch.arange(5), negative_image].any() and not same[torch.arange(5), negative_text].any()
        )
        rows = torch.arange(5)
        text_rows, image_rows = (
            torch.cat([rows, rows, negative_text]),
            torch.cat([rows, negative_image, rows]),
        )
        pairs = {
            k: (v[text_rows] if k in ("input_ids", "attention_mask") else v[image_rows])
            for k, v in inputs.items()
        }
        scores = model(**pairs).logits
    targets = torch.tensor([1] * 5 + [0] * 10)
    torch.testing.assert_close(output.itm_loss, F.cross_entropy(scores, targets), rtol=1e-5, atol=1e-6)
    assert output.itc_loss is None and output.mlm_loss is None


def test_sampled_negatives_never_take_a_row_of_the_same_group():
    torch.manual_seed(0)
    model = EarlyFusionForImageTextMatching(tiny_matching_config(EarlyFusionConfig)).train()
    text = F.normalize(torch.randn(6, 16), dim=-1)
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    for _ in range(50):
        negative_other, negative_text = model.mined_negatives(text, text.clone(), groups)
        assert (groups[negative_other] != groups).all() and (groups[negative_text] != groups).all()
    with pytest.raises(ValueError, match="same thing"):
        model.mined_negatives(text[:3], text[:3], groups[:3])


def test_mlm_scores_come_from_the_text_towers_word_embeddings():
    """The MLM output is tied to the tower's input embeddings: there is no output matrix of its own, and changing a
    word embedding changes that word's score."""
    torch.manual_seed(0)
    model = EarlyFusionForImageTextMatching(tiny_matching_config(EarlyFusionConfig, mlm_weight=1.0)).eval()
    vocab = model.text_model.get_input_embeddings().num_embeddings
    assert not any(p.shape[0] == vocab and p.dim() == 2 for n, p in model.mlm_head.named_parameters())
    states = torch.randn(2, 3, model.config.fusion_encoder_config.hidden_size)
    embeddings = model.text_model.get_input_embeddings().weight
    before = model.mlm_head(states, embeddings)
    changed = embeddings.detach().clone()
    changed[7] += 1.0
    after = model.mlm_head(states, changed)
    assert (after[..., 7] != before[..., 7]).all()
    torch.testing.assert_close(after[..., :7], before[..., :7])


def test_mpm_masks_at_least_one_real_token_per_row_and_regresses_the_tower_features():
    torch.manual_seed(0)
    model = EarlyFusionForImageTextMatching(tiny_matching_config(EarlyFusionConfig, mpm_weight=1.0))
    mask = torch.tensor([[True] * 6 + [False] * 2, [True] * 8])
    for probability in (0.01, 0.5):
        chosen = model.masked_tokens(mask, probability)
        assert (chosen.sum(1) >= 1).all() and not (chosen & ~mask).any()
    output = model(**pair_inputs(model.config), **mlm_inputs(pair_inputs(model.config)), return_loss=True)
    assert output.mpm_loss is not None and output.mpm_loss > 0


@pytest.mark.parametrize("family", FAMILIES, ids=["early_fusion", "cross_attention"])
def test_attention_weights_are_exposed_for_the_plots(family):
    config_class, base, _, _ = family
    model = base(tiny_matching_config(config_class)).eval()
    model.set_attn_implementation("eager")
    inputs = pair_inputs(model.config)
    text_length, patches = inputs["input_ids"].shape[1], (32 // 8) ** 2 + 1  # ViT: [CLS] + 4 x 4 patches
    output = model(**inputs, output_attentions=True, output_hidden_states=True)
    assert len(output.attentions) == 2 and len(output.hidden_states) == 3
    if base is EarlyFusionModel:
        assert output.attentions[0].shape == (4, 4, 1 + text_length + patches, 1 + text_length + patches)
        assert output.token_type_ids.tolist() == [0] + [1] * text_length + [2] * patches
        assert output.cross_attentions is None
    else:  # each stream: its pooling token first; text-to-image cross-attention
        assert output.attentions[0].shape == (4, 4, 1 + text_length, 1 + text_length)
        assert output.other_attentions[0].shape == (4, 4, 1 + patches, 1 + patches)
        assert output.cross_attentions[0].shape == (4, 4, 1 + text_length, 1 + patches)
        torch.testing.assert_close(output.cross_attentions[1].sum(-1), torch.ones(4, 4, 1 + text_length))


def test_configs_name_the_bad_field():
    with pytest.raises(ValueError, match="itm_negatives='nearest'"):
        tiny_matching_config(EarlyFusionConfig, itm_negatives="nearest")
    with pytest.raises(ValueError, match="mlm_weight must be >= 0"):
        tiny_matching_config(CrossAttentionConfig, mlm_weight=-1.0)
    with pytest.raises(ValueError, match="mpm_probability"):
        tiny_matching_config(EarlyFusionConfig, mpm_probability=1.5)
    no_answers = tiny_matching_config(EarlyFusionConfig, id2label=None, label2id=None)
    with pytest.raises(ValueError, match="answer vocabulary"):
        EarlyFusionForQuestionAnswering(no_answers)
    with pytest.raises(ValueError, match="not a 'cross_attention' one"):
        CrossAttentionConfig.from_dict(tiny_matching_config(EarlyFusionConfig).to_dict())


def test_pair_batches_need_an_objective_and_vqa_needs_the_labels_shape():
    model = EarlyFusionForQuestionAnswering(tiny_matching_config(EarlyFusionConfig))
    inputs = pair_inputs(model.config)
    with pytest.raises(ValueError, match="multitask=True"):
        model(**inputs, return_loss=True)
    with pytest.raises(ValueError, match=r"soft scores of shape \(4, 5\)"):
        model(**inputs, labels=torch.zeros(4, 3))
    both = {**inputs, "input_values": cman_inputs(model.config)["input_values"]}
    with pytest.raises(ValueError, match="either an image"):
        model(**both)


def test_a_multitask_model_trains_pairs_and_answers_with_their_weights():
    config = tiny_matching_config(
        EarlyFusionConfig,
        multitask=True,
        itc_weight=0.5,
        itm_weight=2.0,
        vqa_weight=3.0,
        itm_negatives="hardest",
    )
    torch.manual_seed(0)
    model = EarlyFusionForQuestionAnswering(config).eval()
    inputs = pair_inputs(config)
    pairs = model(**inputs, return_loss=True)
    torch.testing.assert_close(pairs.loss, 0.5 * pairs.itc_loss + 2.0 * pairs.itm_loss)
    answers = model(**inputs, labels=torch.eye(4, len(ANSWERS)))
    torch.testing.assert_close(answers.loss, 3.0 * answers.vqa_loss)
    assert answers.itm_loss is None


@pytest.mark.parametrize("family", FAMILIES, ids=["early_fusion", "cross_attention"])
def test_auto_classes_and_checkpoints_of_other_heads(family, tmp_path):
    """The auto classes give the family's model and heads; a matching checkpoint loads into the bare model (its
    heads are not read), but not into the answering class, whose head it lacks: a clear error."""
    config_class, base, matching, answering = family
    config = tiny_matching_config(config_class)
    assert type(AutoModel.from_config(config)) is base
    assert type(AutoModelForPreTraining.from_config(config)) is matching
    assert type(AutoModelForVisualQuestionAnswering.from_config(config)) is answering
    torch.manual_seed(0)
    matching(config).save_pretrained(tmp_path)
    base.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not hold a complete .*vqa_head"):
        answering.from_pretrained(tmp_path)
