"""Every job method of the official client, against the emulator."""

import datetime
import warnings

import pytest
from dataikuapi.dss.job import DSSJob, DSSJobListItem, DSSJobWaiter
from dataikuapi.utils import DataikuException

from conftest import PROJECT, TERMINAL, wait_state


def start_slow(project):
    return project.start_job({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "slow", "type": "DATASET"}]})


def test_start_job_returns_a_job_handle_with_a_server_assigned_id(project):
    job = project.start_job({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "quick", "type": "DATASET", "partition": "NP"}]})
    assert isinstance(job, DSSJob)
    assert job.project_key == PROJECT
    assert job.id.startswith("build_quick_NP_")
    assert wait_state(job) == "DONE"


def test_status_document_shape(project, admin):
    job = start_slow(project)
    status = job.get_status()
    base = status["baseStatus"]
    assert base["state"] in ("NOT_STARTED", "RUNNING")
    assert base["stableState"] is False
    assert base["endTime"] == 0
    assert base["def"]["id"] == job.id
    assert base["def"]["projectKey"] == PROJECT
    assert base["def"]["initiator"] == "API (conformance)"
    assert base["def"]["triggeredFrom"] == "API"
    assert base["def"]["outputs"][0]["targetDataset"] == "slow"
    assert base["def"]["outputs"][0]["targetPartition"] == "NP"
    assert status["globalState"]["total"] == 1
    assert list(status["activities"]) == ["compute_slow_NP"]
    admin.finish(PROJECT, job.id, "DONE", warnings=3)
    status = job.get_status()
    assert status["baseStatus"]["state"] == "DONE"
    assert status["baseStatus"]["stableState"] is True
    assert status["baseStatus"]["endTime"] >= status["baseStatus"]["startTime"] > 0
    assert status["baseStatus"]["warningsCount"] == 3
    assert status["globalState"]["done"] == 1


def test_start_job_and_wait_returns_the_state_string(project):
    state = project.start_job_and_wait({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "quick"}]})
    assert state == "DONE"


def test_start_job_and_wait_raises_on_failure_unless_no_fail(project):
    definition = {"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "failing", "type": "DATASET"}]}
    with pytest.raises(DataikuException, match="Job run did not finish. Status: FAILED"):
        project.start_job_and_wait(definition)
    assert project.start_job_and_wait(definition, no_fail=True) == "FAILED"


def test_list_jobs_as_listitems_and_objects(project):
    job = project.start_job({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "quick"}]})
    wait_state(job)
    items = project.list_jobs()
    assert all(isinstance(i, DSSJobListItem) for i in items)
    newest = items[0]
    assert newest.job_id == job.id
    assert newest.project_key == PROJECT
    assert newest["state"] == "DONE"
    assert newest["stableState"] is True
    assert isinstance(newest.start_time, datetime.datetime) and newest.start_time.tzinfo is not None
    assert isinstance(newest.end_time, datetime.datetime)
    assert newest.to_job().get_status()["baseStatus"]["def"]["id"] == job.id
    # The documented fields, read the way the documentation's examples read them.
    assert newest["def"]["id"] == job.id
    assert newest["def"]["initiationTimestamp"] > 0
    assert isinstance(newest["warningsCount"], int)
    objects = project.list_jobs(as_type="objects")
    assert all(isinstance(o, DSSJob) for o in objects)
    assert objects[0].id == job.id
    with pytest.raises(ValueError, match="Unknown as_type"):
        project.list_jobs(as_type="bogus")


def test_list_items_never_carry_null_keys(project):
    project.start_job({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "quick"}]})
    for item in project.list_jobs() + project.list_running_jobs():
        assert all(v is not None for v in item.values()), item


def test_aborted_job_list_item_has_an_end_time(project, admin):
    job = start_slow(project)
    admin.finish(PROJECT, job.id, "ABORTED")
    item = next(i for i in project.list_jobs() if i.job_id == job.id)
    assert item["state"] == "ABORTED"
    assert item.end_time is not None


def test_list_running_jobs_of_a_project(project):
    slow = start_slow(project)
    done = project.start_job({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "quick"}]})
    wait_state(done)
    running = project.list_running_jobs()
    ids = [i.job_id for i in running]
    assert slow.id in ids and done.id not in ids
    assert all(i.project_key == PROJECT for i in running)
    assert [j.id for j in project.list_running_jobs(as_type="objects")] == ids
    slow.abort()
    assert slow.id not in [i.job_id for i in project.list_running_jobs()]


def test_instance_wide_running_jobs_and_all_users(client, second_client):
    mine = start_slow(client.get_project(PROJECT))
    theirs = start_slow(second_client.get_project(PROJECT))
    everyone = {i.job_id for i in client.list_running_jobs()}
    assert {mine.id, theirs.id} <= everyone
    only_mine = {i.job_id for i in client.list_running_jobs(all_users=False)}
    assert mine.id in only_mine and theirs.id not in only_mine
    items = client.list_running_jobs()
    assert all(i.project_key for i in items)
    assert {j.id for j in client.list_running_jobs(as_type="objects")} == everyone


def test_get_job_makes_no_call_and_unknown_jobs_fail_on_first_use(project):
    job = project.get_job("build_nothing_NP_2020-01-01T00-00-00.000")
    with pytest.raises(DataikuException, match="NotFoundException"):
        job.get_status()


def test_abort_returns_json_and_terminal_states_are_sticky(project, admin):
    job = start_slow(project)
    answer = job.abort()
    assert isinstance(answer, dict)
    assert job.get_status()["baseStatus"]["state"] == "ABORTED"
    again = job.abort()
    assert isinstance(again, dict)
    assert job.get_status()["baseStatus"]["state"] == "ABORTED"
    done = project.start_job({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "quick"}]})
    wait_state(done)
    done.abort()
    assert done.get_status()["baseStatus"]["state"] == "DONE"


def test_get_log_whole_and_per_activity(project):
    job = project.start_job({"type": "RECURSIVE_FORCED_BUILD", "outputs": [{"id": "downstream"}]})
    assert wait_state(job) == "DONE"
    activities = job.get_status()["activities"]
    # Upstream first: the flow order.
    assert sorted(activities, key=lambda a: (activities[a]["startTime"], activities[a]["endTime"])) == [
        "compute_quick_NP", "compute_downstream_NP",
    ]
    whole = job.get_log()
    assert isinstance(whole, str)
    assert "compute_quick_NP" in whole and "compute_downstream_NP" in whole
    # Decoded as UTF-8 by the client (the emulator sends a charset).
    assert "Übersetzung: naïve café ✓" in whole
    first = job.get_log(activity="compute_quick_NP")
    assert "compute_quick_NP" in first and "compute_downstream_NP" not in first
    for line in whole.strip().splitlines():
        assert line.startswith("[") and "] [" in line and " - " in line, line


def test_failing_log_ends_with_the_error_message(project):
    job = project.start_job({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "failing"}]})
    assert wait_state(job) == "FAILED"
    failed = [a for a, s in job.get_status()["activities"].items() if s["state"] == "FAILED"]
    assert failed == ["compute_failing_NP"]
    log = job.get_log(activity=failed[0])
    assert log.strip().splitlines()[-1].endswith("Job failed: simulated failure in compute_failing")


def test_job_waiter(project, admin):
    job = start_slow(project)
    admin.finish(PROJECT, job.id, "FAILED", message="stopped by the test")
    with pytest.raises(DataikuException, match="Status: FAILED"):
        DSSJobWaiter(job).wait()
    assert DSSJobWaiter(job).wait(no_fail=True) == "FAILED"
    ok = project.start_job({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "quick"}]})
    assert DSSJobWaiter(ok).wait() == "DONE"


def test_waiter_sees_an_abort(project, admin):
    job = start_slow(project)
    job.abort()
    with pytest.raises(DataikuException, match="Status: ABORTED"):
        DSSJobWaiter(job).wait()


def test_job_definition_builder_all_knobs(project, admin):
    builder = (
        project.new_job("RECURSIVE_BUILD")
        .with_type("RECURSIVE_FORCED_BUILD")
        .with_refresh_metastore(True)
        .with_output("quick", object_type="DATASET", object_project_key=PROJECT, partition="NP")
        .with_output("Fold3r1d", object_type="MANAGED_FOLDER")
        .with_output("SmId1234", object_type="SAVED_MODEL", object_project_key="OTHER")
        .with_output("stream1", object_type="STREAMING_ENDPOINT")
        .with_output("mes1", object_type="MODEL_EVALUATION_STORE")
        .with_output("kb1", object_type="RETRIEVABLE_KNOWLEDGE")
        .with_auto_update_schema_before_each_recipe_run(True)
    )
    definition = builder.get_definition()
    assert definition["type"] == "RECURSIVE_FORCED_BUILD"
    job = builder.start()
    stored = job.get_status()["baseStatus"]["def"]
    assert stored["type"] == "RECURSIVE_FORCED_BUILD"
    assert stored["refreshHiveMetastore"] is True
    assert stored["autoUpdateSchemaBeforeEachRecipeRun"] is True
    assert [o["type"] for o in stored["outputs"]] == [
        "DATASET", "MANAGED_FOLDER", "SAVED_MODEL", "STREAMING_ENDPOINT", "MODEL_EVALUATION_STORE", "RETRIEVABLE_KNOWLEDGE",
    ]
    assert stored["outputs"][2]["targetDatasetProjectKey"] == "OTHER"
    assert wait_state(job) == "DONE"


def test_builder_with_nulls_and_start_and_wait(project):
    job = project.new_job().with_output("quick").start_and_wait()
    assert isinstance(job, DSSJob)
    assert job.get_status()["baseStatus"]["state"] == "DONE"
    with pytest.raises(DataikuException, match="Status: FAILED"):
        project.new_job().with_output("failing").start_and_wait()
    failed = project.new_job().with_output("failing").start_and_wait(no_fail=True)
    assert failed.get_status()["baseStatus"]["state"] == "FAILED"


def test_deprecated_builder_entry_point(project):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        builder = project.new_job_definition_builder()
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert builder.with_output("quick").start_and_wait().get_status()["baseStatus"]["state"] == "DONE"


def test_recursive_build_types_follow_the_flow(project, admin):
    forced = project.new_job("RECURSIVE_FORCED_BUILD").with_output("downstream").start()
    wait_state(forced)
    assert len(forced.get_status()["activities"]) == 2
    # Everything is built now: a smart build has nothing to do.
    smart = project.new_job("RECURSIVE_BUILD").with_output("downstream").start()
    assert wait_state(smart) == "DONE"
    assert smart.get_status()["globalState"]["total"] == 0
    missing = project.new_job("RECURSIVE_MISSING_ONLY_BUILD").with_output("downstream").start()
    assert wait_state(missing) == "DONE"
    single = project.new_job("NON_RECURSIVE_FORCED_BUILD").with_output("downstream").start()
    assert list(single.get_status()["activities"]) == ["compute_downstream_NP"]
    wait_state(single)


def test_job_ids_are_unique_under_bursts(project):
    jobs = [project.new_job().with_output("slow").start() for _ in range(20)]
    assert len({j.id for j in jobs}) == 20
    for j in jobs:
        j.abort()


def test_terminal_states_only(project):
    job = project.new_job().with_output("quick").start()
    seen = set()
    while True:
        state = job.get_status()["baseStatus"]["state"]
        seen.add(state)
        if state in TERMINAL:
            break
    assert seen <= {"NOT_STARTED", "RUNNING", "DONE"}
