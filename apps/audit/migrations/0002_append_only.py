"""Make the audit table append-only in the database, not only in the ORM.

PostgreSQL: a trigger refuses UPDATE and DELETE of any row. SQLite: a trigger refuses
UPDATE; DELETE stays possible there because Django empties SQLite tables with DELETE
(``flush``, which the test suite's live-server tests run), while PostgreSQL uses
TRUNCATE, which row triggers do not see. (On SQLite, Django rebuilds a table it alters:
a later migration that changes this table must create the trigger again.)

The one update allowed is what ``on_delete=SET_NULL`` does when a tenant or a user is
deleted: ``tenant_id`` / ``actor_user_id`` become NULL and nothing else changes.
"""

from django.db import migrations

NULLABLE_LINKS = ("tenant_id", "actor_user_id")


def _table_and_columns(apps, schema_editor):
    model = apps.get_model("audit", "AuditEvent")
    quote = schema_editor.quote_name
    columns = [f.column for f in model._meta.concrete_fields if f.column not in NULLABLE_LINKS]
    return quote(model._meta.db_table), quote, columns


def forwards(apps, schema_editor):
    table, quote, columns = _table_and_columns(apps, schema_editor)
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(
            """
            CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger AS $$
            BEGIN
                IF TG_OP = 'UPDATE'
                   AND (to_jsonb(NEW) - 'tenant_id' - 'actor_user_id')
                       = (to_jsonb(OLD) - 'tenant_id' - 'actor_user_id')
                   AND (NEW.tenant_id IS NULL OR NEW.tenant_id = OLD.tenant_id)
                   AND (NEW.actor_user_id IS NULL OR NEW.actor_user_id = OLD.actor_user_id)
                THEN
                    RETURN NEW;  -- on_delete=SET_NULL of a deleted tenant or user
                END IF;
                RAISE EXCEPTION USING
                    MESSAGE = 'audit events are append-only: ' || TG_OP || ' refused',
                    ERRCODE = 'restrict_violation';
            END;
            $$ LANGUAGE plpgsql
            """,
            params=None,
        )
        schema_editor.execute(
            f"CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
        )
    elif vendor == "sqlite":
        unchanged = " AND ".join(f"NEW.{quote(c)} IS OLD.{quote(c)}" for c in columns)
        links = " AND ".join(
            f"(NEW.{quote(c)} IS NULL OR NEW.{quote(c)} IS OLD.{quote(c)})" for c in NULLABLE_LINKS
        )
        schema_editor.execute(
            f"CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON {table} "
            f"WHEN NOT ({unchanged} AND {links}) "
            "BEGIN SELECT RAISE(ABORT, 'audit events are append-only: UPDATE refused'); END"
        )


def backwards(apps, schema_editor):
    table, _quote, _columns = _table_and_columns(apps, schema_editor)
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS audit_event_append_only ON {table}")
        schema_editor.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
    elif vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS audit_event_no_update")


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
