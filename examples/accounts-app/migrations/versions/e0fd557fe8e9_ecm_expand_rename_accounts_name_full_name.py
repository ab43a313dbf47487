"""ecm expand: rename public.accounts.name to full_name

Plan: rename_accounts_name_full_name   (the ecm plan id; `ecm status` shows its phase)
Phase: expand — Add full_name beside name on public.accounts and keep both in step with a trigger.

Deploy before: Nothing: old code keeps working; run before deploying code that uses the new column.
Deploy after: New code that reads and writes full_name may deploy once the backfill has run.
Roll back: Downgrade this revision: drops full_name, its trigger, indexes and constraints. Refused while live instances still map full_name.
Run: ecm upgrade --phase expand   (or plain `alembic upgrade head`)

Upgrade steps (each its own short transaction, lock_timeout + retries):
  1. add column full_name — ACCESS EXCLUSIVE, brief (nullable, no default: no rewrite)
  2. create sync function — none
  3. create sync trigger — SHARE ROW EXCLUSIVE on the table, brief
  4. add NOT NULL check ecm_rename_accounts_name_full_name_nn (NOT VALID) — ACCESS EXCLUSIVE, brief (no scan)
  5. create index accounts_full_name_key — SHARE UPDATE EXCLUSIVE (writes continue)
  6. add foreign key orders_account_full_name_fkey on orders (NOT VALID) — SHARE ROW EXCLUSIVE on both tables, brief (no scan)

Downgrade steps:
  1. expand-downgrade
  2. drop constraint orders_account_full_name_fkey
  3. drop constraint accounts_full_name_key
  4. drop index accounts_full_name_key
  5. drop sync trigger
  6. drop sync function
  7. drop column full_name

Revision ID: e0fd557fe8e9
Revises: 5f1c2a7d9e40
Create Date: 2026-11-29T03:15:49+00:00
"""

from expandcontract.revisions.runtime import Step, run_phase

revision = 'e0fd557fe8e9'
down_revision = '5f1c2a7d9e40'
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
 'revisions': {'expand': 'e0fd557fe8e9', 'backfill': '53cf653a1a2f', 'contract': '0beb6a0b27ab'},
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
                    'unique_keys': (('name',),),
                    'row_estimate': 0,
                    'indexes': ({'name': 'accounts_name_key',
                                 'definition': 'CREATE UNIQUE INDEX accounts_name_key ON '
                                               'public.accounts USING btree (name)',
                                 'unique': True,
                                 'primary': False,
                                 'partial': False,
                                 'expression': False,
                                 'valid': True,
                                 'constraint': 'accounts_name_key',
                                 'columns': ('name',)},),
                    'foreign_keys': (),
                    'referenced_by': ({'name': 'orders_account_name_fkey',
                                       'schema': 'public',
                                       'table': 'orders',
                                       'columns': ('account_name',),
                                       'ref_schema': 'public',
                                       'ref_table': 'accounts',
                                       'ref_columns': ('name',),
                                       'on_update': 'CASCADE',
                                       'on_delete': 'NO ACTION',
                                       'match_full': False,
                                       'deferrable': False,
                                       'initially_deferred': False,
                                       'valid': True},),
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
        name='create index accounts_full_name_key',
        kind='concurrent',
        sql="""CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS accounts_full_name_key ON public.accounts USING btree (full_name)""",
        lock='SHARE UPDATE EXCLUSIVE (writes continue)',
        index='public.accounts_full_name_key',
    ),
    Step(
        name='add foreign key orders_account_full_name_fkey on orders (NOT VALID)',
        kind='ddl',
        sql="""ALTER TABLE public.orders ADD CONSTRAINT orders_account_full_name_fkey FOREIGN KEY (account_name) REFERENCES public.accounts (full_name) ON UPDATE CASCADE NOT VALID""",
        lock='SHARE ROW EXCLUSIVE on both tables, brief (no scan)',
        skip_if="""SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'orders_account_full_name_fkey' AND conrelid = 'public.orders'::regclass)""",
    ),
]

DOWNGRADE = [
    Step(
        name='expand-downgrade',
        kind='guard',
        lock='none',
    ),
    Step(
        name='drop constraint orders_account_full_name_fkey',
        kind='ddl',
        sql="""ALTER TABLE public.orders DROP CONSTRAINT IF EXISTS orders_account_full_name_fkey""",
        lock='ACCESS EXCLUSIVE, brief',
        squawk_ignore=(('ban-drop-constraint', "the plan's deliberate drop: its own helper, or a constraint on the retired column"),),
    ),
    Step(
        name='drop constraint accounts_full_name_key',
        kind='ddl',
        sql="""ALTER TABLE public.accounts DROP CONSTRAINT IF EXISTS accounts_full_name_key""",
        lock='ACCESS EXCLUSIVE, brief',
        squawk_ignore=(('ban-drop-constraint', "the plan's deliberate drop: its own helper, or a constraint on the retired column"),),
    ),
    Step(
        name='drop index accounts_full_name_key',
        kind='concurrent',
        sql="""DROP INDEX CONCURRENTLY IF EXISTS public.accounts_full_name_key""",
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
