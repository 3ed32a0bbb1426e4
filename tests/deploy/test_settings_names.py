"""The per-command variable lists (settings_names.py) stay true to the source they describe."""

from __future__ import annotations

import ast

import pytest

from tests.deploy.settings_names import (
    COMMAND_SETTINGS,
    COMMAND_SOURCES,
    KAFKA_COMMANDS,
    KAFKA_MODULE,
    REPO,
    class_fields,
    command_modules,
    loaded_settings,
    misplaced,
    reachable_modules,
    reads,
    recommender_command,
    settings_classes,
)


def _command_calls(node: ast.stmt) -> list[ast.Call]:
    """The calls that make a module's `command`: its click decorator, or the group's constructor."""
    if isinstance(node, ast.FunctionDef) and node.name == "command":
        return [
            d
            for d in node.decorator_list
            if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "command"
        ]
    if isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == ["command"]:
        return [node.value] if isinstance(node.value, ast.Call) else []
    return []


def _registered_commands() -> set[str]:
    """The top-level commands: the name that `command` gets (`@click.command("name", ...)` or
    `command = OrderedGroup("name", ...)`) in each module that recommender/cli.py lists in
    COMMAND_MODULES."""
    cli = ast.parse((REPO / "recommender" / "cli.py").read_text())
    [modules] = [
        node.value
        for node in ast.walk(cli)
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", "") == "COMMAND_MODULES" for t in node.targets)
    ]
    assert isinstance(modules, ast.List)
    commands = set()
    for element in modules.elts:
        assert isinstance(element, ast.Constant)
        tree = ast.parse((REPO / (element.value.replace(".", "/") + ".py")).read_text())
        [name] = [
            call.args[0].value
            for node in tree.body
            for call in _command_calls(node)
            if isinstance(call.args[0], ast.Constant)
        ]
        commands.add(name)
    return commands


def test_every_command_is_mapped() -> None:
    assert set(COMMAND_SETTINGS) == set(COMMAND_SOURCES) == _registered_commands()


def test_every_mapped_class_exists() -> None:
    classes = settings_classes()
    missing = {command: sorted(names - classes.keys()) for command, names in COMMAND_SETTINGS.items()}
    assert not any(missing.values()), missing


@pytest.mark.parametrize("command", sorted(COMMAND_SETTINGS))
def test_the_mapping_names_exactly_the_settings_the_command_loads(command: str) -> None:
    assert command_modules(command), f"no sources for {command}: {COMMAND_SOURCES[command]}"
    # Its own sources and all project code they import (e.g. the pipeline's steps call trainer.upload).
    assert loaded_settings(reachable_modules(command)) == COMMAND_SETTINGS[command]


def test_kafka_variables_are_allowed_exactly_where_the_code_reaches_common_kafka() -> None:
    assert {c for c in COMMAND_SETTINGS if KAFKA_MODULE in reachable_modules(c)} == KAFKA_COMMANDS


def test_fields_are_inherited() -> None:
    # ServingSettings' and Settings' fields reach a subclass; a sibling's do not.
    assert {"SERVING_A_URL", "MINIO_BUCKET", "MODELSYNC_KEEP_VERSIONS"} <= class_fields("ModelSyncSettings")
    assert "MODELSERVER_MAX_BATCH" not in class_fields("ModelSyncSettings")
    assert "SERVING_A_URL" not in class_fields("DataPublisherSettings")


def test_a_variable_counts_only_for_the_command_that_reads_it() -> None:
    assert reads("modelserver", "MODELSERVER_MAX_BATCH")
    assert not reads("modelsync", "MODELSERVER_MAX_BATCH")
    assert reads("modelsync", "MINIO_BUCKET") and reads("modelsync", "MODEL_NAME")
    assert reads("client", "KAFKA_SASL_PASSWORD") and not reads("modelsync", "KAFKA_SASL_PASSWORD")
    assert not reads("datapublisher", "RECOMMENDER_CACHE_DIR")
    assert misplaced({"sidecar": ("modelsync", ["MINIO_BUCKET", "MODELSERVER_MAX_BATCH"])}) == [
        "sidecar (recommender modelsync) sets variables it never reads: ['MODELSERVER_MAX_BATCH']"
    ]
    assert misplaced({"odd": ("nosuchcommand", [])}) == [
        "odd runs `recommender nosuchcommand`, which is not in COMMAND_SETTINGS"
    ]


def test_the_command_is_the_first_argument_to_the_recommender_entrypoint() -> None:
    assert recommender_command(None, ["modelsync", "--instance", "a"]) == "modelsync"
    assert recommender_command(["recommender"], ["init"]) == "init"
    assert recommender_command(["recommender", "client"], ["load"]) == "client"
    assert recommender_command(["tensorflow_model_server"], ["--port=8500"]) is None
    assert recommender_command(["python", "-c", "..."], None) is None
