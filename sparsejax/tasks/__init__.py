"""The paper's 20 Python tasks: the registry (registry.py), each split's vocabulary (surface.py),
the pair generators (generators.py), tokenized and validated batches (batch.py) and their
evaluation on the test and ood splits (evaluation.py)."""
