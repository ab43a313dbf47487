"""The user's Alembic project as ecm sees it: the application line and the contract lineage.

Everything is read through Alembic's own ``Config``, the way the project's ``alembic``
command reads it: ``alembic.ini`` (its ``[alembic]`` section, or the one ``-n/--name``
picks), ``pyproject.toml``'s ``[tool.alembic]`` (Alembic ≥ 1.16 templates), ``%(here)s``
and Alembic's interpolation. A Flask-Migrate ``alembic.ini`` has no ``script_location``
at all (Flask-Migrate sets it in code): the folder holding ``env.py`` is the answer.

Contracts are post-deploy migrations in their own script location and version table
(``<control schema>.contract_version``), so plain ``alembic upgrade head`` on the
application line can never drop what live code uses. Each contract is its own branch
of that lineage, so a contract held for the fleet never blocks another plan's. New
projects keep the lineage inside ``script_location`` (``<script_location>/contracts``),
so whatever ships the application's migrations ships its contracts too.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, OperationalError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

CONTRACT_SECTION = "ecm_contracts"
#: Where a pyproject-configured project registers the lineage: ``[tool.ecm] contracts_script_location``.
TOML_TABLE = "ecm"
TOML_KEY = "contracts_script_location"
CONTRACT_VERSION_TABLE = "contract_version"

CONTRACT_ENV = '''"""Alembic environment of expandcontract's contract lineage (post-deploy migrations).

Run by `ecm upgrade --phase contract`, or by hand with `alembic -n ecm_contracts upgrade heads`;
each contract revision runs the live-code guard itself before any DDL.
"""

from expandcontract.revisions.contract_env import run

run()
'''

CONTRACT_README = """Contract revisions of expandcontract (post-deploy migrations).

They drop what old code used, so they are kept off the application's Alembic line:
`alembic upgrade head` never runs them. Run them with `ecm upgrade --phase contract`
(or `alembic -n ecm_contracts upgrade heads`); each one refuses while live code still
maps what it removes. Their version table is <control schema>.contract_version.
Ship this folder with the application's migrations: a deploy that lacks it cannot
contract, and `ecm upgrade` says so instead of doing nothing.
"""


@dataclass
class Project:
    ini: Path | None
    config: Config
    contracts_dir: Path
    toml: Path | None = None
    name: str = "alembic"
    #: How the contract lineage was found: "ini", "toml" or "default" (not registered yet).
    contracts_registered: str = "default"
    #: The sqlalchemy.url value ecm hands the project's env.py (None: env.py's own).
    url_override: str | None = field(default=None)
    #: The application line's version table, as env.py configures it (learnt by target.probe).
    version_table: str = "alembic_version"
    version_table_schema: str | None = None

    @property
    def root(self) -> Path:
        """The directory ``%(here)s`` means: where the config file lives."""
        path = self.ini if self.ini is not None and self.ini.is_file() else self.toml
        assert path is not None
        return path.parent.resolve()

    def script(self) -> ScriptDirectory:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.config)

    def set_url(self, url: str) -> None:
        """Make the project's env.py see ``url`` as sqlalchemy.url (what `alembic` would read)."""
        self.url_override = url
        self.config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))

    def configured_url(self) -> str | None:
        url = self.config.get_main_option("sqlalchemy.url")
        return url or None

    def contract_config(self) -> Config:
        from alembic.config import Config

        ini = str(self.ini) if self.ini is not None and self.ini.is_file() else None
        cfg = Config(ini, ini_section=CONTRACT_SECTION)
        cfg.set_main_option("script_location", str(self.contracts_dir))
        url = self.config.get_main_option("sqlalchemy.url")
        if url:
            cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        cfg.attributes["ecm_project"] = self
        return cfg

    def contract_script(self) -> ScriptDirectory | None:
        """The contract lineage, or None when no plan ever wrote one (no folder at all).

        A folder without ``env.py`` is broken, not absent: it raises.
        """
        from alembic.script import ScriptDirectory

        if not self.contracts_dir.exists():
            return None
        if not (self.contracts_dir / "env.py").is_file():
            raise OperationalError(
                f"the contract lineage at {self.contracts_dir} has no env.py: restore it from version "
                "control (or run `ecm plan` once to write it again)"
            )
        return ScriptDirectory.from_config(self.contract_config())

    def versions_dir(self) -> Path:
        script = self.script()
        locations = script._version_locations
        return Path(locations[0]) if locations else Path(script.dir) / "versions"


def alembic_option(config: Config, name: str) -> Any:
    """An option from the ini section or ``[tool.alembic]`` (Alembic ≥ 1.16), else the ini only."""
    getter = getattr(config, "get_alembic_option", None)
    return getter(name) if getter is not None else config.get_main_option(name)


def _config_files(path: Path) -> tuple[Path | None, Path | None]:
    """(alembic.ini, pyproject.toml) the way Alembic's command line pairs them."""
    if path.name == "pyproject.toml":
        ini = path.parent / "alembic.ini"
        return (ini if ini.is_file() else None), path
    toml = path.parent / "pyproject.toml"
    return (path if path.is_file() else None), (toml if _has_tool_alembic(toml) else None)


def _toml(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    import tomllib

    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"cannot read {path}: {exc}") from None
    return data


def _has_tool_alembic(path: Path) -> bool:
    return path.is_file() and "alembic" in _toml(path).get("tool", {})


def exists(path: Path) -> bool:
    """Whether ``path`` (``-c``) names a project ecm can load."""
    ini, toml = _config_files(path)
    return ini is not None or toml is not None


def load(path: Path, name: str = "alembic") -> Project:
    from alembic.config import Config

    ini, toml = _config_files(path)
    if ini is None and toml is None:
        raise BadInput(
            f"no Alembic config at {path} (nor [tool.alembic] in a pyproject.toml beside it): run from your "
            "project directory or pass -c path/to/alembic.ini"
        )
    if ini is not None and name != "alembic":
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(ini)
        if not parser.has_section(name):
            raise BadInput(f"{ini} has no [{name}] section (-n/--name)")
    extra: dict[str, Any] = {"toml_file": str(toml)} if toml is not None else {}
    config = Config(str(ini) if ini is not None else None, ini_section=name, **extra)
    location = alembic_option(config, "script_location")
    if not location:
        # Flask-Migrate's alembic.ini lives beside its env.py and leaves script_location to code.
        if ini is not None and (ini.parent / "env.py").is_file():
            config.set_main_option("script_location", str(ini.parent.resolve()))
        else:
            where = f"[{name}] of {ini}" if ini is not None else ""
            if toml is not None:
                where = (where + " or " if where else "") + f"[tool.alembic] of {toml}"
            raise BadInput(f"no script_location in {where}")
    if config.get_main_option("databases"):
        raise BadInput(
            "this project's env.py migrates several databases (the `multidb` template: `databases = "
            f"{config.get_main_option('databases')}`); ecm plans one database at a time: give it a "
            "single-database Alembic config for the database the table lives in (`alembic init -t "
            "generic` in its own folder, with its own version table) and pass that with -c"
        )
    project = Project(ini=ini, config=config, contracts_dir=Path("."), toml=toml, name=name)
    project.contracts_dir, project.contracts_registered = _contracts_location(project)
    _check_contracts_apart(project)
    return project


def _contracts_location(project: Project) -> tuple[Path, str]:
    from alembic.config import Config

    if project.ini is not None:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(project.ini)
        if parser.has_section(CONTRACT_SECTION) and parser.has_option(CONTRACT_SECTION, "script_location"):
            location = Config(str(project.ini), ini_section=CONTRACT_SECTION).get_main_option(
                "script_location"
            )
            assert location is not None
            return _absolute(location, project.ini.parent), "ini"
    table = _toml(project.toml).get("tool", {}).get(TOML_TABLE, {})
    if isinstance(table, dict) and isinstance(table.get(TOML_KEY), str):
        assert project.toml is not None
        here = project.toml.parent.resolve().as_posix()
        return _absolute(table[TOML_KEY].replace("%(here)s", here), project.toml.parent), "toml"
    return _script_dir(project) / "contracts", "default"


def _script_dir(project: Project) -> Path:
    """script_location as a directory (package resources too); a missing one is Alembic's error later."""
    try:
        return Path(project.script().dir).resolve()
    except Exception:
        return _absolute(str(alembic_option(project.config, "script_location")), Path.cwd())


def _absolute(location: str, base: Path) -> Path:
    path = Path(location)
    return path if path.is_absolute() else (base.resolve() / path)


def _check_contracts_apart(project: Project) -> None:
    """Contracts inside a version location would be run by plain `alembic upgrade head`."""
    config = project.config
    locations = config.get_version_locations_list() or []
    if not locations:
        locations = [str(_script_dir(project) / "versions")]
    recursive = str(alembic_option(config, "recursive_version_locations") or "").lower() == "true"
    contracts = project.contracts_dir.resolve()
    for location in locations:
        versions = _absolute(location, Path.cwd()).resolve()
        if contracts == versions or (recursive and versions in contracts.parents):
            raise BadInput(
                f"the contract lineage {contracts} is inside the application's version location {versions}: "
                "plain `alembic upgrade head` would run contracts; move it out (the [ecm_contracts] section)"
            )


def scaffold_contracts(project: Project) -> list[Path]:
    """Create the contract lineage's directory and register it in the project's config (once)."""
    from .writer import TEMPLATE_MAKO

    created: list[Path] = []
    d = project.contracts_dir
    (d / "versions").mkdir(parents=True, exist_ok=True)
    for name, content in (
        ("env.py", CONTRACT_ENV),
        ("script.py.mako", TEMPLATE_MAKO),
        ("README", CONTRACT_README),
    ):
        path = d / name
        if not path.exists():
            path.write_text(content)
            created.append(path)
    if project.contracts_registered != "default":
        return created
    location = _here_relative(d, project.root)
    # The section in alembic.ini is what `alembic -n ecm_contracts …` reads, whichever file holds
    # the project's script_location; a pyproject-only project registers in [tool.ecm].
    if project.ini is not None:
        with project.ini.open("a") as fh:
            fh.write(
                f"\n[{CONTRACT_SECTION}]\n"
                "# expandcontract's post-deploy contract lineage: `alembic -n ecm_contracts upgrade heads`\n"
                f"script_location = {location}\n"
            )
        created.append(project.ini)
        project.contracts_registered = "ini"
    elif project.toml is not None:
        text = project.toml.read_text()
        with project.toml.open("a") as fh:
            fh.write(
                ("" if text.endswith("\n") else "\n")
                + f"\n[tool.{TOML_TABLE}]\n"
                + "# expandcontract's post-deploy contract lineage (run by `ecm upgrade --phase contract`)\n"
                + f'{TOML_KEY} = "{location}"\n'
            )
        created.append(project.toml)
        project.contracts_registered = "toml"
    return created


def _here_relative(path: Path, root: Path) -> str:
    try:
        return f"%(here)s/{path.resolve().relative_to(root).as_posix()}"
    except ValueError:
        return str(path.resolve())
