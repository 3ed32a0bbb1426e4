"""Training, the stand-in and the real TF-Serving run one TensorFlow minor version.

A SavedModel loads in the TensorFlow version that wrote it or a later one, so the serving image
must not lag behind the training library. Every place that names a version is read here; a bump
has to move all of them together.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVING_IMAGE = re.compile(r"tensorflow/serving:(?:\$\{TF_SERVING_TAG:-)?(\d+\.\d+)\.\d+")
TAG_MENTION = re.compile(r"`TF_SERVING_TAG` \((\d+\.\d+)\.\d+\)")


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _pins(lines: list[str], names: tuple[str, ...]) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = re.fullmatch(r'\s*"?([A-Za-z0-9_.-]+)==([0-9.]+)"?,?\s*', line)
        if match and match.group(1).lower() in names:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def versions_named() -> dict[str, str]:
    """Every place that names a TensorFlow or TF-Serving version -> its major.minor."""
    found: dict[str, str] = {}
    names = ("tensorflow", "tensorflow-serving-api")
    for name, version in _pins((ROOT / "requirements.lock").read_text().splitlines(), names).items():
        found[f"requirements.lock {name}"] = _minor(version)
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, version in _pins(dependencies, names).items():
        found[f"pyproject.toml {name}"] = _minor(version)
    serving = yaml.safe_load((ROOT / "charts/streaming-recommender/values.yaml").read_text())["serving"]
    found["chart serving.image.tag"] = _minor(str(serving["image"]["tag"]))
    env_tag = re.search(r"TF_SERVING_TAG=(\d+\.\d+)\.\d+", (ROOT / ".env.example").read_text())
    if env_tag:
        found[".env.example TF_SERVING_TAG"] = env_tag.group(1)
    for path in ("docker-compose.yml", "Dockerfile", "README.md", "docs/contracts.md"):
        text = (ROOT / path).read_text()
        for index, minor in enumerate(SERVING_IMAGE.findall(text) + TAG_MENTION.findall(text)):
            found[f"{path} mention {index + 1}"] = minor
    return found


def test_every_tensorflow_and_tf_serving_pin_names_one_minor_version():
    found = versions_named()
    # Each place must be read, or a drift there would go unnoticed.
    for required in (
        "requirements.lock tensorflow",
        "requirements.lock tensorflow-serving-api",
        "pyproject.toml tensorflow",
        "pyproject.toml tensorflow-serving-api",
        "chart serving.image.tag",
        ".env.example TF_SERVING_TAG",
        "docker-compose.yml mention 1",
        "README.md mention 1",
    ):
        assert required in found, f"no version found for {required}"
    assert len(set(found.values())) == 1, f"TensorFlow versions disagree: {found}"


def test_the_check_sees_a_drift(tmp_path, monkeypatch):
    for path in ("requirements.lock", "pyproject.toml", ".env.example", "docker-compose.yml", "Dockerfile",
                 "README.md", "docs/contracts.md", "charts/streaming-recommender/values.yaml"):  # fmt: skip
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((ROOT / path).read_text())
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(re.sub(r"TF_SERVING_TAG:-\d+\.\d+", "TF_SERVING_TAG:-1.15", compose.read_text()))
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert len(set(versions_named().values())) == 2
