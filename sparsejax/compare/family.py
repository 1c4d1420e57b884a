"""A model family to compare: its members, their learning-rate sweeps, and one pruning setup.

A family config (``experiments/configs/compare.py``) is a dict::

  members:   {name: {"lrs": [...], "run": <a RunConfig dict>}}   sparse and dense models
  prune:     PruneConfig fields, the same for every member (target_loss is the primary target)
  targets:   the Fig. 2 sweep of target task losses
  ...        the scalar fields of :class:`FamilyConfig`

Every sweep point of a member is an ordinary run directory ``OUT/members/NAME/lr_LR`` that the
normal trainer resumes. Family-level mistakes (a bad target, a bad pruning field) stop before
anything runs; a member's own mistakes (a bad run config) are found when that member runs and are
reported as its failure, so one broken member never stops the others.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from typing import Any, Mapping

from sparsejax.circuits.prune import PruneConfig
from sparsejax.train import run_config
from sparsejax.utils.checks import check_value
from sparsejax.utils.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemberSpec:
  """One model of the family and its learning-rate sweep."""

  name: str  # the member's directory (OUT/members/NAME) and its label in the report
  lrs: tuple[float, ...]  # optim.lr of each sweep point; the best held-out loss is kept
  run: Mapping[str, Any]  # the RunConfig dict of every sweep point (its optim.lr is replaced)

  def point_config(self, lr: float) -> dict:
    """The run config dict of the sweep point with learning rate ``lr``."""
    out = {section: dict(values) for section, values in self.run.items()}
    out.setdefault("optim", {})["lr"] = float(lr)
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class FamilyConfig:
  """What to train, prune and compare. See the module docstring for the dict layout."""

  members: tuple[MemberSpec, ...]  # in the order they are trained
  name: str = "family"  # the report's title
  prune: PruneConfig  # one pruning setup and budget for every member
  targets: tuple[float, ...] = (0.3, 0.15, 0.1, 0.05)  # Fig. 2 target task losses (+ primary)
  tasks: str = "all"  # the tasks considered: "all" or a comma-separated list
  eval_pairs: int = 200  # test pairs per task when deciding which tasks a member solves
  heldout_tokens: int = 65536  # held-out pretraining tokens each member's loss is measured on
  heldout_seed: int = 1234  # which held-out windows (the same for every member)
  # A circuit "misses the target on test" when its test loss > target * (1 + miss_tolerance);
  # such a circuit is a search failure, flagged and left out of the headline ratio.
  miss_tolerance: float = 0.0
  viewer: bool = True  # build each member's circuit viewer (linked from the report's index)

  def __post_init__(self):
    if not self.members:
      raise ConfigError("members: the family has no members")
    names = [m.name for m in self.members]
    for name in names:
      if not _NAME.match(name):
        raise ConfigError(f"members.{name}: a member name must be letters, digits, '_', '.' or "
                          "'-' (it names a directory)")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
      raise ConfigError(f"members: duplicate names {dupes}")
    for m in self.members:
      if not m.lrs or any(not lr > 0 for lr in m.lrs):
        raise ConfigError(f"members.{m.name}.lrs: need one or more learning rates > 0, got "
                          f"{list(m.lrs)}")
      if len(set(m.lrs)) != len(m.lrs):
        raise ConfigError(f"members.{m.name}.lrs: repeated learning rate in {list(m.lrs)}")
    if not self.targets or any(not t > 0 for t in self.targets):
      raise ConfigError(f"targets: need target losses > 0, got {list(self.targets)}")
    for name in ("eval_pairs", "heldout_tokens"):
      if getattr(self, name) < 1:
        raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
    if self.miss_tolerance < 0:
      raise ConfigError(f"miss_tolerance: must be >= 0, got {self.miss_tolerance}")

  @property
  def primary_target(self) -> float:
    """The pruning config's target loss: the full pipeline's circuits and the headline."""
    return self.prune.target_loss

  @property
  def sweep_targets(self) -> tuple[float, ...]:
    """The Fig. 2 targets, the primary one included, from the loosest to the tightest."""
    return tuple(sorted(set(self.targets) | {self.primary_target}, reverse=True))

  def member(self, name: str) -> MemberSpec:
    for m in self.members:
      if m.name == name:
        return m
    raise ConfigError(f"no member named {name!r}; members: {[m.name for m in self.members]}")

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "FamilyConfig":
    """From the config file's dict; unknown keys and wrong types name the field."""
    d = _plain(d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ConfigError(f"{unknown[0]}: unknown key; valid keys: {', '.join(sorted(known))}")
    if "members" not in d or "prune" not in d:
      raise ConfigError("a family config needs 'members' and 'prune'")
    members = []
    for name, spec in d.pop("members").items():
      if not isinstance(spec, Mapping) or set(spec) != {"lrs", "run"}:
        raise ConfigError(f"members.{name}: needs exactly the keys 'lrs' and 'run'")
      lrs = spec["lrs"] if isinstance(spec["lrs"], list) else [spec["lrs"]]
      for lr in lrs:
        check_value(f"members.{name}.lrs", lr, float)
      if not isinstance(spec["run"], Mapping):
        raise ConfigError(f"members.{name}.run: expected a RunConfig dict")
      members.append(MemberSpec(name=str(name), lrs=tuple(float(x) for x in lrs),
                                run=spec["run"]))
    prune = run_config.build(PruneConfig, d.pop("prune"), "prune")
    if "targets" in d:
      targets = d["targets"] if isinstance(d["targets"], list) else [d["targets"]]
      for t in targets:
        check_value("targets", t, float)
      d["targets"] = tuple(float(t) for t in targets)
    hints = typing.get_type_hints(cls)
    for key, value in d.items():
      if key != "targets":
        check_value(key, value, hints[key])
    return cls(members=tuple(members), prune=prune, **d)


def _plain(x):
  """ConfigDicts (and nested mappings / sequences) as plain dicts and lists."""
  if hasattr(x, "to_dict"):
    x = x.to_dict()
  if isinstance(x, Mapping):
    return {k: _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  return x


def lr_label(lr: float) -> str:
  """``lr_2e-02``: a sweep point's directory name (stable for a given float)."""
  return f"lr_{lr:.3g}"


def point_dir(out_dir: str, member: str, lr: float) -> str:
  return os.path.join(out_dir, "members", member, lr_label(lr))
