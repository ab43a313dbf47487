"""The user's Alembic project as ecm sees it: the application line and the contract lineage.

Contracts are post-deploy migrations in their own script location and version table
(``<control schema>.contract_version``), so plain ``alembic upgrade head`` on the
application line can never drop what live code uses. Each contract is its own branch
of that lineage, so a contract held for the fleet never blocks another plan's.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadInput

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

CONTRACT_SECTION = "ecm_contracts"
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
"""


@dataclass
class Project:
    ini: Path
    config: Config
    contracts_dir: Path

    def script(self) -> ScriptDirectory:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.config)

    def contract_config(self) -> Config:
        from alembic.config import Config

        cfg = Config(str(self.ini), ini_section=CONTRACT_SECTION)
        cfg.set_main_option("script_location", str(self.contracts_dir))
        url = self.config.get_main_option("sqlalchemy.url")
        if url:
            cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        return cfg

    def contract_script(self) -> ScriptDirectory | None:
        from alembic.script import ScriptDirectory

        if not (self.contracts_dir / "env.py").is_file():
            return None
        return ScriptDirectory.from_config(self.contract_config())

    def versions_dir(self) -> Path:
        script = self.script()
        locations = script._version_locations
        return Path(locations[0]) if locations else Path(script.dir) / "versions"


def load(ini: Path) -> Project:
    from alembic.config import Config

    if not ini.is_file():
        raise BadInput(
            f"no Alembic config at {ini}: run from your project directory or pass -c path/to/alembic.ini"
        )
    config = Config(str(ini))
    if not config.get_main_option("script_location"):
        raise BadInput(f"{ini} has no script_location in its [alembic] section")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ini)
    location = None
    if parser.has_section(CONTRACT_SECTION):
        location = parser.get(CONTRACT_SECTION, "script_location", fallback=None)
    if location:
        location = location.replace("%(here)s", str(ini.parent.resolve()))
        contracts = Path(location)
        if not contracts.is_absolute():
            contracts = ini.parent.resolve() / contracts
    else:
        contracts = ini.parent.resolve() / "contracts"
    return Project(ini=ini, config=config, contracts_dir=contracts)


def scaffold_contracts(project: Project) -> list[Path]:
    """Create the contract lineage's directory and register it in alembic.ini (once)."""
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
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(project.ini)
    if not parser.has_section(CONTRACT_SECTION):
        try:
            rel = d.resolve().relative_to(project.ini.parent.resolve())
            location = f"%(here)s/{rel.as_posix()}"
        except ValueError:
            location = str(d.resolve())
        with project.ini.open("a") as fh:
            fh.write(
                f"\n[{CONTRACT_SECTION}]\n"
                "# expandcontract's post-deploy contract lineage: `alembic -n ecm_contracts upgrade heads`\n"
                f"script_location = {location}\n"
            )
        created.append(project.ini)
    return created
