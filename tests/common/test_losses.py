"""The loss modules of `modeling.common.losses`, checked against their definitions computed by hand."""

import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from modeling.common.losses import InfoNCELoss, MaxMarginLoss, SigmoidLoss, build_loss, similarity_diagnostics


def unit(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


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
    a, b = unit(6, seed=1), unit(6, seed=2)
    expected = brute_force_max_margin(a @ b.T, 0.2, negatives == "hardest")
    loss = MaxMarginLoss(margin=0.2, negatives=negatives)({"text": a, "image": b})
    torch.testing.assert_close(loss, expected.float(), rtol=1e-5, atol=1e-6)


def test_duplicated_items_are_never_negatives():
    # Embeddings whose cosines are the matrix below: rows 0 and 1 describe the same thing.
    scores = torch.tensor([[0.9, 0.9, 0.1], [0.9, 0.9, 0.2], [0.0, 0.1, 0.8]])
    a, b = torch.eye(3), scores.T.contiguous()  # a @ b.T == scores
    groups = torch.tensor([7, 7, 3])
    masked = MaxMarginLoss(margin=0.2)({"text": a, "image": b}, group_ids=groups)
    # Without the duplicate pairs the only violation is column 2 against row 1: 0.2 + 0.2 - 0.8 < 0.
    torch.testing.assert_close(masked, torch.tensor(0.0))
    # Unmasked, each duplicate is the other's hardest negative: 0.2 for rows 0 and 1, in both directions.
    unmasked = MaxMarginLoss(margin=0.2)({"text": a, "image": b})
    torch.testing.assert_close(unmasked, torch.tensor(2 * 0.4 / 3))


SCORES = torch.tensor([[0.9, 0.5, 0.2], [0.3, 0.8, 0.85], [0.1, 0.0, 0.6]])


def test_diagnostics_of_a_cosine_matrix_by_hand():
    diagnostics = similarity_diagnostics(SCORES, torch.arange(3), torch.eye(3, dtype=torch.bool), margin=0.2)
    # positives 0.9, 0.8, 0.6; hardest negatives 0.5, 0.85, 0.1; one hinge of six active: 0.2 + 0.85 - 0.8 > 0
    assert diagnostics["positive_similarity"] == pytest.approx((0.9 + 0.8 + 0.6) / 3)
    assert diagnostics["hardest_negative_margin"] == pytest.approx((0.4 - 0.05 + 0.5) / 3)
    assert diagnostics["active_hinges"] == pytest.approx(1 / 6)
    assert diagnostics["similarity_spread"] == pytest.approx(float(SCORES.std()))
    collapsed = similarity_diagnostics(
        torch.full((3, 3), 0.7), torch.arange(3), torch.eye(3, dtype=torch.bool), 0.2
    )
    assert collapsed["similarity_spread"] == pytest.approx(0, abs=1e-6)
    assert collapsed["hardest_negative_margin"] == pytest.approx(0, abs=1e-6)
    assert collapsed["active_hinges"] == 1.0  # every negative ties its positive: every hinge is active


def test_a_loss_keeps_the_diagnostics_of_its_last_call_averaged_over_directions():
    a, b = torch.eye(3), SCORES.T.contiguous()  # a @ b.T == SCORES
    loss = MaxMarginLoss(margin=0.2)
    loss({"text": a, "image": b})
    forward = similarity_diagnostics(SCORES, torch.arange(3), torch.eye(3, dtype=torch.bool), 0.2)
    backward = similarity_diagnostics(SCORES.T, torch.arange(3), torch.eye(3, dtype=torch.bool), 0.2)
    for key, value in loss.diagnostics.items():
        assert value == pytest.approx((forward[key] + backward[key]) / 2), key


@pytest.mark.parametrize(
    ("negatives", "expected_rows"),
    [
        # per anchor, first direction (rows of SCORES): hinges 0.2 + s(negative) - s(positive), clamped at 0
        ("hardest", [0.0, 0.25, 0.0]),
        ("all", [0.0, 0.25, 0.0]),
        (
            "semi_hard",
            [0.0, 0.0, 0.0],
        ),  # anchor 1's hardest negative (0.85) beats its positive: it is skipped
        ("top_k", [0.0, 0.125, 0.0]),  # mean of the 2 hardest hinges
    ],
)
def test_which_negatives_count(negatives, expected_rows):
    a, b = torch.eye(3), SCORES.T.contiguous()
    loss = MaxMarginLoss(margin=0.2, negatives=negatives, top_k=2)
    rows = torch.arange(3)
    first = loss.pair_loss(SCORES, SCORES, rows, torch.eye(3, dtype=torch.bool), None, None) / 2
    torch.testing.assert_close(first, torch.tensor(sum(expected_rows) / 3))
    assert loss({"text": a, "image": b}) >= 0


def test_infonce_is_the_symmetric_cross_entropy_with_other_positives_masked():
    a, b = unit(5, seed=3), unit(5, seed=4)
    scale = torch.tensor(10.0)
    logits = a @ b.T * scale
    labels = torch.arange(5)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(InfoNCELoss()({"text": a, "image": b}, scale), expected)
    groups = torch.tensor([0, 1, 0, 2, 3])  # rows 0 and 2 match each other too
    masked = logits.clone()
    masked[0, 2] = masked[2, 0] = torch.finfo(masked.dtype).min
    expected = (F.cross_entropy(masked, labels) + F.cross_entropy(masked.T, labels)) / 2
    torch.testing.assert_close(InfoNCELoss()({"text": a, "image": b}, scale, group_ids=groups), expected)


def test_sigmoid_loss_is_siglips_pairwise_binary_loss():
    a, b = unit(4, seed=5), unit(4, seed=6)
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    total = 0.0
    for i in range(4):
        for j in range(4):
            z = (a[i] @ b[j]).item() * 10.0 - 10.0
            label = 1.0 if i == j else -1.0
            total += math.log(1 + math.exp(-label * z))  # -log sigmoid(label * z)
    loss = SigmoidLoss()({"text": a, "image": b}, scale, bias)
    torch.testing.assert_close(loss, torch.tensor(total / 4), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="logit_bias"):
        SigmoidLoss()({"text": a, "image": b}, scale)


def test_the_loss_is_summed_over_every_modality_pair():
    text, audio, image = unit(4, seed=7), unit(4, seed=8), unit(4, seed=9)
    loss = MaxMarginLoss(margin=0.2, negatives="all")
    pairs = (
        loss({"text": text, "audio": audio})
        + loss({"text": text, "image": image})
        + loss({"audio": audio, "image": image})
    )
    torch.testing.assert_close(loss({"text": text, "audio": audio, "image": image}), pairs)
    with pytest.raises(ValueError, match="two or more"):
        loss({"text": text})


def test_local_loss_in_one_process_is_the_full_loss():
    a, b = unit(6, seed=10), unit(6, seed=11)
    for name in ("infonce", "max_margin"):
        full = build_loss(name)({"text": a, "image": b}, torch.tensor(14.0))
        local = build_loss(name, local_loss=True)({"text": a, "image": b}, torch.tensor(14.0))
        torch.testing.assert_close(local, full)
    with pytest.raises(ValueError, match="choose one of"):
        build_loss("triplet")


LOCAL_LOSS_WORKER = textwrap.dedent(
    """
    import os, sys, torch, torch.distributed as dist, torch.nn.functional as F
    sys.path.insert(0, sys.argv[1])
    from modeling.common.losses import build_loss
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    results = {}
    for name in ("infonce", "max_margin"):
        for local in (False, True):
            torch.manual_seed(0)
            text, image = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
            x = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))[rank * 8 // world : (rank + 1) * 8 // world]
            embeds = {"text": F.normalize(text(x), dim=-1), "image": F.normalize(image(x + 0.3), dim=-1)}
            loss = build_loss(name, local_loss=local)(embeds, torch.tensor(10.0))
            loss.backward()
            grads = torch.cat([p.grad.flatten() for p in (*text.parameters(), *image.parameters())])
            if world > 1:
                dist.all_reduce(grads)
                grads /= world  # what DDP does
            results[f"{name}/{local}"] = grads
    if rank == 0:
        torch.save(results, f"{sys.argv[2]}/world{world}.pt")
    """
)


def test_gathered_and_local_losses_under_two_processes_give_the_single_process_gradients(tmp_path):
    """2 gloo ranks x 4 rows, negatives gathered with gradients (full or `local_loss`), averaged as DDP does ==
    1 process x 8 rows."""
    from pathlib import Path

    script = tmp_path / "worker.py"
    script.write_text(LOCAL_LOSS_WORKER)
    repo = str(Path(__file__).resolve().parents[2])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for command in (
        [*torchrun, str(script), repo, str(tmp_path)],
        [sys.executable, str(script), repo, str(tmp_path)],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    two, one = torch.load(tmp_path / "world2.pt"), torch.load(tmp_path / "world1.pt")
    for key, grads in one.items():
        torch.testing.assert_close(two[key], grads, rtol=1e-5, atol=1e-7, msg=key)
