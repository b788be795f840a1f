"""Evaluate a trained policy: `python scripts/evaluate.py RUN_DIR [--episodes N] [--video FILE.mp4]`.

Loads the checkpoint of a run folder (checkpoint.pt, or checkpoint_best.pt with --best) or a
checkpoint file, runs whole episodes with the deterministic policy (sampled actions with
--stochastic) and prints the mean, std, min and max of the episode return and length; --json
prints one JSON object instead. With the run's seed and 20 episodes (the defaults) this repeats
the final evaluation in the run's summary.json. --video also records episodes rendered as
rgb_array frames into an mp4; it needs imageio and imageio-ffmpeg. A cause the user can fix
ends with one sentence and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import gymnasium as gym
import numpy as np
import torch

from prl.envs.agents import group_of
from prl.envs.factory import EnvFactory, make_rows
from prl.envs.families import game_result
from prl.envs.observations import map_obs
from prl.errors import ConfigError
from prl.nn.policy import ActorCritic
from prl.run.checkpoint import BEST_CHECKPOINT, checkpoint_path, load_policy
from prl.run.evaluation import MAX_EPISODE_STEPS, evaluate
from prl.run.logs import format_return
from prl.seeding import evaluation_seed

VIDEO_PACKAGES = "imageio imageio-ffmpeg"


def build_parser() -> argparse.ArgumentParser:
    """The command line: a run folder or checkpoint file, and how to evaluate it."""
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.splitlines()[0])
    parser.add_argument("path", metavar="PATH", help="a run folder (uses its checkpoint.pt) or a checkpoint file")
    parser.add_argument("--best", action="store_true", help="use the run folder's checkpoint_best.pt")
    parser.add_argument("--episodes", type=int, default=20, help="episodes to evaluate (default: 20)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the most likely")
    parser.add_argument("--seed", type=int, default=None, help="seed of the episodes (default: the run's seed)")
    parser.add_argument("--video", metavar="FILE.mp4", help="also record episodes into this mp4 file")
    parser.add_argument("--video-episodes", type=int, default=1, metavar="K", help="episodes to record (default: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--env", help="the env id to evaluate on, instead of the one the checkpoint names")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="import what the checkpoint names (a module:Env id, a module:function encoder); without it, give --env",
    )
    return parser


def resolve_checkpoint(path: str, best: bool) -> Path:
    """The checkpoint file to load: `path` itself, or the checkpoint.pt (or checkpoint_best.pt) of a run folder."""
    if not best:
        return checkpoint_path(path)
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"--best picks {BEST_CHECKPOINT} in a run folder, but {folder} is not a folder.")
    if not (folder / BEST_CHECKPOINT).exists():
        raise ConfigError(
            f"{folder} has no {BEST_CHECKPOINT}; only runs that evaluate (--eval-episodes above 0) write one."
        )
    return folder / BEST_CHECKPOINT


def video_writer_module():
    """imageio, once it is known that its ffmpeg backend is installed; ConfigError naming the packages otherwise."""
    try:
        import imageio
        import imageio_ffmpeg  # noqa: F401  (the backend imageio uses for mp4)
    except ImportError:
        raise ConfigError(
            f"--video needs imageio and imageio-ffmpeg; install them with `pip install {VIDEO_PACKAGES}`."
        ) from None
    return imageio


def _render(env) -> np.ndarray:
    """One rgb_array frame of a gymnasium env or a PettingZoo env's `AgentGroup`; ConfigError when it cannot draw one."""
    try:
        frame = env.render()
    except gym.error.DependencyNotInstalled as error:
        spec = getattr(env, "spec", None)
        raise ConfigError(f"rendering {spec.id if spec else 'the env'} needs a package: {error}") from error
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise ConfigError("the env does not return rgb_array frames from render(), so no video can be recorded.")
    return frame


def record_video(
    policy: ActorCritic, factory: EnvFactory, file: Path, episodes: int, seed: int, deterministic: bool
) -> int:
    """Play `episodes` episodes in an rgb_array env and write every frame into the mp4 `file`; returns the frame count.

    Episode i starts from the same reset seed as episode i of `evaluate`, so with the
    deterministic policy the video shows the first evaluated episodes. For Atari an episode is
    a whole game, every life of it. A PettingZoo env's agents all act, one row each, and its
    episode lasts until every agent has finished.
    """
    imageio = video_writer_module()
    # rgb_array frames need no window; without this, pygame (classic-control rendering) looks for a
    # display and on a headless machine prints "error: XDG_RUNTIME_DIR is invalid" although all is well.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    spec = policy.spec
    rows = make_rows(factory, spec, max(1, spec.agents), render_mode="rgb_array")
    group = group_of(rows[0]) if spec.agents else None
    drawn = group if group is not None else rows[0]
    writer = None
    frames = 0
    torch.manual_seed(evaluation_seed(seed))
    try:
        fps = (group.env.metadata if group is not None else rows[0].metadata).get("render_fps") or 30
        with torch.inference_mode():
            for episode in range(episodes):
                obs = [row.reset(seed=evaluation_seed(seed, episode))[0] for row in rows]
                frame = _render(drawn)
                if writer is None:  # opened after the first frame, so a rendering error leaves no empty file
                    writer = imageio.get_writer(file, fps=fps, macro_block_size=2)
                writer.append_data(frame)
                frames += 1
                state = policy.core.initial_state(len(rows)) if policy.core is not None else None
                starts = torch.ones(len(rows), dtype=torch.bool)
                for _ in range(MAX_EPISODE_STEPS):
                    batch = map_obs(torch.from_numpy, spec.obs_layout.stack(obs))
                    if state is None:
                        chosen = policy.act(batch, deterministic=deterministic)
                    else:  # a recurrent policy carries its state from step to step
                        chosen, _, _, state = policy.step(batch, state, starts, deterministic=deterministic)
                        starts = torch.zeros(len(rows), dtype=torch.bool)
                    actions = spec.to_env_actions(chosen.numpy())
                    if group is not None:
                        group.step(actions)
                    results = [row.step(action) for row, action in zip(rows, actions)]
                    obs = [result[0] for result in results]
                    writer.append_data(_render(drawn))
                    frames += 1
                    if group is not None:
                        if group.ended:
                            break
                        continue
                    _, _, terminated, truncated, info = results[0]
                    if terminated or truncated:
                        if spec.game_scores and game_result(info) is None:
                            obs = [rows[0].reset()[0]]  # a life lost: the video goes on to the game's end
                            starts = torch.ones(1, dtype=torch.bool)
                            continue
                        break
    finally:
        if writer is not None:
            writer.close()
        for row in rows:
            row.close()
    return frames


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Evaluate a checkpoint from the command line; returns the process exit code (2 for a user error)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # argparse has printed the usage and its error (or the help)
        return stop.code if isinstance(stop.code, int) else 2
    try:
        for flag, value in (("--episodes", args.episodes), ("--video-episodes", args.video_episodes)):
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1, got {value}.")
        if args.video is not None:
            video_writer_module()  # a missing package fails before any episode runs
            video = Path(args.video)
            if video.suffix.lower() != ".mp4":
                raise ConfigError(f"--video writes an mp4 file; name it like {video.with_suffix('.mp4')}.")
            if not video.parent.is_dir():
                raise ConfigError(f"the folder {video.parent} for --video does not exist.")
        file = resolve_checkpoint(args.path, args.best)
        policy, config = load_policy(file, env=args.env, trust=args.trust_checkpoint)
        factory = EnvFactory(config.env, config.env_kwargs)
        seed = config.seed if args.seed is None else args.seed
        deterministic = not args.stochastic
        frames = None
        if args.video is not None:  # first, so a render failure also comes before the evaluation episodes
            frames = record_video(policy, factory, Path(args.video), args.video_episodes, seed, deterministic)
        result = evaluate(policy, factory, args.episodes, seed, deterministic=deterministic)
    except ConfigError as error:
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2
    report = {
        "checkpoint": str(file),
        "env": config.env_name,
        "episodes": args.episodes,
        "deterministic": deterministic,
        "seed": seed,
        **result,
    }
    if args.video is not None:
        report.update(video=args.video, video_episodes=args.video_episodes, video_frames=frames)
    if args.json:
        print(json.dumps(report))
        return 0
    policy_kind = "deterministic" if deterministic else "stochastic"
    print(f"{report['checkpoint']}: {report['env']}, {args.episodes} episodes, {policy_kind} policy, seed {seed}")
    mean = result["return_mean"]
    print(
        f"return {format_return(result['return_mean'])} +- {format_return(result['return_std'], like=mean)} "
        f"(min {format_return(result['return_min'], like=mean)}, max {format_return(result['return_max'], like=mean)})"
        + (" per agent" if "team_return_mean" in result else "")
    )
    if "team_return_mean" in result:
        team = result["team_return_mean"]
        print(f"team return {format_return(team)} +- {format_return(result['team_return_std'], like=team)}")
    print(
        f"length {result['length_mean']:.1f} +- {result['length_std']:.1f} "
        f"(min {result['length_min']}, max {result['length_max']})"
    )
    if args.video is not None:
        plural = "s" if args.video_episodes != 1 else ""
        print(f"video: {args.video} ({args.video_episodes} episode{plural}, {frames} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
