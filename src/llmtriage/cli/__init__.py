"""The ``triage`` command: thin wrappers that parse, call the packages, and print."""

import typer

from llmtriage.cli import fitting, gateway, local, replay, study

app = typer.Typer(
    add_completion=False,
    rich_markup_mode="markdown",  # a docstring's line breaks are not the help's
    no_args_is_help=True,
    help="Triage: route and cascade queries across LLMs, and measure how well that works.",
)
# In the order --help lists them: recorded data, fitting, the study, live models, the gateway.
for command in (replay.data, replay.convert, replay.bench, replay.policies, fitting.fit,
                fitting.tune, study.report, local.models, local.collect, local.ask,
                gateway.serve, gateway.export, gateway.key):
    app.command()(command)


def main() -> None:
    app()
