"""prl's Adam (and its gradient clip) takes the same steps as torch.optim.Adam with clip_grad_norm_."""

import pytest
import torch

from prl.learning.optim import Adam


@pytest.mark.parametrize("fused", [True, False], ids=["fused kernel", "whole-buffer operations"])
def test_matches_torch_adam_step_for_step_with_a_changing_learning_rate(fused, monkeypatch):
    fused_adam = torch._fused_adam_  # the torch this project pins has it: its absence must fail here
    kernel_steps = []

    def counting_fused_adam(params, *args, **kwargs):
        kernel_steps.append(params[0] is ours.flat)  # torch.optim's own steps do not count
        return fused_adam(params, *args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", counting_fused_adam)
    torch.manual_seed(0)
    ours_model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    reference_model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    reference_model.load_state_dict(ours_model.state_dict())
    ours = Adam(ours_model.parameters(), lr=3e-3, eps=1e-5)
    if not fused:
        ours._fused = False
    reference = torch.optim.Adam(reference_model.parameters(), lr=3e-3, eps=1e-5)
    for step in range(25):
        lr = 3e-3 * (1 - step / 25)
        ours.lr = lr
        for group in reference.param_groups:
            group["lr"] = lr
        x = torch.randn(16, 5)
        ours.zero_grad()
        ours_model(x).pow(2).sum().backward()
        ours.clip_grad_norm(1.0)
        ours.step()
        reference.zero_grad()
        reference_model(x).pow(2).sum().backward()
        torch.nn.utils.clip_grad_norm_(reference_model.parameters(), 1.0)
        reference.step()
    for a, b in zip(ours_model.parameters(), reference_model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    # Both paths must have been the ones compared: a fused kernel that failed and fell back would
    # otherwise test the whole-buffer operations twice.
    assert kernel_steps.count(True) == (25 if fused else 0) and ours._fused is fused


def test_state_round_trip_continues_identically():
    torch.manual_seed(1)
    weight = torch.nn.Parameter(torch.randn(4))
    optimizer = Adam([weight], lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        (weight**2).sum().backward()
        optimizer.step()
    state = optimizer.state_dict()
    copy = torch.nn.Parameter(weight.detach().clone())
    restored = Adam([copy], lr=0.5)
    restored.load_state_dict(state)
    for optimizer_, parameter in ((optimizer, weight), (restored, copy)):
        optimizer_.zero_grad()
        (parameter**2).sum().backward()
        optimizer_.step()
    assert torch.equal(weight, copy) and restored.lr == 0.1


def test_gradients_land_in_the_flat_buffer_and_zero_grad_keeps_them_there():
    model = torch.nn.Linear(3, 2)
    optimizer = Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    assert optimizer.flat_grad.abs().sum() > 0
    assert model.weight.grad.data_ptr() == optimizer.flat_grad.data_ptr()
    optimizer.zero_grad()
    model(torch.ones(1, 3)).sum().backward()
    assert torch.equal(optimizer.flat_grad[:6], torch.ones(6)), "backward must accumulate into the same buffer"
    before = model.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(model.weight, before)
