"""How returns are printed for people."""

from prl.run.logs import format_return


def test_small_returns_keep_three_decimals_and_large_ones_one():
    assert format_return(0.955) == "0.955"  # MiniGrid: one decimal would read 1.0
    assert format_return(500.0) == "500.0" and format_return(-71.94) == "-71.9"
    assert format_return(0.0, like=-150.0) == "0.0" and format_return(0.01234, like=0.9) == "0.012"
    assert format_return(None) == "-"


def test_every_field_a_run_logs_is_in_the_schema_and_readme_shows_the_schema(tmp_path):
    import json
    from pathlib import Path

    from prl import train, tuned_config
    from prl.metrics import BY_NAME, markdown_table, unknown

    config = tuned_config("CartPole-v1", steps=2048, workers=1, envs_per_worker=4, rollout_steps=256, epochs=1)
    train(config.replace(out=str(tmp_path), eval_every=2, eval_episodes=2, progress=False, tensorboard=False))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    fields = {name for record in records for name in record}
    assert not unknown(fields)
    always = set(BY_NAME) - {
        "rnd_loss",
        "int_value_loss",
        "intrinsic_reward",
        "intrinsic_reward_scaled",
        "team_return_mean",  # PettingZoo envs only
        "stale_fraction",  # with max_policy_lag
        "importance_ratio",  # with a lag correction
    }
    assert fields == always
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"<!-- metrics:start -->\n{markdown_table()}<!-- metrics:end -->" in readme


def test_tensorboard_charts_exactly_the_metrics_with_a_group():
    from prl.metrics import METRICS
    from prl.run.logs import tensorboard_scalars

    record = {metric.name: 1.0 for metric in METRICS} | {"episode_return_mean": None, "lr": float("nan")}
    tags = [tag for tag, _ in tensorboard_scalars(record)]
    expected = [f"{m.group}/{m.name}" for m in METRICS if m.group is not None]
    assert tags == [tag for tag in expected if tag not in ("charts/episode_return_mean", "charts/lr")]


def test_a_resumed_log_replaces_the_file_whole_instead_of_rewriting_it_in_place(tmp_path):
    import json

    from prl.run.logs import MetricsLog

    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"update": update, "env_steps": 10 * update}) + "\n" for update in range(1, 6)]
    path.write_text("".join(lines))
    with open(path, encoding="utf-8") as before:  # the file as a reader (or a crash) sees it
        log = MetricsLog(path, keep_updates=3)
        log.write({"update": 4, "env_steps": 41})
        log.close()
        assert before.read() == "".join(lines)  # the old file was never truncated
    kept = path.read_text().splitlines()
    assert [json.loads(line)["update"] for line in kept] == [1, 2, 3, 4] and json.loads(kept[-1])["env_steps"] == 41
