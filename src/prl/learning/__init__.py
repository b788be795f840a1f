"""Learning: the learner that turns a batch into a PPO update, the PPO math, the optimizer, and RND."""
