"""The gateway's request path, from an admitted request to a result: no HTTP in here.

A :class:`Job` is one request. :class:`RequestPath` runs it through the same step loop as
``triage bench``: a configured policy (wrapped in :class:`Sticky`, so a conversation's next
turn goes to the model that answered the last), or a model named directly. It turns the
trace into what the response, the headers, the metrics, the request log and the key's spend
need. Everything it reports about the models
comes from the trace: the model that answered is the one that did, after any fallback.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from llmtriage.backends.base import LiveOptions, Queries
from llmtriage.backends.live import BackendError, ChatRequest
from llmtriage.backends.pool import ModelPool, TokenSink
from llmtriage.policies.base import Policy, Trace
from llmtriage.policies.baselines import SingleModel
from llmtriage.policies.loop import PolicyError, arun_policy
from llmtriage.policies.sticky import Sticky
from llmtriage.serving.config import ClientKey, GatewaySettings
from llmtriage.serving.guard import Admission, KeyRing, Refused
from llmtriage.serving.requestlog import RequestLog
from llmtriage.serving.sessions import Sessions
from llmtriage.serving.telemetry import GatewayMetrics

#: How many recent responses of learning policies keep their prompt for feedback.
RECENT = 10_000


def explain(trace: Trace, policy_name: str, query: int = 0) -> dict[str, Any]:
    """Which models were called, their confidences, cost and latency; who answered."""
    steps = []
    completions = trace.completions[query] if trace.completions else []
    for k, completion in enumerate(completions):
        confidence = float(trace.steps.column("confidence", k)[query])
        step: dict[str, Any] = {
            "model": completion.model,
            # JSON has no infinities: a cut-off answer (-inf) is flagged instead.
            "confidence": round(confidence, 6) if math.isfinite(confidence) else None,
            "latency_ms": round(completion.latency_ms, 1),
            "cost_usd": completion.cost_usd,
        }
        if confidence == -math.inf:
            step["cut_off"] = True
        if "fallback_from" in completion.extra:
            step["fallback_from"] = completion.extra["fallback_from"]
        steps.append(step)
    return {
        "policy": policy_name,
        "answered_by": trace.models[int(trace.accepted_model[query])],
        "accepted_step": int(trace.accepted_step[query]),
        "steps": steps,
        "cost_usd": float(trace.total("cost_usd")[query]),
        "latency_ms": round(float(trace.total("latency_ms")[query]), 1),
    }


def usage(trace: Trace, query: int = 0) -> dict[str, int]:
    """Tokens of every call the request made, its signals' included."""
    calls = [*(trace.completions or [[]])[query], *(trace.signal_calls or [[]])[query]]
    prompt = sum(c.tokens_in for c in calls)
    completion = sum(c.tokens_out for c in calls)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


@dataclass
class Job:
    """One request on its way through the gateway."""

    ident: str
    policy_name: str
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    client: ClientKey | None
    session: str | None
    started: float = field(default_factory=time.perf_counter)
    info: dict[str, Any] = field(default_factory=dict)
    answer: str = ""
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The last user turn ("" for a request refused for having none)."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    def queries(self, pinned: str | None = None) -> Queries:
        """The job as a batch of one for the step loop, with the request it sends and the
        model its sticky session binds it to."""
        request = ChatRequest(tuple(self.messages), max_tokens=self.max_tokens,
                              temperature=self.temperature)
        one = Queries.from_texts([self.prompt])
        return Queries(one.prompt_ids, one.prompts, one.tasks, conversations=[self.messages],
                       requests=[request], pinned=[pinned])


@dataclass(frozen=True)
class Failure:
    """A request that ended in an error; the HTTP layer turns it into a response."""

    status: int
    message: str
    kind: str
    code: str | None = None
    retry_after: float | None = None


def upstream_failure(exc: BackendError) -> Failure:
    """What a client sees of an upstream that failed (after retries and fallbacks): a 429
    stays a 429 with its Retry-After, an open circuit is a 503, anything else a 502."""
    if exc.status == 429:
        return Failure(429, f"upstream rate limited: {exc}", "rate_limit_error",
                       "upstream_rate_limited", exc.retry_after)
    if exc.retry_after is not None:
        return Failure(503, f"upstream unavailable: {exc}", "upstream_error", "circuit_open",
                       exc.retry_after)
    return Failure(502, f"upstream failed: {exc}", "upstream_error")


class RequestPath:
    """Runs admitted jobs and accounts for them: spend, sessions, metrics, log, feedback."""

    def __init__(self, pool: ModelPool, policies: dict[str, Policy], settings: GatewaySettings,
                 keys: list[ClientKey]) -> None:
        self.pool = pool
        self.policies = policies
        #: What runs each policy: itself, within sticky sessions when they are on.
        self.runners: dict[str, Policy] = {
            name: Sticky(p) if settings.sticky_sessions else p for name, p in policies.items()}
        self.settings = settings
        self.log = (RequestLog(settings.request_log, settings.log_text)
                    if settings.request_log else None)
        self.ring = KeyRing(keys, self.log.spent_by_client() if self.log else None)
        self.admission = Admission(settings.max_in_flight, settings.max_queue)
        self.sessions = Sessions(settings.session_ttl_s)
        self.metrics = GatewayMetrics()
        #: Responses of learning policies awaiting feedback: id -> (policy, prompt, model,
        #: client). Only policies that learn need it.
        self.recent: OrderedDict[str, tuple[str, str, str, str | None]] = OrderedDict()
        secrets = [s for s in (spec.secret() for spec in pool.catalog.models) if s]
        self._secrets = secrets
        if self.log is not None:  # an online learner catches up with the feedback it missed
            for name, policy in policies.items():
                if policy.learns:
                    for prompt, model, score in self.log.with_feedback(name):
                        policy.learn(prompt, model, score)

    def knows(self, name: str) -> bool:
        return name in self.policies or name in self.pool.models

    def redact(self, text: str) -> str:
        """Upstream keys never leave the gateway, even if an upstream echoes them."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def pinned(self, job: Job) -> str | None:
        """The model this request's sticky session is bound to, if any."""
        if job.policy_name not in self.policies or not self.settings.sticky_sessions:
            return None
        model = self.sessions.lookup(job.policy_name, job.session, job.messages)
        return model if model in self.pool.models else None

    async def run(self, job: Job, sink: TokenSink | None = None) -> None:
        """Run one request; fills job.info, job.answer and job.usage from the trace."""
        is_policy = job.policy_name in self.policies
        policy = self.runners[job.policy_name] if is_policy else SingleModel(job.policy_name)
        pinned = self.pinned(job)
        options = LiveOptions(sink=sink, fallback=is_policy)
        async with self.admission.slot():
            trace = await arun_policy(policy, self.pool, job.queries(pinned), options)
        job.info = explain(trace, job.policy_name)
        job.info["id"] = job.ident
        if pinned is not None:
            job.info["sticky"] = True
        job.answer = trace.accepted_answer(0)
        job.usage = usage(trace)
        job.info["gateway_ms"] = round((time.perf_counter() - job.started) * 1000, 1)
        if is_policy and self.settings.sticky_sessions:
            self.sessions.remember(job.policy_name, job.session, job.messages, job.answer,
                                   job.info["answered_by"])
        self.ring.charge(job.client, job.info["cost_usd"])
        if is_policy and self.policies[job.policy_name].learns:
            self.recent[job.ident] = (job.policy_name, job.prompt, job.info["answered_by"],
                                      job.client.name if job.client else None)
            while len(self.recent) > RECENT:
                self.recent.popitem(last=False)

    async def attempt(self, job: Job, sink: TokenSink | None = None) -> Failure | None:
        """Run the job and record it; the failure if it failed, None if it succeeded."""
        try:
            await self.run(job, sink)
        except Refused as exc:
            return self.fail(job, Failure(exc.status, str(exc), exc.kind, exc.code,
                                          exc.retry_after))
        except BackendError as exc:
            return self.fail(job, upstream_failure(exc))
        except PolicyError as exc:
            return self.fail(job, Failure(500, f"policy failed: {exc}", "server_error"))
        except Exception as exc:  # noqa: BLE001 - the request still gets an answer
            return self.fail(job, Failure(500, f"internal error: {type(exc).__name__}",
                                          "server_error"))
        self.record(job, 200)
        return None

    def fail(self, job: Job, failure: Failure) -> Failure:
        failure = Failure(failure.status, self.redact(failure.message), failure.kind,
                          failure.code, failure.retry_after)
        self.record(job, failure.status, failure.message)
        return failure

    def record(self, job: Job, status: int, message: str | None = None) -> None:
        elapsed = time.perf_counter() - job.started
        if status == 200:
            self.metrics.observe(job.policy_name, elapsed, job.info["steps"])
        else:
            self.metrics.failed(job.policy_name if self.knows(job.policy_name)
                                else "unknown", status)
        if self.log is not None:
            self.log.record({
                "id": job.ident, "created": time.time(),
                "client": job.client.name if job.client else None,
                "policy": job.policy_name, "session": job.session, "status": status,
                "answered_by": job.info.get("answered_by"),
                "steps": job.info.get("steps", []), "cost_usd": job.info.get("cost_usd", 0.0),
                "latency_ms": round(elapsed * 1000, 1),
                "tokens_in": job.usage.get("prompt_tokens"),
                "tokens_out": job.usage.get("completion_tokens"),
                "prompt": job.prompt, "answer": job.answer if status == 200 else None,
                "error": message,
            })

    async def feedback(self, ident: str, score: float, client: str | None
                       ) -> dict[str, Any] | None:
        """Attach a score to an earlier response; None when there is no such response."""
        logged = await self.log.feedback(ident, score, client) if self.log is not None \
            else None
        known = self.recent.get(ident)
        if known is not None and known[3] != client:
            known = None
        if logged is None and known is None:
            return None
        learned = False
        if known is not None:
            policy_name, prompt, model, _ = known
            policy = self.policies.get(policy_name)
            if policy is not None:
                learned = bool(policy.learn(prompt, model, score))
        return {"id": ident, "score": score, "logged": logged is not None, "learned": learned}

    def headers(self, job: Job) -> dict[str, str]:
        info = job.info
        return {
            "x-triage-id": job.ident,
            "x-triage-policy": job.policy_name,
            "x-triage-model": info["answered_by"],
            "x-triage-models-called": ",".join(s["model"] for s in info["steps"]),
            "x-triage-confidences": ",".join("" if s["confidence"] is None
                                             else f"{s['confidence']:.4g}"
                                             for s in info["steps"]),
            "x-triage-cost-usd": f"{info['cost_usd']:.3e}",
            "x-triage-latency-ms": f"{info['latency_ms']:.1f}",
        }

    async def aclose(self) -> None:
        await self.pool.aclose()
        if self.log is not None:
            self.log.close()
