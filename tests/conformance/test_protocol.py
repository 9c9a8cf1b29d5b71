"""Wire-level properties the official client depends on, checked with raw HTTP so that a change in
the emulator that the client would trip over fails here explicitly: abort answers JSON (never
204), no Content-Type is required, the state is where the client reads it, both prefixes and the
lenient path variants work, logs carry a UTF-8 charset."""

import json

import requests

from conftest import FULL_KEY, PROJECT

AUTH = (FULL_KEY, "")


def url(base, path, prefix="/dip/publicapi"):
    return base + prefix + path


def start_raw(base, output="slow", prefix="/dip/publicapi"):
    # Exactly what the client sends: a str body via `data=`, hence no Content-Type header.
    req = requests.Request(
        "POST", url(base, f"/projects/{PROJECT}/jobs/", prefix), data=json.dumps({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": output}]}), auth=AUTH
    ).prepare()
    assert "Content-Type" not in req.headers
    with requests.Session() as s:
        resp = s.send(req, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_start_without_content_type_returns_the_definition_with_an_id(emulator_url):
    body = start_raw(emulator_url)
    assert body["id"].startswith("build_slow_NP_")
    assert body["outputs"][0]["targetDataset"] == "slow"
    assert body["initiator"] == "API (conformance)"


def test_abort_without_body_or_content_type_answers_json_not_204(emulator_url):
    job_id = start_raw(emulator_url)["id"]
    for path in (f"/projects/{PROJECT}/jobs/{job_id}/abort", f"/projects/{PROJECT}/jobs/{job_id}/abort/"):
        req = requests.Request("POST", url(emulator_url, path), auth=AUTH).prepare()
        assert "Content-Type" not in req.headers and req.headers.get("Content-Length") == "0"
        with requests.Session() as s:
            resp = s.send(req, timeout=10)
        assert resp.status_code == 200
        assert resp.content, "abort must answer a JSON body"
        assert isinstance(resp.json(), dict)


def test_state_is_under_base_status_and_at_the_top_of_list_items(emulator_url):
    job_id = start_raw(emulator_url)["id"]
    status = requests.get(url(emulator_url, f"/projects/{PROJECT}/jobs/{job_id}/"), auth=AUTH, timeout=10).json()
    assert isinstance(status["baseStatus"], dict)
    assert status["baseStatus"]["state"] in ("NOT_STARTED", "RUNNING")
    assert "state" not in status, "the client reads baseStatus.state only"
    items = requests.get(url(emulator_url, f"/projects/{PROJECT}/jobs/"), auth=AUTH, timeout=10).json()
    item = next(i for i in items if i["def"]["id"] == job_id)
    assert item["state"] in ("NOT_STARTED", "RUNNING")
    assert item["stableState"] is False
    requests.post(url(emulator_url, f"/projects/{PROJECT}/jobs/{job_id}/abort"), auth=AUTH, timeout=10)


def test_both_prefixes_and_path_variants(emulator_url):
    job_id = start_raw(emulator_url, output="quick", prefix="/public/api")["id"]
    for prefix in ("/public/api", "/dip/publicapi"):
        for path in (
            "/projects/", "/projects", f"/projects/{PROJECT}", f"/projects/{PROJECT}/jobs/", f"/projects/{PROJECT}/jobs",
            f"/projects/{PROJECT}/jobs/{job_id}/", f"/projects/{PROJECT}/jobs/{job_id}",
            f"/projects/{PROJECT}/jobs/{job_id}/log", f"/projects/{PROJECT}/jobs/{job_id}/log/",
            "/jobs/running/?allUsers=true", "/jobs/running/?allUsers=FALSE", "/auth/info", "/instance-info",
            f"/projects/{PROJECT}/flow/graph/", f"/projects/{PROJECT}/datasets/?foreign=False",
        ):
            resp = requests.get(url(emulator_url, path, prefix), auth=AUTH, timeout=10)
            assert resp.status_code == 200, (prefix, path, resp.status_code, resp.text)
            assert resp.headers["DSS-Version"] == "14.2.0"
    leading = requests.get(emulator_url + "//public/api/projects/", auth=AUTH, timeout=10)
    assert leading.status_code == 200


def test_log_content_type_has_a_utf8_charset(emulator_url):
    job_id = start_raw(emulator_url, output="quick")["id"]
    resp = requests.get(url(emulator_url, f"/projects/{PROJECT}/jobs/{job_id}/log"), auth=AUTH, timeout=10)
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_errors_are_json_with_error_type_message_and_detailed_message(emulator_url):
    cases = [
        (requests.get(url(emulator_url, "/projects/"), timeout=10), 401),
        (requests.get(url(emulator_url, "/projects/"), auth=("nope", ""), timeout=10), 401),
        (requests.get(url(emulator_url, "/projects/"), headers={"Authorization": "Basic !!!not-base64"}, timeout=10), 401),
        (requests.get(url(emulator_url, "/projects/SECRET/jobs/"), auth=AUTH, timeout=10), 403),
        (requests.get(url(emulator_url, "/projects/NOPE/jobs/"), auth=AUTH, timeout=10), 404),
        (requests.get(url(emulator_url, f"/projects/{PROJECT}/jobs/nope/"), auth=AUTH, timeout=10), 404),
        (requests.post(url(emulator_url, f"/projects/{PROJECT}/jobs/"), data="{not json", auth=AUTH, timeout=10), 400),
        (requests.post(url(emulator_url, f"/projects/{PROJECT}/jobs/"), data="", auth=AUTH, timeout=10), 400),
        (requests.post(url(emulator_url, f"/projects/{PROJECT}/jobs/"), data="[1,2]", auth=AUTH, timeout=10), 400),
        (requests.post(url(emulator_url, f"/projects/{PROJECT}/jobs/"), data='{"outputs":[{"id":"quick","partition":5}]}', auth=AUTH, timeout=10), 400),
        (requests.post(url(emulator_url, f"/projects/{PROJECT}/jobs/"), data="x" * (2 * 1024 * 1024), auth=AUTH, timeout=10), 413),
        (requests.get(url(emulator_url, "/no/such/endpoint"), auth=AUTH, timeout=10), 404),
        (requests.delete(url(emulator_url, "/projects/"), auth=AUTH, timeout=10), 405),
        (requests.get(url(emulator_url, "/jobs/running/?allUsers=maybe"), auth=AUTH, timeout=10), 400),
    ]
    for resp, status in cases:
        assert resp.status_code == status, (resp.request.method, resp.request.url, resp.status_code, resp.text)
        body = resp.json()
        assert set(body) >= {"errorType", "message", "detailedMessage"}, body


def test_partition_as_string_or_array(emulator_url):
    for partition in ("2024-03-01", ["2024-03-02", "2024-03-03"]):
        body = json.dumps({"type": "NON_RECURSIVE_FORCED_BUILD", "outputs": [{"id": "daily", "type": "DATASET", "partition": partition}]})
        resp = requests.post(url(emulator_url, f"/projects/{PROJECT}/jobs/"), data=body, auth=AUTH, timeout=10)
        assert resp.status_code == 200, resp.text


def test_stats_count_routes_by_template(emulator_url, admin):
    before = admin.stats()
    start_raw(emulator_url, output="quick")
    after = admin.stats()
    key = "POST /projects/{pk}/jobs/"
    assert after["requestsByRoute"].get(key, 0) == before["requestsByRoute"].get(key, 0) + 1
    assert after["jobsStarted"] == before["jobsStarted"] + 1


def test_the_admin_api_is_not_served_to_dss_callers(emulator_url, admin_url):
    # The suite runs the emulator as the chart's sandbox does: the admin API on a listener of its own.
    assert requests.get(admin_url + "/__emulator/healthz", timeout=10).json() == {"ok": True}
    for path in ("/__emulator/healthz", "/__emulator/jobs", "/__emulator/config"):
        resp = requests.get(emulator_url + path, auth=AUTH, timeout=10)
        assert resp.status_code == 404, (path, resp.status_code, resp.text)
    resp = requests.put(emulator_url + "/__emulator/faults", json={"outage": True}, timeout=10)
    assert resp.status_code == 404
    # And the admin listener serves no DSS API.
    resp = requests.get(admin_url + "/public/api/projects/", auth=AUTH, timeout=10)
    assert resp.status_code == 404
