"""Train a small snnTorch network on MNIST-5k and write it as NIR, the way snnTorch users do.

The network is snnTorch's own (Leaky neurons with their default subtractive reset), trained with
snnTorch's surrogate gradients and exported with snnTorch's `export_to_nir`. snnc only supplies the
offline digits. Run from the repository root (about a minute on two cores):

    python models/snntorch_mnist/make.py

Writes mnist_leaky.nir (the network) and digits.npz (the first 200 test digits, snnc's --data
format: uint8 pixels `inputs` [N, 1, 28, 28] and int64 `labels`) next to this file.
"""
from pathlib import Path

import nir
import numpy as np
import snntorch as snn
import torch
from snntorch import functional as SF
from snntorch import utils
from snntorch.export_nir import export_to_nir

from snnc.data import load_dataset

HERE = Path(__file__).resolve().parent
T = 16                 # steps; the same frame (pixel / 255) is presented at every step
HIDDEN = 128
BETA = 0.875           # 1 - beta = 1/8: exact in float32 and through NIR's tau = dt / (1 - beta)
EPOCHS, BATCH, LR, SEED = 3, 64, 2e-3, 0
SHIPPED_DIGITS = 200


def build() -> torch.nn.Sequential:
    """784-128-10; snnTorch 1.0's exporter needs beta and threshold as per-neuron vectors."""
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(784, HIDDEN),
        snn.Leaky(beta=torch.full((HIDDEN,), BETA), threshold=torch.ones(HIDDEN), init_hidden=True),
        torch.nn.Linear(HIDDEN, 10),
        snn.Leaky(beta=torch.full((10,), BETA), threshold=torch.ones(10), init_hidden=True, output=True),
    )


def output_spikes(net: torch.nn.Sequential, images: torch.Tensor) -> torch.Tensor:
    """snnTorch's simulation: output spikes [T, B, 10] for uint8 images [B, 1, 28, 28]."""
    x = images.float() / 255.0
    utils.reset(net)
    return torch.stack([net(x)[0] for _ in range(T)])


def accuracy(net: torch.nn.Sequential, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of digits whose most-spiking output (first on ties) is the label."""
    with torch.no_grad():
        counts = output_spikes(net, torch.from_numpy(images)).sum(dim=0)
    return float((counts.argmax(dim=1).numpy() == labels).mean())


def train(net: torch.nn.Sequential, images: np.ndarray, labels: np.ndarray) -> None:
    """A few epochs of Adam on snnTorch's rate-coded cross-entropy (softmax of spike counts)."""
    loss_fn = SF.ce_rate_loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), BATCH):
            batch = order[start:start + BATCH]
            loss = loss_fn(output_spikes(net, torch.from_numpy(images[batch])), torch.from_numpy(labels[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}")


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    data = load_dataset("mnist5k")
    net = build()
    train(net, data.train_images, data.train_labels)
    net.eval()
    digits, labels = data.test_images[:SHIPPED_DIGITS], data.test_labels[:SHIPPED_DIGITS]
    print(f"snnTorch test accuracy: {accuracy(net, data.test_images, data.test_labels):.4f} on 1000 digits, "
          f"{accuracy(net, digits, labels):.4f} on the {SHIPPED_DIGITS} shipped digits")
    utils.reset(net)
    graph = export_to_nir(net, torch.zeros(1, 1, 28, 28), ignore_dims=[0])
    nir.write(str(HERE / "mnist_leaky.nir"), graph)
    np.savez_compressed(HERE / "digits.npz", inputs=np.ascontiguousarray(digits), labels=labels.astype(np.int64))


if __name__ == "__main__":
    main()
