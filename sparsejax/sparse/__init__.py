"""Weight and activation sparsity (bottom layer): exact top-k, parameter groups, the L0 and
learning-rate schedules, and the optax chain whose last link is the top-k projection."""
