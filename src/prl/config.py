"""Configuration: one frozen dataclass tree holding every option of a prl run.

Each field is followed by a string literal that documents it; the command-line interface
(`prl.run.cli`) turns those strings into its help text, so a new option is one field here.
Values are checked when a config is constructed, and every check fails with a
`ConfigError` whose message is one sentence naming the option and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Tuple, Union

from prl.errors import ConfigError

EnvSource = Union[str, Callable[[], Any]]
"""A Gymnasium id (made with `gym.make`) or a callable that returns a Gymnasium env."""

ENCODERS = ("auto", "mlp", "nature", "grid")
"""The encoders `PolicyConfig.encoder` names (besides module:function); `prl.nn.encoders` builds them."""

SEED_LIMIT = 2**64
"""Seeds are below this: torch's generators take 64-bit seeds."""

MAX_WORKERS = 256
"""More worker processes than this is a typo, not a plan: each one holds a policy and envs."""


def callable_name(fn: Callable) -> str:
    """A printable name for an env callable (looking through functools.partial)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _require_finite(options: Any) -> None:
    """Refuse a NaN or infinite value in any float option of the dataclass `options`: one would
    spoil every update (a loss weight, a clip) or every wait without a word."""
    for item in dataclasses.fields(options):
        value = getattr(options, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{item.name} must be a finite number, got {value}.")


@dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of the PPO update run by the learner."""

    lr: float = 3e-4
    """Adam learning rate."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to zero over the run's env steps."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """Lambda of generalized advantage estimation."""
    epochs: int = 10
    """Passes over each batch per update."""
    minibatch_size: int = 64
    """Samples per gradient step, at most the batch (workers x envs x rollout steps); the batch is cut into round(batch / minibatch_size) equal parts."""
    clip_coef: float = 0.2
    """PPO ratio clipping range."""
    clip_vloss: bool = False
    """Clip the value loss around the old value estimates with clip_coef."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    target_kl: Optional[float] = None
    """Stop the update's epochs early once the approximate KL exceeds this (off when unset)."""
    norm_adv: bool = True
    """Normalize advantages per minibatch."""
    adam_eps: float = 1e-5
    """Adam epsilon."""
    normalize_obs: Optional[bool] = None
    """Normalize observations with running mean and variance, shared with the workers (unset: on unless every observation dimension is bounded on a unit-like scale; see prl.envs.presets)."""
    normalize_reward: Optional[bool] = None
    """Scale rewards by the running std of discounted returns (unset: on for continuous actions; see prl.envs.presets)."""
    obs_clip: float = 10.0
    """Clip normalized observations to [-obs_clip, obs_clip]."""
    reward_clip: float = 10.0
    """Clip scaled rewards to [-reward_clip, reward_clip]."""
    rnd: bool = False
    """Add Random Network Distillation intrinsic rewards for exploration."""
    ext_coef: float = 2.0
    """With rnd: weight of the extrinsic advantages."""
    int_coef: float = 1.0
    """With rnd: weight of the intrinsic advantages (the original program's beta)."""
    int_gamma: float = 0.99
    """With rnd: discount of the (non-episodic) intrinsic returns."""
    rnd_update_fraction: float = 0.25
    """With rnd: fraction of each minibatch the predictor trains on."""
    correction: str = "auto"
    """How a batch collected with older weights is corrected: none (learn from it as if on-policy), clip (GAE advantages weighted by truncated importance ratios), vtrace (V-trace targets and advantages, IMPALA) or auto (vtrace in async mode, none otherwise). The ratios compare the learner's policy before the update with the one that acted; the PPO ratio stays against the one that acted."""
    rho_bar: float = 1.0
    """With correction clip or vtrace: the truncation of the importance ratios that weight the advantages (V-trace's rho-bar)."""
    c_bar: float = 1.0
    """With correction vtrace: the truncation of the ratios that carry the trace (V-trace's c-bar)."""
    max_policy_lag: Optional[int] = None
    """Leave out of the loss the steps acted with weights more than this many updates older than the learner's (counted in stale_fraction; unset: keep every step)."""
    bptt_steps: Optional[int] = None
    """With recurrent: backpropagate through chunks of this many steps, each replayed from the state acting had there; unset: through the whole rollout (rollout_steps must be a multiple)."""

    def __post_init__(self) -> None:
        _require_finite(self)  # first: NaN fails every comparison below with a misleading sentence
        _require(self.lr > 0, f"lr must be a positive number, got {self.lr}.")
        _require(0.0 <= self.gamma <= 1.0, f"gamma must lie in [0, 1], got {self.gamma}.")
        _require(0.0 <= self.gae_lambda <= 1.0, f"gae_lambda must lie in [0, 1], got {self.gae_lambda}.")
        _require(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}.")
        _require(self.minibatch_size >= 2, f"minibatch_size must be at least 2, got {self.minibatch_size}.")
        _require(0.0 < self.clip_coef < 1.0, f"clip_coef must lie in (0, 1), got {self.clip_coef}.")
        _require(self.ent_coef >= 0, f"ent_coef must be non-negative, got {self.ent_coef}.")
        _require(self.vf_coef >= 0, f"vf_coef must be non-negative, got {self.vf_coef}.")
        _require(self.max_grad_norm > 0, f"max_grad_norm must be positive, got {self.max_grad_norm}.")
        _require(
            self.target_kl is None or self.target_kl > 0,
            f"target_kl must be positive or unset, got {self.target_kl}.",
        )
        _require(self.adam_eps > 0, f"adam_eps must be positive, got {self.adam_eps}.")
        _require(self.obs_clip > 0, f"obs_clip must be positive, got {self.obs_clip}.")
        _require(self.reward_clip > 0, f"reward_clip must be positive, got {self.reward_clip}.")
        _require(self.ext_coef >= 0 and self.int_coef >= 0, "ext_coef and int_coef must be non-negative.")
        _require(0.0 <= self.int_gamma <= 1.0, f"int_gamma must lie in [0, 1], got {self.int_gamma}.")
        _require(
            self.bptt_steps is None or self.bptt_steps >= 1,
            f"bptt_steps must be at least 1 or unset, got {self.bptt_steps}.",
        )
        _require(
            self.correction in ("auto", "none", "clip", "vtrace"),
            f"correction must be auto, none, clip or vtrace, got {self.correction!r}.",
        )
        _require(
            self.rho_bar > 0 and self.c_bar > 0,
            f"rho_bar and c_bar must be positive, got {self.rho_bar} and {self.c_bar}.",
        )
        _require(
            self.max_policy_lag is None or self.max_policy_lag >= 0,
            f"max_policy_lag must be non-negative or unset, got {self.max_policy_lag}.",
        )
        _require(
            0.0 < self.rnd_update_fraction <= 1.0,
            f"rnd_update_fraction must lie in (0, 1], got {self.rnd_update_fraction}.",
        )


@dataclass(frozen=True)
class PolicyConfig:
    """Shape of the actor-critic network."""

    hidden_sizes: Tuple[int, ...] = (64, 64)
    """Hidden layer widths, shared by the separate actor and critic MLPs (none: linear heads, as on a CNN's features)."""
    activation: str = "tanh"
    """Hidden activation: tanh or relu."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (continuous actions)."""
    action_scale: Optional[float] = None
    """Multiply continuous actions by this and clip to the action bounds, instead of mapping [-1, 1] onto the bounds."""
    encoder: str = "auto"
    """Image encoder: auto (the Nature CNN from 36x36 pixels up, else a small grid CNN), nature, grid, mlp (flattened pixels), or module:function, a function of an image leaf that returns (network, output width)."""
    recurrent: Optional[str] = None
    """A memory for tasks the agent cannot see whole: lstm or gru, between the observation features and the actor and critic heads, which share it (prl.nn.recurrent); unset: no memory."""
    recurrent_size: int = 128
    """With recurrent: the width of the LSTM's or GRU's state and output."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(size) for size in self.hidden_sizes))
        _require(
            self.recurrent in (None, "lstm", "gru"),
            f"recurrent must be lstm, gru or unset, got {self.recurrent!r}.",
        )
        _require(self.recurrent_size >= 1, f"recurrent_size must be at least 1, got {self.recurrent_size}.")
        _require(
            all(size >= 1 for size in self.hidden_sizes),
            f"hidden_sizes must be positive widths, got {self.hidden_sizes}.",
        )
        _require(
            self.encoder in ENCODERS or ":" in self.encoder,
            f"encoder must be auto, mlp, nature, grid or module:function, got {self.encoder!r}.",
        )
        _require(
            self.activation in ("tanh", "relu"),
            f"activation must be tanh or relu, got {self.activation!r}.",
        )
        _require(
            self.action_scale is None or self.action_scale > 0,
            f"action_scale must be positive or unset, got {self.action_scale}.",
        )
        _require_finite(self)


@dataclass(frozen=True)
class Config:
    """Everything a prl run needs: the environment, the processes, and the PPO settings."""

    env: EnvSource = "CartPole-v1"
    """Gymnasium environment id (or, from Python, a callable returning an env)."""
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for gym.make, as JSON on the command line."""
    action_masks: bool = True
    """Act within the env's action mask where it gives one (an action_mask observation entry, info["action_mask"] or an action_masks() method; prl.envs.masks). Off: any action may be taken, and an observation's mask stays there as an input."""
    agent_ids: bool = False
    """PettingZoo envs: add a one-hot agent id to each agent's observation, so the shared policy can tell the agents apart."""
    workers: int = 2
    """Worker processes collecting experience."""
    envs_per_worker: int = 16
    """Environments stepped together by each worker; for a PettingZoo env, agent rows (a multiple of its agents)."""
    rollout_steps: int = 64
    """Steps each env takes per rollout; a batch is workers (or batch_rollouts) x envs_per_worker x rollout_steps."""
    steps: int = 100_000
    """Total environment steps to train for."""
    seed: int = 1
    """Seed of the learner, the workers' samplers and every env."""
    device: str = "auto"
    """Learner device: auto (CUDA for a policy that reads pixel images, where there is a GPU; the CPU otherwise), cpu, cuda or cuda:N."""
    backend: str = "local"
    """Where the workers run: local (processes on this machine, shared memory) or ray (Ray actors, on a cluster; the ray extra)."""
    ray_address: Optional[str] = None
    """With backend ray: the cluster to join (auto, or HOST:PORT); unset starts a local Ray instance for the run."""
    ray_worker_cpus: float = 1.0
    """With backend ray: CPUs each worker actor asks Ray for."""
    inference: str = "auto"
    """Where actions are computed: worker (each worker's own copy of the policy), central (one copy on the learner's device serves every worker, prl.collection.central) or auto (central for CNN policies on CUDA, else worker)."""
    inference_server: str = "process"
    """With central inference: where the server runs, process (a process of its own, with its own copy of the policy on the learner's device; measured faster, docs/performance.md) or thread (in the learner's process)."""
    mode: str = "sync"
    """How collection and learning take turns: sync (every rollout acts with the newest weights; exactly on-policy and reproducible), overlap (the next batch is collected while the learner trains on this one, with weights one update old; still reproducible) or async (workers never wait for the learner: it learns from whichever rollouts are full, with lag corrected by ppo.correction; prl.collection.slots)."""
    batch_rollouts: Optional[int] = None
    """With mode async: rollouts in each update's batch, from whichever workers filled them (unset: one per worker)."""
    slots_per_worker: int = 2
    """With mode async: trajectory slots per worker, so that workers keep collecting while the learner trains (at least 1; 1 makes async take turns like sync)."""
    learner_threads: int = 1
    """Torch threads of the learner on the CPU."""
    start_method: str = "auto"
    """How worker processes start: auto (forkserver where available, else spawn), forkserver or spawn."""
    max_worker_restarts: int = 3
    """Failures (env errors, dead processes) one worker may recover from within restart_window_s before the run stops."""
    restart_window_s: float = 300.0
    """The time window over which max_worker_restarts counts a worker's failures."""
    nan_policy: str = "error"
    """A NaN or infinite observation or reward: error stops the run; drop discards the rollout and rebuilds the envs."""
    worker_timeout: float = 60.0
    """Seconds to wait for a worker's start-up or rollout before declaring it stuck."""
    eval_episodes: int = 20
    """Episodes of each deterministic evaluation (at the end, and every eval_every updates); 0 skips them."""
    eval_every: int = 0
    """Evaluate every this many updates, log eval_return_mean and keep the best policy in checkpoint_best.pt (0: only at the end)."""
    save_every: int = 50
    """Write checkpoint.pt every this many updates, besides the end of the run (0: only at the end)."""
    progress: bool = True
    """Show a progress bar."""
    out: Optional[str] = None
    """Run folder for config.json, metrics.jsonl, checkpoint.pt and summary.json (nothing is written when unset)."""
    tensorboard: bool = True
    """Also write the metrics as TensorBoard event files into the out folder."""
    overwrite: bool = False
    """Replace a run already in the out folder; without it prl refuses to mix two runs in one folder."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        _require(
            isinstance(self.env, str) and self.env.strip() != "" or callable(self.env),
            f"env must be a Gymnasium id or a callable returning an env, got {self.env!r}.",
        )
        _require(
            isinstance(self.env_kwargs, Mapping),
            f"env_kwargs must be a mapping of gym.make keyword arguments, got {self.env_kwargs!r}.",
        )
        _require(
            1 <= self.workers <= MAX_WORKERS,
            f"workers must be between 1 and {MAX_WORKERS}, got {self.workers}.",
        )
        _require(self.envs_per_worker >= 1, f"envs_per_worker must be at least 1, got {self.envs_per_worker}.")
        _require(self.rollout_steps >= 1, f"rollout_steps must be at least 1, got {self.rollout_steps}.")
        _require(self.learner_threads >= 1, f"learner_threads must be at least 1, got {self.learner_threads}.")
        _require(
            self.start_method in ("auto", "forkserver", "spawn"),
            f"start_method must be auto, forkserver or spawn, got {self.start_method!r}.",
        )
        _require(
            re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)) is not None,
            f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}.",
        )
        _require(self.mode in ("sync", "overlap", "async"), f"mode must be sync, overlap or async, got {self.mode!r}.")
        _require(self.slots_per_worker >= 1, f"slots_per_worker must be at least 1, got {self.slots_per_worker}.")
        _require(
            self.batch_rollouts is None or self.mode == "async",
            "batch_rollouts sizes the batches of --mode async; drop it, or pass --mode async.",
        )
        _require(
            self.batch_rollouts is None or 1 <= self.batch_rollouts <= self.workers * self.slots_per_worker,
            f"batch_rollouts must lie between 1 and workers x slots_per_worker "
            f"({self.workers * self.slots_per_worker}), got {self.batch_rollouts}.",
        )
        _require(self.backend in ("local", "ray"), f"backend must be local or ray, got {self.backend!r}.")
        _require(self.ray_worker_cpus > 0, f"ray_worker_cpus must be positive, got {self.ray_worker_cpus}.")
        _require(
            self.backend == "local" or self.inference != "central",
            "central inference runs with the local backend only; pass --inference worker (or auto) with --backend ray.",
        )
        _require(
            self.policy.recurrent is None or not self.ppo.rnd,
            "RND reads single observations and a recurrent policy sequences; turn one of --rnd and --recurrent off.",
        )
        _require(
            self.inference in ("auto", "worker", "central"),
            f"inference must be auto, worker or central, got {self.inference!r}.",
        )
        _require(
            self.inference_server in ("thread", "process"),
            f"inference_server must be thread or process, got {self.inference_server!r}.",
        )
        _require(
            0 < self.worker_timeout < math.inf,
            f"worker_timeout must be a positive number of seconds, got {self.worker_timeout}.",
        )
        _require(0 <= self.seed < SEED_LIMIT, f"seed must be a non-negative integer below 2**64, got {self.seed}.")
        _require(
            self.max_worker_restarts >= 0, f"max_worker_restarts must be non-negative, got {self.max_worker_restarts}."
        )
        _require(self.restart_window_s > 0, f"restart_window_s must be positive, got {self.restart_window_s}.")
        _require(self.nan_policy in ("error", "drop"), f"nan_policy must be error or drop, got {self.nan_policy!r}.")
        _require(self.steps >= 1, f"steps must be at least 1, got {self.steps}.")
        _require_finite(self)
        _require(self.eval_episodes >= 0, f"eval_episodes must be non-negative, got {self.eval_episodes}.")
        _require(self.eval_every >= 0, f"eval_every must be non-negative, got {self.eval_every}.")
        _require(self.save_every >= 0, f"save_every must be non-negative, got {self.save_every}.")
        _require(
            self.eval_every == 0 or self.eval_episodes > 0,
            "eval_every needs eval_episodes above 0; set --eval-episodes or turn eval_every off.",
        )
        _require(
            self.ppo.bptt_steps is None or self.policy.recurrent is not None,
            "bptt_steps cuts a recurrent policy's sequences; pass --recurrent lstm or gru, or drop --bptt-steps.",
        )
        _require(
            self.ppo.bptt_steps is None or self.rollout_steps % self.ppo.bptt_steps == 0,
            f"rollout_steps ({self.rollout_steps}) must be a multiple of bptt_steps ({self.ppo.bptt_steps}), "
            "so that every sequence has the same length; change one of them.",
        )
        _require(
            self.ppo.minibatch_size <= self.batch_size,
            f"minibatch_size ({self.ppo.minibatch_size}) is larger than the batch of {self.batch_size} "
            f"samples (rollouts x envs_per_worker x rollout_steps); lower it or raise the batch.",
        )
        _require(
            self.steps >= self.batch_size,
            f"steps ({self.steps}) is smaller than one batch of {self.batch_size} env steps; "
            "raise steps or shrink the batch.",
        )

    @property
    def num_envs(self) -> int:
        """Environments across all workers."""
        return self.workers * self.envs_per_worker

    @property
    def lag_correction(self) -> str:
        """none, clip or vtrace: what `ppo.correction` means in this mode (auto: vtrace in async mode, else none)."""
        if self.ppo.correction != "auto":
            return self.ppo.correction
        return "vtrace" if self.mode == "async" else "none"

    @property
    def rollouts_per_batch(self) -> int:
        """Rollouts (of envs_per_worker envs each) in one update's batch: one per worker, or batch_rollouts in async mode."""
        return self.batch_rollouts if self.batch_rollouts is not None else self.workers

    @property
    def num_slots(self) -> int:
        """Trajectory slots in shared memory: one per worker, or slots_per_worker each in async mode."""
        return self.workers * (self.slots_per_worker if self.mode == "async" else 1)

    @property
    def batch_envs(self) -> int:
        """Env columns of one update's batch."""
        return self.rollouts_per_batch * self.envs_per_worker

    @property
    def batch_size(self) -> int:
        """Env steps collected per update."""
        return self.batch_envs * self.rollout_steps

    @property
    def num_updates(self) -> int:
        """Updates needed to reach `steps` (the last batch may overshoot it)."""
        return -(-self.steps // self.batch_size)

    @property
    def env_name(self) -> str:
        """A printable name for the environment."""
        return self.env if isinstance(self.env, str) else callable_name(self.env)

    def replace(self, **changes: Any) -> Config:
        """A copy with the given fields changed; fields of `ppo` and `policy` may be named directly."""
        return from_flat({**to_flat(self), **changes})

    def to_dict(self) -> dict:
        """A JSON-ready dict of the whole tree (a callable env is written as its name)."""
        data = dataclasses.asdict(self)
        if not isinstance(self.env, str):
            data["env"] = self.env_name
        data["env_kwargs"] = dict(self.env_kwargs)
        return data


SECTIONS = {"ppo": PPOConfig, "policy": PolicyConfig}
"""Nested sections of Config and their classes; their fields are addressed by plain name."""


def flat_fields() -> dict[str, tuple[Optional[str], dataclasses.Field]]:
    """Every leaf option by name, with the section it lives in (None for Config's own)."""
    leaves: dict[str, tuple[Optional[str], dataclasses.Field]] = {}
    for top in dataclasses.fields(Config):
        if top.name in SECTIONS:
            for leaf in dataclasses.fields(SECTIONS[top.name]):
                leaves[leaf.name] = (top.name, leaf)
        else:
            leaves[top.name] = (None, top)
    return leaves


def flatten_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """Turn `Config.to_dict()` output ({..., "ppo": {...}, "policy": {...}}) into {leaf name: value}."""
    flat = {key: value for key, value in data.items() if key not in SECTIONS}
    for section in SECTIONS:
        flat.update(data.get(section, {}))
    if "overlap" in flat:  # written before mode replaced it (overlap=True is mode overlap)
        flat.setdefault("mode", "overlap" if flat.pop("overlap") else "sync")
    return flat


def to_flat(config: Config) -> dict[str, Any]:
    """The config as {leaf name: value}, the inverse of `from_flat`."""
    flat = {}
    for name, (section, _) in flat_fields().items():
        owner = getattr(config, section) if section else config
        flat[name] = getattr(owner, name)
    return flat


def closest_option(name: str) -> str:
    """The option whose name is nearest to `name`, to suggest in place of a typo."""
    names = list(flat_fields())
    return (difflib.get_close_matches(name, names, n=1, cutoff=0.0) or names)[0]


def from_flat(values: Mapping[str, Any]) -> Config:
    """Build a Config from {leaf name: value}; unnamed fields keep their defaults."""
    leaves = flat_fields()
    unknown = sorted(set(values) - set(leaves))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r}; did you mean {closest_option(unknown[0])!r}? See --help for the list."
        )
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for name, value in values.items():
        section = leaves[name][0]
        (nested[section] if section else top)[name] = value
    for section, cls in SECTIONS.items():
        top[section] = cls(**nested[section])
    return Config(**top)


def default_device(pixels: bool) -> str:
    """The learner device that `device="auto"` means: CUDA for a policy that reads pixel images
    (`prl.nn.encoders.reads_pixels`), where torch sees a GPU, and the CPU otherwise.

    MLP policies' minibatches (64 to a few thousand rows) leave a GPU idle between kernel
    launches. Measured on a 16-core machine with an H100 (see docs/performance.md): CartPole's
    preset trains in 4.9 s on the CPU and 9.5 s on CUDA, and HalfCheetah's at 1,924 env steps/s
    against 1,268. A CNN on pixels is the opposite case: Atari PPO on CPU cores is bound by the
    Nature CNN's arithmetic, about 225 MFLOP of learning per env step, the work GPUs are built
    for. A small grid's CNN (MiniGrid) stays with the MLPs. Name `cpu` or `cuda` to choose.
    """
    if not pixels:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(config: Config, pixels: bool) -> str:
    """The concrete device named by `config.device`, for a policy that reads pixel images or not."""
    return default_device(pixels) if config.device == "auto" else config.device


def concrete_device(name: str):
    """`name` as a torch.device with its index: "cuda" becomes the current CUDA device, so
    comparisons with the device of a tensor placed there hold."""
    import torch

    device = torch.device(name)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device
