"""Images for the container tests, built here with buildah (no registry serves images to CI).

The base is a Debian bookworm root made by debootstrap and imported into podman (cached as an
image). Each image is tagged with a hash of everything its build reads, so a warm run finds it and
skips the build. Where podman or buildah cannot work, the callers skip with the reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/recommender-base:bookworm"
IMAGE_REPOSITORY = "localhost/streaming-recommender"
STANDIN_REPOSITORY = "localhost/streaming-recommender-standin"
# What the Dockerfile reads: the build inputs plus the packages it copies (every top-level package
# of pyproject.toml: the production ones for the image, local mode's too for the stand-in stage).
BUILD_FILES = ["Dockerfile", ".dockerignore", "requirements.lock", "pyproject.toml", "README.md"]
PACKAGES = sorted(
    {
        name.split(".")[0]
        for name in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    }
)
# buildah's chroot isolation re-executes itself from a sealed memfd; under load the seal can fail
# with EBUSY ("Close_Fd sealing memfd copy: Device or resource busy") and the same build then passes.
TRANSIENT_BUILD_ERROR = "sealing memfd copy"


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def tail(result: subprocess.CompletedProcess[str], lines: int = 20) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


def files_hash(files: Iterable[Path], root: Path = REPO) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_inputs_hash() -> str:
    files = [REPO / name for name in BUILD_FILES]
    for package in PACKAGES:
        files += sorted(
            p for p in (REPO / package).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
    return files_hash(files)


@contextmanager
def progress(config: pytest.Config, label: str) -> Iterator[None]:
    """Print a heartbeat on the terminal (past pytest's capture) while a long step runs."""
    capture = config.pluginmanager.getplugin("capturemanager")
    started = time.monotonic()
    done = threading.Event()

    def say(message: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\n[containers] {message}", file=sys.stderr, flush=True)

    def heartbeat() -> None:
        while not done.wait(30):
            say(f"{label}: {time.monotonic() - started:.0f}s ...")

    say(f"{label} (cached afterwards)")
    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        say(f"{label}: done in {time.monotonic() - started:.0f}s")


def podman_problem() -> str | None:
    """Why podman/buildah cannot be used here, or None when they can."""
    missing = [tool for tool in ("podman", "buildah") if shutil.which(tool) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not installed (Debian: apt-get install podman buildah runc debootstrap)"
        )
    info = run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"])
    if info.returncode != 0:
        return f"podman cannot run here: {tail(info, 3)}"
    return None


def image_exists(name: str) -> bool:
    return run(["podman", "image", "exists", name]).returncode == 0


def ensure_base_image(config: pytest.Config) -> None:
    if image_exists(BASE_IMAGE):
        return
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip(
            f"base image {BASE_IMAGE} is missing and debootstrap (as root) is not available to make it"
        )
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="recommender-base-") as tmp:
        root = Path(tmp, "root")
        with progress(config, f"making {BASE_IMAGE} with debootstrap"):
            include = "--include=python3,python3-venv,ca-certificates"
            made = run(["debootstrap", "--variant=minbase", include, "bookworm", str(root)], timeout=1800)
            if made.returncode != 0:
                pytest.fail(f"debootstrap failed:\n{tail(made)}")
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            imported = subprocess.run(
                ["podman", "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True, text=True
            )
            tar.wait()
            if imported.returncode != 0 or tar.returncode != 0:
                pytest.fail(f"podman import failed:\n{tail(imported)}")


def build(config: pytest.Config, tag: str, context: Path, *flags: str, host_certs: bool = True) -> str:
    """`buildah bud` of `context` as `tag` unless that tag exists; older tags of its repository go.
    `host_certs`: the host's CA store is mounted, so pip reaches PyPI from inside the build (apt
    needs no TLS, and a package that writes into the store, such as a JRE's, needs it writable)."""
    if image_exists(tag):
        return tag
    certs = ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro"] if host_certs else []
    command = [
        "buildah", "bud", "--layers", "--isolation", "chroot", *certs,
        "--build-arg", f"BASE={BASE_IMAGE}",
        *flags, "-t", tag, str(context),
    ]  # fmt: skip
    with progress(config, f"building {tag} with buildah"):
        built = run(command, timeout=3600)
        if built.returncode != 0 and TRANSIENT_BUILD_ERROR in built.stdout + built.stderr:
            built = run(command, timeout=3600)  # the cached layers make the second try short
    if built.returncode != 0:
        pytest.fail(f"image build of {tag} failed:\n{tail(built, 40)}")
    _remove_older_tags(tag)
    return tag


def _remove_older_tags(current: str) -> None:
    """Untag the images of earlier inputs, so the store keeps one per repository (layers stay cached)."""
    repository = current.rpartition(":")[0]
    listed = run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", repository])
    for name in listed.stdout.split():
        if name != current and name.startswith(repository + ":"):
            # With the name given twice only that name goes: alone it would strip every name of
            # the image, the current one too when both builds produced the same image.
            run(["podman", "untag", name, name])


def usable_or_skip(config: pytest.Config, what: str) -> None:
    reason = podman_problem()
    if reason:
        pytest.skip(f"{what} skipped: {reason}")
    ensure_base_image(config)


def project_image(config: pytest.Config) -> str:
    """The project image for the current sources."""
    usable_or_skip(config, "container image tests")
    return build(config, f"{IMAGE_REPOSITORY}:{build_inputs_hash()}", REPO)


def standin_image(config: pytest.Config) -> str:
    """The Dockerfile's `standin` target: the TF-Serving stand-in under tensorflow_model_server's name."""
    usable_or_skip(config, "container image tests")
    return build(config, f"{STANDIN_REPOSITORY}:{build_inputs_hash()}", REPO, "--target", "standin")
