"""ecm contract: rename public.accounts.name to full_name

Plan: rename_accounts_name_full_name   (the ecm plan id; `ecm status` shows its phase)
Phase: contract — Drop name from public.accounts; full_name takes over its constraints, default and grants.

Deploy before: Every application instance that maps name must be gone (the guard checks live instances), and the backfill complete and verified.
Deploy after: Only code that uses full_name.
Roll back: Downgrade this contract revision: re-creates name with the sync trigger and fills it from full_name, with its indexes, constraints and default.
Run: ecm upgrade --phase contract   (or `alembic -n ecm_contracts upgrade heads`)

Upgrade steps (each its own short transaction; DDL with lock_timeout + bounded retries, CONCURRENTLY/VALIDATE without timeouts):
  1. contract-guard — none
  2. validate ecm_rename_accounts_name_full_name_nn — SHARE UPDATE EXCLUSIVE (reads and writes continue)
  3. set full_name NOT NULL — ACCESS EXCLUSIVE, brief (the validated check proves it without a scan)
  4. drop constraint ecm_rename_accounts_name_full_name_nn — ACCESS EXCLUSIVE, brief
  5. drop NOT NULL of name — ACCESS EXCLUSIVE, brief (no scan)
  6. drop sync trigger — ACCESS EXCLUSIVE, brief
  7. drop sync function — none
  8. drop column name — ACCESS EXCLUSIVE, brief (no rewrite)

Downgrade steps:
  1. re-add column name
  2. create sync function
  3. create sync trigger
  4. reverse backfill
  5. add NOT NULL check ecm_rename_accounts_name_full_name_nn_old (NOT VALID)
  6. validate ecm_rename_accounts_name_full_name_nn_old
  7. set name NOT NULL
  8. drop check ecm_rename_accounts_name_full_name_nn_old
  9. drop NOT NULL of full_name
  10. add NOT NULL check ecm_rename_accounts_name_full_name_nn (NOT VALID)
  11. create index ix_accounts_name

Revision ID: 2f51c825aaae
Revises: 
Create Date: 2026-12-01T07:21:33+00:00
"""

from expandcontract.revisions.runtime import Step, run_phase

revision = '2f51c825aaae'
down_revision = None
branch_labels = ('rename_accounts_name_full_name',)
depends_on = None

PLAN_ID = 'rename_accounts_name_full_name'
PHASE = 'contract'

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
        name='contract-guard',
        kind='guard',
        lock='none',
    ),
    Step(
        name='validate ecm_rename_accounts_name_full_name_nn',
        kind='concurrent',
        sql="""ALTER TABLE public.accounts VALIDATE CONSTRAINT ecm_rename_accounts_name_full_name_nn""",
        lock='SHARE UPDATE EXCLUSIVE (reads and writes continue)',
    ),
    Step(
        name='set full_name NOT NULL',
        kind='ddl',
        sql="""ALTER TABLE public.accounts ALTER COLUMN full_name SET NOT NULL""",
        lock='ACCESS EXCLUSIVE, brief (the validated check proves it without a scan)',
    ),
    Step(
        name='drop constraint ecm_rename_accounts_name_full_name_nn',
        kind='ddl',
        sql="""ALTER TABLE public.accounts DROP CONSTRAINT IF EXISTS ecm_rename_accounts_name_full_name_nn""",
        lock='ACCESS EXCLUSIVE, brief',
        squawk_ignore=(('ban-drop-constraint', "the plan's deliberate drop: its own helper, or a constraint on the retired column"),),
    ),
    Step(
        name='drop NOT NULL of name',
        kind='ddl',
        sql="""ALTER TABLE public.accounts ALTER COLUMN name DROP NOT NULL""",
        lock='ACCESS EXCLUSIVE, brief (no scan)',
        squawk_ignore=(('ban-drop-not-null', "part of the contract's deliberate drop of the old column: it loses NOT NULL only on its way out, so new code's inserts succeed once the trigger is gone"),),
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
        name='drop column name',
        kind='ddl',
        sql="""ALTER TABLE public.accounts DROP COLUMN IF EXISTS name""",
        lock='ACCESS EXCLUSIVE, brief (no rewrite)',
        squawk_ignore=(('ban-drop-column', "the contract's deliberate drop, guarded by live-code checks"),),
    ),
]

DOWNGRADE = [
    Step(
        name='re-add column name',
        kind='ddl',
        sql="""ALTER TABLE public.accounts ADD COLUMN IF NOT EXISTS name character varying(200)""",
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
        name='reverse backfill',
        kind='backfill',
        lock='row locks of one batch at a time',
    ),
    Step(
        name='add NOT NULL check ecm_rename_accounts_name_full_name_nn_old (NOT VALID)',
        kind='ddl',
        sql="""ALTER TABLE public.accounts ADD CONSTRAINT ecm_rename_accounts_name_full_name_nn_old CHECK (name IS NOT NULL) NOT VALID""",
        lock='ACCESS EXCLUSIVE, brief (no scan)',
        skip_if="""SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ecm_rename_accounts_name_full_name_nn_old' AND conrelid = 'public.accounts'::regclass)""",
    ),
    Step(
        name='validate ecm_rename_accounts_name_full_name_nn_old',
        kind='concurrent',
        sql="""ALTER TABLE public.accounts VALIDATE CONSTRAINT ecm_rename_accounts_name_full_name_nn_old""",
        lock='SHARE UPDATE EXCLUSIVE (reads and writes continue)',
    ),
    Step(
        name='set name NOT NULL',
        kind='ddl',
        sql="""ALTER TABLE public.accounts ALTER COLUMN name SET NOT NULL""",
        lock='ACCESS EXCLUSIVE, brief (the validated check proves it without a scan)',
    ),
    Step(
        name='drop check ecm_rename_accounts_name_full_name_nn_old',
        kind='ddl',
        sql="""ALTER TABLE public.accounts DROP CONSTRAINT IF EXISTS ecm_rename_accounts_name_full_name_nn_old""",
        lock='ACCESS EXCLUSIVE, brief',
    ),
    Step(
        name='drop NOT NULL of full_name',
        kind='ddl',
        sql="""ALTER TABLE public.accounts ALTER COLUMN full_name DROP NOT NULL""",
        lock='ACCESS EXCLUSIVE, brief',
    ),
    Step(
        name='add NOT NULL check ecm_rename_accounts_name_full_name_nn (NOT VALID)',
        kind='ddl',
        sql="""ALTER TABLE public.accounts ADD CONSTRAINT ecm_rename_accounts_name_full_name_nn CHECK (full_name IS NOT NULL) NOT VALID""",
        lock='ACCESS EXCLUSIVE, brief (no scan)',
        skip_if="""SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ecm_rename_accounts_name_full_name_nn' AND conrelid = 'public.accounts'::regclass)""",
    ),
    Step(
        name='create index ix_accounts_name',
        kind='concurrent',
        sql="""CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_accounts_name ON public.accounts USING btree (name)""",
        lock='SHARE UPDATE EXCLUSIVE (writes continue)',
        index='public.ix_accounts_name',
    ),
]


def upgrade() -> None:
    run_phase(PLAN, PHASE, "upgrade", UPGRADE, revision=revision)


def downgrade() -> None:
    run_phase(PLAN, PHASE, "downgrade", DOWNGRADE, revision=revision)
