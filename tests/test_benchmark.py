"""The throughput benchmark's pieces work against the current API (the full run lives in benchmarks/)."""

import re
import sys
from pathlib import Path

import pytest

from prl.cli import parse_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
throughput = pytest.importorskip("throughput")


def test_collection_measurement_reports_a_rate(no_leaks):
    record = throughput.prl_collection("CartPole-v1", workers=1, envs=2, seconds=0.3)
    assert record["steps_per_s"] > 0 and record["workers"] == 1 and record["envs"] == 2


@pytest.mark.parametrize("shape", [(1, 4), (2, 32), (8, 4)])
@pytest.mark.parametrize("ppo, overlap", [(None, False), (None, True), ("sb3", False)])
def test_training_flags_parse_into_the_intended_config(shape, ppo, overlap):
    settings = throughput.SB3_LIKE_PPO if ppo else None
    args = throughput.train_args("CartPole-v1", *shape, 20_000, settings, overlap)
    config = parse_config(["out" if arg == "TMP" else arg for arg in args])
    assert (config.workers, config.envs_per_worker, config.overlap) == (*shape, overlap)
    if ppo:
        assert config.ppo.epochs == 20 and config.rollout_steps == 32 and config.ppo.gamma == 0.98
    else:
        assert config.ppo.epochs == 3 and config.batch_size >= 2048 or shape == (1, 4)


def test_ratios_compare_against_the_right_runs():
    def run(workers, envs, rate, overlap=False, sb3=False):
        return {"workers": workers, "envs": envs, "steps_per_s": rate, "overlap": overlap, "sb3_settings": sb3}

    results = {
        "prl_training": [
            run(2, 32, 50.0),
            run(8, 4, 40.0),
            run(4, 64, 52.0),
            run(2, 32, 64.0, overlap=True),
            run(2, 32, 10.0, sb3=True),
        ],
        "reference": {"sb3_dummy": {"steps_per_s": 5.0}},
    }
    values = {re.sub(r" \([^)]*\)", "", row["ratio"]): row["value"] for row in throughput.ratios(results)}
    assert values["prl end-to-end, default / SB3 DummyVecEnv"] == 10.0
    assert values["prl end-to-end, best / SB3 DummyVecEnv"] == pytest.approx(12.8)
    assert values["prl at SB3's PPO settings / SB3 DummyVecEnv"] == 2.0
    assert values["README shape / best synchronous shape"] == pytest.approx(40 / 52)
