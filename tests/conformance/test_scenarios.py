"""Every scenario method of the pinned client (dataikuapi/dss/scenario.py, 15.2.0) against the
emulator: DSSProject.list_scenarios, DSSScenario (run, run_and_wait, get_trigger_fire, the run
listings, get_current_run, get_last_finished_run, get_last_successful_run, get_run, get_status,
get_average_duration, abort), DSSTriggerFire, DSSScenarioRun and its details, and the error paths.
Where the client itself behaves surprisingly, the test pins that behaviour and says so."""

import datetime
import time

import pytest
import requests
from dataikuapi.dss.scenario import (
    DSSScenario,
    DSSScenarioListItem,
    DSSScenarioRun,
    DSSScenarioRunDetails,
    DSSScenarioStatus,
    DSSStepRunDetails,
    DSSTriggerFire,
)
from dataikuapi.utils import DataikuException

from conftest import FULL_KEY, PROJECT

OUTCOMES = ("SUCCESS", "WARNING", "FAILED", "ABORTED")


def running_run(scenario, timeout=10.0):
    """Fires `scenario` and returns its trigger fire and run once the run has started."""
    fire = scenario.run()
    deadline = time.monotonic() + timeout
    while True:
        run = fire.get_scenario_run()
        if run is not None:
            return fire, run
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.02)


def settled(scenario, fire, timeout=10.0):
    """Polls the fire (with refresh) until it is cancelled or has a run."""
    deadline = time.monotonic() + timeout
    while not fire.is_cancelled(refresh=True) and fire.get_scenario_run() is None:
        assert time.monotonic() < deadline, "the fire did not settle"
        time.sleep(0.02)


def test_list_scenarios_as_items_and_objects(project):
    items = project.list_scenarios()
    assert all(isinstance(i, DSSScenarioListItem) for i in items)
    by_id = {i["id"]: i for i in items}
    assert {"REFRESH", "WARNS", "BROKEN", "CHECKS", "LONG"} <= set(by_id)
    refresh = by_id["REFRESH"]
    # DSSScenarioListItem.id returns the scenario's *name* (a client quirk); the raw item has both.
    assert refresh.id == "Refresh brief" == refresh["name"]
    assert refresh.tags == ["nightly"]
    assert refresh.running is False and refresh.start_time is None
    assert refresh.to_scenario().id == "REFRESH"
    assert by_id["CHECKS"]["active"] is False
    objects = project.list_scenarios(as_type="objects")
    assert all(isinstance(o, DSSScenario) for o in objects)
    assert "REFRESH" in {o.id for o in objects}
    with pytest.raises(ValueError, match="Unknown as_type"):
        project.list_scenarios(as_type="nope")


def test_run_returns_a_trigger_fire_that_leads_to_the_run(project):
    scenario = project.get_scenario("REFRESH")
    fire = scenario.run(params={"requestId": "req-42"})
    assert isinstance(fire, DSSTriggerFire)
    raw = fire.get_raw()
    assert fire.trigger_id == raw["trigger"]["id"] == "manual"
    assert fire.run_id == raw["runId"]
    assert fire.is_cancelled() is False
    run = fire.wait_for_scenario_run()
    assert isinstance(run, DSSScenarioRun)
    # The fire's runId is a trigger run id, not the scenario run's id.
    assert run.id != fire.run_id
    assert run.get_info()["trigger"]["runId"] == fire.run_id
    assert run.get_info()["trigger"]["params"] == {"requestId": "req-42"}
    assert run.trigger["id"] == "manual"
    assert fire.get_scenario_run().id == run.id
    again = scenario.get_trigger_fire(fire.trigger_id, fire.run_id)
    assert again.run_id == fire.run_id and again.is_cancelled() is False
    run.wait_for_completion()
    assert run.outcome == "SUCCESS"


def test_run_and_wait_outcomes_and_no_fail(project):
    ok = project.get_scenario("REFRESH").run_and_wait()
    assert isinstance(ok, DSSScenarioRun) and ok.outcome == "SUCCESS" and not ok.running
    with pytest.raises(DataikuException, match="Scenario run returned status FAILED"):
        project.get_scenario("BROKEN").run_and_wait()
    failed = project.get_scenario("BROKEN").run_and_wait(no_fail=True)
    assert failed.outcome == "FAILED"
    # WARNING is not SUCCESS for the client: it raises unless no_fail.
    with pytest.raises(DataikuException, match="Scenario run returned status WARNING"):
        project.get_scenario("WARNS").run_and_wait()
    assert project.get_scenario("WARNS").run_and_wait(no_fail=True).outcome == "WARNING"
    # Parameters reach the run.
    marked = project.get_scenario("AVERAGE").run_and_wait(params={"k": "v"})
    assert marked.get_info()["trigger"]["params"] == {"k": "v"}


def test_scenario_run_properties_refresh_and_wait(project):
    fire, run = running_run(project.get_scenario("REFRESH"))
    assert run.running is True
    with pytest.raises(ValueError, match="Maybe still running"):
        run.outcome
    with pytest.raises(ValueError, match="has not completed"):
        run.end_time
    assert isinstance(run.start_time, datetime.datetime)
    assert run.get_start_time() == run.start_time
    assert run.duration >= 0  # still running: measured until now
    run.wait_for_completion()
    assert run.running is False and run.outcome == "SUCCESS"
    assert run.end_time >= run.start_time
    assert abs(run.duration - (run.end_time - run.start_time).total_seconds()) < 1e-6
    stale = DSSScenarioRun(run.client, dict(run.get_info(), end=0))
    stale.run.pop("result")
    stale.refresh()
    assert stale.outcome == "SUCCESS"
    with pytest.raises(DataikuException, match="Scenario run returned status FAILED"):
        project.get_scenario("BROKEN").run_and_wait(no_fail=True).wait_for_completion()
    project.get_scenario("BROKEN").run_and_wait(no_fail=True).wait_for_completion(no_fail=True)


def test_details_link_the_steps_to_their_jobs(project):
    run = project.get_scenario("REFRESH").run_and_wait()
    details = run.get_details()
    assert isinstance(details, DSSScenarioRunDetails)
    assert details["scenarioRun"]["runId"] == run.id
    steps = details.steps
    assert all(isinstance(s, DSSStepRunDetails) for s in steps)
    assert [s["step"]["id"] for s in steps] == ["build_brief", "settle"]
    assert [s.outcome for s in steps] == ["SUCCESS", "SUCCESS"]
    assert details.last_step["step"]["id"] == "settle"
    assert details.first_error_details is None
    job_ids = steps[0].job_ids
    assert len(job_ids) == 1 and steps[1].job_ids == []
    job = project.get_job(job_ids[0])
    assert job.get_status()["baseStatus"]["state"] == "DONE"
    assert job_ids[0] in [j.id for j in project.list_jobs(as_type="objects")]


def test_failure_details_and_logs(project):
    run = project.get_scenario("BROKEN").run_and_wait(no_fail=True)
    details = run.get_details()
    assert [s["step"]["id"] for s in details.steps] == ["build_failing"]
    error = details.first_error_details
    assert "simulated failure in compute_failing" in error["message"]
    assert error["clazz"]
    step = details.steps[0]
    assert step.first_error_details == error
    assert project.get_job(step.job_ids[0]).get_status()["baseStatus"]["state"] == "FAILED"
    log = run.get_log()
    assert run.id in log and "simulated failure in compute_failing" in log.splitlines()[-1]
    step_log = run.get_log(step_id="build_failing")
    assert "ValueError: bad row 7" in step_log  # the job's own log lines
    assert "started by trigger" not in step_log

    checks = project.get_scenario("CHECKS").run_and_wait(no_fail=True)
    assert checks.outcome == "FAILED"
    steps = checks.get_details().steps
    assert [s.outcome for s in steps] == ["WARNING", "FAILED"]
    assert steps[1].first_error_details["code"] == "ERR_CHECK"
    assert "3 rows look odd" in checks.get_log(step_id="look")


def test_listings_and_current_runs(project):
    scenario = project.get_scenario("AVERAGE")
    first = scenario.run_and_wait(params={"n": 1})
    second = scenario.run_and_wait(params={"n": 2})
    last = scenario.get_last_runs(limit=2)
    assert [r.id for r in last] == [second.id, first.id]
    assert all(isinstance(r, DSSScenarioRun) for r in last)
    assert len(scenario.get_last_runs(limit=1)) == 1
    assert scenario.get_last_runs(only_finished_runs=True)[0].id == second.id
    assert scenario.get_last_finished_run().id == second.id
    assert scenario.get_last_successful_run().id == second.id
    assert scenario.get_run(first.id).get_info()["trigger"]["params"] == {"n": 1}
    assert scenario.get_current_run() is None
    # Dates as the client formats them (YYYY-MM-DD); from inclusive, to exclusive.
    day = first.start_time.date()
    window = scenario.get_runs_by_date(day, day + datetime.timedelta(days=2))
    assert {first.id, second.id} <= {r.id for r in window}
    as_strings = scenario.get_runs_by_date(day.isoformat(), (day + datetime.timedelta(days=2)).isoformat())
    assert [r.id for r in as_strings] == [r.id for r in window]
    as_datetimes = scenario.get_runs_by_date(datetime.datetime.combine(day, datetime.time()),
                                            datetime.datetime.combine(day + datetime.timedelta(days=2), datetime.time()))
    assert [r.id for r in as_datetimes] == [r.id for r in window]
    assert scenario.get_runs_by_date(day - datetime.timedelta(days=1), day) == []


def test_last_successful_run_is_the_last_finished_one(project):
    # get_last_successful_run() asks for finished runs only and does not look at the outcome: after
    # a FAILED run it returns that run (a client quirk, pinned here).
    scenario = project.get_scenario("BROKEN")
    failed = scenario.run_and_wait(no_fail=True)
    assert scenario.get_last_successful_run().id == failed.id
    assert scenario.get_last_successful_run().outcome == "FAILED"


def test_status_average_duration_and_current_run(project):
    scenario = project.get_scenario("PAUSE")
    status = scenario.get_status()
    assert isinstance(status, DSSScenarioStatus)
    assert status.running is False and status.next_run is None
    assert status.get_raw()["active"] is True
    assert scenario.get_average_duration(limit=50) is None  # fewer runs than the limit
    fire, run = running_run(scenario)
    status = scenario.get_status()
    assert status.running is True and status.get_raw()["start"] == run.get_info()["start"]
    current = scenario.get_current_run()
    assert current is not None and current.id == run.id
    assert run.id not in [r.id for r in scenario.get_last_runs(only_finished_runs=True)]
    scenario.abort()
    average = project.get_scenario("AVERAGE")
    for _ in range(2):
        average.run_and_wait()
    runs = average.get_last_runs(limit=2, only_finished_runs=True)
    expected = sum(r.duration for r in runs) / 2
    assert average.get_average_duration(limit=2) == pytest.approx(expected)
    assert 0.03 <= average.get_average_duration(limit=2) < 5


def test_abort_stops_the_current_run_and_its_job(project):
    scenario = project.get_scenario("LONG")
    assert scenario.abort()["aborted"] is False  # nothing running: does nothing
    fire, run = running_run(scenario)
    job_id = None
    deadline = time.monotonic() + 10
    while not job_id:
        steps = run.get_details().steps
        job_id = steps[0].job_ids[0] if steps and steps[0].job_ids else None
        assert time.monotonic() < deadline
    answer = scenario.abort()
    assert answer["aborted"] is True and answer["runId"] == run.id
    run.refresh()
    assert run.outcome == "ABORTED"
    assert run.get_details().steps[0].outcome == "ABORTED"
    assert project.get_job(job_id).get_status()["baseStatus"]["state"] == "ABORTED"
    with pytest.raises(DataikuException, match="Scenario run returned status ABORTED"):
        run.wait_for_completion()


def test_a_fire_while_the_scenario_runs_is_cancelled(project):
    scenario = project.get_scenario("PAUSE")
    first, run = running_run(scenario)
    late = scenario.run()
    # The answer comes before DSS settles the fire; the client learns of the cancellation on a
    # refresh (every 10th poll of wait_for_scenario_run).
    assert late.is_cancelled() is False
    settled(scenario, late)
    assert late.is_cancelled(refresh=True) is True
    assert late.get_scenario_run() is None
    assert scenario.get_trigger_fire(late.trigger_id, late.run_id).is_cancelled() is True
    with pytest.raises(DataikuException, match="Scenario run has been cancelled"):
        late.wait_for_scenario_run()
    assert late.wait_for_scenario_run(no_fail=True) is None
    assert scenario.get_current_run().id == run.id  # the first run goes on
    scenario.abort()


def test_error_paths(client, reader_client, project):
    missing = project.get_scenario("NOPE")
    for call in (missing.get_status, missing.run, missing.abort, missing.get_last_runs,
                 lambda: missing.get_run("2024-01-01-00-00-00-000"),
                 lambda: missing.get_trigger_fire("manual", "x")):
        with pytest.raises(DataikuException, match="NotFoundException: Scenario CONF.NOPE does not exist"):
            call()
    with pytest.raises(DataikuException, match="NotFoundException: Project NOPE does not exist"):
        client.get_project("NOPE").list_scenarios()
    with pytest.raises(DataikuException, match="NotFoundException: Scenario run 2024-01-01-00-00-00-000"):
        project.get_scenario("REFRESH").get_run("2024-01-01-00-00-00-000")
    with pytest.raises(DataikuException, match="NotFoundException: Trigger fire manual/nope"):
        project.get_scenario("REFRESH").get_trigger_fire("manual", "nope")
    reader = reader_client.get_project(PROJECT)
    assert {s["id"] for s in reader.list_scenarios()} >= {"REFRESH"}  # READ_CONF reads
    assert reader.get_scenario("REFRESH").get_status().running in (True, False)
    with pytest.raises(DataikuException, match="ForbiddenException: .*RUN_SCENARIOS"):
        reader.get_scenario("REFRESH").run()
    with pytest.raises(DataikuException, match="ForbiddenException: .*RUN_SCENARIOS"):
        reader.get_scenario("REFRESH").abort()
    with pytest.raises(DataikuException, match="ForbiddenException"):
        client.get_project("SECRET").list_scenarios()


def test_wire_forms_of_run_and_abort(emulator_url):
    # What the client sends: the params as a str body (no Content-Type), abort with no body; both
    # must answer JSON (the client parses every answer).
    base = emulator_url + f"/dip/publicapi/projects/{PROJECT}/scenarios/AVERAGE"
    req = requests.Request("POST", base + "/run", data="{}", auth=(FULL_KEY, "")).prepare()
    assert "Content-Type" not in req.headers
    with requests.Session() as s:
        resp = s.send(req, timeout=10)
    assert resp.status_code == 200 and resp.json()["cancelled"] is False
    fire = resp.json()
    # The order in the trigger path: /trigger/{scenarioId}/{triggerId}.
    again = requests.get(emulator_url + f"/dip/publicapi/projects/{PROJECT}/scenarios/trigger/AVERAGE/manual",
                         params={"triggerRunId": fire["runId"]}, auth=(FULL_KEY, ""), timeout=10)
    assert again.status_code == 200 and again.json()["runId"] == fire["runId"]
    abort = requests.post(base + "/abort", auth=(FULL_KEY, ""), timeout=10)
    assert abort.status_code == 200 and abort.headers["Content-Type"].startswith("application/json")
    assert "aborted" in abort.json()
    # The documented prefix serves the same routes.
    listed = requests.get(emulator_url + f"/public/api/projects/{PROJECT}/scenarios/", auth=(FULL_KEY, ""), timeout=10)
    assert listed.status_code == 200 and any(s["id"] == "AVERAGE" for s in listed.json())
