"""The model: ``GPTConfig`` (official fields), the NNX GPT, and its activation sites."""
