"""Model-based metrics that need weights: F1-CheXbert, F1-RadGraph (partial reward) and BERTScore.

They run only from local paths (OptionalModelPaths; nothing is downloaded). Whatever cannot run is reported
as `not computed: <reason>` naming exactly what is missing, never as 0.

- CheXbert: loaded here with transformers (BERT-base + 14 linear heads on the [CLS] state, the published
  chexbert.pth layout), because f1chexbert 0.0.2 is broken against current huggingface_hub (docs/metrics.md).
- BERTScore: the `bert-score` package with `model_type=<local dir>`; not a project dependency, so it is
  computed only where it is installed.
- RadGraph: the `radgraph` package's F1RadGraph (a dependency, 0.1.18) with the original RadGraph model from a
  local archive or directory, partial reward, as the LLaVA-Rad evaluation computes it (docs/metrics.md).
"""

from __future__ import annotations

import json
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


class MetricModelError(ValueError):
    """Configured metric weights that cannot be used (wrong format, a missing piece); a one-line message."""


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
        # Older transformers saved the position_ids buffer; current BertModel does not keep it in the state.
        missing, unexpected = self.bert.load_state_dict(bert_state, strict=False)
        missing = [m for m in missing if "position_ids" not in m]
        unexpected = [u for u in unexpected if "position_ids" not in u]
        if missing or unexpected:
            raise ValueError(
                f"{checkpoint}: BERT weights do not match {bert_dir}'s config: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        other = sorted(k for k in state if not k.startswith(("bert.", "linear_heads.")))
        if other:
            raise ValueError(f"{checkpoint}: unexpected CheXbert weights {other[:3]}")
        self.heads.load_state_dict(head_state)  # strict: exactly 13 four-class heads and one two-class head
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
    try:
        model = CheXbert(Path(paths.chexbert_checkpoint), Path(paths.chexbert_bert_dir))
    except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: torch's strict load of the heads
        raise MetricModelError(f"CheXbert: {' '.join(str(e).split())[:300]}") from e
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


def stage_radgraph(model: Path, bert_dir: Path | None, stage: Path) -> Path:
    """The radgraph package loads `<model_cache_dir>/<model_type>/` (config.json, vocabulary/, weights.th) and
    downloads the archive when that folder is missing or empty. Stage the configured model there: the archive
    as released (radgraph.tar.gz) is extracted, a directory is linked; with `bert_dir`, the BERT the archive's
    config names by hub id is replaced by that local directory (the package would fetch it otherwise).
    Returns the model_cache_dir to pass."""
    import tarfile

    target = stage / "radgraph"
    target.mkdir(parents=True)
    if model.is_file():
        with tarfile.open(model, "r:*") as tar:
            tar.extractall(target, filter="data")
    else:
        for item in model.iterdir():
            (target / item.name).symlink_to(item.resolve())
    missing = [n for n in ("config.json", "vocabulary", "weights.th") if not (target / n).exists()]
    if missing:
        raise ValueError(f"{model} is not a RadGraph model archive (lacks {', '.join(missing)})")
    if bert_dir is not None:
        cfg = json.loads((target / "config.json").read_text())
        cfg["dataset_reader"]["token_indexers"]["bert"]["model_name"] = str(bert_dir)
        cfg["model"]["embedder"]["token_embedders"]["bert"]["model_name"] = str(bert_dir)
        (target / "config.json").unlink()  # a link into the user's copy: never write through it
        (target / "config.json").write_text(json.dumps(cfg))
    return stage


def radgraph_tokenizer_compat() -> None:
    """radgraph 0.1.18 (its vendored allennlp) calls two tokenizer methods transformers 5 removed; restore
    them, only where missing, as transformers 4 defined them for the BERT tokenizers RadGraph uses:
    `encode_plus(text, text_pair)` = `tokenizer(text, text_pair)` for one text (every radgraph call passes one),
    `build_inputs_with_special_tokens(a, b)` = [CLS] a [SEP] (b [SEP])."""
    from transformers import PreTrainedTokenizerBase

    names = dir(PreTrainedTokenizerBase)
    if "encode_plus" not in names:

        def encode_plus(self, text, text_pair=None, **kwargs):
            return self(text, text_pair=text_pair, **kwargs)

        PreTrainedTokenizerBase.encode_plus = encode_plus
    if "build_inputs_with_special_tokens" not in names:

        def build_inputs_with_special_tokens(self, ids_0, ids_1=None):
            if self.cls_token_id is None or self.sep_token_id is None:
                raise ValueError("RadGraph's BERT tokenizer needs [CLS] and [SEP] tokens")
            out = [self.cls_token_id, *ids_0, self.sep_token_id]
            return out if ids_1 is None else [*out, *ids_1, self.sep_token_id]

        PreTrainedTokenizerBase.build_inputs_with_special_tokens = build_inputs_with_special_tokens


def radgraph_columns(
    paths: OptionalModelPaths, references: Sequence[str], predictions: Sequence[str]
) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """F1-RadGraph with the original RadGraph model (model_type="radgraph", as the reference evaluation
    downloads radgraph.tar.gz), partial reward, per report; an empty report scores 0 (the package's rule)."""
    if not paths.radgraph_model:
        return (
            None,
            "RadGraph model not configured (set radgraph_model / CXRFLOW_RADGRAPH_MODEL to the radgraph.tar.gz "
            "archive or its extracted directory)",
        )
    model = Path(paths.radgraph_model)
    if not model.exists():
        return None, f"RadGraph model {model} does not exist"
    bert = Path(paths.radgraph_bert_dir) if paths.radgraph_bert_dir else None
    if bert is not None and not bert.is_dir():
        return None, f"RadGraph BERT directory {bert} does not exist"
    try:
        from radgraph import F1RadGraph
    except ImportError:
        return None, "the radgraph package is not installed (pip install radgraph==0.1.18)"
    import tarfile
    import tempfile

    radgraph_tokenizer_compat()
    with tempfile.TemporaryDirectory(prefix="cxrflow-radgraph-") as tmp:
        try:
            cache = stage_radgraph(model, bert, Path(tmp))
            scorer = F1RadGraph(reward_level="partial", model_type="radgraph", model_cache_dir=str(cache))
        except (OSError, ValueError, tarfile.TarError) as e:  # e.g. the BERT its config names is not local
            raise MetricModelError(
                f"RadGraph: {str(e).splitlines()[0][:200]} (a local copy of the BERT the archive's config "
                "names goes in CXRFLOW_RADGRAPH_BERT_DIR)"
            ) from e
        _, per_report, _, _ = scorer(refs=list(references), hyps=list(predictions))
    return {"radgraph_f1": np.asarray(per_report, dtype=float)}, None


def optional_metrics(
    paths: OptionalModelPaths,
    references: Sequence[str],
    predictions: Sequence[str],
    n_bootstrap: int = 500,
    seed: int = 12345,
    scheme: str = "cxrflow",
) -> tuple[dict[str, MetricResult], dict[str, np.ndarray]]:
    """(metrics, per-report columns) for every model-based metric; not-computed entries carry the reason."""
    metrics: dict[str, MetricResult] = {}
    columns: dict[str, np.ndarray] = {}
    n = len(references)
    idx = bootstrap_indices(n, n_bootstrap, seed, scheme) if n_bootstrap and n else None
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
