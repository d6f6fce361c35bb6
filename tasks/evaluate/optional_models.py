"""Model-based metrics that need weights: F1-CheXbert, F1-RadGraph (partial reward) and BERTScore.

They run only from local paths (OptionalModelPaths; nothing is downloaded). Whatever cannot run is reported
as `not computed: <reason>` naming exactly what is missing, never as 0.

- CheXbert: loaded here with transformers (BERT-base + 14 linear heads on the [CLS] state, the published
  chexbert.pth layout), because f1chexbert 0.0.2 is broken against current huggingface_hub (docs/pitfalls.md).
- BERTScore: the `bert-score` package with `model_type=<local dir>`; not a project dependency, so it is
  computed only where it is installed.
- RadGraph: the `radgraph` package's F1RadGraph; not installable with this environment's pins
  (docs/pitfalls.md), so it is computed only where it is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from schemas.evaluation import MetricResult, OptionalModelPaths
from schemas.labels import CHEXPERT_LABELS
from tasks.evaluate.clinical import f1_specs, label_columns
from tasks.evaluate.labeler import Labels
from tasks.evaluate.resampling import MetricSpec, bootstrap_indices, score

# CheXbert's head order (its constants.py) and class meaning: 0 blank, 1 positive, 2 negative, 3 uncertain;
# the last head (No Finding) has 2 classes: 0 blank, 1 positive.
CHEXBERT_ORDER: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
_CLASS_TO_LABEL = {0: None, 1: 1, 2: 0, 3: -1}


def chexbert_specs() -> list[MetricSpec]:
    return f1_specs("chexbert", "CheXbert labeler")


def bertscore_spec() -> MetricSpec:
    return MetricSpec(
        "bertscore_f1",
        ("bertscore_f1",),
        lambda c: float(np.mean(c["bertscore_f1"]) * 100),
        "BERTScore F1 (bert-score, local model), mean over reports, x100",
    )


def radgraph_spec() -> MetricSpec:
    return MetricSpec(
        "radgraph_f1_partial",
        ("radgraph_f1",),
        lambda c: float(np.mean(c["radgraph_f1"]) * 100),
        "F1-RadGraph, partial reward (radgraph package), mean over reports, x100",
    )


class CheXbert:
    def __init__(self, checkpoint: Path, bert_dir: Path, device: str = "cpu"):
        import torch
        from transformers import AutoTokenizer, BertConfig, BertModel

        self.torch = torch
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(str(bert_dir), local_files_only=True)
        config = BertConfig.from_pretrained(str(bert_dir), local_files_only=True)
        self.bert = BertModel(config)
        hidden = config.hidden_size
        self.heads = torch.nn.ModuleList(
            [torch.nn.Linear(hidden, 4) for _ in range(13)] + [torch.nn.Linear(hidden, 2)]
        )
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
        state = state.get("model_state_dict", state)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        bert_state = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
        head_state = {
            k.removeprefix("linear_heads."): v for k, v in state.items() if k.startswith("linear_heads.")
        }
        if not bert_state or not head_state:
            raise ValueError(
                f"{checkpoint} does not look like a CheXbert checkpoint (no bert.* / linear_heads.*)"
            )
        missing, _ = self.bert.load_state_dict(bert_state, strict=False)
        if [m for m in missing if "position_ids" not in m]:
            raise ValueError(f"CheXbert checkpoint lacks BERT weights: {missing[:3]}")
        self.heads.load_state_dict(head_state)
        self.bert.to(device).eval()
        self.heads.to(device).eval()

    def label(self, texts: Sequence[str], batch_size: int = 16) -> list[Labels]:
        out: list[Labels] = []
        with self.torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                chunk = [" ".join((t or "").split()) for t in texts[start : start + batch_size]]
                enc = self.tokenizer(
                    chunk, padding=True, truncation=True, max_length=512, return_tensors="pt"
                )
                cls = self.bert(**{k: v.to(self.device) for k, v in enc.items()}).last_hidden_state[:, 0]
                classes = [head(cls).argmax(dim=-1).tolist() for head in self.heads]
                for row in range(len(chunk)):
                    labels = {obs: _CLASS_TO_LABEL[classes[h][row]] for h, obs in enumerate(CHEXBERT_ORDER)}
                    out.append({obs: labels[obs] for obs in CHEXPERT_LABELS})
        return out


def chexbert_columns(
    paths: OptionalModelPaths, references: Sequence[str], predictions: Sequence[str]
) -> tuple[dict[str, np.ndarray] | None, str | None]:
    if not paths.chexbert_checkpoint or not paths.chexbert_bert_dir:
        return None, (
            "CheXbert weights not configured (set chexbert_checkpoint and chexbert_bert_dir, or "
            "CXRFLOW_CHEXBERT_CHECKPOINT and CXRFLOW_CHEXBERT_BERT_DIR, to local paths)"
        )
    for p in (paths.chexbert_checkpoint, paths.chexbert_bert_dir):
        if not Path(p).exists():
            return None, f"CheXbert path {p} does not exist"
    model = CheXbert(Path(paths.chexbert_checkpoint), Path(paths.chexbert_bert_dir))
    return {
        **label_columns("chexbert", "ref", model.label(list(references))),
        **label_columns("chexbert", "pred", model.label(list(predictions))),
    }, None


def bertscore_columns(
    paths: OptionalModelPaths, references: Sequence[str], predictions: Sequence[str]
) -> tuple[dict[str, np.ndarray] | None, str | None]:
    if not paths.bertscore_model:
        return (
            None,
            "BERTScore model not configured (set bertscore_model / CXRFLOW_BERTSCORE_MODEL to a local dir)",
        )
    if not paths.bertscore_num_layers:
        return None, "BERTScore layer not configured (set bertscore_num_layers / CXRFLOW_BERTSCORE_LAYERS)"
    try:
        import bert_score
    except ImportError:
        return None, "the bert-score package is not installed (pip install bert-score)"
    _, _, f1 = bert_score.score(
        list(predictions),
        list(references),
        model_type=paths.bertscore_model,
        num_layers=paths.bertscore_num_layers,
        verbose=False,
    )
    return {"bertscore_f1": f1.numpy().astype(float)}, None


def radgraph_columns(
    paths: OptionalModelPaths, references: Sequence[str], predictions: Sequence[str]
) -> tuple[dict[str, np.ndarray] | None, str | None]:
    if not paths.radgraph_model:
        return (
            None,
            "RadGraph model not configured (set radgraph_model / CXRFLOW_RADGRAPH_MODEL to a local dir)",
        )
    try:
        from radgraph import F1RadGraph
    except ImportError:
        return None, (
            "the radgraph package is not installed (its dependencies do not fit this environment; "
            "see docs/pitfalls.md)"
        )
    scorer = F1RadGraph(reward_level="partial", model_path=paths.radgraph_model)
    _, per_report, _, _ = scorer(hyps=list(predictions), refs=list(references))
    return {"radgraph_f1": np.asarray(per_report, dtype=float)}, None


def optional_metrics(
    paths: OptionalModelPaths,
    references: Sequence[str],
    predictions: Sequence[str],
    n_bootstrap: int = 500,
    seed: int = 12345,
) -> tuple[dict[str, MetricResult], dict[str, np.ndarray]]:
    """(metrics, per-report columns) for every model-based metric; not-computed entries carry the reason."""
    metrics: dict[str, MetricResult] = {}
    columns: dict[str, np.ndarray] = {}
    idx = bootstrap_indices(len(references), n_bootstrap, seed) if n_bootstrap and len(references) else None
    for compute, specs in (
        (chexbert_columns, chexbert_specs()),
        (radgraph_columns, [radgraph_spec()]),
        (bertscore_columns, [bertscore_spec()]),
    ):
        cols, reason = compute(paths, references, predictions)
        for spec in specs:
            if cols is None:
                metrics[spec.name] = MetricResult.missing(str(reason), method=spec.method, unit=spec.unit)
            else:
                metrics[spec.name] = score(spec, cols, idx)
        if cols is not None:
            columns.update(cols)
    return metrics, columns
