"""Small shared utilities (the bottom layer): the user-error base class, atomic file writes and
JSON reads that name the file, config type checks, explicit broadcasting."""
