"""cxrflow's LLM layer: generic operations over the official `openai` client, with an offline backend.

API (CheXprompt and other judges plug in the same way):

    from tasks.llm import Operation, WorkItem, InvalidAnswer, run_operation
    from schemas.llm import LLMConfig

    JUDGE = Operation(
        name="chexprompt",
        system_prompt="...",                 # cxrflow's own prompt text
        response_model=MyAnswer,             # pydantic model, sent as a strict json_schema response_format
        render_user=lambda p: f"Reference: {p['reference']}\\nCandidate: {p['candidate']}",
        examples=((user_text, assistant_json), ...),   # optional few-shot pairs
        postprocess=lambda answer, payload: {...},     # optional; raise InvalidAnswer to reject -> re-ask
        rules=None,                          # optional offline function payload -> dict (raise RulesUnsupported)
    )
    items = [WorkItem(id="k1", source="mimic-cxr", payload={"reference": ..., "candidate": ...})]
    result = run_operation(JUDGE, items, LLMConfig(backend="openai", model="gpt-4o", base_url=...),
                           ledger_path=out / "ledger.jsonl")
    result.results["k1"].status / .output / .reason / .raw ; result.summary()

- `Operation.version` hashes prompt, examples, template version and response schema; the cache key is
  (backend, model, version, hash(payload), generation parameters), so only what changed is re-asked.
- Answers are cached under LLMConfig.cache_dir (one JSON file per key): a rerun sends zero requests and an
  interrupted run resumes. Quarantined answers are cached too (retry_quarantined=True re-asks them);
  transport failures are not cached.
- `check_data_use` runs before anything is sent: sources whose adapter has may_leave_premises=False only
  reach loopback/private or allow-listed endpoints, and never the public OpenAI API.
- LLMConfig.batch=True routes uncached items through the Batch API (tasks/llm/batch.py).
- Backends: "rules" (Operation.rules), "openai" (public API or any OpenAI-compatible base_url / env
  OPENAI_BASE_URL), "azure" (azure_endpoint + deployment name in `model`).
"""

from tasks.llm.cache import ResponseCache, cache_key
from tasks.llm.guard import DataUseError, check_data_use, source_policy
from tasks.llm.ledger import PRICES, Ledger, estimate_cost, read_ledger
from tasks.llm.operation import InvalidAnswer, Operation, RulesUnsupported, WorkItem
from tasks.llm.runner import ItemResult, RunResult, run_operation, run_operation_async, run_sync

__all__ = [
    "PRICES",
    "DataUseError",
    "InvalidAnswer",
    "ItemResult",
    "Ledger",
    "Operation",
    "ResponseCache",
    "RulesUnsupported",
    "RunResult",
    "WorkItem",
    "cache_key",
    "check_data_use",
    "estimate_cost",
    "read_ledger",
    "run_operation",
    "run_operation_async",
    "run_sync",
    "source_policy",
]
