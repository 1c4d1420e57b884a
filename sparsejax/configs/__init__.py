"""The run configs the binaries select (``experiments/configs/*.py`` re-export them): ``base``
(every RunConfig field as a ConfigDict), ``tiny`` (the CPU default), ``csp`` (the paper's family),
``prune`` (the pruning presets as ConfigDicts). Needs ml_collections (installed with the package).
"""
