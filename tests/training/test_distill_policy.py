"""training.distill_policy: lite2's stride-2 policy learns to pick the blocks a v1 teacher picks."""

from __future__ import annotations

import torch

from models.lite import LiteNet
from models.lite2 import LiteNet2
from training import distill_policy as dp


def test_cells_and_kl():
    x = torch.arange(2 * 4 * 6.0).view(2, 1, 4, 6)
    c = dp.cells(x, 2)
    assert c.shape == (2 * 2 * 3, 4)
    assert c[0].tolist() == [0.0, 1.0, 6.0, 7.0] and c[1].tolist() == [2.0, 3.0, 8.0, 9.0]
    logits = torch.randn(5, 7)
    assert float(dp.kl(logits, logits + 3.0)) < 1e-6  # the student's offset is free
    assert float(dp.kl(logits, -logits)) > 0.1


def test_teacher_targets_are_block_maxima_standardised():
    teacher = dp.build_teacher(dp.LITE_V1_WEIGHTS)
    images = torch.rand(2, 1, 64, 96)
    z = dp.teacher_targets(teacher, images)
    assert z.shape == (2, 1, 32, 48)
    flat = z.flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(2), atol=1e-4)
    assert torch.allclose(flat.std(1), torch.ones(2), atol=1e-4)
    with torch.no_grad():
        full = teacher(images[:1])["logits"][0, 0]
    # the best pixel of a block decides the block
    y, x = divmod(torch.argmax(full).item(), 96)
    assert torch.argmax(z[0, 0]).item() == (y // 2) * 48 + x // 2


def test_distillation_raises_agreement_with_the_teacher(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "lite2.pt"
    torch.save(LiteNet2().state_dict(), weights)
    student = dp.build_student(weights, fresh=True)
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("pixel_embed.") for n in trainable)
    teacher = dp.build_teacher(dp.LITE_V1_WEIGHTS)
    g = torch.Generator().manual_seed(1)
    images = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 66, 98, generator=g), 3, stride=1)  # [4, 1, 64, 96]
    z = dp.teacher_targets(teacher, images)
    first = dp.distill_loss(student, z, images, beta=2.0, cell=8, global_weight=1.0)
    opt = torch.optim.Adam(student.policy_parameters(), lr=1e-2)
    for _ in range(80):
        terms = dp.distill_loss(student, z, images, beta=2.0, cell=8, global_weight=1.0)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
    last = dp.distill_loss(student, z, images, beta=2.0, cell=8, global_weight=1.0)
    assert last["total"] < 0.5 * first["total"]
    assert last["top2pct_agree"] > first["top2pct_agree"] + 0.1


def test_an_added_context_head_starts_at_zero_and_learns(tmp_path):
    """``--context_dim``: the student gains a context head whose logit starts at 0 (step 0 is the
    input policy, bit for bit), which is trainable and takes part in the distillation."""
    torch.manual_seed(0)
    weights = tmp_path / "lite2.pt"
    torch.save(LiteNet2().state_dict(), weights)
    plain = dp.build_student(weights, fresh=False)
    student = dp.build_student(weights, fresh=False, context_dim=8)
    assert student.conf["context_dim"] == 8 and student.policy_reads_features
    images = torch.rand(2, 1, 64, 96)
    x = dp.standardise(images)
    with torch.no_grad():
        assert torch.equal(student.policy_logits(x, student.shared_features(x)), plain.policy_logits(x))
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert any(n.startswith("policy_context.") for n in trainable)
    assert all(n.startswith(("pixel_embed.", "policy_context.")) for n in trainable)
    z = dp.teacher_targets(dp.build_teacher(dp.LITE_V1_WEIGHTS), images)
    dp.distill_loss(student, z, images, beta=2.0, cell=8, global_weight=1.0)["total"].backward()
    assert float(student.policy_context[-1].weight.grad.abs().sum()) > 0
    again = tmp_path / "ctx.pt"
    torch.save(student.state_dict(), again)
    assert dp.build_student(again, fresh=False, context_dim=8).conf["context_dim"] == 8  # kept, not re-added


def test_distill_cli_rejects_bad_numbers_and_wrong_files(tmp_path, capsys):
    assert dp.main(["--beta", "0"]) == 2
    assert "--beta > 0" in capsys.readouterr().err
    assert dp.main(["--context_dim", "-1"]) == 2
    assert "--context_dim >= 0" in capsys.readouterr().err
    out = str(tmp_path / "o")
    assert dp.main(["--teacher", str(tmp_path / "none.pt"), "--out", out, "--steps", "1"]) == 1
    assert "teacher (traqpoint-lite-v1) weights not found" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert dp.main(["--teacher", str(corrupt), "--out", out, "--steps", "1"]) == 1
    assert "cannot read weight file" in capsys.readouterr().err
    lite2 = tmp_path / "lite2.pt"
    torch.save(LiteNet2().state_dict(), lite2)
    assert dp.main(["--teacher", str(lite2), "--out", out, "--steps", "1"]) == 1
    assert "is a lite2 state dict" in capsys.readouterr().err
    v1 = tmp_path / "v1.pt"
    torch.save(LiteNet().state_dict(), v1)
    assert dp.main(["--weights", str(v1), "--out", out, "--steps", "1"]) == 1
    assert "is not a lite2 state dict" in capsys.readouterr().err
