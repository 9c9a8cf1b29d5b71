"""Authentication variants and error paths, as the official client reports them."""

import dataikuapi
import pytest
from dataikuapi.utils import DataikuException

from conftest import FULL_KEY, PROJECT


def test_bad_key_is_refused(emulator_url):
    bad = dataikuapi.DSSClient(emulator_url, api_key="not-a-key")
    with pytest.raises(DataikuException, match="UnauthorizedException: Invalid API key"):
        bad.list_project_keys()
    with pytest.raises(DataikuException, match="UnauthorizedException"):
        bad.get_project(PROJECT).list_jobs()


def test_bearer_and_ticket_authentication(emulator_url):
    bearer = dataikuapi.DSSClient(emulator_url, jwt_bearer_token=FULL_KEY)
    assert bearer.get_auth_info()["authIdentifier"] == "conformance"
    ticket = dataikuapi.DSSClient(emulator_url, internal_ticket=FULL_KEY)
    assert ticket.list_project_keys() == ["CONF", "OTHER"]


def test_extra_headers_and_trailing_slash_host(emulator_url):
    # A host with a trailing slash makes the client request `//dip/publicapi/...`.
    slashed = dataikuapi.DSSClient(emulator_url + "/", api_key=FULL_KEY, extra_headers={"X-Custom": "v1"})
    assert slashed.list_project_keys() == ["CONF", "OTHER"]
    job = slashed.get_project(PROJECT).new_job().with_output("quick").start_and_wait()
    assert job.get_status()["baseStatus"]["state"] == "DONE"


def test_missing_permission_names_it(reader_client):
    project = reader_client.get_project(PROJECT)
    assert project.list_jobs() is not None  # READ_CONF is enough to list
    with pytest.raises(DataikuException, match="ForbiddenException: .*RUN_JOBS"):
        project.new_job().with_output("quick").start()
    with pytest.raises(DataikuException, match="ForbiddenException: .*MONITOR_JOBS"):
        project.get_job("whatever").get_status()


def test_no_access_to_other_projects(client):
    with pytest.raises(DataikuException, match="ForbiddenException"):
        client.get_project("SECRET").list_jobs()


def test_unknown_project(client):
    with pytest.raises(DataikuException, match="NotFoundException: Project NOPE does not exist"):
        client.get_project("NOPE").list_jobs()
    with pytest.raises(DataikuException, match="NotFoundException"):
        client.get_project("NOPE").get_summary()


def test_unknown_job(project):
    job = project.get_job("build_missing_NP_2024-01-01T00-00-00.000")
    for call in (job.get_status, job.abort, job.get_log):
        with pytest.raises(DataikuException, match="NotFoundException: Job build_missing"):
            call()


def test_unknown_activity(project):
    job = project.new_job().with_output("quick").start_and_wait()
    with pytest.raises(DataikuException, match="NotFoundException: Activity nope"):
        job.get_log(activity="nope")


def test_unknown_output_and_bad_definitions(project):
    with pytest.raises(DataikuException, match="NotFoundException: DATASET CONF.no_such_dataset does not exist"):
        project.new_job().with_output("no_such_dataset", object_type="DATASET").start()
    with pytest.raises(DataikuException, match="BadRequestException: .*no outputs"):
        project.new_job().start()
    with pytest.raises(DataikuException, match="BadRequestException: Unknown job type"):
        project.new_job("NOT_A_BUILD_TYPE").with_output("quick").start()
    with pytest.raises(DataikuException, match="BadRequestException: .*unknown object type"):
        project.new_job().with_output("quick", object_type="TABLE").start()


def test_outage_and_injected_errors_surface_as_client_errors(client, admin):
    admin.set_faults(outage=True)
    with pytest.raises(DataikuException, match="Unknown error: <html>"):
        client.list_project_keys()
    admin.set_faults(errorRate=1.0, errorStatus=500)
    with pytest.raises(DataikuException, match="DKUException"):
        client.list_project_keys()
    admin.clear_faults()
    assert client.list_project_keys() == ["CONF", "OTHER"]


def test_a_lost_start_response_leaves_the_job_behind(project, admin):
    import requests

    before = len(admin.jobs(PROJECT))
    admin.set_faults(dropStartResponses=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        project.new_job().with_output("slow").start()
    jobs = admin.jobs(PROJECT)
    assert len(jobs) == before + 1
    lost = jobs[-1]
    assert lost["apiKeyId"] == "conformance" and lost["state"] in ("NOT_STARTED", "RUNNING")
    # The caller can find it again, as the operator's adopt-by-search does.
    assert lost["id"] in [i.job_id for i in project.list_running_jobs()]
    admin.set_faults(dropStartResponses=1, dropStartResponseMode="504")
    with pytest.raises(DataikuException, match="504 Gateway Time-out|504 Gateway Timeout"):
        project.new_job().with_output("quick").start()
    assert admin.stats()["faultsInjected"]["droppedStartResponses"] >= 2
