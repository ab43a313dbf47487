"""ecm backfill: rename public.accounts.name to full_name

Plan: rename_accounts_name_full_name   (the ecm plan id; `ecm status` shows its phase)
Phase: backfill — Copy name into full_name for rows written before the trigger existed.

Deploy before: The expand revision of this plan.
Deploy after: Code that reads full_name sees every row; the contract may run once old code is gone.
Roll back: Nothing to undo: the copies in the new column are harmless (expand's downgrade drops it).
Run: ecm upgrade --phase backfill   (or `ecm backfill rename_accounts_name_full_name`; inline under `alembic upgrade head` unless ECM_BACKFILL=defer)

Upgrade steps (each its own short transaction; DDL with lock_timeout + bounded retries, CONCURRENTLY/VALIDATE without timeouts):
  1. backfill — row locks of one batch at a time

Downgrade steps:
  (nothing to undo)

Revision ID: d67fd5ff2046
Revises: 3e6066a125cd
Create Date: 2026-12-01T07:21:33+00:00
"""

from expandcontract.revisions.runtime import Step, run_phase

revision = 'd67fd5ff2046'
down_revision = '3e6066a125cd'
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
