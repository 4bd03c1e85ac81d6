"""The ``triage`` command: thin wrappers that parse, call the packages, and print."""

from llmtriage.cli import fitting, gateway, local, replay, study
from llmtriage.cli.common import app

# In the order --help lists them: recorded data, fitting, the study, live models, the gateway.
for command in (replay.data, replay.convert, replay.bench, replay.policies, fitting.fit,
                fitting.tune, study.report, local.models, local.collect, local.ask,
                gateway.serve, gateway.export, gateway.key):
    app.command()(command)


def main() -> None:
    app()
