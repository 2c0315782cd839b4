"""embedding_twins: how many tokens share (almost) one input embedding direction."""

from __future__ import annotations

import torch

from playpen_attribution.core.modeling import embedding_twins


class _Model(torch.nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.embed = torch.nn.Embedding.from_pretrained(weight)

    def get_input_embeddings(self):
        return self.embed


def test_twins_are_counted_by_direction_not_length():
    torch.manual_seed(0)
    weight = torch.randn(50, 16)
    weight[10:20] = weight[3] * torch.linspace(0.5, 2.0, 10)[:, None]  # same direction, other lengths
    weight[20] = weight[3] + 0.5 * torch.randn(16)  # nearby, but not a twin
    model = _Model(weight)
    assert embedding_twins(model, 3) == 10
    assert embedding_twins(model, 12) == 10
    assert embedding_twins(model, 30) == 0
    assert embedding_twins(model, 20, cosine=0.0) > 10
