"""Train PPO with many worker processes: `python scripts/train.py --workers 8 --envs-per-worker 4`.

Every option is a flag (see --help); tuned defaults load for envs that have them.
"""

from prl.run.cli import exit_now, main

if __name__ == "__main__":
    exit_now(main())
