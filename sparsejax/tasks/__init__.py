"""The paper's 20 Python tasks: pair generators, tokenized batches and their evaluation."""
