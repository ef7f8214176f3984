"""Chunked cross-entropy: the same loss and gradients as the plain one, without ever holding the full
logits (measured with torch's memory tracker)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.runtime


def test_chunked_loss_and_gradients_equal_the_plain_ones() -> None:
    import torch
    import torch.nn.functional as F

    from llama_runtime.loss import chunked_cross_entropy

    torch.manual_seed(0)
    hidden = torch.randn(3, 37, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (3, 37))
    plain = F.cross_entropy((hidden @ weight.T).flatten(0, 1), labels.flatten())
    grads = torch.autograd.grad(plain, (hidden, weight))
    for chunk in (1, 8, 37, 1024):  # 8 leaves a short last chunk; 1024 is one chunk
        chunked = chunked_cross_entropy(hidden, weight, labels, chunk)
        assert chunked.item() == pytest.approx(plain.item(), rel=1e-12)
        for got, want in zip(torch.autograd.grad(chunked, (hidden, weight)), grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_the_training_model_gives_llama_for_causal_lms_loss() -> None:
    import torch
    import torch.nn.functional as F

    from llama_runtime.loss import LlamaForTraining
    from llama_runtime.model import build_model, llama_config
    from llama_runtime.weights import SeededInit, materialize

    config = llama_config("tiny", None)
    model = build_model(config, "meta", LlamaForTraining)
    materialize(model, torch.device("cpu"), SeededInit(config, 0))
    model.loss_chunk = 16  # 64 positions: four chunks
    ids = torch.randint(0, config.vocab_size, (2, 65))
    inputs, labels = ids[:, :-1], ids[:, 1:]
    logits = model(input_ids=inputs).logits  # without labels: LlamaForCausalLM's own forward
    plain = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
    assert model(input_ids=inputs, labels=labels).item() == pytest.approx(plain.item(), rel=1e-5)


def test_the_chunked_loss_never_holds_the_full_logits() -> None:
    import torch
    import torch.nn.functional as F

    from llama_runtime.loss import chunked_cross_entropy
    from llama_runtime.memory import PeakTracker

    tokens, vocab, width, chunk = 1024, 8192, 64, 128
    hidden = torch.nn.Parameter(torch.randn(1, tokens, width) * 0.1)
    weight = torch.nn.Parameter(torch.randn(vocab, width) * 0.1)
    labels = torch.randint(0, vocab, (1, tokens))
    holder = torch.nn.Module()
    holder.hidden, holder.weight = hidden, weight

    def peak(loss_of: object) -> int:
        with PeakTracker(holder) as tracker:
            loss_of().backward()  # type: ignore[operator]
        return tracker.peak.group("activations")

    full = peak(lambda: F.cross_entropy((hidden @ weight.T).flatten(0, 1), labels.flatten()))
    chunked = peak(lambda: chunked_cross_entropy(hidden, weight, labels, chunk))
    logits = tokens * vocab * 4  # one fp32 copy of the full logits: 32 MiB
    assert full >= 2 * logits  # logits and log-softmax at least
    # A chunk's logits, log-softmax and their gradients (measured: 5 of them), and the inputs' gradients.
    one_chunk = logits * chunk // tokens
    assert chunked <= 6 * one_chunk + 4 * (hidden.numel() + weight.numel())
    assert chunked < full / 4
