"""The gateway's request path, from an admitted request to a result: no HTTP in here.

A :class:`Job` is one request. :class:`RequestPath` runs it through the same step loop as
``triage bench``: a configured policy (wrapped in :class:`Sticky`, so a conversation's next
turn goes to the model that answered the last), or a model named directly with limits to
keep. It turns the trace into what the response, the headers, the metrics, the request log
and the key's spend need. A model named directly with no limits is the one call the loop
would make, made without it and told the same way. Everything it reports about the models
comes from the calls: the model that answered is the one that did, after any fallback.

A request has one deadline for all its calls (``request_timeout_s``, then 504) and is
cancelled, upstream calls included, when its client goes away (logged as 499, charged
nothing: a cancelled call's bill is unknown and an upstream that streams stops billing when
the connection drops). For feedback the gateway keeps, per response of a learning policy,
only what the policy's ``remember`` returns (a few numbers), never the prompt; a response
teaches once, and a later score for it replaces the earlier one.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

from llmtriage.backends.base import LiveOptions, Queries
from llmtriage.backends.live import BackendError, ChatRequest, Completion
from llmtriage.backends.pool import ModelPool, TokenSink, measured, priced_at_most
from llmtriage.policies.base import Policy, Trace
from llmtriage.policies.baselines import SingleModel
from llmtriage.policies.limits import LimitError, Limits
from llmtriage.policies.loop import PolicyError, arun_policy
from llmtriage.policies.routers.base import quality_routers
from llmtriage.policies.sticky import Sticky
from llmtriage.serving.cache import CacheSettings, Entry, Hit, ResponseCache
from llmtriage.serving.config import ClientKey, GatewaySettings
from llmtriage.serving.guard import Admission, Allowance, KeyRing, Refused
from llmtriage.serving.requestlog import RequestLog
from llmtriage.serving.schemas import limit_header
from llmtriage.serving.sessions import answered_key, lookup_key
from llmtriage.serving.state import Ticket, open_state
from llmtriage.serving.state.base import Lesson, Pending
from llmtriage.serving.telemetry import GatewayMetrics
from llmtriage.signals.embedder import Embedder

#: The status a request cancelled by its client is logged with (nginx's convention).
CLIENT_GONE = 499


def step_info(completion: Completion, confidence: float) -> dict[str, Any]:
    """One call as the response's ``triage.steps``, the headers and the log show it."""
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
    return step


def explain(trace: Trace, policy_name: str, query: int = 0) -> dict[str, Any]:
    """Which models were called, their confidences, cost and latency; who answered."""
    completions = trace.completions[query] if trace.completions else []
    steps = [step_info(completion, float(trace.steps.column("confidence", k)[query]))
             for k, completion in enumerate(completions)]
    degraded = trace.degraded.get(query)
    moved = [s for s in steps if "fallback_from" in s]
    if degraded is None and moved:
        degraded = f"{moved[-1]['fallback_from']} failed; {moved[-1]['model']} answered"
    return summary(policy_name, trace.models[int(trace.accepted_model[query])], steps,
                   int(trace.accepted_step[query]), float(trace.total("cost_usd")[query]),
                   round(float(trace.total("latency_ms")[query]), 1), degraded)


def summary(policy_name: str, answered_by: str, steps: list[dict[str, Any]],
            accepted_step: int, cost_usd: float, latency_ms: float,
            degraded: str | None = None) -> dict[str, Any]:
    """The response's ``triage`` field, less its id and timing: one shape whether the
    answer came from the step loop, a model passed through or the response cache."""
    return {
        "policy": policy_name,
        "answered_by": answered_by,
        # Why the answer is not the one the policy asked for (a limit, a failed model).
        "degraded": degraded,
        "accepted_step": accepted_step,
        "steps": steps,
        "cost_usd": cost_usd,
        "latency_ms": latency_ms,
    }


#: The finish reasons a text answer can have in the OpenAI API; an upstream's other words
#: for a finished answer ("eos", "end_turn") are "stop".
FINISH_REASONS = ("stop", "length", "content_filter")


def finish_reason(completion: Completion | None) -> str:
    """Why the answer ended, as the client is told: "length" when the token limit cut it
    (a client may ask for the rest), whatever the model that gave it called it."""
    reason = completion.finish_reason if completion is not None else "stop"
    return reason if reason in FINISH_REASONS else "stop"


def usage(trace: Trace, query: int = 0) -> dict[str, int]:
    """Tokens of every call the request made, its signals' included."""
    return token_usage([*(trace.completions or [[]])[query],
                        *(trace.signal_calls or [[]])[query]])


def token_usage(calls: list[Completion]) -> dict[str, int]:
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
    #: Why the answer ended (OpenAI's ``finish_reason``).
    finish: str = "stop"
    usage: dict[str, int] = field(default_factory=dict)
    ticket: Ticket | None = None
    #: Done once the request's log row is committed (None: no log, or not recorded yet).
    logged: asyncio.Future[None] | None = None
    #: The request's own deadline and spend cap (its policy's fill the gaps).
    limits: Limits = field(default_factory=Limits)
    #: Whether the response cache may answer it and keep its answer.
    cacheable: bool = True
    #: Where the answer ends (sent to every model the policy calls).
    stop: tuple[str, ...] = ()
    #: The task the client says the request belongs to ("": not said): a policy that
    #: calibrates per task reads it, as it reads a recorded table's task column offline.
    task: str = ""

    @property
    def prompt(self) -> str:
        """What routers read: the last user turn (the last message if none is a user's)."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"),
                    self.messages[-1]["content"] if self.messages else "")

    def elapsed_ms(self) -> float:
        """The gateway's time on the job so far, as the response reports it."""
        return round((time.perf_counter() - self.started) * 1000, 1)

    def request(self) -> ChatRequest:
        """What each model the job calls is sent."""
        return ChatRequest(tuple(self.messages), max_tokens=self.max_tokens,
                           temperature=self.temperature, stop=self.stop)

    def queries(self, pinned: str | None = None) -> Queries:
        """The job as a batch of one for the step loop, with the request it sends and the
        model its sticky session binds it to."""
        return Queries.from_texts([self.prompt], self.task, conversations=[self.messages],
                                  requests=[self.request()], pinned=[pinned])


@dataclass(frozen=True)
class Failure:
    """A request that ended in an error; the HTTP layer turns it into a response."""

    status: int
    message: str
    kind: str
    code: str | None = None
    retry_after: float | None = None


#: Rows a minute for requests without a valid key (see RequestPath.anonymous_rows).
ANONYMOUS_ROWS_PER_MINUTE = 60


#: Upstream refusals whose meaning holds for the client: the request itself was refused.
PASSED_THROUGH = {400: "invalid_request_error", 404: "not_found_error",
                  413: "invalid_request_error", 422: "invalid_request_error"}


def upstream_failure(exc: BackendError) -> Failure:
    """What a client sees of an upstream that failed (after retries and fallbacks): a 429
    stays a 429 with its Retry-After; a refusal of the request itself (400, 404, 413, 422)
    keeps its status; a deadline is a 504; an open circuit or a model at capacity a 503;
    anything else (401/403 included: the gateway's own upstream credentials) a 502."""
    if exc.status == 429:
        return Failure(429, f"upstream rate limited: {exc}", "rate_limit_error",
                       "upstream_rate_limited", exc.retry_after)
    if exc.status in PASSED_THROUGH:
        return Failure(exc.status, f"upstream refused the request: {exc}",
                       PASSED_THROUGH[exc.status], "upstream_refused")
    if exc.status == 504:
        return Failure(504, f"upstream timed out: {exc}", "upstream_error", "upstream_timeout")
    if exc.saturated:
        return Failure(503, f"model at capacity: {exc}", "upstream_error", "model_overloaded",
                       1.0)
    if exc.retry_after is not None:
        return Failure(503, f"upstream unavailable: {exc}", "upstream_error", "circuit_open",
                       exc.retry_after)
    return Failure(502, f"upstream failed: {exc}", "upstream_error")


def _semantic_embedder(settings: CacheSettings) -> Embedder | None:
    from llmtriage.signals.embedder import default_embedder

    return default_embedder() if settings.semantic else None


def limit_failure(exc: LimitError) -> Failure:
    """A request its limits left unserved: refused before any call (422: well formed, but
    nothing can serve it within them now), or out of time during one (504); either names
    the limit."""
    header = limit_header(exc.limit)
    if exc.during_call:
        return Failure(504, f"{exc} (set by {header} or the policy)", "upstream_error",
                       "deadline_exceeded")
    return Failure(422, f"cannot serve within the request's limits: {exc} (set by {header} "
                        "or the policy)", "invalid_request_error", f"{exc.limit}_unmeetable")


class RequestPath:
    """Runs admitted jobs and accounts for them: spend, sessions, metrics, log, feedback."""

    def __init__(self, pool: ModelPool, policies: dict[str, Policy], settings: GatewaySettings,
                 keys: list[ClientKey], limits: dict[str, Limits] | None = None) -> None:
        """``limits``: per policy, the limits of a request that names none."""
        self.pool = pool
        self.policies = policies
        self.limits = limits or {}
        self.cache = ResponseCache(settings.cache, _semantic_embedder(settings.cache)) \
            if settings.cache.enabled else None
        #: What runs each policy: itself, within sticky sessions when they are on.
        self.runners: dict[str, Policy] = {
            name: Sticky(p) if settings.sticky_sessions else p for name, p in policies.items()}
        #: Policies whose decisions embed the query: decided off the event loop.
        self.embedding = {name for name, p in policies.items() if quality_routers(p)}
        self.settings = settings
        where = settings.database_url or settings.request_log
        self.log = RequestLog(where, settings.log_text, settings.log_retention_s) \
            if where else None
        self.metrics = GatewayMetrics()
        if self.log is not None:
            self.log.on_error = self.metrics.log_errors.inc
        self.ring = KeyRing(keys)
        #: Requests refused for want of a valid key are logged at most this often: anyone
        #: can send them, and each row is disk the gateway keeps (metrics count them all).
        self.anonymous_rows = Allowance(ANONYMOUS_ROWS_PER_MINUTE)
        #: Keys' limits, sessions and scores, as every replica sees them.
        self.state = open_state(settings, keys, self.log)
        self.admission = Admission(settings.max_in_flight, settings.max_queue)
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

    async def pinned(self, job: Job) -> str | None:
        """The model this request's sticky session is bound to, if any."""
        if job.policy_name not in self.policies or not self.settings.sticky_sessions:
            return None
        digest = lookup_key(self._client(job), job.policy_name, job.session, job.messages)
        model = await self.state.session(digest) if digest is not None else None
        return model if model in self.pool.models else None

    @staticmethod
    def _client(job: Job) -> str | None:
        return job.client.name if job.client else None

    def most_cost(self, job: Job) -> float:
        """The most a request may spend: each model its policy may call, once, at the
        request's prompt size (UTF-8 bytes bound its tokens) and its max_tokens."""
        policy = self.policies.get(job.policy_name)
        if policy is None:
            names = [job.policy_name]
        else:
            from llmtriage.policies.defaults import models_used

            names = sorted(models_used(policy) & set(self.pool.models)) or list(self.pool.models)
        return sum(priced_at_most(self.pool.catalog.spec(n), job.messages, job.max_tokens)
                   for n in names)

    async def admit(self, job: Job) -> None:
        """Hold the key's reservation for this job; raises Refused."""
        job.ticket = await self.state.admit(job.client, self.most_cost(job))

    async def run(self, job: Job, sink: TokenSink | None = None) -> None:
        """Run one request; fills job.info, job.answer and job.usage from the trace (or
        from the response cache)."""
        cached = None
        if self.cache is not None and job.cacheable and job.temperature == 0:
            cached = self.cache.keys(self._client(job), job.policy_name, job.max_tokens,
                                     job.messages, job.stop, job.task)
            began = time.perf_counter()
            hit, vector = await self.cache.get(*cached)
            if hit is not None:
                self._answer_from(job, hit, (time.perf_counter() - began) * 1000)
                return
        await self._run(job, sink)
        if cached is not None and job.info["degraded"] is None:
            key, scope, _ = cached
            self.cache.put(key, scope, Entry(
                job.answer, job.info["answered_by"], dict(job.usage), job.info["cost_usd"],
                job.info["latency_ms"], time.monotonic(), scope, vector, job.ident,
                job.finish))

    def _answer_from(self, job: Job, hit: Hit, took_ms: float) -> None:
        entry = hit.entry
        step = {"model": "cache", "confidence": None, "latency_ms": round(took_ms, 2),
                "cost_usd": 0.0, "match": hit.match, "similarity": round(hit.similarity, 4)}
        job.answer, job.finish = entry.answer, entry.finish
        job.usage = token_usage([])
        job.info = {
            **summary(job.policy_name, entry.answered_by, [step], 0, 0.0, step["latency_ms"]),
            "id": job.ident,
            "cache": {"match": hit.match, "similarity": step["similarity"],
                      "from": entry.source,
                      "age_s": round(time.monotonic() - entry.stored, 1),
                      "saved_usd": entry.cost_usd,
                      "saved_ms": round(max(entry.latency_ms - took_ms, 0.0), 1)},
            "gateway_ms": job.elapsed_ms()}
        self.metrics.cache_hit(hit.match, entry.cost_usd)

    async def _run(self, job: Job, sink: TokenSink | None = None) -> None:
        is_policy = job.policy_name in self.policies
        if not is_policy and not job.limits:
            await self._pass_through(job, sink)
            return
        policy = self.runners[job.policy_name] if is_policy else SingleModel(job.policy_name)
        pinned = await self.pinned(job)
        options = LiveOptions(sink=sink, fallback=is_policy,
                              decide_in_thread=job.policy_name in self.embedding,
                              limits=job.limits.over(self.limits.get(job.policy_name)),
                              started=job.started)
        if is_policy and self.policies[job.policy_name].learns:
            for lesson in await self.state.lessons(job.policy_name):  # other replicas'
                self.policies[job.policy_name].learn(lesson.context, lesson.model,
                                                     lesson.reward, lesson.previous)
        async with self.admission.slot():
            trace = await arun_policy(policy, self.pool, job.queries(pinned), options)
        job.info = explain(trace, job.policy_name)
        job.info["id"] = job.ident
        if pinned is not None:
            job.info["sticky"] = True
        job.answer = trace.accepted_answer(0)
        job.finish = finish_reason(trace.accepted_completion(0))
        job.usage = usage(trace)
        job.info["gateway_ms"] = job.elapsed_ms()
        if is_policy and self.settings.sticky_sessions:
            await self.state.stick(answered_key(self._client(job), job.policy_name,
                                                job.session, job.messages, job.answer),
                                   job.info["answered_by"])
        if is_policy and self.policies[job.policy_name].learns:
            context = self.policies[job.policy_name].remember(job.prompt)
            await self.state.await_feedback(job.ident, Pending(
                job.policy_name, context, job.info["answered_by"], self._client(job)))

    async def _pass_through(self, job: Job, sink: TokenSink | None) -> None:
        """A model named directly, with no limits: its one call, without the step loop.
        The loop would decide nothing here (call the model, accept its answer: what
        ``SingleModel`` replays), and on a batch of one its arrays cost ten times the
        call's own CPU. Told exactly as :func:`explain` tells the loop's trace."""
        async with self.admission.slot():
            answer, confidence, extra = await self.pool.answer(
                job.policy_name, job.request(), LiveOptions(sink=sink, fallback=False))
        calls = [answer, *extra]
        step = step_info(answer, math.nan if confidence is None else confidence)
        job.info = {**summary(job.policy_name, answer.model, [step], 0,
                              measured(calls, "cost_usd"),
                              round(measured(calls, "latency_ms"), 1)),
                    "id": job.ident}
        job.answer, job.finish = answer.text, finish_reason(answer)
        job.usage = token_usage(calls)
        job.info["gateway_ms"] = job.elapsed_ms()

    async def attempt(self, job: Job, sink: TokenSink | None = None) -> Failure | None:
        """Run the job and record it; the failure if it failed, None if it succeeded."""
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                await self.run(job, sink)
        except asyncio.CancelledError:  # the client went away: so does the work
            await self.fail(job, Failure(CLIENT_GONE, "client disconnected", "client_closed"))
            raise
        except TimeoutError:
            return await self.fail(job, Failure(
                504, f"the request did not finish within {self.settings.request_timeout_s:g} "
                     "s", "upstream_error", "request_timeout"))
        except Refused as exc:
            return await self.fail(job, Failure(exc.status, str(exc), exc.kind, exc.code,
                                                exc.retry_after))
        except BackendError as exc:
            return await self.fail(job, upstream_failure(exc))
        except LimitError as exc:
            return await self.fail(job, limit_failure(exc))
        except PolicyError as exc:
            return await self.fail(job, Failure(500, f"policy failed: {exc}", "server_error"))
        except Exception as exc:  # noqa: BLE001 - the request still gets an answer
            return await self.fail(job, Failure(500, f"internal error: {type(exc).__name__}",
                                                "server_error"))
        await self.record(job, 200)
        return None

    async def fail(self, job: Job, failure: Failure) -> Failure:
        failure = Failure(failure.status, self.redact(failure.message), failure.kind,
                          failure.code, failure.retry_after)
        await self.record(job, failure.status, failure.message)
        return failure

    async def record(self, job: Job, status: int, message: str | None = None) -> None:
        """Count, log and charge a finished request (once: its ticket settles here)."""
        elapsed = time.perf_counter() - job.started
        cost = float(job.info.get("cost_usd", 0.0)) if status == 200 else 0.0
        if job.ticket is not None:
            await self.state.settle(job.ticket, cost)
        if status == 200:
            self.metrics.observe(job.policy_name, elapsed, job.info["steps"])
        else:
            self.metrics.failed(job.policy_name if self.knows(job.policy_name)
                                else "unknown", status)
        if self.log is not None and (status != 401 or self.anonymous_rows.take()):
            job.logged = self.log.record({
                "id": job.ident, "created": time.time(),
                "client": self._client(job),
                "policy": job.policy_name, "session": job.session, "status": status,
                "answered_by": job.info.get("answered_by"),
                "steps": job.info.get("steps", []), "cost_usd": cost,
                "latency_ms": round(elapsed * 1000, 1),
                "tokens_in": job.usage.get("prompt_tokens"),
                "tokens_out": job.usage.get("completion_tokens"),
                "prompt": job.prompt, "answer": job.answer if status == 200 else None,
                "error": message, "task": job.task or None,
            })

    @staticmethod
    async def logged(job: Job) -> None:
        """Wait until the job's log row is committed: what is acknowledged is logged."""
        if job.logged is not None:
            await job.logged

    async def feedback(self, ident: str, score: float, client: ClientKey | None
                       ) -> dict[str, Any] | None:
        """Attach a score to an earlier response; None when there is no such response.
        Counted against the key's rate limit (raises Refused)."""
        await self.state.rate(client)
        name = client.name if client else None
        logged = await self.log.feedback(ident, score, name) if self.log is not None \
            else None
        known = await self.state.pending(ident)
        if known is not None and known.client != name:
            known = None
        if logged is None and known is None:
            return None
        previous = await self.state.rescore(ident, score)
        learned = False
        if known is not None:
            policy = self.policies.get(known.policy)
            if policy is not None:
                learned = bool(policy.learn(known.context, known.model, score, previous))
                if learned:
                    await self.state.teach(known.policy, Lesson(known.context, known.model,
                                                                score, previous))
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
            **({"x-triage-degraded": "true"} if info.get("degraded") else {}),
            **({"x-triage-cache": info["cache"]["match"]} if "cache" in info else {}),
        }

    async def share_circuits(self, every_s: float = 0.5) -> None:
        """Forever: tell the other replicas which circuits are open here, and hold open
        here those open there, so a failing model is shunned by all after one notices."""
        breaker = self.pool.breaker
        if breaker is None:
            return
        while True:
            for model, seconds in (await self.state.circuits(breaker.open_for())).items():
                if model in self.pool.models:
                    breaker.hold_open(model, seconds)
            await asyncio.sleep(every_s)

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self.state.aclose()
        if self.log is not None:
            self.log.close()
