"""The decision record: every alias change and every gate verdict, with its cause.

Kept in MLflow, on the registered model, as one tag per decision
(`mlcycle.history.<time>-<id>`, a JSON object): the registry is where the aliases live,
so the record travels with them, needs no other service, survives any rollback (a tag is
never rewritten) and can be read by any MLflow client
(`MlflowClient().get_registered_model(name).tags`). `mlcycle history` prints it.
"""

from __future__ import annotations

import getpass
import os
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlcycle.config import get_settings

PREFIX = "mlcycle.history."

Action = Literal["promote", "refuse", "force", "rollback", "skip", "drop"]


def who() -> str:
    """The identity a decision is recorded under: the MLflow user, else the OS user."""
    user = get_settings().mlflow_tracking_username
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


class Event(BaseModel):
    """One decision. `before`/`after` are the alias's versions around it (equal when the
    alias did not move: a refusal, a skipped retrain)."""

    model_config = ConfigDict(extra="allow")

    at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="microseconds"))
    action: Action
    alias: str = "champion"
    before: str | None = None
    after: str | None = None
    candidate: str | None = None
    by: str
    """The command or policy that decided: `train`, `promote`, `rollback`, `monitor --retrain`..."""
    user: str = Field(default_factory=who)
    reason: str
    evaluation: dict[str, Any] | None = None
    """What was compared, on which rows (`judge.Verdict.record`)."""

    @property
    def moved(self) -> bool:
        return self.before != self.after


def record(client: Any, name: str, event: Event) -> Event:
    """Append `event` to `name`'s record (a new tag; nothing is overwritten)."""
    stamp = event.at.replace(":", "").replace("-", "").replace("+0000", "Z")
    key = f"{PREFIX}{stamp}-{uuid.uuid4().hex[:8]}"
    client.set_registered_model_tag(name, key, event.model_dump_json(exclude_none=True))
    return event


def history(client: Any, name: str) -> list[Event]:
    """Every recorded decision on `name`, oldest first (an unreadable tag is skipped)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(name).tags or {}
    except MlflowException:
        return []
    events = []
    for key in sorted(k for k in tags if k.startswith(PREFIX)):
        try:
            events.append(Event.model_validate_json(tags[key]))
        except ValidationError:
            continue
    return sorted(events, key=lambda e: e.at)


def served_stack(events: list[Event], alias: str = "champion") -> list[str]:
    """The versions a rollback walks back through, newest last: each move of the alias
    pushes its new version; a rollback pops back to the version it went to (a rolled-back
    version is not returned to by the next rollback)."""
    stack: list[str] = []
    for e in events:
        if e.alias != alias or not e.moved or not e.after:
            continue
        if e.action == "rollback" and e.after in stack:
            del stack[len(stack) - stack[::-1].index(e.after) :]
        else:
            stack.append(e.after)
    return stack
