"""Alembic environment of expandcontract's contract lineage (post-deploy migrations).

Run by `ecm upgrade --phase contract`, or by hand with `alembic -n ecm_contracts upgrade heads`;
each contract revision runs the live-code guard itself before any DDL.
"""

from expandcontract.revisions.contract_env import run

run()
