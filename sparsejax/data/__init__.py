"""Training data (bottom layer): the built-in corpus generator, local sources, tokenizers, token
shards and the stateless batch sampler."""
