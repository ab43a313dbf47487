"""Plans as Alembic revision files, the runtime those files call, and the `ecm upgrade` runner.

Named ``revisions`` rather than ``alembic`` so it never shadows the real Alembic.
"""
