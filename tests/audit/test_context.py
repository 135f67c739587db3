"""Who an event names when no request is being served."""

from __future__ import annotations

import types

from apps.audit import context
from apps.audit.context import audit_context, audit_note_key, current


def test_commands_and_tasks_are_the_system():
    assert current().who() == ("system", None)
    assert current().source == "system"


def test_an_interactive_shell_is_named(monkeypatch):
    monkeypatch.setattr(context.sys, "argv", ["manage.py", "shell"])
    monkeypatch.setattr(context.getpass, "getuser", lambda: "ops")
    default = context._process_default()
    assert (default.who(), default.source) == (("shell:ops", None), "shell")


def test_contexts_nest_and_end():
    with audit_context(actor="config", source="config"):
        with audit_context(actor="rotate", source="system"):
            assert current().who() == ("rotate", None)
        assert current().who() == ("config", None)
    assert current().who() == ("system", None)


def test_a_key_outside_a_request_changes_nothing():
    """The API's key authentication only refines a request's context: nothing leaks into
    the process default when it runs without one (e.g. in a unit test)."""
    audit_note_key(types.SimpleNamespace(prefix="gw-abcdefgh"))
    assert current().who() == ("system", None)
