"""ecm backfill: rename public.accounts.name to full_name

Plan: rename_accounts_name_full_name   (the ecm plan id; `ecm status` shows its phase)
Phase: backfill — Copy name into full_name for rows written before the trigger existed.

Deploy before: The expand revision of this plan.
Deploy after: Code that reads full_name sees every row; the contract may run once old code is gone.
Roll back: Nothing to undo: the copies in the new column are harmless (expand's downgrade drops it).
Run: ecm upgrade --phase backfill   (or `ecm backfill rename_accounts_name_full_name`; inline under `alembic upgrade head` unless ECM_BACKFILL=defer)

Upgrade steps (each its own short transaction, lock_timeout + retries):
  1. backfill — row locks of one batch at a time

Downgrade steps:
  (nothing to undo)

Revision ID: 53cf653a1a2f
Revises: e0fd557fe8e9
Create Date: 2026-11-29T03:15:49+00:00
"""

from expandcontract.revisions.runtime import Step, run_phase

revision = '53cf653a1a2f'
down_revision = 'e0fd557fe8e9'
branch_labels = None
depends_on = None

PLAN_ID = 'rename_accounts_name_full_name'
PHASE = 'backfill'

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
        name='backfill',
        kind='backfill',
        lock='row locks of one batch at a time',
    ),
]

DOWNGRADE = []


def upgrade() -> None:
    run_phase(PLAN, PHASE, "upgrade", UPGRADE, revision=revision)


def downgrade() -> None:
    run_phase(PLAN, PHASE, "downgrade", DOWNGRADE, revision=revision)
