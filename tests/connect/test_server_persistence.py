"""The data file: filled in and written back, durable across restarts and ``kill -9``, precise errors."""

from __future__ import annotations

import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from opsync.cli import main
from opsync.tooling.connectserver import ConnectServer, DataFileError

K8S = "kubernetesvault00000000001"
DB = "dbcredentials0000000000001"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "connect-data.yaml"


async def test_missing_file_starts_empty_and_is_created(tmp_path, caplog, raw_http):
    path = tmp_path / "absent.yaml"
    caplog.set_level(logging.INFO, logger="opsync.tooling.connectserver")
    async with ConnectServer(path) as server:
        assert server.store.vaults() == []
        assert "does not exist: starting with no vaults" in caplog.text
        saved = yaml.safe_load(path.read_text())
        assert saved["vaults"] == []
        assert re.match(r"^[A-Z0-9]{26}$", saved["server"]["id"])
        assert "BEGIN PRIVATE KEY" in saved["server"]["signingKey"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        reply = await raw_http(server, None).get("/heartbeat")
        assert reply.status == 200


async def test_empty_file_starts_empty(tmp_path, caplog):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    caplog.set_level(logging.INFO, logger="opsync.tooling.connectserver")
    async with ConnectServer(path) as server:
        assert server.store.vaults() == []
    assert "is empty: starting with no vaults" in caplog.text


async def test_ids_versions_and_timestamps_are_filled_in_and_written_back(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text(
        "vaults:\n"
        "  - name: Hand Written\n"
        "    items:\n"
        "      - title: login\n"
        "        category: login\n"
        "        fields:\n"
        "          - label: password\n"
        "            purpose: PASSWORD\n"
        "            generate: true\n"
        "            recipe: {length: 12, characterSets: [DIGITS]}\n"
        "          - {label: note, value: 'multi\n\n  line', section: {id: Section_a}}\n"
        "        files:\n"
        '          - {name: cert.pem, content: "-----BEGIN-----\\nabc\\n"}\n'
        "          - {name: raw.bin, content_base64: AAEC/w==}\n"
    )
    os.chmod(path, 0o640)
    async with ConnectServer(path) as server:
        vault = server.store.get_vault("Hand Written")
        item = vault.items[0]
        password = item.fields[0].value
    assert re.match(r"^\d{12}$", password)
    text = path.read_text()
    saved = yaml.safe_load(text)
    stored = saved["vaults"][0]["items"][0]
    assert re.match(r"^[a-z0-9]{26}$", saved["vaults"][0]["id"])
    assert saved["vaults"][0]["contentVersion"] == 1
    assert re.match(r"^[a-z0-9]{26}$", stored["id"])
    assert stored["version"] == 1
    assert stored["category"] == "LOGIN"
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z$", stored["createdAt"])
    assert stored["fields"][0]["value"] == password
    assert "generate" not in stored["fields"][0]
    assert stored["sections"] == [{"id": "Section_a"}]
    assert stored["files"][0] == {
        "id": stored["files"][0]["id"],
        "name": "cert.pem",
        "content": "-----BEGIN-----\nabc\n",
    }
    assert stored["files"][1]["content_base64"] == "AAEC/w=="
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [entry.name for entry in tmp_path.iterdir()] == ["data.yaml"]

    async with ConnectServer(path) as again:
        assert again.store.get_item("Hand Written", "login").fields[0].value == password
    assert path.read_text() == text


async def test_writes_survive_a_restart_with_the_same_token(connect_server_factory, raw_http):
    first = await connect_server_factory(
        {
            "vaults": [
                {"id": K8S, "name": "Kubernetes", "items": [{"id": DB, "title": "db", "category": "LOGIN"}]}
            ]
        }
    )
    token = first.issue_token(["Kubernetes"])
    api = raw_http(first, token)
    created = (await api.post(f"/v1/vaults/{K8S}/items", {"title": "kept", "category": "PASSWORD"})).json()
    await api.patch(f"/v1/vaults/{K8S}/items/{DB}", [{"op": "add", "path": "/tags/-", "value": "after"}])
    await first.stop()

    second = await connect_server_factory(path=first.data_path)
    api = raw_http(second, token)
    vault = (await api.get(f"/v1/vaults/{K8S}")).json()
    assert (vault["contentVersion"], vault["items"]) == (3, 2)
    kept = (await api.get(f"/v1/vaults/{K8S}/items/{created['id']}")).json()
    assert {key: kept[key] for key in ("title", "version", "createdAt")} == {
        "title": "kept",
        "version": 1,
        "createdAt": created["createdAt"],
    }
    db = (await api.get(f"/v1/vaults/{K8S}/items/{DB}")).json()
    assert (db["version"], db["tags"]) == (2, ["after"])


def _start_process(data: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    handle = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "opsync", "connect-server", "--data", str(data), "--port", "0", "--quiet"],
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    while True:
        found = re.search(r"listening on (http://\S+)", log.read_text())
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            pytest.fail(f"connect-server exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.02)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["connect-server", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_kill_9_right_after_an_acknowledged_write_loses_nothing(tmp_path, http_session, capsys):
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"vaults": [{"id": K8S, "name": "Kubernetes"}]}))
    code, out, err = _cli(capsys, "issue-token", "--data", str(data), "--vault", "Kubernetes")
    assert code == 0, err
    token = out.strip()
    headers = {"Authorization": f"Bearer {token}"}

    process, url = _start_process(data, tmp_path / "first.log")
    try:
        async with http_session.post(
            f"{url}/v1/vaults/{K8S}/items",
            json={
                "title": "acknowledged",
                "category": "PASSWORD",
                "fields": [{"purpose": "PASSWORD", "value": "canary-kill"}],
            },
            headers=headers,
        ) as response:
            assert response.status == 200
            created = await response.json()
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL

    process, url = _start_process(data, tmp_path / "second.log")
    try:
        async with http_session.get(
            f"{url}/v1/vaults/{K8S}/items/{created['id']}", headers=headers
        ) as response:
            assert response.status == 200
            item = await response.json()
        async with http_session.get(f"{url}/v1/vaults/{K8S}", headers=headers) as response:
            vault = await response.json()
    finally:
        process.terminate()
        process.wait()
    assert item["title"] == "acknowledged"
    assert item["fields"][0]["value"] == "canary-kill"
    assert (vault["contentVersion"], vault["items"]) == (2, 1)
    assert "canary-kill" not in (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()


def test_cli_reports_an_invalid_data_file_and_exits_1(tmp_path, capsys, caplog):
    data = tmp_path / "bad.yaml"
    data.write_text("vaults:\n  - name: V\n    items:\n      - title: x\n        category: SPACESHIP\n")
    code, _, _ = _cli(capsys, "--data", str(data), "--port", "0")
    assert code == 1
    assert f"{data}:5: vaults[0].items[0].category: Value error, unknown item category" in caplog.text
    code, out, err = _cli(capsys, "issue-token", "--data", str(data), "--vault", "V")
    assert (code, out) == (1, "")
    assert "bad.yaml:5:" in err


def test_cli_issue_token(tmp_path, capsys):
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"vaults": [{"name": "A"}, {"name": "B"}]}))
    code, out, _ = _cli(capsys, "issue-token", "--data", str(data), "--vault", "A,r", "--vault", "B,w")
    assert code == 0
    assert out.count(".") == 2 and out.endswith("\n")
    code, everything, _ = _cli(
        capsys, "issue-token", "--data", str(data), "--all-vaults", "--expires-in", "60"
    )
    assert code == 0
    assert everything.count(".") == 2
    code, _, err = _cli(capsys, "issue-token", "--data", str(data), "--vault", "Nope")
    assert code == 1
    assert "no vault with id or name 'Nope'" in err
    assert _cli(capsys, "issue-token", "--data", str(data))[0] == 2
    assert _cli(capsys, "--port", "0")[0] == 2
    assert _cli(capsys, "--data", str(data), "--error-rate", "2")[0] == 2


async def test_cli_tokens_work_on_the_running_server(tmp_path, capsys, raw_http):
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"vaults": [{"id": K8S, "name": "Kubernetes"}]}))
    async with ConnectServer(data) as server:
        code, out, _ = _cli(capsys, "issue-token", "--data", str(data), "--vault", "Kubernetes,r")
        assert code == 0
        api = raw_http(server, out.strip())
        assert (await api.get(f"/v1/vaults/{K8S}")).status == 200
        assert (await api.post(f"/v1/vaults/{K8S}/items", {"category": "LOGIN"})).status == 401


INVALID_FILES = {
    "wrong type names the line": (
        "vaults:\n  - name: V\n    items:\n      - title: t\n        category: LOGIN\n"
        "        fields:\n          - label: pin\n            value: 918273645\n",
        "{path}:8: vaults[0].items[0].fields[0].value: Input should be a valid string (quote it in YAML",
    ),
    "missing required key names its parent's line": (
        "vaults:\n  - name: V\n    items:\n      - title: no category\n",
        "{path}:4: vaults[0].items[0].category: Field required",
    ),
    "unknown key": (
        "vaults:\n  - name: V\n    colour: canary-ultraviolet\n",
        "{path}:3: vaults[0].colour: Extra inputs are not permitted",
    ),
    "bad id": (
        "vaults:\n  - name: V\n    id: NOT-AN-ID\n",
        "{path}:3: vaults[0].id: String should match pattern",
    ),
    "duplicate item ids": (
        "vaults:\n  - name: V\n    items:\n      - {id: aaaaaaaaaaaaaaaaaaaaaaaaaa, category: LOGIN}\n"
        "  - name: W\n    items:\n      - {id: aaaaaaaaaaaaaaaaaaaaaaaaaa, category: LOGIN}\n",
        "{path}:1: (top level): Value error, duplicate item id 'aaaaaaaaaaaaaaaaaaaaaaaaaa'",
    ),
    "duplicate key": (
        "vaults:\n  - name: V\n    name: W\n",
        "{path}:3: vaults[0].name: duplicate key",
    ),
    "yaml syntax": (
        "vaults:\n  - name: V\n   items: [\n",
        "{path}:3:",
    ),
    "bad base64": (
        "vaults:\n  - name: V\n    items:\n      - category: LOGIN\n        files:\n"
        "          - {name: f, content_base64: 'c2VjcmV0-not base64!'}\n",
        "{path}:6: vaults[0].items[0].files[0]: Value error, content_base64 is not valid base64",
    ),
    "not a mapping": ("- just\n- a list\n", "{path}:1: the data file must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(INVALID_FILES))
async def test_invalid_data_file_message_names_line_and_key(tmp_path, case):
    text, expected = INVALID_FILES[case]
    path = tmp_path / "data.yaml"
    path.write_text(text)
    server = ConnectServer(path)
    with pytest.raises(DataFileError) as raised:
        await server.start()
    message = str(raised.value)
    assert expected.format(path=path) in message
    for secret in ("918273645", "c2VjcmV0", "canary"):
        assert secret not in message
    assert path.read_text() == text


async def test_the_example_data_file_loads(tmp_path):
    example = EXAMPLE
    copy = tmp_path / "connect-data.yaml"
    copy.write_text(example.read_text())
    async with ConnectServer(copy) as server:
        assert [vault.name for vault in server.store.vaults()] == ["Kubernetes", "Platform"]
        registry = server.store.get_item("Platform", "registry-credentials")
        assert len(registry.field("password").value) == 24
        assert (
            server.store.get_item("Kubernetes", "test26charlongitemtitle123").id
            == "longtitledemo000000000001a"
        )
        ca = server.store.get_item("Kubernetes", "db-credentials").files[0]
        assert ca.content.startswith(b"-----BEGIN CERTIFICATE-----\n")
    assert example.read_text() != copy.read_text()


async def test_file_bytes_round_trip_through_the_data_file(connect_server, connect_server_factory, raw_http):
    await connect_server.store.update_item(
        "Kubernetes",
        "db-credentials",
        files={"crlf.txt": b"a\r\nb", "tail.txt": b"x  \n\n\n", "bom.txt": "\ufeffz".encode()},
    )
    before = connect_server.store.get_item("Kubernetes", "db-credentials")
    await connect_server.stop()
    again = await connect_server_factory(path=connect_server.data_path)
    after = again.store.get_item("Kubernetes", "db-credentials")
    assert [(file.name, file.content) for file in after.files] == [
        (file.name, file.content) for file in before.files
    ]
    assert after.files[1].content == bytes(range(256))


async def test_item_json_from_the_api_can_be_pasted_into_the_data_file(connect_server, server_api, tmp_path):
    item = (
        await server_api.get("/v1/vaults/platformvault0000000000001/items/apitoken000000000000000001")
    ).json()
    files = (await server_api.get(f"/v1/vaults/{K8S}/items/{DB}")).json()["files"]
    pasted = {**item, "files": [{**file, "content_base64": "aGk="} for file in files]}
    path = tmp_path / "pasted.yaml"
    path.write_text(yaml.safe_dump({"vaults": [{"name": "Pasted", "items": [pasted]}]}, allow_unicode=True))
    async with ConnectServer(path) as server:
        loaded = server.store.get_item("Pasted", "api-token")
    assert loaded.id == item["id"]
    assert [field.id for field in loaded.fields] == ["credential", "otp"]
    assert [file.content for file in loaded.files] == [b"hi", b"hi"]
