"""Confidence you can believe: temperature scaling and expected calibration error.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T fitted on held-out
data by minimising the negative log-likelihood; it changes no prediction, only how sure the
model says it is. The expected calibration error (ECE) compares stated confidence with
observed accuracy in 15 equal-width confidence bins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from digitlab.data.dataset import Dataset


NON_DIGITS_KEPT = 0.98  # share of held-out non-digits a user's own digits may not unreject


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> float:
    """The T > 0 minimising NLL of ``softmax(logits / T)`` on (held-out) ``labels``."""
    import torch
    import torch.nn.functional as F

    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")
    logits = logits.detach().float()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the bin-weighted mean of |accuracy - confidence| over confidence bins."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def calibrate_artifact(
    path: str,
    max_digit_rejection: float = 0.005,
    negatives: int | None = None,
    uploads: int = 4000,
    held_out: Dataset | None = None,
    fonts: int | None = None,
) -> dict[str, Any]:
    """Fit temperature and a rejection threshold on held-out data; store them in model.json.

    The held-out data is the ``val`` split (the model must not have trained on it) plus, for a
    model with a "not a digit" class, fresh synthetic non-digits; the temperature is fitted
    on it. The threshold is the operating point: the calibrated digit confidence below which
    at most ``max_digit_rejection`` of the val digits fall, and at most as large a share of
    ``uploads`` realistic uploads made from them (digitlab.synth: photos, canvas exports,
    thin pens). Each population is held to it on its own: users' images are harder than
    MNIST's, and ten times as many clean digits would otherwise hide the uploads' rejections.
    ``held_out`` digits (a fine-tuned model's own validation share of the user's data) join
    the fit and are a population of their own for the operating point, like the uploads:
    ten thousand MNIST digits would otherwise outvote a new writer's twenty. ``fonts`` digits
    in the training handwriting fonts (default: a fifth of what the model trained on, fresh
    renders) are a population too, so that other writers than MNIST's are not rejected.
    Neither population may take the threshold below what keeps ``NON_DIGITS_KEPT`` of the
    held-out non-digits rejected, nor (with ``fonts``) of half as many letters and shapes
    in the training fonts' hands. Returns the ``rejection`` block.
    """
    import torch

    from digitlab.artifact import load_artifact, resolve_artifact, update_meta
    from digitlab.data.dataset import concat, load_split
    from digitlab.errors import DigitlabError
    from digitlab.evaluate import batched_logits
    from digitlab.models.registry import Normalization
    from digitlab.synth.fonts import prepared_font_digits, prepared_font_non_digits, training_fonts
    from digitlab.synth.mixing import with_negatives
    from digitlab.synth.uploads import prepared_uploads

    folder = resolve_artifact(path)
    model, meta = load_artifact(folder)
    # an ensemble's members each name what they trained on; the first one's seed and
    # number of non-digits stand for all
    trained = meta.model_kwargs.get("members") or [meta.recipe or {}]
    for part in trained:
        trained_on = part.get("data", {}).get("train_split", "train")
        if trained_on in ("train", "val", "test"):  # MNIST's val was trained on
            raise DigitlabError(
                f"{path}: trained on {trained_on!r}, so no held-out split is left to calibrate "
                "on; train on train50k (validating on val) to calibrate"
            )
    digits = val = load_split("val")
    mine = slice(len(val), len(val))  # where the user's held-out digits sit in ``val``
    if held_out is not None:
        own = held_out.subset(held_out.labels < 10)
        digits = val = concat(val, own, "val+held-out")
        mine = slice(mine.start, mine.start + len(own))
    extra_class = meta.num_classes == 11
    if extra_class:
        n_neg = negatives or max(1, int(trained[0]["data"].get("negatives", 2000)) // 5)
        val = with_negatives(val, n_neg, seed=2 * int(trained[0].get("seed", 0)) + 2)
    x, y = val.tensors()
    norm = Normalization(*meta.normalization).apply
    logits = batched_logits(model, x, norm)
    t = fit_temperature(logits, y)

    def confidence(images: np.ndarray) -> np.ndarray:
        """The calibrated digit confidence of more uint8 images (N,28,28)."""
        z = batched_logits(model, torch.from_numpy(images), norm)
        return torch.softmax(z / t, 1).numpy()[:, :10].max(1)

    probs_before = torch.softmax(logits, 1).numpy()
    probs_after = torch.softmax(logits / t, 1).numpy()
    labels = y.numpy()
    digit_score = probs_after[:, :10].max(1)
    is_digit = labels < 10
    threshold = float(np.quantile(digit_score[is_digit], max_digit_rejection))
    if uploads:
        upload_score = confidence(prepared_uploads(digits.images, digits.labels, uploads, 4242)[0])
        threshold = min(threshold, float(np.quantile(upload_score, max_digit_rejection)))
    # "not a digit" must keep working: at least NON_DIGITS_KEPT of the held-out non-digits
    # stay rejected, whatever the populations below ask for
    floor = float(np.quantile(digit_score[~is_digit], NON_DIGITS_KEPT)) if extra_class else 0.0
    if fonts is None:
        fonts = int((trained[0].get("data") or {}).get("font_digits", 0)) // 5
    families = training_fonts(fonts, None)
    font_score = np.zeros(0)
    font_non_score = np.zeros(0)
    if families and extra_class:
        # letters and shapes in the same hands are held to the floor as well
        font_non_score = confidence(prepared_font_non_digits(max(1, fonts // 2), 4344, families)[0])
        floor = max(floor, float(np.quantile(font_non_score, NON_DIGITS_KEPT)))
    if families:
        font_score = confidence(prepared_font_digits(fonts, 4343, families)[0])
        point = float(np.quantile(font_score, max_digit_rejection))
        threshold = min(threshold, max(point, floor))
    own_score = digit_score[mine]
    if len(own_score):
        # "lower": of a few dozen digits, the 0.5% point is the least confident one, kept
        # (one badly read sample would take it to nothing but for the floor)
        own_point = float(np.quantile(own_score, max_digit_rejection, method="lower"))
        threshold = min(threshold, max(own_point, floor))
    block: dict[str, Any] = {
        "method": "extra-class" if extra_class else "max-probability",
        "temperature": round(t, 6),
        "threshold": round(threshold, 6),
        "fitted_on": val.name,
        "ece_before": round(expected_calibration_error(probs_before, labels), 6),
        "ece_after": round(expected_calibration_error(probs_after, labels), 6),
        "val_digits_rejected": round(float((digit_score[is_digit] < threshold).mean()), 6),
        "val_uploads": uploads,
        "val_uploads_rejected": round(float((upload_score < threshold).mean()), 6)
        if uploads
        else None,
    }
    if len(font_score):
        block["font_digits"] = len(font_score)
        block["font_digits_rejected"] = round(float((font_score < threshold).mean()), 6)
    if len(font_non_score):
        block["font_non_digits"] = len(font_non_score)
        block["font_non_digits_rejected"] = round(float((font_non_score < threshold).mean()), 6)
    if len(own_score):
        block["held_out_digits"] = len(own_score)
        block["held_out_rejected"] = round(float((own_score < threshold).mean()), 6)
    if extra_class:
        block["val_non_digits_rejected"] = round(
            float((digit_score[~is_digit] < threshold).mean()), 6
        )
    update_meta(folder, rejection=block)
    return block
