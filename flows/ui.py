"""What makes the Prefect UI readable across variants: per-run artifact keys, stage-subflow tags, run links.

- Artifact keys: a stage flow publishes `<prefix>-<suffix>` where the suffix is the experiment (pipeline
  config name, `<ablation>-<variant>` in an ablation) set by the pipeline flow around its stage subflows, so
  one variant's loss curve or GX results never overwrite another's. A stage flow run on its own keeps the
  bare prefix.
- Tags: an ablation tags each variant's pipeline run `ablation:<name>` and `variant:<v>`; its stage subflows
  get `stage:<stage>` and `variant:<v>` only, so filtering Runs by `ablation:<name>` lists one row per variant.
- Links: relative `/runs/flow-run/<id>` paths, valid on whatever host and port serves the UI later.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from schemas.pipeline import slug

_SUFFIX: ContextVar[str | None] = ContextVar("cxrflow_artifact_suffix", default=None)


def artifact_key(*parts: str, scoped: bool = True) -> str:
    """The one artifact-key function: `parts` slugged (lowercase, digits, dashes) and joined by dashes, empty
    parts dropped; inside a pipeline run's stage scope `-<experiment>` follows, unless the key names its
    experiment itself (`scoped=False`)."""
    suffix = _SUFFIX.get() if scoped else None
    return "-".join(slug(p) for p in (*parts, suffix) if p)


@contextmanager
def stage_scope(experiment: str, stage: str, variant: str) -> Iterator[None]:
    """Around one stage subflow: its artifact keys carry the experiment; its tags are the stage and variant
    (replacing, not adding to, the tags of the enclosing run)."""
    from prefect.context import TagsContext

    token = _SUFFIX.set(experiment)
    try:
        with TagsContext(current_tags={f"stage:{stage}", f"variant:{variant}"}):
            yield
    finally:
        _SUFFIX.reset(token)


def current_run() -> tuple[str | None, str | None, list[str]]:
    """(id, name, tags) of the flow run this code runs in, or (None, None, []) outside one."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None, None, []
    return str(ctx.flow_run.id), ctx.flow_run.name, list(ctx.flow_run.tags or [])


def tag_value(tags: list[str], prefix: str) -> str | None:
    return next((t.split(":", 1)[1] for t in tags if t.startswith(prefix + ":")), None)


def run_link(flow_run_id: str | None, text: str | None = None) -> str:
    """Markdown link to a flow run's page in the UI (relative, so any host serving the UI resolves it)."""
    if not flow_run_id:
        return text or "(no flow run recorded)"
    return f"[{text or flow_run_id}]({run_path(flow_run_id)})"


def run_path(flow_run_id: str) -> str:
    return f"/runs/flow-run/{flow_run_id}"
