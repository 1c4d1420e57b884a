"""Released models: OpenAI's ``circuit_sparsity`` checkpoints read without running code
(:mod:`torch_format`, :mod:`state_dict`), mapped onto sparsejax's parameters (:mod:`official`),
and turned into / written back from run directories (:mod:`run_io`). Sits above ``model`` and
``train``."""
