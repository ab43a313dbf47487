"""ecm contract: rename public.accounts.name to full_name

Plan: rename_accounts_name_full_name   (the ecm plan id; `ecm status` shows its phase)
Phase: contract — Drop name from public.accounts; full_name takes over its constraints, default and grants.

Deploy before: Every application instance that maps name must be gone (the guard checks live instances), and the backfill complete and verified.
Deploy after: Only code that uses full_name.
Roll back: Downgrade this contract revision: re-creates name with the sync trigger and fills it from full_name, with its indexes, constraints and default.
Run: ecm upgrade --phase contract   (or `alembic -n ecm_contracts upgrade heads`)

Upgrade steps (each its own short transaction, lock_timeout + retries):
  1. contract-guard — none
  2. validate ecm_rename_accounts_name_full_name_nn — SHARE UPDATE EXCLUSIVE (reads and writes continue)
  3. validate orders_account_full_name_fkey — SHARE UPDATE EXCLUSIVE on the referencing table, ROW SHARE on the referenced
  4. set full_name NOT NULL — ACCESS EXCLUSIVE, brief (the validated check proves it without a scan)
  5. drop constraint ecm_rename_accounts_name_full_name_nn — ACCESS EXCLUSIVE, brief
  6. unique constraint accounts_full_name_key using its index — ACCESS EXCLUSIVE, brief (no scan: the index exists)
  7. drop sync trigger — ACCESS EXCLUSIVE, brief
  8. drop sync function — none
  9. drop constraint orders_account_name_fkey — ACCESS EXCLUSIVE, brief
  10. drop column name — ACCESS EXCLUSIVE, brief (no rewrite)

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
  11. create index accounts_name_key
  12. unique constraint accounts_name_key using its index
  13. re-add foreign key orders_account_name_fkey (NOT VALID)
  14. validate orders_account_name_fkey

Revision ID: 0beb6a0b27ab
Revises: 
Create Date: 2026-11-29T03:15:49+00:00
"""

from expandcontract.revisions.runtime import Step, run_phase

revision = '0beb6a0b27ab'
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
        name='validate orders_account_full_name_fkey',
        kind='concurrent',
        sql="""ALTER TABLE public.orders VALIDATE CONSTRAINT orders_account_full_name_fkey""",
        lock='SHARE UPDATE EXCLUSIVE on the referencing table, ROW SHARE on the referenced',
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
        name='unique constraint accounts_full_name_key using its index',
        kind='ddl',
        sql="""ALTER TABLE public.accounts ADD CONSTRAINT accounts_full_name_key UNIQUE USING INDEX accounts_full_name_key""",
        lock='ACCESS EXCLUSIVE, brief (no scan: the index exists)',
        skip_if="""SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'accounts_full_name_key' AND conrelid = 'public.accounts'::regclass)""",
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
        name='drop constraint orders_account_name_fkey',
        kind='ddl',
        sql="""ALTER TABLE public.orders DROP CONSTRAINT IF EXISTS orders_account_name_fkey""",
        lock='ACCESS EXCLUSIVE, brief',
        squawk_ignore=(('ban-drop-constraint', "the plan's deliberate drop: its own helper, or a constraint on the retired column"),),
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
        name='create index accounts_name_key',
        kind='concurrent',
        sql="""CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS accounts_name_key ON public.accounts USING btree (name)""",
        lock='SHARE UPDATE EXCLUSIVE (writes continue)',
        index='public.accounts_name_key',
    ),
    Step(
        name='unique constraint accounts_name_key using its index',
        kind='ddl',
        sql="""ALTER TABLE public.accounts ADD CONSTRAINT accounts_name_key UNIQUE USING INDEX accounts_name_key""",
        lock='ACCESS EXCLUSIVE, brief (no scan: the index exists)',
        skip_if="""SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'accounts_name_key' AND conrelid = 'public.accounts'::regclass)""",
    ),
    Step(
        name='re-add foreign key orders_account_name_fkey (NOT VALID)',
        kind='ddl',
        sql="""ALTER TABLE public.orders ADD CONSTRAINT orders_account_name_fkey FOREIGN KEY (account_name) REFERENCES public.accounts (name) ON UPDATE CASCADE NOT VALID""",
        lock='SHARE ROW EXCLUSIVE on both tables, brief (no scan)',
        skip_if="""SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'orders_account_name_fkey' AND conrelid = 'public.orders'::regclass)""",
    ),
    Step(
        name='validate orders_account_name_fkey',
        kind='concurrent',
        sql="""ALTER TABLE public.orders VALIDATE CONSTRAINT orders_account_name_fkey""",
        lock='SHARE UPDATE EXCLUSIVE',
    ),
]


def upgrade() -> None:
    run_phase(PLAN, PHASE, "upgrade", UPGRADE, revision=revision)


def downgrade() -> None:
    run_phase(PLAN, PHASE, "downgrade", DOWNGRADE, revision=revision)
