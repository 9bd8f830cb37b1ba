"""Starting a run from a trained model's weights (fine-tuning), optionally with the feature
layers frozen so that only the classifier learns the new writer.

Freezing keeps the features MNIST taught intact: their weights get no gradient and their
batch-norm layers keep the statistics they had (a small user set would otherwise re-estimate
them from a few hundred images and shift every feature).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    from torch import nn

    from digitlab.artifact import ModelMeta
    from digitlab.recipes import Recipe


def init_meta(recipe: Recipe) -> ModelMeta | None:
    """The model a run starts from (``model.init``: ``bundled``, a run or model folder)."""
    from digitlab.artifact import find_model, read_meta

    if recipe.model.init is None:
        return None
    folder = find_model(None if recipe.model.init == "bundled" else recipe.model.init)
    meta = read_meta(folder)
    if meta.architecture != recipe.model.name:
        raise DigitlabError(
            f"model.init {recipe.model.init}: is a {meta.architecture} model, the recipe "
            f"trains {recipe.model.name}; set model.name = {meta.architecture!r}"
        )
    return meta


def start_from(model: nn.Module, recipe: Recipe) -> nn.Module:
    """``model`` with the weights of ``model.init`` (when set), and its feature layers frozen
    when ``model.freeze = "features"``."""
    from digitlab.artifact import find_model, load_artifact

    if recipe.model.init is not None:
        init_meta(recipe)  # the architecture check, in one line
        folder = find_model(None if recipe.model.init == "bundled" else recipe.model.init)
        trained, _ = load_artifact(folder)
        try:
            model.load_state_dict(trained.state_dict())
        except RuntimeError as exc:
            detail = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), "")
            raise DigitlabError(
                f"model.init {recipe.model.init}: its weights do not fit this recipe's "
                f"{recipe.model.name} ({detail})"
            ) from None
    if recipe.model.freeze == "features":
        freeze_features(model)
    return model


def freeze_features(model: nn.Module) -> None:
    """Every parameter but the last linear layer's (the classifier) stops learning, and the
    batch-norm layers keep their running statistics (they stay in eval mode in training)."""
    import types

    from torch import nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise DigitlabError("model.freeze = 'features' needs a model with a linear classifier")
    head = linears[-1]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, False), m)
            m.eval()
