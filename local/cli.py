"""Entry point of the `recommender-local` command: local mode's subcommands (`python -m local`)."""

from __future__ import annotations

import sys

import click

from recommender import cli

# Modules that contribute subcommands, in the order --help lists them.
COMMAND_MODULES = ["local.stack.cli", "local.cluster.cli", "tfserving.cli", "local.demo"]


def build_group() -> click.Group:
    return cli.build_group(
        "recommender-local",
        "Local mode of the streaming recommender: the real Kafka + MinIO as local processes, the "
        "TF-Serving stand-in and the whole system in one command. The components themselves are "
        "`recommender <component>`; see README.md.",
        COMMAND_MODULES,
    )


def main(argv: list[str] | None = None) -> int:
    return cli.run(build_group(), argv)


if __name__ == "__main__":
    sys.exit(main())
