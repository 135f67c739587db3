"""What an apply did (or would do), in words an operator can read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

CREATED, UPDATED, UNCHANGED, DELETED = "created", "updated", "unchanged", "deleted"


@dataclass(frozen=True)
class Change:
    kind: str  # provider, model, deployment, tenant, key
    name: str
    action: str
    fields: tuple[str, ...] = ()
    note: str = ""

    def line(self) -> str:
        text = f"{self.kind} {self.name}: {self.action}"
        if self.fields:
            text += f" ({', '.join(self.fields)})"
        if self.note:
            text += f" — {self.note}"
        return text


@dataclass(frozen=True)
class GeneratedSecret:
    """A key secret the gateway generated: shown once, in this apply's output only."""

    key: str  # tenant/name
    secret: str


@dataclass
class ApplyReport:
    dry_run: bool = False
    prune: bool = False
    changes: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    generated_secrets: list[GeneratedSecret] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> bool:
        return any(c.action != UNCHANGED for c in self.changes)

    def add(self, kind: str, name: str, action: str, fields=(), note: str = "") -> None:
        self.changes.append(Change(kind, name, action, tuple(fields), note))

    def counts(self) -> Counter[str]:
        return Counter(c.action for c in self.changes)

    def summary(self) -> str:
        if self.errors:
            return f"Invalid configuration: {len(self.errors)} error(s); nothing was changed."
        counts = self.counts()
        parts = ", ".join(
            f"{counts[action]} {action}" for action in (CREATED, UPDATED, DELETED, UNCHANGED)
        )
        if self.dry_run:
            return f"Dry run, nothing was changed. Would apply: {parts}."
        if not self.changed:
            return f"No changes: {parts}."
        return f"Applied: {parts}."
