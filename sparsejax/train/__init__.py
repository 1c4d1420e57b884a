"""Training: the jitted step, the loop, run configs, checkpoints, the device mesh, metrics and
opening a trained run."""
