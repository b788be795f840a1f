"""Networks: the actor-critic policy, its observation encoders and normalizers, and the copies workers act with."""
