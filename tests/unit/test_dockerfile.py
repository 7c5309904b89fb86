"""Static checks of the Dockerfile (no container engine here to build it): a pinned base, a
multi-stage build that installs only the built wheels, a numeric non-root user, nothing fetched
by ADD, no secrets, OCI labels, and the `/manager` entry the official manifests call."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    parsed = []
    for line in lines:
        keyword, _, arguments = line.partition(" ")
        parsed.append(Instruction(keyword.upper(), arguments.strip()))
    return parsed


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return instructions((REPO / "Dockerfile").read_text())


def global_args(dockerfile: list[Instruction]) -> dict[str, str]:
    """The ARGs before the first FROM (usable in FROM lines), with their defaults."""
    found: dict[str, str] = {}
    for instruction in dockerfile:
        if instruction.keyword == "FROM":
            break
        name, _, default = instruction.arguments.partition("=")
        found[name] = default
    return found


def stages(dockerfile: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in dockerfile:
        if instruction.keyword == "FROM":
            result.append([])
        if not result and instruction.keyword == "ARG":
            continue  # a global ARG, for the FROM lines
        assert result, f"{instruction.keyword} before the first FROM"
        result[-1].append(instruction)
    return result


def final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    return stages(dockerfile)[-1]


def test_multi_stage_with_a_pinned_slim_python_base(dockerfile: list[Instruction]) -> None:
    froms = [i.arguments.split()[0] for i in dockerfile if i.keyword == "FROM"]
    assert len(froms) >= 2, "a build stage and a runtime stage"
    # The one ARG allowed in FROM is BASE (make image builds on a local base where Docker Hub is
    # unreachable); its default, what `docker build .` uses, is the pinned official image.
    assert set(global_args(dockerfile)) <= {"BASE"}
    for written in froms:
        image = global_args(dockerfile)["BASE"] if written in ("${BASE}", "$BASE") else written
        assert "$" not in image, "only the BASE argument, with a pinned default"
        name, _, tag = image.partition("@")[0].partition(":")
        assert name in ("python", "docker.io/library/python"), image
        assert re.fullmatch(r"3\.1[1-9]\.\d+-slim-(bookworm|trixie)", tag), f"{image}: pin a full version"
    assert len(set(froms)) == 1, "build and runtime on the same base, so the wheels fit"


def test_final_stage_installs_only_the_built_wheels(dockerfile: list[Instruction]) -> None:
    build, final = stages(dockerfile)[0], final_stage(dockerfile)
    assert any("pip wheel" in i.arguments for i in build if i.keyword == "RUN")
    assert not [i for i in final if i.keyword in ("COPY", "ADD")], "nothing of the source tree in the image"
    (install,) = [i for i in final if i.keyword == "RUN" and "pip install" in i.arguments]
    assert "--mount=type=bind,from=build" in install.arguments
    assert "--no-index" in install.arguments  # nothing fetched from an index in the runtime stage
    assert re.search(r"pip install [^&]*\bopsync\b", install.arguments)


def test_runs_as_a_numeric_non_root_user(dockerfile: list[Instruction]) -> None:
    final = final_stage(dockerfile)
    users = [i.arguments for i in final if i.keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: numeric, so runAsNonRoot can verify it"
    assert all(int(part) != 0 for part in user.split(":"))
    keywords = [i.keyword for i in final]
    assert keywords.index("USER") > max(k for k, i in enumerate(final) if i.keyword == "RUN")


def test_entrypoint_is_opsync_run_and_works_read_only(dockerfile: list[Instruction]) -> None:
    final = final_stage(dockerfile)
    (entrypoint,) = [i.arguments for i in final if i.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["opsync", "run"]
    environment = " ".join(i.arguments for i in final if i.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in environment  # read-only root filesystem
    exposed = {p for i in final if i.keyword == "EXPOSE" for p in i.arguments.split()}
    assert exposed == {"8080", "8081"}  # /metrics, /healthz + /readyz: the chart's defaults


def test_no_add_no_downloads_no_secrets(dockerfile: list[Instruction]) -> None:
    assert not [i for i in dockerfile if i.keyword == "ADD"], "use COPY; ADD can fetch URLs and unpack"
    for instruction in dockerfile:
        if instruction.keyword == "RUN":
            assert not re.search(r"\b(curl|wget)\b|https?://", instruction.arguments), instruction
        if instruction.keyword in ("ENV", "ARG"):
            assert not re.search(r"TOKEN|PASSWORD|SECRET|CREDENTIAL|_KEY\b", instruction.arguments, re.I), (
                instruction
            )
        if instruction.keyword == "COPY":
            assert not re.search(r"\.run|kubeconfig|\.env\b|token", instruction.arguments), instruction


def test_oci_labels(dockerfile: list[Instruction]) -> None:
    labels = " ".join(i.arguments for i in final_stage(dockerfile) if i.keyword == "LABEL")
    keys = set(re.findall(r"(org\.opencontainers\.image\.[a-z.]+)=", labels))
    assert {
        "org.opencontainers.image.title",
        "org.opencontainers.image.description",
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.licenses",
    } <= keys
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels


def test_dockerignore_sends_only_the_package(tmp_path: Path) -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "exclude everything, then let in what the build reads"
    assert {line[1:] for line in lines if line.startswith("!")} == {
        "pyproject.toml",
        "README.md",
        "operator/",
    }


def test_manager_entry_runs_opsync_run(dockerfile: list[Instruction], tmp_path: Path) -> None:
    """The official manifests run `/manager --leader-elect ...`: the image's /manager must be
    `opsync run` with those arguments. Run the same printf, then the script it writes, with a
    stand-in `opsync` that prints its arguments."""
    (install,) = [
        i.arguments for i in final_stage(dockerfile) if i.keyword == "RUN" and "/manager" in i.arguments
    ]
    match = re.search(r"printf ('(?:[^']*)') > /manager", install)
    assert match, "/manager is written with printf"
    assert "chmod 0555 /manager" in install
    manager = tmp_path / "manager"
    subprocess.run(["/bin/sh", "-c", f"printf {match.group(1)} > {shlex.quote(str(manager))}"], check=True)
    manager.chmod(0o555)
    assert manager.stat().st_mode & stat.S_IXOTH
    fake = tmp_path / "bin" / "opsync"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintf "%s|" "$@"\n')
    fake.chmod(0o755)
    result = subprocess.run(
        [str(manager), "--leader-elect", "--zap-log-level=debug"],
        env={**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "run|--leader-elect|--zap-log-level=debug|"
