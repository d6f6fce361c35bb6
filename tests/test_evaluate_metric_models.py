"""F1-CheXbert and F1-RadGraph from random-weight twins of the released weight formats, through the real code
paths: CheXbert's chexbert.pth layout against the reference evaluation's own recipe, RadGraph through the
radgraph package with the original model type from a local archive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures.metric_models import write_bert_dir, write_chexbert_checkpoint, write_radgraph_archive
from schemas.evaluation import OptionalModelPaths
from schemas.labels import CHEXPERT_LABELS, FIVE_CONDITIONS
from tasks.evaluate.optional_models import CHEXBERT_ORDER, CheXbert
from tasks.evaluate.scoring import score_records

REFS = [
    "The lungs are clear. No pleural effusion or pneumothorax.",
    "Mild cardiomegaly with small left pleural effusion.",
    "Right base opacity, atelectasis or pneumonia.",
    "Endotracheal tube in standard position. Edema.",
    "",
    "Stable mild cardiomegaly. No consolidation.",
]
PREDS = [
    "Lungs are clear.",
    "Small left effusion. Heart size is normal.",
    "Right base consolidation.",
    "Tube in standard position. Mild edema.",
    "No pneumothorax.",
    "Mild cardiomegaly.",
]


@pytest.fixture(scope="module")
def chexbert_twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("chexbert")
    bert = write_bert_dir(root / "bert-base-uncased")
    return write_chexbert_checkpoint(root / "chexbert.pth", bert), bert


def _reference_labels(ckpt, bert_dir, texts):
    """The reference evaluation's recipe (rrg_eval/chexbert.py), written out here: BertTokenizer.tokenize then
    encode_plus, [CLS] [SEP] for an empty report, zero padding with a length mask, argmax of each head."""
    from transformers import BertModel, BertTokenizer

    tok = BertTokenizer.from_pretrained(str(bert_dir))
    state = torch.load(ckpt, weights_only=True)["model_state_dict"]
    state = {k[7:]: v for k, v in state.items()}  # "module."
    bert = BertModel.from_pretrained(str(bert_dir))
    bert.load_state_dict(
        {k[5:]: v for k, v in state.items() if k.startswith("bert.") and "position_ids" not in k}
    )
    heads = [(state[f"linear_heads.{i}.weight"], state[f"linear_heads.{i}.bias"]) for i in range(14)]
    ids = []
    for r in texts:
        pieces = tok.tokenize(" ".join(r.strip().replace("\n", " ").split()))
        ids.append(
            tok.convert_tokens_to_ids([tok.cls_token, *pieces, tok.sep_token])
            if pieces
            else [tok.cls_token_id, tok.sep_token_id]
        )
    n = max(map(len, ids))
    batch = torch.tensor([i + [0] * (n - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i in ids])
    with torch.no_grad():
        cls = bert(batch, attention_mask=mask)[0][:, 0]
        return [(cls @ w.T + b).argmax(-1).tolist() for w, b in heads]  # [condition][report], classes 0-3


def _f1(ref, pred, average):
    tp = (ref & pred).sum(0)
    fp = (~ref & pred).sum(0)
    fn = (ref & ~pred).sum(0)
    if average == "micro":
        d = 2 * tp.sum() + fp.sum() + fn.sum()
        return 100 * 2 * tp.sum() / d if d else 0.0
    d = 2 * tp + fp + fn
    return float(np.mean(np.where(d > 0, 200 * tp / np.maximum(d, 1), 0.0)))


def test_chexbert_twin_labels_and_f1_match_the_reference_recipe(chexbert_twin):
    ckpt, bert = chexbert_twin
    ours = CheXbert(ckpt, bert).label(REFS + PREDS)
    ref_classes = _reference_labels(ckpt, bert, REFS + PREDS)
    to_label = {0: None, 1: 1, 2: 0, 3: -1}
    for h, obs in enumerate(CHEXBERT_ORDER):
        assert [lab[obs] for lab in ours] == [to_label[c] for c in ref_classes[h]], obs
    seen = {c for h in ref_classes[:13] for c in h}
    assert len(seen) >= 3  # the twin exercises several classes, not one constant answer

    metrics, _, _ = score_records(
        [
            {"id": str(i), "reference": r, "prediction": p}
            for i, (r, p) in enumerate(zip(REFS, PREDS, strict=True))
        ],
        paths=OptionalModelPaths(chexbert_checkpoint=str(ckpt), chexbert_bert_dir=str(bert)),
        n_bootstrap=20,
    )
    n = len(REFS)
    # the reference's map_to_binary: positive only ("rrg"), or uncertain too ("rrg+")
    for suffix, positive in (("", {1}), ("_uncertain_positive", {1, 3})):
        for group, names in (("14", CHEXPERT_LABELS), ("5", FIVE_CONDITIONS)):
            cols = [CHEXBERT_ORDER.index(o) for o in names]
            pred = np.array([[ref_classes[c][i] in positive for c in cols] for i in range(n, 2 * n)])
            ref = np.array([[ref_classes[c][i] in positive for c in cols] for i in range(n)])
            for average in ("micro", "macro"):
                m = metrics.metrics[f"chexbert_f1_{average}_{group}{suffix}"]
                assert m.value == pytest.approx(_f1(ref, pred, average)), (average, group, suffix)
                assert m.bootstrap_median is not None


def test_chexbert_checkpoint_with_foreign_weights_is_refused(chexbert_twin, tmp_path):
    ckpt, bert = chexbert_twin
    state = torch.load(ckpt, weights_only=True)
    state["model_state_dict"]["module.classifier.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="unexpected CheXbert weights"):
        CheXbert(tmp_path / "bad.pth", bert)


@pytest.mark.slow
def test_radgraph_partial_reward_from_a_local_archive_through_the_package(tmp_path):
    from radgraph import F1RadGraph

    from tasks.evaluate.optional_models import radgraph_columns, stage_radgraph

    bert = write_bert_dir(tmp_path / "bert")
    # the released archive names its BERT by hub id; cxrflow points it at the local copy
    archive = write_radgraph_archive(tmp_path / "radgraph.tar.gz", bert, bert_name="org/hub-only-bert")
    paths = OptionalModelPaths(radgraph_model=str(archive), radgraph_bert_dir=str(bert))
    cols, why = radgraph_columns(paths, REFS, PREDS)
    assert why is None
    # the same package called the way the reference evaluation calls it, on the same model
    cache = stage_radgraph(archive, bert, tmp_path / "stage")
    direct = F1RadGraph(reward_level="partial", model_type="radgraph", model_cache_dir=str(cache))
    _, rewards, _, _ = direct(refs=REFS, hyps=PREDS)
    assert cols["radgraph_f1"].tolist() == pytest.approx(rewards)
    assert cols["radgraph_f1"][4] == 0.0  # an empty report scores 0, as in the package
    assert cols["radgraph_f1"].max() > 0  # the twin finds entities: the reward is not a constant

    metrics, _, _ = score_records(
        [
            {"id": str(i), "reference": r, "prediction": p}
            for i, (r, p) in enumerate(zip(REFS, PREDS, strict=True))
        ],
        paths=paths,
        n_bootstrap=20,
    )
    m = metrics.metrics["radgraph_f1_partial"]
    assert m.value == pytest.approx(100 * np.mean(rewards)) and m.bootstrap_median is not None
    # a missing or unconfigured model is a not-computed reason, never a 0
    missing = radgraph_columns(OptionalModelPaths(radgraph_model=str(tmp_path / "nope")), REFS, PREDS)
    assert missing[0] is None and "does not exist" in missing[1]
    assert "not configured" in radgraph_columns(OptionalModelPaths(), REFS, PREDS)[1]


def test_cli_score_with_unusable_chexbert_weights_is_a_one_line_error(
    chexbert_twin, tmp_path, monkeypatch, capsys
):
    import json
    import os

    from cxrflow_cli.main import run
    from cxrflow_cli.quiet import ENV_VARS

    for var in ENV_VARS:  # the CLI's quiet mode sets these: restored after the test
        monkeypatch.setenv(var, os.environ.get(var, ""))
        if not os.environ[var]:
            monkeypatch.delenv(var)

    ckpt, bert = chexbert_twin
    state = torch.load(ckpt, weights_only=True)
    del state["model_state_dict"]["module.linear_heads.13.bias"]
    torch.save(state, tmp_path / "bad.pth")
    monkeypatch.setenv("CXRFLOW_CHEXBERT_CHECKPOINT", str(tmp_path / "bad.pth"))
    monkeypatch.setenv("CXRFLOW_CHEXBERT_BERT_DIR", str(bert))
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "a", "reference": REFS[1], "prediction": PREDS[1]}) + "\n")
    assert run(["score", "--predictions", str(preds), "--out", str(tmp_path / "e")]) == 2
    out, err = capsys.readouterr()
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: CheXbert:"), err
    assert "Traceback" not in out + err
