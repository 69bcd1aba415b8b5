"""Pictures a person looks at (matplotlib, headless Agg backend), written atomically."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from utils.protocol.files import save_figure  # noqa: E402


def plot_curves(history, path, title=""):
    """curve.png: accuracy and loss per epoch, train and test, from fit()'s history rows."""
    epochs = [h["epoch"] for h in history]   # numbered from 0, as in the log
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((acc, "acc", "top-1 accuracy (%)"), (loss, "loss", "cross-entropy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], label="train (augmented)")
        ax.plot(epochs, [h[f"test_{key}"] for h in history], label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    best = max(h["test_acc"] for h in history)
    acc.set_title(f"best test {best:.2f}%")
    fig.suptitle(title)
    save_figure(path, fig)
    plt.close(fig)
