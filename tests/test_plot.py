"""scripts/plot.py draws learning curves of run folders into a PNG and refuses bad folders with one sentence."""

import importlib.util
import json
from pathlib import Path

import matplotlib.image
import pytest

PLOT_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plot.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def import_plot_script():
    """scripts/plot.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("prl_plot_script", PLOT_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plot = import_plot_script()


def write_run(folder: Path, records: list, env: str = "CartPole-v1", summary_eval=None) -> Path:
    """A fake run folder: config.json, metrics.jsonl with `records`, and summary.json."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"env": env, "workers": 2}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    summary = {"env": env, "env_steps": records[-1]["env_steps"], "wall_s": records[-1]["wall_s"] + 0.5}
    if summary_eval is not None:
        summary["eval_return_mean"] = summary_eval
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def record(update, wall_s, episode_return, **extra) -> dict:
    """One metrics line of an update of 1,000 env steps."""
    return {
        "update": update,
        "env_steps": 1000 * update,
        "wall_s": wall_s,
        "episode_return_mean": episode_return,
        "steps_per_s": 1000 * update / wall_s,
        "policy_loss": -0.01,
        **extra,
    }


@pytest.fixture
def resumed_run(tmp_path):
    """A run resumed after update 3 in the same folder: wall_s restarts, early returns are null."""
    records = [
        record(1, 1.0, None),
        record(2, 2.0, 20.0),
        record(3, 3.0, 30.0, eval_return_mean=35.0),
        record(4, 0.5, 40.0, eval_return_mean=None),  # resumed: the clock starts again
        record(5, 1.5, 50.0),
        record(6, 2.5, 60.0, eval_return_mean=70.0),
    ]
    return write_run(tmp_path / "resumed", records, summary_eval=80.0)


def test_load_run_makes_wall_time_cumulative_and_skips_null_returns(resumed_run):
    run = plot.load_run(resumed_run)
    assert run["name"] == "resumed" and run["env"] == "CartPole-v1"
    assert run["env_steps"] == [2000, 3000, 4000, 5000, 6000]
    assert run["wall_s"] == pytest.approx([2.0, 3.0, 3.5, 4.5, 5.5])
    assert run["episode_return"] == [20.0, 30.0, 40.0, 50.0, 60.0]
    assert run["eval_env_steps"] == [3000, 6000]
    assert run["eval_wall_s"] == pytest.approx([3.0, 5.5])
    assert run["eval_return"] == [35.0, 70.0]  # the summary's final evaluation is at 6,000 steps already


def test_cumulative_wall_adds_each_segment_end_after_several_resumes():
    assert plot.cumulative_wall([1.0, 2.0, 0.5, 1.0, 0.2]) == pytest.approx([1.0, 2.0, 2.5, 3.0, 3.2])


def test_the_final_evaluation_from_summary_becomes_a_marker(tmp_path):
    folder = write_run(tmp_path / "run", [record(1, 1.0, 10.0), record(2, 2.0, 20.0)], summary_eval=99.0)
    run = plot.load_run(folder)
    assert (run["eval_env_steps"], run["eval_wall_s"], run["eval_return"]) == ([2000], [2.0], [99.0])


def test_moving_average_smooths_over_n_points_and_keeps_the_length():
    assert plot.moving_average([0.0, 2.0, 4.0, 6.0], 2) == [0.0, 1.0, 3.0, 5.0]
    assert plot.moving_average([3.0, 5.0], 1) == [3.0, 5.0]


def assert_valid_png(path: Path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert 20_000 < path.stat().st_size < 2_000_000
    height, width, channels = matplotlib.image.imread(path).shape
    assert width > height >= 400 and channels in (3, 4)  # two panels side by side


def test_main_writes_a_png_into_the_first_run_folder(resumed_run, tmp_path, capsys):
    other = write_run(tmp_path / "other", [record(1, 0.7, 15.0), record(2, 1.4, 25.0)])
    assert plot.main([str(resumed_run), str(other), "--smooth", "3"]) == 0
    out = resumed_run / "learning_curves.png"
    assert_valid_png(out)
    assert str(out) in capsys.readouterr().out


def test_main_writes_to_out(resumed_run, tmp_path):
    out = tmp_path / "curves.png"
    assert plot.main([str(resumed_run), "--out", str(out)]) == 0
    assert_valid_png(out)
    assert not (resumed_run / "learning_curves.png").exists()


def legend_labels(runs) -> list:
    figure = plot.build_figure(runs)
    return [text.get_text() for axes in figure.axes if axes.get_legend() for text in axes.get_legend().get_texts()]


def test_legend_names_the_env_only_when_runs_differ_in_env(tmp_path):
    records = [record(1, 1.0, 10.0), record(2, 2.0, 20.0)]
    cartpole = plot.load_run(write_run(tmp_path / "a", records))
    cartpole_too = plot.load_run(write_run(tmp_path / "b", records))
    pendulum = plot.load_run(write_run(tmp_path / "c", records, env="Pendulum-v1"))
    assert legend_labels([cartpole, cartpole_too]) == ["a", "b"]
    assert legend_labels([cartpole, pendulum]) == ["a (CartPole-v1)", "c (Pendulum-v1)"]


def test_legend_explains_evaluation_markers_when_there_are_any(resumed_run):
    assert legend_labels([plot.load_run(resumed_run)]) == ["resumed", "evaluation"]


def run_main_expecting_error(args, capsys) -> str:
    assert plot.main([str(arg) for arg in args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err


def test_a_missing_folder_is_refused(tmp_path, capsys):
    err = run_main_expecting_error([tmp_path / "nope"], capsys)
    assert f"{tmp_path / 'nope'} does not exist." in err


def test_a_folder_without_metrics_is_refused(tmp_path, capsys):
    err = run_main_expecting_error([tmp_path], capsys)
    assert f"{tmp_path} is not a prl run folder (no metrics.jsonl); pass the folder given to --out." in err


def test_an_empty_metrics_file_is_refused(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("")
    err = run_main_expecting_error([tmp_path], capsys)
    assert f"{tmp_path / 'metrics.jsonl'} holds no updates" in err


def test_a_corrupt_metrics_line_is_named(tmp_path, capsys):
    lines = [json.dumps(record(1, 1.0, 10.0)), '{"update": 2, "env_st']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    err = run_main_expecting_error([tmp_path], capsys)
    assert f"{tmp_path / 'metrics.jsonl'} line 2 is not valid JSON" in err


def test_a_line_without_env_steps_is_named(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"update": 1, "wall_s": 1.0}) + "\n")
    err = run_main_expecting_error([tmp_path], capsys)
    assert "line 1 has no numeric 'env_steps'" in err


def test_smooth_must_be_at_least_one(resumed_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        plot.main([str(resumed_run), "--smooth", "0"])
    assert exit_info.value.code == 2
    assert "--smooth: must be a whole number of at least 1" in capsys.readouterr().err


def test_a_real_run_folder_plots_every_update_and_evaluation(tmp_path, capsys):
    from prl import train, tuned_config

    folder = tmp_path / "real"
    config = tuned_config(
        "CartPole-v1",
        workers=2,
        envs_per_worker=4,
        rollout_steps=64,
        steps=6 * 512,
        progress=False,
        eval_every=2,
        eval_episodes=3,
        out=str(folder),
    )
    summary = train(config)
    run = plot.load_run(folder)
    assert run["env"] == "CartPole-v1"
    assert run["env_steps"] == [512.0 * update for update in range(1, 7)]
    assert run["wall_s"] == sorted(run["wall_s"]) and run["wall_s"][0] > 0
    assert run["eval_env_steps"] == [1024.0, 2048.0, 3072.0]
    assert run["eval_return"][-1] == summary["eval_return_mean"]
    assert plot.main([str(folder)]) == 0
    assert_valid_png(folder / "learning_curves.png")
    assert str(folder / "learning_curves.png") in capsys.readouterr().out
