"""examples/: the accounts app (v1 maps `name`, v2 maps `full_name`) and the deploy pipelines.

pytest-alembic's four built-in tests run on the example's Alembic project at each stage of
the rename: before the plan (only the base revision), in flight (expand and backfill
applied, contract not) and after the contract. They are called as functions on a runner
built here, so the plugin's own collection (bound to tests/conftest.py, behind
--test-alembic) never runs them against the rest of the suite.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import alembic.config
import psycopg
import pytest
import yaml
from pytest_alembic import Config, runner
from pytest_alembic.tests import default as builtins
from sqlalchemy import MetaData, create_engine, pool
from sqlalchemy.engine import make_url

from expandcontract import schema_ready

from .conftest import Server, run_ecm
from .project import Project, columns

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "accounts-app"
PIPELINES = ROOT / "examples" / "pipelines"
PLAN = "rename_accounts_name_full_name"

BUILTINS: dict[str, Callable[[Any], None]] = {
    "single_head_revision": builtins.test_single_head_revision,
    "upgrade": builtins.test_upgrade,
    "model_definitions_match_ddl": builtins.test_model_definitions_match_ddl,
    "up_down_consistency": builtins.test_up_down_consistency,
}
STAGES = ("before", "in_flight", "after")


def sa_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def plan_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.py") if f"PLAN_ID = '{PLAN}'" in p.read_text()]


def copy_example(dest: Path, url: str, *, stage: str = "after") -> Project:
    """The example project bound to a test database; "before" is the tree as it was before `ecm plan`."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    ini = dest / "alembic.ini"
    text = re.sub(
        r"^sqlalchemy\.url = .*$",
        lambda _: "sqlalchemy.url = " + sa_url(url).replace("%", "%%"),
        ini.read_text(),
        flags=re.M,
    )
    if stage == "before":
        for path in plan_files(dest):
            path.unlink()
        shutil.rmtree(dest / "contracts")
        text = text[: text.index("\n[ecm_contracts]")] + "\n"
    ini.write_text(text)
    return Project(dest, url)


@functools.cache
def models(version: str) -> MetaData:
    """The MetaData of examples/accounts-app/<version>, loaded under a name of its own."""
    path = EXAMPLE / version / "accounts_app" / "models.py"
    spec = importlib.util.spec_from_file_location(f"_accounts_app_{version}_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # SQLAlchemy resolves the string annotations through it
    spec.loader.exec_module(module)
    metadata = module.metadata
    assert isinstance(metadata, MetaData)
    return metadata


def run_builtin(name: str, project: Project, version: str) -> None:
    cfg = alembic.config.Config(str(project.root / "alembic.ini"))
    cfg.attributes["configure_logger"] = False
    config = Config(config_options={"target_metadata": models(version)}, alembic_config=cfg)
    engine = create_engine(sa_url(project.url), poolclass=pool.NullPool)
    try:
        with runner(config=config, engine=engine) as alembic_runner:
            BUILTINS[name](alembic_runner)
    finally:
        engine.dispose()


# -- pytest-alembic's built-in tests at every stage ----------------------------------------


@pytest.fixture(scope="session")
def contracted(pg_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database taken through the whole plan by `ecm upgrade`, as a template for the "after" stage.

    The contract lineage is not on Alembic's app line, so pytest-alembic cannot reach this state
    by itself: `ecm upgrade` runs both lines, as a deploy does.
    """
    with fresh_database(pg_server) as url:
        project = copy_example(tmp_path_factory.mktemp("contracted") / "app", url)
        result = project.ecm("upgrade", "--allow-no-reporters")
        assert result.returncode == 0, result.stderr
        with project.connect() as conn:
            assert "name" not in columns(conn, "accounts")
            assert conn.execute("SELECT phase FROM ecm.plans").fetchall() == [("contracted",)]
        name = make_url(url).database
        assert name is not None
        yield name


@contextmanager
def fresh_database(pg_server: Server, template: str | None = None) -> Iterator[str]:
    """One more database for a test (libpq URL), empty or a copy of ``template``."""
    name = f"ecm_t_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"{clause}')
    try:
        yield make_url(pg_server.url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("stage", STAGES)
def test_pytest_alembic_builtins(
    stage: str,
    tmp_path: Path,
    pg_server: Server,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """All four built-ins, each database-changing one on a database of its own."""
    # A throwaway database runs no application: rolling the expand back (up/down consistency)
    # may take the empty registry as proof that no live code maps full_name.
    monkeypatch.setenv("ECM_ALLOW_NO_REPORTERS", "1")
    version = "v2" if stage == "after" else "v1"
    project = copy_example(tmp_path / "app", "postgresql:///unused", stage=stage)
    run_builtin("single_head_revision", project, version)
    # pytest-alembic's own way: an empty database and the app line, base to head. After the
    # contract that database has the plan in flight (the contract is on its own lineage), and
    # v2's models still match it: what differs is the plan's, and the hook leaves it alone.
    with fresh_database(pg_server) as url:
        run_builtin("upgrade", Project(project.root, url), version)
        run_builtin("model_definitions_match_ddl", Project(project.root, url), version)
    with fresh_database(pg_server) as url:
        run_builtin("up_down_consistency", Project(project.root, url), version)
    if stage == "after":
        # The database as production has it after the contract: nothing is hidden any more, so
        # v2's models must match the contracted schema exactly.
        with fresh_database(pg_server, request.getfixturevalue("contracted")) as url:
            run_builtin("upgrade", Project(project.root, url), version)  # nothing left to apply
            run_builtin("model_definitions_match_ddl", Project(project.root, url), version)


# -- the two versions of the application across the plan ----------------------------------


@dataclass
class App:
    version: str
    proc: subprocess.Popen[str]
    port: int

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())

    def stop(self) -> None:
        """SIGTERM, as Kubernetes stops a pod: the reporter deregisters before the process ends."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@contextmanager
def running(project: Project, version: str) -> Iterator[App]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "accounts_app", "--port", "0", "--heartbeat", "0.5"],
        cwd=project.root / version,
        env={**os.environ, "DATABASE_URL": project.url},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the reporter's log lines come first (structlog prints to stdout)
            if line.startswith("LISTENING "):
                break
        else:
            raise AssertionError(f"{version} did not start (exit {proc.poll()})")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
        yield App(version, proc, int(line.split()[1]))
    finally:
        App(version, proc, 0).stop()


def check_app(project: Project, version: str) -> tuple[int, dict[str, Any]]:
    """The exec-probe form of readiness, run from the version's code directory."""
    result = run_ecm(
        "check-app",
        "accounts_app.models:metadata",
        "--json",
        cwd=project.root / version,
        env={"ECM_DATABASE_URL": project.url},
    )
    return result.returncode, json.loads(result.stdout)


def test_v1_and_v2_readiness_and_the_contract_across_the_plan(tmp_path: Path, database_url: str) -> None:
    project = copy_example(tmp_path / "app", database_url)
    result = project.alembic("upgrade", "5f1c2a7d9e40")  # the base revision: accounts with `name`
    assert result.returncode == 0, result.stderr
    missing = ["column public.accounts.full_name"]
    with running(project, "v1") as v1, running(project, "v2") as v2:
        # Before the expand, v1 serves and v2 is not ready (it would fail on full_name).
        assert v1.get("/healthz") == (200, {"ready": True, "version": "1", "missing": []})
        assert v2.get("/healthz") == (503, {"ready": False, "version": "2", "missing": missing})
        assert check_app(project, "v2") == (
            3,
            {"target": "accounts_app.models:metadata", "ready": False, "missing": missing},
        )
        assert v1.post("/accounts", {"name": "Ada"})[0] == 201

        result = project.ecm("upgrade", "--phase", "expand")  # the pre-deploy job
        assert result.returncode == 0, result.stderr
        assert v2.get("/healthz") == (200, {"ready": True, "version": "2", "missing": []})
        assert v1.get("/healthz")[0] == 200

        result = project.ecm("backfill", PLAN, "--workers", "2")  # the backfill job's pods
        assert result.returncode == 0, result.stderr

        # Both versions write; the trigger keeps each visible to the other.
        assert v2.post("/accounts", {"full_name": "Grace"})[0] == 201
        assert v1.post("/accounts", {"name": "Linus"})[0] == 201
        assert [a["name"] for a in v1.get("/accounts")[1]["accounts"]] == ["Ada", "Grace", "Linus"]
        assert [a["full_name"] for a in v2.get("/accounts")[1]["accounts"]] == ["Ada", "Grace", "Linus"]

        # The post-deploy job is held while v1 runs (exit 3), then runs once v1 is gone.
        held = project.ecm("upgrade", "--phase", "contract")
        assert held.returncode == 3, held.stderr
        assert "accounts 1 still maps public.accounts.name" in held.stderr
        v1.stop()
        result = project.ecm("upgrade", "--phase", "contract")
        assert result.returncode == 0, result.stderr

        assert v2.get("/healthz") == (200, {"ready": True, "version": "2", "missing": []})
        assert [a["full_name"] for a in v2.get("/accounts")[1]["accounts"]] == ["Ada", "Grace", "Linus"]
    # v1 would not be ready any more: rolling the code back now needs the contract rolled back first.
    assert schema_ready(sa_url(project.url), models("v1")) == ["column public.accounts.name"]


# -- `alembic revision --autogenerate` while the plan is in flight, and after it ---------------


def autogenerate(project: Project, version: str) -> list[str]:
    """The operations `alembic revision --autogenerate` writes into upgrade() (the file is removed).

    The example's env.py also has the rewrite hook; `-x ecm=off` leaves it out, so these tests see
    what the include_object filter alone lets Alembic propose.
    """
    before = set(project.versions())
    result = project.alembic(
        "-x", "ecm=off", "revision", "--autogenerate", "-m", "probe", env={"ACCOUNTS_APP_VERSION": version}
    )
    assert result.returncode == 0, result.stderr
    (path,) = set(project.versions()) - before
    text = path.read_text()
    path.unlink()
    body = text[text.index("def upgrade()") : text.index("def downgrade()")]
    return re.findall(r"^\s+(op\.\w+\(.*)$", body, flags=re.M)


def test_autogenerate_in_flight_proposes_no_drop(tmp_path: Path, database_url: str) -> None:
    project = copy_example(tmp_path / "app", database_url)
    result = project.ecm("upgrade", "--phase", "backfill")
    assert result.returncode == 0, result.stderr
    # v1 is what runs while the plan is in flight; v2 is what a developer has in the editor then.
    assert autogenerate(project, "v1") == []
    assert autogenerate(project, "v2") == []

    # Without the env.py line, the same comparison proposes dropping the column v1 still writes.
    env_py = project.root / "migrations" / "env.py"
    line = "        include_object=expandcontract.autogen.include_object,\n"
    assert line in env_py.read_text()
    env_py.write_text(env_py.read_text().replace(line, ""))
    proposed = "\n".join(autogenerate(project, "v2"))
    assert "op.drop_column('accounts', 'name')" in proposed
    assert "op.drop_constraint(op.f('orders_account_name_fkey')" in proposed
    assert "op.drop_index(op.f('accounts_full_name_key')" in proposed
    # ... and v1's models, dropping the new column with every row the backfill and v2 wrote.
    proposed = "\n".join(autogenerate(project, "v1"))
    assert "op.drop_column('accounts', 'full_name')" in proposed


def test_autogenerate_after_the_contract_sees_real_differences(
    tmp_path: Path, pg_server: Server, contracted: str
) -> None:
    with fresh_database(pg_server, contracted) as url:
        project = copy_example(tmp_path / "app", url)
        assert autogenerate(project, "v2") == []
        # The plan is finished, so nothing is hidden: v1's models really differ from the database now.
        proposed = "\n".join(autogenerate(project, "v1"))
        assert "op.add_column('accounts', sa.Column('name'" in proposed
        assert "op.drop_column('accounts', 'full_name')" in proposed

        # With the example's rewrite hook, that drop + add is a rename candidate: nothing is written
        # until someone says which it is.
        before = set(project.versions())
        refused = project.alembic(
            "revision", "--autogenerate", "-m", "back", env={"ACCOUNTS_APP_VERSION": "v1"}
        )
        assert refused.returncode != 0
        assert (
            "accounts.full_name" in refused.stderr and "ecm-rename=accounts.full_name:name" in refused.stderr
        )
        assert set(project.versions()) == before
        renamed = project.alembic(
            "-x",
            "ecm-rename=accounts.full_name:name",
            "revision",
            "--autogenerate",
            "-m",
            "back",
            env={"ACCOUNTS_APP_VERSION": "v1"},
        )
        assert renamed.returncode == 0, renamed.stderr
        assert "rename column accounts.full_name -> name" in renamed.stderr
        written = {p.name for p in set(project.versions()) - before}
        assert any("_ecm_expand_rename_accounts_full_name_name" in n for n in written), written


# -- examples/pipelines: the order of a deploy, as manifests (syntax and structure; no cluster) --


def manifests() -> dict[str, list[dict[str, Any]]]:
    docs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((PIPELINES / "k8s").glob("*.yaml")):
        docs[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (only,) = doc["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def test_kubernetes_manifests_express_the_order() -> None:
    docs = manifests()
    assert docs, "no manifests in examples/pipelines/k8s"
    for name, items in docs.items():
        for doc in items:
            assert {"apiVersion", "kind", "metadata", "spec"} <= set(doc), name
    ordered = sorted(
        (
            d
            for items in docs.values()
            for d in items
            if "expandcontract/order" in d["metadata"].get("annotations", {})
        ),
        key=lambda d: int(d["metadata"]["annotations"]["expandcontract/order"]),
    )
    assert [(d["kind"], d["metadata"]["annotations"]["expandcontract/when"]) for d in ordered] == [
        ("Job", "pre-deploy"),
        ("Job", "pre-deploy"),
        ("Deployment", "deploy"),
        ("Job", "post-deploy"),
    ]
    expand, backfill, deployment, contract = ordered
    # The files are numbered in the same order.
    assert [n for n, items in docs.items() if any(d in ordered for d in items)] == sorted(docs)

    assert container(expand)["command"] == ["ecm", "upgrade", "--phase", "expand"]

    command = container(backfill)["command"]
    assert command[:2] == ["ecm", "backfill"] and "--workers" in command
    assert command[2] == PLAN and plan_files(EXAMPLE), "the Job names the example's plan"
    assert backfill["spec"]["parallelism"] >= 2
    assert backfill["spec"]["completions"] == backfill["spec"]["parallelism"]

    web = container(deployment)
    assert web["command"][:3] == ["python", "-m", "accounts_app"]
    assert web["readinessProbe"]["httpGet"]["path"] == "/healthz"  # Service.health(): schema_ready()
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    assert container(contract)["command"] == ["ecm", "upgrade", "--phase", "contract"]
    spec = contract["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["backoffLimit"] >= 10
    rules = {
        (r["action"], r["onExitCodes"]["operator"], tuple(r["onExitCodes"]["values"]))
        for r in spec["podFailurePolicy"]["rules"]
        if "onExitCodes" in r
    }
    assert rules == {("Count", "In", (3,)), ("FailJob", "NotIn", (3,))}  # retry only while held

    for job in (expand, backfill, contract):
        env = {e["name"] for e in container(job)["env"]}
        assert "ECM_DATABASE_URL" in env


def test_github_actions_workflow_runs_the_steps_in_order() -> None:
    workflow = yaml.safe_load((PIPELINES / "github-actions.yml").read_text())
    assert workflow.get("on", workflow.get(True)) is not None  # YAML 1.1 reads a bare `on` as true
    jobs = workflow["jobs"]
    chain = ["test", "build", "expand", "backfill", "deploy", "contract"]
    assert list(jobs) == chain
    for before, after in itertools.pairwise(chain):
        assert jobs[after]["needs"] == before
    runs = {name: "\n".join(s.get("run", "") for s in job["steps"]) for name, job in jobs.items()}
    assert "k8s/01-expand-job.yaml" in runs["expand"]
    assert "k8s/02-backfill-job.yaml" in runs["backfill"]
    assert "k8s/03-deployment.yaml" in runs["deploy"] and "kubectl rollout status" in runs["deploy"]
    assert "k8s/04-contract-job.yaml" in runs["contract"]
    assert workflow["concurrency"]["cancel-in-progress"] is False
    script = PIPELINES / "run-job.sh"
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0
    # The build's context has what the Dockerfile copies.
    dockerfile = (EXAMPLE / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (\S+) ", dockerfile, flags=re.M):
        assert (EXAMPLE / src.replace("${APP_VERSION}", "v2")).exists(), src
