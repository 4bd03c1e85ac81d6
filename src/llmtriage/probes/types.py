"""A probe: a question with a gold answer and the grader that checks it."""

from __future__ import annotations

from dataclasses import dataclass

from llmtriage.probes.graders import GRADERS, grade_alias


@dataclass(frozen=True)
class Probe:
    id: str
    question: str
    answer: str
    grader: str = "alias"
    aliases: tuple[str, ...] = ()
    kind: str = ""
    difficulty: str = ""
    #: Ask the question exactly as written (a benchmark's own prompt, which carries its
    #: instruction) instead of appending the probes' "answer only" instruction.
    verbatim: bool = False
    #: The answer's token budget (None: collection's default for short answers).
    max_tokens: int | None = None

    def grade(self, response: str) -> float:
        if self.grader == "alias":
            return float(grade_alias(response, self.answer, self.aliases))
        return float(GRADERS[self.grader](response, self.answer))
