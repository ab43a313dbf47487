"""Views and row-level security policies carried through a column change.

PostgreSQL will not drop or retype a column a view or policy reads, and a view cannot
change an output column's type in place. So the plan drops every such dependent (views
top-down: a view over a view goes first), makes its change, and re-creates them
bottom-up with their options, owner, grants and comments, all in ONE command (a DO block,
:mod:`expandcontract.sql.transaction`: one command on every driver, asyncpg included), which
PostgreSQL runs as one transaction. Nobody ever sees the views missing.

The definitions come frozen from the catalog (:mod:`expandcontract.db.dependents`);
where a definition must change it is rewritten by :mod:`expandcontract.sql.views`.
Pure: no connection.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import BadInput
from ..sql.quoting import literal, q, qualified
from ..sql.transaction import one_transaction
from ..sql.views import rename_in_policy, rename_in_view
from .facts import TableFacts
from .model import Step

__all__ = ["Dependents", "PolicyDef", "ViewDef", "carried", "step"]

_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}

LOCK = "ACCESS EXCLUSIVE on the table and the dependent views, brief (one transaction)"


@dataclass(frozen=True)
class ViewDef:
    schema: str
    name: str
    kind: str  # pg_class.relkind: v view, m materialized view
    definition: str  # pg_get_viewdef(), read with an empty search_path
    depth: int  # longest path from the table: drop in descending, create in ascending order
    direct: bool  # reads the column itself (else only built on a view that does)
    options: tuple[str, ...] = ()  # reloptions: security_barrier=true, check_option=local, ...
    owner: str | None = None
    comment: str | None = None
    grants: tuple[tuple[str, str, bool], ...] = ()  # (grantee, privilege, grantable)
    columns: tuple[tuple[str, str | None], ...] = ()  # (name, comment) in order

    @property
    def sql_name(self) -> str:
        return qualified(self.schema, self.name)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ViewDef:
        return cls(
            schema=str(data["schema"]),
            name=str(data["name"]),
            kind=str(data.get("kind", "v")),
            definition=str(data["definition"]),
            depth=int(data.get("depth", 1)),
            direct=bool(data.get("direct", True)),
            options=tuple(str(o) for o in data.get("options") or ()),
            owner=data.get("owner"),
            comment=data.get("comment"),
            grants=tuple(
                (str(g["grantee"]), str(g["privilege"]), bool(g.get("grantable")))
                for g in data.get("grants") or ()
            ),
            columns=tuple((str(c["name"]), c.get("comment")) for c in data.get("columns") or ()),
        )


@dataclass(frozen=True)
class PolicyDef:
    name: str
    command: str  # pg_policy.polcmd
    permissive: bool
    roles: tuple[str, ...]
    using: str | None
    with_check: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PolicyDef:
        return cls(
            name=str(data["name"]),
            command=str(data.get("command", "*")),
            permissive=bool(data.get("permissive", True)),
            roles=tuple(str(r) for r in data.get("roles") or ("PUBLIC",)),
            using=data.get("using"),
            with_check=data.get("with_check"),
        )


@dataclass(frozen=True)
class Dependents:
    """The views (in creation order) and the table's policies that read the column."""

    schema: str
    table: str
    views: tuple[ViewDef, ...] = ()
    policies: tuple[PolicyDef, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.views or self.policies)

    @property
    def table_sql(self) -> str:
        return qualified(self.schema, self.table)

    def names(self) -> str:
        found = [v.sql_name for v in self.views] + [f"policy {q(p.name)}" for p in self.policies]
        return ", ".join(found)

    # -- rewriting ------------------------------------------------------------------------
    def renamed(self, old: str, new: str) -> Dependents:
        """Definitions reading ``new`` where they read ``old`` (views keep their output names)."""
        views = tuple(
            replace(
                v,
                definition=rename_in_view(v.definition, self.schema, self.table, old, new, view=v.sql_name),
            )
            if v.direct
            else v
            for v in self.views
        )
        policies = tuple(
            replace(
                p,
                using=_renamed_policy(p.using, self, old, new, p.name),
                with_check=_renamed_policy(p.with_check, self, old, new, p.name),
            )
            for p in self.policies
        )
        return replace(self, views=views, policies=policies)

    # -- statements -----------------------------------------------------------------------
    def drops(self) -> list[str]:
        """Top-down: a view built on another goes first; no CASCADE, so nothing unforeseen goes along."""
        out = [f"DROP VIEW IF EXISTS {v.sql_name}" for v in reversed(self.views)]
        out += [f"DROP POLICY IF EXISTS {q(p.name)} ON {self.table_sql}" for p in self.policies]
        return out

    def creates(self) -> list[str]:
        """Bottom-up, each view with what a drop loses: options, owner, comments, grants."""
        out: list[str] = []
        for v in self.views:
            out += _create_view(v)
        out += [_create_policy(p, self.table_sql) for p in self.policies]
        return out


def _renamed_policy(expr: str | None, deps: Dependents, old: str, new: str, name: str) -> str | None:
    if expr is None:
        return None
    return rename_in_policy(expr, deps.schema, deps.table, old, new, policy=name)


def _option(option: str) -> str:
    key, _, value = option.partition("=")
    return f"{q(key)}={literal(value)}"


def _grantee(name: str) -> str:
    return "PUBLIC" if name.upper() == "PUBLIC" else q(name)


def _create_view(v: ViewDef) -> list[str]:
    columns = f" ({', '.join(q(c) for c, _ in v.columns)})" if v.columns else ""
    options = f" WITH ({', '.join(_option(o) for o in v.options)})" if v.options else ""
    body = v.definition.strip().rstrip(";").strip()
    out = [f"CREATE VIEW {v.sql_name}{columns}{options} AS {body}"]
    if v.owner:
        out.append(f"ALTER VIEW {v.sql_name} OWNER TO {q(v.owner)}")
    if v.comment is not None:
        out.append(f"COMMENT ON VIEW {v.sql_name} IS {literal(v.comment)}")
    for column, comment in v.columns:
        if comment is not None:
            out.append(f"COMMENT ON COLUMN {v.sql_name}.{q(column)} IS {literal(comment)}")
    for grantee, privilege, grantable in v.grants:
        option = " WITH GRANT OPTION" if grantable else ""
        out.append(f"GRANT {privilege} ON {v.sql_name} TO {_grantee(grantee)}{option}")
    return out


def _create_policy(p: PolicyDef, table_sql: str) -> str:
    kind = "PERMISSIVE" if p.permissive else "RESTRICTIVE"
    roles = ", ".join(_grantee(r) for r in p.roles) or "PUBLIC"
    sql = (
        f"CREATE POLICY {q(p.name)} ON {table_sql} AS {kind} FOR {_COMMANDS.get(p.command, 'ALL')} TO {roles}"
    )
    if p.using is not None:
        sql += f" USING ({p.using})"
    if p.with_check is not None:
        sql += f" WITH CHECK ({p.with_check})"
    return sql


# -- for the operations -----------------------------------------------------------------------


def carried(facts: TableFacts, where: str, *, what: str) -> Dependents:
    """The dependents of the facts' column, or BadInput naming what cannot be carried online.

    Facts without definitions (from MetaData, or frozen before they were read) list views or
    policies by name only: they are refused as before, since nothing could re-create them.
    """
    extra = facts.extra or {}
    if (facts.dependent_views or facts.policies) and "view_defs" not in extra:
        used = []
        if facts.dependent_views:
            used.append(f"view(s) {', '.join(facts.dependent_views)}")
        if facts.policies:
            used.append(f"row-level security policies {', '.join(facts.policies)}")
        raise BadInput(
            f"column {where} is used by {' and '.join(used)} whose definitions were not read "
            "(plan from the database, not from MetaData, to carry them through)"
        )
    views = tuple(ViewDef.from_json(v) for v in extra.get("view_defs") or ())
    policies = tuple(PolicyDef.from_json(p) for p in extra.get("policy_defs") or ())
    materialized = [v.sql_name for v in views if v.kind != "v"]
    if materialized:
        raise BadInput(
            f"column {where} is used by materialized view(s) {', '.join(materialized)}: {what} cannot "
            "re-create them online (a refresh scans and blocks); drop them first and re-create them after"
        )
    uncarried = [str(u) for u in extra.get("uncarried") or ()]
    if uncarried:
        raise BadInput(
            f"column {where} is used by views or policies that {what} would have to drop and re-create, "
            f"and these depend on them or cannot be re-created with them: {', '.join(uncarried)}; "
            "change or drop them first"
        )
    return Dependents(facts.schema, facts.name, tuple(sorted(views, key=lambda v: v.depth)), policies)


def step(name: str, statements: list[str], *, lock: str = LOCK, kind: str = "ddl") -> Step:
    """Several statements as one step, one transaction, one command for every driver."""
    return Step(name, kind, one_transaction(statements), lock=lock)  # type: ignore[arg-type]
