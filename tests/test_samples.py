"""A minibatch gathered from `Samples` holds, field by field, exactly the rows it names."""

import torch

from prl.learning.samples import Minibatch, Samples


def batch_of(size, obs):
    generator = torch.Generator().manual_seed(0)
    return Minibatch(
        obs=obs,
        actions=torch.randn(size, 3, generator=generator),
        logprobs=torch.randn(size, generator=generator),
        values=torch.randn(size, generator=generator),
        advantages=torch.randn(size, generator=generator),
        returns=torch.randn(size, generator=generator),
    )


def test_each_field_of_a_minibatch_is_its_rows_of_the_whole_batch():
    full = batch_of(10, torch.randn(10, 4))
    full = full._replace(
        int_returns=torch.randn(10),
        next_obs=torch.randn(10, 4),
        episode_starts=(torch.rand(10) < 0.3).float(),
        weights=(torch.rand(10) < 0.7).float(),
    )
    samples = Samples(full)
    index = torch.tensor([7, 0, 3])
    minibatch = samples.take(index)
    assert len(samples) == 10
    for name, whole, part in zip(Minibatch._fields, full, minibatch):
        assert part.shape == (3, *whole.shape[1:]), name
        assert torch.equal(part, whole[index]), name


def test_leaves_keep_their_dtype_and_fields_left_out_stay_none():
    images = torch.randint(0, 255, (6, 3, 5, 5), dtype=torch.uint8)
    full = batch_of(6, {"image": images, "vector": torch.randn(6, 2)})
    minibatch = Samples(full).take(torch.tensor([5, 1]))
    assert minibatch.obs["image"].dtype == torch.uint8
    assert torch.equal(minibatch.obs["image"], images[[5, 1]])
    assert minibatch.int_returns is None and minibatch.next_obs is None and minibatch.episode_starts is None
    assert torch.equal(minibatch.advantages, full.advantages[[5, 1]])
