"""Pictures a person looks at (matplotlib, headless Agg backend), written atomically."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from utils.protocol.files import save_figure  # noqa: E402


def plot_curves(history, path, title=""):
    """curve.png: accuracy and loss per epoch, train and test, from fit()'s history rows. The test curve
    has a point for each evaluated epoch only (--eval_every), marked when some epochs were not evaluated."""
    epochs = [h["epoch"] for h in history]   # numbered from 0, as in the log
    tested = [h for h in history if "test_acc" in h]
    marker = "o" if len(tested) < len(history) else None
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((acc, "acc", "top-1 accuracy (%)"), (loss, "loss", "cross-entropy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], label="train (augmented)")
        ax.plot([h["epoch"] for h in tested], [h[f"test_{key}"] for h in tested], label="test", marker=marker)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if tested:
        acc.set_title(f"best test {max(h['test_acc'] for h in tested):.2f}%")
    else:
        acc.set_title("no epoch evaluated yet (--eval_every)")
    fig.suptitle(title)
    save_figure(path, fig)
    plt.close(fig)
