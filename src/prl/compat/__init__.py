"""The original program's API (`PPO`, `AsyncPPO`, the custom-loop helpers) running on prl."""
