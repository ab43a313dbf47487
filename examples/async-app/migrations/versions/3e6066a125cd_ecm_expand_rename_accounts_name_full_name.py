"""ecm expand: rename public.accounts.name to full_name

Plan: rename_accounts_name_full_name   (the ecm plan id; `ecm status` shows its phase)
Phase: expand — Add full_name beside name on public.accounts and keep both in step with a trigger.

Deploy before: Nothing: old code keeps working; run before deploying code that uses the new column.
Deploy after: New code that reads and writes full_name may deploy once the backfill has run.
Roll back: Downgrade this revision: drops full_name, its trigger, indexes and constraints. Refused while live instances still map full_name.
Run: ecm upgrade --phase expand   (or plain `alembic upgrade head`)

Upgrade steps (each its own short transaction; DDL with lock_timeout + bounded retries, CONCURRENTLY/VALIDATE without timeouts):
  1. add column full_name — ACCESS EXCLUSIVE, brief (nullable, no default: no rewrite)
  2. create sync function — none
  3. create sync trigger — SHARE ROW EXCLUSIVE on the table, brief
  4. add NOT NULL check ecm_rename_accounts_name_full_name_nn (NOT VALID) — ACCESS EXCLUSIVE, brief (no scan)
  5. create index ix_accounts_full_name — SHARE UPDATE EXCLUSIVE (writes continue)

Downgrade steps:
  1. expand-downgrade
  2. drop index ix_accounts_full_name
  3. drop sync trigger
  4. drop sync function
  5. drop column full_name

Revision ID: 3e6066a125cd
Revises: d56f17a71018
Create Date: 2026-12-01T07:21:33+00:00
"""

from expandcontract.revisions.runtime import Step, run_phase

revision = '3e6066a125cd'
down_revision = 'd56f17a71018'
branch_labels = None
depends_on = None

PLAN_ID = 'rename_accounts_name_full_name'
PHASE = 'expand'

# Frozen when the plan was made, so this file needs no application models.
PLAN = {'plan_id': 'rename_accounts_name_full_name',
 'operation': 'rename-column',
 'schema': 'public',
 'table': 'accounts',
 'title': 'rename public.accounts.name to full_name',
 'removes': {'public.accounts': ['name']},
 'adds': {'public.accounts': ['full_name']},
 'backfill': {'plan_id': 'rename_accounts_name_full_name',
              'schema': 'public',
              'table': 'accounts',
              'key': ('id',),
              'key_kind': 'pk',
              'set_sql': 'full_name = name',
              'pending_sql': 'full_name IS DISTINCT FROM name',
              'mismatch_sql': 'full_name IS DISTINCT FROM name',
              'rows_estimate': 0,
              'key_types': ()},
 'reverse_backfill': {'plan_id': 'rename_accounts_name_full_name:reverse',
                      'schema': 'public',
                      'table': 'accounts',
                      'key': ('id',),
                      'key_kind': 'pk',
                      'set_sql': 'name = full_name',
                      'pending_sql': 'name IS DISTINCT FROM full_name',
                      'mismatch_sql': 'name IS DISTINCT FROM full_name',
                      'rows_estimate': 0,
                      'key_types': ()},
 'revisions': {'expand': '3e6066a125cd', 'backfill': 'd67fd5ff2046', 'contract': '2f51c825aaae'},
 'spec': {'operation': 'rename-column',
          'schema': 'public',
          'table': 'accounts',
          'old': 'name',
          'new': 'full_name',
          'rename_to_old_names': False,
          'facts': {'schema': 'public',
                    'name': 'accounts',
                    'column': {'name': 'name',
                               'type_sql': 'character varying(200)',
                               'nullable': False,
                               'default': None,
                               'collation': None,
                               'identity': '',
                               'generated': '',
                               'comment': None,
                               'owned_sequence': None,
                               'grants': (),
                               'type_is_builtin': True},
                    'columns': ('id', 'name', 'email'),
                    'kind': 'r',
                    'is_partition': False,
                    'primary_key': ('id',),
                    'unique_keys': (),
                    'row_estimate': 0,
                    'indexes': ({'name': 'ix_accounts_name',
                                 'definition': 'CREATE INDEX ix_accounts_name ON public.accounts '
                                               'USING btree (name)',
                                 'unique': False,
                                 'primary': False,
                                 'partial': False,
                                 'expression': False,
                                 'valid': True,
                                 'constraint': None,
                                 'columns': ('name',)},),
                    'foreign_keys': (),
                    'referenced_by': (),
                    'checks': (),
                    'dependent_views': (),
                    'policies': (),
                    'other_triggers': (),
                    'server_version_num': 150020,
                    'extra': {'source': 'catalog'}}}}

UPGRADE = [
    Step(
        name='add column full_name',
        kind='ddl',
        sql="""ALTER TABLE public.accounts ADD COLUMN IF NOT EXISTS full_name character varying(200)""",
        lock='ACCESS EXCLUSIVE, brief (nullable, no default: no rewrite)',
        squawk_ignore=(('prefer-text-field', 'type copied unchanged from the old column'),),
    ),
    Step(
        name='create sync function',
        kind='ddl',
        sql="""CREATE OR REPLACE FUNCTION public.ecm_rename_accounts_name_full_name_sync() RETURNS trigger
LANGUAGE plpgsql AS $ecm$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.full_name IS NULL THEN
            NEW.full_name := NEW.name;
        ELSIF NEW.name IS NULL OR NEW.name IS DISTINCT FROM NEW.full_name THEN
            NEW.name := NEW.full_name;
        END IF;
    ELSIF NEW.name IS DISTINCT FROM OLD.name AND NEW.full_name IS NOT DISTINCT FROM OLD.full_name THEN
        NEW.full_name := NEW.name;
    ELSIF NEW.full_name IS DISTINCT FROM OLD.full_name AND NEW.name IS NOT DISTINCT FROM OLD.name THEN
        NEW.name := NEW.full_name;
    ELSIF NEW.name IS NOT DISTINCT FROM OLD.name AND NEW.full_name IS NOT DISTINCT FROM OLD.full_name THEN
        NEW.full_name := NEW.name;
    ELSE
        NEW.name := NEW.full_name;
    END IF;
    RETURN NEW;
END
$ecm$""",
        lock='none',
    ),
    Step(
        name='create sync trigger',
        kind='ddl',
        sql="""CREATE OR REPLACE TRIGGER ecm_rename_accounts_name_full_name_sync BEFORE INSERT OR UPDATE ON public.accounts
FOR EACH ROW WHEN (current_setting('ecm.backfill', true) IS DISTINCT FROM 'on')
EXECUTE FUNCTION public.ecm_rename_accounts_name_full_name_sync()""",
        lock='SHARE ROW EXCLUSIVE on the table, brief',
    ),
    Step(
        name='add NOT NULL check ecm_rename_accounts_name_full_name_nn (NOT VALID)',
        kind='ddl',
        sql="""ALTER TABLE public.accounts ADD CONSTRAINT ecm_rename_accounts_name_full_name_nn CHECK (full_name IS NOT NULL) NOT VALID""",
        lock='ACCESS EXCLUSIVE, brief (no scan)',
        skip_if="""SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ecm_rename_accounts_name_full_name_nn' AND conrelid = 'public.accounts'::regclass)""",
    ),
    Step(
        name='create index ix_accounts_full_name',
        kind='concurrent',
        sql="""CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_accounts_full_name ON public.accounts USING btree (full_name)""",
        lock='SHARE UPDATE EXCLUSIVE (writes continue)',
        index='public.ix_accounts_full_name',
    ),
]

DOWNGRADE = [
    Step(
        name='expand-downgrade',
        kind='guard',
        lock='none',
    ),
    Step(
        name='drop index ix_accounts_full_name',
        kind='concurrent',
        sql="""DROP INDEX CONCURRENTLY IF EXISTS public.ix_accounts_full_name""",
        lock='SHARE UPDATE EXCLUSIVE (writes continue)',
    ),
    Step(
        name='drop sync trigger',
        kind='ddl',
        sql="""DROP TRIGGER IF EXISTS ecm_rename_accounts_name_full_name_sync ON public.accounts""",
        lock='ACCESS EXCLUSIVE, brief',
    ),
    Step(
        name='drop sync function',
        kind='ddl',
        sql="""DROP FUNCTION IF EXISTS public.ecm_rename_accounts_name_full_name_sync()""",
        lock='none',
        squawk_ignore=(('ban-drop-function', "the plan's own sync function, no longer needed"),),
    ),
    Step(
        name='drop column full_name',
        kind='ddl',
        sql="""ALTER TABLE public.accounts DROP COLUMN IF EXISTS full_name""",
        lock='ACCESS EXCLUSIVE, brief',
        squawk_ignore=(('ban-drop-column', 'rolling back expand: the new column only held copies'),),
    ),
]


def upgrade() -> None:
    run_phase(PLAN, PHASE, "upgrade", UPGRADE, revision=revision)


def downgrade() -> None:
    run_phase(PLAN, PHASE, "downgrade", DOWNGRADE, revision=revision)
