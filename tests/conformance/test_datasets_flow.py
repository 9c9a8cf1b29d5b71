"""The project, dataset and flow calls a job builder makes, and the conveniences that start jobs."""

import pytest
from dataikuapi.dss.dataset import DSSDataset, DSSDatasetListItem
from dataikuapi.dss.job import DSSJob
from dataikuapi.utils import DataikuException

from conftest import PROJECT, wait_state


def test_list_project_keys_only_shows_readable_projects(client, reader_client, admin_client):
    assert client.list_project_keys() == ["CONF", "OTHER"]
    assert reader_client.list_project_keys() == ["CONF"]
    assert admin_client.list_project_keys() == ["CONF", "OTHER", "SECRET"]
    projects = client.list_projects(include_location=False)
    assert [p["projectKey"] for p in projects] == ["CONF", "OTHER"]


def test_project_summary(project):
    summary = project.get_summary()
    assert summary["projectKey"] == PROJECT
    assert summary["name"] == "Conformance"


def test_auth_info_reports_the_key_id(client, admin_client):
    info = client.get_auth_info()
    assert info["authIdentifier"] == "conformance"
    assert "groups" in info and "authSource" in info
    assert client.get_auth_info(with_secrets=True)["authIdentifier"] == "conformance"
    assert admin_client.get_auth_info()["authIdentifier"] == "admin"


def test_instance_info(client):
    info = client.get_instance_info()
    assert info.raw["dssVersion"] == "14.2.0"
    assert info.node_type == "DESIGN"
    assert info.node_id and info.node_name


def test_list_datasets(project):
    items = project.list_datasets()
    assert all(isinstance(i, DSSDatasetListItem) for i in items)
    names = [i.name for i in items]
    assert {"src", "quick", "downstream", "failing", "slow", "daily"} <= set(names)
    assert all(i.to_dataset().project_key == PROJECT for i in items)
    assert next(i for i in items if i.name == "quick").type == "Filesystem"
    assert [i.name for i in project.list_datasets(tags=["gold"])] == ["quick"]
    assert sorted(i.name for i in project.list_datasets(tags=["gold", "silver"])) == ["downstream", "quick"]
    objects = project.list_datasets(as_type="objects", include_shared=True)
    assert all(isinstance(o, DSSDataset) for o in objects)


def test_dataset_exists_settings_info_partitions(project):
    assert project.get_dataset("quick").exists() is True
    assert project.get_dataset("no_such_dataset").exists() is False
    settings = project.get_dataset("daily").get_settings()
    assert settings.get_raw()["type"] == "Filesystem"
    assert [d["name"] for d in settings.get_raw()["partitioning"]["dimensions"]] == ["day"]
    info = project.get_dataset("daily").get_info()
    assert info.get_raw()["partitioned"] is True
    project.get_dataset("downstream").build()
    built = project.get_dataset("downstream").get_info()
    assert built.is_last_build_successful is True
    assert built.last_build_end_time >= built.last_build_start_time
    assert "2024-01-01" in project.get_dataset("daily").list_partitions()


def test_dataset_build_waits_and_returns_a_job(project):
    job = project.get_dataset("quick").build()
    assert isinstance(job, DSSJob)
    assert job.get_status()["baseStatus"]["state"] == "DONE"


def test_dataset_build_with_a_partition_list(project):
    job = project.get_dataset("daily").build(partitions=["2024-01-02", "2024-01-03"])
    status = job.get_status()
    assert status["baseStatus"]["state"] == "DONE"
    assert sorted(status["activities"]) == ["compute_daily_2024-01-02", "compute_daily_2024-01-03"]
    assert status["baseStatus"]["def"]["outputs"][0]["targetPartition"] == "2024-01-02,2024-01-03"
    assert {"2024-01-02", "2024-01-03"} <= set(project.get_dataset("daily").list_partitions())


def test_dataset_build_without_waiting_and_failures(project):
    job = project.get_dataset("slow").build(wait=False)
    assert job.get_status()["baseStatus"]["state"] in ("NOT_STARTED", "RUNNING")
    job.abort()
    with pytest.raises(DataikuException, match="Status: FAILED"):
        project.get_dataset("failing").build()
    # The client ignores no_fail when waiting: a failure still raises.
    with pytest.raises(DataikuException, match="Status: FAILED"):
        project.get_dataset("failing").build(no_fail=True)


def test_flow_graph_and_recipe_run(project):
    graph = project.get_flow().get_graph()
    assert graph.nodes["compute_quick"]["successors"] == ["quick"]
    assert graph.nodes["quick"]["type"] == "COMPUTABLE_DATASET"
    sources = [n["ref"] for n in graph.get_source_computables()]
    assert "src" in sources
    job = project.get_recipe("compute_downstream").run()
    assert isinstance(job, DSSJob)
    status = job.get_status()
    assert status["baseStatus"]["state"] == "DONE"
    assert status["baseStatus"]["def"]["outputs"][0]["targetDataset"] == "downstream"
    with pytest.raises(DataikuException, match="Status: FAILED"):
        project.get_recipe("compute_failing").run()
    assert project.get_recipe("compute_failing").run(no_fail=True, wait=False).id.startswith("build_failing")


def test_recipe_run_with_partitions(project):
    job = project.get_recipe("compute_daily").run(partitions="2024-02-01,2024-02-02")
    assert sorted(job.get_status()["activities"]) == ["compute_daily_2024-02-01", "compute_daily_2024-02-02"]


def test_building_a_flow_source_does_nothing(project):
    job = project.new_job().with_output("src").start()
    assert wait_state(job) == "DONE"
    assert job.get_status()["globalState"]["total"] == 0
    assert "flow source" in job.get_log()
