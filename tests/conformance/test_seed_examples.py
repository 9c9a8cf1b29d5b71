"""The examples from the DSS documentation's jobs page, run as written against the emulator."""

import time

from conftest import PROJECT, TERMINAL


def test_filter_failed_jobs_after_a_date(project):
    marker = project.start_job({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "quick", "type": "DATASET", "partition": "NP"}]})
    ts = marker.get_status()["baseStatus"]["def"]["initiationTimestamp"]
    failed_ids = [project.new_job().with_output("failing").start_and_wait(no_fail=True).id for _ in range(2)]
    jobs = project.list_jobs()
    failed = [job for job in jobs if job["state"] == "FAILED" and job["def"]["initiationTimestamp"] >= ts]
    assert {job["def"]["id"] for job in failed} == set(failed_ids)


def test_start_from_a_raw_definition_and_poll_until_terminal(project):
    definition = {"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "quick", "type": "DATASET", "partition": "NP"}]}
    job = project.start_job(definition)
    state = ""
    deadline = time.monotonic() + 20
    while state not in ("DONE", "ABORTED", "FAILED"):
        assert time.monotonic() < deadline
        state = job.get_status()["baseStatus"]["state"]
        time.sleep(0.05)
    assert state == "DONE"


def test_abort_every_job_still_being_processed(project, admin):
    for _ in range(3):
        project.new_job().with_output("slow").start()
    jobs = project.list_jobs()
    for job in jobs:
        if not job["stableState"]:
            project.get_job(job["def"]["id"]).abort()
    assert all(job["stableState"] for job in project.list_jobs())
    assert project.list_running_jobs() == []
    assert all(j["state"] in TERMINAL for j in admin.jobs(PROJECT))


def test_read_the_log_of_a_job(project):
    job = project.new_job().with_output("failing").start_and_wait(no_fail=True)
    log = job.get_log()
    assert "Job failed: simulated failure in compute_failing" in log
    assert "ValueError: bad row 7" in log
