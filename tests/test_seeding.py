"""Every random stream of a run comes from the run seed by name, along the path `prl.seeding` documents."""

import numpy as np

from prl import seeding


def reference(seed, *path):
    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])


def test_each_named_stream_is_the_seed_sequence_of_its_documented_path():
    assert seeding.env_seed(3, 1, 2) == reference(3, 1, 2)
    assert seeding.env_seed(3, 1, 2, (40,)) == reference(3, 1, 2, 40)
    assert seeding.action_seed(3, 1) == reference(3, 1, 1 << 20)
    assert seeding.process_seed(3, 1, (40,)) == reference(3, 1, 1 << 21, 40)
    assert seeding.evaluation_seed(3) == reference(3, 1 << 30)
    assert seeding.evaluation_seed(3, 4) == reference(3, 1 << 30, 4)
    assert seeding.loop_env_seed(3, 4) == reference(3, 4)


def test_incarnations_of_a_worker_never_share_a_stream():
    lives = [
        seeding.first_incarnation(0),
        seeding.first_incarnation(12),
        seeding.replacement(0, 1),
        seeding.replacement(12, 1),
        seeding.replacement(12, 2),
        seeding.rebuilt(seeding.first_incarnation(0), 1),
        seeding.rebuilt(seeding.replacement(12, 1), 1),
    ]
    assert seeding.first_incarnation(0) == () and seeding.rebuilt((), 0) == ()
    seeds = {seeding.env_seed(1, 0, 0, life) for life in lives}
    seeds |= {seeding.action_seed(1, 0, life) for life in lives}
    seeds |= {seeding.process_seed(1, 0, life) for life in lives}
    assert len(seeds) == 3 * len(lives)
