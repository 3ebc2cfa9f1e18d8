"""Prometheus metrics of the gateway, in a registry of their own (never the process-global one).

Labels stay low-cardinality: platform, outcome, model, configured tool names only (a name the model made
up counts as `unknown`), never user, channel or thread IDs.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.turns = Counter("chat_gateway_turns", "Messages handled, by outcome", ["platform", "outcome"], registry=r)
        self.turn_seconds = Histogram(
            "chat_gateway_turn_seconds", "Time in the gateway per message", ["platform"], buckets=_LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.model_seconds = Histogram(
            "chat_gateway_model_seconds", "Time waiting for the model per turn", ["platform"], buckets=_LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.store_errors = Counter("chat_gateway_store_errors", "Turns failed by the store", ["platform"], registry=r)
        self.model_errors = Counter("chat_gateway_model_errors", "Turns failed by the model", ["platform"], registry=r)
        self.duplicates = Counter(
            "chat_gateway_duplicates_dropped", "Repeated deliveries dropped", ["platform"], registry=r
        )
        self.rate_limited = Counter(
            "chat_gateway_rate_limited", "Messages refused by the per-user rate limit", ["platform"], registry=r
        )
        self.threads_touched = Counter(
            "chat_gateway_thread_writes", "Conversations written to (one per stored turn)", ["platform"], registry=r
        )
        self.tokens = Counter(
            "chat_gateway_tokens", "Model tokens, by kind (prompt, completion) and source (reported by the server, "
            "or estimated where it reported none)", ["platform", "model", "kind", "source"], registry=r,
        )  # fmt: skip
        self.budget_refusals = Counter(
            "chat_gateway_budget_refusals", "Turns refused for a spent daily token budget, by scope (user, workspace)",
            ["platform", "scope"], registry=r,
        )  # fmt: skip

        self.tool_calls = Counter(
            "chat_gateway_tool_calls", "Tool calls, by tool and outcome (ok, error, timeout, truncated, unavailable, "
            "denied, invalid, unknown)", ["tool", "outcome"], registry=r,
        )  # fmt: skip
        self.tool_seconds = Histogram(
            "chat_gateway_tool_seconds", "Time one tool call ran", ["tool"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.approvals = Counter(
            "chat_gateway_approvals", "Approval prompts and clicks, by outcome (approved, denied, expired; refused: "
            "a click by someone who may not decide; late: a click on a decided or expired prompt; missing)",
            ["outcome"], registry=r,
        )  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)
