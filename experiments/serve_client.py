"""Sends one episode of image files to a TF Serving model server and prints the predictions.

  python -m experiments.serve_client --server=localhost:8501 \
      --model_name=omniglot_maml --support_dir=episode/support --query_dir=episode/query

``support_dir`` holds one sub-folder per class (class index = sorted
sub-folder order) of PNG/JPEG files; ``query_dir`` holds the query images.
The files are sent as they are to the ``adapt_and_predict_images``
signature, which decodes and preprocesses them like the training images,
adapts to the support set and predicts each query. REST by default (port
8501 of ``tensorflow_model_server``); ``--grpc`` sends a PredictRequest
instead (port 8500; needs ``pip install tfmeta[serving]``).
"""

from __future__ import annotations

import sys

from absl import app, flags

from tfmeta.serving import format_predictions, predict_grpc, predict_rest, read_episode

from . import run_binary

FLAGS = flags.FLAGS
SIGNATURE = "adapt_and_predict_images"


def define_flags() -> None:
    """Defined when run as a binary only, so importing this module registers no flags."""
    flags.DEFINE_string(
        "server",
        "localhost:8501",
        "HOST:PORT of the model server (REST or, with --grpc, gRPC)",
    )
    flags.DEFINE_string(
        "model_name", None, "the model's name in the server's models.config"
    )
    flags.DEFINE_string(
        "support_dir", None, "<support_dir>/<class>/<image>: the labelled support set"
    )
    flags.DEFINE_string(
        "query_dir", None, "<query_dir>/<image>: the images to classify"
    )
    flags.DEFINE_bool(
        "grpc", False, "send a gRPC PredictRequest instead of a REST request"
    )
    flags.DEFINE_integer(
        "model_version", None, "a version to call (default: the latest served)"
    )
    flags.DEFINE_string(
        "signature_name", SIGNATURE, "the signature taking encoded images"
    )
    flags.DEFINE_float("timeout", 60.0, "seconds to wait for the answer")


def run_client(
    server: str,
    model_name: str,
    support_dir: str,
    query_dir: str,
    *,
    use_grpc: bool = False,
    version: int | None = None,
    signature_name: str = SIGNATURE,
    timeout: float = 60.0,
) -> list[str]:
    """Reads the episode, sends it, returns the printed lines (a header, then one per query)."""
    episode = read_episode(support_dir, query_dir)
    send = predict_grpc if use_grpc else predict_rest
    outputs = send(
        server,
        model_name,
        episode.inputs(),
        signature_name,
        version=version,
        timeout=timeout,
    )
    return format_predictions(episode, outputs)


def main(argv):
    del argv
    if not FLAGS.model_name or not FLAGS.support_dir or not FLAGS.query_dir:
        raise app.UsageError("--model_name, --support_dir and --query_dir are required")
    try:
        lines = run_client(
            FLAGS.server,
            FLAGS.model_name,
            FLAGS.support_dir,
            FLAGS.query_dir,
            use_grpc=FLAGS.grpc,
            version=FLAGS.model_version,
            signature_name=FLAGS.signature_name,
            timeout=FLAGS.timeout,
        )
    except (RuntimeError, FileNotFoundError, ImportError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def run() -> None:
    """The console script ``tfmeta-serve-client``."""
    define_flags()
    run_binary(__name__, main)


if __name__ == "__main__":
    run()
