"""`manage.py gateway_config apply|export`: config as code, as DESIGN.md specifies it."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.core import crypto
from apps.core.configfile import config_apply, load_yaml
from apps.keys.models import ApiKey
from apps.keys.secrets import hash_secret
from apps.keys.selectors import key_get_by_secret
from apps.providers.adapters import registry
from apps.providers.adapters.base import ProviderAdapter
from apps.providers.models import Deployment, Model, Provider
from apps.tenants.models import Tenant
from tests.conftest import ROOT, server_env, settle

# The example from DESIGN.md, "Config as code", verbatim.
DESIGN_EXAMPLE = """\
providers:
  - name: local-openai
    kind: openai                # openai | azure_openai | anthropic | gemini | cohere | ollama | mock
    base_url: http://127.0.0.1:9001/v1
    api_key: env:LOCAL_OPENAI_KEY   # env:NAME, file:PATH, or a literal (stored encrypted)
  - name: local-claude
    kind: anthropic
    base_url: http://127.0.0.1:9002   # as each provider's official SDK takes it (OpenAI: .../v1; Anthropic: no /v1)
    api_key: literal-secret
models:
  - name: gpt-4o-mini               # the name clients send
    deployments:
      - {provider: local-openai, upstream_model: gpt-4o-mini, weight: 1}
    pricing: {input_per_million: 0.15, output_per_million: 0.60}
    fallbacks: [claude-haiku]        # other model names, tried in order
    timeout_s: 60                    # overall deadline (optional)
    retries: 2                       # retry attempts per deployment (optional)
  - name: claude-haiku
    deployments:
      - {provider: local-claude, upstream_model: claude-haiku-4-5, weight: 1}
tenants:
  - name: acme
    budget: {limit_usd: 100, period: monthly}
    keys:
      - name: ci
        secret: env:ACME_KEY        # optional: import a known secret; else one is generated and printed once
        scopes: [inference, management:read, management:write]   # default: [inference]
        rpm: 600
        tpm: 100000
        models: [gpt-4o-mini]       # omitted = all models
      - name: signed-client
        signing_secret: env:ACME_SIGNING_SECRET   # optional; with require_signature every request must be signed
        require_signature: true
"""

ACME_KEY = "gw-acme-imported-ci-secret-0123456789"
SIGNING_SECRET = "acme-signing-secret-s3cr3t"
PROVIDER_LITERAL = "literal-secret"
SECRET_LINE = re.compile(r"SECRET (\S+): (\S+)")


class _StubAnthropic(ProviderAdapter):
    kind = "anthropic"
    label = "Anthropic (test stub)"


@pytest.fixture
def anthropic_kind():
    """The DESIGN example names `anthropic`; stand in for it until its adapter is registered."""
    if "anthropic" in registry.kinds():
        yield
        return
    # The registry has no public unregister; the stub must not outlive this test.
    registry._adapters["anthropic"] = _StubAnthropic()
    yield
    registry._adapters.pop("anthropic", None)


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("LOCAL_OPENAI_KEY", "sk-local-openai")
    monkeypatch.setenv("ACME_KEY", ACME_KEY)
    monkeypatch.setenv("ACME_SIGNING_SECRET", SIGNING_SECRET)


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run(*args: str, stdin: str | None = None) -> str:
    out, err = io.StringIO(), io.StringIO()
    extra = {"stdin": io.StringIO(stdin)} if stdin is not None else {}
    call_command("gateway_config", *args, stdout=out, stderr=err, no_color=True, **extra)
    return out.getvalue()


def run_failing(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("gateway_config", *args, stdout=out, stderr=err, no_color=True)
    return err.getvalue() + str(excinfo.value)


def apply_text(tmp_path: Path, text: str, *flags: str) -> str:
    return run("apply", write(tmp_path, text), *flags)


def snapshot() -> dict[str, object]:
    """Every managed row's updated_at, to prove a no-op apply touched nothing."""
    rows: dict[str, object] = {}
    for model in (Provider, Model, Deployment, Tenant, ApiKey):
        for obj in model.objects.all():
            rows[f"{model.__name__}:{obj.pk}"] = obj.updated_at
    return rows


pytestmark = pytest.mark.usefixtures("anthropic_kind")


# --- apply -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_design_example_creates_every_object(tmp_path, env):
    output = apply_text(tmp_path, DESIGN_EXAMPLE)

    openai = Provider.objects.get(name="local-openai", tenant=None)
    assert openai.kind == "openai" and openai.base_url == "http://127.0.0.1:9001/v1"
    assert openai.credential_ref == "env:LOCAL_OPENAI_KEY"
    assert openai.get_credential() == "sk-local-openai"
    claude = Provider.objects.get(name="local-claude", tenant=None)
    assert claude.kind == "anthropic" and claude.base_url == "http://127.0.0.1:9002"
    assert claude.get_credential() == PROVIDER_LITERAL

    mini = Model.objects.get(name="gpt-4o-mini", tenant=None)
    assert mini.input_price_per_million == Decimal("0.15")
    assert mini.output_price_per_million == Decimal("0.60")
    assert mini.fallbacks == ["claude-haiku"]
    assert mini.timeout_s == 60 and mini.retries == 2
    [deployment] = mini.deployments.all()
    assert (deployment.provider, deployment.upstream_model, deployment.weight) == (
        openai,
        "gpt-4o-mini",
        1,
    )
    haiku = Model.objects.get(name="claude-haiku")
    assert haiku.timeout_s is None and haiku.retries is None and haiku.fallbacks == []
    assert haiku.deployments.get().provider == claude

    acme = Tenant.objects.get(name="acme")
    assert acme.budget_limit_usd == Decimal("100") and acme.budget_period == "monthly"
    ci = ApiKey.objects.get(tenant=acme, name="ci")
    assert ci.secret_hash == hash_secret(ACME_KEY)
    assert ci.scopes == ["inference", "management:read", "management:write"]
    assert (ci.rpm, ci.tpm, ci.allowed_models) == (600, 100000, ["gpt-4o-mini"])
    assert not ci.require_signature and not ci.signing_secret_encrypted
    signed = ApiKey.objects.get(tenant=acme, name="signed-client")
    assert signed.require_signature
    assert crypto.decrypt(signed.signing_secret_encrypted) == SIGNING_SECRET
    assert signed.scopes == ["inference"] and signed.allowed_models == []
    assert signed.rpm is None and signed.tpm is None

    assert "provider local-openai: created" in output
    assert "key acme/ci: created" in output
    # The imported secret is never printed; only signed-client got a generated one.
    assert ACME_KEY not in output
    assert [m.group(1) for m in SECRET_LINE.finditer(output)] == ["acme/signed-client"]
    assert "Applied: 9 created, 0 updated, 0 deleted, 0 unchanged." in output


@pytest.mark.django_db
def test_secrets_at_rest_literal_encrypted_references_as_written(tmp_path, env):
    apply_text(tmp_path, DESIGN_EXAMPLE)
    table = Provider._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT name, credential_ref, credential_encrypted FROM {table} ORDER BY name"
        )
        rows = {name: (ref, encrypted) for name, ref, encrypted in cursor.fetchall()}
        cursor.execute(f"SELECT * FROM {ApiKey._meta.db_table}")
        key_rows = repr(cursor.fetchall())
    ref, encrypted = rows["local-claude"]
    assert ref == "" and encrypted and PROVIDER_LITERAL not in encrypted
    assert crypto.decrypt(encrypted) == PROVIDER_LITERAL
    assert rows["local-openai"] == ("env:LOCAL_OPENAI_KEY", "")
    assert "sk-local-openai" not in repr(rows)  # a reference is resolved at use, never stored
    assert ACME_KEY not in key_rows and SIGNING_SECRET not in key_rows
    assert hash_secret(ACME_KEY) in key_rows


@pytest.mark.django_db
def test_applying_twice_changes_nothing(tmp_path, env, django_capture_on_commit_callbacks):
    first = apply_text(tmp_path, DESIGN_EXAMPLE)
    assert SECRET_LINE.search(first)
    before = snapshot()

    with django_capture_on_commit_callbacks() as callbacks:
        second = apply_text(tmp_path, DESIGN_EXAMPLE)

    lines = second.strip().splitlines()
    assert lines[-1] == "No changes: 0 created, 0 updated, 0 deleted, 9 unchanged."
    assert all(line.endswith(": unchanged") for line in lines[:-1]), second
    assert "SECRET" not in second
    assert snapshot() == before
    assert callbacks == []  # no configuration-change token bump either


@pytest.mark.django_db
def test_changing_one_price_updates_only_that_model(tmp_path, env):
    apply_text(tmp_path, DESIGN_EXAMPLE)
    before = snapshot()
    haiku = Model.objects.get(name="claude-haiku")

    changed = DESIGN_EXAMPLE.replace("output_per_million: 0.60", "output_per_million: 0.75")
    output = apply_text(tmp_path, changed)

    assert "model gpt-4o-mini: updated (pricing.output_per_million)" in output
    assert "Applied: 0 created, 1 updated, 0 deleted, 8 unchanged." in output
    mini = Model.objects.get(name="gpt-4o-mini")
    assert mini.output_price_per_million == Decimal("0.75")
    assert mini.input_price_per_million == Decimal("0.15")
    after = snapshot()
    assert {k for k in before if before[k] != after[k]} == {f"Model:{mini.pk}"}
    assert Model.objects.get(pk=haiku.pk).updated_at == haiku.updated_at


@pytest.mark.django_db
def test_file_is_authoritative_for_a_models_deployments(tmp_path):
    two = """\
providers:
  - {name: a, kind: mock}
  - {name: b, kind: mock}
models:
  - name: m
    deployments:
      - {provider: a, upstream_model: m-a, weight: 3}
      - {provider: b, upstream_model: m-b, weight: 1, priority: 1}
"""
    apply_text(tmp_path, two)
    assert Deployment.objects.filter(model__name="m").count() == 2

    one = two.replace("      - {provider: b, upstream_model: m-b, weight: 1, priority: 1}\n", "")
    one = one.replace("weight: 3", "weight: 5")
    output = apply_text(tmp_path, one)

    assert "deployment m -> b/m-b: deleted" in output
    assert "deployment m -> a/m-a: updated (weight)" in output
    [left] = Deployment.objects.filter(model__name="m")
    assert (left.provider.name, left.upstream_model, left.weight) == ("a", "m-a", 5)
    # The provider itself stays: only --prune deletes objects missing from the file.
    assert Provider.objects.filter(name="b").exists()


@pytest.mark.django_db
def test_invalid_document_lists_every_error_and_changes_nothing(tmp_path, env, monkeypatch):
    apply_text(tmp_path, DESIGN_EXAMPLE)
    before = snapshot()
    monkeypatch.delenv("ACME_KEY")
    bad = """\
providers:
  - {name: fresh, kind: mock}             # valid, yet must not be created
  - {name: weird, kind: nope, colour: red}
  - {name: fresh, kind: mock}
  - {name: ok-ish, kind: openai, api_key: env:GW_TEST_NOT_SET}
models:
  - name: gpt-4o-mini
    deployments:
      - {provider: x, upstream_model: gpt-4o-mini}
      - {provider: fresh, weight: many}
    pricing: {input_per_million: 0.1234567, output_per_million: cheap}
    fallbacks: [ghost]
  - name: other
    mode: image
    timeout_s: soon
tenants:
  - name: acme
    budget: {limit_usd: -1, period: yearly}
    keys:
      - {name: ci, secret: env:ACME_KEY}
      - {name: short, secret: too-short, scopes: [root]}
      - {name: short, signing_secret: "file:/nonexistent/signing"}
extra: true
"""
    message = run_failing("apply", write(tmp_path, bad))

    expected = [
        "extra: unknown top-level key",
        "providers[1].colour: unknown field",
        "providers[1].kind: unknown provider kind 'nope'",
        "providers[2]: duplicate provider name 'fresh' (first at providers[0])",
        "providers[3].api_key: cannot resolve 'env:GW_TEST_NOT_SET'",
        "models[0].deployments[0].provider: unknown provider 'x'",
        "models[0].deployments[1].upstream_model: is required",
        "models[0].deployments[1].weight: must be an integer",
        "models[0].pricing.input_per_million: must have at most 6 decimal places",
        "models[0].pricing.output_per_million: must be a number",
        "models[0].fallbacks[0]: unknown model 'ghost'",
        "models[1].mode: must be one of chat, embedding",
        "models[1].timeout_s: must be a number of seconds",
        "tenants[0].budget.limit_usd: must be a finite number, zero or more",
        "tenants[0].budget.period: must be one of daily, weekly, monthly, total",
        "tenants[0].keys[0].secret: cannot resolve 'env:ACME_KEY'",
        "tenants[0].keys[1].secret: an imported key secret must be at least 20 characters",
        "tenants[0].keys[1].scopes: unknown scope(s) 'root'",
        "tenants[0].keys[2].signing_secret: cannot resolve 'file:/nonexistent/signing'",
        "tenants[0].keys[2]: duplicate key name 'short'",
    ]
    for error in expected:
        assert error in message, f"missing {error!r} in:\n{message}"
    assert "nothing was changed" in message
    assert snapshot() == before
    assert not Provider.objects.filter(name="fresh").exists()


@pytest.mark.django_db
def test_a_failure_midway_rolls_back_the_whole_apply(tmp_path, env, monkeypatch):
    from apps.core.configfile import apply as apply_module
    from apps.core.errors import InvalidRequest

    real = apply_module.deployment_create

    def failing(**kwargs):
        if kwargs["model"].name == "claude-haiku":
            raise InvalidRequest("upstream exploded")
        return real(**kwargs)

    monkeypatch.setattr(apply_module, "deployment_create", failing)
    message = run_failing("apply", write(tmp_path, DESIGN_EXAMPLE))

    assert "upstream exploded" in message
    for model in (Provider, Model, Deployment, Tenant, ApiKey):
        assert not model.objects.exists(), model


@pytest.mark.django_db
def test_yaml_syntax_and_duplicate_keys_are_reported(tmp_path):
    message = run_failing("apply", write(tmp_path, "providers:\n  - name: a\n    name: b\n"))
    assert "found duplicate key 'name'" in message and "line 3" in message
    message = run_failing("apply", write(tmp_path, "providers: [\n"))
    assert "invalid YAML" in message


@pytest.mark.django_db
def test_apply_reads_stdin_and_dry_run_changes_nothing(tmp_path, env):
    output = run("apply", "-", "--dry-run", stdin=DESIGN_EXAMPLE)
    assert "provider local-openai: created" in output
    assert "Dry run, nothing was changed. Would apply: 9 created" in output
    assert "SECRET" not in output
    assert not Provider.objects.exists() and not Tenant.objects.exists()

    output = run("apply", "-", stdin=DESIGN_EXAMPLE)
    assert "Applied: 9 created" in output
    assert Provider.objects.count() == 2


# --- secrets of keys -------------------------------------------------------------------


@pytest.mark.django_db
def test_generated_secret_is_printed_once_and_authenticates(tmp_path):
    text = "tenants:\n  - name: beta\n    keys:\n      - name: app\n"
    first = apply_text(tmp_path, text)
    [(label, secret)] = SECRET_LINE.findall(first)
    assert label == "beta/app"
    assert first.count(secret) == 1

    key = ApiKey.objects.get(tenant__name="beta", name="app")
    assert key.secret_hash == hash_secret(secret)
    assert key_get_by_secret(secret=secret) == key
    assert key.scopes == ["inference"]

    second = apply_text(tmp_path, text)
    assert secret not in second and "SECRET" not in second
    assert "key beta/app: unchanged" in second
    assert ApiKey.objects.get(pk=key.pk).secret_hash == hash_secret(secret)


@pytest.mark.django_db
def test_a_different_imported_secret_rotates_the_key(tmp_path, env, monkeypatch):
    apply_text(tmp_path, DESIGN_EXAMPLE)
    key = ApiKey.objects.get(name="ci")
    new_secret = "gw-acme-rotated-ci-secret-9876543210"
    monkeypatch.setenv("ACME_KEY", new_secret)

    output = apply_text(tmp_path, DESIGN_EXAMPLE)

    assert "key acme/ci: updated (secret) — SECRET ROTATED" in output
    assert new_secret not in output
    assert key_get_by_secret(secret=new_secret) == key
    assert key_get_by_secret(secret=ACME_KEY) is None
    assert "key acme/ci: unchanged" in apply_text(tmp_path, DESIGN_EXAMPLE)


@pytest.mark.django_db
def test_a_changed_signing_secret_is_updated(tmp_path, env, monkeypatch):
    apply_text(tmp_path, DESIGN_EXAMPLE)
    monkeypatch.setenv("ACME_SIGNING_SECRET", "another-signing-secret")
    output = apply_text(tmp_path, DESIGN_EXAMPLE)
    assert "key acme/signed-client: updated (signing_secret)" in output
    key = ApiKey.objects.get(name="signed-client")
    assert crypto.decrypt(key.signing_secret_encrypted) == "another-signing-secret"


@pytest.mark.django_db
def test_a_key_revoked_in_the_admin_stays_revoked(tmp_path, env):
    from apps.keys.services import key_revoke

    apply_text(tmp_path, DESIGN_EXAMPLE)
    key_revoke(key=ApiKey.objects.get(name="ci"))
    out, err = io.StringIO(), io.StringIO()
    call_command("gateway_config", "apply", write(tmp_path, DESIGN_EXAMPLE), stdout=out, stderr=err)
    assert "tenants[0].keys[0]: key acme/ci is revoked and stays revoked" in err.getvalue()
    assert "key acme/ci: unchanged" in out.getvalue()
    assert ApiKey.objects.get(name="ci").revoked_at is not None


# --- export ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_export_never_contains_a_secret(tmp_path, env):
    generated = SECRET_LINE.findall(apply_text(tmp_path, DESIGN_EXAMPLE))[0][1]
    exported = run("export")

    for secret in (PROVIDER_LITERAL, ACME_KEY, SIGNING_SECRET, generated, "sk-local-openai"):
        assert secret not in exported
    for key in ApiKey.objects.all():
        assert key.secret_hash not in exported and key.prefix not in exported
    assert Provider.objects.get(name="local-claude").credential_encrypted not in exported
    assert "signing_secret" not in exported and "secret:" not in exported

    data = load_yaml(exported)
    providers = {p["name"]: p for p in data["providers"]}
    assert providers["local-openai"]["api_key"] == "env:LOCAL_OPENAI_KEY"
    assert providers["local-claude"]["api_key"] == "<encrypted>"
    mini = next(m for m in data["models"] if m["name"] == "gpt-4o-mini")
    assert mini["pricing"] == {"input_per_million": 0.15, "output_per_million": 0.6}


@pytest.mark.django_db
def test_exported_document_reapplies_without_changes(tmp_path, env):
    apply_text(tmp_path, DESIGN_EXAMPLE)
    before = snapshot()
    exported = run("export")

    output = apply_text(tmp_path, exported)

    assert "No changes: 0 created, 0 updated, 0 deleted, 9 unchanged." in output
    assert snapshot() == before
    # "<encrypted>" kept the literal credential.
    assert Provider.objects.get(name="local-claude").get_credential() == PROVIDER_LITERAL


@pytest.mark.django_db
def test_encrypted_placeholder_cannot_create_a_provider(tmp_path):
    text = "providers:\n  - {name: new, kind: openai, api_key: <encrypted>}\n"
    message = run_failing("apply", write(tmp_path, text))
    assert "providers[0].api_key: '<encrypted>' keeps the stored credential" in message
    assert not Provider.objects.exists()


RICH = """\
providers:
  - name: up
    kind: openai
    base_url: http://127.0.0.1:9001/v1
    api_key: file:{secret_file}
  - name: sim
    kind: mock
    options: {latency_ms: 5}
    enabled: false
models:
  - name: chat-a
    description: Main chat model.
    context_window: 128000
    max_output_tokens: 4096
    deployments:
      - {provider: up, upstream_model: a-1, weight: 3}
      - {provider: sim, upstream_model: a-2, weight: 1, priority: 2, enabled: false}
    pricing: {input_per_million: 0.000001, output_per_million: 12.5}
    fallbacks: [embed-b]
    timeout_s: 12.5
    retries: 0
    enabled: false
  - name: embed-b
    mode: embedding
    deployments:
      - {provider: sim, upstream_model: e, weight: 1}
    pricing: {input_per_million: "0.02", output_per_million: 0}
tenants:
  - name: t1
    display_name: Tenant One
    enabled: false
    budget: {limit_usd: 99.95, period: weekly}
    keys:
      - {name: k1, scopes: [management:read, inference], rpm: 1, tpm: 2, models: [chat-a]}
      - {name: k2, expires_at: "2031-05-06T07:08:09+00:00", revoked: true}
      - {name: k3, require_signature: true, signing_secret: "a-signing-secret"}
  - name: t2
"""


@pytest.mark.django_db
def test_export_round_trips_through_an_empty_database(tmp_path):
    secret_file = tmp_path / "up.key"
    secret_file.write_text("sk-from-file\n")
    apply_text(tmp_path, RICH.replace("{secret_file}", str(secret_file)))
    assert Model.objects.get(name="chat-a").input_price_per_million == Decimal("0.000001")
    assert ApiKey.objects.get(name="k2").revoked_at is not None
    exported = run("export")
    assert "sk-from-file" not in exported and "a-signing-secret" not in exported

    for model in (ApiKey, Tenant, Deployment, Model, Provider):
        model.objects.all().delete()
    output = apply_text(tmp_path, exported)

    assert re.search(r"Applied: \d+ created, 0 updated, 0 deleted, 0 unchanged", output)
    assert run("export") == exported
    # Only the active key without an imported secret gets a printed one (k1 and k3).
    assert sorted(label for label, _ in SECRET_LINE.findall(output)) == ["t1/k1", "t1/k3"]


# --- prune -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_objects_missing_from_the_file_are_kept_unless_pruned(tmp_path):
    full = """\
providers:
  - {name: a, kind: mock}
  - {name: b, kind: mock}
models:
  - {name: ma, deployments: [{provider: a, upstream_model: x}]}
  - {name: mb, deployments: [{provider: b, upstream_model: x}]}
tenants:
  - {name: keep, keys: [{name: k1}, {name: k2}]}
  - {name: gone}
"""
    reduced = """\
providers:
  - {name: a, kind: mock}
models:
  - {name: ma, deployments: [{provider: a, upstream_model: x}]}
tenants:
  - {name: keep, keys: [{name: k1}]}
"""
    apply_text(tmp_path, full)
    output = apply_text(tmp_path, reduced)
    assert ": deleted" not in output
    assert Provider.objects.count() == 2 and Model.objects.count() == 2
    assert Tenant.objects.count() == 2 and ApiKey.objects.count() == 2

    dry = apply_text(tmp_path, reduced, "--prune", "--dry-run")
    assert "Would apply: 0 created, 0 updated, 4 deleted" in dry
    assert Provider.objects.count() == 2

    output = apply_text(tmp_path, reduced, "--prune")
    for line in (
        "model mb: deleted",
        "provider b: deleted",
        "key keep/k2: deleted",
        "tenant gone: deleted",
    ):
        assert line in output
    assert list(Provider.objects.values_list("name", flat=True)) == ["a"]
    assert list(Model.objects.values_list("name", flat=True)) == ["ma"]
    assert list(Tenant.objects.values_list("name", flat=True)) == ["keep"]
    assert list(ApiKey.objects.values_list("name", flat=True)) == ["k1"]


@pytest.mark.django_db
def test_prune_only_touches_sections_the_file_has_and_refuses_providers_in_use(tmp_path):
    apply_text(
        tmp_path,
        "providers: [{name: a, kind: mock}, {name: b, kind: mock}]\n"
        "models: [{name: mb, deployments: [{provider: b, upstream_model: x}]}]\n"
        "tenants: [{name: t}]\n",
    )
    message = run_failing(
        "apply", write(tmp_path, "providers: [{name: a, kind: mock}]\n"), "--prune"
    )
    assert "cannot prune provider 'b': still used by mb" in message
    assert Provider.objects.count() == 2

    output = apply_text(tmp_path, "tenants: [{name: t}]\n", "--prune")
    assert ": deleted" not in output
    assert Provider.objects.count() == 2 and Model.objects.count() == 1


# --- as operators run it ---------------------------------------------------------------


def test_apply_and_export_as_a_real_process(tmp_path, transactional_db):
    text = DESIGN_EXAMPLE
    if isinstance(registry.get("anthropic"), _StubAnthropic):  # the child has no stub
        text = text.replace("kind: anthropic", "kind: mock")
    path = write(tmp_path, text)
    env = server_env(
        LOCAL_OPENAI_KEY="sk-local-openai",
        ACME_KEY=ACME_KEY,
        ACME_SIGNING_SECRET=SIGNING_SECRET,
    )
    command = [sys.executable, "manage.py", "gateway_config"]

    done = subprocess.run(
        [*command, "apply", path], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Applied: 9 created" in done.stdout
    assert ApiKey.objects.get(name="ci").secret_hash == hash_secret(ACME_KEY)
    assert Model.objects.get(name="gpt-4o-mini").output_price_per_million == Decimal("0.6")

    exported = subprocess.run(
        [*command, "export"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert exported.returncode == 0, exported.stderr
    assert "local-openai" in exported.stdout and PROVIDER_LITERAL not in exported.stdout

    broken = write(tmp_path, "models:\n  - name: m\n    deployments: [{provider: x}]\n", "bad.yaml")
    failed = subprocess.run(
        [*command, "apply", broken], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 1
    assert "models[0].deployments[0].provider: unknown provider 'x'" in failed.stderr
    assert "models[0].deployments[0].upstream_model: is required" in failed.stderr
    assert not Model.objects.filter(name="m").exists()


@pytest.mark.live
def test_applied_configuration_serves_requests(tmp_path, live_url, fake_openai, monkeypatch):
    # The live server cannot see variables set here, so its credential comes from a file.
    credential = tmp_path / "upstream.key"
    credential.write_text(fake_openai.api_key)
    monkeypatch.setenv("CFG_LIVE_KEY", "gw-config-live-test-secret-000111")
    config = f"""\
providers:
  - name: cfg-upstream
    kind: openai
    base_url: {fake_openai.base_url}
    api_key: file:{credential}
models:
  - name: cfg-chat
    deployments:
      - {{provider: cfg-upstream, upstream_model: upstream-chat, weight: 1}}
    pricing: {{input_per_million: 1, output_per_million: 2}}
tenants:
  - name: cfg-tenant
    keys:
      - {{name: app, secret: env:CFG_LIVE_KEY, models: [cfg-chat]}}
"""
    apply_text(tmp_path, config)
    settle()

    response = httpx.post(
        f"{live_url}/v1/chat/completions",
        headers={"Authorization": "Bearer gw-config-live-test-secret-000111"},
        json={"model": "cfg-chat", "messages": [{"role": "user", "content": "hello from yaml"}]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "hello from yaml"
    assert response.headers["x-gateway-provider"] == "cfg-upstream"
    upstream = fake_openai.requests[-1]
    assert upstream.body["model"] == "upstream-chat"
    assert upstream.headers["Authorization"] == f"Bearer {fake_openai.api_key}"


@pytest.mark.django_db
def test_examples_file_is_valid(monkeypatch):
    monkeypatch.setenv("LOCAL_OPENAI_KEY", "x")
    monkeypatch.setenv("ACME_KEY", ACME_KEY)
    monkeypatch.setenv("ACME_SIGNING_SECRET", SIGNING_SECRET)
    data = load_yaml((ROOT / "examples" / "gateway.yaml").read_text())
    report = config_apply(data=data, dry_run=True)
    assert report.ok, report.errors
    assert not report.warnings
    assert not Provider.objects.exists()
