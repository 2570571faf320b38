"""The trained state a checkpoint holds: the trained parameters only, by name, restored exactly; a checkpoint from
before that layout (optimizer state by position) still restores; one from another model is one line; DeepSpeed's
files in a ZeRO checkpoint are read as tensors and plain records before DeepSpeed opens them."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from langgraft.errors import UserError
from langgraft.train.checkpoint import FORMAT, apply_checkpoint, rng_state
from langgraft.train.sharding import trained_state


def _model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)  # frozen, as the base model is
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    for _ in range(2):
        model(torch.randn(3, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def _same(a, b, opt_a, opt_b) -> None:
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        if x.requires_grad:
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    for sa, sb in zip(opt_a.state.values(), opt_b.state.values()):
        torch.testing.assert_close(sa["exp_avg_sq"], sb["exp_avg_sq"], rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["by_name", "by_position"])
def test_trained_state_restores_exactly(layout, tmp_path):
    trained, opt, sched = _model_and_optimizer(0)
    weights, optim_state = trained_state(trained, opt)
    assert set(weights) == {"1.weight", "1.bias"}  # the frozen layer is not in it
    if layout == "by_name":
        state = {"format": FORMAT, "model": weights, "optimizer": optim_state}
    else:  # as langgraft wrote checkpoints before FORMAT 2
        state = {"model": weights, "optimizer": opt.state_dict()}
    state.update(scheduler=sched.state_dict(), step=2)
    fresh, fresh_opt, fresh_sched = _model_and_optimizer(1)
    fresh[0].load_state_dict(trained[0].state_dict())
    apply_checkpoint(tmp_path, state, rng_state(), model=fresh, optimizer=fresh_opt, scheduler=fresh_sched)
    _same(trained, fresh, opt, fresh_opt)
    assert fresh_sched.state_dict()["last_epoch"] == 2


def test_a_checkpoint_of_other_weights_is_one_line(tmp_path):
    trained, opt, sched = _model_and_optimizer(0)
    weights, optim_state = trained_state(trained, opt)
    other = {**weights, "2.weight": torch.zeros(2)}
    state = {"format": FORMAT, "model": other, "optimizer": optim_state, "scheduler": sched.state_dict()}
    with pytest.raises(UserError, match=r"holds weights this model does not train \(2.weight\)"):
        apply_checkpoint(tmp_path, state, rng_state(), model=trained, optimizer=opt, scheduler=sched)
    state["model"] = {"1.weight": weights["1.weight"]}
    with pytest.raises(UserError, match=r"lacks trained weight 1.bias"):
        apply_checkpoint(tmp_path, state, rng_state(), model=trained, optimizer=opt, scheduler=sched)


class _RunsCode:
    def __reduce__(self):
        import os

        return os.system, ("touch ran-code",)


def _zero_checkpoint(root, payload):
    """A checkpoint as a ZeRO run writes it (state.pt, rng, DeepSpeed's part in zero/), with `payload` as one of
    DeepSpeed's files; checksums.json matches it, as when someone rewrote both."""
    from langgraft.train.checkpoint import ZERO, save_checkpoint

    model, opt, sched = _model_and_optimizer(0)

    def engine(folder):
        (folder / ZERO).mkdir()
        torch.save(payload, folder / ZERO / "zero_pp_rank_0_mp_rank_00_optim_states.pt")

    return save_checkpoint(root, 4, trained=trained_state(model), scheduler=sched, extra={}, keep=2, engine=engine)


@pytest.mark.parametrize("payload", [_RunsCode(), {"state": [_RunsCode()]}, {"config": argparse.Namespace(a=1)}])
def test_a_zero_file_that_would_run_code_is_refused_before_deepspeed_reads_it(tmp_path, monkeypatch, payload):
    from langgraft.train.checkpoint import read_checkpoint

    monkeypatch.chdir(tmp_path)
    path = _zero_checkpoint(tmp_path / "checkpoints", payload)
    with pytest.raises(UserError, match=r"zero/zero_pp_rank_0_mp_rank_00_optim_states.pt cannot be read safely"):
        read_checkpoint(path)
    assert not (tmp_path / "ran-code").exists()


def test_deepspeed_records_in_a_zero_file_are_read(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    from langgraft.train.checkpoint import read_checkpoint

    payload = {"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum.gradients,
               "param_slice_mappings": [{"w": fragment_address(numel=4, start=0)}], "exp_avg": torch.ones(4)}
    state, _ = read_checkpoint(_zero_checkpoint(tmp_path / "checkpoints", payload))
    assert state["step"] == 4
