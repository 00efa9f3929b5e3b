"""LARC against hand computations, the parameter groups, lr scaling, the schedule, and state_dict round trips."""
import math

import pytest
import torch
from torch import nn

from crisscross.config import OptimConfig
from crisscross.model import CrissCross, model_config
from crisscross.optim import LARC, LRSchedule, build_optimizer, build_scheduler, schedule_value, steps_per_epoch


class Toy(nn.Module):
    "A small model with the `param_groups()` interface of `CrissCross`."
    def __init__(self):
        super().__init__()
        self.backbone, self.projector, self.predictor = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        z = self.projector(torch.relu(self.backbone(x)))
        return z, self.predictor(z)

    def param_groups(self):
        return {"backbone": list(self.backbone.parameters()), "projector": list(self.projector.parameters()),
                "predictor": list(self.predictor.parameters())}


def _loss(model, x):
    z, p = model(x)
    return -torch.nn.functional.cosine_similarity(p, z.detach()).mean()


def test_larc_scale_matches_hand_computation_on_two_parameters():
    lin = nn.Linear(1, 1)
    with torch.no_grad():
        lin.weight.fill_(2.0); lin.bias.fill_(-1.0)
    lin.weight.grad, lin.bias.grad = torch.tensor([[4.0]]), torch.tensor([0.5])
    lr, wd, trust = 0.05, 0.1, 0.01
    LARC(torch.optim.SGD(lin.parameters(), lr=lr, weight_decay=wd), trust=trust, clip=True).step()
    for w0, g0, p in ((2.0, 4.0, lin.weight), (-1.0, 0.5, lin.bias)):
        local = trust * abs(w0) / (abs(g0) + wd * abs(w0) + 1e-8)
        expected = w0 - lr * min(local / lr, 1.0) * (g0 + wd * w0)
        assert p.item() == pytest.approx(expected, rel=1e-6)


def test_larc_hand_computation_is_not_vacuous():
    "With trust large enough the clip is active: the scale is 1 and the update is the plain SGD + wd update."
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad(): lin.weight.fill_(2.0)
    lin.weight.grad = torch.tensor([[4.0]])
    LARC(torch.optim.SGD(lin.parameters(), lr=0.05, weight_decay=0.1), trust=10.0, clip=True).step()
    assert lin.weight.item() == pytest.approx(2.0 - 0.05 * (4.0 + 0.1 * 2.0), rel=1e-6)


@pytest.mark.parametrize("lr", [1e-6, 1e-3, 1.0, 100.0])
@pytest.mark.parametrize("trust", [1e-3, 1.0, 1e3])
def test_clip_never_raises_the_effective_lr_above_the_group_lr(lr, trust):
    g = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(5, 3, generator=g, dtype=torch.float64))   # float64: steps of 1e-6 stay exact
    grad = torch.randn(5, 3, generator=g, dtype=torch.float64)
    w0 = w.detach().clone()
    w.grad = grad.clone()
    wd = 1e-4
    LARC(torch.optim.SGD([w], lr=lr, weight_decay=wd), trust=trust, clip=True).step()
    step_norm = (w.detach() - w0).norm()
    assert step_norm <= lr * (grad + wd * w0).norm() * (1 + 1e-9)


def test_zero_norm_params_are_untouched_by_the_trust_ratio():
    w = nn.Parameter(torch.zeros(3)); w.grad = torch.tensor([1.0, -2.0, 3.0])
    v = nn.Parameter(torch.ones(3)); v.grad = torch.zeros(3)
    opt = LARC(torch.optim.SGD([w, v], lr=0.1, weight_decay=0.5), trust=1e-3)
    opt.scale_gradients()
    assert torch.equal(w.grad, torch.tensor([1.0, -2.0, 3.0])) and torch.equal(v.grad, torch.zeros(3))


def test_weight_decay_is_applied_by_larc_and_off_in_the_inner_step(monkeypatch):
    w = nn.Parameter(torch.tensor([1.0, 1.0])); w.grad = torch.tensor([1.0, 0.0])
    inner = torch.optim.SGD([w], lr=1.0, weight_decay=0.5)
    seen = []
    orig = inner.step
    monkeypatch.setattr(inner, "step", lambda *a, **k: (seen.append(inner.param_groups[0]["weight_decay"]), orig())[1])
    LARC(inner, trust=100.0, clip=True).step()   # scale 1
    assert seen == [0.0] and inner.param_groups[0]["weight_decay"] == 0.5
    assert torch.allclose(w.detach(), torch.tensor([1.0 - 1.5, 1.0 - 0.5]))   # g + wd*w = (1.5, 0.5)


def test_groups_partition_the_crisscross_parameters():
    model = CrissCross(model_config("tiny"))
    opt = build_optimizer(model, OptimConfig())
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    pred = {id(p) for n, p in model.named_parameters() if "predictor" in n}
    assert {id(p) for p in opt.param_groups[1]["params"]} == pred
    assert [g["scheduled"] for g in opt.param_groups] == [True, False]
    assert isinstance(opt.optim, torch.optim.Adam) and opt.trust == 1e-3 and opt.clip


def test_lr_scales_with_world_size_and_accumulation():
    model = Toy()
    for ws, acc, bs in [(1, 1, 32), (2, 1, 32), (8, 1, 256), (4, 2, 256)]:
        cfg = OptimConfig(per_device_batch=bs, accumulation=acc)
        opt = build_optimizer(model, cfg, world_size=ws)
        factor = ws * bs * acc / 2048
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-4 * factor, 2e-3 * factor])
        assert opt.param_groups[0]["final_lr"] == pytest.approx(1e-4 * factor)


def test_schedule_values_at_key_steps():
    cfg = OptimConfig(per_device_batch=256, epochs=10, warmup_epochs=2)
    opt = build_optimizer(Toy(), cfg, world_size=8)
    sched = build_scheduler(opt, cfg, steps_per_epoch=50)
    W, N = 100, 500
    assert sched.get_last_lr() == pytest.approx([2e-4 / W, 2e-3])
    assert sched.lr_at(W - 1) == pytest.approx([2e-4, 2e-3])
    assert sched.lr_at(N - 1) == pytest.approx([1e-4, 2e-3]) and sched.lr_at(N + 10) == pytest.approx([1e-4, 2e-3])
    for _ in range(W - 1): sched.step()
    assert sched.get_last_lr() == pytest.approx([2e-4, 2e-3])
    mid = schedule_value(W - 1 + (N - W) // 2, N, W, 2e-4, 1e-4)
    assert mid == pytest.approx(1.5e-4, rel=1e-3)
    lrs = [sched.lr_at(s)[0] for s in range(N)]
    assert all(a < b for a, b in zip(lrs[:W - 1], lrs[1:W])) and all(a >= b for a, b in zip(lrs[W - 1:], lrs[W:]))


def test_steps_per_epoch_counts_clip_pairs():
    cfg = OptimConfig(per_device_batch=256, clips_per_video=5)
    assert steps_per_epoch(22_000, cfg, world_size=8) == 22_000 * 5 // 2048
    with pytest.raises(ValueError, match="less than one global batch"):
        steps_per_epoch(10, cfg, world_size=8)


def _train(model, opt, sched, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        _loss(model, torch.randn(16, 4, generator=g)).backward()
        opt.step(); sched.step()


def test_state_dict_round_trip_gives_identical_subsequent_steps():
    torch.manual_seed(0)
    cfg = OptimConfig(per_device_batch=16, reference_batch=16, epochs=2, warmup_epochs=1, base_lr=1e-2, predictor_lr=1e-2)
    model = Toy()
    opt = build_optimizer(model, cfg); sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    _train(model, opt, sched, 3, seed=1)
    saved = ({k: v.clone() for k, v in model.state_dict().items()},
             {"state": {k: {n: t.clone() if torch.is_tensor(t) else t for n, t in s.items()}
                        for k, s in opt.state_dict()["state"].items()},
              "param_groups": opt.state_dict()["param_groups"]},
             sched.state_dict())
    _train(model, opt, sched, 4, seed=2)
    model2 = Toy()
    opt2 = build_optimizer(model2, cfg); sched2 = build_scheduler(opt2, cfg, steps_per_epoch=5)
    model2.load_state_dict(saved[0]); opt2.load_state_dict(saved[1]); sched2.load_state_dict(saved[2])
    assert sched2.last_step == 3 and sched2.get_last_lr()[0] == pytest.approx(schedule_value(3, 10, 5, 1e-2, 1e-4))
    _train(model2, opt2, sched2, 4, seed=2)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert sched.get_last_lr() == sched2.get_last_lr()
    # and without the optimiser state the continuation differs (the test can fail)
    model3 = Toy(); model3.load_state_dict(saved[0])
    opt3 = build_optimizer(model3, cfg); sched3 = build_scheduler(opt3, cfg, steps_per_epoch=5); sched3.load_state_dict(saved[2])
    _train(model3, opt3, sched3, 4, seed=2)
    assert not torch.equal(model3.backbone.weight, model.backbone.weight)
