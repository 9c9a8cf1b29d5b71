"""Fixtures of the conformance suite: one emulator process for the whole session, clients of the
official `dataikuapi` package for several keys, and a small admin-API helper that finishes jobs at
once so no test waits for a simulated build."""

import os
import pathlib
import subprocess
import threading
import time

import dataikuapi
import pytest
import requests

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BINARY = pathlib.Path(os.environ.get("KUBE_DSS_BIN", ROOT / "target" / "debug" / "kube-dss"))
CONFIG = HERE / "emulator.yaml"
READY_PREFIX = "kube-dss emulator listening on "
ADMIN_READY_PREFIX = "kube-dss emulator admin API on "

FULL_KEY = "conf-key"
SECOND_KEY = "second-key"
READ_ONLY_KEY = "read-only-key"
ADMIN_KEY = "admin-key"
PROJECT = "CONF"

TERMINAL = ("DONE", "FAILED", "ABORTED")


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """Starts `kube-dss emulator` on free ports, with the admin API on a listener of its own (as the
    chart's sandbox runs it), and yields the base URLs of the DSS API and of the admin API."""
    if not BINARY.exists():
        pytest.fail(f"{BINARY} not found: run `cargo build --bin kube-dss` (hack/conformance.sh does)")
    log = open(tmp_path_factory.mktemp("emulator") / "stderr.log", "w+")
    proc = subprocess.Popen(
        [str(BINARY), "emulator", "--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
         "--config", str(CONFIG)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    # A stuck start must not hang the suite: kill the process if the ready lines are late.
    timer = threading.Timer(30, proc.kill)
    timer.start()
    line = proc.stdout.readline()
    admin_line = proc.stdout.readline()
    timer.cancel()
    if not line.startswith(READY_PREFIX) or not admin_line.startswith(ADMIN_READY_PREFIX):
        proc.kill()
        log.seek(0)
        pytest.fail(f"emulator did not start (got {line!r}, {admin_line!r}); stderr:\n{log.read()}")
    url = line.strip()[len(READY_PREFIX):]
    admin_url = admin_line.strip()[len(ADMIN_READY_PREFIX):]
    yield url, admin_url
    proc.terminate()
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("emulator did not stop within 10 s of SIGTERM")
    log.close()
    assert code == 0, f"emulator exited with {code} on SIGTERM"


@pytest.fixture(scope="session")
def emulator_url(emulator):
    return emulator[0]


@pytest.fixture(scope="session")
def admin_url(emulator):
    return emulator[1]


@pytest.fixture(scope="session")
def client(emulator_url):
    return dataikuapi.DSSClient(emulator_url, api_key=FULL_KEY)


@pytest.fixture(scope="session")
def second_client(emulator_url):
    return dataikuapi.DSSClient(emulator_url, api_key=SECOND_KEY)


@pytest.fixture(scope="session")
def reader_client(emulator_url):
    return dataikuapi.DSSClient(emulator_url, api_key=READ_ONLY_KEY)


@pytest.fixture(scope="session")
def admin_client(emulator_url):
    return dataikuapi.DSSClient(emulator_url, api_key=ADMIN_KEY)


@pytest.fixture
def project(client):
    return client.get_project(PROJECT)


class Admin:
    """The emulator's admin API (not part of DSS)."""

    def __init__(self, url):
        self.url = url + "/__emulator"

    def _call(self, method, path, **kw):
        resp = requests.request(method, self.url + path, timeout=10, **kw)
        resp.raise_for_status()
        return resp.json()

    def jobs(self, project_key=None):
        params = {"projectKey": project_key} if project_key else None
        return self._call("GET", "/jobs", params=params)

    def job(self, project_key, job_id):
        return next(j for j in self.jobs(project_key) if j["id"] == job_id)

    def finish(self, project_key, job_id, state="DONE", **extra):
        return self._call("POST", f"/jobs/{project_key}/{job_id}/finish", json={"state": state, **extra})

    def set_faults(self, **faults):
        return self._call("PUT", "/faults", json=faults)

    def clear_faults(self):
        return self._call("DELETE", "/faults")

    def stats(self):
        return self._call("GET", "/stats")

    def scenarios(self, project_key=None, scenario_id=None):
        params = {k: v for k, v in (("projectKey", project_key), ("scenarioId", scenario_id)) if v}
        return self._call("GET", "/scenarios", params=params or None)


@pytest.fixture(scope="session")
def admin(admin_url):
    return Admin(admin_url)


@pytest.fixture(autouse=True)
def no_faults_and_no_running_jobs(admin, admin_client):
    """Every test starts and ends without faults, and leaves no job or scenario running behind it."""
    admin.clear_faults()
    yield
    admin.clear_faults()
    # A fire still waiting for its start delay would start a run after the test: let it settle.
    deadline = time.monotonic() + 5
    while any(f["state"] == "PENDING" for r in admin.scenarios() for f in r["fires"]):
        assert time.monotonic() < deadline, "a trigger fire stayed pending"
        time.sleep(0.02)
    for record in admin.scenarios():
        if any("outcome" not in run for run in record["runs"]):
            admin_client.get_project(record["projectKey"]).get_scenario(record["scenarioId"]).abort()
    for job in admin.jobs():
        if job["state"] not in TERMINAL:
            try:
                admin.finish(job["projectKey"], job["id"], "ABORTED")
            except requests.HTTPError:
                pass  # it finished in the meantime


def wait_state(job, states=TERMINAL, timeout=20.0):
    """Polls `get_status()['baseStatus']['state']` (where the client reads it) until it is in
    `states`, on wall-clock time."""
    deadline = time.monotonic() + timeout
    while True:
        state = job.get_status()["baseStatus"]["state"]
        if state in states:
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job.id} still {state} after {timeout} s")
        time.sleep(0.05)
