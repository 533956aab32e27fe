"""Overhead of a platform training job against a plain PyTorch loop on the same model, data and epochs.

The job side is the whole user-visible path: `openmaas serve` runs as a subprocess (its in-process
worker, the job queue, the forkserver subprocess per job), the dataset is uploaded once over HTTP,
and each repeat submits `POST /v1/training_jobs` and is timed from the job's `created_at` to its
`finished_at` (server timestamps). That includes queueing, the job subprocess, reading the dataset
from the artifact store, fitting the preprocessing, the shared loop with its per-epoch validation
metrics, events and checkpoints, the test-set evaluation, writing the artifact and registering the
model version.

The plain side is what one writes by hand, run in its own subprocess and timed from after its
imports (torch._dynamo included, which the job forkserver imports before any job): read the
same file, fit the same preprocessing, build the same model with the same hyperparameters (the
platform's defaults), train with a bare loop (shuffle, step, a validation pass per epoch) and
evaluate on the test split once.

Both run in turn, in rotating order, so that load from other processes hits both alike; the table
gives the best and the median of the repeats.

Usage: python benchmarks/training_overhead.py [--mlp-epochs 4000] [--cnn-epochs 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.data.builders

BATCH, LR, SEED = 64, 1e-3, 0
IMAGE_PREP = {"image": {"height": 8, "width": 8, "grayscale": True}}
CASES = {
    "mlp": ("tabular-classification", "cancer", "label", {}),
    "cnn": ("image-classification", "digits", None, IMAGE_PREP),
}


# --- the plain side (runs in a subprocess: `--plain CASE --data FILE --epochs N`) -----------------


def plain_run(case: str, data: Path, epochs: int) -> float:
    """Seconds for load + preprocess + train + test evaluation, the imports excluded."""
    import torch

    # The job forkserver imports torch._dynamo (AdamW's constructor needs it) once per worker; import
    # it here too, untimed, so that the comparison is of training work, not of a one-time import.
    import torch._dynamo
    import torch.nn.functional as F
    from torch import nn

    from openmaas.datasets.loading import read_labelled_files, read_table
    from openmaas.datasets.preprocessing import (
        ImagePreprocessor,
        ImageSpec,
        LabelEncoder,
        SplitSpec,
        TabularPreprocessor,
        TabularSpec,
        split_examples,
    )
    from openmaas.training.metrics import classification_metrics
    from openmaas.training.models import MLP, SmallResNet

    started = time.perf_counter()
    model: nn.Module
    if case == "mlp":
        frame = read_table(data)
        labels = LabelEncoder.fit(frame["label"].tolist()).encode(frame["label"].tolist())
        split = split_examples(len(frame), SplitSpec(), labels.numpy())
        features = frame.drop(columns=["label"])
        prep = TabularPreprocessor.fit(features.iloc[split.train], TabularSpec())
        x = prep.transform_frame(features)
        torch.manual_seed(SEED)
        model = MLP(prep.width, 2, (64, 32), 0.1)
    else:
        files = read_labelled_files(data, "image")
        labels = LabelEncoder.fit(files.labels).encode(files.labels)
        split = split_examples(len(labels), SplitSpec(), labels.numpy())
        spec = ImageSpec(height=8, width=8, grayscale=True)
        x = ImagePreprocessor.fit([files.data[i] for i in split.train], spec).transform(files.data)
        torch.manual_seed(SEED)
        model = SmallResNet(1, 10, (16, 32), 1, 0.1)
    train_x, train_y = x[split.train], labels[split.train]
    val_x, val_y = x[split.validation], labels[split.validation]
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        for start in range(0, len(order), BATCH):
            index = order[start : start + BATCH]
            loss = F.cross_entropy(model(train_x[index]), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            model(val_x).argmax(1).eq(val_y).float().mean()
    with torch.no_grad():
        probabilities = torch.softmax(model(x[split.test]), dim=1).numpy()
    accuracy = classification_metrics(labels[split.test].numpy(), probabilities)["accuracy"]
    assert isinstance(accuracy, float) and accuracy > 0.5
    return time.perf_counter() - started


def timed_plain(case: str, data: Path, epochs: int) -> float:
    command = [sys.executable, __file__, "--plain", case, "--data", str(data), "--epochs", str(epochs)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return float(json.loads(out.strip().splitlines()[-1])["seconds"])


# --- the platform side -----------------------------------------------------------------------------


@contextmanager
def platform_server(home: Path) -> Iterator[str]:
    """`openmaas serve` on SQLite in `home`, with its in-process worker; yields the admin key's URL."""
    from benchmarks.servers import free_port

    port = free_port()
    env = {**os.environ, "OPENMAAS_HOME": str(home)}
    env.pop("OPENMAAS_DATABASE_URL", None)
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "openmaas"), "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start; see {home / 'server.log'}") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def timed_job(client: object, case: str, epochs: int) -> tuple[float, float]:
    """(created → finished, created → started) seconds of one training job, by server timestamps."""
    task, dataset, target, preprocessing = CASES[case]
    job = client.training_jobs.create(  # type: ignore[attr-defined]
        task=task,
        dataset=dataset,
        target=target,
        params={"epochs": epochs, "learning_rate": LR, "batch_size": BATCH, "seed": SEED},
        preprocessing=preprocessing or None,
    )
    done = client.training_jobs.wait(job.id, interval=0.5)  # type: ignore[attr-defined]
    if done.status != "succeeded":
        raise RuntimeError(f"training job {job.id} ended {done.status}: {done.error}")
    assert done.started_at is not None and done.finished_at is not None
    total = (done.finished_at - done.created_at).total_seconds()
    return total, (done.started_at - done.created_at).total_seconds()


# --- the comparison --------------------------------------------------------------------------------


def compare(client: object, case: str, data: Path, epochs: int, repeats: int) -> str:
    plain: list[float] = []
    job: list[float] = []
    queued: list[float] = []
    for repeat in range(repeats):
        order = ["plain", "job"] if repeat % 2 == 0 else ["job", "plain"]
        for side in order:
            if side == "plain":
                plain.append(timed_plain(case, data, epochs))
            else:
                total, wait = timed_job(client, case, epochs)
                job.append(total)
                queued.append(wait)
            print(
                f"  {case} repeat {repeat + 1} {side}: {(plain if side == 'plain' else job)[-1]:.2f} s",
                flush=True,
            )
    best = (min(job) - min(plain)) / min(plain) * 100
    median = (statistics.median(job) - statistics.median(plain)) / statistics.median(plain) * 100
    return (
        f"| {case.upper()} | {epochs} | {min(plain):.2f} / {statistics.median(plain):.2f} "
        f"| {min(job):.2f} / {statistics.median(job):.2f} | {statistics.median(queued):.2f} "
        f"| {best:+.1f}% / {median:+.1f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mlp-epochs", type=int, default=4000)
    parser.add_argument("--cnn-epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=sorted(CASES), help="run one case")
    parser.add_argument("--plain", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        print(json.dumps({"seconds": plain_run(args.plain, args.data, args.epochs)}))
        return

    from tests.data.builders import breast_cancer_csv, digits_zip

    from openmaas.sdk import Client

    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        home.mkdir()
        files = {
            "mlp": breast_cancer_csv(Path(folder) / "cancer.csv"),
            "cnn": digits_zip(Path(folder) / "digits.zip"),
        }
        with platform_server(home) as url:
            with Client(base_url=url, api_key=(home / "admin.key").read_text().strip()) as admin:
                org = admin.admin.organizations.create("bench")
                tenant_key = admin.admin.api_keys(org.id).create("bench").key
            with Client(base_url=url, api_key=tenant_key) as client:
                for case, path in files.items():
                    client.datasets.upload(path, name=CASES[case][1])
                    client.datasets.wait_validated(CASES[case][1])
                cases = [args.only] if args.only else list(CASES)
                epochs = {"mlp": args.mlp_epochs, "cnn": args.cnn_epochs}
                print(f"load average at start: {os.getloadavg()[0]:.2f}")
                rows = [compare(client, case, files[case], epochs[case], args.repeats) for case in cases]
                print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print("| model | epochs | plain s (best / med) | job s (best / med) | queued s | overhead (best / med) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
