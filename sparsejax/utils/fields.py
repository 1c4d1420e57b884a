"""Config fields with their comments, read from the dataclass source: what ``--show_config`` prints.

Every config dataclass carries a comment on each field (trailing, or on the lines right above it),
so the source is the one place the documentation lives; this module reads it back instead of
repeating it in flag help strings.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import re
import tokenize
from typing import Any, Mapping


@functools.lru_cache(maxsize=None)
def field_comments(cls) -> dict[str, str]:
  """{field: its comment} for a dataclass: the comment lines directly above the field (no blank
  line between; a ``# ---`` section header excluded) followed by the trailing comment on its
  line. A field with neither shares the comment above a run of such fields (``# Search centres:``
  over several lines of fields). Fields without any get ""."""
  try:
    lines, _ = inspect.getsourcelines(cls)
  except (OSError, TypeError):
    return {f.name: "" for f in dataclasses.fields(cls)}
  comments: dict[int, str] = {}  # line index → comment text
  code_lines: set[int] = set()
  try:
    for tok in tokenize.generate_tokens(io.StringIO("".join(lines)).readline):
      if tok.type == tokenize.COMMENT:
        comments[tok.start[0] - 1] = tok.string.lstrip("#").strip()
      elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                            tokenize.ENDMARKER):
        code_lines.add(tok.start[0] - 1)
  except (tokenize.TokenError, IndentationError):
    return {f.name: "" for f in dataclasses.fields(cls)}
  out = {}
  for f in dataclasses.fields(cls):
    pattern = re.compile(rf"^\s+{re.escape(f.name)}\s*:")
    index = next((i for i, line in enumerate(lines) if pattern.match(line)), None)
    if index is None:
      out[f.name] = ""
      continue
    trailing = [comments[index]] if index in comments else []
    i = index - 1
    if not trailing:  # a field of a commented group: up through fields without comments
      while i >= 0 and i in code_lines and i not in comments and lines[i].strip():
        i -= 1
    above = []
    while i >= 0 and i in comments and i not in code_lines and not _is_header(comments[i]):
      above.insert(0, comments[i])
      i -= 1
    out[f.name] = " ".join(above + trailing)
  return out


def _is_header(comment: str) -> bool:
  return comment.startswith(("-", "="))


def _literal(value: Any) -> str:
  """A value as it is written after ``--config.x=`` on a command line."""
  if isinstance(value, (list, tuple)):
    return ",".join(map(str, value))
  return str(value)


def describe(flag: str, values: Mapping[str, Any], spec) -> list[str]:
  """One line per field, ``--FLAG.path=value  # comment``, for ``values`` (the loaded config dict)
  described by ``spec``: a dataclass, or {section: dataclass} for a config of sections. Keys the
  spec does not know are listed with "(not a field)"."""
  rows = []
  sections = spec if isinstance(spec, Mapping) else {None: spec}
  for section, cls in sections.items():
    part = values.get(section, {}) if section is not None else values
    comments = field_comments(cls)
    order = [f.name for f in dataclasses.fields(cls) if f.name in part]
    for key in order + [k for k in part if k not in order]:  # the dataclass's order
      value = part[key]
      path = f"{section}.{key}" if section is not None else key
      rows.append((f"--{flag}.{path}={_literal(value)}",
                   comments.get(key, "(not a field)") or "-"))
  width = min(max((len(r[0]) for r in rows), default=0), 48)
  return [f"  {name:<{width}}  # {comment}" for name, comment in rows]
